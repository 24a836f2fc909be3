//! The names of everything a run keeps on a backend, derived from the scenario in one place.
//!
//! All keys of a run start with the stream key or the cache prefix, so that `cleanup` can find
//! them without touching anyone else's keys (CONTRACT.md, "Wire format on Redis").

/// The key layout of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The stream every agent publishes to and reads from.
    pub stream: String,
    /// Agent `A` reads through consumer group `{group_prefix}{A}`.
    pub group_prefix: String,
    /// Cache lists are `{cache_prefix}{agent}`; the global sorted set is
    /// `{cache_prefix}timestamps`.
    pub cache_prefix: String,
}

/// The cache key of the global sorted set; no agent may be called this.
pub const TIMESTAMPS: &str = "timestamps";

impl Keys {
    pub fn new(
        stream: impl Into<String>,
        group_prefix: impl Into<String>,
        cache_prefix: impl Into<String>,
    ) -> Self {
        Keys {
            stream: stream.into(),
            group_prefix: group_prefix.into(),
            cache_prefix: cache_prefix.into(),
        }
    }

    /// The default layout for a stream: groups `group_{agent}`, cache under `{stream}:cache:`.
    pub fn for_stream(stream: &str) -> Self {
        Keys::new(stream, "group_", format!("{stream}:cache:"))
    }

    pub fn group(&self, agent: &str) -> String {
        format!("{}{agent}", self.group_prefix)
    }

    /// Malformed entries and messages whose behaviour kept failing.
    pub fn dead_letters(&self) -> String {
        format!("{}:dead", self.stream)
    }

    pub fn cache_list(&self, agent: &str) -> String {
        format!("{}{agent}", self.cache_prefix)
    }

    pub fn cache_timestamps(&self) -> String {
        format!("{}{TIMESTAMPS}", self.cache_prefix)
    }

    /// A hash from agent name to its serialised state (behaviour state, random stream
    /// position, counters), written in the same transaction as the agent's effects.
    pub fn agent_state(&self) -> String {
        format!("{}:state", self.stream)
    }

    /// A hash where the coordinator records how far the run has got.
    pub fn checkpoint(&self) -> String {
        format!("{}:run", self.stream)
    }

    /// Commands from the coordinator to worker processes.
    pub fn control(&self) -> String {
        format!("{}:control", self.stream)
    }

    /// Reports from worker processes to the coordinator.
    pub fn reports(&self) -> String {
        format!("{}:reports", self.stream)
    }

    /// Worker processes' registrations and heartbeats, by shard.
    pub fn workers(&self) -> String {
        format!("{}:workers", self.stream)
    }

    /// Who runs the stream now: a string with an expiry, which a run's own cleanup keeps.
    pub fn lease(&self) -> String {
        format!("{}:lease", self.stream)
    }

    /// Every key of the run that is not a cache key, for cleanup.
    pub fn run_keys(&self) -> [String; 7] {
        [
            self.stream.clone(),
            self.dead_letters(),
            self.agent_state(),
            self.checkpoint(),
            self.control(),
            self.reports(),
            self.workers(),
        ]
    }
}
