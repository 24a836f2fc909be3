//! Which messages of a batch an agent hands to its behaviour, and in which order.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::Arc;

use super::StepKind;
use crate::behaviour::PayloadTable;
use crate::message::{Delivery, Entry, EntryId, Message};

/// What every agent given the same lockstep batch would work out alike, worked out once and
/// shared: with a thousand agents reading the same thousand messages, looking at each
/// message once instead of once per agent is most of a tick's work saved.
#[derive(Debug)]
pub(crate) struct BatchPlan {
    /// [`handling_order`] of the batch.
    order: Vec<u32>,
    /// For each sender, the places in `order` of its messages, ascending: an agent skips its
    /// own without comparing its name with every sender's.
    // foldhash: every agent of a tick looks its own name up here.
    by_sender: HashMap<Arc<str>, Vec<u32>, foldhash::fast::RandomState>,
    /// Every entry is a message of an earlier tick: all are acknowledged, none is held back
    /// for the next step.
    pub(super) plain: bool,
    /// Every entry's id, in stream order: what each agent acknowledges when `plain`.
    pub(super) ids: Arc<[EntryId]>,
    /// The messages of `order`, their payloads decoded once for every agent's behaviour that
    /// handles batches.
    pub(super) table: PayloadTable,
}

impl BatchPlan {
    pub fn new(deliveries: &[Delivery], kind: StepKind) -> BatchPlan {
        let order = handling_order(deliveries, kind);
        let mut by_sender: HashMap<Arc<str>, Vec<u32>, _> = HashMap::default();
        for (place, &i) in order.iter().enumerate() {
            if let Some(m) = deliveries[i as usize].message() {
                by_sender
                    .entry(m.sender_id.clone())
                    .or_default()
                    .push(place as u32);
            }
        }
        // `order` leaves out malformed entries and messages of this tick or later.
        let plain = order.len() == deliveries.len();
        let table = PayloadTable::new(
            order
                .iter()
                .filter_map(|&i| deliveries[i as usize].message().cloned())
                .collect(),
        );
        let mut ids: Vec<EntryId> = deliveries.iter().map(|d| d.id).collect();
        ids.sort_unstable();
        BatchPlan {
            order,
            by_sender,
            plain,
            ids: ids.into(),
            table,
        }
    }

    /// The places in the plan's order of `agent`'s own messages, ascending.
    pub(super) fn own_places(&self, agent: &str) -> &[u32] {
        self.by_sender.get(agent).map_or(&[], Vec::as_slice)
    }
}

/// The messages of a batch an agent hands to its behaviour, as indices into `deliveries`, in
/// the order it hands them over. Free mode: in stream order. Lockstep tick `t`: the messages of
/// earlier ticks by sender and the sender's counter (DESIGN.md invariant 3), never by arrival;
/// one published twice (same sender and counter) once. Malformed entries and messages of tick
/// `t` or later are not in it. The agent's own messages are; it skips them itself.
fn handling_order(deliveries: &[Delivery], kind: StepKind) -> Vec<u32> {
    let now = match kind {
        StepKind::Tick(t) => Some(t),
        _ => None,
    };
    let mut order: Vec<u32> = deliveries
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            d.message()
                .is_some_and(|m| now.is_none_or(|t| m.tick.is_none_or(|mt| mt < t)))
        })
        .map(|(i, _)| i as u32)
        .collect();
    if now.is_some() {
        let message = |i: &u32| match &deliveries[*i as usize].entry {
            Entry::Message(m) => Some(&**m),
            Entry::Malformed(_) => None,
        };
        let key = |i: &u32| message(i).map(Message::lockstep_key);
        // Strictly increasing keys: sorted, and no message twice. Usually true already.
        if !order.is_sorted_by(|a, b| key(a) < key(b)) {
            order.sort_by(|a, b| key(a).cmp(&key(b)));
            order.dedup_by(|b, a| message(a).is_some_and(|m| m.seq.is_some()) && key(a) == key(b));
        }
    }
    order
}

/// The messages an agent hands to its behaviour in a step. The list of them is worked out
/// when first asked for: a behaviour that handles batches reads a shared plan's payload table
/// instead, and a thousand agents need not each copy out a thousand message handles.
pub(super) struct Handled<'d> {
    agent: &'d str,
    deliveries: &'d [Delivery],
    kind: StepKind,
    plan: Option<&'d BatchPlan>,
    list: OnceCell<Vec<(EntryId, &'d Message)>>,
}

impl<'d> Handled<'d> {
    pub fn new(
        agent: &'d str,
        deliveries: &'d [Delivery],
        kind: StepKind,
        plan: Option<&'d BatchPlan>,
    ) -> Self {
        Handled {
            agent,
            deliveries,
            kind,
            plan,
            list: OnceCell::new(),
        }
    }

    /// The messages with their stream ids, in handling order ([`messages_for`]).
    pub fn list(&self) -> &[(EntryId, &'d Message)] {
        self.list
            .get_or_init(|| messages_for(self.agent, self.deliveries, self.kind, self.plan))
    }

    pub fn len(&self) -> usize {
        match self.plan {
            Some(plan) => plan.order.len() - plan.own_places(self.agent).len(),
            None => self.list().len(),
        }
    }

    /// The plan's payload table and the places in it of the agent's own messages, which
    /// are what the list holds, when a plan was shared.
    pub fn shared(&self) -> Option<(&'d PayloadTable, &'d [u32])> {
        self.plan.map(|plan| (&plan.table, plan.own_places(self.agent)))
    }
}

/// Which of a step's messages were given up on (dead-lettered after failing too often), by
/// place in the list: usually none, and then nothing is allocated or scanned.
#[derive(Debug, Default)]
pub(super) struct GivenUp {
    marks: Vec<bool>,
    count: usize,
}

impl GivenUp {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn contains(&self, place: usize) -> bool {
        self.marks.get(place).copied().unwrap_or(false)
    }

    /// Marks the message at `place` of a list of `len`; whether it was not marked yet.
    pub fn insert(&mut self, place: usize, len: usize) -> bool {
        if self.marks.is_empty() {
            self.marks = vec![false; len];
        }
        let newly = !std::mem::replace(&mut self.marks[place], true);
        self.count += usize::from(newly);
        newly
    }

    /// The places of a list of `len` not given up on.
    pub fn kept(&self, len: usize) -> Vec<usize> {
        (0..len).filter(|&i| !self.contains(i)).collect()
    }
}

/// The messages `agent` hands to its behaviour, in order, with their stream ids: a plan's
/// order without the agent's own messages, or the same worked out for this batch alone.
fn messages_for<'d>(
    agent: &str,
    deliveries: &'d [Delivery],
    kind: StepKind,
    plan: Option<&BatchPlan>,
) -> Vec<(EntryId, &'d Message)> {
    let Some(plan) = plan else {
        let from_others = |d: &'d Delivery| {
            let msg = d.message()?;
            (!crate::message::same_agent(&msg.sender_id, agent)).then_some((d.id, &**msg))
        };
        if !matches!(kind, StepKind::Tick(_)) {
            // Free mode: stream order, nothing to sort, in one pass.
            return deliveries.iter().filter_map(from_others).collect();
        }
        return handling_order(deliveries, kind)
            .into_iter()
            .filter_map(|i| from_others(&deliveries[i as usize]))
            .collect();
    };
    let mut own = plan.own_places(agent).iter().peekable();
    plan.order
        .iter()
        .enumerate()
        .filter_map(|(place, &i)| {
            if own.next_if_eq(&&(place as u32)).is_some() {
                return None;
            }
            let d = &deliveries[i as usize];
            d.message().map(|msg| (d.id, &**msg))
        })
        .collect()
}
