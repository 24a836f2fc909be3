//! A run spread over processes: worker processes host shares of the agents, a coordinator
//! drives them, and they talk only through the backend's [`Transport`](crate::backend::Transport).
//!
//! - [`control`]: the commands, reports, registrations and shard numbers, encoded in one place.
//! - [`launch`]: starting workers or waiting for them, and noticing one that dies.
//! - [`remote`]: the workers as the coordinator's [`Hosting`](super::hosting::Hosting).
//! - [`worker`]: `agora worker`, the process that hosts a share.

pub(crate) mod control;
mod launch;
mod remote;
mod worker;

pub use control::ShardId;
pub(crate) use launch::{Launch, Workers};
pub use worker::{WorkerEnd, WorkerOptions, run_worker};
