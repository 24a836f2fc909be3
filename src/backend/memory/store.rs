//! The embedded store: the stream with its consumer groups, the cache, and the run's own
//! records, all behind one lock (which is what makes a commit atomic).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cache::CacheStore;
use super::pending::PendingList;
use super::transport::Books;
use crate::backend::{BackendError, ClaimReport, GroupInfo, GroupRead};
use crate::message::{Batch, Delivery, Entry, EntryId};
use crate::network::Network;

/// A fast hash map: keys are agent names and cache members, not attacker-chosen.
pub(super) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub(super) struct Store {
    /// Entries in id order; sequence numbers are contiguous from the front's.
    pub entries: VecDeque<Stored>,
    pub next_seq: u64,
    /// Entries ever appended (trimming does not lower it).
    pub entries_added: u64,
    pub groups: BTreeMap<String, Group>,
    pub dead: Vec<Vec<(String, String)>>,
    pub cache: CacheStore,
    pub states: HashMap<String, String>,
    pub record: BTreeMap<String, String>,
    /// The stream's lease: holder and expiry.
    pub lease: Option<(String, Instant)>,
    /// The in-process transport's notes and hashes.
    pub books: Books,
    /// Model answers by request key.
    pub answers: BTreeMap<String, String>,
    /// When the last turn booked at the model ends, in milliseconds since the epoch.
    pub model_turns_end: u64,
    /// With a sparse network: each agent's inbox, the sequence numbers of the entries
    /// routed to it and not yet delivered, by agent index.
    pub inboxes: Option<Inboxes>,
}

/// Agents' inboxes: an entry is stored once, and its sequence number is put in the inbox of
/// each recipient.
pub(super) struct Inboxes {
    pub network: Arc<Network>,
    pub queued: Vec<VecDeque<u64>>,
}

impl Inboxes {
    pub fn new(network: Arc<Network>) -> Self {
        let queued = vec![VecDeque::new(); network.agents()];
        Inboxes { network, queued }
    }

    /// Puts entry `seq` in its recipients' inboxes: the followers of its sender and its
    /// addressee; everyone's when it is not an agent's message (another program wrote it,
    /// or it is malformed).
    fn route(&mut self, seq: u64, entry: &Entry) {
        let message = match entry {
            Entry::Message(m) => Some(&**m),
            Entry::Malformed { .. } => None,
        };
        for r in self.network.hearers(message) {
            self.queued[r as usize].push_back(seq);
        }
    }
}

impl Default for Store {
    fn default() -> Self {
        Store {
            entries: VecDeque::new(),
            next_seq: 1,
            entries_added: 0,
            groups: BTreeMap::new(),
            dead: Vec::new(),
            cache: CacheStore::default(),
            states: HashMap::default(),
            record: BTreeMap::new(),
            lease: None,
            books: Books::default(),
            answers: BTreeMap::new(),
            model_turns_end: 0,
            inboxes: None,
        }
    }
}

pub(super) struct Stored {
    pub seq: u64,
    pub entry: Entry,
}

#[derive(Default)]
pub(super) struct Group {
    /// The agent whose inbox this group reads, when agents have inboxes.
    pub inbox: Option<u32>,
    last_delivered: u64,
    /// Delivered and not yet acknowledged.
    pending: PendingList,
    /// Consumer names; pending entries refer to them by position.
    consumers: Vec<String>,
}

/// Memory entry ids are `0-seq`.
pub(super) fn id(seq: u64) -> EntryId {
    EntryId::new(0, seq)
}

pub(super) fn no_group(group: &str) -> BackendError {
    BackendError::command(format!(
        "NOGROUP: no consumer group {group:?} on the stream (create it before reading)"
    ))
}

impl Group {
    /// The position of `consumer`, added if it is new (as XREADGROUP does).
    fn consumer(&mut self, consumer: &str) -> u32 {
        match self.consumers.iter().position(|c| c == consumer) {
            Some(i) => i as u32,
            None => {
                self.consumers.push(consumer.to_string());
                (self.consumers.len() - 1) as u32
            }
        }
    }

    /// The first sequence number this group still needs: its oldest unacknowledged entry, or
    /// the one after what it was last delivered.
    fn first_needed(&self) -> u64 {
        self.pending
            .first_unacked()
            .unwrap_or(self.last_delivered + 1)
            .min(self.last_delivered + 1)
    }

    pub fn info(&self, name: &str, last: u64) -> GroupInfo {
        GroupInfo {
            name: name.to_string(),
            consumers: self.consumers.len() as u64,
            pending: self.pending.live(),
            lag: Some(last.saturating_sub(self.last_delivered)),
            last_delivered: id(self.last_delivered),
        }
    }

    /// Takes over the unacknowledged entries idle for `min_idle` (any consumer's, the
    /// claimant's own included, as XAUTOCLAIM does), then removes the other consumers that
    /// have nothing pending.
    pub fn claim(&mut self, consumer: &str, min_idle: Duration) -> ClaimReport {
        let me = self.consumer(consumer);
        let claimed = self.pending.claim(me, min_idle, Instant::now());
        self.remove_idle_consumers(me);
        ClaimReport { claimed, deleted: 0 }
    }

    fn remove_idle_consumers(&mut self, keep: u32) {
        let mut busy = self.pending.busy(self.consumers.len());
        busy[keep as usize] = true;
        if busy.iter().all(|&b| b) {
            return;
        }
        // New positions for the consumers that stay.
        let mut renumbered = vec![0u32; self.consumers.len()];
        let mut next = 0u32;
        for (i, &b) in busy.iter().enumerate() {
            if b {
                renumbered[i] = next;
                next += 1;
            }
        }
        let mut i = 0;
        self.consumers.retain(|_| {
            i += 1;
            busy[i - 1]
        });
        self.pending.renumber(&renumbered);
    }
}

impl Store {
    pub fn append(&mut self, entry: Entry) -> EntryId {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries_added += 1;
        if let Some(inboxes) = &mut self.inboxes {
            inboxes.route(seq, &entry);
        }
        self.entries.push_back(Stored { seq, entry });
        id(seq)
    }

    /// Creates `name` if it does not exist; with inboxes, it reads its agent's.
    pub fn ensure_group(&mut self, name: &str, agent: Option<&str>) {
        let inbox = self
            .inboxes
            .as_ref()
            .and_then(|i| agent.and_then(|a| i.network.index_of(a)));
        self.groups.entry(name.to_string()).or_insert_with(|| Group {
            inbox,
            ..Group::default()
        });
    }

    pub fn first_seq(&self) -> u64 {
        self.entries.front().map_or(self.next_seq, |e| e.seq)
    }

    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn get(&self, seq: u64) -> Option<&Stored> {
        entry_at(&self.entries, self.first_seq(), seq)
    }

    fn delivery(stored: &Stored) -> Delivery {
        Delivery {
            id: id(stored.seq),
            entry: stored.entry.clone(),
        }
    }

    /// One group's read. `shared` is the previous new-entries read of the same call: a group
    /// that reads the same range shares its batch.
    pub fn read(
        &mut self,
        r: &GroupRead,
        shared: &mut Option<(u64, u64, Batch)>,
    ) -> Result<Batch, BackendError> {
        let first = self.first_seq();
        let last = self.last_seq();
        let Some(group) = self.groups.get_mut(&r.group) else {
            return Err(no_group(&r.group));
        };
        let consumer = group.consumer(&r.consumer);
        if r.pending {
            let again = group.pending.deliver_again(consumer, r.count, Instant::now());
            let out: Vec<Delivery> = again
                .into_iter()
                .filter_map(|seq| entry_at(&self.entries, first, seq))
                .map(Self::delivery)
                .collect();
            return Ok(out.into());
        }
        if let Some(agent) = group.inbox {
            let queued = match &mut self.inboxes {
                Some(inboxes) => &mut inboxes.queued[agent as usize],
                None => return Ok(Batch::from([])),
            };
            return Ok(read_inbox(group, consumer, queued, &self.entries, first, r.count));
        }
        let from = (group.last_delivered + 1).max(first);
        let to = last.min(from.saturating_add(r.count as u64).saturating_sub(1));
        if from > to || r.count == 0 {
            return Ok(Batch::from([]));
        }
        let batch = match shared {
            Some((f, t, batch)) if (*f, *t) == (from, to) => batch.clone(),
            _ => {
                let batch: Batch = self
                    .entries
                    .range((from - first) as usize..=(to - first) as usize)
                    .map(Self::delivery)
                    .collect();
                *shared = Some((from, to, batch.clone()));
                batch
            }
        };
        group.pending.push(from, to, consumer, Instant::now());
        group.last_delivered = to;
        Ok(batch)
    }

    /// Acknowledges `ids` in `group`; returns how many were pending (0 without the group).
    pub fn ack(&mut self, group: &str, ids: &[EntryId]) -> u64 {
        let Some(group) = self.groups.get_mut(group) else {
            return 0;
        };
        group.pending.ack_all(ids)
    }

    /// Drops entries from the front while the stream is longer than `maxlen`, sparing every
    /// entry some group has not read and acknowledged.
    pub fn trim(&mut self, maxlen: u64) -> u64 {
        let queued_front = |g: &Group| self.inbox_of(g).and_then(|q| q.front().copied());
        let safe = self
            .groups
            .values()
            .map(|g| g.first_needed().min(queued_front(g).unwrap_or(u64::MAX)))
            .min()
            .unwrap_or(u64::MAX);
        let mut removed = 0;
        while self.entries.len() as u64 > maxlen && self.entries.front().is_some_and(|e| e.seq < safe) {
            self.entries.pop_front();
            removed += 1;
        }
        removed
    }

    /// How many entries wait in the inbox `group` reads (0 for a group on the stream).
    pub fn queued(&self, group: &Group) -> Option<u64> {
        self.inbox_of(group).map(|q| q.len() as u64)
    }

    /// What waits in the inbox `group` reads, when it reads one.
    fn inbox_of(&self, group: &Group) -> Option<&VecDeque<u64>> {
        let inboxes = self.inboxes.as_ref()?;
        group.inbox.map(|a| &inboxes.queued[a as usize])
    }

    pub fn lease_holder(&self) -> Option<&str> {
        self.lease
            .as_ref()
            .filter(|(_, until)| *until > Instant::now())
            .map(|(holder, _)| holder.as_str())
    }
}

/// Entry `seq` of `entries` (whose front is entry `first`), unless it was trimmed.
fn entry_at(entries: &VecDeque<Stored>, first: u64, seq: u64) -> Option<&Stored> {
    seq.checked_sub(first).and_then(|i| entries.get(i as usize))
}

/// Up to `count` entries from the front of an agent's inbox, delivered to `consumer` of
/// `group`. An entry trimmed from the stream meanwhile is skipped, as Redis drops it.
fn read_inbox(
    group: &mut Group,
    consumer: u32,
    queued: &mut VecDeque<u64>,
    entries: &VecDeque<Stored>,
    first: u64,
    count: usize,
) -> Batch {
    let now = Instant::now();
    let mut out = Vec::with_capacity(count.min(queued.len()));
    while out.len() < count {
        let Some(seq) = queued.pop_front() else { break };
        let Some(stored) = entry_at(entries, first, seq) else {
            continue;
        };
        out.push(Store::delivery(stored));
        group.pending.push(seq, seq, consumer, now);
        group.last_delivered = seq;
    }
    out.into()
}
