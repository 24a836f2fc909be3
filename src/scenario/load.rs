//! Reading a scenario: the file, then environment variables, then command-line overrides.
//!
//! The file is first parsed on its own with `toml`, which knows line numbers, so that errors
//! in the file point at a line. Every environment variable and override is a TOML value at a
//! key path: each is laid over the file's table on its own first, so that an error in one
//! of them is reported with its name, then all of them in order, and the result is
//! deserialized once.

use std::path::Path;

use super::file::ScenarioFile;
use super::locate::{self, KeyPath};
use super::overrides::{Override, Overrides, environment_overrides};
use super::validate::{self, Origins};
use super::{Scenario, ScenarioError, Source};
use crate::behaviour::Registry;

/// Scenario files larger than this are refused: a scenario is a page of settings, and a
/// bigger file is almost certainly the wrong file.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Loads a scenario file, layering `env` (normally `std::env::vars()`) and `overrides`.
///
/// # Errors
///
/// A file that cannot be read, is too large or is not UTF-8; anything wrong in it, in the
/// environment or in the overrides (see [`load_str`]).
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

/// [`load`] for a scenario already in memory; `path` is only used in messages.
///
/// # Errors
///
/// The first thing wrong, with where it came from: the file (and its line), an environment
/// variable, or a `--set`.
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
    let table = parse_table(&source)?;
    // Environment variables, then command-line overrides (later ones win). Each is also
    // tried on top of the file and the ones before it, so that an error names its origin;
    // one that needs a later one (`network.m` before `network.kind`, in a file without
    // [network]) is fine once that one comes.
    let layers: Vec<Override> = environment_overrides(env)?
        .into_iter()
        .chain(overrides.entries.iter().cloned())
        .collect();
    let mut merged = table.clone();
    let mut first_error = None;
    for o in &layers {
        o.apply(&mut merged)?;
        if first_error.is_none()
            && let Err((key, message)) = deserialize(merged.clone())
        {
            first_error = Some(with_key_hint(ScenarioError::new(o.origin.clone(), key, message)));
        }
    }
    let file = match (deserialize(merged), first_error) {
        (Ok(file), _) => file,
        (Err(_), Some(named)) => return Err(named),
        (Err((key, message)), None) => {
            return Err(ScenarioError::new(
                source.path.display().to_string(),
                key,
                message,
            ));
        }
    };
    let mut origins = Origins::default();
    for o in &layers {
        origins.push(o.path.clone(), o.origin.clone());
    }
    validate::validate(file, &source, &origins, registry)
}

/// An `api_key` given in the scenario: where the key goes instead.
fn with_key_hint(err: ScenarioError) -> ScenarioError {
    if err.message.contains("unknown field `api_key`") {
        err.with_hint(
            "a key is never written in a scenario: agora reads it from the environment variable \
             that [llm] api_key_env names (OPENAI_API_KEY unless set), as in export OPENAI_API_KEY=...",
        )
    } else {
        err
    }
}

/// The sections that are one table each (`[[agents]]` is the one list of tables).
const ONE_TABLE_SECTIONS: [&str; 5] = ["scenario", "backend", "output", "llm", "network"];

/// Parses the file alone: syntax first, then types and unknown keys, both with a line.
fn parse_file(source: &Source) -> Result<ScenarioFile, ScenarioError> {
    toml::from_str::<ScenarioFile>(&source.text).map_err(|e| {
        let err = file_error(source, &e);
        if e.message().contains("unknown field `api_key`") {
            with_key_hint(err)
        } else if e.message().contains("unknown field") {
            err.with_hint(
                "check the spelling; the README's \"Scenarios\" section lists every key, and \
                 `agora check scenarios/gossip.toml` prints a scenario with all of them",
            )
        } else if err.key.as_deref() == Some("agents") && e.message().contains("expected a sequence") {
            err.with_hint("agent tables are written [[agents]], with two brackets: there may be several")
        } else if let Some(section) = ONE_TABLE_SECTIONS.iter().find(|s| {
            err.key
                .as_deref()
                .is_some_and(|k| k.starts_with(&format!("{s}[")))
        }) {
            ScenarioError {
                message: format!("[[{section}]] makes a list of tables, and {section} is one table"),
                ..err
            }
            .with_hint(format!("write [{section}], with one pair of brackets"))
        } else {
            err
        }
    })
}

/// The scenario file as a table, for the overrides to be laid over. Integers beyond TOML's
/// (above 9223372036854775807, which a u64 seed may be) are refused here, at their line.
fn parse_table(source: &Source) -> Result<toml::Table, ScenarioError> {
    toml::from_str::<toml::Table>(&source.text).map_err(|e| {
        let err = file_error(source, &e);
        if e.message().contains("too large") {
            err.with_hint(
                "TOML integers stop at 9223372036854775807: write a larger seed as a string, such as \
                 seed = \"18446744073709551615\"",
            )
        } else {
            err
        }
    })
}

/// A scenario from its table, or the key at fault (as a path) and what is wrong.
fn deserialize(table: toml::Table) -> Result<ScenarioFile, (Option<String>, String)> {
    serde_path_to_error::deserialize(table).map_err(|e| {
        let mut path = KeyPath::default();
        for segment in e.path().iter() {
            path = match segment {
                serde_path_to_error::Segment::Seq { index } => path.index(*index),
                serde_path_to_error::Segment::Map { key } => path.key(key.clone()),
                serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => path,
            };
        }
        let message = plain_words(e.inner().message());
        // serde reports an unknown key at its table, not at the key (most of the time: a key
        // added by --set is reported at itself): name it, once.
        let last = e.path().iter().next_back().and_then(|s| match s {
            serde_path_to_error::Segment::Map { key } => Some(key.as_str()),
            _ => None,
        });
        if let Some(unknown) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            && last != Some(unknown)
        {
            path = path.key(unknown);
        }
        let key = (!path.0.is_empty()).then(|| path.to_string());
        (key, message)
    })
}

/// serde's message without the names of agora's Rust types, which mean nothing to a user:
/// "expected struct NetworkSection" says "expected a table".
fn plain_words(message: &str) -> String {
    match message.split_once("expected struct ") {
        Some((before, after)) => {
            let rest = after.trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_');
            format!("{before}expected a table{rest}")
        }
        None => message.to_string(),
    }
}

/// An error the TOML parser found in the file, at its line and key.
fn file_error(source: &Source, e: &toml::de::Error) -> ScenarioError {
    let shown = source.path.display();
    let Some(span) = e.span() else {
        return ScenarioError::new(shown.to_string(), None, plain_words(e.message()));
    };
    let line = locate::line_of_offset(&source.text, span.start);
    let key = locate::path_at_offset(&source.text, span.start).to_string();
    let key = (!key.is_empty()).then_some(key);
    ScenarioError::new(format!("{shown}:{line}"), key, plain_words(e.message()))
}
