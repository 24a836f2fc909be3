//! agora: an actor runtime for multi-agent simulations on Redis Streams.
//!
//! # Layout
//!
//! Each module holds one idea; read them in this order:
//!
//! - [`scenario`]: the TOML file format, environment variables and `--set` overrides laid
//!   over it, and validation into a [`scenario::Scenario`] the rest of the code can trust.
//! - [`message`]: what agents publish, how it is laid out as stream fields, and how a stream
//!   entry is parsed back (or recognised as malformed).
//! - [`backend`]: the stream with one consumer group per agent, the cache and the run's store,
//!   one trait each ([`backend::Stream`], [`backend::Cache`], [`backend::RunStore`]);
//!   [`backend::open`] hands a task whichever backend a scenario names.
//!   [`backend::memory`] is the embedded default; [`backend::redis`] is the real engine.
//! - [`behaviour`]: the [`behaviour::Behaviour`] trait users implement, the registry that maps
//!   names in scenario files to constructors, the built-in behaviours, and [`testing`], which
//!   runs a behaviour by hand in a unit test.
//! - [`llm`]: chat-completions requests, the HTTP client for OpenAI-compatible servers, and
//!   the record of each exchange (`llm.jsonl`).
//! - [`program`]: behaviours that are programs in any language, and the protocol agora speaks
//!   with them.
//! - [`network`]: who hears whom: the scenario's social graph, its generators, and the
//!   recipients of a message.
//! - [`random`]: per-agent random streams and portable draws, so transcripts do not change when
//!   a dependency changes its sampling algorithms.
//! - [`tally`]: what steps count, added up from one step to the whole run.
//! - [`runtime`]: agents as actix actors, the shard that feeds them, where they live (this
//!   process or worker processes), and the coordinator that runs lockstep ticks or free mode,
//!   decides when to stop and writes the outputs.
//! - [`report`]: `transcript.jsonl`, `summary.json`, the progress line and the summary table.
//! - [`cli`]: the `agora` command line; `main.rs` only calls [`cli::main`].

// No function over 80 lines (clippy.toml): a longer one holds two ideas.
#![warn(clippy::too_many_lines)]

pub mod backend;
pub mod behaviour;
pub mod cli;
pub mod error;
mod json;
pub mod llm;
pub mod message;
pub mod network;
pub mod plot;
pub mod program;
pub mod random;
pub mod report;
pub mod runtime;
pub mod scenario;
pub mod sweep;
pub mod tally;

pub use backend::CacheEntry;
pub use behaviour::testing;
pub use behaviour::{
    Behaviour, BehaviourError, Context, Effects, Messages, Outgoing, ParamError, Registry, Setup,
};
pub use message::Message;
pub use scenario::Scenario;

/// The `rand` crate agora's random streams implement, re-exported so that a behaviour can use
/// its traits (`rand::RngExt`) on [`Context::rng`] without a version mismatch.
pub use rand;
