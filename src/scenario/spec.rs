//! A validated scenario: what the rest of agora trusts, and how it is written back out.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::duration;
use super::file::{
    AgentTable, BackendKind, BackendSection, Cleanup, Mode, NetworkSection, OutputSection, ScenarioFile,
    ScenarioSection,
};
use super::llm::LlmConfig;
use super::program::ProgramSpec;
use crate::backend::keys::Keys;
use crate::backend::url::RedisUrl;
use crate::behaviour::DynBehaviour;
use crate::network::Network;

/// The documented limits of a scenario. Past them a scenario is refused with a clear error
/// rather than left to exhaust memory or run for ever.
pub struct Limits;

impl Limits {
    pub const NAME_LEN: usize = 64;
    pub const AGENTS: u64 = 100_000;
    pub const TICKS: u64 = 100_000_000;
    pub const MAX_MESSAGES: u64 = 1_000_000_000_000;
    pub const MAX_RETRIES: u64 = 100;
    pub const MAXLEN: u64 = 1_000_000_000_000;
}

/// One agent, in declaration order: table by table, `_1` to `_count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSpec {
    pub name: Arc<str>,
    /// Position in declaration order; also the agent's random stream number.
    pub index: usize,
    /// Which `[[agents]]` table it comes from.
    pub table: usize,
    /// Position among the agents that run the same behaviour, in declaration order.
    pub peer_index: usize,
    /// Position in its own table (from 0): `_1` is 0.
    pub table_index: usize,
}

/// One `[[agents]]` table, with its behaviour constructed.
#[derive(Clone)]
pub struct AgentTableSpec {
    pub id: String,
    pub count: u64,
    pub behaviour_name: String,
    pub params: toml::Table,
    pub behaviour: Arc<dyn DynBehaviour>,
    /// Free mode: the least time between two publishes of each agent of the table.
    pub min_publish_interval: Option<Duration>,
    /// The tables whose agents this table's agents may follow; `None`: any.
    pub follows: Option<Vec<String>>,
}

impl std::fmt::Debug for AgentTableSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentTableSpec")
            .field("id", &self.id)
            .field("count", &self.count)
            .field("behaviour", &self.behaviour_name)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub kind: BackendKind,
    /// Always set: the scenario's URL or the default `redis://127.0.0.1:6379/0`.
    pub url: RedisUrl,
    pub keys: Keys,
    pub cleanup: Cleanup,
    /// Approximate stream length limit; 0 keeps everything.
    pub maxlen: u64,
    pub claim_idle: Duration,
    pub reconnect_timeout: Duration,
    /// Who hears whom, when not everyone hears everyone: then every agent reads an inbox of
    /// its own instead of the broadcast stream (`keys.inboxes`), and a step publishes into
    /// its recipients' inboxes.
    pub network: Option<Arc<Network>>,
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub path: PathBuf,
    pub name: String,
    pub seed: u64,
    pub mode: Mode,
    /// Lockstep: the number of ticks after the start (tick 0). Always set in lockstep.
    pub ticks: Option<u64>,
    /// Free mode: the wall-clock limit.
    pub duration: Option<Duration>,
    pub max_messages: u64,
    pub max_retries: u32,
    pub backend: BackendConfig,
    pub tables: Vec<AgentTableSpec>,
    pub agents: Vec<AgentSpec>,
    pub output_dir: PathBuf,
    /// `output.agent_values`: whether agents' reported values are recorded.
    pub record_agent_values: bool,
    /// Free mode: the least time between any two publishes of the run (per process).
    pub min_publish_interval: Option<Duration>,
    /// The model client, when the scenario has `[llm]` or an agent runs `llm`.
    pub llm: Option<LlmConfig>,
    /// Behaviours that are programs (`[behaviours.NAME]`), by name.
    pub programs: std::collections::BTreeMap<String, Arc<ProgramSpec>>,
    /// `[network]` as given (checked), when the scenario has one.
    pub network_section: Option<NetworkSection>,
}

impl Scenario {
    /// Who hears whom, when not everyone hears everyone.
    pub fn network(&self) -> Option<&Arc<Network>> {
        self.backend.network.as_ref().filter(|n| !n.is_broadcast())
    }

    /// The behaviour an agent runs.
    pub fn behaviour_of(&self, agent: &AgentSpec) -> &Arc<dyn DynBehaviour> {
        &self.tables[agent.table].behaviour
    }

    /// Where this run writes its files: `{dir}/{name}-{seed}/`.
    pub fn run_dir(&self) -> PathBuf {
        self.output_dir.join(format!("{}-{}", self.name, self.seed))
    }

    /// The names of the agents that run the same behaviour as `agent`, in declaration order.
    pub fn peers_of(&self, agent: &AgentSpec) -> Vec<Arc<str>> {
        let name = &self.tables[agent.table].behaviour_name;
        self.agents
            .iter()
            .filter(|a| &self.tables[a.table].behaviour_name == name)
            .map(|a| a.name.clone())
            .collect()
    }

    /// With a sparse network: where `agent` stands in it.
    pub fn neighbours_of(&self, agent: &AgentSpec) -> Option<crate::behaviour::Neighbours> {
        let network = self.network()?;
        let behaviour = &self.tables[agent.table].behaviour_name;
        let i = agent.index as u32;
        Some(crate::behaviour::Neighbours {
            audience: network
                .followers(i)
                .iter()
                .map(|&f| &self.agents[f as usize])
                .filter(|a| &self.tables[a.table].behaviour_name == behaviour)
                .map(|a| a.name.clone())
                .collect(),
            following: network
                .following(i)
                .iter()
                .map(|&f| network.name(f).clone())
                .collect(),
        })
    }

    /// Whether some agent may publish in a tick after one that published nothing
    /// ([`Behaviour::acts_unprompted`](crate::Behaviour::acts_unprompted)): then a quiet tick
    /// does not end a lockstep run.
    pub fn acts_unprompted(&self) -> bool {
        self.tables.iter().any(|t| t.behaviour.acts_unprompted())
    }

    /// The models the scenario's agents use: `[llm] model` and the `llm` tables' own, each
    /// once, for checking the servers before a run.
    pub fn models(&self) -> Vec<String> {
        let mut models: Vec<String> = Vec::new();
        let from_tables = self
            .tables
            .iter()
            .filter(|t| t.behaviour_name == "llm")
            .filter_map(|t| t.params.get("model").and_then(|m| m.as_str()).map(str::to_string));
        let default = self.llm.as_ref().and_then(|l| l.model.clone());
        for model in default.into_iter().chain(from_tables) {
            if !models.contains(&model) {
                models.push(model);
            }
        }
        models
    }

    /// The scenario as `agora check` prints it: every default filled in, the password hidden.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.resolved()).unwrap_or_default()
    }

    /// The resolved scenario as JSON, as `summary.json` records it (the password hidden).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.resolved()).unwrap_or_default()
    }

    /// A digest of everything that decides the transcript, to refuse resuming a run with a
    /// changed scenario. How to reach the backend, how long to wait for it, when to clean up,
    /// trimming and where outputs go do not change a transcript, so they may change between
    /// an interrupted run and its resumption.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        /// The section, each table's `follows`, and the digest of the follows.
        type DecisiveNetwork<'a> = (&'a NetworkSection, Vec<Option<&'a Vec<String>>>, Option<String>);
        #[derive(Serialize)]
        struct Decisive<'a> {
            name: &'a str,
            seed: u64,
            mode: &'a str,
            ticks: Option<u64>,
            max_messages: u64,
            max_retries: u32,
            stream: &'a str,
            group_prefix: &'a str,
            cache_prefix: &'a str,
            agents: Vec<(&'a str, u64, &'a str, toml::Table)>,
            /// What a model is asked with; where it is asked (base_url) does not count.
            #[serde(skip_serializing_if = "Option::is_none")]
            llm: Option<(Option<&'a str>, f64, u32)>,
            /// Who hears whom: the section, the tables' `follows`, and a digest of the
            /// follows themselves (an edge list file may change under the same name).
            #[serde(skip_serializing_if = "Option::is_none")]
            network: Option<DecisiveNetwork<'a>>,
        }
        let decisive = Decisive {
            name: &self.name,
            seed: self.seed,
            mode: self.mode.as_str(),
            ticks: self.ticks,
            max_messages: self.max_messages,
            max_retries: self.max_retries,
            stream: &self.backend.keys.stream,
            group_prefix: &self.backend.keys.group_prefix,
            cache_prefix: &self.backend.keys.cache_prefix,
            agents: self
                .tables
                .iter()
                .map(|t| {
                    (
                        t.id.as_str(),
                        t.count,
                        t.behaviour_name.as_str(),
                        t.behaviour.resolved_params(),
                    )
                })
                .collect(),
            llm: self
                .llm
                .as_ref()
                .map(|l| (l.model.as_deref(), l.temperature, l.max_tokens)),
            network: self.network_section.as_ref().map(|n| {
                (
                    n,
                    self.tables.iter().map(|t| t.follows.as_ref()).collect(),
                    self.network().map(|net| net.digest()),
                )
            }),
        };
        let text = serde_json::to_string(&decisive).unwrap_or_default();
        let digest = Sha256::digest(text.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The scenario as a file again, every default filled in.
    fn resolved(&self) -> ScenarioFile {
        let b = &self.backend;
        ScenarioFile {
            scenario: ScenarioSection {
                name: self.name.clone(),
                seed: self.seed,
                mode: self.mode,
                ticks: self.ticks.map(|t| t as i64),
                duration: self.duration.map(duration::format),
                max_messages: self.max_messages as i64,
                max_retries: i64::from(self.max_retries),
                min_publish_interval: self.min_publish_interval.map(duration::format),
            },
            backend: BackendSection {
                kind: b.kind,
                url: Some(b.url.to_string()),
                stream: Some(b.keys.stream.clone()),
                group_prefix: b.keys.group_prefix.clone(),
                cache_prefix: Some(b.keys.cache_prefix.clone()),
                cleanup: b.cleanup,
                maxlen: b.maxlen as i64,
                claim_idle: duration::format(b.claim_idle),
                reconnect_timeout: duration::format(b.reconnect_timeout),
                cluster: b.keys.cluster,
            },
            agents: self
                .tables
                .iter()
                .map(|t| AgentTable {
                    id: t.id.clone(),
                    count: t.count as i64,
                    behaviour: t.behaviour_name.clone(),
                    params: t.behaviour.resolved_params(),
                    min_publish_interval: t.min_publish_interval.map(duration::format),
                    follows: t.follows.clone(),
                })
                .collect(),
            output: OutputSection {
                dir: self.output_dir.display().to_string(),
                agent_values: self.record_agent_values,
            },
            llm: self.llm.as_ref().map(LlmConfig::to_section),
            behaviours: self
                .programs
                .iter()
                .map(|(name, spec)| (name.clone(), spec.to_section()))
                .collect(),
            network: self.network_section.clone(),
        }
    }
}
