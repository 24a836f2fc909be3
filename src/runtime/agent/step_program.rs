//! A step of an agent whose behaviour is a program: one request carrying the whole step (the
//! state, the batch, a seed), answered with the new state and the effects, or with the inputs
//! the program needs first.
//!
//! Like every attempt at a step, this one is synchronous and starts from the agent's saved
//! state: it replays the program's replies fetched so far in this step (keyed by the exact
//! request line), answers the reads and completions they asked for from what the step has,
//! and either ends (done, or failed) or says which input to fetch next: the program's reply
//! to a new request, cache reads, completions. The program is asked each distinct request
//! once per step.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use rand::SeedableRng;

use super::StepKind;
use super::call::{Attempt, Inputs, Numbering, Work};
use super::plan::GivenUp;
use super::step::AgentCore;
use super::step_cache::{Fetched, StepCache};
use super::step_completions::{Answered, StepCompletions};
use crate::backend::{Backend, CacheEntry};
use crate::behaviour::{BehaviourError, CacheReads, Completions, Effects, Outgoing};
use crate::llm::CompletionRequest;
use crate::message::{EntryId, Message};
use crate::program::ProgramBehaviour;
use crate::program::protocol::{
    self, CompletionAnswer, Read, ReadAnswer, StepReply, StepRequest, ToProgram, WireEntry, WireMessage,
};
use crate::random::{self, ChaCha8Rng};

/// The most rounds of inputs one step may ask for: a program that keeps asking is failing.
const MAX_ROUNDS: usize = 64;

/// The program's replies fetched for this step, by request line; a failure is its words.
#[derive(Debug, Default)]
pub(crate) struct Replies(Vec<(String, Result<StepReply, String>)>);

impl Replies {
    fn get(&self, line: &str) -> Option<&Result<StepReply, String>> {
        self.0.iter().find(|(l, _)| l == line).map(|(_, r)| r)
    }

    pub fn insert(&mut self, line: String, reply: Result<StepReply, String>) {
        self.0.push((line, reply));
    }

    /// After a failed attempt (a program that crashed, hung, answered garbage, an error, or a
    /// reply agora could not take): forgets every reply, so that the retry asks the program
    /// again from the start, as a failing Rust behaviour is called again. A failure may be
    /// transient, and a restarted program may answer.
    pub fn forget(&mut self) {
        self.0.clear();
    }
}

/// A program's request for the runtime to send.
#[derive(Debug, Clone)]
pub(crate) struct ProgramCall {
    pub behaviour: String,
    pub line: String,
}

/// What one attempt has to answer the program's needs with.
pub(super) struct StepInputs<'a> {
    pub fetched: &'a Fetched,
    pub answered: &'a Answered,
    pub replies: &'a Replies,
}

impl<B: Backend> AgentCore<B> {
    /// The request of a step of `program` with `messages`, before any input is answered. It
    /// draws the step's seed from the agent's random stream.
    fn step_request(
        &mut self,
        program: &ProgramBehaviour,
        kind: StepKind,
        messages: Vec<WireMessage>,
    ) -> StepRequest {
        let names = |list: &[Arc<str>]| list.iter().map(|a| a.to_string()).collect();
        StepRequest {
            agent: self.spec.name.to_string(),
            table: program.table.clone(),
            index: self.spec.table_index,
            peer_index: self.spec.peer_index,
            tick: kind.tick(),
            kind: match kind {
                StepKind::Start { .. } => protocol::StepKind::Start,
                StepKind::Tick(_) => protocol::StepKind::Tick,
                StepKind::Free => protocol::StepKind::Free,
            },
            state: self
                .live
                .state
                .as_ref()
                .and_then(|s| s.downcast_ref::<serde_json::Value>())
                .cloned()
                .unwrap_or(serde_json::Value::Null),
            messages,
            // 53 bits: every JSON reader holds it exactly.
            seed: rand::Rng::next_u64(&mut self.live.rng) >> 11,
            reads: Vec::new(),
            completions: Vec::new(),
            audience: self.neighbours.as_ref().map(|n| names(&n.audience)),
            following: self.neighbours.as_ref().map(|n| names(&n.following)),
        }
    }

    /// One attempt at a step of `program`, over the messages of `handle` not in `skip`.
    pub(super) fn attempt_program(
        &mut self,
        program: &ProgramBehaviour,
        kind: StepKind,
        handle: &[(EntryId, &Message)],
        skip: &GivenUp,
        inputs: &StepInputs<'_>,
    ) -> Attempt {
        let positions = skip.kept(handle.len());
        self.attempt_batch(program, kind, handle, &positions, inputs)
    }

    /// [`attempt_program`](Self::attempt_program) over the messages at `positions`.
    fn attempt_batch(
        &mut self,
        program: &ProgramBehaviour,
        kind: StepKind,
        handle: &[(EntryId, &Message)],
        positions: &[usize],
        inputs: &StepInputs<'_>,
    ) -> Attempt {
        let messages = positions.iter().map(|&i| wire(handle[i].1)).collect();
        let mut request = self.step_request(program, kind, messages);
        let failed_at = |at: Option<usize>| at.and_then(|k| positions.get(k).copied());
        // Failed on no message it named (an error without `at` or `hook`, a crash, a reply or
        // a need agora cannot take): the batch is what failed, or, with no messages, the step.
        let unblamed = |attempt: Attempt| match attempt {
            Attempt::Failed { at: None, error } if !positions.is_empty() => Attempt::BatchFailed(error),
            attempt => attempt,
        };
        for _ in 0..MAX_ROUNDS {
            let line = match serde_json::to_string(&ToProgram::Step(request.clone())) {
                Ok(line) => line,
                Err(e) => return unblamed(failure(None, format!("internal error: {e}"))),
            };
            let reply = match inputs.replies.get(&line) {
                None => {
                    return Attempt::Pending(Inputs {
                        program: Some(ProgramCall {
                            behaviour: program.name.clone(),
                            line,
                        }),
                        ..Inputs::default()
                    });
                }
                Some(Err(words)) => return unblamed(failure(None, words.clone())),
                Some(Ok(reply)) => reply.clone(),
            };
            match reply {
                StepReply::Error { message, at, hook } => {
                    return match failed_at(at) {
                        Some(i) => failure(Some(i), message),
                        // In `init`, `on_start` or `on_tick`: the step's own failure, which
                        // dead-lettering the messages would not mend (as for a Rust behaviour).
                        None if hook.as_deref().is_some_and(protocol::is_step_hook) => failure(None, message),
                        None => unblamed(failure(None, message)),
                    };
                }
                StepReply::Done {
                    state,
                    publish,
                    remember,
                    metrics,
                    levels,
                    values,
                } => {
                    let reports = Reports {
                        metrics: &metrics,
                        levels: &levels,
                        values: &values,
                    };
                    return unblamed(self.done(
                        kind,
                        positions.len() as u64,
                        state,
                        publish,
                        remember,
                        reports,
                    ));
                }
                StepReply::Need { reads, completions } => {
                    if let Err(attempt) = self.answer_needs(kind, &mut request, &reads, &completions, inputs)
                    {
                        return unblamed(attempt);
                    }
                }
            }
        }
        failure(
            positions.first().copied(),
            format!("the program asked for inputs {MAX_ROUNDS} times in one step"),
        )
    }

    /// Adds the answers to `reads` and `completions` to `request`, or says what to fetch.
    fn answer_needs(
        &self,
        kind: StepKind,
        request: &mut StepRequest,
        reads: &[Read],
        completions: &[CompletionRequest],
        inputs: &StepInputs<'_>,
    ) -> Result<(), Attempt> {
        let misses = RefCell::new(Vec::new());
        let wanted = RefCell::new(Vec::new());
        let own = RefCell::new(Vec::new());
        let mut cache = StepCache {
            backend: &self.backend,
            fetched: inputs.fetched,
            agent: &self.spec.name,
            bound: kind.bound(),
            own: &own,
            misses: &misses,
        };
        let mut new = 0;
        for (k, read) in reads.iter().enumerate() {
            if request.reads.iter().any(|a| &a.read == read) {
                continue;
            }
            // A sample's ranks come from the step's seed and the read's place: the same step
            // draws the same sample.
            let mut rng = ChaCha8Rng::seed_from_u64(request.seed ^ ((k as u64 + 1) << 53));
            if let Ok(entries) = answer_read(&mut cache, read, &mut rng) {
                request.reads.push(ReadAnswer {
                    read: read.clone(),
                    entries: entries.into_iter().map(wire_entry).collect(),
                });
                new += 1;
            }
        }
        let asked = Cell::new(0);
        let mut model = StepCompletions {
            answered: inputs.answered,
            asked: &asked,
            wanted: &wanted,
        };
        for (k, completion) in completions.iter().enumerate() {
            let mut completion = completion.clone();
            // Seeded as Context::complete seeds: from the step, so a replay asks the same.
            completion.seed = completion
                .seed
                .or(Some((request.seed.wrapping_add(k as u64 + 1)) % (1 << 31)));
            if request.completions.iter().any(|a| a.request == completion) {
                continue;
            }
            if self.model.is_none() {
                return Err(failure(
                    None,
                    "the program asked a language model, but the scenario has no [llm] section".into(),
                ));
            }
            if let Ok(answer) = model.complete(&completion) {
                request.completions.push(CompletionAnswer {
                    request: completion,
                    text: answer.text,
                    usage: answer.usage,
                });
                new += 1;
            }
        }
        let (misses, wanted) = (misses.into_inner(), wanted.into_inner());
        if !misses.is_empty() || !wanted.is_empty() {
            return Err(Attempt::Pending(Inputs {
                cache: misses,
                completions: wanted,
                program: None,
            }));
        }
        if new == 0 {
            let what = if reads.is_empty() && completions.is_empty() {
                "the program answered `need` with nothing in it"
            } else {
                "the program asked again for inputs it was given"
            };
            return Err(failure(
                None,
                format!(
                    "{what} (docs/protocol.md, \"Inputs\": a need asks only for what the request does not hold)"
                ),
            ));
        }
        Ok(())
    }

    /// The step done: the program's state and effects, numbered as the agent's own.
    fn done(
        &mut self,
        kind: StepKind,
        handled: u64,
        state: serde_json::Value,
        publish: Vec<protocol::WireOutgoing>,
        remember: Vec<serde_json::Value>,
        reports: Reports<'_>,
    ) -> Attempt {
        // A reply that cannot be taken fails as an `error` without `at` does.
        let mut effects = Effects::new();
        for message in publish {
            let mut outgoing = Outgoing::broadcast(message.content);
            outgoing.to = message.to.map(Arc::from);
            outgoing.data = message.data;
            effects = effects.publish(outgoing);
        }
        for value in remember {
            effects = effects.remember(value);
        }
        for (name, delta) in reports.metrics {
            let Some(delta) = delta.as_i64() else {
                return failure(
                    None,
                    format!("the program's metric {name:?} is not a whole number: {delta}"),
                );
            };
            effects = effects.count(name.clone(), delta);
        }
        for (field, numbers) in [("levels", reports.levels), ("values", reports.values)] {
            for (name, value) in numbers {
                let Some(value) = value.as_f64() else {
                    return failure(
                        None,
                        format!("the program's {field} {name:?} is not a number: {value}"),
                    );
                };
                effects = if field == "levels" {
                    effects.set(name.clone(), value)
                } else {
                    effects.report(name.clone(), value)
                };
            }
        }
        self.live.state = Some(Box::new(state));
        let mut work = Work::default();
        let mut numbering = Numbering {
            agent: &self.spec.name,
            tick: kind.tick(),
            seq: &mut self.live.seq,
            cache_n: &mut self.live.cache_n,
        };
        if let Err(error) = numbering.apply(effects, &mut work.out, &work.remember) {
            return failure(None, format!("the program {error}"));
        }
        work.out.handled = handled;
        Attempt::Done(work)
    }
}

/// The numbers a `done` reply reports.
struct Reports<'a> {
    metrics: &'a serde_json::Map<String, serde_json::Value>,
    levels: &'a serde_json::Map<String, serde_json::Value>,
    values: &'a serde_json::Map<String, serde_json::Value>,
}

fn failure(at: Option<usize>, error: String) -> Attempt {
    Attempt::Failed { at, error }
}

fn answer_read(
    cache: &mut impl CacheReads,
    read: &Read,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<CacheEntry>, BehaviourError> {
    match *read {
        Read::OwnLast(n) => cache.own_last(n),
        Read::Last(n) => cache.last(n),
        Read::Sample(n) => {
            let count = cache.count()?;
            let ranks = random::distinct(rng, count, n);
            cache.at_ranks(&ranks)
        }
    }
}

fn wire(message: &Message) -> WireMessage {
    WireMessage {
        sender_id: message.sender_id.to_string(),
        seq: message.seq,
        tick: message.tick,
        to: message.to.as_ref().map(|t| t.to_string()),
        content: message.content.clone(),
        data: message.data.clone(),
    }
}

fn wire_entry(entry: CacheEntry) -> WireEntry {
    WireEntry {
        agent: entry.agent,
        tick: entry.tick,
        value: entry.value,
    }
}
