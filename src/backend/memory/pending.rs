//! A consumer group's pending entries list, kept as runs.
//!
//! A group reads a stretch of consecutive entries at once and, in lockstep, acknowledges them
//! all in the order it read them. Kept one record per entry, a broadcast tick of a thousand
//! messages cost a thousand pushes and a thousand pops in each of a thousand groups: a fifth
//! of the whole run. Kept as runs (first and last sequence number, consumer, delivery time),
//! a read is one push and an in-order acknowledgement moves the front run's start.
//! Acknowledgements out of order (rare: a step that failed over, a claim) are remembered in a
//! set until the front of the list reaches them.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::message::EntryId;

/// Consecutive entries delivered to one consumer at one time, all but those in the list's
/// `acked` set still unacknowledged.
#[derive(Debug, Clone, Copy)]
struct Run {
    first: u64,
    last: u64,
    consumer: u32,
    delivered: Instant,
}

#[derive(Debug, Default)]
pub(super) struct PendingList {
    /// In sequence order (a group is delivered new entries in order; a re-delivery or a claim
    /// changes a run's consumer and time, never its place). The front run's first entry is
    /// always unacknowledged.
    runs: VecDeque<Run>,
    /// Entries of `runs` acknowledged while others before them were not.
    acked: BTreeSet<u64>,
    /// Entries pending and not acknowledged.
    live: u64,
}

/// How many runs' room a list keeps when it is empty: an inbox's runs may be single
/// entries, and a list as long as a broadcast tick, kept, held gigabytes over 10,000 groups.
const RETAINED_RUNS: usize = 64;

/// How many of `seqs`, from the first, are the memory ids `0-first`, `0-first+1`, and so on.
fn consecutive_from(seqs: &[EntryId], first: u64) -> usize {
    let matches = |(s, expected): (&EntryId, u64)| s.ms == 0 && s.seq == expected;
    // A lockstep tick acknowledges the whole run it read: one check over all of it, folding
    // the differences with `|` and without an early exit, is a loop the compiler vectorises
    // (a thousand entries per agent per tick, which the counting loop below took one at a
    // time).
    let differences = seqs
        .iter()
        .zip(first..)
        .fold(0, |acc, (s, expected)| acc | s.ms | (s.seq ^ expected));
    if differences == 0 {
        seqs.len()
    } else {
        seqs.iter().zip(first..).take_while(|&pair| matches(pair)).count()
    }
}

impl PendingList {
    /// Entries pending and not acknowledged (what XPENDING counts).
    pub fn live(&self) -> u64 {
        self.live
    }

    /// The oldest unacknowledged entry.
    pub fn first_unacked(&self) -> Option<u64> {
        self.runs.front().map(|r| r.first)
    }

    /// Records entries `first..=last` as delivered to `consumer` at `now`.
    pub fn push(&mut self, first: u64, last: u64, consumer: u32, now: Instant) {
        debug_assert!(first <= last);
        debug_assert!(self.runs.back().is_none_or(|r| r.last < first));
        self.live += last - first + 1;
        if let Some(back) = self.runs.back_mut()
            && back.last + 1 == first
            && back.consumer == consumer
            && back.delivered == now
        {
            back.last = last;
            return;
        }
        self.runs.push_back(Run {
            first,
            last,
            consumer,
            delivered: now,
        });
    }

    /// Acknowledges the entries `ids` (memory ids are `0-seq`: any other was never delivered
    /// here); returns how many were pending and unacknowledged.
    pub fn ack_all(&mut self, mut seqs: &[EntryId]) -> u64 {
        let mut acked = 0;
        while let [id, ..] = seqs {
            // The common case, a stretch acknowledged in the order it was read: the front run
            // gives up its start in one step.
            // (Only while nothing waits acknowledged out of order: then the front's start
            // may be followed by an entry already acknowledged.)
            let stretch = self
                .runs
                .front()
                .filter(|_| self.acked.is_empty())
                .map_or(0, |front| {
                    let room = (front.last - front.first + 1).min(seqs.len() as u64) as usize;
                    consecutive_from(&seqs[..room], front.first)
                });
            if stretch > 1 {
                let front = self.runs.front_mut().expect("a stretch is in the front run");
                front.first += stretch as u64 - 1;
                self.advance_front();
                self.live -= stretch as u64;
                acked += stretch as u64;
                seqs = &seqs[stretch..];
                continue;
            }
            if id.ms == 0 {
                acked += u64::from(self.ack(id.seq));
            }
            seqs = &seqs[1..];
        }
        acked
    }

    /// Acknowledges entry `seq`; whether it was pending and unacknowledged.
    pub fn ack(&mut self, seq: u64) -> bool {
        let Some(front) = self.runs.front_mut() else {
            return false;
        };
        if front.first == seq {
            // The common case: acknowledged in the order read.
            self.advance_front();
            self.live -= 1;
            return true;
        }
        let at = self.runs.partition_point(|r| r.last < seq);
        let held = self.runs.get(at).is_some_and(|r| r.first <= seq);
        if held && self.acked.insert(seq) {
            self.live -= 1;
            return true;
        }
        false
    }

    /// Drops the front run's first entry, and then every entry acknowledged out of order that
    /// this brings to the front.
    fn advance_front(&mut self) {
        while let Some(front) = self.runs.front_mut() {
            if front.first == front.last {
                self.runs.pop_front();
            } else {
                front.first += 1;
            }
            let next = self.runs.front().map(|r| r.first);
            match next {
                Some(seq) if !self.acked.is_empty() && self.acked.remove(&seq) => {}
                _ => break,
            }
        }
        if self.runs.is_empty() && self.runs.capacity() > RETAINED_RUNS {
            self.runs = VecDeque::new();
        }
    }

    /// The unacknowledged entries of `run`, in order.
    fn unacked<'a>(acked: &'a BTreeSet<u64>, run: &Run) -> impl Iterator<Item = u64> + 'a {
        (run.first..=run.last).filter(move |seq| !acked.contains(seq))
    }

    /// Up to `count` of `consumer`'s unacknowledged entries, oldest first, delivered again at
    /// `now` (XREADGROUP from `0`).
    pub fn deliver_again(&mut self, consumer: u32, count: usize, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.runs.len() && out.len() < count {
            let run = self.runs[i];
            if run.consumer == consumer {
                let mut cut = None;
                for seq in Self::unacked(&self.acked, &run) {
                    if out.len() == count {
                        cut = Some(seq);
                        break;
                    }
                    out.push(seq);
                }
                match cut {
                    // Only part of the run was delivered again: only that part is newly timed.
                    Some(seq) => {
                        self.runs[i].last = seq - 1;
                        self.runs[i].delivered = now;
                        self.runs.insert(i + 1, Run { first: seq, ..run });
                        break;
                    }
                    None => self.runs[i].delivered = now,
                }
            }
            i += 1;
        }
        out
    }

    /// Gives the unacknowledged entries idle for `min_idle` to `consumer` (XAUTOCLAIM);
    /// returns how many.
    pub fn claim(&mut self, consumer: u32, min_idle: Duration, now: Instant) -> u64 {
        let mut claimed = 0;
        for run in self.runs.iter_mut() {
            if now.duration_since(run.delivered) >= min_idle {
                let unacked = Self::unacked(&self.acked, run).count() as u64;
                if unacked > 0 {
                    run.consumer = consumer;
                    run.delivered = now;
                    claimed += unacked;
                }
            }
        }
        claimed
    }

    /// Whether each of `consumers` consumers has an unacknowledged entry.
    pub fn busy(&self, consumers: usize) -> Vec<bool> {
        let mut busy = vec![false; consumers];
        for run in &self.runs {
            if !busy[run.consumer as usize] && Self::unacked(&self.acked, run).next().is_some() {
                busy[run.consumer as usize] = true;
            }
        }
        busy
    }

    /// Renames consumers after some were removed: `renumbered[old]` is the new position.
    /// Runs wholly acknowledged may name a removed consumer; no one reads them again.
    pub fn renumber(&mut self, renumbered: &[u32]) {
        for run in self.runs.iter_mut() {
            run.consumer = renumbered[run.consumer as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(runs: &[(u64, u64, u32)]) -> (PendingList, Instant) {
        let now = Instant::now();
        let mut p = PendingList::default();
        for &(first, last, consumer) in runs {
            p.push(first, last, consumer, now);
        }
        (p, now)
    }

    #[test]
    fn in_order_acknowledgements_empty_the_list() {
        let (mut p, _) = list(&[(1, 3, 0), (4, 5, 1)]);
        assert_eq!(p.live(), 5);
        for seq in 1..=5 {
            assert_eq!(p.first_unacked(), Some(seq));
            assert!(p.ack(seq));
        }
        assert_eq!((p.live(), p.first_unacked()), (0, None));
        assert!(!p.ack(3), "an entry acknowledged twice counts once");
    }

    #[test]
    fn acknowledging_many_at_once_counts_as_one_at_a_time_does() {
        let cases: [&[u64]; 6] = [
            &[1, 2, 3, 4, 5, 6, 7],
            &[1, 2, 3, 9, 4, 5],
            &[3, 1, 2, 5, 4, 7, 6, 8],
            &[1, 1, 2, 2, 40],
            &[6, 7, 1, 2, 3],
            // An entry of a later run waits acknowledged while the front goes in order.
            &[5, 1, 2, 3, 4, 6, 7],
        ];
        for seqs in cases {
            let (mut many, _) = list(&[(1, 3, 0), (4, 7, 1)]);
            let (mut one, _) = list(&[(1, 3, 0), (4, 7, 1)]);
            let by_one: u64 = seqs.iter().map(|&s| u64::from(one.ack(s))).sum();
            let ids: Vec<EntryId> = seqs.iter().map(|&s| EntryId::new(0, s)).collect();
            assert_eq!(many.ack_all(&ids), by_one, "{seqs:?}");
            assert_eq!(many.live(), one.live(), "{seqs:?}");
            assert_eq!(many.first_unacked(), one.first_unacked(), "{seqs:?}");
        }
    }

    #[test]
    fn out_of_order_acknowledgements_wait_for_the_front() {
        let (mut p, _) = list(&[(10, 14, 0)]);
        assert!(p.ack(12));
        assert!(!p.ack(12));
        assert!(p.ack(11));
        assert!(!p.ack(9), "never delivered");
        assert_eq!((p.live(), p.first_unacked()), (3, Some(10)));
        assert!(p.ack(10));
        // 11 and 12 went with it.
        assert_eq!((p.live(), p.first_unacked()), (2, Some(13)));
        assert!(p.ack(14));
        assert!(p.ack(13));
        assert_eq!((p.live(), p.first_unacked()), (0, None));
    }

    #[test]
    fn redelivery_takes_a_consumers_unacknowledged_entries_up_to_count() {
        let (mut p, _) = list(&[(1, 4, 0), (5, 6, 1), (7, 9, 0)]);
        assert!(p.ack(2));
        let later = Instant::now() + Duration::from_secs(5);
        assert_eq!(p.deliver_again(0, 3, later), [1, 3, 4]);
        assert_eq!(p.deliver_again(0, 10, later), [1, 3, 4, 7, 8, 9]);
        assert_eq!(p.deliver_again(1, 10, later), [5, 6]);
        // What a count left out is not delivered again: it stays idle.
        let (mut p, now) = list(&[(1, 4, 0)]);
        assert_eq!(p.deliver_again(0, 2, later), [1, 2]);
        assert_eq!(p.claim(1, Duration::from_secs(1), later), 2, "3 and 4 were idle");
        assert_eq!(p.deliver_again(1, 10, now), [3, 4]);
    }

    #[test]
    fn claims_move_idle_runs_and_busy_sees_who_holds_what() {
        let (mut p, now) = list(&[(1, 2, 0), (3, 4, 1), (5, 5, 2)]);
        assert!(p.ack(3) && p.ack(4));
        assert_eq!(p.busy(3), [true, false, true]);
        let later = now + Duration::from_secs(10);
        assert_eq!(p.claim(1, Duration::from_secs(5), later), 3);
        assert_eq!(p.busy(3), [false, true, false]);
        p.renumber(&[0, 0, 0]);
        assert_eq!(p.deliver_again(0, 10, later), [1, 2, 5]);
    }
}
