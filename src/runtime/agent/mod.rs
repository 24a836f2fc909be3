//! One agent: its state, its random stream, and the step that turns a batch of deliveries
//! into one atomic commit.
//!
//! A step: sort what tick `t - 1` published (lockstep), hand each message to the behaviour,
//! then `on_tick`; collect the effects; commit acknowledgements, publishes, cache writes, the
//! new state and any dead letters in one transaction. A behaviour call that fails or panics
//! is retried from the state the agent had at the start of the step (restored from the saved
//! record, so a half-changed state never leaks); a message that keeps failing is dead-lettered.
//!
//! The pieces, in the order a step uses them:
//!
//! - [`plan`]: which messages of a batch an agent handles, in which order ([`BatchPlan`]).
//! - [`record`]: the agent's saved record, and the live state it is restored into.
//! - [`step`]: [`AgentCore`] and its step: sorting a batch out, the retry budget, building
//!   the commit.
//! - [`call`]: one attempt at calling the behaviour, catching panics, numbering its effects.
//! - [`step_cache`]: cache reads during a step, answered now or fetched and retried.
//! - [`step_completions`]: a model's answers during a step, likewise.
//! - [`step_program`]: a step of an agent whose behaviour is a program (the protocol).
//! - [`commit`]: committing a step, and telling after a lost reply whether it went through.
//! - [`actor`]: the actix actor that runs one step at a time.

mod actor;
mod call;
mod commit;
mod plan;
mod record;
mod step;
mod step_cache;
mod step_completions;
mod step_program;

use std::sync::Arc;

pub(crate) use actor::{AgentActor, Step};
pub(crate) use call::RUN_METRICS;
pub(crate) use plan::BatchPlan;
pub(crate) use record::saved_total;
pub(crate) use step::{AgentCore, AgentSetup};

use crate::message::{Batch, EntryId, Message};
use crate::tally::Tally;

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
    /// What a step of this kind may see of the cache's global sorted set: in lockstep what
    /// the ticks before wrote, in free mode everything.
    pub fn bound(self) -> crate::backend::ScoreBound {
        use crate::backend::ScoreBound;
        match self {
            StepKind::Start { lockstep: true } => ScoreBound::below(0.0),
            StepKind::Tick(t) => ScoreBound::below(t as f64),
            StepKind::Start { lockstep: false } | StepKind::Free => ScoreBound::ALL,
        }
    }

    pub fn tick(self) -> Option<u64> {
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

/// What one step, or several added up, did: the messages published (with their stream
/// ids) and the counts.
#[derive(Debug, Default)]
pub(crate) struct StepReport {
    pub published: Vec<(EntryId, Arc<Message>)>,
    pub tally: Tally,
}

impl std::ops::AddAssign for StepReport {
    fn add_assign(&mut self, other: StepReport) {
        self.published.extend(other.published);
        self.tally += other.tally;
    }
}

impl StepReport {
    /// A report of counts only, without the messages (they come from the stream).
    pub fn counts(tally: Tally) -> Self {
        StepReport {
            published: Vec::new(),
            tally,
        }
    }
}
