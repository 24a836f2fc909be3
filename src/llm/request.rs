//! What a behaviour asks a model, what it gets back, and the record of each exchange.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "system".to_string(),
            content: content.into(),
        }
    }

    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "user".to_string(),
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "assistant".to_string(),
            content: content.into(),
        }
    }
}

/// A chat completion a behaviour asks for ([`Context::complete`](crate::Context::complete)).
/// What it leaves unset comes from the run's `[llm]` section.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub messages: Vec<ChatMessage>,
    /// The model; `None` for `[llm] model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The seed sent to the server. The context fills it from the agent's own random stream
    /// when the behaviour leaves it unset, so it is part of the reproducible run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl CompletionRequest {
    /// A request of `messages`, everything else from `[llm]`.
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        CompletionRequest {
            messages,
            ..CompletionRequest::default()
        }
    }
}

/// Tokens an exchange used, as the server counted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

/// What a model answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub text: String,
    pub usage: Usage,
}

/// A request with every setting resolved: what is sent, and what the recording is keyed by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub temperature: f64,
    pub max_tokens: u32,
    pub seed: Option<u64>,
}

impl ResolvedRequest {
    /// The request's key: the SHA-256 of its JSON (fields in a fixed order), in hex. The same
    /// request always has the same key, whichever process or run sends it.
    pub fn key(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        Sha256::digest(json.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// One exchange with a model, as `llm.jsonl` records it (one JSON object a line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// [`ResolvedRequest::key`].
    pub key: String,
    /// The agent that first asked.
    pub agent: String,
    /// Its lockstep tick; `None` in free mode.
    pub tick: Option<u64>,
    /// Which of the agent's requests in that step (from 0): the record's order within a step.
    #[serde(default)]
    pub call: u32,
    pub request: ResolvedRequest,
    /// The text of the answer.
    pub response: String,
    pub usage: Usage,
    /// How long the server took, retries included; 0 for an answer replayed.
    pub latency_ms: u64,
}

impl Exchange {
    pub fn completion(&self) -> Completion {
        Completion {
            text: self.response.clone(),
            usage: self.usage,
        }
    }
}

/// What a run's exchanges add up to, as `summary.json` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ModelUse {
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The median latency, in milliseconds (nearest rank); 0 without calls.
    pub latency_p50_ms: u64,
    /// The 95th percentile latency, in milliseconds (nearest rank); 0 without calls.
    pub latency_p95_ms: u64,
}

impl ModelUse {
    pub fn of(exchanges: &[Exchange]) -> Self {
        let mut latencies: Vec<u64> = exchanges.iter().map(|e| e.latency_ms).collect();
        latencies.sort_unstable();
        // Nearest rank: the smallest value with at least p% of the values at or below it.
        let percentile = |p: u64| match latencies.len() as u64 {
            0 => 0,
            n => latencies[((p * n).div_ceil(100)).clamp(1, n) as usize - 1],
        };
        ModelUse {
            calls: exchanges.len() as u64,
            prompt_tokens: exchanges.iter().map(|e| e.usage.prompt_tokens).sum(),
            completion_tokens: exchanges.iter().map(|e| e.usage.completion_tokens).sum(),
            latency_p50_ms: percentile(50),
            latency_p95_ms: percentile(95),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_setting_and_nothing_else() {
        let request = ResolvedRequest {
            model: "m".into(),
            messages: vec![ChatMessage::user("hi")],
            temperature: 0.7,
            max_tokens: 300,
            seed: Some(9),
        };
        assert_eq!(request.key().len(), 64);
        assert_eq!(request.key(), request.clone().key());
        let other_seed = ResolvedRequest {
            seed: Some(10),
            ..request.clone()
        };
        assert_ne!(request.key(), other_seed.key());
    }

    #[test]
    fn use_adds_up_with_nearest_rank_percentiles() {
        let exchange = |latency_ms: u64| Exchange {
            key: String::new(),
            agent: "a".into(),
            tick: Some(1),
            call: 0,
            request: ResolvedRequest {
                model: "m".into(),
                messages: Vec::new(),
                temperature: 0.0,
                max_tokens: 1,
                seed: None,
            },
            response: String::new(),
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 2,
            },
            latency_ms,
        };
        let all: Vec<Exchange> = (1..=20).rev().map(|l| exchange(l * 10)).collect();
        let used = ModelUse::of(&all);
        assert_eq!(
            (used.calls, used.prompt_tokens, used.completion_tokens),
            (20, 200, 40)
        );
        assert_eq!((used.latency_p50_ms, used.latency_p95_ms), (100, 190));
        assert_eq!(ModelUse::of(&all[..1]).latency_p95_ms, 200);
        assert_eq!(ModelUse::of(&[]), ModelUse::default());
    }
}
