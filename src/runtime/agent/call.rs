//! One attempt at a step: calling the behaviour from the agent's live state, catching its
//! panics, and numbering what it produced (each message gets the sender's next `seq`, each
//! cache write the agent's next counter).

use crate::behaviour::Neighbours;
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use super::StepKind;
use super::plan::{GivenUp, Handled};
use super::step::AgentCore;
use super::step_cache::{Fetched, StepCache};
use super::step_completions::Answered;
use super::step_completions::{StepCompletions, Wanted};
use super::step_program::{ProgramCall, StepInputs};
use crate::backend::{Backend, CacheEntry, CacheQuery, ScoreBound};
use crate::behaviour::{
    BehaviourError, CacheValue, Context as BehaviourContext, DynBehaviour, Effects, Messages, Report,
    StateBox,
};
use crate::message::Message;

/// What one attempt at a step produced.
#[derive(Default)]
pub(super) struct Work {
    pub out: Output,
    /// Shared with the step's cache reads, which see the step's own writes.
    pub remember: RefCell<Vec<Remembered>>,
}

/// A cache entry the step wrote, not committed yet; its writer is the step's agent, whose
/// name it does not copy (W1: a name copied and dropped for each of 100,000 entries).
pub(crate) struct Remembered {
    pub n: u64,
    pub tick: Option<u64>,
    pub value: CacheValue,
}

impl Remembered {
    /// The entry as `agent`'s cache reads see it.
    pub fn entry(&self, agent: &str) -> CacheEntry {
        CacheEntry {
            agent: agent.to_string(),
            n: self.n,
            tick: self.tick,
            value: self.value.to_value(),
        }
    }
}

/// The messages and counters of an attempt, numbered.
#[derive(Default)]
pub(super) struct Output {
    pub publish: Vec<Arc<Message>>,
    pub metrics: Vec<(Cow<'static, str>, Report)>,
    /// Messages handed to the behaviour and handled.
    pub handled: u64,
}

/// Inputs an attempt asked for and did not have: fetched, then the step is tried again.
#[derive(Default)]
pub(super) struct Inputs {
    pub cache: Vec<CacheQuery>,
    pub completions: Vec<Wanted>,
    /// A behaviour program's reply to a request.
    pub program: Option<ProgramCall>,
}

/// How an attempt ended.
pub(super) enum Attempt {
    Done(Work),
    /// Inputs to fetch before trying again.
    Pending(Inputs),
    /// The behaviour failed on message `at` (or in `init`/`on_start`/`on_tick` if `None`).
    Failed {
        at: Option<usize>,
        error: String,
    },
    /// The behaviour failed on the step's messages as a whole, on whichever of them: a
    /// behaviour program (it exited, hung, or did not speak the protocol) or one that
    /// handles batches. Given up on, they are all dead-lettered.
    BatchFailed(String),
}

/// Numbers a call's effects as the agent's own: its counters go on from where they are.
pub(super) struct Numbering<'a> {
    pub agent: &'a Arc<str>,
    pub tick: Option<u64>,
    pub seq: &'a mut u64,
    pub cache_n: &'a mut u64,
}

/// The model-level metrics every run records itself (`metrics.csv`): a behaviour's counter
/// or level of the same name would be a second row of it.
pub(crate) const RUN_METRICS: [&str; 3] = ["messages", "deliveries", "seconds"];

impl Numbering<'_> {
    /// Numbers `effects` into `out` and `remember`.
    ///
    /// # Errors
    ///
    /// A model-level metric named like one of [`RUN_METRICS`], or a value given to
    /// [`Effects::remember_as`] that serde_json cannot write: the behaviour's failure, in
    /// words for its author. Nothing is numbered then.
    pub fn apply(
        &mut self,
        effects: Effects,
        out: &mut Output,
        remember: &RefCell<Vec<Remembered>>,
    ) -> Result<(), String> {
        let effects = effects.into_lists();
        if let Some((name, _)) = effects
            .metrics
            .iter()
            .find(|(name, report)| !matches!(report, Report::Value(_)) && RUN_METRICS.contains(&&**name))
        {
            return Err(format!(
                "reported a metric named {name:?}, which every run records itself ({}): give it another name",
                RUN_METRICS.join(", ")
            ));
        }
        if let Some(error) = effects.unwritable() {
            return Err(error.to_owned());
        }
        for message in effects.publish {
            *self.seq += 1;
            out.publish.push(Arc::new(Message {
                tick: self.tick,
                sender_id: self.agent.clone(),
                seq: Some(*self.seq),
                to: message.to,
                content: message.content,
                data: message.data,
                decoded: crate::message::DecodedData::default(),
            }));
        }
        if !effects.remember.is_empty() {
            let mut remember = remember.borrow_mut();
            for value in effects.remember {
                *self.cache_n += 1;
                remember.push(Remembered {
                    n: *self.cache_n,
                    tick: self.tick,
                    value,
                });
            }
        }
        out.metrics.extend(effects.metrics);
        Ok(())
    }
}

/// What every behaviour call of one attempt shares.
struct Call<'a> {
    tick: Option<u64>,
    /// What the attempt may see of the global sorted set.
    bound: ScoreBound,
    fetched: &'a Fetched,
    /// Cache reads that could not be answered yet.
    misses: &'a RefCell<Vec<CacheQuery>>,
    /// Whether the agent may ask a model (the scenario has `[llm]`).
    models: bool,
    answered: &'a Answered,
    asked: &'a Cell<u32>,
    /// Completions that could not be answered yet.
    wanted: &'a RefCell<Vec<Wanted>>,
}

impl Call<'_> {
    fn cache<'c, B: Backend>(
        &'c self,
        backend: &'c B,
        agent: &'c str,
        own: &'c RefCell<Vec<Remembered>>,
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

    fn completions(&self) -> StepCompletions<'_> {
        StepCompletions {
            answered: self.answered,
            asked: self.asked,
            wanted: self.wanted,
        }
    }

    /// Whether a call asked for an input the step does not have yet.
    fn waiting(&self) -> bool {
        !self.misses.borrow().is_empty() || !self.wanted.borrow().is_empty()
    }

    /// `Err(Pending)` when a call asked for inputs the step did not have.
    fn missed(&self) -> Result<(), Attempt> {
        if !self.waiting() {
            return Ok(());
        }
        Err(Attempt::Pending(Inputs {
            cache: std::mem::take(&mut *self.misses.borrow_mut()),
            completions: std::mem::take(&mut *self.wanted.borrow_mut()),
            program: None,
        }))
    }
}

/// How handing a batch of messages to the behaviour failed.
enum MessagesFailed {
    /// On the message at this position of the batch.
    At(usize, String),
    Other(Attempt),
}

const NO_STATE: &str = "the agent has no state: it never started";

/// The parts of an agent a behaviour call works on, borrowed apart.
struct Parts<'a, B> {
    backend: &'a B,
    spec: &'a crate::scenario::AgentSpec,
    peers: &'a [Arc<str>],
    neighbours: Option<&'a Neighbours>,
    behaviour: &'a dyn DynBehaviour,
    live: &'a mut super::record::Live,
}

impl<B: Backend> AgentCore<B> {
    fn parts(&mut self) -> Parts<'_, B> {
        Parts {
            backend: &self.backend,
            spec: &self.spec,
            peers: &self.peers,
            neighbours: self.neighbours.as_deref(),
            behaviour: &*self.behaviour,
            live: &mut self.live,
        }
    }

    /// Runs the behaviour over the step's messages once, from the current live state,
    /// leaving out the messages marked in `skip` (given up on).
    pub(super) fn attempt(
        &mut self,
        kind: StepKind,
        handled: &Handled<'_>,
        skip: &GivenUp,
        inputs: &StepInputs<'_>,
    ) -> Attempt {
        if let Some(program) = self.behaviour.clone().as_program() {
            return self.attempt_program(program, kind, handled.list(), skip, inputs);
        }
        let StepInputs {
            fetched, answered, ..
        } = *inputs;
        let mut work = Work::default();
        let misses = RefCell::new(Vec::new());
        let (asked, wanted) = (Cell::new(0), RefCell::new(Vec::new()));
        let bound = kind.bound();
        let call = Call {
            tick: kind.tick(),
            bound,
            fetched,
            misses: &misses,
            models: self.model.is_some(),
            answered,
            asked: &asked,
            wanted: &wanted,
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

        if let Err(attempt) = self.hand_over(&call, &mut work, handled, skip) {
            return attempt;
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
        let agent = self.parts();
        let outcome = {
            let mut cache = call.cache(agent.backend, &agent.spec.name, &work.remember);
            let mut completions = call.completions();
            let live = &mut *agent.live;
            let ctx = BehaviourContext::new(agent.spec, agent.peers, call.tick, &mut live.rng, &mut cache)
                .with_neighbours(agent.neighbours);
            let mut ctx = if call.models {
                ctx.with_completions(&mut completions)
            } else {
                ctx
            };
            catch_unwind(AssertUnwindSafe(|| f(agent.behaviour, &mut live.state, &mut ctx)))
        };
        call.missed()?;
        let error = match outcome {
            Ok(Ok(effects)) => {
                let mut numbering = Numbering {
                    agent: &agent.spec.name,
                    tick: call.tick,
                    seq: &mut agent.live.seq,
                    cache_n: &mut agent.live.cache_n,
                };
                match numbering.apply(effects, &mut work.out, &work.remember) {
                    Ok(()) => return Ok(()),
                    Err(error) => error,
                }
            }
            Ok(Err(e)) => failure_text(e),
            Err(panic) => panic_failure_text(&*panic),
        };
        Err(Attempt::Failed { at: None, error })
    }

    /// Hands the step's messages not given up on (`skip`) to the behaviour: all at once to a
    /// behaviour that handles batches (a batch every agent shares as its payload table, when
    /// none was given up on), else one by one.
    fn hand_over(
        &mut self,
        call: &Call<'_>,
        work: &mut Work,
        handled: &Handled<'_>,
        skip: &GivenUp,
    ) -> Result<(), Attempt> {
        if handled.len() == 0 {
            return Ok(());
        }
        let batches = self.behaviour.handles_batches();
        if let Some((table, own)) = handled.shared()
            && batches
            && skip.is_empty()
        {
            return self.call_batch(call, work, Messages::shared(table, own));
        }
        let list = handled.list();
        // The messages not given up on, and where each is in the list.
        let positions = skip.kept(list.len());
        let messages: Vec<&Message> = positions.iter().map(|&i| list[i].1).collect();
        if messages.is_empty() {
            return Ok(());
        }
        if batches {
            return self.call_batch(call, work, Messages::new(&messages));
        }
        self.call_messages(call, work, &messages).map_err(|e| match e {
            MessagesFailed::At(k, error) => Attempt::Failed {
                at: positions.get(k).copied(),
                error,
            },
            MessagesFailed::Other(attempt) => attempt,
        })
    }

    /// Hands `batch` to a behaviour that handles batches, in one call. It fails as a whole.
    fn call_batch(&mut self, call: &Call<'_>, work: &mut Work, batch: Messages<'_>) -> Result<(), Attempt> {
        let result = self.call(call, work, |b, state, ctx| match state {
            Some(state) => b.on_batch(state, &batch, ctx),
            None => Err(BehaviourError::new(NO_STATE)),
        });
        match result {
            Ok(()) => {
                work.out.handled += batch.len() as u64;
                Ok(())
            }
            Err(Attempt::Failed { error, .. }) => Err(Attempt::BatchFailed(error)),
            Err(other) => Err(other),
        }
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
        let Parts {
            backend,
            spec,
            peers,
            neighbours,
            behaviour,
            live,
        } = self.parts();
        let Some(state) = live.state.as_mut() else {
            return Err(MessagesFailed::At(0, NO_STATE.to_string()));
        };
        let Work { out, remember } = work;
        let mut numbering = Numbering {
            agent: &spec.name,
            tick: call.tick,
            seq: &mut live.seq,
            cache_n: &mut live.cache_n,
        };
        let mut done = 0usize;
        let mut failed: Option<BehaviourError> = None;
        let outcome = {
            let mut cache = call.cache(backend, &spec.name, remember);
            let mut completions = call.completions();
            let ctx = BehaviourContext::new(spec, peers, call.tick, &mut live.rng, &mut cache)
                .with_neighbours(neighbours);
            let mut ctx = if call.models {
                ctx.with_completions(&mut completions)
            } else {
                ctx
            };
            let mut each = |result: Result<Effects, BehaviourError>| {
                // An input the step does not have yet: fetch it, then try the step again.
                if call.waiting() {
                    return ControlFlow::Break(());
                }
                match result {
                    Ok(effects) => {
                        // Most messages change only the state.
                        if !effects.is_empty()
                            && let Err(error) = numbering.apply(effects, out, remember)
                        {
                            failed = Some(BehaviourError::new(error));
                            return ControlFlow::Break(());
                        }
                        out.handled += 1;
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

/// What a failed behaviour call reads as, in the dead letter and the summary.
fn failure_text(e: BehaviourError) -> String {
    match e {
        BehaviourError::Pending(_) => "the behaviour waited for an input it never asked for".to_string(),
        BehaviourError::Failed { message, .. } => message,
    }
}

fn panic_failure_text(panic: &(dyn std::any::Any + Send)) -> String {
    format!("panicked: {}", crate::runtime::panic_text(panic))
}
