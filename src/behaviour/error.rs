//! Why a behaviour could not handle a message.

use std::sync::Arc;

/// A behaviour's failure, or an input the step is waiting for.
///
/// Return [`BehaviourError::new`] (or `?` on a `String`, `&str`, `serde_json::Error` or
/// `std::io::Error`) when the agent cannot handle a message: the runtime retries the step
/// from the same state and dead-letters the message if it keeps failing. A
/// [`Pending`](BehaviourError::Pending) error only comes from the [`Context`](super::Context)
/// (a cache read the runtime is fetching): pass it on with `?`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BehaviourError {
    /// The behaviour could not handle the message.
    #[error("{message}")]
    Failed {
        message: String,
        /// What caused it, when another error did.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// An input the step needs is being fetched: the runtime runs the step again from the
    /// same state once it has it, so the behaviour never sees the difference.
    #[error("an input of the step is being fetched")]
    Pending(Pending),
}

/// The mark of an input being fetched. Only the runtime makes one: a behaviour that invented
/// one would never be run again with the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending(());

impl Pending {
    pub(crate) fn new() -> Self {
        Pending(())
    }
}

impl BehaviourError {
    /// A failure described by `message`.
    pub fn new(message: impl Into<String>) -> Self {
        BehaviourError::Failed {
            message: message.into(),
            source: None,
        }
    }

    /// A failure described by `message`, caused by `source` (kept for `Error::source`).
    pub fn caused_by(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        BehaviourError::Failed {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// An input being fetched (the runtime's own).
    pub(crate) fn pending() -> Self {
        BehaviourError::Pending(Pending::new())
    }

    /// Whether the step is waiting for an input, not failing.
    pub fn is_pending(&self) -> bool {
        matches!(self, BehaviourError::Pending(_))
    }
}

impl From<String> for BehaviourError {
    fn from(message: String) -> Self {
        BehaviourError::new(message)
    }
}

impl From<&str> for BehaviourError {
    fn from(message: &str) -> Self {
        BehaviourError::new(message)
    }
}

impl From<serde_json::Error> for BehaviourError {
    fn from(e: serde_json::Error) -> Self {
        BehaviourError::caused_by(e.to_string(), e)
    }
}

impl From<std::io::Error> for BehaviourError {
    fn from(e: std::io::Error) -> Self {
        BehaviourError::caused_by(e.to_string(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_their_cause() {
        let parse = serde_json::from_str::<u8>("x").unwrap_err();
        let e = BehaviourError::from(parse);
        assert!(std::error::Error::source(&e).is_some());
        assert!(!e.is_pending());
        assert_eq!(BehaviourError::new("no").to_string(), "no");
        assert!(BehaviourError::pending().is_pending());
    }
}
