//! From a parsed [`ScenarioFile`] to a [`Scenario`] the runtime can trust.
//!
//! Everything that can be wrong with a scenario is found here, before any backend is touched
//! or any output written: names, limits, durations, URLs, duplicate agents, unknown
//! behaviours and their parameters.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::file::{
    AgentTable, BackendKind, BackendSection, Cleanup, Mode, OutputSection, ScenarioFile, ScenarioSection,
};
use super::locate::{self, KeyPath};
use super::{ScenarioError, Source, duration};
use crate::backend::keys::{CACHE_MARK, Keys, RUN_KEYS, TIMESTAMPS};
use crate::backend::url::{self, RedisUrl};
use crate::behaviour::{DynBehaviour, Registry, Setup};

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
}

/// One `[[agents]]` table, with its behaviour constructed.
#[derive(Clone)]
pub struct AgentTableSpec {
    pub id: String,
    pub count: u64,
    pub behaviour_name: String,
    pub params: toml::Table,
    pub behaviour: Arc<dyn DynBehaviour>,
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
}

impl Scenario {
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

    /// The scenario as `agora check` prints it: every default filled in, the password hidden.
    pub fn to_toml(&self) -> String {
        self.resolved()
    }

    /// A digest of everything that decides the transcript, to refuse resuming a run with a
    /// changed scenario. How to reach the backend, how long to wait for it, when to clean up,
    /// trimming and where outputs go do not change a transcript, so they may change between
    /// an interrupted run and its resumption.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
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
        };
        let text = serde_json::to_string(&decisive).unwrap_or_default();
        let digest = Sha256::digest(text.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The scenario as a file again, every default filled in.
    fn resolved(&self) -> String {
        let b = &self.backend;
        let file = ScenarioFile {
            scenario: ScenarioSection {
                name: self.name.clone(),
                seed: self.seed,
                mode: self.mode,
                ticks: self.ticks.map(|t| t as i64),
                duration: self.duration.map(duration::format),
                max_messages: self.max_messages as i64,
                max_retries: i64::from(self.max_retries),
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
            },
            agents: self
                .tables
                .iter()
                .map(|t| AgentTable {
                    id: t.id.clone(),
                    count: t.count as i64,
                    behaviour: t.behaviour_name.clone(),
                    params: t.behaviour.resolved_params(),
                })
                .collect(),
            output: OutputSection {
                dir: self.output_dir.display().to_string(),
            },
        };
        toml::to_string(&file).unwrap_or_default()
    }
}

/// Which key paths were set outside the file, and by what.
#[derive(Debug, Default)]
pub(crate) struct Origins(Vec<(KeyPath, String)>);

impl Origins {
    pub fn push(&mut self, path: KeyPath, origin: String) {
        self.0.push((path, origin));
    }

    /// The highest-precedence override that set `path` (or a table around it).
    fn of(&self, path: &KeyPath) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(p, _)| path.starts_with(p) || p.starts_with(path))
            .map(|(_, o)| o.as_str())
    }
}

/// Builds errors that name where a key's value came from.
struct Errors<'a> {
    source: &'a Source,
    origins: &'a Origins,
}

impl Errors<'_> {
    fn at(&self, path: KeyPath, message: impl Into<String>) -> ScenarioError {
        let shown = self.source.path.display().to_string();
        let place = match self.origins.of(&path) {
            Some(origin) => origin.to_string(),
            None => match locate::line_of_path(&self.source.text, &path) {
                Some(line) => format!("{shown}:{line}"),
                None => shown,
            },
        };
        ScenarioError::new(place, Some(path.to_string()), message)
    }
}

/// A value as an error shows it: quoted, and cut short when long.
fn quoted(value: &str) -> String {
    const MAX: usize = 40;
    if value.chars().count() <= MAX {
        return format!("{value:?}");
    }
    let cut: String = value.chars().take(MAX).collect();
    format!("{cut:?}... ({} bytes)", value.len())
}

fn key(path: &str) -> KeyPath {
    KeyPath::parse_dotted(path)
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= Limits::NAME_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn name_rule() -> String {
    format!(
        "use letters, digits, '-' and '_' only, at most {} characters",
        Limits::NAME_LEN
    )
}

pub(crate) fn validate(
    file: ScenarioFile,
    source: &Source,
    origins: &Origins,
    registry: &Registry,
) -> Result<Scenario, ScenarioError> {
    let err = Errors { source, origins };
    let s = &file.scenario;

    if !is_name(&s.name) {
        return Err(err.at(
            key("scenario.name"),
            format!("{} is not a valid name: {}", quoted(&s.name), name_rule()),
        ));
    }
    let ticks = match (s.mode, s.ticks) {
        (Mode::Lockstep, None) => {
            return Err(err
                .at(
                    key("scenario"),
                    "lockstep mode needs `ticks`, the number of ticks to run",
                )
                .with_hint("add `ticks = 10` under [scenario], or set mode = \"free\""));
        }
        (_, Some(t)) if t < 1 || t as u64 > Limits::TICKS => {
            return Err(err.at(
                key("scenario.ticks"),
                format!("must be between 1 and {}, got {t}", Limits::TICKS),
            ));
        }
        (Mode::Lockstep, Some(t)) => Some(t as u64),
        (Mode::Free, _) => None,
    };
    let duration = match (&s.duration, s.mode) {
        (Some(d), _) => Some(
            duration::parse(d)
                .and_then(|d| match d.is_zero() {
                    true => Err("must be longer than zero".to_string()),
                    false => Ok(d),
                })
                .map_err(|m| err.at(key("scenario.duration"), m))?,
        ),
        (None, _) => None,
    };
    if s.mode == Mode::Lockstep && duration.is_some() {
        tracing::warn!("scenario.duration applies only to free mode; lockstep runs for `ticks`");
    }
    if s.max_messages < 1 || s.max_messages as u64 > Limits::MAX_MESSAGES {
        return Err(err.at(
            key("scenario.max_messages"),
            format!(
                "must be between 1 and {}, got {}",
                Limits::MAX_MESSAGES,
                s.max_messages
            ),
        ));
    }
    if s.max_retries < 0 || s.max_retries as u64 > Limits::MAX_RETRIES {
        return Err(err.at(
            key("scenario.max_retries"),
            format!(
                "must be between 0 and {}, got {}",
                Limits::MAX_RETRIES,
                s.max_retries
            ),
        ));
    }

    let backend = validate_backend(&file, &err)?;
    let (tables, agents) = validate_agents(&file, &err, registry)?;

    if file.output.dir.trim().is_empty() {
        return Err(err.at(key("output.dir"), "must not be empty"));
    }

    Ok(Scenario {
        path: source.path.clone(),
        name: s.name.clone(),
        seed: s.seed,
        mode: s.mode,
        ticks,
        duration,
        max_messages: s.max_messages as u64,
        max_retries: s.max_retries as u32,
        backend,
        tables,
        agents,
        output_dir: PathBuf::from(&file.output.dir),
    })
}

fn validate_backend(file: &ScenarioFile, err: &Errors<'_>) -> Result<BackendConfig, ScenarioError> {
    let b = &file.backend;
    let url = RedisUrl::parse(b.url.as_deref().unwrap_or(url::DEFAULT))
        .map_err(|m| err.at(key("backend.url"), m))?;
    let stream = b.stream.clone().unwrap_or_else(|| file.scenario.name.clone());
    if stream.is_empty() || stream.len() > 256 || stream.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(err.at(
            key("backend.stream"),
            format!(
                "{} is not a usable stream key: 1 to 256 characters, no spaces",
                quoted(&stream)
            ),
        ));
    }
    // A run's own keys end in these, and cleanup deletes everything under a cache prefix: a
    // stream named like them would be another run's key, and deleted with it.
    for suffix in RUN_KEYS.iter().map(|k| k.suffix).filter(|s| !s.is_empty()) {
        if stream.ends_with(suffix) {
            return Err(err
                .at(
                    key("backend.stream"),
                    format!("{stream:?} ends in {suffix:?}, which agora keeps for a run's own keys"),
                )
                .with_hint("choose a stream name without that ending"));
        }
    }
    if stream.contains(CACHE_MARK) {
        return Err(err
            .at(
                key("backend.stream"),
                format!("{stream:?} contains {CACHE_MARK:?}, which agora keeps for cache keys"),
            )
            .with_hint(format!("choose a stream name without {CACHE_MARK:?}")));
    }
    if b.group_prefix.len() > 256 || b.group_prefix.chars().any(char::is_control) {
        return Err(err.at(
            key("backend.group_prefix"),
            "must be at most 256 printable characters",
        ));
    }
    let cache_prefix = b
        .cache_prefix
        .clone()
        .unwrap_or_else(|| Keys::default_cache_prefix(&stream));
    if cache_prefix.is_empty() || cache_prefix.len() > 256 {
        return Err(err.at(key("backend.cache_prefix"), "must be 1 to 256 characters"));
    }
    let keys = Keys::new(stream, b.group_prefix.clone(), cache_prefix);
    // Cleanup deletes everything under the cache prefix, so the prefix must not cover the
    // run's other keys, or cleaning the cache would delete the stream.
    for (run_key, _) in keys.run_keys() {
        if run_key.starts_with(&keys.cache_prefix) {
            return Err(err
                .at(
                    key("backend.cache_prefix"),
                    format!("{:?} would also match the run key {run_key:?}", keys.cache_prefix),
                )
                .with_hint("end the prefix with a separator, as in \"gossip:cache:\""));
        }
    }
    if b.maxlen < 0 || b.maxlen as u64 > Limits::MAXLEN {
        return Err(err.at(
            key("backend.maxlen"),
            format!("must be 0 (no limit) or a positive length, got {}", b.maxlen),
        ));
    }
    let claim_idle = duration::parse(&b.claim_idle).map_err(|m| err.at(key("backend.claim_idle"), m))?;
    let reconnect_timeout =
        duration::parse(&b.reconnect_timeout).map_err(|m| err.at(key("backend.reconnect_timeout"), m))?;
    Ok(BackendConfig {
        kind: b.kind,
        url,
        keys,
        cleanup: b.cleanup,
        maxlen: b.maxlen as u64,
        claim_idle,
        reconnect_timeout,
    })
}

fn validate_agents(
    file: &ScenarioFile,
    err: &Errors<'_>,
    registry: &Registry,
) -> Result<(Vec<AgentTableSpec>, Vec<AgentSpec>), ScenarioError> {
    if file.agents.is_empty() {
        return Err(err
            .at(key("agents"), "the scenario has no agents")
            .with_hint("add at least one [[agents]] table with id, count and behaviour"));
    }
    let mut agents: Vec<AgentSpec> = Vec::new();
    let mut seen: HashMap<Arc<str>, usize> = HashMap::new();
    let mut peer_counts: HashMap<&str, usize> = HashMap::new();
    for (t, table) in file.agents.iter().enumerate() {
        let at = |k: &str| KeyPath::default().key("agents").index(t).key(k);
        if !is_name(&table.id) {
            return Err(err.at(
                at("id"),
                format!("{} is not a valid id: {}", quoted(&table.id), name_rule()),
            ));
        }
        if table.count < 1 {
            return Err(err.at(at("count"), format!("must be at least 1, got {}", table.count)));
        }
        let total = agents.len() as u64 + table.count as u64;
        if total > Limits::AGENTS {
            return Err(err.at(
                at("count"),
                format!(
                    "the scenario would have {total} agents; the limit is {}",
                    Limits::AGENTS
                ),
            ));
        }
        if !registry.contains(&table.behaviour) {
            return Err(err
                .at(
                    at("behaviour"),
                    format!("unknown behaviour {}", quoted(&table.behaviour)),
                )
                .with_hint(format!(
                    "known behaviours: {}; a behaviour of your own runs from a program that \
                     registers it (README, \"Writing a behaviour\")",
                    registry.names().join(", ")
                )));
        }
        let peer_counter = peer_counts.entry(table.behaviour.as_str()).or_insert(0);
        for i in 1..=table.count as u64 {
            let name: Arc<str> = if table.count == 1 {
                Arc::from(table.id.as_str())
            } else {
                Arc::from(format!("{}_{i}", table.id))
            };
            if &*name == TIMESTAMPS {
                return Err(err.at(
                    at("id"),
                    format!("no agent may be called {TIMESTAMPS:?}: the cache's sorted set has that key"),
                ));
            }
            if let Some(first) = seen.insert(name.clone(), t) {
                return Err(err.at(
                    at("id"),
                    format!("agent name {name:?} is already used by agents[{first}]; names must be unique"),
                ));
            }
            agents.push(AgentSpec {
                name,
                index: agents.len(),
                table: t,
                peer_index: *peer_counter,
            });
            *peer_counter += 1;
        }
    }

    let mut tables = Vec::with_capacity(file.agents.len());
    for (t, table) in file.agents.iter().enumerate() {
        let peers: Vec<AgentSpec> = agents
            .iter()
            .filter(|a| file.agents[a.table].behaviour == table.behaviour)
            .cloned()
            .collect();
        let own: Vec<AgentSpec> = agents.iter().filter(|a| a.table == t).cloned().collect();
        let setup = Setup {
            seed: file.scenario.seed,
            mode: file.scenario.mode,
            table_id: &table.id,
            agents: &own,
            peers: &peers,
            all: &agents,
        };
        let behaviour = registry
            .build(&table.behaviour, &table.params, &setup)
            .map_err(|e| {
                let mut path = KeyPath::default().key("agents").index(t).key("params");
                if let Some(k) = &e.key {
                    path = path.key(k.clone());
                }
                err.at(path, e.message).with_hint(format!(
                    "`agora behaviours` lists the parameters of {:?}",
                    table.behaviour
                ))
            })?;
        tables.push(AgentTableSpec {
            id: table.id.clone(),
            count: table.count as u64,
            behaviour_name: table.behaviour.clone(),
            params: table.params.clone(),
            behaviour,
        });
    }
    Ok((tables, agents))
}
