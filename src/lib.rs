//! agora: an actor runtime for multi-agent simulations on Redis Streams.
//!
//! # Layout
//!
//! Each module holds one idea; read them in this order:
//!
//! - [`scenario`]: the TOML file format, layered with environment variables and `--set`
//!   overrides, and validated into a [`scenario::Scenario`] the rest of the code can trust.
//! - [`message`]: what agents publish, how it is laid out as stream fields, and how a stream
//!   entry is parsed back (or recognised as malformed).
//! - [`backend`]: the stream with one consumer group per agent, and the cache, behind one trait.
//!   [`backend::memory`] is the embedded default; [`backend::redis`] is the real engine.
//! - [`behaviour`]: the [`behaviour::Behaviour`] trait users implement, the registry that maps
//!   names in scenario files to constructors, and the built-in behaviours.
//! - [`random`]: per-agent random streams and portable draws, so transcripts do not change when
//!   a dependency changes its sampling algorithms.
//! - [`runtime`]: agents as actix actors, the shard that feeds them batches, and the coordinator
//!   that runs lockstep ticks or free mode and decides when to stop.
//! - [`report`]: `transcript.jsonl`, `summary.json`, the progress line and the summary table.
//! - [`cli`]: the `agora` command line; `main.rs` only calls [`cli::main`].

// No function over 80 lines (clippy.toml): a longer one holds two ideas.
#![warn(clippy::too_many_lines)]

pub mod backend;
pub mod behaviour;
pub mod cli;
pub mod error;
pub mod message;
pub mod random;
pub mod report;
pub mod runtime;
pub mod scenario;
pub mod tally;

pub use backend::CacheEntry;
pub use behaviour::testing;
pub use behaviour::{Behaviour, BehaviourError, Context, Effects, Outgoing, ParamError, Registry, Setup};
pub use message::Message;
pub use scenario::Scenario;

/// The `rand` crate agora's random streams implement, re-exported so that a behaviour can use
/// its traits (`rand::RngExt`) on [`Context::rng`] without a version mismatch.
pub use rand;
