//! The scenario file as written: serde types for CONTRACT.md's format.
//!
//! Every table denies unknown keys, so a typo is an error that names the key instead of a
//! setting silently ignored. Values are kept close to what the user wrote (durations as
//! strings, counts as signed integers) so that validation can say precisely what is wrong.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub scenario: ScenarioSection,
    #[serde(default)]
    pub backend: BackendSection,
    #[serde(default)]
    pub agents: Vec<AgentTable>,
    #[serde(default)]
    pub output: OutputSection,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSection {
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub mode: Mode,
    pub ticks: Option<i64>,
    pub duration: Option<String>,
    #[serde(default = "default_max_messages")]
    pub max_messages: i64,
    #[serde(default = "default_max_retries")]
    pub max_retries: i64,
}

fn default_max_messages() -> i64 {
    1_000_000
}

fn default_max_retries() -> i64 {
    3
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Tick by tick: tick t handles what tick t-1 published. Reproducible.
    #[default]
    Lockstep,
    /// Agents handle messages as fast as they arrive.
    Free,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Lockstep => "lockstep",
            Mode::Free => "free",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    #[serde(default)]
    pub kind: BackendKind,
    pub url: Option<String>,
    pub stream: Option<String>,
    #[serde(default = "default_group_prefix")]
    pub group_prefix: String,
    pub cache_prefix: Option<String>,
    #[serde(default)]
    pub cleanup: Cleanup,
    #[serde(default)]
    pub maxlen: i64,
    #[serde(default = "default_claim_idle")]
    pub claim_idle: String,
    #[serde(default = "default_reconnect_timeout")]
    pub reconnect_timeout: String,
}

impl Default for BackendSection {
    fn default() -> Self {
        BackendSection {
            kind: BackendKind::default(),
            url: None,
            stream: None,
            group_prefix: default_group_prefix(),
            cache_prefix: None,
            cleanup: Cleanup::default(),
            maxlen: 0,
            claim_idle: default_claim_idle(),
            reconnect_timeout: default_reconnect_timeout(),
        }
    }
}

fn default_group_prefix() -> String {
    "group_".to_string()
}

fn default_claim_idle() -> String {
    "30s".to_string()
}

fn default_reconnect_timeout() -> String {
    "60s".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The embedded in-process engine: nothing to install.
    #[default]
    Memory,
    Redis,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Redis => "redis",
        }
    }
}

/// When a run deletes its own keys (stream, groups, dead letters, cache, checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cleanup {
    #[default]
    Before,
    After,
    Both,
    Never,
}

impl Cleanup {
    pub fn before(self) -> bool {
        matches!(self, Cleanup::Before | Cleanup::Both)
    }

    pub fn after(self) -> bool {
        matches!(self, Cleanup::After | Cleanup::Both)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTable {
    pub id: String,
    #[serde(default = "default_count")]
    pub count: i64,
    pub behaviour: String,
    #[serde(default)]
    pub params: toml::Table,
}

fn default_count() -> i64 {
    1
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    #[serde(default = "default_output_dir")]
    pub dir: String,
}

impl Default for OutputSection {
    fn default() -> Self {
        OutputSection {
            dir: default_output_dir(),
        }
    }
}

fn default_output_dir() -> String {
    "runs".to_string()
}
