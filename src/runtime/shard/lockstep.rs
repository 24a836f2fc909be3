//! One lockstep tick on a shard: every agent that has not done it reads what the tick before
//! published, and steps.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};

use super::{READ_COUNT, Shard, StepFuture, WINDOW};
use crate::backend::{Backend, GroupRead};
use crate::message::{Batch, Delivery, EntryId, same_entries};
use crate::network::Routes;
use crate::runtime::RunError;
use crate::runtime::agent::{BatchPlan, StepKind, StepReport};

/// How each lockstep batch is handled ([`BatchPlan`]). Every group reads the same entries, so
/// the plan is worked out once for every batch with the same entries and shared, instead of
/// by each agent.
fn batch_plans(batches: &[Batch], kind: StepKind) -> Vec<Arc<BatchPlan>> {
    let mut plans: Vec<Arc<BatchPlan>> = Vec::with_capacity(batches.len());
    let mut reference: Option<usize> = None;
    for (b, batch) in batches.iter().enumerate() {
        let same = reference.filter(|&r| Arc::ptr_eq(&batches[r], batch) || same_entries(&batches[r], batch));
        let plan = match same {
            Some(r) => plans[r].clone(),
            None => {
                reference = Some(b);
                Arc::new(BatchPlan::new(batch, kind))
            }
        };
        plans.push(plan);
    }
    plans
}

/// What the agents read in a lockstep tick: the messages the tick before published.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Expected {
    /// How many messages the tick before published: with everyone hearing everyone, what
    /// each agent reads. (`expect` in a run's checkpoint, as it always was.)
    #[serde(rename = "expect")]
    pub messages: u64,
    /// With a sparse network, where each of them went, from which each agent's share is
    /// counted.
    #[serde(default, skip_serializing_if = "Routes::is_empty")]
    pub routes: Routes,
}

/// What a batch read for lockstep tick `previous + 1` holds of tick `previous`.
#[derive(Debug, Clone, Copy)]
struct TickCount {
    /// The newest id in the batch.
    newest: EntryId,
    /// Messages of tick `previous`.
    of_previous: u64,
    /// Whether a message of a later tick came too: the group has read all of `previous`.
    later: bool,
}

impl TickCount {
    fn of(batch: &[Delivery], previous: u64) -> TickCount {
        let mut count = TickCount {
            newest: EntryId::ZERO,
            of_previous: 0,
            later: false,
        };
        for d in batch {
            count.newest = count.newest.max(d.id);
            match d.message().and_then(|m| m.tick) {
                Some(t) if t == previous => count.of_previous += 1,
                Some(t) if t > previous => count.later = true,
                _ => {}
            }
        }
        count
    }
}

impl<B: Backend> Shard<B> {
    /// Lockstep tick `tick`: every agent that has not done it yet reads its share of what
    /// tick `tick - 1` published (`expected`), handles it and commits.
    pub async fn run_tick(&mut self, tick: u64, expected: &Expected) -> Result<StepReport, RunError> {
        let mut totals = StepReport::default();
        let todo: Vec<usize> = (0..self.agents.len())
            .filter(|&i| self.agents[i].last_tick.is_none_or(|t| t < tick))
            .collect();
        let shares = self.network.as_ref().map(|n| n.expected(&expected.routes));
        let mut steps: FuturesUnordered<StepFuture> = FuturesUnordered::new();
        for window in todo.chunks(WINDOW) {
            let expect: Vec<u64> = match &shares {
                Some(shares) => window
                    .iter()
                    .map(|&i| shares[self.agents[i].spec.index])
                    .collect(),
                None => vec![expected.messages; window.len()],
            };
            let batches = self.read_tick(window, tick, expect).await?;
            let kind = StepKind::Tick(tick);
            let plans = batch_plans(&batches, kind);
            for ((&i, deliveries), plan) in window.iter().zip(batches).zip(plans) {
                steps.push(self.send(i, kind, deliveries, Some(plan)));
            }
            // Keep at most one window stepping while the next one is read.
            while steps.len() > WINDOW {
                self.finish_tick_step(steps.next().await, tick, &mut totals)?;
            }
        }
        while let Some(done) = steps.next().await {
            self.finish_tick_step(Some(done), tick, &mut totals)?;
        }
        self.read_pending = false;
        Ok(totals)
    }

    fn finish_tick_step(
        &mut self,
        done: Option<(usize, Result<StepReport, RunError>)>,
        tick: u64,
        totals: &mut StepReport,
    ) -> Result<(), RunError> {
        if let Some((i, result)) = done {
            *totals += result?;
            self.agents[i].last_tick = Some(tick);
        }
        Ok(())
    }

    /// Reads, for each agent of `window`, everything tick `tick - 1` published for it:
    /// `expect[w]` entries with that tick, plus any entry without one (written by other
    /// programs).
    async fn read_tick(
        &mut self,
        window: &[usize],
        tick: u64,
        expect: Vec<u64>,
    ) -> Result<Vec<Batch>, RunError> {
        let mut read = TickRead::new(tick - 1, expect);
        let mut pending = self.read_pending;
        loop {
            let wanted = read.wanted(pending);
            if wanted.is_empty() {
                break;
            }
            let reads: Vec<GroupRead> = wanted
                .iter()
                .map(|&w| self.group_read(window[w], read.count(w), pending))
                .collect();
            let results = match self.backend.read(&reads).await {
                Ok(results) => results,
                Err(e) if e.is_unavailable() => {
                    tracing::debug!(tick, "{e}; waiting for the backend to come back");
                    self.reconnect.wait(&self.backend).await?;
                    pending = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            // What a batch says about tick `tick - 1`, for the batch shared by the groups before.
            let mut seen: Option<(Batch, TickCount)> = None;
            for (&w, deliveries) in wanted.iter().zip(results) {
                if let Err(missing) = read.take(w, deliveries, pending, &mut seen) {
                    let keys = self.backend.keys();
                    return Err(RunError::Lost(format!(
                        "agent {} expected {missing} more messages of tick {} on stream {:?} and found none: they were deleted before it read them",
                        self.agents[window[w]].spec.name,
                        tick - 1,
                        keys.group_stream(&self.agents[window[w]].group)
                    )));
                }
            }
            pending = false;
        }
        Ok(read.into_batches())
    }
}

/// What a window of agents has read so far of tick `previous`.
struct TickRead {
    previous: u64,
    /// Each agent's reads, in order: usually one batch, shared with the other agents that
    /// read the same entries; several when a tick holds more than one read's worth.
    batches: Vec<Vec<Batch>>,
    /// The newest id in each batch: a read repeated after a lost connection brings back what
    /// was already collected.
    newest: Vec<EntryId>,
    /// How many messages of tick `previous` each agent has yet to read.
    remaining: Vec<u64>,
}

impl TickRead {
    fn new(previous: u64, expect: Vec<u64>) -> Self {
        let agents = expect.len();
        TickRead {
            previous,
            batches: vec![Vec::new(); agents],
            newest: vec![EntryId::ZERO; agents],
            remaining: expect,
        }
    }

    /// The agents to read for: all of them when reading pending entries, else those still
    /// expecting messages.
    fn wanted(&self, pending: bool) -> Vec<usize> {
        (0..self.batches.len())
            .filter(|&w| pending || self.remaining[w] > 0)
            .collect()
    }

    /// How many entries agent `w` asks for.
    fn count(&self, w: usize) -> usize {
        (self.remaining[w] as usize).clamp(1, READ_COUNT)
    }

    /// Adds what a read brought agent `w`. `seen` is the count of the batch the agent before
    /// got, shared when the batch is. Fails with how many messages are missing when a read of
    /// new entries came back empty while some were expected.
    fn take(
        &mut self,
        w: usize,
        deliveries: Batch,
        pending: bool,
        seen: &mut Option<(Batch, TickCount)>,
    ) -> Result<(), u64> {
        if deliveries.is_empty() && !pending {
            let missing = std::mem::take(&mut self.remaining[w]);
            return if missing > 0 { Err(missing) } else { Ok(()) };
        }
        let before = self.newest[w];
        let deliveries: Batch = if before != EntryId::ZERO && deliveries.iter().any(|d| d.id <= before) {
            deliveries.iter().filter(|d| d.id > before).cloned().collect()
        } else {
            deliveries
        };
        let count = match seen {
            Some((batch, count)) if Arc::ptr_eq(batch, &deliveries) => *count,
            _ => {
                let count = TickCount::of(&deliveries, self.previous);
                *seen = Some((deliveries.clone(), count));
                count
            }
        };
        self.newest[w] = self.newest[w].max(count.newest);
        self.remaining[w] = if count.later {
            // A later tick: this group has read all of tick `previous`.
            0
        } else {
            self.remaining[w].saturating_sub(count.of_previous)
        };
        if !deliveries.is_empty() {
            self.batches[w].push(deliveries);
        }
        Ok(())
    }

    /// Each agent's batch: its reads joined. Agents whose reads were the same batches (every
    /// agent of a broadcast tick, on the memory backend) share one joined batch: joining
    /// copies every delivery, and a tick of 10,000 messages read 1,024 at a time by 10,000
    /// agents would otherwise copy each message's handle a hundred million times.
    fn into_batches(self) -> Vec<Batch> {
        let mut joined: Vec<Batch> = Vec::with_capacity(self.batches.len());
        for (w, reads) in self.batches.iter().enumerate() {
            let batch = match reads.as_slice() {
                [] => Batch::from([]),
                [one] => one.clone(),
                _ => {
                    let same_as_before = w > 0
                        && self.batches[w - 1].len() == reads.len()
                        && self.batches[w - 1]
                            .iter()
                            .zip(reads)
                            .all(|(a, b)| Arc::ptr_eq(a, b));
                    if same_as_before {
                        joined[w - 1].clone()
                    } else {
                        reads.iter().flat_map(|r| r.iter().cloned()).collect()
                    }
                }
            };
            joined.push(batch);
        }
        joined
    }
}
