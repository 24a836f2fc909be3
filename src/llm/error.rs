//! What can go wrong with a model server, sorted by what the user can do about it.

/// What kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmErrorKind {
    /// Nothing answers, or keeps failing (exit code 3 before a run).
    Unavailable,
    /// The key is refused (401, 403).
    Refused,
    /// The server has no such model (404, or not in its list).
    NoModel,
    /// The server refuses the request as it is (a context too long, a bad parameter).
    Request,
    /// The server answered something that is not a chat completion.
    Unreadable,
    /// `--replay`: the recording has no answer to a request.
    NotRecorded,
    /// The scenario cannot ask (no `[llm]`, no model).
    Config,
}

/// A model server's failure: one line, never the key, and a hint.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct LlmError {
    pub kind: LlmErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

impl LlmError {
    pub fn new(kind: LlmErrorKind, message: impl Into<String>) -> Self {
        LlmError {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Whether the server cannot be used as configured (exit code 3): nothing listening, the
    /// key refused, no such model.
    pub fn cannot_be_used(&self) -> bool {
        matches!(
            self.kind,
            LlmErrorKind::Unavailable | LlmErrorKind::Refused | LlmErrorKind::NoModel
        )
    }
}
