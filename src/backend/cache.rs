//! What the cache holds: entries that agents produced, as JSON.
//!
//! An entry is written once as a string and stored twice, as the old project did: at the end
//! of its agent's list and in the global sorted set. The string carries the agent and the
//! agent's own counter, so that two agents (or one agent twice) writing the same value are
//! two distinct members of the set (the old project lost one of them).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One cache entry as behaviours read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The agent that wrote it.
    pub agent: String,
    /// The agent's own counter of cache writes, from 1.
    pub n: u64,
    /// The lockstep tick it was written in; `None` in free mode.
    pub tick: Option<u64>,
    /// What the behaviour remembered.
    pub value: Value,
}

impl CacheEntry {
    /// The stored form: compact JSON with fields in a fixed order, so that both backends order
    /// members with equal scores identically (by their bytes, as Redis does).
    pub fn encode(&self) -> String {
        // Room for the fields and a small value, so that most entries are written without
        // growing the buffer.
        let mut out = Vec::with_capacity(96 + self.agent.len());
        write_entry(&mut out, &self.agent, self.n, self.tick, |out| {
            crate::json::value(out, &self.value)
        });
        // Only serde_json's escaped strings and ASCII went in.
        String::from_utf8(out).unwrap_or_default()
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("not a cache entry: {e}"))
    }
}

/// Appends the stored form of the entry `agent` wrote as its `n`th (see
/// [`CacheEntry::encode`]), for writers that hold the fields apart.
pub(crate) fn write_entry(
    out: &mut Vec<u8>,
    agent: &str,
    n: u64,
    tick: Option<u64>,
    write_value: impl FnOnce(&mut Vec<u8>),
) {
    out.extend_from_slice(b"{\"agent\":");
    crate::json::string(out, agent);
    out.extend_from_slice(b",\"n\":");
    crate::json::integer(out, n);
    out.extend_from_slice(b",\"tick\":");
    crate::json::optional_u64(out, tick);
    out.extend_from_slice(b",\"value\":");
    write_value(out);
    out.push(b'}');
}

/// One write to the cache, ready for a backend: the list it goes to and its place in the
/// global sorted set.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheAppend {
    pub agent: Arc<str>,
    /// Shared: the memory backend keeps it in the agent's list and in the sorted set.
    pub member: Arc<str>,
    /// Lockstep: the tick (logical time, so that reads are reproducible). Free mode: the
    /// wall clock in seconds since the Unix epoch, as the old project scored them.
    pub score: f64,
}

/// Which part of the global sorted set a read may see. In lockstep, tick `t` reads only what
/// ticks before `t` wrote (DESIGN.md invariant 3): scores strictly below `t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreBound(pub Option<f64>);

impl ScoreBound {
    pub const ALL: ScoreBound = ScoreBound(None);

    pub fn below(score: f64) -> Self {
        ScoreBound(Some(score))
    }

    pub fn admits(self, score: f64) -> bool {
        self.0.is_none_or(|b| score < b)
    }
}

/// The wall clock as a free-mode cache score.
pub fn wall_clock_score() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_differ_by_writer() {
        let a = CacheEntry {
            agent: "a".into(),
            n: 1,
            tick: Some(2),
            value: Value::from("same"),
        };
        let b = CacheEntry {
            agent: "b".into(),
            ..a.clone()
        };
        assert_ne!(a.encode(), b.encode());
        assert_eq!(CacheEntry::decode(&a.encode()), Ok(a.clone()));
        assert_eq!(a.encode(), r#"{"agent":"a","n":1,"tick":2,"value":"same"}"#);
    }
}
