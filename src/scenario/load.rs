//! Reading a scenario: the file, then environment variables, then command-line overrides,
//! layered with the `config` crate.
//!
//! The file is first parsed on its own with `toml`, which knows line numbers, so that errors
//! in the file point at a line. Each environment variable and each override is then tried on
//! its own on top of the file, so that an error in one of them is reported with its name.

use std::path::Path;

use config::{Config, ConfigBuilder, ConfigError, FileFormat, builder::DefaultState};

use super::file::ScenarioFile;
use super::locate::{self, KeyPath, Segment};
use super::validate::{self, Origins};
use super::{Scenario, ScenarioError, Source};
use crate::behaviour::Registry;

/// Scenario files larger than this are refused: a scenario is a page of settings, and a
/// bigger file is almost certainly the wrong file.
pub const MAX_FILE_BYTES: usize = 1 << 20;

const SECTIONS: [&str; 4] = ["scenario", "backend", "output", "agents"];

/// Values set on the command line, highest precedence first among equals: `--set KEY=VALUE`
/// and the flags that stand for a key (`--seed`, `--backend`, `--redis-url`, `--out`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    entries: Vec<Override>,
}

#[derive(Debug, Clone)]
struct Override {
    path: KeyPath,
    value: toml::Value,
    /// How the user wrote it, for error messages: `--set scenario.seed=x`, `--seed 3`.
    origin: String,
}

impl Overrides {
    pub fn new() -> Self {
        Overrides::default()
    }

    /// Adds a `--set KEY=VALUE`. The value is read as TOML; a plain word that is not valid
    /// TOML is taken as a string, so `--set backend.kind=redis` works without quotes.
    pub fn set(&mut self, arg: &str) -> Result<(), ScenarioError> {
        let origin = format!("--set {}", redact_arg(arg));
        let Some((key, raw)) = arg.split_once('=') else {
            return Err(ScenarioError::new(
                origin,
                None,
                "expected KEY=VALUE, as in --set scenario.seed=7",
            ));
        };
        let key = key.trim();
        let path = parse_key(key).map_err(|m| ScenarioError::new(origin.clone(), None, m))?;
        self.entries.push(Override {
            path,
            value: parse_value(raw.trim()),
            origin,
        });
        Ok(())
    }

    /// Adds a flag that stands for a key, such as `--seed 7` for `scenario.seed`.
    pub fn flag(&mut self, flag: &str, key: &str, value: toml::Value) {
        let shown = match &value {
            toml::Value::String(s) => shorten(&crate::backend::url::redact(s)),
            other => shorten(&other.to_string()),
        };
        self.entries.push(Override {
            path: KeyPath::parse_dotted(key),
            value,
            origin: format!("{flag} {shown}"),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `KEY=VALUE` with any password in the value hidden, and a long value cut short.
fn redact_arg(arg: &str) -> String {
    shorten(&crate::backend::url::redact(arg))
}

/// Text for an error line: at most 80 characters.
fn shorten(text: &str) -> String {
    const MAX: usize = 80;
    if text.chars().count() <= MAX {
        return text.to_string();
    }
    let cut: String = text.chars().take(MAX - 20).collect();
    format!("{cut}... ({} bytes)", text.len())
}

fn parse_key(key: &str) -> Result<KeyPath, String> {
    if key.is_empty() {
        return Err("the key is empty: expected KEY=VALUE, as in --set scenario.seed=7".into());
    }
    for part in key.split('.') {
        let ok = !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(format!(
                "{key:?} is not a key path: write dotted names such as scenario.seed or agents.0.count"
            ));
        }
    }
    Ok(KeyPath::parse_dotted(key))
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut table) => table
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Loads a scenario file, layering `env` (normally `std::env::vars()`) and `overrides`.
pub fn load(
    path: &Path,
    env: &[(String, String)],
    overrides: &Overrides,
    registry: &Registry,
) -> Result<Scenario, ScenarioError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        let message = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::IsADirectory => "is a directory, not a scenario file".to_string(),
            _ => format!("cannot read it: {e}"),
        };
        ScenarioError::new(shown.clone(), None, message)
            .with_hint("give the path of a scenario .toml file, such as scenarios/gossip.toml")
    })?;
    if path.is_dir() {
        return Err(ScenarioError::new(
            shown,
            None,
            "is a directory, not a scenario file",
        ));
    }
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ScenarioError::new(
            shown,
            None,
            format!(
                "is {} bytes; scenario files are limited to {MAX_FILE_BYTES} bytes",
                bytes.len()
            ),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = locate::line_of_offset(&String::from_utf8_lossy(e.as_bytes()), offset);
        ScenarioError::new(format!("{shown}:{line}"), None, "is not valid UTF-8 text")
            .with_hint("save the scenario file as UTF-8")
    })?;
    load_str(path, text, env, overrides, registry)
}

/// [`load`] for a scenario already in memory; `path` is only used in messages and to resolve
/// nothing else.
pub fn load_str(
    path: &Path,
    text: String,
    env: &[(String, String)],
    overrides: &Overrides,
    registry: &Registry,
) -> Result<Scenario, ScenarioError> {
    let source = Source {
        path: path.to_path_buf(),
        text,
    };
    parse_file(&source)?;
    // What the `toml` crate accepts, `config` may not (integers beyond i64): say it is the file.
    deserialize(file_builder(&source)).map_err(|e| file_config_error(&source, e))?;
    let env_overrides = environment_overrides(env)?;
    check_agent_indices(&source, overrides)?;

    // Environment variables, then command-line overrides (later ones win). Each is first
    // tried alone on top of the file, so that an error names its origin.
    let layers: Vec<Override> = env_overrides
        .into_iter()
        .chain(overrides.entries.iter().cloned())
        .collect();
    for o in &layers {
        let builder = apply(file_builder(&source), std::slice::from_ref(o))
            .map_err(|e| config_error(o.origin.clone(), e))?;
        deserialize(builder).map_err(|e| config_error(o.origin.clone(), e))?;
    }
    let builder =
        apply(file_builder(&source), &layers).map_err(|e| config_error("the command line".to_string(), e))?;
    let merged = deserialize(builder)
        .map_err(|e| config_error("the environment and command line together".to_string(), e))?;

    let mut origins = Origins::default();
    for o in &layers {
        origins.push(o.path.clone(), o.origin.clone());
    }
    validate::validate(merged, &source, &origins, registry)
}

/// Parses the file alone: syntax first, then types and unknown keys, both with a line.
fn parse_file(source: &Source) -> Result<ScenarioFile, ScenarioError> {
    toml::from_str::<ScenarioFile>(&source.text).map_err(|e| {
        let shown = source.path.display();
        let Some(span) = e.span() else {
            return ScenarioError::new(shown.to_string(), None, e.message().to_string());
        };
        let line = locate::line_of_offset(&source.text, span.start);
        let key = locate::path_at_offset(&source.text, span.start).to_string();
        let key = (!key.is_empty()).then_some(key);
        let err = ScenarioError::new(format!("{shown}:{line}"), key, e.message().to_string());
        if e.message().contains("unknown field") {
            err.with_hint(
                "check the spelling; the README's \"Scenarios\" section lists every key, and \
                 `agora check scenarios/gossip.toml` prints a scenario with all of them",
            )
        } else {
            err
        }
    })
}

/// The `AGORA_<SECTION>__<KEY>` variables, sorted by name, as overrides. Values read like
/// `--set` values: TOML, or a plain word taken as a string. Variables without `__` (such as
/// `AGORA_LOG`) are not scenario keys and are ignored; a near miss such as
/// `AGORA_SCENARIO_SEED`, or an unknown section, is an error rather than silently unused.
fn environment_overrides(env: &[(String, String)]) -> Result<Vec<Override>, ScenarioError> {
    let mut found = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("AGORA_") else {
            continue;
        };
        let origin = format!("environment variable {name}");
        let lower = rest.to_ascii_lowercase();
        let Some(section) = SECTIONS.iter().find(|s| lower.starts_with(*s)) else {
            if let Some((section, _)) = lower.split_once("__") {
                return Err(ScenarioError::new(
                    origin,
                    None,
                    format!("there is no section `{section}`: the sections are scenario, backend and output"),
                )
                .with_hint(
                    "write AGORA_<SECTION>__<KEY>, such as AGORA_BACKEND__URL, or unset the variable",
                ));
            }
            continue;
        };
        let after = &lower[section.len()..];
        if !after.starts_with("__") {
            if after.starts_with('_') {
                return Err(ScenarioError::new(
                    origin,
                    None,
                    "sections and keys are separated by two underscores",
                )
                .with_hint(format!(
                    "write AGORA_{}__{}",
                    section.to_ascii_uppercase(),
                    &rest[section.len() + 1..]
                )));
            }
            continue;
        }
        if *section == "agents" {
            return Err(ScenarioError::new(
                origin,
                None,
                "[[agents]] tables cannot be set from the environment",
            )
            .with_hint("use --set agents.0.count=50 (tables are numbered from 0)"));
        }
        found.push(Override {
            path: KeyPath::parse_dotted(&lower.replace("__", ".")),
            value: parse_value(value.trim()),
            origin: shorten(&crate::backend::url::redact(&origin)),
        });
    }
    found.sort_by(|a, b| a.origin.cmp(&b.origin));
    Ok(found)
}

fn check_agent_indices(source: &Source, overrides: &Overrides) -> Result<(), ScenarioError> {
    let tables = toml::from_str::<ScenarioFile>(&source.text)
        .map(|f| f.agents.len())
        .unwrap_or(0);
    for o in &overrides.entries {
        if let [Segment::Key(first), Segment::Index(i), ..] = o.path.0.as_slice()
            && first == "agents"
            && *i >= tables
        {
            return Err(ScenarioError::new(
                o.origin.clone(),
                Some(o.path.to_string()),
                format!(
                    "the scenario has {tables} [[agents]] table{}, numbered from 0",
                    if tables == 1 { "" } else { "s" }
                ),
            ));
        }
    }
    Ok(())
}

fn file_builder(source: &Source) -> ConfigBuilder<DefaultState> {
    Config::builder().add_source(config::File::from_str(&source.text, FileFormat::Toml))
}

fn apply(
    mut builder: ConfigBuilder<DefaultState>,
    overrides: &[Override],
) -> Result<ConfigBuilder<DefaultState>, ConfigError> {
    for o in overrides {
        builder = builder.set_override(config_path(&o.path), to_config(&o.value))?;
    }
    Ok(builder)
}

fn deserialize(builder: ConfigBuilder<DefaultState>) -> Result<ScenarioFile, ConfigError> {
    builder.build()?.try_deserialize()
}

/// `agents.0.count` as the `config` crate writes paths: `agents[0].count`.
fn config_path(path: &KeyPath) -> String {
    let mut out = String::new();
    for seg in &path.0 {
        match seg {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn to_config(value: &toml::Value) -> config::Value {
    use config::ValueKind;
    let kind = match value {
        toml::Value::String(s) => ValueKind::String(s.clone()),
        toml::Value::Integer(i) => ValueKind::I64(*i),
        toml::Value::Float(f) => ValueKind::Float(*f),
        toml::Value::Boolean(b) => ValueKind::Boolean(*b),
        toml::Value::Datetime(d) => ValueKind::String(d.to_string()),
        toml::Value::Array(items) => ValueKind::Array(items.iter().map(to_config).collect()),
        toml::Value::Table(t) => ValueKind::Table(t.iter().map(|(k, v)| (k.clone(), to_config(v))).collect()),
    };
    config::Value::new(None, kind)
}

/// An error the file alone gives once layered (rare: see `load_str`), with the key's line.
fn file_config_error(source: &Source, e: ConfigError) -> ScenarioError {
    let shown = source.path.display().to_string();
    let (key, message) = split_config_error(e);
    let line = key
        .as_deref()
        .and_then(|k| locate::line_of_path(&source.text, &KeyPath::parse_dotted(&dotted(k))))
        .or_else(|| line_of_huge_integer(&source.text));
    let origin = match line {
        Some(line) => format!("{shown}:{line}"),
        None => shown,
    };
    let err = ScenarioError::new(
        origin,
        key.map(|k| KeyPath::parse_dotted(&dotted(&k)).to_string()),
        message.clone(),
    );
    if message.contains("too large") {
        err.with_hint(
            "TOML integers stop at 9223372036854775807: write a larger seed as a string, such as \
             seed = \"18446744073709551615\"",
        )
    } else {
        err
    }
}

/// The first line with an integer beyond i64, which TOML does not have.
fn line_of_huge_integer(text: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.split(|c: char| !c.is_ascii_digit())
                .any(|digits| !digits.is_empty() && digits.parse::<i64>().is_err())
        })
        .map(|i| i + 1)
}

/// `agents[0].count` (how `config` names keys) as `agents.0.count`.
fn dotted(config_key: &str) -> String {
    let spaced = config_key.replace(['[', ']'], ".");
    spaced
        .split('.')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

fn config_error(origin: String, e: ConfigError) -> ScenarioError {
    let (key, message) = split_config_error(e);
    let key = key.map(|k| KeyPath::parse_dotted(&dotted(&k)).to_string());
    let message = match key.as_deref() {
        Some(key) => plain_variant_error(key, message),
        None => message,
    };
    ScenarioError::new(origin, Some(key).flatten(), message)
}

/// `config`'s "enum BackendKind does not have variant constructor mongo" as the file's own
/// errors put it: "unknown variant `mongo`, expected `memory` or `redis`".
fn plain_variant_error(key: &str, message: String) -> String {
    const ENUMS: [(&str, &str); 3] = [
        ("scenario.mode", "`lockstep` or `free`"),
        ("backend.kind", "`memory` or `redis`"),
        ("backend.cleanup", "one of `before`, `after`, `both`, `never`"),
    ];
    let Some((_, variant)) = message.split_once("does not have variant constructor ") else {
        return message;
    };
    match ENUMS.iter().find(|(k, _)| *k == key) {
        Some((_, expected)) => format!("unknown variant `{variant}`, expected {expected}"),
        None => message,
    }
}

fn split_config_error(e: ConfigError) -> (Option<String>, String) {
    match e {
        ConfigError::Type {
            unexpected,
            expected,
            key,
            ..
        } => (key, format!("invalid type: {unexpected}, expected {expected}")),
        ConfigError::At { error, key, .. } => {
            let (inner_key, message) = split_config_error(*error);
            (key.or(inner_key), message)
        }
        ConfigError::Message(m) => (None, m),
        ConfigError::NotFound(key) => (Some(key), "missing".to_string()),
        other => (None, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_are_toml_or_plain_words() {
        assert_eq!(parse_value("7"), toml::Value::Integer(7));
        assert_eq!(parse_value("0.5"), toml::Value::Float(0.5));
        assert_eq!(parse_value("\"redis\""), toml::Value::String("redis".into()));
        assert_eq!(parse_value("redis"), toml::Value::String("redis".into()));
        assert_eq!(parse_value("two words"), toml::Value::String("two words".into()));
        assert!(matches!(parse_value("{ fanout = 3 }"), toml::Value::Table(_)));
    }

    #[test]
    fn keys_become_config_paths() {
        assert_eq!(
            config_path(&KeyPath::parse_dotted("agents.0.count")),
            "agents[0].count"
        );
        assert_eq!(
            config_path(&KeyPath::parse_dotted("scenario.seed")),
            "scenario.seed"
        );
        assert!(parse_key("agents..count").is_err());
        assert!(parse_key("a b").is_err());
    }

    #[test]
    fn config_keys_read_as_dotted_paths() {
        assert_eq!(dotted("agents[0]params"), "agents.0.params");
        assert_eq!(dotted("agents[0].params"), "agents.0.params");
        assert_eq!(dotted("agents[1]"), "agents.1");
        assert_eq!(dotted("scenario.seed"), "scenario.seed");
    }

    #[test]
    fn set_redacts_passwords_in_its_origin() {
        let mut o = Overrides::new();
        o.set("backend.url=redis://u:hunter2@h:1").unwrap();
        assert!(!o.entries[0].origin.contains("hunter2"));
    }
}
