//! What can go wrong with a backend, sorted by what the caller can do about it.

/// What went wrong with a backend.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub kind: BackendErrorKind,
    /// One line, naming the address where there is one (never a password).
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// The backend cannot be used at all: unreachable, authentication refused, not Redis,
    /// or lost for longer than the run is willing to wait (exit code 3).
    Unavailable,
    /// A command failed or returned something unexpected.
    Command,
    /// The keys hold something agora did not write, or that contradicts the run.
    Conflict,
}

impl BackendError {
    pub fn unavailable(message: impl Into<String>, hint: impl Into<String>) -> Self {
        BackendError {
            kind: BackendErrorKind::Unavailable,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn command(message: impl Into<String>) -> Self {
        BackendError {
            kind: BackendErrorKind::Command,
            message: message.into(),
            hint: None,
        }
    }

    pub fn conflict(message: impl Into<String>, hint: impl Into<String>) -> Self {
        BackendError {
            kind: BackendErrorKind::Conflict,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn is_unavailable(&self) -> bool {
        self.kind == BackendErrorKind::Unavailable
    }

    pub fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}
