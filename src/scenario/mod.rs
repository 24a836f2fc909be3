//! Scenario files: the format users write, how it is layered and validated.
//!
//! Loading goes file, then `AGORA_<SECTION>__<KEY>` environment variables, then `--set` and
//! command-line flags ([`load`]), and ends in a [`Scenario`] that the runtime trusts: names
//! checked, defaults filled in, behaviours constructed. Every error names the file, the line
//! where there is one, the key, and what was expected.

mod duration;
mod file;
mod llm;
mod load;
mod locate;
mod network;
mod overrides;
mod program;
mod spec;
mod validate;

use std::fmt;
use std::path::PathBuf;

pub use duration::{format as format_duration, parse as parse_duration};
pub use file::{BackendKind, Cleanup, Mode, ScenarioFile};
pub use llm::LlmConfig;
pub use load::{MAX_FILE_BYTES, load, load_str};
pub use locate::KeyPath;
pub use overrides::Overrides;
pub use program::ProgramSpec;
pub use spec::{AgentSpec, AgentTableSpec, BackendConfig, Limits, Scenario};

/// Bad input in a scenario: the file, an environment variable or a command-line override.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ScenarioError {
    /// Where the bad value came from: `scenarios/x.toml:12`, `--set scenario.seed=x`,
    /// `environment variable AGORA_SCENARIO__SEED`.
    pub place: String,
    /// The key, such as `agents[1].count`, when there is one.
    pub key: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl ScenarioError {
    pub fn new(place: impl Into<String>, key: Option<String>, message: impl Into<String>) -> Self {
        ScenarioError {
            place: place.into(),
            key,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Serde's type names in words a scenario author uses.
pub(crate) fn friendly(message: &str) -> String {
    message
        .replace("expected i64", "expected an integer")
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected u32", "expected a non-negative integer")
        .replace("expected f64", "expected a number")
        .replace("expected usize", "expected a non-negative integer")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table")
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, whatever the underlying parser wrote.
        let message = friendly(&self.message).replace('\n', " ");
        match &self.key {
            Some(key) if !key.is_empty() => write!(f, "{}: {key}: {message}", self.place),
            _ => write!(f, "{}: {message}", self.place),
        }
    }
}

/// Where a scenario came from, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub path: PathBuf,
    pub text: String,
}
