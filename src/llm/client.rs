//! Talking to an OpenAI-compatible server: `POST {base_url}/chat/completions`, with a timeout
//! per request and retries (exponential backoff with jitter, `Retry-After` honoured) on 429,
//! 5xx, timeouts, lost connections and replies that cannot be read. Several base URLs are
//! used round-robin, the way a few vLLM servers share a run's agents.
//!
//! The API key goes in the `Authorization` header and nowhere else: no error, log or record
//! holds it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::error::{LlmError, LlmErrorKind};
use super::request::{Completion, ResolvedRequest, Usage};

/// The first wait before a retry; each retry waits twice as long, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// How the client reaches its servers.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_urls: Vec<String>,
    pub api_key: Option<String>,
    /// The environment variable the key was read from, for the hint when a server refuses.
    pub api_key_env: String,
    pub timeout: Duration,
    pub max_attempts: u32,
}

pub struct HttpClient {
    http: reqwest::Client,
    config: ClientConfig,
    next: AtomicUsize,
    /// When a wait the server asked for was last said.
    told_to_wait: std::sync::Mutex<Option<Instant>>,
    /// Whether the user was told that an answer was cut at max_tokens, or that the server
    /// counts no tokens: once a run is enough.
    told_cut: std::sync::atomic::AtomicBool,
    told_no_usage: std::sync::atomic::AtomicBool,
}

/// Why one attempt failed, and whether another may succeed.
struct Failure {
    error: LlmError,
    retry: bool,
    /// What the server asked for (`Retry-After`).
    wait: Option<Duration>,
}

impl HttpClient {
    /// # Errors
    ///
    /// The HTTP client cannot be built (no TLS roots on this machine).
    pub fn new(config: ClientConfig) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5).min(config.timeout))
            .build()
            .map_err(|e| {
                LlmError::new(
                    LlmErrorKind::Unavailable,
                    format!("cannot make an HTTP client: {e}"),
                )
            })?;
        Ok(HttpClient {
            http,
            config,
            next: AtomicUsize::new(0),
            told_to_wait: std::sync::Mutex::new(None),
            told_cut: std::sync::atomic::AtomicBool::new(false),
            told_no_usage: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The next base URL, round-robin.
    fn base(&self) -> &str {
        let urls = &self.config.base_urls;
        &urls[self.next.fetch_add(1, Ordering::Relaxed) % urls.len()]
    }

    /// Says on stderr that the server asked to wait a second or more (429 with Retry-After),
    /// at most once in ten seconds however many requests were told so: a run that stands
    /// still says why.
    fn say_wait(&self, asked: Duration) {
        if asked < Duration::from_secs(1) {
            return;
        }
        let mut told = self.told_to_wait.lock().unwrap_or_else(|e| e.into_inner());
        if told.is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(10)) {
            *told = Some(Instant::now());
            tracing::warn!(
                "the model server asked to wait {:.0} s (429, Retry-After); requests wait, then try again",
                asked.as_secs_f64()
            );
        }
    }

    fn authorized(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// Asks for a completion, retrying what can be retried; returns it with the time it took.
    ///
    /// # Errors
    ///
    /// A refusal that retrying cannot change (401, 404, a context too long), or the last
    /// failure once `max_attempts` are spent.
    pub async fn complete(&self, request: &ResolvedRequest) -> Result<(Completion, Duration), LlmError> {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            match self.attempt(request).await {
                Ok(completion) => return Ok((completion, started.elapsed())),
                Err(failure) if failure.retry && attempt < self.config.max_attempts => {
                    if let Some(asked) = failure.wait {
                        self.say_wait(asked);
                    }
                    let wait = failure.wait.unwrap_or_else(|| backoff(&request.key(), attempt));
                    tracing::debug!("{}; trying again in {} ms", failure.error, wait.as_millis());
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(failure) if failure.retry => {
                    let mut error = failure.error;
                    error.message = format!("{} (after {attempt} attempts)", error.message);
                    return Err(error);
                }
                Err(failure) => return Err(failure.error),
            }
        }
    }

    async fn attempt(&self, request: &ResolvedRequest) -> Result<Completion, Failure> {
        let url = format!("{}/chat/completions", self.base());
        let mut body = json!({
            "model": request.model,
            "messages": request.messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        });
        if let Some(seed) = request.seed {
            body["seed"] = json!(seed);
        }
        let sent = self
            .authorized(self.http.post(&url))
            .timeout(self.config.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return Err(transport_failure(&url, &e)),
        };
        let status = response.status().as_u16();
        let wait = retry_after(response.headers());
        let text = response.text().await.map_err(|e| transport_failure(&url, &e))?;
        let text = self.redact(&text);
        if !(200..300).contains(&status) {
            let mut failure = status_failure(&url, status, &text, &request.model, wait);
            failure.error = self.explain_refusal(status, failure.error);
            return Err(failure);
        }
        let answer = parse_completion(&text).map_err(|(why, hint)| Failure {
            error: LlmError::new(LlmErrorKind::Unreadable, format!("{url} answered {why}")).with_hint(hint),
            retry: true,
            wait: None,
        })?;
        self.say_once_about(&answer);
        Ok(answer.completion)
    }

    /// Warns, once a run, of answers cut at max_tokens and of a server that counts no tokens:
    /// neither fails a step, and both change what a user reads in the results.
    fn say_once_about(&self, answer: &Answer) {
        use std::sync::atomic::Ordering;
        if answer.cut && !self.told_cut.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "a completion was cut off at max_tokens (finish_reason \"length\"); raise [llm] max_tokens for whole answers"
            );
        }
        if !answer.counted && !self.told_no_usage.swap(true, Ordering::Relaxed) {
            tracing::warn!("the model server's answers have no usage block: llm_tokens counts them as 0");
        }
    }

    /// A refused key's hint names the variable it comes from, and says when it is not set
    /// (the usual cause of a 401 on a first run).
    fn explain_refusal(&self, status: u16, error: LlmError) -> LlmError {
        if !matches!(status, 401 | 403) {
            return error;
        }
        let env = &self.config.api_key_env;
        match self.config.api_key {
            None => error.with_hint(format!(
                "no key was sent: the environment variable {env} ([llm] api_key_env) is not set; export {env}=<your key>"
            )),
            Some(_) => error.with_hint(format!(
                "check the key in {env} ([llm] api_key_env): is it this server's, and allowed this model?"
            )),
        }
    }

    /// `text` with the key, should a server echo it, masked.
    fn redact(&self, text: &str) -> String {
        match &self.config.api_key {
            Some(key) if key.len() >= 4 && text.contains(key.as_str()) => text.replace(key.as_str(), "***"),
            _ => text.to_string(),
        }
    }

    /// Checks, before a run, that each server answers, takes the key and has `models`:
    /// `GET {base_url}/models`. A server without that endpoint is taken at its word.
    ///
    /// # Errors
    ///
    /// Nothing listening, the key refused, a model the server does not list.
    pub async fn probe(&self, models: &[String]) -> Result<(), LlmError> {
        for base in &self.config.base_urls {
            let url = format!("{base}/models");
            let sent = self
                .authorized(self.http.get(&url))
                .timeout(self.config.timeout.min(Duration::from_secs(10)))
                .send()
                .await;
            let response = sent.map_err(|e| transport_failure(&url, &e).error)?;
            let status = response.status().as_u16();
            let text = self.redact(&response.text().await.unwrap_or_default());
            match status {
                200..=299 => check_models(base, &text, models)?,
                401 | 403 => {
                    let error = status_failure(&url, status, &text, "", None).error;
                    return Err(self.explain_refusal(status, error));
                }
                // The usual slip with vLLM and others: the server's address without the API's
                // root. (Some servers have no model list at all: those are taken at their
                // word, and the first request will tell.)
                404 if !base.trim_end_matches('/').ends_with("/v1") => {
                    return Err(LlmError::new(
                        LlmErrorKind::Unavailable,
                        format!(
                            "{} answered 404: no OpenAI API there",
                            crate::backend::url::redact(&url)
                        ),
                    )
                    .with_hint(
                        "base_url is the API's root, which usually ends in /v1 (http://127.0.0.1:8000/v1 for vLLM)",
                    ));
                }
                _ => tracing::debug!("{url} answered {status}; the models are not checked"),
            }
        }
        Ok(())
    }
}

/// The wait before retry `attempt` (from 1): exponential, capped, with jitter from the key so
/// that agents retrying at once spread out.
fn backoff(key: &str, attempt: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1 << attempt.min(16).saturating_sub(1))
        .min(MAX_BACKOFF);
    let spread = key
        .bytes()
        .chain(attempt.to_le_bytes())
        .fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
    // Between half and one and a half times the base.
    base / 2 + base.mul_f64((spread % 1000) as f64 / 1000.0)
}

/// `Retry-After`: seconds, as servers send it for 429 (an HTTP date is taken as one second).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    Some(match value.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs.min(300.0)),
        _ => Duration::from_secs(1),
    })
}

fn transport_failure(url: &str, e: &reqwest::Error) -> Failure {
    // A password in the URL (http://user:password@host) is never printed.
    let url = crate::backend::url::redact(url);
    const CHECK: &str = "check [llm] base_url, and that the server is running";
    let (what, hint) = if e.is_timeout() {
        (
            "did not answer in time",
            "check [llm] base_url and that the server is running; a slow server may need a longer [llm] timeout",
        )
    } else if e.is_connect() {
        (
            "could not be reached (is it running, and the address right?)",
            // A new user without a server or network may have only the recording beside a
            // shipped scenario.
            "check [llm] base_url, and that the server is running; to run without a server, answer from a recording of this scenario with --replay FILE (a run's llm.jsonl; the shipped LLM scenarios have one beside them)",
        )
    } else {
        ("broke off the exchange", CHECK)
    };
    Failure {
        error: LlmError::new(
            LlmErrorKind::Unavailable,
            format!("the model server at {url} {what}"),
        )
        .with_hint(hint),
        retry: true,
        wait: None,
    }
}

/// The server's own error message, if its body is OpenAI's `{"error": {"message": ...}}`.
fn server_message(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    let message = v["error"]["message"].as_str().or_else(|| v["error"].as_str())?;
    Some(message.chars().take(200).collect())
}

fn status_failure(url: &str, status: u16, text: &str, model: &str, wait: Option<Duration>) -> Failure {
    let url = crate::backend::url::redact(url);
    let said = server_message(text).map_or_else(String::new, |m| format!(": {m}"));
    let (kind, retry, hint) = match status {
        429 => (
            LlmErrorKind::Unavailable,
            true,
            "lower [llm] max_concurrency or set requests_per_minute",
        ),
        500..=599 => (
            LlmErrorKind::Unavailable,
            true,
            "the server failed; check its logs",
        ),
        401 | 403 => (
            LlmErrorKind::Refused,
            false,
            "check the key: [llm] api_key_env names the environment variable that holds it",
        ),
        404 => (
            LlmErrorKind::NoModel,
            false,
            "check [llm] model (or the table's params.model) against the server's models, and base_url (it ends in /v1)",
        ),
        _ if text.contains("context_length") || text.contains("maximum context length") => (
            LlmErrorKind::Request,
            false,
            "the prompt is too long for the model: lower feed, or shorten the templates, or max_tokens",
        ),
        _ => (
            LlmErrorKind::Request,
            false,
            "the server refused the request as it was sent",
        ),
    };
    let what = match status {
        404 => format!("{url} knows no model {model:?} (404){said}"),
        _ => format!("{url} answered {status}{said}"),
    };
    Failure {
        error: LlmError::new(kind, what).with_hint(hint),
        retry,
        wait,
    }
}

/// A completion, with what the answer said about it besides.
#[derive(Debug)]
struct Answer {
    completion: Completion,
    /// Cut off at max_tokens (finish_reason "length").
    cut: bool,
    /// The answer had a usage block (its tokens are counted).
    counted: bool,
}

/// A chat completion reply's text and usage, and what it said besides; or why the answer is
/// not one, and what to do.
fn parse_completion(text: &str) -> Result<Answer, (String, &'static str)> {
    const NOT_OPENAI: &str =
        "that is not an OpenAI chat completion: is base_url the API's root (usually ending in /v1)?";
    let v: Value = serde_json::from_str(text).map_err(|_| {
        let start: String = text.chars().take(40).collect();
        (format!("something that is not JSON ({start:?}...)"), NOT_OPENAI)
    })?;
    let message = &v["choices"][0]["message"];
    let content = match message["content"].as_str() {
        Some(content) => content,
        // A completion, but without text: what a reasoning model answers when its thinking
        // used up max_tokens.
        None if message.is_object() => {
            return Err((
                format!(
                    "a completion without text (content is null, finish_reason {})",
                    v["choices"][0]["finish_reason"]
                ),
                "a reasoning model may have spent max_tokens on its reasoning: raise [llm] max_tokens (or the table's params.max_tokens)",
            ));
        }
        None => return Err(("JSON without choices[0].message.content".into(), NOT_OPENAI)),
    };
    let usage = Usage {
        prompt_tokens: v["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        completion_tokens: v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
    };
    Ok(Answer {
        completion: Completion {
            text: content.to_string(),
            usage,
        },
        cut: v["choices"][0]["finish_reason"] == "length",
        counted: !v.get("usage").is_none_or(Value::is_null),
    })
}

fn check_models(base: &str, text: &str, models: &[String]) -> Result<(), LlmError> {
    let base = crate::backend::url::redact(base);
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        let start: String = text.trim_start().chars().take(40).collect();
        return Err(LlmError::new(
            LlmErrorKind::Unavailable,
            format!("{base}/models answered something that is not the OpenAI API ({start:?}...)"),
        )
        .with_hint("base_url must be the API's root, usually ending in /v1 (http://host:8000/v1 for vLLM, http://host:11434/v1 for Ollama)"));
    };
    let Some(listed) = v["data"].as_array() else {
        return Ok(());
    };
    let ids: Vec<&str> = listed.iter().filter_map(|m| m["id"].as_str()).collect();
    match models.iter().find(|m| !ids.contains(&m.as_str())) {
        Some(missing) => Err(LlmError::new(
            LlmErrorKind::NoModel,
            format!("the model server at {base} has no model {missing:?}"),
        )
        .with_hint(format!(
            "it lists: {}; set [llm] model (or the table's params.model) to one of them",
            ids.iter().take(8).copied().collect::<Vec<_>>().join(", ")
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_or_said_unreadable() {
        let ok =
            r#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        let c = parse_completion(ok).unwrap().completion;
        assert_eq!((c.text.as_str(), c.usage.prompt_tokens), ("hi", 3));
        assert!(parse_completion("<html>").unwrap_err().0.contains("not JSON"));
        assert!(parse_completion("{}").unwrap_err().0.contains("without choices"));
        // A reasoning model out of tokens: no text, and a hint about max_tokens, not base_url.
        let (why, hint) = parse_completion(
            r#"{"choices":[{"message":{"role":"assistant","content":null},"finish_reason":"length"}]}"#,
        )
        .unwrap_err();
        assert!(
            why.contains("without text") && why.contains("\"length\""),
            "{why}"
        );
        assert!(hint.contains("max_tokens"), "{hint}");
    }

    #[test]
    fn backoff_grows_and_spreads() {
        let first = backoff("k", 1);
        assert!(
            first >= FIRST_BACKOFF / 2 && first <= FIRST_BACKOFF * 3 / 2,
            "{first:?}"
        );
        assert!(backoff("k", 4) > backoff("k", 1));
        assert!(backoff("k", 30) <= MAX_BACKOFF * 3 / 2);
        assert_ne!(backoff("a", 2), backoff("b", 2));
    }

    #[test]
    fn model_lists_are_checked_and_a_web_page_is_not_an_api() {
        let list = r#"{"object":"list","data":[{"id":"a"},{"id":"b"}]}"#;
        assert!(check_models("u", list, &["b".to_string()]).is_ok());
        let e = check_models("u", list, &["c".to_string()]).unwrap_err();
        assert!(e.kind == LlmErrorKind::NoModel && e.hint.unwrap().contains("a, b"));
        let e = check_models("u", "<html>", &[]).unwrap_err();
        assert!(e.cannot_be_used() && e.hint.unwrap().contains("/v1"));
    }

    #[test]
    fn cut_answers_and_uncounted_tokens_are_said_once() {
        use std::sync::atomic::Ordering;
        let client = HttpClient::new(ClientConfig {
            base_urls: vec!["http://x/v1".into()],
            api_key: None,
            api_key_env: "OPENAI_API_KEY".into(),
            timeout: Duration::from_secs(1),
            max_attempts: 1,
        })
        .unwrap();
        let whole =
            r#"{"choices":[{"message":{"content":"a"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}"#;
        client.say_once_about(&parse_completion(whole).unwrap());
        assert!(!client.told_cut.load(Ordering::Relaxed) && !client.told_no_usage.load(Ordering::Relaxed));
        let cut = r#"{"choices":[{"message":{"content":"a"},"finish_reason":"length"}]}"#;
        client.say_once_about(&parse_completion(cut).unwrap());
        assert!(client.told_cut.load(Ordering::Relaxed) && client.told_no_usage.load(Ordering::Relaxed));
    }

    #[test]
    fn an_echoed_key_is_masked() {
        let client = HttpClient::new(ClientConfig {
            base_urls: vec!["http://x/v1".into()],
            api_key: Some("sk-secret".into()),
            api_key_env: "OPENAI_API_KEY".into(),
            timeout: Duration::from_secs(1),
            max_attempts: 1,
        })
        .unwrap();
        assert_eq!(client.redact("bad key sk-secret!"), "bad key ***!");
    }

    #[test]
    fn statuses_say_what_to_do() {
        let f = status_failure("u", 401, "", "m", None);
        assert!(!f.retry && f.error.kind == LlmErrorKind::Refused);
        let f = status_failure("u", 429, "", "m", Some(Duration::ZERO));
        assert!(f.retry && f.wait == Some(Duration::ZERO));
        let f = status_failure(
            "u",
            400,
            r#"{"error":{"message":"maximum context length is 8"}}"#,
            "m",
            None,
        );
        assert!(!f.retry && f.error.hint.unwrap().contains("too long"));
    }
}
