//! The scenario file as written: serde types for CONTRACT.md's format.
//!
//! Every table denies unknown keys, so a typo is an error that names the key instead of a
//! setting silently ignored. Values are kept close to what the user wrote (durations as
//! strings, counts as signed integers) so that validation can say precisely what is wrong.

use std::collections::BTreeMap;

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
    /// The model client, for agents driven by a language model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmSection>,
    /// Behaviours that are programs, by the name agents use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub behaviours: BTreeMap<String, ProgramSection>,
    /// Who follows whom; absent, everyone hears everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSection>,
}

/// `[network]` (CONTRACT.md, "Networks").
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    pub kind: NetworkKind,
    /// ring and watts_strogatz: neighbours per agent (even).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<i64>,
    /// watts_strogatz: rewiring probability; erdos_renyi: edge probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<f64>,
    /// barabasi_albert: edges per new agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<i64>,
    /// kind = "file": a CSV edge list `follower,followee`, relative to the scenario file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkKind {
    Complete,
    Ring,
    WattsStrogatz,
    BarabasiAlbert,
    ErdosRenyi,
    File,
}

impl NetworkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkKind::Complete => "complete",
            NetworkKind::Ring => "ring",
            NetworkKind::WattsStrogatz => "watts_strogatz",
            NetworkKind::BarabasiAlbert => "barabasi_albert",
            NetworkKind::ErdosRenyi => "erdos_renyi",
            NetworkKind::File => "file",
        }
    }
}

/// `[behaviours.NAME]`: a behaviour that is a program (CONTRACT.md, "Behaviours in other
/// languages").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramSection {
    /// The program and its arguments, started directly (never through a shell).
    pub command: Vec<String>,
    /// How many copies serve each agora process.
    #[serde(default = "default_processes")]
    pub processes: i64,
    /// The longest one step may take.
    #[serde(default = "default_program_timeout")]
    pub timeout: String,
    /// Environment variables set for the program (on top of agora's own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Its working directory; default: the one agora was started in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

fn default_processes() -> i64 {
    1
}

fn default_program_timeout() -> String {
    "10s".to_string()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSection {
    pub name: String,
    #[serde(default, with = "seed")]
    pub seed: u64,
    #[serde(default)]
    pub mode: Mode,
    pub ticks: Option<i64>,
    pub duration: Option<String>,
    #[serde(default = "default_max_messages")]
    pub max_messages: i64,
    #[serde(default = "default_max_retries")]
    pub max_retries: i64,
    /// Free mode: the least time between two publishes of the run (the old time controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_publish_interval: Option<String>,
}

/// Seeds are u64, but TOML integers stop at 9223372036854775807: a larger seed is written as
/// a string of digits, `seed = "18446744073709551615"`, and `agora check` prints it so.
pub mod seed {
    use serde::Serializer;
    use serde::de::{self, Deserializer, Unexpected, Visitor};

    const EXPECTED: &str = "a whole number from 0 to 18446744073709551615 (above \
        9223372036854775807 written as a string, as TOML integers stop there)";

    pub fn serialize<S: Serializer>(seed: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        match i64::try_from(*seed) {
            Ok(small) => serializer.serialize_i64(small),
            Err(_) => serializer.serialize_str(&seed.to_string()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        struct Seed;
        impl Visitor<'_> for Seed {
            type Value = u64;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
                Ok(v)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
                u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
                let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
                match v.parse::<u64>() {
                    Ok(seed) if digits => Ok(seed),
                    _ => Err(E::invalid_value(Unexpected::Str(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(Seed)
    }
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
    /// Run on a Redis Cluster: `url` names one of its nodes, and the run's keys spread over
    /// its hash slots.
    #[serde(default)]
    pub cluster: bool,
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
            cluster: false,
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
    /// Free mode: the least time between two publishes of each agent of this table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_publish_interval: Option<String>,
    /// With a `[network]`: the tables whose agents this table's agents may follow (the
    /// network's follows of other agents are dropped); absent, any agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<Vec<String>>,
}

fn default_count() -> i64 {
    1
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    #[serde(default = "default_output_dir")]
    pub dir: String,
    /// Whether agents' own reported values are recorded (`agents.csv`, model reporters).
    #[serde(default = "default_true")]
    pub agent_values: bool,
}

impl Default for OutputSection {
    fn default() -> Self {
        OutputSection {
            dir: default_output_dir(),
            agent_values: true,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_output_dir() -> String {
    "runs".to_string()
}

/// `[llm]`: one client for the whole run (CONTRACT.md, "LLM agents").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSection {
    /// A URL or a list of them (used round-robin); default `$OPENAI_BASE_URL`, else OpenAI's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<BaseUrls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The name of the environment variable holding the key (never the key).
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: i64,
    #[serde(default)]
    pub requests_per_minute: i64,
    #[serde(default)]
    pub tokens_per_minute: i64,
    #[serde(default = "default_llm_timeout")]
    pub timeout: String,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i64,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: i64,
}

impl Default for LlmSection {
    fn default() -> Self {
        LlmSection {
            base_url: None,
            model: None,
            api_key_env: default_api_key_env(),
            max_concurrency: default_max_concurrency(),
            requests_per_minute: 0,
            tokens_per_minute: 0,
            timeout: default_llm_timeout(),
            max_attempts: default_max_attempts(),
            temperature: default_temperature(),
            max_tokens: default_max_tokens(),
        }
    }
}

/// One base URL, or several.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(
    untagged,
    expecting = "expected a URL such as \"http://127.0.0.1:8000/v1\", or a list of URLs"
)]
pub enum BaseUrls {
    One(String),
    Many(Vec<String>),
}

impl BaseUrls {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            BaseUrls::One(url) => vec![url.clone()],
            BaseUrls::Many(urls) => urls.clone(),
        }
    }
}

fn default_api_key_env() -> String {
    "OPENAI_API_KEY".to_string()
}

fn default_max_concurrency() -> i64 {
    16
}

fn default_llm_timeout() -> String {
    "60s".to_string()
}

fn default_max_attempts() -> i64 {
    5
}

fn default_temperature() -> f64 {
    0.7
}

fn default_max_tokens() -> i64 {
    300
}
