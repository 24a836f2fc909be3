//! A shard: the agents one process hosts, and the reader that feeds them.
//!
//! - [`lockstep`]: one tick, every agent reading what the tick before published.
//! - [`free`]: feeding agents as messages arrive.
//!
//! The reader reads the agents' consumer groups in batches (one backend call for many
//! groups: one round trip on Redis) and hands each agent its deliveries as one step. Agents
//! are read in windows, and a window's steps must finish before the next window is read, so
//! memory stays bounded however many agents there are (DESIGN.md invariant 6).
//!
//! When the backend is lost, the shard waits for it (up to `reconnect_timeout`) and then
//! reads each consumer's pending entries first: a read whose reply was lost has delivered
//! entries that only the pending list still knows about.

mod free;
mod lockstep;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

pub(crate) use self::free::{FeederEvent, ShardEvent};
pub(crate) use self::lockstep::Expected;
use super::RunError;
use super::agent::{AgentActor, AgentCore, AgentSetup, BatchPlan, Step, StepInput, StepKind, StepReport};
use super::model::{ModelClient, Recording};
use super::pacing::{AgentPace, Pacer};
use super::programs::Programs;
use super::reconnect::Reconnect;
use crate::backend::{Backend, BackendKind, GroupRead};
use crate::message::Batch;
use crate::scenario::{AgentSpec, Mode, Scenario};
use crate::tally::Tally;

/// Agents read in one backend call, and stepping at once.
const WINDOW: usize = 256;
/// The most entries one group read asks for.
const READ_COUNT: usize = 1024;
/// The most pending entries one group read asks for.
const PENDING_COUNT: usize = 100_000;
/// Free mode: steps an agent may have queued. On Redis two, so that its next batch is read
/// while it commits the last one (steps still run one at a time, in order). On the embedded
/// backend there is no round trip to hide, and a second step in flight only split what the
/// agent would have read in one batch into two steps (W1: 13% slower), so one.
fn free_steps_in_flight(backend: BackendKind) -> usize {
    match backend {
        BackendKind::Memory => 1,
        _ => 2,
    }
}
/// The fewest agents a shard spreads over threads ([`AgentThreads`]).
const THREADED_AGENTS: usize = 500;
/// How long an idle free-mode shard waits for new entries before it looks again.
const IDLE_WAIT: Duration = Duration::from_millis(100);

struct Hosted<B: Backend> {
    spec: AgentSpec,
    group: String,
    /// `{agent}@{instance}`: each process reads through a consumer of its own, so that
    /// another process can claim what a dead one left pending.
    consumer: String,
    addr: Addr<AgentActor<B>>,
    /// Which of the shard's threads the agent's actor runs on (0: the shard's own).
    thread: usize,
    started: bool,
    last_tick: Option<u64>,
    /// What the agent's last committed step counted (from its saved record).
    last_tally: Tally,
}

/// How a shard runs, beyond the scenario.
#[derive(Clone)]
pub(crate) struct ShardOptions {
    /// Continue from the agents' saved states and the groups' pending entries.
    pub resume: bool,
    /// Names this process's consumers.
    pub instance: String,
    /// How the run waits for a lost backend.
    pub reconnect: Reconnect,
    /// Answer completions from this recording (`--replay`) instead of a server.
    pub replay: Option<Arc<Recording>>,
    /// How many processes host the run's agents: each keeps its share of `max_concurrency`,
    /// so that the run as a whole keeps to it.
    pub processes: u32,
    /// [`RunOptions::agent_threads`](crate::runtime::RunOptions::agent_threads).
    pub agent_threads: Option<usize>,
}

type StepFuture = Pin<Box<dyn Future<Output = (usize, Result<StepReport, RunError>)>>>;

pub(crate) struct Shard<B: Backend> {
    backend: B,
    agents: Vec<Hosted<B>>,
    /// The threads the agents run on, besides this one: held until the shard goes.
    _threads: AgentThreads,
    /// Read each consumer's pending entries before new ones, once: after a resume, or after
    /// the backend was lost.
    read_pending: bool,
    reconnect: Reconnect,
    claim_idle: Duration,
    /// Who hears whom, when not everyone hears everyone: each agent then expects its own
    /// share of a tick's messages.
    network: Option<Arc<crate::network::Network>>,
}

/// On resume: the process that ran `spec` is gone, so its consumer here takes over the
/// entries it left pending; refused when some of them are gone from the stream.
async fn take_over<B: Backend>(
    backend: &B,
    reconnect: &Reconnect,
    spec: &AgentSpec,
    group: &str,
    consumer: &str,
) -> Result<(), RunError> {
    let claimed = reconnect
        .retry(backend, || backend.claim(group, consumer, Duration::ZERO))
        .await?;
    if claimed.deleted == 0 {
        return Ok(());
    }
    Err(RunError::Refused {
        message: format!(
            "cannot resume: {} entries agent {} had read but not handled are gone from stream {:?} (trimmed or deleted), so the run cannot be finished as it began",
            claimed.deleted,
            spec.name,
            backend.keys().stream
        ),
        hint: crate::runtime::error::ENTRIES_GONE.to_string(),
    })
}

/// The threads a shard's agents run on, on the embedded backend when every behaviour is plain
/// Rust (on Redis the connections' drivers live on this thread; programs and model calls wait
/// on I/O). Agents are dealt in turn to this thread and to one more actix arbiter per further
/// core.
///
/// - Lockstep, at least [`THREADED_AGENTS`] agents: a tick's steps use every core (opinion
///   on two cores, 1,000 agents: 0.28 s became 0.21 s for 10% more CPU; 500 agents: 0.15 s
///   became 0.11 s; 200: no faster). This thread takes its share: when it only waited for the
///   others' replies, waking it for each of them cost as much as the second core gave. A
///   lockstep transcript does not depend on which thread stepped an agent: a tick's messages
///   are handled in sender order.
/// - Free mode, at least two agents and no publish pacing: each thread also reads for its own
///   agents (`shard::free`), so no step crosses threads. Reading for all of them from here,
///   the few agents of a free-mode run lost more to waking each other across threads than
///   they gained (W1: 10% slower).
struct AgentThreads {
    arbiters: Vec<Arbiter>,
    next: usize,
}

impl AgentThreads {
    fn for_run<B: Backend>(backend: &B, scenario: &Scenario, agents: usize, wanted: Option<usize>) -> Self {
        let plain =
            backend.kind() == BackendKind::Memory && scenario.programs.is_empty() && scenario.llm.is_none();
        let paced = scenario.min_publish_interval.is_some()
            || scenario.tables.iter().any(|t| t.min_publish_interval.is_some());
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let threads = match (wanted, scenario.mode) {
            (Some(n), _) => n,
            (None, Mode::Lockstep) if agents >= THREADED_AGENTS => cores,
            (None, Mode::Free) if agents >= 2 && !paced => cores.min(agents),
            (None, _) => 1,
        };
        let arbiters = if plain && threads > 1 {
            (1..threads).map(|_| Arbiter::new()).collect()
        } else {
            Vec::new()
        };
        AgentThreads { arbiters, next: 0 }
    }

    /// None: every agent on this thread.
    fn none() -> Self {
        AgentThreads {
            arbiters: Vec::new(),
            next: 0,
        }
    }

    /// Starts `core`'s actor on the next thread in turn (this one first), and says which:
    /// 0 for this one, `k` for arbiter `k - 1`.
    fn start<B: Backend>(&mut self, core: AgentCore<B>) -> (Addr<AgentActor<B>>, usize) {
        let turn = self.next % (self.arbiters.len() + 1);
        self.next += 1;
        if turn == 0 {
            return (AgentActor::new(core).start(), 0);
        }
        let arbiter = &self.arbiters[turn - 1];
        let addr = AgentActor::start_in_arbiter(&arbiter.handle(), move |_| AgentActor::new(core));
        (addr, turn)
    }
}

impl Drop for AgentThreads {
    fn drop(&mut self) {
        for arbiter in self.arbiters.drain(..) {
            arbiter.stop();
            let _ = arbiter.join();
        }
    }
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
        let reconnect = options.reconnect.clone();
        let keys = backend.keys().clone();
        let groups: Vec<String> = agents.iter().map(|a| keys.group(&a.name)).collect();
        reconnect
            .retry(&backend, || backend.ensure_groups(&groups))
            .await?;
        let names: Vec<Arc<str>> = agents.iter().map(|a| a.name.clone()).collect();
        let saved = if options.resume {
            reconnect.retry(&backend, || backend.load_states(&names)).await?
        } else {
            vec![None; agents.len()]
        };
        let model = model_client(&backend, scenario, options)?;
        let programs = if scenario.programs.is_empty() {
            None
        } else {
            Some(Arc::new(Programs::new(scenario)?))
        };
        let free = scenario.mode == Mode::Free;
        let pacer = scenario
            .min_publish_interval
            .filter(|_| free)
            .map(|interval| Arc::new(Pacer::new(interval)));
        let mut peers_by_table: BTreeMap<usize, Arc<[Arc<str>]>> = BTreeMap::new();
        let mut hosted = Vec::with_capacity(agents.len());
        let mut threads = AgentThreads::for_run(&backend, scenario, agents.len(), options.agent_threads);
        for ((spec, group), saved) in agents.iter().zip(groups).zip(saved) {
            let consumer = format!("{}@{}", spec.name, options.instance);
            if options.resume {
                take_over(&backend, &reconnect, spec, &group, &consumer).await?;
            }
            let peers = peers_by_table
                .entry(spec.table)
                .or_insert_with(|| scenario.peers_of(spec).into())
                .clone();
            let core = AgentCore::new(AgentSetup {
                spec: spec.clone(),
                group: group.clone(),
                behaviour: scenario.behaviour_of(spec).clone(),
                neighbours: scenario.neighbours_of(spec).map(Arc::new),
                peers,
                backend: backend.clone(),
                seed: scenario.seed,
                max_retries: scenario.max_retries,
                record_values: scenario.record_agent_values,
                reconnect: reconnect.clone(),
                saved,
                model: model.clone(),
                pace: AgentPace::new(scenario.tables[spec.table].min_publish_interval.filter(|_| free)),
                pacer: pacer.clone(),
                programs: programs.clone(),
            })?;
            let (started, last_tick, last_tally) =
                (core.has_started(), core.last_tick(), core.last_tally().clone());
            let (addr, thread) = threads.start(core);
            hosted.push(Hosted {
                spec: spec.clone(),
                group,
                consumer,
                started,
                last_tick,
                last_tally,
                addr,
                thread,
            });
        }
        Ok(Shard {
            backend,
            agents: hosted,
            _threads: threads,
            read_pending: options.resume,
            reconnect,
            claim_idle: scenario.backend.claim_idle,
            network: scenario.network().cloned(),
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
}

/// The process's model client, when the scenario has `[llm]`: each of `processes` processes
/// keeps its share of `max_concurrency` requests in flight.
fn model_client<B: Backend>(
    backend: &B,
    scenario: &Scenario,
    options: &ShardOptions,
) -> Result<Option<Arc<ModelClient<B>>>, RunError> {
    let Some(config) = &scenario.llm else {
        return Ok(None);
    };
    let mut config = config.clone();
    config.max_concurrency = (config.max_concurrency / options.processes.max(1)).max(1);
    Ok(Some(Arc::new(ModelClient::new(
        config,
        options.replay.clone(),
        backend.clone(),
        options.reconnect.clone(),
    )?)))
}
