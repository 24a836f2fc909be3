//! Behaviours: what an agent does with the messages it reads.
//!
//! A behaviour is written once and shared by every agent of an `[[agents]]` table; each
//! agent keeps its own [`Behaviour::State`]. The runtime owns that state, hands it to the
//! behaviour with each message, and checkpoints it (serialised, with the agent's random
//! stream position) in the same transaction as the agent's effects. Keeping behaviour apart
//! from state is what makes runs reproducible and resumable: a behaviour must decide
//! everything from its state, the message, the [`Context`] and nothing else (no clocks,
//! no global random generators, no I/O).
//!
//! # Writing one
//!
//! ```
//! use agora::{Behaviour, BehaviourError, Context, Effects, Message, Outgoing, ParamError, Registry, Setup};
//! use serde::{Deserialize, Serialize};
//!
//! /// Counts what it hears and says so every tenth message.
//! struct Counter { every: u64 }
//!
//! #[derive(Default, Serialize, Deserialize)]
//! #[serde(default)]
//! struct CounterParams { every: u64 }
//!
//! impl Behaviour for Counter {
//!     type State = u64;
//!
//!     fn init(&self, _ctx: &mut Context<'_>) -> Result<u64, BehaviourError> {
//!         Ok(0)
//!     }
//!
//!     fn on_message(&self, heard: &mut u64, _msg: &Message, _ctx: &mut Context<'_>)
//!         -> Result<Effects, BehaviourError>
//!     {
//!         *heard += 1;
//!         if *heard % self.every == 0 {
//!             return Ok(Effects::new().publish(Outgoing::broadcast(format!("heard {heard}"))));
//!         }
//!         Ok(Effects::none())
//!     }
//! }
//!
//! let mut registry = Registry::builtin();
//! registry.register("counter", "counts messages", &[("every", "how often to speak")],
//!     |p: CounterParams, _setup: &Setup<'_>| {
//!         if p.every == 0 { return Err(ParamError::at("every", "must be at least 1")); }
//!         Ok(Counter { every: p.every })
//!     });
//! assert!(registry.contains("counter"));
//! ```

pub mod builtin;
mod context;
mod effects;
mod erased;
mod error;
pub mod feed;
mod messages;
mod params;
mod registry;
pub mod testing;
pub mod turns;

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

pub use context::{CacheReads, Completions, Context, EmptyCache, Neighbours, NoModel};
pub(crate) use effects::{CacheValue, Report};
pub use effects::{Effects, Outgoing};
pub use erased::{DynBehaviour, StateBox};
pub use error::{BehaviourError, Pending};
pub(crate) use messages::PayloadTable;
pub use messages::{Messages, Payloads};
pub use params::ParamError;
pub use registry::{BuildError, ParamDoc, Registry, RegistryEntry};

use crate::message::Message;
use crate::scenario::{AgentSpec, Mode};

/// What an agent does. Implement it in your own crate, register it in a [`Registry`], and
/// name it in a scenario's `[[agents]]` table.
///
/// The runtime calls, for each agent: [`init`](Behaviour::init) and
/// [`on_start`](Behaviour::on_start) once at the start (tick 0), then
/// [`on_message`](Behaviour::on_message) for every message others publish, and in lockstep
/// mode [`on_tick`](Behaviour::on_tick) at the end of each tick, after that tick's messages.
///
/// In lockstep mode, tick `t` hands the agent exactly what was published in tick `t - 1`,
/// sorted by sender and the sender's counter. A method that returns an error (or panics) is
/// retried from the same state and random position, up to `scenario.max_retries`; a message
/// that keeps failing goes to the dead-letter stream and the run goes on.
pub trait Behaviour: Send + Sync + 'static {
    /// One agent's state. The runtime serialises it after every step (as JSON) and restores
    /// it on `--resume`, so everything the agent knows must be in here.
    type State: Serialize + DeserializeOwned + Send + 'static;

    /// The initial state of an agent, drawn (if it needs randomness) from `ctx.rng()`.
    fn init(&self, ctx: &mut Context<'_>) -> Result<Self::State, BehaviourError>;

    /// What the agent does at the start, before it has heard anything.
    fn on_start(&self, _state: &mut Self::State, _ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        Ok(Effects::none())
    }

    /// What the agent does with one message another agent published.
    fn on_message(
        &self,
        state: &mut Self::State,
        msg: &Message,
        ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError>;

    /// Whether the runtime hands a step's messages to [`on_messages`](Behaviour::on_messages)
    /// all at once instead of to `on_message` one by one. A model that scans a tick's
    /// messages in one loop (opinion reads a thousand opinions a tick) saves the runtime's
    /// cost per call, and reads payloads laid out side by side ([`Messages::payloads`]).
    ///
    /// A batch's effects are applied when `on_messages` returns: its cache reads
    /// (`ctx.own_last`, `ctx.last`, `ctx.sample`) do not see what the same batch remembers,
    /// where `on_message` sees what the messages before it in the step remembered.
    ///
    /// The price: a batch fails as a whole. An error (or panic) in `on_messages` is retried
    /// from the same state like any other, and after `scenario.max_retries` retries every
    /// message of the batch is dead-lettered, where `on_message` would lose only the one it
    /// failed on.
    const HANDLES_BATCHES: bool = false;

    /// What the agent does with all of a step's messages, in the order `on_message` would
    /// get them; called instead of it when [`HANDLES_BATCHES`](Behaviour::HANDLES_BATCHES)
    /// is true. The default hands each message to `on_message` and joins their effects.
    fn on_messages(
        &self,
        state: &mut Self::State,
        messages: &Messages<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        let mut effects = Effects::none();
        for msg in messages.iter() {
            effects.extend(self.on_message(state, msg, ctx)?);
        }
        Ok(effects)
    }

    /// What the agent does at the end of each lockstep tick (never called in free mode).
    fn on_tick(&self, _state: &mut Self::State, _ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        Ok(Effects::none())
    }

    /// Whether `on_tick` may publish in a tick when nothing was published in the one before
    /// (`llm` with `activity`, a behaviour that speaks every tenth tick). A lockstep run
    /// stops as quiescent after a tick that published nothing, unless an agent says so here.
    fn acts_unprompted(&self) -> bool {
        false
    }

    /// Model-level numbers worked out from the values this behaviour's agents reported in a
    /// tick ([`Effects::report`]), like Mesa's model reporters: `values` holds each reported
    /// name's values, one per agent that reported it, in declaration order. What it returns
    /// is written to `metrics.csv` (and `summary.json`'s `levels`) as if set that tick.
    /// Opinion counts its clusters this way. `messages`, `deliveries` and `seconds` are the
    /// run's own: a reporter of that name is left out, with a warning.
    fn model_reporters(&self, _values: &BTreeMap<String, Vec<f64>>) -> Vec<(String, f64)> {
        Vec::new()
    }
}

/// What a behaviour's constructor knows about the scenario.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    pub seed: u64,
    pub mode: Mode,
    /// The id of the `[[agents]]` table being built.
    pub table_id: &'a str,
    /// The agents of this table.
    pub agents: &'a [AgentSpec],
    /// The agents that run the same behaviour (this table's and others'), in declaration
    /// order: the population a behaviour such as gossip or relay works over.
    pub peers: &'a [AgentSpec],
    /// Every agent of the scenario, in declaration order.
    pub all: &'a [AgentSpec],
    /// Every table's `params`, by table index ([`AgentSpec::table`]): what a behaviour needs
    /// to know of its peers in other tables (`llm` reads their stances).
    pub table_params: &'a [toml::Table],
}
