//! From a parsed [`ScenarioFile`] to a [`Scenario`] the runtime can trust.
//!
//! Everything that can be wrong with a scenario is found here, before any backend is touched
//! or any output written: names, limits, durations, URLs, duplicate agents, unknown
//! behaviours and their parameters.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use super::file::{BackendKind, BackendSection, Mode, ScenarioFile};
use super::locate::{self, KeyPath};
use super::program::{self, ProgramSpec};
use super::spec::{AgentSpec, AgentTableSpec, BackendConfig, Limits, Scenario};
use super::{ScenarioError, Source, duration};
use crate::backend::keys::{Keys, RESERVED_MARKS, TIMESTAMPS, run_key_suffix};
use crate::backend::url::{self, RedisUrl};
use crate::behaviour::{DynBehaviour, Registry, Setup};
use crate::program::ProgramBehaviour;
use crate::program::handshake::{self, Greeted, HelloFailure};
use crate::program::protocol::{self, Hello, HelloTable};

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
pub(super) struct Errors<'a> {
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
    let (ticks, duration) = run_length(s, &err)?;
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
    let programs = validate_programs(&file, &err, registry, source)?;
    let (tables, agents) = validate_agents(&file, &err, registry, &programs)?;

    if file.output.dir.trim().is_empty() {
        return Err(err.at(key("output.dir"), "must not be empty"));
    }
    let min_publish_interval = interval(
        s.min_publish_interval.as_deref(),
        || key("scenario.min_publish_interval"),
        &err,
    )?;
    let paced = min_publish_interval.is_some() || tables.iter().any(|t| t.min_publish_interval.is_some());
    if s.mode == Mode::Lockstep && paced {
        tracing::warn!("min_publish_interval applies only to free mode; a lockstep tick publishes at once");
    }
    let llm = validate_llm(&file, &tables, &err)?;
    let mut backend = backend;
    let (network_section, network) =
        super::network::validate(&file, &agents, s.seed, source, &|path, message| {
            err.at(path, message)
        })?;
    backend.network = network;
    if backend.keys.cluster && backend.network.is_none() {
        // On a cluster every agent reads an inbox in its own hash slot, also when everyone
        // hears everyone.
        let names = agents.iter().map(|a| a.name.clone()).collect();
        backend.network = Some(Arc::new(crate::network::Network::broadcast(names)));
    }
    backend.keys = backend.keys.clone().with_inboxes(backend.network.is_some());

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
        record_agent_values: file.output.agent_values,
        min_publish_interval,
        llm,
        programs,
        network_section,
    })
}

/// How long the run lasts: `ticks` (lockstep) and `duration` (free mode).
fn run_length(
    s: &super::file::ScenarioSection,
    err: &Errors<'_>,
) -> Result<(Option<u64>, Option<std::time::Duration>), ScenarioError> {
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
    if s.mode == Mode::Free && s.ticks.is_some() {
        tracing::warn!(
            "scenario.ticks applies only to lockstep mode; a free-mode run stops at `duration`, `max_messages` or when nothing is left to handle"
        );
    }
    Ok((ticks, duration))
}

/// A `min_publish_interval`, when one is given.
fn interval(
    value: Option<&str>,
    path: impl Fn() -> KeyPath,
    err: &Errors<'_>,
) -> Result<Option<std::time::Duration>, ScenarioError> {
    value
        .map(|v| duration::parse(v).map_err(|m| err.at(path(), m)))
        .transpose()
}

/// `[llm]`, made up from defaults when only an agent table asks for a model; a model must be
/// named for every table that runs `llm`.
fn validate_llm(
    file: &ScenarioFile,
    tables: &[AgentTableSpec],
    err: &Errors<'_>,
) -> Result<Option<super::LlmConfig>, ScenarioError> {
    let runs_llm: Vec<usize> = (0..tables.len())
        .filter(|&t| tables[t].behaviour_name == "llm")
        .collect();
    let section = match (&file.llm, runs_llm.is_empty()) {
        (Some(section), _) => section.clone(),
        (None, true) => return Ok(None),
        (None, false) => super::file::LlmSection::default(),
    };
    let config = super::llm::validate(&section, |path, message| err.at(path, message))?;
    if config.model.is_none()
        && let Some(&t) = runs_llm
            .iter()
            .find(|&&t| !tables[t].params.contains_key("model"))
    {
        let at = if file.llm.is_some() {
            key("llm")
        } else {
            key("agents").index(t).key("behaviour")
        };
        return Err(err
            .at(at, format!("agents[{t}] ({}) runs `llm`, and no model is named for it", tables[t].id))
            .with_hint("add a [llm] section with model = \"...\" (the model your server serves), or params.model in the table"));
    }
    Ok(Some(config))
}

fn validate_backend(file: &ScenarioFile, err: &Errors<'_>) -> Result<BackendConfig, ScenarioError> {
    let b = &file.backend;
    let url = RedisUrl::parse(b.url.as_deref().unwrap_or(url::DEFAULT))
        .map_err(|e| err.at(key("backend.url"), e.message).with_hint(e.hint))?;
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
    if let Some(suffix) = run_key_suffix(&stream) {
        return Err(err
            .at(
                key("backend.stream"),
                format!("{stream:?} ends in {suffix:?}, which agora keeps for a run's own keys"),
            )
            .with_hint("choose a stream name without that ending"));
    }
    for (mark, what) in RESERVED_MARKS {
        if stream.contains(mark) {
            return Err(err
                .at(
                    key("backend.stream"),
                    format!("{stream:?} contains {mark:?}, which agora keeps for {what}"),
                )
                .with_hint(format!("choose a stream name without {mark:?}")));
        }
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
    let cluster = cluster_of(b, &stream, &cache_prefix, err)?;
    let keys = Keys::new(stream, b.group_prefix.clone(), cache_prefix).with_cluster(cluster);
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
        network: None,
    })
}

/// Whether the run is on a Redis Cluster (`backend.cluster` with the redis backend), whose
/// keys must then leave hash tags to agora.
fn cluster_of(
    b: &BackendSection,
    stream: &str,
    cache_prefix: &str,
    err: &Errors<'_>,
) -> Result<bool, ScenarioError> {
    if b.cluster && b.kind != BackendKind::Redis {
        tracing::warn!("backend.cluster applies to the redis backend; this run is on memory");
        return Ok(false);
    }
    if b.cluster {
        // A brace in a key would make its hash tag, and put an agent's keys in other slots.
        for (name, value) in [("backend.stream", stream), ("backend.cache_prefix", cache_prefix)] {
            if value.contains(['{', '}']) {
                return Err(err
                    .at(
                        key(name),
                        format!("{value:?} contains a brace, which a Redis Cluster reads as a hash tag"),
                    )
                    .with_hint("choose a name without { and }: agora tags each agent's keys itself"));
            }
        }
    }
    Ok(b.cluster)
}

fn validate_agents(
    file: &ScenarioFile,
    err: &Errors<'_>,
    registry: &Registry,
    programs: &BTreeMap<String, Arc<ProgramSpec>>,
) -> Result<(Vec<AgentTableSpec>, Vec<AgentSpec>), ScenarioError> {
    if file.agents.is_empty() {
        return Err(err
            .at(key("agents"), "the scenario has no agents")
            .with_hint("add at least one [[agents]] table with id, count and behaviour"));
    }
    let known = |name: &str| registry.contains(name) || programs.contains_key(name);
    let agents = name_agents(file, err, registry, &known)?;
    let greetings = greet_programs(file, &agents, err, programs)?;
    let tables = build_behaviours(file, &agents, err, registry, &greetings)?;
    Ok((tables, agents))
}

/// `[behaviours.NAME]` tables, validated. A name may not hide a built-in behaviour.
fn validate_programs(
    file: &ScenarioFile,
    err: &Errors<'_>,
    registry: &Registry,
    source: &Source,
) -> Result<BTreeMap<String, Arc<ProgramSpec>>, ScenarioError> {
    let beside = source.path.parent().unwrap_or(std::path::Path::new(""));
    let mut programs = BTreeMap::new();
    for (name, section) in &file.behaviours {
        let at = KeyPath::default().key("behaviours").key(name);
        if !is_name(name) {
            return Err(err.at(
                at,
                format!("{} is not a valid behaviour name: {}", quoted(name), name_rule()),
            ));
        }
        if registry.contains(name) {
            return Err(err
                .at(at, format!("{name:?} is a built-in behaviour's name"))
                .with_hint("give the program's behaviour another name"));
        }
        let spec = program::validate(name, section, beside, |path, message| err.at(path, message))?;
        programs.insert(name.clone(), Arc::new(spec));
    }
    Ok(programs)
}

/// Says hello to each program agents use, with the tables that use it: whether it takes their
/// params. A program that cannot be started or refuses a table is bad input.
fn greet_programs(
    file: &ScenarioFile,
    agents: &[AgentSpec],
    err: &Errors<'_>,
    programs: &BTreeMap<String, Arc<ProgramSpec>>,
) -> Result<BTreeMap<String, Greeted>, ScenarioError> {
    let mut greetings = BTreeMap::new();
    for (name, spec) in programs {
        let using: Vec<usize> = (0..file.agents.len())
            .filter(|&t| &file.agents[t].behaviour == name)
            .collect();
        if using.is_empty() {
            tracing::warn!("behaviours.{name}: no agents use it, so its program is not started");
            continue;
        }
        for &t in &using {
            if let Some(at) = non_finite(&file.agents[t].params) {
                let path = KeyPath::default().key("agents").index(t).key("params").key(at);
                return Err(err
                    .at(
                        path,
                        "a NaN or an infinity cannot be sent to a program: JSON has neither",
                    )
                    .with_hint("give a number, or a string in quotes (\"nan\")"));
            }
        }
        let names = |t: usize| {
            agents
                .iter()
                .filter(|a| a.table == t)
                .map(|a| a.name.to_string())
                .collect()
        };
        let hello = Hello {
            protocol: protocol::VERSION,
            behaviour: name.clone(),
            mode: file.scenario.mode.as_str().to_string(),
            seed: file.scenario.seed,
            tables: using
                .iter()
                .map(|&t| HelloTable {
                    id: file.agents[t].id.clone(),
                    params: serde_json::to_value(&file.agents[t].params).unwrap_or_default(),
                    agents: names(t),
                })
                .collect(),
            peers: agents
                .iter()
                .filter(|a| using.contains(&a.table))
                .map(|a| a.name.to_string())
                .collect(),
        };
        let greeted = handshake::greet(spec, &hello).map_err(|failure| match failure {
            HelloFailure::Program(e) => err
                .at(KeyPath::default().key("behaviours").key(name).key("command"), e.0)
                .with_hint(program_hint(spec)),
            HelloFailure::Refused { table, key, message } => {
                let t = using
                    .iter()
                    .copied()
                    .find(|&t| file.agents[t].id == table)
                    .unwrap_or(using[0]);
                let mut path = KeyPath::default().key("agents").index(t).key("params");
                if let Some(k) = key {
                    path = path.key(k);
                }
                err.at(path, message)
                    .with_hint(format!("behaviour {name:?}'s program refused these params"))
            }
        })?;
        greetings.insert(name.clone(), greeted);
    }
    Ok(greetings)
}

/// The first parameter (by its top-level key) that holds a NaN or an infinity, at any depth.
fn non_finite(params: &toml::Table) -> Option<String> {
    fn bad(value: &toml::Value) -> bool {
        match value {
            toml::Value::Float(f) => !f.is_finite(),
            toml::Value::Array(items) => items.iter().any(bad),
            toml::Value::Table(table) => table.values().any(bad),
            _ => false,
        }
    }
    params.iter().find(|(_, v)| bad(v)).map(|(k, _)| k.clone())
}

/// What to do about a program that did not answer its hello. Its relative paths are read
/// from the folder it runs in, which is agora's own unless `cwd` says otherwise, or else from
/// the scenario's: the usual slip when agora is started from another folder.
fn program_hint(spec: &ProgramSpec) -> String {
    let folder = match &spec.cwd {
        Some(dir) => format!("{} (its cwd)", dir.display()),
        None => std::env::current_dir().map_or_else(
            |_| "agora's working directory".to_string(),
            |d| {
                format!(
                    "{} (agora's working directory; set cwd to change it)",
                    d.display()
                )
            },
        ),
    };
    format!(
        "run the command by hand, and see docs/protocol.md for what it must answer; it runs in {folder}, \
         and relative paths in it are read from there (or else beside the scenario file)"
    )
}

/// Every agent, named and numbered in declaration order: its table's id, count and
/// behaviour checked, its name unique.
fn name_agents(
    file: &ScenarioFile,
    err: &Errors<'_>,
    registry: &Registry,
    known: &dyn Fn(&str) -> bool,
) -> Result<Vec<AgentSpec>, ScenarioError> {
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
        if !known(&table.behaviour) {
            let mut names: Vec<&str> = registry.names();
            names.extend(file.behaviours.keys().map(String::as_str));
            names.sort_unstable();
            return Err(err
                .at(
                    at("behaviour"),
                    format!("unknown behaviour {}", quoted(&table.behaviour)),
                )
                .with_hint(format!(
                    "known behaviours: {}; a behaviour of your own is a program declared under \
                     [behaviours.NAME] (README, \"Writing a behaviour in Python\"), or Rust \
                     registered in a program of your own (README, \"Writing a behaviour\")",
                    names.join(", ")
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
                table_index: (i - 1) as usize,
            });
            *peer_counter += 1;
        }
    }
    Ok(agents)
}

/// Each table's behaviour, built from its parameters.
fn build_behaviours(
    file: &ScenarioFile,
    agents: &[AgentSpec],
    err: &Errors<'_>,
    registry: &Registry,
    greetings: &BTreeMap<String, Greeted>,
) -> Result<Vec<AgentTableSpec>, ScenarioError> {
    let mut tables = Vec::with_capacity(file.agents.len());
    let table_params: Vec<toml::Table> = file.agents.iter().map(|t| t.params.clone()).collect();
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
            all: agents,
            table_params: &table_params,
        };
        let (behaviour, params): (Arc<dyn DynBehaviour>, toml::Table) = match greetings.get(&table.behaviour)
        {
            Some(greeted) => {
                let program = ProgramBehaviour::new(&table.behaviour, &table.id, &table.params, greeted);
                let params = program.resolved_params();
                (Arc::new(program), params)
            }
            None => {
                let behaviour = registry
                    .build(&table.behaviour, &table.params, &setup)
                    .map_err(|e| {
                        let mut path = KeyPath::default().key("agents").index(t).key("params");
                        if let Some(k) = &e.key {
                            path = path.key(k.clone());
                        }
                        let hint = e.hint.unwrap_or_else(|| {
                            format!("`agora behaviours` lists the parameters of {:?}", table.behaviour)
                        });
                        err.at(path, e.message).with_hint(hint)
                    })?;
                (behaviour, table.params.clone())
            }
        };
        tables.push(AgentTableSpec {
            id: table.id.clone(),
            count: table.count as u64,
            behaviour_name: table.behaviour.clone(),
            params,
            behaviour,
            min_publish_interval: interval(
                table.min_publish_interval.as_deref(),
                || {
                    KeyPath::default()
                        .key("agents")
                        .index(t)
                        .key("min_publish_interval")
                },
                err,
            )?,
            follows: table.follows.clone(),
        });
    }
    Ok(tables)
}
