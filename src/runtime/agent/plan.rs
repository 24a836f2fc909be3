//! Which messages of a batch an agent hands to its behaviour, and in which order.

use std::collections::HashMap;
use std::sync::Arc;

use super::StepKind;
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
    by_sender: HashMap<Arc<str>, Vec<u32>>,
    /// Every entry is a message of an earlier tick: all are acknowledged, none is held back
    /// for the next step.
    pub(super) plain: bool,
}

impl BatchPlan {
    pub fn new(deliveries: &[Delivery], kind: StepKind) -> BatchPlan {
        let order = handling_order(deliveries, kind);
        let mut by_sender: HashMap<Arc<str>, Vec<u32>> = HashMap::new();
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
        BatchPlan {
            order,
            by_sender,
            plain,
        }
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

/// The messages `agent` hands to its behaviour, in order, with their stream ids: a plan's
/// order without the agent's own messages, or the same worked out for this batch alone.
pub(super) fn messages_for<'d>(
    agent: &str,
    deliveries: &'d [Delivery],
    kind: StepKind,
    plan: Option<&BatchPlan>,
) -> Vec<(EntryId, &'d Message)> {
    let Some(plan) = plan else {
        return handling_order(deliveries, kind)
            .into_iter()
            .filter_map(|i| {
                let d = &deliveries[i as usize];
                let msg = d.message()?;
                (*msg.sender_id != *agent).then_some((d.id, &**msg))
            })
            .collect();
    };
    let mut own = plan
        .by_sender
        .get(agent)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .peekable();
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
