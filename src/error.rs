//! The error every command can end with, and the exit code it maps to.
//!
//! Each layer has its own error type ([`ScenarioError`], [`BackendError`], [`RunError`]);
//! this enum only gathers them so that the CLI can print one `error:` line, an optional
//! `hint:` line, and exit with the code CONTRACT.md gives.

use std::path::PathBuf;

use crate::backend::{BackendError, BackendErrorKind};
use crate::runtime::RunError;
use crate::scenario::ScenarioError;

/// Exit codes of the `agora` command (CONTRACT.md, "Exit codes and errors").
pub mod exit {
    pub const SUCCESS: u8 = 0;
    pub const RUN_FAILED: u8 = 1;
    pub const BAD_INPUT: u8 = 2;
    pub const BACKEND_UNAVAILABLE: u8 = 3;
    /// Stopped by Ctrl-C: the outputs are written, as shells expect of an interrupted command.
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// Command-line arguments that clap accepted but that make no sense together.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Run(#[from] RunError),
    /// Work that failed after its input was accepted (a plot that could not be drawn, a
    /// sweep with failed runs), with what to do about it.
    #[error("{message}")]
    Failed { message: String, hint: Option<String> },
    #[error("cannot write {}: {source}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Scenario(_)
            | Error::Usage(_)
            | Error::Run(RunError::Usage(_) | RunError::Refused { .. }) => exit::BAD_INPUT,
            Error::Backend(e) | Error::Run(RunError::Backend(e)) if e.cannot_be_used() => {
                exit::BACKEND_UNAVAILABLE
            }
            Error::Run(e) if e.model_unusable() => exit::BACKEND_UNAVAILABLE,
            // `cleanup` or `inspect` pointed at keys that are not a run's, or at none.
            Error::Backend(e)
                if matches!(e.kind, BackendErrorKind::Conflict | BackendErrorKind::NotFound) =>
            {
                exit::BAD_INPUT
            }
            Error::Backend(_) | Error::Run(_) | Error::Output { .. } | Error::Failed { .. } => {
                exit::RUN_FAILED
            }
        }
    }

    /// What the user can do about it, printed as `hint: ...` under the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Scenario(e) => e.hint.clone(),
            Error::Backend(e) => e.hint(),
            Error::Run(e) => e.hint(),
            Error::Failed { hint, .. } => hint.clone(),
            Error::Usage(_) | Error::Output { .. } => None,
        }
    }
}
