//! Values set outside the scenario file: `AGORA_<SECTION>__<KEY>` environment variables, and
//! `--set KEY=VALUE` with the flags that stand for keys. Each is a TOML value at a key path,
//! laid over the file's table.

use super::ScenarioError;
use super::locate::{KeyPath, Segment};

/// The sections an environment variable may name.
const SECTIONS: [&str; 6] = ["scenario", "backend", "output", "llm", "agents", "network"];

/// Values set on the command line, highest precedence first among equals: `--set KEY=VALUE`
/// and the flags that stand for a key (`--seed`, `--backend`, `--redis-url`, `--out`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub(super) entries: Vec<Override>,
}

/// One value set outside the file: a TOML value at a key path.
#[derive(Debug, Clone)]
pub(super) struct Override {
    pub path: KeyPath,
    pub value: toml::Value,
    /// How the user wrote it, for error messages: `--set scenario.seed=x`, `--seed 3`.
    pub origin: String,
}

impl Overrides {
    pub fn new() -> Self {
        Overrides::default()
    }

    /// Adds a `--set KEY=VALUE`. The value is read as TOML; a plain word that is not valid
    /// TOML is taken as a string, so `--set backend.kind=redis` works without quotes.
    pub fn set(&mut self, arg: &str) -> Result<(), ScenarioError> {
        self.set_from("--set", arg)
    }

    /// Adds a `KEY=VALUE` that `flag` gave (a sweep's `--vary`), read as `--set` reads it;
    /// errors name `flag`.
    pub fn set_from(&mut self, flag: &str, arg: &str) -> Result<(), ScenarioError> {
        let Some((key, raw)) = arg.split_once('=') else {
            return Err(ScenarioError::new(
                format!("{flag} {}", redact_arg(arg)),
                None,
                "expected KEY=VALUE, as in --set scenario.seed=7",
            ));
        };
        let key = key.trim();
        // `--set llm.api_key=sk-...` is a mistake (keys come from api_key_env's variable),
        // and a secret: its value is never shown.
        let secret = is_secret(key);
        let origin = if secret {
            format!("{flag} {key}=***")
        } else {
            format!("{flag} {}", redact_arg(arg))
        };
        let path = parse_key(key).map_err(|m| ScenarioError::new(origin.clone(), None, m))?;
        let value = parse_value(raw.trim(), secret).map_err(|m| {
            ScenarioError::new(origin.clone(), Some(key.to_string()), m).with_hint(
                "close arrays, tables and quotes, and quote the whole argument for the shell: --set 'agents.0.params.topics=[\"a\", \"b\"]'",
            )
        })?;
        self.entries.push(Override { path, value, origin });
        Ok(())
    }

    /// Adds a flag that stands for a key, such as `--seed 7` for `scenario.seed`.
    pub fn flag(&mut self, flag: &str, key: &str, value: toml::Value) {
        let shown = match &value {
            toml::Value::String(s) => shorten(&crate::backend::url::redact(s)),
            other => shorten(&other.to_string()),
        };
        let path = KeyPath::parse_dotted(key);
        let origin = format!("{flag} {shown}");
        // Flags come last and win; a --set of the same key with another value loses, loudly.
        for earlier in self.entries.iter().filter(|e| e.path == path && e.value != value) {
            tracing::warn!("{origin} wins over {} (both set {key})", earlier.origin);
        }
        self.entries.push(Override { path, value, origin });
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Whether a key's value is a secret not to show: an API key, a password, a token (and
/// `api_key_env`, where a key is sometimes pasted instead of a variable's name).
fn is_secret(key: &str) -> bool {
    let last = key
        .trim()
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let last = last.strip_suffix("_env").unwrap_or(&last);
    ["key", "password", "secret", "token"]
        .iter()
        .any(|word| last == *word || last.ends_with(&format!("_{word}")))
}

/// `KEY=VALUE` with any password in the value hidden, and a long value cut short.
fn redact_arg(arg: &str) -> String {
    shorten(&crate::backend::url::redact(arg))
}

/// Text for an error line: at most 80 characters.
pub(super) fn shorten(text: &str) -> String {
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

/// A value as TOML, or else a plain word as a string. What begins as TOML's arrays, tables
/// and quoted strings do (`[`, `{`, `"`, `'`) must be TOML: `[1,2` is a mistake, not a word.
///
/// A Jinja template (`{{ message.content }}`, `{% if ... %}`) is a word: prompts are set so.
/// The error names the value only when it is not `secret`, and with any URL's password hidden.
fn parse_value(raw: &str, secret: bool) -> Result<toml::Value, String> {
    // TOML reads these words as floats; on a command line they are words (`mode=nan`), and
    // no scenario value wants a NaN or an infinity.
    if matches!(raw, "nan" | "+nan" | "-nan" | "inf" | "+inf" | "-inf") {
        return Ok(toml::Value::String(raw.to_string()));
    }
    let doc = format!("v = {raw}");
    let template = raw.starts_with("{{") || raw.starts_with("{%") || raw.starts_with("{#");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut table) => Ok(table
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string()))),
        Err(e) if raw.starts_with(['[', '{', '"', '\'']) && !template => {
            let shown = if secret {
                "the value".to_string()
            } else {
                shorten(&crate::backend::url::redact(raw))
            };
            Err(format!("{shown} is not a TOML value: {}", e.message()))
        }
        Err(_) => Ok(toml::Value::String(raw.to_string())),
    }
}

impl Override {
    /// Sets the override's value at its path in `table`, making the tables on the way.
    pub fn apply(&self, table: &mut toml::Table) -> Result<(), ScenarioError> {
        let fail =
            |message: String| ScenarioError::new(self.origin.clone(), Some(self.path.to_string()), message);
        let [Segment::Key(first), rest @ ..] = self.path.0.as_slice() else {
            return Err(fail(
                "a key path starts with a section name, such as scenario.seed".into(),
            ));
        };
        let mut slot = table
            .entry(first.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        for segment in rest {
            slot = match (segment, slot) {
                (Segment::Key(k), toml::Value::Table(t)) => t
                    .entry(k.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new())),
                (Segment::Index(i), toml::Value::Array(items)) => {
                    let len = items.len();
                    items.get_mut(*i).ok_or_else(|| {
                        fail(format!(
                            "the scenario has {len} [[{first}]] table{}, numbered from 0",
                            if len == 1 { "" } else { "s" }
                        ))
                    })?
                }
                (Segment::Key(k), toml::Value::Array(_)) => {
                    return Err(fail(format!(
                        "cannot set `{k}` in a list of tables: its tables are numbered from 0"
                    ))
                    .with_hint(format!(
                        "name the table by its number, as in --set {first}.0.count=50"
                    )));
                }
                (_, other) => {
                    let kind = other.type_str();
                    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                        "an"
                    } else {
                        "a"
                    };
                    return Err(fail(format!(
                        "cannot set a key inside {}, which is {article} {kind}",
                        shorten(&other.to_string()),
                    )));
                }
            };
        }
        *slot = self.value.clone();
        Ok(())
    }
}

/// The `AGORA_<SECTION>__<KEY>` variables, sorted by name, as overrides. Values read like
/// `--set` values: TOML, or a plain word taken as a string. Variables without `__` (such as
/// `AGORA_LOG`) are not scenario keys and are ignored; a near miss such as
/// `AGORA_SCENARIO_SEED`, or an unknown section, is an error rather than silently unused.
pub(super) fn environment_overrides(env: &[(String, String)]) -> Result<Vec<Override>, ScenarioError> {
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
                    format!(
                        "there is no section `{section}`: the sections the environment may set are {}",
                        SECTIONS
                            .iter()
                            .filter(|s| **s != "agents")
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
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
        let origin = shorten(&crate::backend::url::redact(&origin));
        let dotted = lower.replace("__", ".");
        let value = parse_value(value.trim(), is_secret(&dotted))
            .map_err(|m| ScenarioError::new(origin.clone(), None, m))?;
        found.push(Override {
            path: KeyPath::parse_dotted(&dotted),
            value,
            origin,
        });
    }
    found.sort_by(|a, b| a.origin.cmp(&b.origin));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_are_toml_or_plain_words() {
        let value = |raw| parse_value(raw, false).unwrap();
        assert_eq!(value("7"), toml::Value::Integer(7));
        assert_eq!(value("0.5"), toml::Value::Float(0.5));
        assert_eq!(value("\"redis\""), toml::Value::String("redis".into()));
        assert_eq!(value("redis"), toml::Value::String("redis".into()));
        assert_eq!(value("two words"), toml::Value::String("two words".into()));
        assert_eq!(value("true"), toml::Value::Boolean(true));
        // TOML's float words are words here.
        assert_eq!(value("nan"), toml::Value::String("nan".into()));
        assert_eq!(value("-inf"), toml::Value::String("-inf".into()));
        assert_eq!(
            value("redis://[::1]:6379"),
            toml::Value::String("redis://[::1]:6379".into())
        );
        assert!(matches!(value("{ fanout = 3 }"), toml::Value::Table(_)));
        // What starts as TOML must be TOML.
        for broken in ["[1,2", "{ fanout = }", "\"unclosed", "'half"] {
            let e = parse_value(broken, false).unwrap_err();
            assert!(e.contains("is not a TOML value"), "{broken}: {e}");
        }
        // Templates are words; a secret or a URL's password is never shown.
        assert_eq!(
            value("{{ message.content }} ok"),
            toml::Value::String("{{ message.content }} ok".into())
        );
        assert_eq!(
            value("{% if x %}y{% endif %}"),
            toml::Value::String("{% if x %}y{% endif %}".into())
        );
        let e = parse_value("\"sk-secret", true).unwrap_err();
        assert!(!e.contains("sk-secret"), "{e}");
        let e = parse_value("[\"http://u:pw@h/v1\"", false).unwrap_err();
        assert!(!e.contains("pw@"), "{e}");
    }

    #[test]
    fn overrides_are_laid_over_the_table() {
        let mut table: toml::Table =
            toml::from_str("[scenario]\nname = \"x\"\n[[agents]]\nid = \"a\"\n").unwrap();
        let mut o = Overrides::new();
        o.set("scenario.seed=7").unwrap();
        o.set("agents.0.params.fanout=3").unwrap();
        o.set("backend.url=redis://h:1/0").unwrap();
        for e in &o.entries {
            e.apply(&mut table).unwrap();
        }
        assert_eq!(table["scenario"]["seed"].as_integer(), Some(7));
        assert_eq!(table["agents"][0]["params"]["fanout"].as_integer(), Some(3));
        assert_eq!(table["backend"]["url"].as_str(), Some("redis://h:1/0"));
        let mut bad = Overrides::new();
        bad.set("agents.1.count=2").unwrap();
        bad.set("scenario.name.first=2").unwrap();
        let e = bad.entries[0].apply(&mut table).unwrap_err();
        assert!(e.message.contains("1 [[agents]] table,"), "{e}");
        let e = bad.entries[1].apply(&mut table).unwrap_err();
        assert!(e.message.contains("which is a string"), "{e}");
        assert!(parse_key("agents..count").is_err());
        assert!(parse_key("a b").is_err());
    }

    #[test]
    fn set_redacts_passwords_in_its_origin() {
        let mut o = Overrides::new();
        o.set("backend.url=redis://u:hunter2@h:1").unwrap();
        assert!(!o.entries[0].origin.contains("hunter2"));
    }
}
