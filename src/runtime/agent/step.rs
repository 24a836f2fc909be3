//! The agent and its step: sort a batch out, run the behaviour within its retry budget, and
//! commit what it did.

use std::collections::HashSet;
use std::sync::Arc;

use super::call::{Attempt, Inputs, Work};
use super::plan::{BatchPlan, GivenUp, Handled};
use super::record::{Live, Snapshot};
use super::step_cache::Fetched;
use super::step_completions::Answered;
use super::step_program::{Replies, StepInputs};
use super::{StepInput, StepKind, StepReport};
use crate::backend::cache::wall_clock_score;
use crate::backend::{Backend, CacheAppend, Commit, DeadLetter};
use crate::behaviour::{DynBehaviour, Report};
use crate::message::{Delivery, Entry, EntryId, Message};
use crate::runtime::RunError;
use crate::runtime::model::{Asker, ModelClient};
use crate::runtime::pacing::{AgentPace, Pacer};
use crate::runtime::programs::Programs;
use crate::runtime::reconnect::Reconnect;
use crate::scenario::AgentSpec;
use crate::tally::Tally;

/// Everything an agent is made from.
pub(crate) struct AgentSetup<B> {
    pub spec: AgentSpec,
    pub group: String,
    pub behaviour: Arc<dyn DynBehaviour>,
    pub peers: Arc<[Arc<str>]>,
    /// With a sparse network: where the agent stands in it.
    pub neighbours: Option<Arc<crate::behaviour::Neighbours>>,
    pub backend: B,
    pub seed: u64,
    pub max_retries: u32,
    /// Whether the agent's reported values are recorded (`output.agent_values`).
    pub record_values: bool,
    /// How to wait for a lost backend.
    pub reconnect: Reconnect,
    /// A saved record to continue from (`--resume`).
    pub saved: Option<String>,
    /// The run's model client, when the scenario has `[llm]`.
    pub model: Option<Arc<ModelClient<B>>>,
    /// Free mode: the agent's own least interval between publishes, and the process's.
    pub pace: AgentPace,
    pub pacer: Option<Arc<Pacer>>,
    /// The process's running behaviour programs, when the scenario has some.
    pub programs: Option<Arc<Programs>>,
}

pub(crate) struct AgentCore<B> {
    pub spec: AgentSpec,
    pub group: String,
    pub(super) behaviour: Arc<dyn DynBehaviour>,
    pub(super) peers: Arc<[Arc<str>]>,
    pub(super) neighbours: Option<Arc<crate::behaviour::Neighbours>>,
    pub(super) backend: B,
    seed: u64,
    max_retries: u32,
    record_values: bool,
    pub(super) reconnect: Reconnect,
    pub(super) model: Option<Arc<ModelClient<B>>>,
    pace: AgentPace,
    pacer: Option<Arc<Pacer>>,
    programs: Option<Arc<Programs>>,
    pub(super) live: Live,
    /// The last committed record; `live` equals it at the start of every step.
    saved: Option<String>,
    /// The agent as `saved` recorded it, counts aside: a step that leaves it unchanged and
    /// did nothing else need not commit.
    saved_snapshot: Option<Snapshot>,
    /// Lockstep: entries of a later tick that a read brought early, unacknowledged.
    carry: Vec<Delivery>,
    /// The newest stream id this agent published, where to look for its entries after a
    /// commit whose reply was lost.
    pub(super) last_own_id: EntryId,
}

/// A batch sorted out: what the step acknowledges, what it dead-letters as malformed, and how
/// its messages are handled.
struct Sorted {
    deliveries: Arc<[Delivery]>,
    plan: Option<Arc<BatchPlan>>,
    /// In stream order; shared by every agent that read the same plain batch.
    acks: Arc<[EntryId]>,
    dead: Vec<DeadLetter>,
}

impl<B: Backend> AgentCore<B> {
    /// # Errors
    ///
    /// A saved record that cannot be restored (`RunError::State`).
    pub fn new(setup: AgentSetup<B>) -> Result<Self, RunError> {
        let mut core = AgentCore {
            live: Live::fresh(setup.seed, setup.spec.index),
            spec: setup.spec,
            group: setup.group,
            behaviour: setup.behaviour,
            peers: setup.peers,
            neighbours: setup.neighbours,
            backend: setup.backend,
            seed: setup.seed,
            max_retries: setup.max_retries,
            record_values: setup.record_values,
            reconnect: setup.reconnect,
            model: setup.model,
            pace: setup.pace,
            pacer: setup.pacer,
            programs: setup.programs,
            saved: setup.saved,
            saved_snapshot: None,
            carry: Vec::new(),
            last_own_id: EntryId::ZERO,
        };
        core.restore()?;
        if core.saved.is_some() {
            let snapshot = core
                .live
                .snapshot(&*core.behaviour)
                .map_err(|m| core.state_error(m))?;
            core.saved_snapshot = Some(snapshot);
        }
        Ok(core)
    }

    /// What the last committed step counted.
    pub fn last_tally(&self) -> &Tally {
        &self.live.last
    }

    /// The tick of the last committed step.
    pub fn last_tick(&self) -> Option<u64> {
        self.live.tick
    }

    /// Whether the agent has started (it has a saved record).
    pub fn has_started(&self) -> bool {
        self.saved.is_some()
    }

    fn state_error(&self, message: String) -> RunError {
        RunError::State {
            agent: self.spec.name.to_string(),
            message,
        }
    }

    /// Puts `live` back to the saved record (or to the very start).
    pub(super) fn restore(&mut self) -> Result<(), RunError> {
        self.live = match &self.saved {
            None => Live::fresh(self.seed, self.spec.index),
            Some(saved) => Live::restore(saved, &*self.behaviour, self.seed, self.spec.index)
                .map_err(|m| self.state_error(m))?,
        };
        Ok(())
    }

    /// Takes one step and commits it.
    ///
    /// # Errors
    ///
    /// A behaviour that kept failing in `on_start` or `on_tick`, a state that cannot be
    /// saved, a backend that failed or stayed away past the reconnect timeout. The step then
    /// left nothing behind: the agent is as it was before it.
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
        let kind = input.kind;
        let Sorted {
            deliveries,
            plan,
            acks,
            mut dead,
        } = self.sort_out(input)?;
        let agent = self.spec.name.clone();
        let handled = Handled::new(&agent, &deliveries, kind, plan.as_deref());
        let (work, failures) = self.run_behaviour(kind, &handled, &mut dead).await?;
        self.finish(kind, acks, dead, work, failures).await
    }

    /// Joins the entries held back from the last step to `input`'s, and works out what the
    /// step acknowledges and dead-letters. Messages of this tick or later are held back (in
    /// `carry`) for the next step.
    fn sort_out(&mut self, input: StepInput) -> Result<Sorted, RunError> {
        let StepInput {
            kind,
            mut deliveries,
            mut plan,
        } = input;
        let carry = std::mem::take(&mut self.carry);
        if !carry.is_empty() {
            // Entries held back are still pending: a read of the pending list (after a lost
            // connection) brings them again.
            let read: HashSet<EntryId> = deliveries.iter().map(|d| d.id).collect();
            let carried = carry.into_iter().filter(|d| !read.contains(&d.id));
            deliveries = deliveries.iter().cloned().chain(carried).collect();
            plan = None;
        }
        let (acks, dead) = match &plan {
            // Messages of earlier ticks only: all acknowledged, none held back.
            Some(plan) if plan.plain => (plan.ids.clone(), Vec::new()),
            _ => {
                let (mut acks, dead) = self.acks_and_dead(kind, &deliveries)?;
                // Acknowledged in stream order, as they were read.
                if !acks.is_sorted() {
                    acks.sort_unstable();
                }
                (acks.into(), dead)
            }
        };
        Ok(Sorted {
            deliveries,
            plan,
            acks,
            dead,
        })
    }

    fn acks_and_dead(
        &mut self,
        kind: StepKind,
        deliveries: &[Delivery],
    ) -> Result<(Vec<EntryId>, Vec<DeadLetter>), RunError> {
        let mut acks: Vec<EntryId> = Vec::with_capacity(deliveries.len());
        let mut dead: Vec<DeadLetter> = Vec::new();
        for d in deliveries {
            match &d.entry {
                Entry::Malformed(m) if m.is_deleted() => {
                    return Err(RunError::Lost(format!(
                        "agent {} read entry {} but it was deleted from the stream before it could handle it",
                        self.spec.name, d.id
                    )));
                }
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
        Ok((acks, dead))
    }

    /// Runs the behaviour over `handled` until an attempt completes: fetching what the cache
    /// could not answer, retrying failures from the saved state, and giving up on a message
    /// (into `dead`) after `max_retries` retries. Returns the completed attempt's work and how
    /// many messages were given up on.
    async fn run_behaviour(
        &mut self,
        kind: StepKind,
        handled: &Handled<'_>,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<(Work, u64), RunError> {
        let mut skip = GivenUp::default();
        // Failures by message, sized at the first.
        let mut failures_at: Vec<u32> = Vec::new();
        let mut whole_step_failures = 0u32;
        let mut batch_failures = 0u32;
        let mut fetched = Fetched::default();
        let mut answered = Answered::default();
        let mut replies = Replies::default();
        let mut first = true;
        loop {
            if !first {
                self.restore()?;
            }
            first = false;
            let inputs = StepInputs {
                fetched: &fetched,
                answered: &answered,
                replies: &replies,
            };
            let attempt = self.attempt(kind, handled, &skip, &inputs);
            if matches!(attempt, Attempt::BatchFailed(_) | Attempt::Failed { .. }) {
                replies.forget();
            }
            match attempt {
                Attempt::Done(work) => {
                    return Ok((work, skip.len() as u64));
                }
                Attempt::Pending(inputs) => {
                    self.fetch(kind, inputs, &mut fetched, &mut answered, &mut replies)
                        .await?;
                }
                Attempt::BatchFailed(error) => {
                    batch_failures += 1;
                    if batch_failures > self.max_retries {
                        let list = handled.list();
                        for (i, &message) in list.iter().enumerate() {
                            if skip.insert(i, list.len()) {
                                dead.push(self.give_up(message, batch_failures, &error));
                            }
                        }
                    }
                }
                Attempt::Failed { at: Some(i), error } => {
                    if failures_at.is_empty() {
                        failures_at = vec![0; handled.len()];
                    }
                    failures_at[i] += 1;
                    if failures_at[i] > self.max_retries {
                        skip.insert(i, handled.len());
                        dead.push(self.give_up(handled.list()[i], failures_at[i], &error));
                    }
                }
                Attempt::Failed { at: None, error } => {
                    whole_step_failures += 1;
                    if whole_step_failures > self.max_retries {
                        let when = match kind {
                            StepKind::Start { .. } => "at the start",
                            _ => "at the end of a tick",
                        };
                        return Err(RunError::Behaviour {
                            agent: self.spec.name.to_string(),
                            message: format!("failed {whole_step_failures} times {when}: {error}"),
                        });
                    }
                }
            }
        }
    }

    /// Fetches what an attempt asked for and did not have: cache reads, and completions (all
    /// at once; the model client keeps to `max_concurrency`).
    async fn fetch(
        &self,
        kind: StepKind,
        inputs: Inputs,
        fetched: &mut Fetched,
        answered: &mut Answered,
        replies: &mut Replies,
    ) -> Result<(), RunError> {
        let Inputs {
            cache,
            completions,
            program,
        } = inputs;
        if let Some(call) = program {
            let reply = match &self.programs {
                Some(programs) => programs.step(&call.behaviour, &self.spec.name, &call.line).await,
                None => Err("internal error: no programs in this process".to_string()),
            };
            replies.insert(call.line, reply);
        }
        let reads = async {
            if cache.is_empty() {
                return Ok(Vec::new());
            }
            self.reconnect
                .retry(&self.backend, || self.backend.cache_read(&cache))
                .await
        };
        let asks = async {
            let Some(model) = &self.model else {
                return Ok(Vec::new());
            };
            let asks = completions.iter().map(|wanted| {
                let asker = Asker {
                    agent: &self.spec.name,
                    tick: kind.tick(),
                    call: wanted.call,
                };
                model.complete(&wanted.request, asker)
            });
            futures_util::future::join_all(asks)
                .await
                .into_iter()
                .collect::<Result<Vec<_>, RunError>>()
        };
        let (reads, asks) = futures_util::future::join(reads, asks).await;
        for (query, answer) in cache.into_iter().zip(reads?) {
            fetched.insert(query, answer);
        }
        for (wanted, completion) in completions.into_iter().zip(asks?) {
            answered.insert(wanted.request, completion);
        }
        Ok(())
    }

    /// The dead letter of a message the behaviour failed on `failures` times.
    fn give_up(&self, (id, msg): (EntryId, &Message), failures: u32, error: &str) -> DeadLetter {
        tracing::warn!(
            agent = %self.spec.name,
            entry = %id,
            "behaviour failed {failures} times on a message; dead-lettering it: {error}"
        );
        DeadLetter {
            id,
            agent: self.spec.name.to_string(),
            reason: format!("behaviour failed {failures} times: {error}"),
            fields: msg
                .to_fields()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }

    /// Commits what the step did (unless it did nothing at all) and reports it.
    async fn finish(
        &mut self,
        kind: StepKind,
        acks: Arc<[EntryId]>,
        dead: Vec<DeadLetter>,
        work: Work,
        failures: u64,
    ) -> Result<StepReport, RunError> {
        let tick = kind.tick();
        self.live.tick = tick.or(self.live.tick);
        let score = tick.map_or_else(wall_clock_score, |t| t as f64);
        // Each entry written into one buffer, then copied once into its shared member.
        let mut member = Vec::with_capacity(128);
        let cache: Vec<CacheAppend> = work
            .remember
            .borrow()
            .iter()
            .map(|e| {
                member.clear();
                crate::backend::cache::write_entry(&mut member, &self.spec.name, e.n, e.tick, |out| {
                    e.value.write(out)
                });
                CacheAppend {
                    agent: self.spec.name.clone(),
                    // Only serde_json's escaped strings and ASCII went in.
                    member: std::str::from_utf8(&member).unwrap_or_default().into(),
                    score,
                }
            })
            .collect();
        let publish = work.out.publish;
        let mut tally = Tally {
            published: publish.len() as u64,
            deliveries: acks.len() as u64,
            handled: work.out.handled,
            dead_letters: dead.len() as u64,
            failures,
            ..Tally::default()
        };
        for (name, report) in &work.out.metrics {
            match *report {
                Report::Count(delta) => tally.count(name, delta),
                Report::Level(value) => tally.set_level(name, value),
                Report::Value(value) if self.record_values => tally.report(&self.spec.name, name, value),
                Report::Value(_) => {}
            }
        }
        let snapshot = self
            .live
            .snapshot(&*self.behaviour)
            .map_err(|m| self.state_error(m))?;
        let changed = self.saved_snapshot.as_ref() != Some(&snapshot) || tally.has_reports();
        if acks.is_empty() && publish.is_empty() && cache.is_empty() && dead.is_empty() && !changed {
            // Nothing happened: no commit. Redoing such a step after a crash changes nothing.
            return Ok(StepReport::counts(tally));
        }
        self.live.steps += 1;
        self.live.total.add_counts(&tally);
        self.live.last = tally.clone();
        let (record, snapshot) = self.live.record(snapshot);
        let commit = Commit {
            group: &self.group,
            acks: &acks,
            publish: &publish,
            cache: &cache,
            state: Some((&*self.spec.name, record.as_str())),
            dead: &dead,
        };
        if !publish.is_empty() && matches!(kind, StepKind::Free | StepKind::Start { lockstep: false }) {
            self.pace.wait_turn(self.pacer.as_deref()).await;
        }
        let ids = self.commit(&commit, &publish).await?;
        if let Some(last) = ids.last() {
            self.last_own_id = self.last_own_id.max(*last);
        }
        self.saved = Some(record);
        self.saved_snapshot = Some(snapshot);
        Ok(StepReport {
            published: ids.into_iter().zip(publish).collect(),
            tally,
        })
    }
}
