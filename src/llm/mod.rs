//! LLM agents: asking an OpenAI-compatible chat-completions server, with every exchange kept
//! with the run and recorded, so that a run replays byte for byte.
//!
//! A completion is an input to a step, like a cache read: the behaviour asks through its
//! [`Context`](crate::Context), the step stops (pending), the runtime gets the answer
//! (concurrently with every other agent's) and runs the step again from the same state. So
//! behaviours stay synchronous and deterministic, and a lockstep transcript does not depend on
//! `max_concurrency`, on the order answers arrive, or on retries.
//!
//! - [`request`]: requests, answers, and the record of an exchange (`llm.jsonl`).
//! - [`client`]: HTTP to the servers: timeouts, retries with backoff, `Retry-After`.
//! - [`error`]: what can go wrong, sorted by what to do.
//!
//! How a run uses them (answers kept with the run, replay, limits) is the runtime's `model`
//! module.

pub mod client;
mod error;
pub mod request;

pub use error::{LlmError, LlmErrorKind};
pub use request::{ChatMessage, Completion, CompletionRequest, Exchange, ModelUse, ResolvedRequest, Usage};
