//! The run's model client: every completion an agent asks for goes through here.
//!
//! An answer is kept with the run (`RunStore::save_answer`, `{stream}:llm` on Redis) as soon
//! as it comes, keyed by the request. A request whose answer is kept is never sent again: not
//! by a step run again after a pending input, not after `--resume`, not by another worker
//! process. With `--replay` answers come from the recording instead of a server (and are
//! kept the same way), so the run's `llm.jsonl` holds the exchanges it used.
//!
//! Live requests wait for a place among `max_concurrency` in flight (per process), and for
//! room under `requests_per_minute` and `tokens_per_minute` (counted for the whole run, in the
//! backend, so worker processes share them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::RunError;
use super::reconnect::Reconnect;
use crate::backend::Backend;
use crate::llm::client::HttpClient;
use crate::llm::{Completion, CompletionRequest, Exchange, LlmError, LlmErrorKind, ResolvedRequest};
use crate::scenario::LlmConfig;

/// Where answers come from.
enum Source {
    /// A model server.
    Live(HttpClient),
    /// A recording (`--replay`).
    Recorded(Arc<Recording>),
}

/// The model client of one process of a run.
pub(crate) struct ModelClient<B> {
    config: LlmConfig,
    source: Source,
    backend: B,
    reconnect: Reconnect,
    in_flight: Semaphore,
}

/// Who asks, for the record and for errors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asker<'a> {
    pub agent: &'a str,
    pub tick: Option<u64>,
    /// Which of the agent's requests in this step (from 0), for the record's order.
    pub call: u32,
}

impl Asker<'_> {
    fn error(&self, error: LlmError) -> RunError {
        RunError::Completion {
            agent: self.agent.to_string(),
            tick: self.tick,
            error,
        }
    }
}

impl<B: Backend> ModelClient<B> {
    /// A client for `config`, asking its servers, or answering from `replay`.
    ///
    /// # Errors
    ///
    /// The HTTP client cannot be made (`RunError::ModelServer`).
    pub fn new(
        config: LlmConfig,
        replay: Option<Arc<Recording>>,
        backend: B,
        reconnect: Reconnect,
    ) -> Result<Self, RunError> {
        let source = match replay {
            Some(recording) => Source::Recorded(recording),
            None => Source::Live(HttpClient::new(config.client()).map_err(RunError::ModelServer)?),
        };
        Ok(ModelClient {
            in_flight: Semaphore::new(config.max_concurrency.max(1) as usize),
            config,
            source,
            backend,
            reconnect,
        })
    }

    /// Checks the servers before a run: answering, taking the key, having the models.
    ///
    /// # Errors
    ///
    /// A server that cannot be used (`RunError::ModelServer`, exit code 3).
    pub async fn probe(&self, models: &[String]) -> Result<(), RunError> {
        match &self.source {
            Source::Live(client) => client.probe(models).await.map_err(RunError::ModelServer),
            Source::Recorded(_) => Ok(()),
        }
    }

    /// The request with every setting resolved.
    fn resolve(&self, request: &CompletionRequest) -> Result<ResolvedRequest, LlmError> {
        let model = request
            .model
            .clone()
            .or_else(|| self.config.model.clone())
            .ok_or_else(|| {
                LlmError::new(
                    LlmErrorKind::Config,
                    "a completion names no model, and [llm] has none",
                )
                .with_hint("set model in the scenario's [llm] section")
            })?;
        Ok(ResolvedRequest {
            model,
            messages: request.messages.clone(),
            temperature: request.temperature.unwrap_or(self.config.temperature),
            max_tokens: request.max_tokens.unwrap_or(self.config.max_tokens),
            seed: request.seed,
        })
    }

    /// The answer to `request`: the one the run keeps, or the server's (then kept).
    ///
    /// # Errors
    ///
    /// The server refused or kept failing, or the recording has no answer
    /// (`RunError::Completion`, naming the agent and tick); the backend stayed away.
    pub async fn complete(
        &self,
        request: &CompletionRequest,
        asker: Asker<'_>,
    ) -> Result<Completion, RunError> {
        let resolved = self.resolve(request).map_err(|e| asker.error(e))?;
        let key = resolved.key();
        let backend = &self.backend;
        if let Some(kept) = self
            .reconnect
            .retry(backend, || backend.load_answer(&key))
            .await?
        {
            return read_kept(&kept).map_err(|e| asker.error(e));
        }
        let client = match &self.source {
            Source::Live(client) => client,
            Source::Recorded(recording) => {
                let Some(line) = recording.exchanges.get(&key) else {
                    // Say what differs, when it is the settings.
                    let asked = settings(&resolved);
                    let what = if recording.asked_with.is_empty() || recording.asked_with.contains(&asked) {
                        "the recording has no answer to its request".to_string()
                    } else {
                        format!(
                            "the recording has no answer to its request: it asks with {asked}, and the recording was made with {}",
                            recording
                                .asked_with
                                .iter()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join("; ")
                        )
                    };
                    return Err(asker.error(
                        LlmError::new(LlmErrorKind::NotRecorded, what)
                            .with_hint(format!(
                                "{} was recorded with other settings (scenario, seed, --set values such as llm.model, or agora version); replay with the recorded run's settings, or record again with a live run (without --replay)",
                                recording.path.display()
                            )),
                    ));
                };
                let kept = self
                    .reconnect
                    .retry(backend, || backend.save_answer(&key, line))
                    .await?;
                return read_kept(&kept).map_err(|e| asker.error(e));
            }
        };
        let _place = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| RunError::Internal("the model client was shut down".into()))?;
        self.wait_for_room(&resolved).await?;
        let (completion, took) = client.complete(&resolved).await.map_err(|e| asker.error(e))?;
        let exchange = Exchange {
            key: key.clone(),
            agent: asker.agent.to_string(),
            tick: asker.tick,
            call: asker.call,
            request: resolved,
            response: completion.text.clone(),
            usage: completion.usage,
            latency_ms: took.as_millis() as u64,
        };
        let json = serde_json::to_string(&exchange).map_err(|e| RunError::Internal(e.to_string()))?;
        let kept = self
            .reconnect
            .retry(backend, || backend.save_answer(&key, &json))
            .await?;
        read_kept(&kept).map_err(|e| asker.error(e))
    }

    /// Waits for `request`'s turn at the model under `requests_per_minute` and
    /// `tokens_per_minute` (0 is no limit), booked for the whole run in the backend.
    ///
    /// Each request takes a turn of 60 s / `requests_per_minute`, or of its tokens' share of
    /// a minute under `tokens_per_minute` if that is longer, and turns follow one another (the
    /// generic cell rate algorithm without bursts): over any minute the run sends at most
    /// `requests_per_minute` requests and about `tokens_per_minute` tokens, evenly spaced.
    /// Counting by calendar minute, as this did before, let twice the limit through around a
    /// minute's turn (all of one minute's requests at its end, all of the next at its start).
    async fn wait_for_room(&self, request: &ResolvedRequest) -> Result<(), RunError> {
        let (rpm, tpm) = (self.config.requests_per_minute, self.config.tokens_per_minute);
        if rpm == 0 && tpm == 0 {
            return Ok(());
        }
        // Tokens are counted before the answer: the prompt's (about four characters each, as
        // OpenAI's own rule of thumb has it) and the most the answer may have.
        let prompt: usize = request.messages.iter().map(|m| m.content.len()).sum();
        let tokens = prompt as u64 / 4 + u64::from(request.max_tokens);
        let cost_ms = turn_ms(rpm, tpm, tokens);
        let backend = &self.backend;
        let wait = self
            .reconnect
            .retry(backend, || backend.book_model_turn(cost_ms))
            .await?;
        if wait >= 1_000 {
            tracing::debug!(
                "the run's model use is at its limit; this request waits {} ms",
                wait
            );
        }
        tokio::time::sleep(Duration::from_millis(wait)).await;
        Ok(())
    }
}

/// How long one request's turn at the model lasts, in milliseconds: a minute's share per
/// request under `rpm`, or its `tokens`' share of a minute under `tpm`, whichever is longer
/// (0 is no limit).
fn turn_ms(rpm: u32, tpm: u64, tokens: u64) -> u64 {
    let per_request = if rpm > 0 {
        60_000u64.div_ceil(u64::from(rpm))
    } else {
        0
    };
    let per_tokens = if tpm > 0 {
        tokens.saturating_mul(60_000).div_ceil(tpm)
    } else {
        0
    };
    per_request.max(per_tokens)
}

/// Every exchange kept with the run, in the record's order: by tick, then agent, then the
/// agent's own order of asking.
///
/// # Errors
///
/// The backend failed or stayed away.
pub(crate) async fn exchanges<B: Backend>(
    backend: &B,
    reconnect: &Reconnect,
) -> Result<Vec<Exchange>, RunError> {
    let kept = reconnect.retry(backend, || backend.answers()).await?;
    let mut exchanges: Vec<Exchange> = kept
        .iter()
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect();
    exchanges.sort_by(|a, b| (a.tick, &a.agent, a.call, &a.key).cmp(&(b.tick, &b.agent, b.call, &b.key)));
    Ok(exchanges)
}

/// A recording (`--replay FILE`, an `llm.jsonl`), read and checked: each exchange's line by
/// its key, where it came from, and the settings it was asked with (to say what differs when
/// a request is not in it).
pub(crate) struct Recording {
    /// Each exchange's line, by its request's key.
    exchanges: HashMap<String, String>,
    path: PathBuf,
    /// The settings the requests were made with ([`settings`]).
    asked_with: std::collections::BTreeSet<String>,
}

/// A request's settings as a user would compare them.
fn settings(request: &ResolvedRequest) -> String {
    format!(
        "model {:?}, temperature {}, max_tokens {}",
        request.model, request.temperature, request.max_tokens
    )
}

impl Recording {
    /// Reads and checks every line of `path`.
    ///
    /// # Errors
    ///
    /// The file cannot be read, or a line is not an exchange (`RunError::Refused`, naming the
    /// file and line: exit code 2).
    pub fn read(path: &Path) -> Result<Self, RunError> {
        let refused = |message: String| RunError::Refused {
            message,
            hint: "--replay takes the llm.jsonl a run wrote into its folder".to_string(),
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| refused(format!("cannot read the recording {}: {e}", path.display())))?;
        let mut exchanges = HashMap::new();
        let mut asked_with = std::collections::BTreeSet::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let at = format!("{}:{}", path.display(), n + 1);
            let exchange: Exchange = serde_json::from_str(line)
                .map_err(|e| refused(format!("{at}: not a recorded exchange: {e}")))?;
            let key = exchange.request.key();
            if key != exchange.key {
                return Err(refused(format!(
                    "{at}: the key does not match the request (was the line edited?)"
                )));
            }
            exchanges.insert(key, line.to_string());
            asked_with.insert(settings(&exchange.request));
        }
        Ok(Recording {
            exchanges,
            path: path.to_path_buf(),
            asked_with,
        })
    }

    pub fn len(&self) -> usize {
        self.exchanges.len()
    }
}

fn read_kept(json: &str) -> Result<Completion, LlmError> {
    serde_json::from_str::<Exchange>(json)
        .map(|e| e.completion())
        .map_err(|e| {
            LlmError::new(
                LlmErrorKind::Unreadable,
                format!("a kept answer is unreadable: {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::turn_ms;

    #[test]
    fn a_turn_is_the_longer_of_the_two_limits_shares() {
        assert_eq!(turn_ms(0, 0, 500), 0);
        assert_eq!(turn_ms(60, 0, 500), 1_000);
        // Rounded up, so that the limit holds: 7 a minute is a turn of 8,572 ms.
        assert_eq!(turn_ms(7, 0, 1), 8_572);
        // 1,200 tokens a minute: 100 tokens take 5 s, more than one request's 1 s at 60.
        assert_eq!(turn_ms(60, 1_200, 100), 5_000);
        assert_eq!(turn_ms(0, 1_200, 1), 50);
    }
}
