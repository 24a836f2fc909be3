//! Running a scenario: agents as actix actors, a shard that feeds them, a coordinator that
//! drives ticks (lockstep) or watches the flow (free mode) and decides when to stop.
//!
//! [`run`] is the whole of `agora run`: it starts an actix system, connects the backend,
//! prepares the keys and the output directory, runs, and writes `transcript.jsonl` and
//! `summary.json`, also when the run is interrupted or fails part-way.

mod agent;
mod control;
mod coordinator;
pub(crate) mod liveness;
mod reconnect;
mod shard;
mod worker;
mod workers;

pub use control::parse_shard;
pub use worker::{WorkerOptions, run_worker};

use std::path::PathBuf;

pub use coordinator::StopReason;

use crate::backend::memory::MemoryBackend;
use crate::backend::redis::RedisBackend;
use crate::backend::{Backend, BackendError};
use crate::report::Summary;
use crate::scenario::{BackendKind, Scenario};

/// How to run, beyond what the scenario says.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// No progress line.
    pub quiet: bool,
    /// Continue an interrupted run from what the backend holds.
    pub resume: bool,
    /// Names this process's consumers (`{agent}@{instance}`); default: host and process id.
    pub instance: Option<String>,
    /// Host the agents in worker processes: `Some(n)` starts `n` local ones, `Some(0)` waits
    /// for workers started by hand; `None` hosts them in this process.
    pub workers: Option<u32>,
    /// Lockstep: run every tick even when one publishes nothing. Not a scenario setting: the
    /// benchmark harness uses it to time empty ticks.
    #[doc(hidden)]
    pub run_all_ticks: bool,
}

/// What a run produced. `error` is set when the run stopped on a failure; the files were
/// written all the same.
#[derive(Debug)]
pub struct RunOutcome {
    pub summary: Summary,
    pub run_dir: PathBuf,
    pub transcript: PathBuf,
    pub summary_path: PathBuf,
    /// Written only when some messages were dead-lettered.
    pub dead_letters_path: Option<PathBuf>,
    pub error: Option<RunError>,
}

/// A failure while running.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunError {
    #[error("agent {agent}: the behaviour {message}")]
    Behaviour { agent: String, message: String },
    #[error("agent {agent}: {message}")]
    State { agent: String, message: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("cannot write {path}: {message}")]
    Output { path: PathBuf, message: String },
    #[error("{0}")]
    Usage(String),
    /// A worker process failed to start, failed, or died.
    #[error("{0}")]
    Worker(String),
    /// Another run took the stream's lease: this one stopped.
    #[error("{0}; this run stopped")]
    Displaced(String),
    /// The run cannot start as asked (bad input given the backend's state): exit code 2.
    #[error("{message}")]
    Refused { message: String, hint: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl RunError {
    pub fn backend_unavailable(&self) -> bool {
        matches!(self, RunError::Backend(e) if e.is_unavailable())
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            RunError::Backend(e) => e.hint(),
            RunError::Refused { hint, .. } => Some(hint.clone()),
            RunError::Displaced(_) => Some(
                "two runs of one stream cannot share its keys: give each its own backend.stream".to_string(),
            ),
            RunError::Worker(_) => Some(
                "the run's keys are kept: continue it with --resume (and --workers) once the workers can run"
                    .to_string(),
            ),
            RunError::Behaviour { .. } => Some(
                "fix the behaviour, or raise scenario.max_retries if its failures are transient".to_string(),
            ),
            _ => None,
        }
    }

    fn output(path: impl Into<PathBuf>, e: std::io::Error) -> Self {
        RunError::Output {
            path: path.into(),
            message: e.to_string(),
        }
    }
}

/// Runs `scenario` on the backend it names, in a new actix system.
pub fn run(scenario: &Scenario, options: &RunOptions) -> Result<RunOutcome, RunError> {
    let system = actix_rt::System::new();
    system.block_on(async {
        match scenario.backend.kind {
            BackendKind::Memory => {
                if options.resume {
                    return Err(RunError::Usage(
                        "--resume needs the redis backend: the memory backend keeps nothing after the process ends"
                            .to_string(),
                    ));
                }
                run_on(MemoryBackend::new(scenario.backend.keys.clone()), scenario, options).await
            }
            BackendKind::Redis => {
                let b = &scenario.backend;
                let backend = RedisBackend::connect(&b.url, b.keys.clone(), b.reconnect_timeout).await?;
                run_on(backend, scenario, options).await
            }
        }
    })
}

/// Runs `scenario` on `backend`, from within an actix system.
pub async fn run_on<B: Backend>(
    backend: B,
    scenario: &Scenario,
    options: &RunOptions,
) -> Result<RunOutcome, RunError> {
    coordinator::Coordinator::new(backend, scenario, options)
        .run()
        .await
}

/// The text of a caught panic.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// This process's name among consumers and workers: host and process id.
pub(crate) fn instance_name() -> String {
    format!("{}-{}", liveness::host_name(), std::process::id())
}
