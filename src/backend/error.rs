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
    /// The backend refuses a command the run needs: the user lacks the right (exit code 3).
    /// Waiting does not help, so it is not retried.
    Denied,
    /// What was asked about does not exist (`agora inspect` of a stream that is not there).
    NotFound,
}

impl BackendError {
    pub fn unavailable(message: impl Into<String>, hint: impl Into<String>) -> Self {
        BackendError {
            kind: BackendErrorKind::Unavailable,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    /// A right the user lacks; the hint says how to grant it.
    pub fn denied(message: impl Into<String>) -> Self {
        BackendError {
            kind: BackendErrorKind::Denied,
            message: message.into(),
            hint: Some(
                "grant the user the commands listed in agora's README (\"Running on Redis\"), for example with ACL SETUSER"
                    .to_string(),
            ),
        }
    }

    pub fn not_found(message: impl Into<String>, hint: impl Into<String>) -> Self {
        BackendError {
            kind: BackendErrorKind::NotFound,
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

    /// Whether the backend cannot be reached now (worth waiting for).
    pub fn is_unavailable(&self) -> bool {
        self.kind == BackendErrorKind::Unavailable
    }

    /// Whether the backend cannot be used as it is: unreachable, or refusing the user what a
    /// run needs (exit code 3).
    pub fn cannot_be_used(&self) -> bool {
        matches!(
            self.kind,
            BackendErrorKind::Unavailable | BackendErrorKind::Denied
        )
    }

    pub fn hint(&self) -> Option<String> {
        self.hint.clone()
    }

    /// For `agora run`, which can do without Redis: a backend that cannot be reached adds the
    /// embedded one to what to do. (`inspect`, `cleanup` and `worker` need Redis itself.)
    pub fn or_in_memory(mut self) -> Self {
        if self.is_unavailable() {
            let alternative = "run on the embedded backend with --backend memory";
            self.hint = Some(match self.hint.take() {
                Some(hint) => format!("{hint}; or {alternative}"),
                None => alternative.to_string(),
            });
        }
        self
    }
}
