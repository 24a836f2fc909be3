//! A shard: the agents one process hosts, and the reader that feeds them.
//!
//! The reader reads the agents' consumer groups in batches (one backend call for many
//! groups: one round trip on Redis) and hands each agent its deliveries as one step. Agents
//! are read in windows, and a window's steps must finish before the next window is read, so
//! memory stays bounded however many agents there are (DESIGN.md invariant 6).

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
use super::agent::{AgentActor, AgentCore, AgentSetup, Step, StepInput, StepKind, StepReport};
use crate::backend::{Backend, GroupRead};
use crate::message::{Delivery, EntryId, Message};
use crate::scenario::{AgentSpec, Mode, Scenario};

/// Agents read in one backend call, and stepping at once.
const WINDOW: usize = 256;
/// The most entries one group read asks for.
const READ_COUNT: usize = 1024;
/// Free mode: steps an agent may have queued, so that its next batch is read while it
/// commits the last one (steps still run one at a time, in order).
const FREE_STEPS_IN_FLIGHT: usize = 2;
/// How long an idle free-mode shard waits for new entries before it looks again.
const IDLE_WAIT: Duration = Duration::from_millis(100);

struct Hosted<B: Backend> {
    spec: AgentSpec,
    group: String,
    addr: Addr<AgentActor<B>>,
    started: bool,
    last_tick: Option<u64>,
}

/// What a set of steps added up to.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub published: Vec<(EntryId, Arc<Message>)>,
    pub deliveries: u64,
    pub handled: u64,
    pub dead_letters: u64,
    pub failures: u64,
    pub metrics: BTreeMap<String, i64>,
}

impl Totals {
    pub fn add(&mut self, report: StepReport) {
        self.published.extend(report.published);
        self.deliveries += report.deliveries;
        self.handled += report.handled;
        self.dead_letters += report.dead_letters;
        self.failures += report.failures;
        for (name, delta) in report.metrics {
            *self.metrics.entry(name.into_owned()).or_insert(0) += delta;
        }
    }
}

/// What a free-mode shard tells the coordinator.
pub(crate) enum ShardEvent {
    Step(StepReport),
    /// Every hosted group is read to the end and no step is running.
    Idle,
}

type StepFuture = Pin<Box<dyn Future<Output = (usize, Result<StepReport, RunError>)>>>;

pub(crate) struct Shard<B: Backend> {
    backend: B,
    agents: Vec<Hosted<B>>,
    /// Read each consumer's pending entries before new ones, once (after a resume they hold
    /// what a crashed process read but did not acknowledge).
    read_pending: bool,
}

impl<B: Backend> Shard<B> {
    /// Hosts `agents` of `scenario`: creates their groups, restores saved states, and starts
    /// their actors on the current arbiter.
    pub async fn start(
        backend: B,
        scenario: &Scenario,
        agents: &[AgentSpec],
        resume: bool,
    ) -> Result<Self, RunError> {
        let keys = backend.keys().clone();
        let groups: Vec<String> = agents.iter().map(|a| keys.group(&a.name)).collect();
        backend.ensure_groups(&groups).await?;
        let names: Vec<Arc<str>> = agents.iter().map(|a| a.name.clone()).collect();
        let saved = if resume {
            backend.load_states(&names).await?
        } else {
            vec![None; agents.len()]
        };
        let mut peers_by_table: BTreeMap<usize, Arc<[Arc<str>]>> = BTreeMap::new();
        let mut hosted = Vec::with_capacity(agents.len());
        for ((spec, group), saved) in agents.iter().zip(groups).zip(saved) {
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
                saved,
            })?;
            hosted.push(Hosted {
                spec: spec.clone(),
                group,
                started: core.has_started(),
                last_tick: core.last_tick(),
                addr: AgentActor::new(core).start(),
            });
        }
        Ok(Shard {
            backend,
            agents: hosted,
            read_pending: resume,
        })
    }

    fn send(&self, i: usize, kind: StepKind, deliveries: Vec<Delivery>) -> StepFuture {
        let request = self.agents[i].addr.send(Step(StepInput { kind, deliveries }));
        let name = self.agents[i].spec.name.clone();
        Box::pin(async move {
            let result = match request.await {
                Ok(result) => result,
                Err(e) => Err(RunError::Internal(format!("agent {name} stopped: {e}"))),
            };
            (i, result)
        })
    }

    /// Runs `init` and `on_start` for every agent that has not started yet.
    pub async fn start_agents(&mut self, mode: Mode) -> Result<Totals, RunError> {
        let lockstep = mode == Mode::Lockstep;
        let mut totals = Totals::default();
        let todo: Vec<usize> = (0..self.agents.len())
            .filter(|&i| !self.agents[i].started)
            .collect();
        for window in todo.chunks(WINDOW) {
            let mut steps: FuturesUnordered<StepFuture> = window
                .iter()
                .map(|&i| self.send(i, StepKind::Start { lockstep }, Vec::new()))
                .collect();
            while let Some((i, result)) = steps.next().await {
                totals.add(result?);
                self.agents[i].started = true;
                self.agents[i].last_tick = lockstep.then_some(0);
            }
        }
        Ok(totals)
    }

    /// Lockstep tick `tick`: every agent that has not done it yet reads the `expect` entries
    /// of tick `tick - 1`, handles them and commits.
    pub async fn run_tick(&mut self, tick: u64, expect: u64) -> Result<Totals, RunError> {
        let mut totals = Totals::default();
        let todo: Vec<usize> = (0..self.agents.len())
            .filter(|&i| self.agents[i].last_tick.is_none_or(|t| t < tick))
            .collect();
        let mut steps: FuturesUnordered<StepFuture> = FuturesUnordered::new();
        for window in todo.chunks(WINDOW) {
            let batches = self.read_tick(window, tick, expect).await?;
            for (&i, deliveries) in window.iter().zip(batches) {
                steps.push(self.send(i, StepKind::Tick(tick), deliveries));
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
        totals: &mut Totals,
    ) -> Result<(), RunError> {
        if let Some((i, result)) = done {
            totals.add(result?);
            self.agents[i].last_tick = Some(tick);
        }
        Ok(())
    }

    /// Reads, for each agent of `window`, everything tick `tick - 1` published: `expect`
    /// entries with that tick, plus any entry without one (written by other programs).
    async fn read_tick(
        &self,
        window: &[usize],
        tick: u64,
        expect: u64,
    ) -> Result<Vec<Vec<Delivery>>, RunError> {
        let previous = tick - 1;
        let mut batches: Vec<Vec<Delivery>> = vec![Vec::new(); window.len()];
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
                .map(|&w| {
                    let agent = &self.agents[window[w]];
                    GroupRead {
                        group: agent.group.clone(),
                        consumer: agent.spec.name.to_string(),
                        count: if pending {
                            usize::MAX
                        } else {
                            (remaining[w] as usize).min(READ_COUNT)
                        },
                        pending,
                    }
                })
                .collect();
            let results = self.backend.read(&reads).await?;
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
                for d in &deliveries {
                    match d.message().and_then(|m| m.tick) {
                        Some(t) if t == previous => remaining[w] = remaining[w].saturating_sub(1),
                        // A later tick: this group has read all of tick `previous`.
                        Some(t) if t > previous => remaining[w] = 0,
                        _ => {}
                    }
                }
                batches[w].extend(deliveries);
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
        let result: Result<(), RunError> = async {
            loop {
                if *stop.borrow() {
                    return Ok(());
                }
                let idle: Vec<usize> = (0..n).filter(|&i| in_flight[i] < FREE_STEPS_IN_FLIGHT).collect();
                let mut dispatched = false;
                for window in idle.chunks(WINDOW) {
                    let reads: Vec<GroupRead> = window
                        .iter()
                        .map(|&i| GroupRead {
                            group: self.agents[i].group.clone(),
                            consumer: self.agents[i].spec.name.to_string(),
                            count: READ_COUNT,
                            pending,
                        })
                        .collect();
                    let results = self.backend.read(&reads).await?;
                    for (&i, deliveries) in window.iter().zip(results) {
                        if !deliveries.is_empty() {
                            steps.push(self.send(i, StepKind::Free, deliveries));
                            in_flight[i] += 1;
                            dispatched = true;
                        }
                    }
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
                        let last = self.backend.last_id().await?;
                        tokio::select! {
                            waited = self.backend.wait_for_entries(last, IDLE_WAIT) => { waited?; }
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
}
