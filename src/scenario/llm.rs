//! `[llm]`, validated: the model client's settings, with every default filled in.

use std::time::Duration;

use super::file::{BaseUrls, LlmSection};
use super::locate::KeyPath;
use super::{ScenarioError, duration};
use crate::llm::client::ClientConfig;

/// The model client's settings. The key is not here: only the name of the variable that
/// holds it, read when the client is made.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    pub base_urls: Vec<String>,
    pub model: Option<String>,
    pub api_key_env: String,
    pub max_concurrency: u32,
    pub requests_per_minute: u32,
    pub tokens_per_minute: u64,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub temperature: f64,
    pub max_tokens: u32,
}

/// Where requests go when `[llm]` names no server.
pub const OPENAI: &str = "https://api.openai.com/v1";

impl LlmConfig {
    /// The HTTP client's settings, the key read from its environment variable now.
    pub fn client(&self) -> ClientConfig {
        ClientConfig {
            base_urls: self.base_urls.clone(),
            api_key: std::env::var(&self.api_key_env).ok().filter(|k| !k.is_empty()),
            api_key_env: self.api_key_env.clone(),
            timeout: self.timeout,
            max_attempts: self.max_attempts,
        }
    }

    /// As the scenario file writes it, every default filled in; a password in a base URL
    /// (`http://user:password@host/v1`) hidden, as `agora check` and `summary.json` show it.
    pub fn to_section(&self) -> LlmSection {
        let shown = |url: &String| crate::backend::url::redact(url);
        LlmSection {
            base_url: Some(match self.base_urls.as_slice() {
                [one] => BaseUrls::One(shown(one)),
                many => BaseUrls::Many(many.iter().map(shown).collect()),
            }),
            model: self.model.clone(),
            api_key_env: self.api_key_env.clone(),
            max_concurrency: i64::from(self.max_concurrency),
            requests_per_minute: i64::from(self.requests_per_minute),
            tokens_per_minute: self.tokens_per_minute as i64,
            timeout: duration::format(self.timeout),
            max_attempts: i64::from(self.max_attempts),
            temperature: self.temperature,
            max_tokens: i64::from(self.max_tokens),
        }
    }
}

/// Whether `name` can name an environment variable: letters, digits and `_`, not starting
/// with a digit.
fn is_variable_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The servers of `[llm]`: `base_url` (one URL or a list), else `$OPENAI_BASE_URL`, else
/// OpenAI's; each an http:// or https:// URL, without a trailing `/`.
fn base_urls(
    section: &LlmSection,
    at: &impl Fn(KeyPath, String) -> ScenarioError,
) -> Result<Vec<String>, ScenarioError> {
    let key = |k: &str| KeyPath::default().key("llm").key(k);
    // Without base_url, the server is OpenAI's or $OPENAI_BASE_URL's: a bad one is blamed on
    // the variable, not on a line of the file that does not name it.
    let from_env = std::env::var("OPENAI_BASE_URL")
        .ok()
        .filter(|_| section.base_url.is_none());
    let base_urls = match (&section.base_url, &from_env) {
        (Some(urls), _) => urls.to_vec(),
        (None, Some(url)) => vec![url.clone()],
        (None, None) => vec![OPENAI.to_string()],
    };
    if base_urls.is_empty() {
        return Err(at(
            key("base_url"),
            "names no server: give a URL, or a list of them".into(),
        ));
    }
    base_urls
        .into_iter()
        .map(|u| {
            let trimmed = u.trim().trim_end_matches('/').to_string();
            match url::Url::parse(&trimmed) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {
                    Ok(trimmed)
                }
                _ => {
                    let message = format!(
                        "{:?} is not an http:// or https:// URL, such as http://127.0.0.1:8000/v1",
                        crate::backend::url::redact(&u)
                    );
                    Err(match from_env {
                        Some(_) => ScenarioError::new("environment variable OPENAI_BASE_URL", None, message)
                            .with_hint("set OPENAI_BASE_URL to the server's URL, or give llm.base_url in the scenario"),
                        None => at(key("base_url"), message),
                    })
                }
            }
        })
        .collect()
}

/// The settings of `[llm]`; `at(key, message)` makes an error at `llm.{key}`.
pub(crate) fn validate(
    section: &LlmSection,
    at: impl Fn(KeyPath, String) -> ScenarioError,
) -> Result<LlmConfig, ScenarioError> {
    let key = |k: &str| KeyPath::default().key("llm").key(k);
    let base_urls = base_urls(section, &at)?;
    let whole = |k: &str, v: i64, least: i64, most: i64| {
        if (least..=most).contains(&v) {
            Ok(v)
        } else {
            Err(at(key(k), format!("must be between {least} and {most}, got {v}")))
        }
    };
    let timeout = duration::parse(&section.timeout).map_err(|m| at(key("timeout"), m))?;
    if timeout.is_zero() {
        return Err(at(key("timeout"), "must be longer than zero".into()));
    }
    if !(section.temperature.is_finite() && (0.0..=2.0).contains(&section.temperature)) {
        return Err(at(
            key("temperature"),
            format!("must be between 0 and 2, got {}", section.temperature),
        ));
    }
    // The variable's name, not the key: a key pasted here would be printed by `agora check`
    // and kept in summary.json, so it is refused without being shown.
    // Empty: no key is sent (servers that want none).
    if !section.api_key_env.is_empty() && !is_variable_name(&section.api_key_env) {
        return Err(at(
            key("api_key_env"),
            "is not the name of an environment variable (letters, digits and _, such as OPENAI_API_KEY); \
             it names the variable that holds the key, and never holds the key itself"
                .into(),
        ));
    }
    Ok(LlmConfig {
        base_urls,
        model: section.model.clone().filter(|m| !m.trim().is_empty()),
        api_key_env: section.api_key_env.clone(),
        max_concurrency: whole("max_concurrency", section.max_concurrency, 1, 4096)? as u32,
        requests_per_minute: whole("requests_per_minute", section.requests_per_minute, 0, 10_000_000)? as u32,
        tokens_per_minute: whole(
            "tokens_per_minute",
            section.tokens_per_minute,
            0,
            1_000_000_000_000,
        )? as u64,
        timeout,
        max_attempts: whole("max_attempts", section.max_attempts, 1, 100)? as u32,
        temperature: section.temperature,
        max_tokens: whole("max_tokens", section.max_tokens, 1, 1_000_000)? as u32,
    })
}
