//! The names of everything a run keeps on a backend, derived from the scenario in one place.
//!
//! All keys of a run start with the stream key or the cache prefix, so that `cleanup` can find
//! them without touching anyone else's keys (CONTRACT.md, "Wire format on Redis"); on a Redis
//! Cluster, an agent's keys end in the hash tag `{agent}`.

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
    /// Whether each agent reads an inbox of its own, `{stream}:inbox:{agent}`, instead of the
    /// stream (a scenario with a sparse `[network]`): its group lives on its inbox.
    pub inboxes: bool,
    /// Whether the keys are spread over a Redis Cluster's hash slots: each agent's keys (its
    /// inbox, outbox, state and cache list) carry the hash tag `{agent}`, so that its step
    /// is one transaction in one slot, and agents spread over the nodes. Implies `inboxes`.
    pub cluster: bool,
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
            inboxes: false,
            cluster: false,
        }
    }

    /// The same layout, spread over a cluster's hash slots (with inboxes) when `cluster`.
    #[must_use]
    pub fn with_cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self.inboxes |= cluster;
        self
    }

    /// `agent` as it ends an agent's key: in braces on a cluster (the key's hash tag).
    fn agent_part(&self, agent: &str) -> String {
        if self.cluster {
            format!("{{{agent}}}")
        } else {
            agent.to_string()
        }
    }

    /// The same layout, with an inbox per agent.
    #[must_use]
    pub fn with_inboxes(mut self, inboxes: bool) -> Self {
        self.inboxes = inboxes;
        self
    }

    /// Agent `agent`'s inbox: what the agents it follows publish, and what is addressed to it.
    pub fn inbox(&self, agent: &str) -> String {
        format!("{}{}", self.inbox_prefix(), self.agent_part(agent))
    }

    /// What every inbox's key starts with.
    pub fn inbox_prefix(&self) -> String {
        format!("{}{INBOX_MARK}", self.stream)
    }

    /// Where every agent's outbox key begins (`{stream}:outbox:`).
    pub fn outbox_prefix(&self) -> String {
        format!("{}{OUTBOX_MARK}", self.stream)
    }

    /// On a cluster, agent `agent`'s outbox: what its steps published, dead-lettered and
    /// added to the cache's sorted set, until relayed to keys in other slots.
    pub fn outbox(&self, agent: &str) -> String {
        format!("{}{OUTBOX_MARK}{}", self.stream, self.agent_part(agent))
    }

    /// On a cluster, the hash beside `key` (in its slot) that says, for each agent, the last
    /// entry of its outbox relayed into `key`: what makes a relay done twice add nothing.
    pub fn relayed(&self, key: &str) -> String {
        match tag_of(key) {
            Some(_) => format!("{key}{RELAYED_SUFFIX}"),
            // `{key}` as the hash tag: the slot of `key` itself.
            None => format!("{}{RELAYED_MARK}{{{key}}}", self.stream),
        }
    }

    /// The hash holding `agent`'s saved state: the run's one state hash, or on a cluster a
    /// hash of the agent's own (in its slot).
    pub fn agent_state_of(&self, agent: &str) -> String {
        if self.cluster {
            format!("{}{STATE_MARK}{}", self.stream, self.agent_part(agent))
        } else {
            self.agent_state()
        }
    }

    /// What the keys of each agent start with, for finding them by SCAN: inboxes, and on a
    /// cluster outboxes and saved states.
    pub fn agent_key_prefixes(&self) -> Vec<String> {
        let mut marks = vec![INBOX_MARK];
        if self.cluster {
            marks.extend([OUTBOX_MARK, STATE_MARK, RELAYED_MARK]);
        }
        marks.into_iter().map(|m| format!("{}{m}", self.stream)).collect()
    }

    /// The agent that reads through `group`, if the group is one of this layout's.
    pub fn agent_of_group<'g>(&self, group: &'g str) -> Option<&'g str> {
        group.strip_prefix(self.group_prefix.as_str())
    }

    /// The stream `group` lives on: the agent's inbox when agents have inboxes, else the
    /// stream.
    pub fn group_stream(&self, group: &str) -> std::borrow::Cow<'_, str> {
        match self.agent_of_group(group) {
            Some(agent) if self.inboxes => std::borrow::Cow::Owned(self.inbox(agent)),
            _ => std::borrow::Cow::Borrowed(&self.stream),
        }
    }

    /// The default layout for a stream: groups `group_{agent}`, cache under `{stream}:cache:`.
    pub fn for_stream(stream: &str) -> Self {
        Keys::new(stream, "group_", Keys::default_cache_prefix(stream))
    }

    /// `{stream}:cache:`, the cache prefix unless a scenario names another.
    pub fn default_cache_prefix(stream: &str) -> String {
        format!("{stream}{CACHE_MARK}")
    }

    pub fn group(&self, agent: &str) -> String {
        format!("{}{agent}", self.group_prefix)
    }

    pub fn cache_list(&self, agent: &str) -> String {
        format!("{}{}", self.cache_prefix, self.agent_part(agent))
    }

    pub fn cache_timestamps(&self) -> String {
        format!("{}{TIMESTAMPS}", self.cache_prefix)
    }

    /// A key of the run that is not a cache key.
    pub fn run_key(&self, key: &RunKey) -> String {
        format!("{}{}", self.stream, key.suffix)
    }

    /// A hash from agent name to its serialised state (behaviour state, random stream
    /// position, counters), written in the same transaction as the agent's effects.
    pub fn agent_state(&self) -> String {
        self.run_key(&STATE)
    }

    /// Malformed entries and messages whose behaviour kept failing.
    pub fn dead_letters(&self) -> String {
        self.run_key(&DEAD)
    }

    /// A hash where the coordinator records how far the run has got.
    pub fn checkpoint(&self) -> String {
        self.run_key(&RECORD)
    }

    /// Commands from the coordinator to worker processes.
    pub fn control(&self) -> String {
        self.run_key(&CONTROL)
    }

    /// Reports from worker processes to the coordinator.
    pub fn reports(&self) -> String {
        self.run_key(&REPORTS)
    }

    /// Worker processes' registrations and heartbeats, by shard.
    pub fn workers(&self) -> String {
        self.run_key(&WORKERS)
    }

    /// Who runs the stream now: a string with an expiry, which a run's own cleanup keeps.
    pub fn lease(&self) -> String {
        self.run_key(&LEASE)
    }

    /// The models' answers, by request key.
    pub fn answers(&self) -> String {
        self.run_key(&ANSWERS)
    }

    /// The run's use of the model: `turns_end`, when its last booked turn ends (milliseconds
    /// since the epoch), for its requests and tokens per minute.
    pub fn model_use(&self) -> String {
        self.run_key(&MODEL_USE)
    }

    /// Every key of the run that is not a cache key, with what it is.
    pub fn run_keys(&self) -> impl Iterator<Item = (String, &'static RunKey)> + '_ {
        RUN_KEYS.iter().map(|k| (self.run_key(k), k))
    }
}

/// A key of a run other than its cache keys: the stream's name followed by `suffix`. This
/// table is the one list of them: cleanup, inspection, the check of their types and the
/// refusal of stream names that would be another run's key all read it.
#[derive(Debug)]
pub struct RunKey {
    pub suffix: &'static str,
    /// Its Redis type.
    pub kind: &'static str,
    /// Whether a run's own cleanup deletes it (the lease stays with its holder).
    pub cleaned_up: bool,
}

const STREAM: RunKey = run_key("", "stream");
const DEAD: RunKey = run_key(":dead", "stream");
const STATE: RunKey = run_key(":state", "hash");
const RECORD: RunKey = run_key(":run", "hash");
const CONTROL: RunKey = run_key(":control", "stream");
const REPORTS: RunKey = run_key(":reports", "stream");
const WORKERS: RunKey = run_key(":workers", "hash");
const ANSWERS: RunKey = run_key(":llm", "hash");
const MODEL_USE: RunKey = run_key(":llm-use", "hash");
const LEASE: RunKey = RunKey {
    cleaned_up: false,
    ..run_key(":lease", "string")
};

const fn run_key(suffix: &'static str, kind: &'static str) -> RunKey {
    RunKey {
        suffix,
        kind,
        cleaned_up: true,
    }
}

/// The run's keys other than the cache's.
pub const RUN_KEYS: [RunKey; 10] = [
    STREAM, DEAD, STATE, RECORD, CONTROL, REPORTS, WORKERS, ANSWERS, MODEL_USE, LEASE,
];

/// The ending of a run's own key (`:dead`, `:run`, ...) that `name` ends in, if any: such a
/// name is another run's key, never a stream.
pub fn run_key_suffix(name: &str) -> Option<&'static str> {
    RUN_KEYS
        .iter()
        .map(|k| k.suffix)
        .find(|s| !s.is_empty() && name.ends_with(s))
}

/// What follows the stream's name in an agent's inbox key.
pub const INBOX_MARK: &str = ":inbox:";
/// What follows the stream's name in an agent's outbox key (on a cluster).
pub const OUTBOX_MARK: &str = ":outbox:";
/// What follows the stream's name in an agent's state key (on a cluster).
pub const STATE_MARK: &str = ":state:";
/// What follows an inbox's key in the name of the hash of what was relayed into it (on a
/// cluster).
pub const RELAYED_SUFFIX: &str = ":relayed";
/// What follows the stream's name in the name of the hash of what was relayed into the stream
/// or the dead letters (on a cluster): `{stream}:relayed:{key}`, in `key`'s slot.
pub const RELAYED_MARK: &str = ":relayed:";

/// The marks a stream's name may not contain: with them, another run's keys would look like
/// this one's (and be deleted by its cleanup).
pub const RESERVED_MARKS: [(&str, &str); 5] = [
    (CACHE_MARK, "cache keys"),
    (INBOX_MARK, "agents' inboxes"),
    (OUTBOX_MARK, "agents' outboxes on a cluster"),
    (STATE_MARK, "agents' states on a cluster"),
    (RELAYED_MARK, "a cluster's relay records"),
];

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM: polynomial 0x1021, initial value 0) of
/// its hash tag, or of the whole key when it has none, modulo 16384 (the Redis Cluster
/// specification, "Key distribution model").
pub fn slot_of(key: &str) -> u16 {
    let hashed = tag_of(key).unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in hashed.as_bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// The hash tag of `key`: what its first `{` and the next `}` enclose, when that is not
/// empty (Redis Cluster hashes only that part of such a key).
pub fn tag_of(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

/// The part of a cache key after the prefix that marks the run's cache keys; a stream name
/// containing it would look like another run's cache key.
pub const CACHE_MARK: &str = ":cache:";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // As `CLUSTER KEYSLOT` gives them on Redis 7.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("x:{a}"), 15495);
        assert_eq!(slot_of("x:{b}"), 3300);
        assert_eq!(slot_of("{a}:relayed"), slot_of("a"));
        assert_eq!(slot_of("x:{}"), slot_of("x:{}"), "an empty tag is no tag");
    }

    #[test]
    fn an_agents_keys_share_its_slot_on_a_cluster() {
        let keys = Keys::for_stream("gossip").with_cluster(true);
        let slot = slot_of(&keys.inbox("citizen_1"));
        for key in [
            keys.outbox("citizen_1"),
            keys.agent_state_of("citizen_1"),
            keys.cache_list("citizen_1"),
            keys.relayed(&keys.inbox("citizen_1")),
        ] {
            assert_eq!(slot_of(&key), slot, "{key}");
        }
        assert_ne!(slot_of(&keys.inbox("citizen_2")), slot);
        assert_eq!(slot_of(&keys.relayed(&keys.stream)), slot_of(&keys.stream));
        assert_eq!(keys.inbox("citizen_1"), "gossip:inbox:{citizen_1}");
        let plain = Keys::for_stream("gossip");
        assert_eq!(plain.inbox("citizen_1"), "gossip:inbox:citizen_1");
        assert_eq!(plain.agent_state_of("citizen_1"), "gossip:state");
    }
}
