//! What can stop a run, and what the user can do about it.

use std::path::PathBuf;

use crate::backend::BackendError;

/// What to do when a run to be resumed finds entries it needs gone from its stream.
pub(crate) const ENTRIES_GONE: &str = "start the run afresh (without --resume); keep other programs off its stream, and Redis's data across restarts (appendonly yes, as docker-compose.yml does): a Redis, or a cluster node, restarted without it comes back empty";

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
    /// Entries the run's agents had to read are gone from the stream (trimmed or deleted by
    /// another program): the run cannot be complete, so it stops.
    #[error("{0}")]
    Lost(String),
    /// A worker process failed to start, failed, or died.
    #[error("{0}")]
    Worker(String),
    /// Another run took the stream's lease: this one stopped.
    #[error("{0}; this run stopped")]
    Displaced(String),
    /// The run cannot start as asked (bad input given the backend's state): exit code 2.
    #[error("{message}")]
    Refused { message: String, hint: String },
    /// A model server that cannot be used, found before any agent ran.
    #[error("{0}")]
    ModelServer(crate::llm::LlmError),
    /// An agent's completion could not be had: the server refused or kept failing, or the
    /// recording (`--replay`) lacks it.
    #[error("agent {agent}{}: {error}", tick.map_or_else(String::new, |t| format!(" at tick {t}")))]
    Completion {
        agent: String,
        tick: Option<u64>,
        error: crate::llm::LlmError,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl RunError {
    pub fn backend_unavailable(&self) -> bool {
        matches!(self, RunError::Backend(e) if e.is_unavailable())
    }

    /// Whether a model server cannot be used as configured (exit code 3).
    pub fn model_unusable(&self) -> bool {
        match self {
            RunError::ModelServer(e) | RunError::Completion { error: e, .. } => e.cannot_be_used(),
            _ => false,
        }
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
            RunError::Lost(_) => Some(
                "something deleted or trimmed the run's stream while it ran (a cleanup script, XTRIM, XDEL, DEL?): keep other programs off it, and start the run afresh"
                    .to_string(),
            ),
            RunError::ModelServer(e) | RunError::Completion { error: e, .. } => e.hint.clone(),
            RunError::Behaviour { .. } => Some(
                "fix the behaviour: a failure that comes back on every retry is in its code or its input (raise scenario.max_retries only for failures that pass)".to_string(),
            ),
            _ => None,
        }
    }

    pub(crate) fn output(path: impl Into<PathBuf>, e: std::io::Error) -> Self {
        RunError::Output {
            path: path.into(),
            message: e.to_string(),
        }
    }
}
