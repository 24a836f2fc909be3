//! A shard: the agents one process hosts, and the reader that feeds them.
//!
//! The reader reads the agents' consumer groups in batches (one backend call for many
//! groups: one round trip on Redis) and hands each agent its deliveries as one step. Agents
//! are read in windows, and a window's steps must finish before the next window is read, so
//! memory stays bounded however many agents there are (DESIGN.md invariant 6).
//!
//! When the backend is lost, the shard waits for it (up to `reconnect_timeout`) and then
//! reads each consumer's pending entries first: a read whose reply was lost has delivered
//! entries that only the pending list still knows about.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, watch};

use super::RunError;
use super::agent::{AgentActor, AgentCore, AgentSetup, BatchPlan, Step, StepInput, StepKind, StepReport};
use super::reconnect;
use crate::backend::{Backend, GroupRead};
use crate::message::{Batch, Delivery, EntryId, same_entries};
use crate::scenario::{AgentSpec, Mode, Scenario};
use crate::tally::Tally;

/// Agents read in one backend call, and stepping at once.
const WINDOW: usize = 256;
/// The most entries one group read asks for.
const READ_COUNT: usize = 1024;
/// The most pending entries one group read asks for.
const PENDING_COUNT: usize = 100_000;
/// Free mode: steps an agent may have queued, so that its next batch is read while it
/// commits the last one (steps still run one at a time, in order).
const FREE_STEPS_IN_FLIGHT: usize = 2;
/// How long an idle free-mode shard waits for new entries before it looks again.
const IDLE_WAIT: Duration = Duration::from_millis(100);

struct Hosted<B: Backend> {
    spec: AgentSpec,
    group: String,
    /// `{agent}@{instance}`: each process reads through a consumer of its own, so that
    /// another process can claim what a dead one left pending.
    consumer: String,
    addr: Addr<AgentActor<B>>,
    started: bool,
    last_tick: Option<u64>,
    /// What the agent's last committed step counted (from its saved record).
    last_tally: Tally,
}

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

/// What a free-mode shard tells the coordinator.
pub(crate) enum ShardEvent {
    Step(StepReport),
    /// Every hosted group is read to the end and no step is running.
    Idle,
}

/// How a shard runs, beyond the scenario.
#[derive(Debug, Clone)]
pub(crate) struct ShardOptions {
    /// Continue from the agents' saved states and the groups' pending entries.
    pub resume: bool,
    /// Names this process's consumers.
    pub instance: String,
}

type StepFuture = Pin<Box<dyn Future<Output = (usize, Result<StepReport, RunError>)>>>;

pub(crate) struct Shard<B: Backend> {
    backend: B,
    agents: Vec<Hosted<B>>,
    /// Read each consumer's pending entries before new ones, once: after a resume, or after
    /// the backend was lost.
    read_pending: bool,
    reconnect_timeout: Duration,
    claim_idle: Duration,
}

impl<B: Backend> Shard<B> {
    /// Hosts `agents` of `scenario`: creates their groups, restores saved states (and takes
    /// over what dead consumers left pending) on resume, and starts their actors on the
    /// current arbiter.
    pub async fn start(
        backend: B,
        scenario: &Scenario,
        agents: &[AgentSpec],
        options: &ShardOptions,
    ) -> Result<Self, RunError> {
        let timeout = scenario.backend.reconnect_timeout;
        let keys = backend.keys().clone();
        let groups: Vec<String> = agents.iter().map(|a| keys.group(&a.name)).collect();
        reconnect::retry(&backend, timeout, || backend.ensure_groups(&groups)).await?;
        let names: Vec<Arc<str>> = agents.iter().map(|a| a.name.clone()).collect();
        let saved = if options.resume {
            reconnect::retry(&backend, timeout, || backend.load_states(&names)).await?
        } else {
            vec![None; agents.len()]
        };
        let mut peers_by_table: BTreeMap<usize, Arc<[Arc<str>]>> = BTreeMap::new();
        let mut hosted = Vec::with_capacity(agents.len());
        for ((spec, group), saved) in agents.iter().zip(groups).zip(saved) {
            let consumer = format!("{}@{}", spec.name, options.instance);
            if options.resume {
                // The process that ran this agent is gone: take over its pending entries now.
                let claimed = reconnect::retry(&backend, timeout, || {
                    backend.claim(&group, &consumer, Duration::ZERO)
                })
                .await?;
                if claimed.deleted > 0 {
                    tracing::warn!(
                        agent = %spec.name,
                        "{} pending entries no longer exist on the stream (trimmed or deleted)",
                        claimed.deleted
                    );
                }
            }
            let peers = peers_by_table
                .entry(spec.table)
                .or_insert_with(|| scenario.peers_of(spec).into())
                .clone();
            let core = AgentCore::new(AgentSetup {
                spec: spec.clone(),
                group: group.clone(),
                behaviour: scenario.behaviour_of(spec).clone(),
                peers,
                backend: backend.clone(),
                seed: scenario.seed,
                max_retries: scenario.max_retries,
                reconnect_timeout: timeout,
                saved,
            })?;
            hosted.push(Hosted {
                spec: spec.clone(),
                group,
                consumer,
                started: core.has_started(),
                last_tick: core.last_tick(),
                last_tally: core.last_tally().clone(),
                addr: AgentActor::new(core).start(),
            });
        }
        Ok(Shard {
            backend,
            agents: hosted,
            read_pending: options.resume,
            reconnect_timeout: timeout,
            claim_idle: scenario.backend.claim_idle,
        })
    }

    /// The hosted agents whose last committed step was `tick`, with what it counted: after a
    /// resume, those that finished the interrupted tick before the crash.
    pub fn done_at(&self, tick: u64) -> Vec<(&AgentSpec, &Tally)> {
        self.agents
            .iter()
            .filter(|a| a.started && a.last_tick == Some(tick))
            .map(|a| (&a.spec, &a.last_tally))
            .collect()
    }

    fn send(&self, i: usize, kind: StepKind, deliveries: Batch, plan: Option<Arc<BatchPlan>>) -> StepFuture {
        let request = self.agents[i].addr.send(Step(StepInput {
            kind,
            deliveries,
            plan,
        }));
        let name = self.agents[i].spec.name.clone();
        Box::pin(async move {
            let result = match request.await {
                Ok(result) => result,
                Err(e) => Err(RunError::Internal(format!("agent {name} stopped: {e}"))),
            };
            (i, result)
        })
    }

    fn group_read(&self, i: usize, count: usize, pending: bool) -> GroupRead {
        GroupRead {
            group: self.agents[i].group.clone(),
            consumer: self.agents[i].consumer.clone(),
            count: if pending { PENDING_COUNT } else { count },
            pending,
        }
    }

    /// Runs `init` and `on_start` for every agent that has not started yet.
    pub async fn start_agents(&mut self, mode: Mode) -> Result<StepReport, RunError> {
        let lockstep = mode == Mode::Lockstep;
        let mut totals = StepReport::default();
        let todo: Vec<usize> = (0..self.agents.len())
            .filter(|&i| !self.agents[i].started)
            .collect();
        for window in todo.chunks(WINDOW) {
            let mut steps: FuturesUnordered<StepFuture> = window
                .iter()
                .map(|&i| self.send(i, StepKind::Start { lockstep }, Batch::from([]), None))
                .collect();
            while let Some((i, result)) = steps.next().await {
                totals += result?;
                self.agents[i].started = true;
                self.agents[i].last_tick = lockstep.then_some(0);
            }
        }
        Ok(totals)
    }

    /// Lockstep tick `tick`: every agent that has not done it yet reads the `expect` entries
    /// of tick `tick - 1`, handles them and commits.
    pub async fn run_tick(&mut self, tick: u64, expect: u64) -> Result<StepReport, RunError> {
        let mut totals = StepReport::default();
        let todo: Vec<usize> = (0..self.agents.len())
            .filter(|&i| self.agents[i].last_tick.is_none_or(|t| t < tick))
            .collect();
        let mut steps: FuturesUnordered<StepFuture> = FuturesUnordered::new();
        for window in todo.chunks(WINDOW) {
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

    /// Reads, for each agent of `window`, everything tick `tick - 1` published: `expect`
    /// entries with that tick, plus any entry without one (written by other programs).
    async fn read_tick(&mut self, window: &[usize], tick: u64, expect: u64) -> Result<Vec<Batch>, RunError> {
        let previous = tick - 1;
        let mut batches: Vec<Batch> = vec![Batch::from([]); window.len()];
        // The newest id in each batch: a read repeated after a lost connection brings back
        // what was already collected.
        let mut newest: Vec<EntryId> = vec![EntryId::ZERO; window.len()];
        let mut remaining: Vec<u64> = vec![expect; window.len()];
        let mut pending = self.read_pending;
        loop {
            let wanted: Vec<usize> = (0..window.len())
                .filter(|&w| pending || remaining[w] > 0)
                .collect();
            if wanted.is_empty() {
                break;
            }
            let reads: Vec<GroupRead> = wanted
                .iter()
                .map(|&w| self.group_read(window[w], (remaining[w] as usize).clamp(1, READ_COUNT), pending))
                .collect();
            let results = match self.backend.read(&reads).await {
                Ok(results) => results,
                Err(e) if e.is_unavailable() => {
                    tracing::debug!(tick, "{e}; waiting for the backend to come back");
                    reconnect::wait(&self.backend, self.reconnect_timeout).await?;
                    pending = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            // What a batch says about tick `previous`, for the batch shared by the groups before.
            let mut seen: Option<(Batch, TickCount)> = None;
            for (&w, deliveries) in wanted.iter().zip(results) {
                if deliveries.is_empty() && !pending {
                    if remaining[w] > 0 {
                        tracing::warn!(
                            agent = %self.agents[window[w]].spec.name,
                            tick,
                            "expected {} more messages from tick {previous}, found none",
                            remaining[w]
                        );
                    }
                    remaining[w] = 0;
                    continue;
                }
                let before = newest[w];
                let deliveries: Batch =
                    if before != EntryId::ZERO && deliveries.iter().any(|d| d.id <= before) {
                        deliveries.iter().filter(|d| d.id > before).cloned().collect()
                    } else {
                        deliveries
                    };
                let count = match &seen {
                    Some((batch, count)) if Arc::ptr_eq(batch, &deliveries) => *count,
                    _ => {
                        let count = TickCount::of(&deliveries, previous);
                        seen = Some((deliveries.clone(), count));
                        count
                    }
                };
                newest[w] = newest[w].max(count.newest);
                remaining[w] = if count.later {
                    // A later tick: this group has read all of tick `previous`.
                    0
                } else {
                    remaining[w].saturating_sub(count.of_previous)
                };
                if batches[w].is_empty() {
                    // Usually the whole batch comes in one read: keep it, shared.
                    batches[w] = deliveries;
                } else {
                    batches[w] = batches[w].iter().chain(deliveries.iter()).cloned().collect();
                }
            }
            pending = false;
        }
        Ok(batches)
    }

    /// Free mode: feeds agents as messages arrive until `stop` turns true, reporting every
    /// step (and every moment of idleness) on `events`.
    pub async fn run_free(
        &mut self,
        events: mpsc::UnboundedSender<ShardEvent>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), RunError> {
        let n = self.agents.len();
        let mut in_flight = vec![0usize; n];
        let mut steps: FuturesUnordered<StepFuture> = FuturesUnordered::new();
        let mut pending = self.read_pending;
        let claim_every = (self.claim_idle / 2).max(Duration::from_millis(100));
        let mut last_claim = tokio::time::Instant::now();
        let result: Result<(), RunError> = async {
            loop {
                if *stop.borrow() {
                    return Ok(());
                }
                if last_claim.elapsed() >= claim_every {
                    // Entries another process read and then died with.
                    pending |= self.claim_stranded(&in_flight).await?;
                    last_claim = tokio::time::Instant::now();
                }
                let idle: Vec<usize> = (0..n).filter(|&i| in_flight[i] < FREE_STEPS_IN_FLIGHT).collect();
                let mut dispatched = false;
                let mut lost = false;
                for window in idle.chunks(WINDOW) {
                    let reads: Vec<GroupRead> = window
                        .iter()
                        // Pending entries only for agents with nothing in flight, so that
                        // nothing already handed to an agent is handed over again.
                        .map(|&i| self.group_read(i, READ_COUNT, pending && in_flight[i] == 0))
                        .collect();
                    let results = match self.backend.read(&reads).await {
                        Ok(results) => results,
                        Err(e) if e.is_unavailable() => {
                            tracing::debug!("{e}; waiting for the backend to come back");
                            lost = true;
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    for (&i, deliveries) in window.iter().zip(results) {
                        if !deliveries.is_empty() {
                            steps.push(self.send(i, StepKind::Free, deliveries, None));
                            in_flight[i] += 1;
                            dispatched = true;
                        }
                    }
                }
                if lost {
                    // Let every running step finish (they ride out the outage themselves),
                    // then read what is pending: it includes what the lost read delivered.
                    while let Some((i, result)) = steps.next().await {
                        in_flight[i] -= 1;
                        let _ = events.send(ShardEvent::Step(result?));
                    }
                    reconnect::wait(&self.backend, self.reconnect_timeout).await?;
                    pending = true;
                    continue;
                }
                if pending {
                    // Pending entries first, then new ones on the next round.
                    pending = false;
                    if !dispatched {
                        continue;
                    }
                }
                if steps.is_empty() {
                    if !dispatched {
                        let _ = events.send(ShardEvent::Idle);
                        let last = reconnect::retry(&self.backend, self.reconnect_timeout, || {
                            self.backend.last_id()
                        })
                        .await?;
                        tokio::select! {
                            waited = self.backend.wait_for_entries(last, IDLE_WAIT) => {
                                if let Err(e) = waited {
                                    tracing::debug!("the wake-up read failed: {e}");
                                }
                            }
                            _ = stop.changed() => {}
                        }
                    }
                    continue;
                }
                tokio::select! {
                    Some((i, result)) = steps.next() => {
                        in_flight[i] -= 1;
                        let _ = events.send(ShardEvent::Step(result?));
                    }
                    _ = stop.changed() => {}
                }
            }
        }
        .await;
        // Let running steps finish, so that everything they did is reported.
        while let Some((_, step)) = steps.next().await {
            if let Ok(report) = step {
                let _ = events.send(ShardEvent::Step(report));
            }
        }
        self.read_pending = false;
        result
    }

    /// Takes over entries left pending by consumers idle for `claim_idle` (another process
    /// that died), for agents with nothing in flight. Returns whether any were taken.
    async fn claim_stranded(&self, in_flight: &[usize]) -> Result<bool, RunError> {
        let mut claimed = 0;
        for (i, agent) in self.agents.iter().enumerate() {
            if in_flight[i] > 0 {
                continue;
            }
            let report = reconnect::retry(&self.backend, self.reconnect_timeout, || {
                self.backend.claim(&agent.group, &agent.consumer, self.claim_idle)
            })
            .await?;
            claimed += report.claimed;
        }
        if claimed > 0 {
            tracing::info!(
                claimed,
                "took over entries left pending by a consumer that is gone"
            );
        }
        Ok(claimed > 0)
    }
}
