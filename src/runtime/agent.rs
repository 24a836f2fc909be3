//! One agent: its state, its random stream, and the step that turns a batch of deliveries
//! into one atomic commit.
//!
//! [`AgentCore`] holds the logic as plain async Rust; [`AgentActor`] is the actix actor that
//! owns a core and runs one step at a time ([`AtomicResponse`]), so that no two steps of an
//! agent ever interleave.
//!
//! A step: sort what tick `t - 1` published (lockstep), hand each message to the behaviour,
//! then `on_tick`; collect the effects; commit acknowledgements, publishes, cache writes, the
//! new state and any dead letters in one transaction. A behaviour call that fails or panics
//! is retried from the state the agent had at the start of the step (restored from the saved
//! record, so a half-changed state never leaks); a message that keeps failing is dead-lettered.

use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::RunError;
use super::step_cache::{Fetched, StepCache};
use crate::backend::cache::wall_clock_score;
use crate::backend::{Backend, CacheAppend, CacheEntry, Commit, DeadLetter, ScoreBound};
use crate::behaviour::{BehaviourError, Context as BehaviourContext, DynBehaviour, Effects, StateBox};
use crate::message::{Delivery, Entry, EntryId, Message};
use crate::random::{self, ChaCha8Rng};
use crate::scenario::AgentSpec;

/// What kind of step an agent takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepKind {
    /// `init` and `on_start`: tick 0 in lockstep, no tick in free mode.
    Start { lockstep: bool },
    /// Lockstep tick `t`: the messages of tick `t - 1`, then `on_tick`.
    Tick(u64),
    /// Free mode: a batch of messages as they came.
    Free,
}

impl StepKind {
    fn tick(self) -> Option<u64> {
        match self {
            StepKind::Start { lockstep: true } => Some(0),
            StepKind::Start { lockstep: false } | StepKind::Free => None,
            StepKind::Tick(t) => Some(t),
        }
    }
}

pub(crate) struct StepInput {
    pub kind: StepKind,
    pub deliveries: Vec<Delivery>,
}

/// What a step did, for the coordinator's totals and the transcript.
#[derive(Debug, Default)]
pub(crate) struct StepReport {
    pub published: Vec<(EntryId, Arc<Message>)>,
    /// Entries read and acknowledged.
    pub deliveries: u64,
    /// Messages handed to the behaviour and handled.
    pub handled: u64,
    pub dead_letters: u64,
    /// Messages dead-lettered because the behaviour kept failing on them.
    pub failures: u64,
    pub metrics: Vec<(Cow<'static, str>, i64)>,
}

/// The saved form of an agent: everything needed to continue it elsewhere.
#[derive(Serialize, Deserialize)]
struct AgentRecord {
    /// The last step's tick (lockstep).
    tick: Option<u64>,
    seq: u64,
    cache_n: u64,
    /// The random stream's word position.
    rng: String,
    state: Box<RawValue>,
}

/// The agent as it is between steps.
struct Live {
    state: Option<StateBox>,
    rng: ChaCha8Rng,
    /// Messages published so far (the last `seq`).
    seq: u64,
    /// Cache entries written so far.
    cache_n: u64,
    tick: Option<u64>,
}

pub(crate) struct AgentCore<B> {
    pub spec: AgentSpec,
    pub group: String,
    behaviour: Arc<dyn DynBehaviour>,
    peers: Arc<[Arc<str>]>,
    backend: B,
    seed: u64,
    max_retries: u32,
    live: Live,
    /// The last committed record; `live` equals it at the start of every step.
    saved: Option<String>,
    /// Lockstep: entries of a later tick that a read brought early, unacknowledged.
    carry: Vec<Delivery>,
}

/// Work of one attempt at a step.
#[derive(Default)]
struct Work {
    publish: Vec<Arc<Message>>,
    remember: Vec<CacheEntry>,
    metrics: Vec<(Cow<'static, str>, i64)>,
    handled: u64,
}

enum Attempt {
    Done(Work),
    /// Cache reads to fetch before trying again.
    Miss(Vec<crate::backend::CacheQuery>),
    /// The behaviour failed on message `at` (or in `init`/`on_start`/`on_tick` if `None`).
    Failed {
        at: Option<usize>,
        error: String,
    },
}

pub(crate) struct AgentSetup<B> {
    pub spec: AgentSpec,
    pub group: String,
    pub behaviour: Arc<dyn DynBehaviour>,
    pub peers: Arc<[Arc<str>]>,
    pub backend: B,
    pub seed: u64,
    pub max_retries: u32,
    /// A saved record to continue from (`--resume`).
    pub saved: Option<String>,
}

impl<B: Backend> AgentCore<B> {
    pub fn new(setup: AgentSetup<B>) -> Result<Self, RunError> {
        let mut core = AgentCore {
            live: Live {
                state: None,
                rng: random::agent_rng(setup.seed, setup.spec.index),
                seq: 0,
                cache_n: 0,
                tick: None,
            },
            spec: setup.spec,
            group: setup.group,
            behaviour: setup.behaviour,
            peers: setup.peers,
            backend: setup.backend,
            seed: setup.seed,
            max_retries: setup.max_retries,
            saved: setup.saved,
            carry: Vec::new(),
        };
        core.restore()?;
        Ok(core)
    }

    /// The tick of the last committed step, and whether the agent has started at all.
    pub fn last_tick(&self) -> Option<u64> {
        self.live.tick
    }

    pub fn has_started(&self) -> bool {
        self.saved.is_some()
    }

    /// Puts `live` back to the saved record (or to the very start).
    fn restore(&mut self) -> Result<(), RunError> {
        let Some(saved) = &self.saved else {
            self.live = Live {
                state: None,
                rng: random::agent_rng(self.seed, self.spec.index),
                seq: 0,
                cache_n: 0,
                tick: None,
            };
            return Ok(());
        };
        let bad = |what: String| RunError::State {
            agent: self.spec.name.to_string(),
            message: what,
        };
        let record: AgentRecord =
            serde_json::from_str(saved).map_err(|e| bad(format!("saved record is unreadable: {e}")))?;
        let word_pos: u128 = record
            .rng
            .parse()
            .map_err(|_| bad(format!("saved random position {:?} is not a number", record.rng)))?;
        let state = self
            .behaviour
            .restore(record.state.get())
            .map_err(|e| bad(e.to_string()))?;
        let mut rng = random::agent_rng(self.seed, self.spec.index);
        rng.set_word_pos(word_pos);
        self.live = Live {
            state: Some(state),
            rng,
            seq: record.seq,
            cache_n: record.cache_n,
            tick: record.tick,
        };
        Ok(())
    }

    fn record(&self) -> Result<String, RunError> {
        let state = self.live.state.as_ref().ok_or_else(|| RunError::State {
            agent: self.spec.name.to_string(),
            message: "no state to save before the agent started".to_string(),
        })?;
        let json = self.behaviour.save(state).map_err(|e| RunError::State {
            agent: self.spec.name.to_string(),
            message: e.to_string(),
        })?;
        let state = RawValue::from_string(json).map_err(|e| RunError::State {
            agent: self.spec.name.to_string(),
            message: format!("the saved state is not JSON: {e}"),
        })?;
        let record = AgentRecord {
            tick: self.live.tick,
            seq: self.live.seq,
            cache_n: self.live.cache_n,
            rng: self.live.rng.get_word_pos().to_string(),
            state,
        };
        serde_json::to_string(&record).map_err(|e| RunError::Internal(e.to_string()))
    }

    /// Takes one step and commits it.
    pub async fn step(&mut self, input: StepInput) -> Result<StepReport, RunError> {
        let result = self.step_inner(input).await;
        if result.is_err() {
            // The step did not commit: forget what it did, so the next step starts clean.
            self.restore()?;
        }
        result
    }

    async fn step_inner(&mut self, input: StepInput) -> Result<StepReport, RunError> {
        let kind = input.kind;
        let mut deliveries = std::mem::take(&mut self.carry);
        deliveries.extend(input.deliveries);

        let mut acks: Vec<EntryId> = Vec::with_capacity(deliveries.len());
        let mut dead: Vec<DeadLetter> = Vec::new();
        let mut handle: Vec<(EntryId, Arc<Message>)> = Vec::new();
        for d in deliveries {
            match &d.entry {
                Entry::Malformed(m) => {
                    acks.push(d.id);
                    // Every group reads a malformed entry; the first agent declared files it.
                    if self.spec.index == 0 {
                        dead.push(DeadLetter {
                            id: d.id,
                            agent: self.spec.name.to_string(),
                            reason: format!("malformed entry: {}", m.reason),
                            fields: m.fields.clone(),
                        });
                    }
                }
                Entry::Message(msg) => {
                    if let StepKind::Tick(t) = kind
                        && msg.tick.is_some_and(|mt| mt >= t)
                    {
                        self.carry.push(d);
                        continue;
                    }
                    acks.push(d.id);
                    if *msg.sender_id != *self.spec.name {
                        handle.push((d.id, msg.clone()));
                    }
                }
            }
        }
        if let StepKind::Tick(_) = kind {
            // DESIGN.md invariant 3: by sender and the sender's counter, never by arrival.
            if !handle.is_sorted_by(|a, b| a.1.lockstep_key() <= b.1.lockstep_key()) {
                handle.sort_by(|a, b| a.1.lockstep_key().cmp(&b.1.lockstep_key()));
            }
        }

        let mut skip = vec![false; handle.len()];
        let mut failures_at = vec![0u32; handle.len()];
        let mut whole_step_failures = 0u32;
        let mut fetched = Fetched::default();
        let mut first = true;
        let work = loop {
            if !first {
                self.restore()?;
            }
            first = false;
            match self.attempt(kind, &handle, &skip, &fetched) {
                Attempt::Done(work) => break work,
                Attempt::Miss(queries) => {
                    let answers = self.backend.cache_read(&queries).await?;
                    for (q, a) in queries.into_iter().zip(answers) {
                        fetched.insert(q, a);
                    }
                }
                Attempt::Failed { at: Some(i), error } => {
                    failures_at[i] += 1;
                    if failures_at[i] > self.max_retries {
                        skip[i] = true;
                        let (id, msg) = &handle[i];
                        tracing::warn!(
                            agent = %self.spec.name,
                            entry = %id,
                            "behaviour failed {} times on a message; dead-lettering it: {error}",
                            failures_at[i]
                        );
                        dead.push(DeadLetter {
                            id: *id,
                            agent: self.spec.name.to_string(),
                            reason: format!("behaviour failed {} times: {error}", failures_at[i]),
                            fields: msg
                                .to_fields()
                                .into_iter()
                                .map(|(k, v)| (k.to_string(), v))
                                .collect(),
                        });
                    }
                }
                Attempt::Failed { at: None, error } => {
                    whole_step_failures += 1;
                    if whole_step_failures > self.max_retries {
                        return Err(RunError::Behaviour {
                            agent: self.spec.name.to_string(),
                            message: format!(
                                "failed {whole_step_failures} times {}: {error}",
                                match kind {
                                    StepKind::Start { .. } => "at the start",
                                    _ => "at the end of a tick",
                                }
                            ),
                        });
                    }
                }
            }
        };
        fetched.clear();

        let tick = kind.tick();
        self.live.tick = tick.or(self.live.tick);
        let score = match tick {
            Some(t) => t as f64,
            None => wall_clock_score(),
        };
        let cache: Vec<CacheAppend> = work
            .remember
            .iter()
            .map(|e| CacheAppend {
                agent: self.spec.name.clone(),
                member: e.encode(),
                score,
            })
            .collect();
        let record = self.record()?;
        let state_changed = self.saved.as_deref() != Some(record.as_str());
        let failures = skip.iter().filter(|&&s| s).count() as u64;
        let mut report = StepReport {
            deliveries: acks.len() as u64,
            handled: work.handled,
            dead_letters: dead.len() as u64,
            failures,
            metrics: work.metrics,
            published: Vec::new(),
        };
        if acks.is_empty() && work.publish.is_empty() && cache.is_empty() && dead.is_empty() && !state_changed
        {
            return Ok(report);
        }
        let ids = self
            .backend
            .commit(&Commit {
                group: &self.group,
                acks: &acks,
                publish: &work.publish,
                cache: &cache,
                state: state_changed.then_some((&*self.spec.name, record.as_str())),
                dead: &dead,
            })
            .await?;
        self.saved = Some(record);
        report.published = ids.into_iter().zip(work.publish).collect();
        Ok(report)
    }

    /// Runs the behaviour over the step's messages once, from the current `live` state.
    fn attempt(
        &mut self,
        kind: StepKind,
        handle: &[(EntryId, Arc<Message>)],
        skip: &[bool],
        fetched: &Fetched,
    ) -> Attempt {
        let mut work = Work::default();
        let tick = kind.tick();
        let bound = match kind {
            StepKind::Start { lockstep: true } => ScoreBound::below(0.0),
            StepKind::Tick(t) => ScoreBound::below(t as f64),
            StepKind::Start { lockstep: false } | StepKind::Free => ScoreBound::ALL,
        };

        if let StepKind::Start { .. } = kind {
            let result = self.call(tick, bound, fetched, &work.remember, |b, state, ctx| {
                let mut fresh = b.init(ctx)?;
                let effects = b.on_start(&mut fresh, ctx)?;
                *state = Some(fresh);
                Ok(effects)
            });
            match result {
                Ok(effects) => self.absorb(effects, tick, &mut work),
                Err(a) => return a,
            }
            return Attempt::Done(work);
        }

        for (i, (_, msg)) in handle.iter().enumerate() {
            if skip[i] {
                continue;
            }
            let result = self.call(
                tick,
                bound,
                fetched,
                &work.remember,
                |b, state, ctx| match state {
                    Some(state) => b.on_message(state, msg, ctx),
                    None => Err(BehaviourError::new("the agent has no state: it never started")),
                },
            );
            match result {
                Ok(effects) => {
                    work.handled += 1;
                    self.absorb(effects, tick, &mut work);
                }
                Err(Attempt::Failed { error, .. }) => return Attempt::Failed { at: Some(i), error },
                Err(other) => return other,
            }
        }

        if let StepKind::Tick(_) = kind {
            let result = self.call(
                tick,
                bound,
                fetched,
                &work.remember,
                |b, state, ctx| match state {
                    Some(state) => b.on_tick(state, ctx),
                    None => Err(BehaviourError::new("the agent has no state: it never started")),
                },
            );
            match result {
                Ok(effects) => self.absorb(effects, tick, &mut work),
                Err(a) => return a,
            }
        }
        Attempt::Done(work)
    }

    /// Calls the behaviour once with a fresh context, catching panics.
    fn call(
        &mut self,
        tick: Option<u64>,
        bound: ScoreBound,
        fetched: &Fetched,
        own: &[CacheEntry],
        f: impl FnOnce(
            &dyn DynBehaviour,
            &mut Option<StateBox>,
            &mut BehaviourContext<'_>,
        ) -> Result<Effects, BehaviourError>,
    ) -> Result<Effects, Attempt> {
        let mut cache = StepCache {
            backend: &self.backend,
            fetched,
            agent: &self.spec.name,
            bound,
            own,
            misses: Vec::new(),
        };
        let behaviour = self.behaviour.clone();
        let live = &mut self.live;
        let outcome = {
            let mut ctx = BehaviourContext::new(&self.spec, &self.peers, tick, &mut live.rng, &mut cache);
            catch_unwind(AssertUnwindSafe(|| f(&*behaviour, &mut live.state, &mut ctx)))
        };
        if !cache.misses.is_empty() {
            return Err(Attempt::Miss(cache.misses));
        }
        match outcome {
            Ok(Ok(effects)) => Ok(effects),
            Ok(Err(BehaviourError::CacheMiss)) => Err(Attempt::Failed {
                at: None,
                error: "the behaviour returned a cache miss for a read it never made".to_string(),
            }),
            Ok(Err(BehaviourError::Failed(error))) => Err(Attempt::Failed { at: None, error }),
            Err(panic) => Err(Attempt::Failed {
                at: None,
                error: format!("panicked: {}", panic_message(&panic)),
            }),
        }
    }

    /// Numbers and records one call's effects.
    fn absorb(&mut self, effects: Effects, tick: Option<u64>, work: &mut Work) {
        for out in effects.publish {
            self.live.seq += 1;
            work.publish.push(Arc::new(Message {
                tick,
                sender_id: self.spec.name.clone(),
                seq: Some(self.live.seq),
                to: out.to.map(Arc::from),
                content: out.content,
                data: out.data,
            }));
        }
        for value in effects.remember {
            self.live.cache_n += 1;
            work.remember.push(CacheEntry {
                agent: self.spec.name.to_string(),
                n: self.live.cache_n,
                tick,
                value,
            });
        }
        work.metrics.extend(effects.metrics);
    }
}

/// The text a panic was raised with.
pub(crate) fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// The actor around an [`AgentCore`].
pub(crate) struct AgentActor<B> {
    core: Option<AgentCore<B>>,
}

impl<B: Backend> AgentActor<B> {
    pub fn new(core: AgentCore<B>) -> Self {
        AgentActor { core: Some(core) }
    }
}

/// The largest number of steps waiting in an agent's mailbox: a full mailbox makes the
/// sender wait (DESIGN.md invariant 6).
const MAILBOX: usize = 4;

impl<B: Backend> Actor for AgentActor<B> {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
    }
}

#[derive(actix::Message)]
#[rtype(result = "Result<StepReport, RunError>")]
pub(crate) struct Step(pub StepInput);

impl<B: Backend> Handler<Step> for AgentActor<B> {
    type Result = AtomicResponse<Self, Result<StepReport, RunError>>;

    fn handle(&mut self, msg: Step, _ctx: &mut Self::Context) -> Self::Result {
        // The core leaves the actor for the step and comes back when it is done; the atomic
        // response guarantees that no other step starts meanwhile.
        let core = self.core.take();
        let step = async move {
            match core {
                Some(mut core) => {
                    let result = core.step(msg.0).await;
                    (Some(core), result)
                }
                None => (
                    None,
                    Err(RunError::Internal("agent step while another was running".into())),
                ),
            }
        };
        AtomicResponse::new(Box::pin(step.into_actor(self).map(
            |(core, result), act, _ctx| {
                if core.is_some() {
                    act.core = core;
                }
                result
            },
        )))
    }
}
