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
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::ControlFlow;
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
use crate::message::{Batch, Delivery, Entry, EntryId, Message};
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
    /// In stream order, as read; shared with the other agents that read the same.
    pub deliveries: Batch,
    /// How to handle `deliveries`, when the shard has worked it out already (once for every
    /// agent with the same batch).
    pub plan: Option<Arc<BatchPlan>>,
}

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
    plain: bool,
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
pub(crate) fn handling_order(deliveries: &[Delivery], kind: StepKind) -> Vec<u32> {
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
    /// The last committed step's tick (lockstep).
    tick: Option<u64>,
    /// Committed steps so far: makes every record unique, so that after a lost reply the
    /// agent can tell whether its commit went through.
    steps: u64,
    seq: u64,
    cache_n: u64,
    /// The random stream's word position.
    rng: String,
    state: Box<RawValue>,
    /// What the last committed step counted, for a resumed run's totals.
    #[serde(default)]
    last: Counters,
    /// What all committed steps counted.
    #[serde(default)]
    total: Counters,
}

/// What steps counted, kept in the agent's record so that a resumed run's summary is whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Counters {
    pub deliveries: u64,
    pub handled: u64,
    pub dead_letters: u64,
    pub failures: u64,
    pub metrics: std::collections::BTreeMap<String, i64>,
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        self.deliveries += other.deliveries;
        self.handled += other.handled;
        self.dead_letters += other.dead_letters;
        self.failures += other.failures;
        for (name, delta) in &other.metrics {
            *self.metrics.entry(name.clone()).or_insert(0) += delta;
        }
    }
}

/// The agent as it is between steps.
/// An agent's state caught for its record.
struct Snapshot {
    state: Box<RawValue>,
    rng: String,
    core: String,
}

struct Live {
    state: Option<StateBox>,
    rng: ChaCha8Rng,
    /// Messages published so far (the last `seq`).
    seq: u64,
    /// Cache entries written so far.
    cache_n: u64,
    tick: Option<u64>,
    steps: u64,
    last: Counters,
    total: Counters,
}

impl Live {
    fn fresh(seed: u64, index: usize) -> Self {
        Live {
            state: None,
            rng: random::agent_rng(seed, index),
            seq: 0,
            cache_n: 0,
            tick: None,
            steps: 0,
            last: Counters::default(),
            total: Counters::default(),
        }
    }
}

pub(crate) struct AgentCore<B> {
    pub spec: AgentSpec,
    pub group: String,
    behaviour: Arc<dyn DynBehaviour>,
    peers: Arc<[Arc<str>]>,
    backend: B,
    seed: u64,
    max_retries: u32,
    reconnect_timeout: std::time::Duration,
    live: Live,
    /// The last committed record; `live` equals it at the start of every step.
    saved: Option<String>,
    /// The part of `saved` that a step changes only if it did something.
    saved_core: Option<String>,
    /// Lockstep: entries of a later tick that a read brought early, unacknowledged.
    carry: Vec<Delivery>,
    /// The newest stream id this agent published, where to look for its entries after a
    /// commit whose reply was lost.
    last_own_id: EntryId,
}

/// Work of one attempt at a step.
#[derive(Default)]
struct Work {
    publish: Vec<Arc<Message>>,
    /// Shared with the step's cache reads, which see the step's own writes.
    remember: RefCell<Vec<CacheEntry>>,
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
    /// How long to wait for a lost backend before giving up.
    pub reconnect_timeout: std::time::Duration,
    /// A saved record to continue from (`--resume`).
    pub saved: Option<String>,
}

impl<B: Backend> AgentCore<B> {
    pub fn new(setup: AgentSetup<B>) -> Result<Self, RunError> {
        let mut core = AgentCore {
            live: Live::fresh(setup.seed, setup.spec.index),
            spec: setup.spec,
            group: setup.group,
            behaviour: setup.behaviour,
            peers: setup.peers,
            backend: setup.backend,
            seed: setup.seed,
            max_retries: setup.max_retries,
            reconnect_timeout: setup.reconnect_timeout,
            saved: setup.saved,
            saved_core: None,
            carry: Vec::new(),
            last_own_id: EntryId::ZERO,
        };
        core.restore()?;
        core.saved_core = match core.saved {
            Some(_) => Some(core.snapshot()?.core),
            None => None,
        };
        Ok(core)
    }

    /// What the last committed step counted.
    pub fn last_counters(&self) -> &Counters {
        &self.live.last
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
            self.live = Live::fresh(self.seed, self.spec.index);
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
            steps: record.steps,
            last: record.last,
            total: record.total,
        };
        Ok(())
    }

    /// The state as JSON, the random stream's position, and the core of the record: what a
    /// step changes only if it did something.
    fn snapshot(&self) -> Result<Snapshot, RunError> {
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
        let rng = self.live.rng.get_word_pos().to_string();
        let core = format!("{} {} {rng} {}", self.live.seq, self.live.cache_n, state.get());
        Ok(Snapshot { state, rng, core })
    }

    /// The record to save, from a snapshot of the agent as it is now.
    fn record(&self, snapshot: Snapshot) -> Result<(String, String), RunError> {
        let record = AgentRecord {
            tick: self.live.tick,
            steps: self.live.steps,
            seq: self.live.seq,
            cache_n: self.live.cache_n,
            rng: snapshot.rng,
            state: snapshot.state,
            last: self.live.last.clone(),
            total: self.live.total.clone(),
        };
        let record = serde_json::to_string(&record).map_err(|e| RunError::Internal(e.to_string()))?;
        Ok((record, snapshot.core))
    }

    /// What a step acknowledges of `deliveries` and what it dead-letters; messages of this
    /// tick or later are held back (in `carry`) for the next step.
    fn sort_out(&mut self, kind: StepKind, deliveries: &[Delivery]) -> (Vec<EntryId>, Vec<DeadLetter>) {
        let mut acks: Vec<EntryId> = Vec::with_capacity(deliveries.len());
        let mut dead: Vec<DeadLetter> = Vec::new();
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
                        // Published in this tick or later (a process ahead of this one):
                        // for the next step.
                        self.carry.push(d.clone());
                        continue;
                    }
                    acks.push(d.id);
                }
            }
        }
        (acks, dead)
    }

    /// Takes one step and commits it.
    pub async fn step(&mut self, input: StepInput) -> Result<StepReport, RunError> {
        let result = self.step_inner(input).await;
        if result.is_err() {
            // The step did not commit: forget what it did, so the next step starts clean.
            // Entries it held back are still pending on the backend and will be read again.
            self.carry.clear();
            self.restore()?;
        }
        result
    }

    async fn step_inner(&mut self, input: StepInput) -> Result<StepReport, RunError> {
        let StepInput {
            kind,
            mut deliveries,
            mut plan,
        } = input;
        let carry = std::mem::take(&mut self.carry);
        if !carry.is_empty() {
            // Entries held back are still pending: a read of the pending list (after a lost
            // connection) brings them again.
            let read: std::collections::HashSet<EntryId> = deliveries.iter().map(|d| d.id).collect();
            let carried = carry.into_iter().filter(|d| !read.contains(&d.id));
            deliveries = deliveries.iter().cloned().chain(carried).collect();
            plan = None;
        }

        let (mut acks, mut dead) = match &plan {
            // Messages of earlier ticks only: all acknowledged, none held back.
            Some(plan) if plan.plain => (deliveries.iter().map(|d| d.id).collect(), Vec::new()),
            _ => self.sort_out(kind, &deliveries),
        };
        // Acknowledged in stream order, as they were read.
        if !acks.is_sorted() {
            acks.sort_unstable();
        }
        let name = &*self.spec.name;
        let handle: Vec<(EntryId, &Message)> = match &plan {
            Some(plan) => {
                let mut own = plan
                    .by_sender
                    .get(name)
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
            None => handling_order(&deliveries, kind)
                .into_iter()
                .filter_map(|i| {
                    let d = &deliveries[i as usize];
                    let msg = d.message()?;
                    (*msg.sender_id != *name).then_some((d.id, &**msg))
                })
                .collect(),
        };

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
                    let answers = super::reconnect::retry(&self.backend, self.reconnect_timeout, || {
                        self.backend.cache_read(&queries)
                    })
                    .await?;
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
            .borrow()
            .iter()
            .map(|e| CacheAppend {
                agent: self.spec.name.clone(),
                member: e.encode(),
                score,
            })
            .collect();
        let failures = skip.iter().filter(|&&s| s).count() as u64;
        let mut counters = Counters {
            deliveries: acks.len() as u64,
            handled: work.handled,
            dead_letters: dead.len() as u64,
            failures,
            metrics: Default::default(),
        };
        for (name, delta) in &work.metrics {
            *counters.metrics.entry(name.to_string()).or_insert(0) += delta;
        }
        let mut report = StepReport {
            deliveries: counters.deliveries,
            handled: counters.handled,
            dead_letters: counters.dead_letters,
            failures,
            metrics: work.metrics,
            published: Vec::new(),
        };
        let snapshot = self.snapshot()?;
        let changed =
            self.saved_core.as_deref() != Some(snapshot.core.as_str()) || !counters.metrics.is_empty();
        if acks.is_empty() && work.publish.is_empty() && cache.is_empty() && dead.is_empty() && !changed {
            // Nothing happened: no commit. Redoing such a step after a crash changes nothing.
            return Ok(report);
        }
        self.live.steps += 1;
        self.live.total.add(&counters);
        self.live.last = counters;
        let (record, core) = self.record(snapshot)?;
        let commit = Commit {
            group: &self.group,
            acks: &acks,
            publish: &work.publish,
            cache: &cache,
            state: Some((&*self.spec.name, record.as_str())),
            dead: &dead,
        };
        let ids = self.commit(&commit, &work.publish).await?;
        if let Some(last) = ids.last() {
            self.last_own_id = self.last_own_id.max(*last);
        }
        self.saved = Some(record);
        self.saved_core = Some(core);
        report.published = ids.into_iter().zip(work.publish).collect();
        Ok(report)
    }

    /// Commits a step, riding out a lost connection: after Redis is back, the saved record
    /// tells whether the commit went through before the connection broke.
    async fn commit(&self, commit: &Commit<'_>, publish: &[Arc<Message>]) -> Result<Vec<EntryId>, RunError> {
        loop {
            match self.backend.commit(commit).await {
                Ok(ids) => return Ok(ids),
                Err(e) if e.is_unavailable() => {
                    tracing::debug!(agent = %self.spec.name, "{e}; waiting for the backend to come back");
                    super::reconnect::wait(&self.backend, self.reconnect_timeout).await?;
                    let stored = super::reconnect::retry(&self.backend, self.reconnect_timeout, || {
                        self.backend.load_states(std::slice::from_ref(&self.spec.name))
                    })
                    .await?;
                    let record = commit.state.map(|(_, r)| r);
                    if stored.first().and_then(|s| s.as_deref()) == record {
                        return self.find_published(publish).await;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The stream ids of messages this agent published in a commit whose reply was lost.
    async fn find_published(&self, publish: &[Arc<Message>]) -> Result<Vec<EntryId>, RunError> {
        let mut ids = Vec::with_capacity(publish.len());
        let mut after = self.last_own_id;
        while ids.len() < publish.len() {
            let batch = super::reconnect::retry(&self.backend, self.reconnect_timeout, || {
                self.backend.range(after, 1000)
            })
            .await?;
            let Some(last) = batch.last() else { break };
            after = last.id;
            for d in &batch {
                if let Some(m) = d.message()
                    && m.sender_id == self.spec.name
                    && publish.iter().any(|p| p.seq == m.seq)
                {
                    ids.push(d.id);
                }
            }
        }
        if ids.len() != publish.len() {
            return Err(RunError::Internal(format!(
                "agent {}: its commit went through but only {} of its {} messages are on the stream",
                self.spec.name,
                ids.len(),
                publish.len()
            )));
        }
        Ok(ids)
    }

    /// Runs the behaviour over the step's messages once, from the current `live` state.
    fn attempt(
        &mut self,
        kind: StepKind,
        handle: &[(EntryId, &Message)],
        skip: &[bool],
        fetched: &Fetched,
    ) -> Attempt {
        let mut work = Work::default();
        let misses = RefCell::new(Vec::new());
        let tick = kind.tick();
        let bound = match kind {
            StepKind::Start { lockstep: true } => ScoreBound::below(0.0),
            StepKind::Tick(t) => ScoreBound::below(t as f64),
            StepKind::Start { lockstep: false } | StepKind::Free => ScoreBound::ALL,
        };
        let call = Call {
            tick,
            bound,
            fetched,
            misses: &misses,
        };

        if let StepKind::Start { .. } = kind {
            let result = self.call(&call, &mut work, |b, state, ctx| {
                let mut fresh = b.init(ctx)?;
                let effects = b.on_start(&mut fresh, ctx)?;
                *state = Some(fresh);
                Ok(effects)
            });
            return match result {
                Ok(()) => Attempt::Done(work),
                Err(a) => a,
            };
        }

        // The messages not given up on, and where each is in `handle`.
        let positions: Vec<usize> = (0..handle.len()).filter(|&i| !skip[i]).collect();
        let messages: Vec<&Message> = positions.iter().map(|&i| handle[i].1).collect();
        if !messages.is_empty()
            && let Err(e) = self.call_messages(&call, &mut work, &messages)
        {
            return match e {
                MessagesFailed::At(k, error) => Attempt::Failed {
                    at: positions.get(k).copied(),
                    error,
                },
                MessagesFailed::Other(attempt) => attempt,
            };
        }

        if let StepKind::Tick(_) = kind {
            let result = self.call(&call, &mut work, |b, state, ctx| match state {
                Some(state) => b.on_tick(state, ctx),
                None => Err(BehaviourError::new(NO_STATE)),
            });
            if let Err(a) = result {
                return a;
            }
        }
        Attempt::Done(work)
    }

    /// Calls the behaviour once with a fresh context, catching panics, and records what it did.
    fn call(
        &mut self,
        call: &Call<'_>,
        work: &mut Work,
        f: impl FnOnce(
            &dyn DynBehaviour,
            &mut Option<StateBox>,
            &mut BehaviourContext<'_>,
        ) -> Result<Effects, BehaviourError>,
    ) -> Result<(), Attempt> {
        let AgentCore {
            backend,
            spec,
            peers,
            behaviour,
            live,
            ..
        } = self;
        let Live {
            state,
            rng,
            seq,
            cache_n,
            ..
        } = live;
        let outcome = {
            let mut cache = call.cache(backend, &spec.name, &work.remember);
            let mut ctx = BehaviourContext::new(spec, peers, call.tick, rng, &mut cache);
            catch_unwind(AssertUnwindSafe(|| f(&**behaviour, state, &mut ctx)))
        };
        call.missed()?;
        let error = match outcome {
            Ok(Ok(effects)) => {
                record(effects, call.tick, &spec.name, seq, cache_n, work);
                return Ok(());
            }
            Ok(Err(e)) => failure_text(e),
            Err(panic) => panic_failure_text(&*panic),
        };
        Err(Attempt::Failed { at: None, error })
    }

    /// Hands `messages` to the behaviour in order, in one context and one call through the
    /// behaviour's erased form (a call per message cost more than most behaviours' work),
    /// recording each message's effects as it goes.
    fn call_messages(
        &mut self,
        call: &Call<'_>,
        work: &mut Work,
        messages: &[&Message],
    ) -> Result<(), MessagesFailed> {
        let AgentCore {
            backend,
            spec,
            peers,
            behaviour,
            live,
            ..
        } = self;
        let Live {
            state,
            rng,
            seq,
            cache_n,
            ..
        } = live;
        let Some(state) = state.as_mut() else {
            return Err(MessagesFailed::At(0, NO_STATE.to_string()));
        };
        let Work {
            publish,
            remember,
            metrics,
            handled,
        } = work;
        let mut done = 0usize;
        let mut failed: Option<BehaviourError> = None;
        let outcome = {
            let mut cache = call.cache(backend, &spec.name, remember);
            let mut ctx = BehaviourContext::new(spec, peers, call.tick, rng, &mut cache);
            let mut each = |result: Result<Effects, BehaviourError>| {
                // A read the cache could not answer yet: fetch, then try the step again.
                if !call.misses.borrow().is_empty() {
                    return ControlFlow::Break(());
                }
                match result {
                    // Most messages change only the state.
                    Ok(effects) if effects.is_empty() => {
                        *handled += 1;
                        done += 1;
                        ControlFlow::Continue(())
                    }
                    Ok(effects) => {
                        record_into(
                            effects, call.tick, &spec.name, seq, cache_n, publish, remember, metrics,
                        );
                        *handled += 1;
                        done += 1;
                        ControlFlow::Continue(())
                    }
                    Err(e) => {
                        failed = Some(e);
                        ControlFlow::Break(())
                    }
                }
            };
            catch_unwind(AssertUnwindSafe(|| {
                behaviour.on_messages(state, messages, &mut ctx, &mut each)
            }))
        };
        call.missed().map_err(MessagesFailed::Other)?;
        let error = match (outcome, failed) {
            (Ok(Ok(())), None) => return Ok(()),
            (Ok(Err(e)), _) | (Ok(Ok(())), Some(e)) => failure_text(e),
            (Err(panic), _) => panic_failure_text(&*panic),
        };
        Err(MessagesFailed::At(done, error))
    }
}

const NO_STATE: &str = "the agent has no state: it never started";

/// What a failed behaviour call reads as, in the dead letter and the summary.
fn failure_text(e: BehaviourError) -> String {
    match e {
        BehaviourError::CacheMiss => {
            "the behaviour returned a cache miss for a read it never made".to_string()
        }
        BehaviourError::Failed(error) => error,
    }
}

fn panic_failure_text(panic: &(dyn std::any::Any + Send)) -> String {
    format!("panicked: {}", super::panic_text(panic))
}

/// What every behaviour call of one attempt shares.
struct Call<'a> {
    tick: Option<u64>,
    /// What the attempt may see of the global sorted set.
    bound: ScoreBound,
    fetched: &'a Fetched,
    /// Cache reads that could not be answered yet.
    misses: &'a RefCell<Vec<crate::backend::CacheQuery>>,
}

impl<'a> Call<'a> {
    fn cache<'c, B: Backend>(
        &'c self,
        backend: &'c B,
        agent: &'c str,
        own: &'c RefCell<Vec<CacheEntry>>,
    ) -> StepCache<'c, B> {
        StepCache {
            backend,
            fetched: self.fetched,
            agent,
            bound: self.bound,
            own,
            misses: self.misses,
        }
    }

    /// `Err(Miss)` when a call asked the cache for something it did not have.
    fn missed(&self) -> Result<(), Attempt> {
        let mut misses = self.misses.borrow_mut();
        if misses.is_empty() {
            Ok(())
        } else {
            Err(Attempt::Miss(std::mem::take(&mut *misses)))
        }
    }
}

/// How handing a batch of messages to the behaviour failed.
enum MessagesFailed {
    /// On the message at this position of the batch.
    At(usize, String),
    Other(Attempt),
}

/// Numbers and records one call's effects.
fn record(
    effects: Effects,
    tick: Option<u64>,
    agent: &Arc<str>,
    seq: &mut u64,
    cache_n: &mut u64,
    work: &mut Work,
) {
    let Work {
        publish,
        remember,
        metrics,
        ..
    } = work;
    record_into(effects, tick, agent, seq, cache_n, publish, remember, metrics);
}

#[allow(clippy::too_many_arguments)]
fn record_into(
    effects: Effects,
    tick: Option<u64>,
    agent: &Arc<str>,
    seq: &mut u64,
    cache_n: &mut u64,
    publish: &mut Vec<Arc<Message>>,
    remember: &RefCell<Vec<CacheEntry>>,
    metrics: &mut Vec<(Cow<'static, str>, i64)>,
) {
    for out in effects.publish {
        *seq += 1;
        publish.push(Arc::new(Message {
            tick,
            sender_id: agent.clone(),
            seq: Some(*seq),
            to: out.to.map(Arc::from),
            content: out.content,
            data: out.data,
        }));
    }
    if !effects.remember.is_empty() {
        let mut remember = remember.borrow_mut();
        for value in effects.remember {
            *cache_n += 1;
            remember.push(CacheEntry {
                agent: agent.to_string(),
                n: *cache_n,
                tick,
                value,
            });
        }
    }
    if !effects.metrics.is_empty() {
        metrics.extend(effects.metrics);
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
