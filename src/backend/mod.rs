//! Backends: the stream with one consumer group per agent, and the cache.
//!
//! One trait, [`Backend`], with two implementations that keep the same semantics:
//! [`memory::MemoryBackend`], the embedded default, and `redis::RedisBackend`, the real
//! engine. A conformance suite (`tests/conformance.rs`) runs the same tests against both.
//!
//! The stream side follows Redis Streams: entries with ids, consumer groups created from id
//! `0`, reads of new entries with a count, a pending list per group, acknowledgements, lag,
//! trimming. The cache follows the old project: a list per agent and one sorted set of
//! everything. [`Backend::commit`] applies one agent step (acknowledgements, publishes, cache
//! writes, new state, dead letters) all at once or not at all (DESIGN.md invariant 2).

pub mod cache;
pub mod keys;
pub mod memory;
pub mod redis;
pub mod url;

use std::sync::Arc;
use std::time::Duration;

pub use cache::{CacheAppend, CacheEntry, ScoreBound};
pub use keys::Keys;

use crate::message::{Batch, Delivery, EntryId, Message};
use crate::random::ChaCha8Rng;

/// What went wrong with a backend.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub kind: BackendErrorKind,
    /// One line, naming the address where there is one (never a password).
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// The backend cannot be used at all: unreachable, authentication refused, not Redis,
    /// or lost for longer than the run is willing to wait (exit code 3).
    Unavailable,
    /// A command failed or returned something unexpected.
    Command,
    /// The keys hold something agora did not write, or that contradicts the run.
    Conflict,
}

impl BackendError {
    pub fn unavailable(message: impl Into<String>, hint: impl Into<String>) -> Self {
        BackendError {
            kind: BackendErrorKind::Unavailable,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn command(message: impl Into<String>) -> Self {
        BackendError {
            kind: BackendErrorKind::Command,
            message: message.into(),
            hint: None,
        }
    }

    pub fn conflict(message: impl Into<String>, hint: impl Into<String>) -> Self {
        BackendError {
            kind: BackendErrorKind::Conflict,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn is_unavailable(&self) -> bool {
        self.kind == BackendErrorKind::Unavailable
    }

    pub fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}

/// One consumer group read in a batch of reads.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRead {
    pub group: String,
    pub consumer: String,
    pub count: usize,
    /// Read this consumer's pending entries (`XREADGROUP ... 0`) instead of new ones (`>`).
    pub pending: bool,
}

/// A consumer group as `XINFO GROUPS` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    pub name: String,
    pub consumers: u64,
    /// Delivered but not acknowledged.
    pub pending: u64,
    /// Entries in the stream not yet delivered to the group; `None` when Redis cannot tell.
    pub lag: Option<u64>,
    pub last_delivered: EntryId,
}

/// A message that could not be handled, on its way to `{stream}:dead`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The entry's id on the stream.
    pub id: EntryId,
    /// The agent that gave up on it (or first saw that it was malformed).
    pub agent: String,
    pub reason: String,
    /// The entry's own fields.
    pub fields: Vec<(String, String)>,
}

impl DeadLetter {
    /// The dead-letter stream entry: the reason and where it came from, then the original
    /// fields.
    pub fn to_fields(&self) -> Vec<(String, String)> {
        let mut fields = vec![
            ("reason".to_string(), self.reason.clone()),
            ("agent".to_string(), self.agent.clone()),
            ("entry_id".to_string(), self.id.to_string()),
        ];
        fields.extend(self.fields.iter().cloned());
        fields
    }
}

/// Everything one agent step changes, applied atomically by [`Backend::commit`].
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    /// The agent's consumer group, whose entries `acks` acknowledges.
    pub group: &'a str,
    pub acks: &'a [EntryId],
    pub publish: &'a [Arc<Message>],
    pub cache: &'a [CacheAppend],
    /// The agent's name and its serialised state.
    pub state: Option<(&'a str, &'a str)>,
    pub dead: &'a [DeadLetter],
}

/// A read from the cache.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheQuery {
    /// `LRANGE {cache_prefix}{agent} -n -1`.
    OwnLast { agent: String, n: usize },
    /// The last `n` members of the sorted set with a score within `bound`, oldest first.
    Last { n: usize, bound: ScoreBound },
    /// How many members have a score within `bound`.
    Count { bound: ScoreBound },
    /// The member at `rank` (0 = lowest score), if there is one.
    Rank { rank: u64 },
}

#[derive(Debug, Clone, PartialEq)]
pub enum CacheAnswer {
    Members(Vec<String>),
    Count(u64),
}

/// Sizes of a run's keys, for `agora inspect`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sizes {
    pub stream: u64,
    pub dead_letters: u64,
    /// Per-agent cache lists: (agent, length), sorted by agent.
    pub lists: Vec<(String, u64)>,
    pub timestamps: u64,
}

/// What [`Backend::cleanup`] deleted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CleanupReport {
    pub groups: u64,
    pub keys: u64,
}

/// What [`Backend::claim`] took over.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClaimReport {
    /// Entries now pending on the claiming consumer.
    pub claimed: u64,
    /// Entries that were pending but no longer exist on the stream (trimmed or deleted);
    /// Redis drops them from the pending list.
    pub deleted: u64,
}

/// A key of the run that holds something else than agora would put there.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyConflict {
    pub key: String,
    pub found: String,
    pub expected: &'static str,
}

/// The field of the run's record (`{stream}:run`) that names the lease's holder.
pub const LEASE_HOLDER: &str = "holder";

/// The stream, its consumer groups and the cache of one run.
///
/// Futures need not be `Send`: agents live on actix arbiters, which are single-threaded.
#[allow(async_fn_in_trait)]
pub trait Backend: Clone + Unpin + 'static {
    /// `"memory"` or `"redis"`.
    fn kind(&self) -> &'static str;

    fn keys(&self) -> &Keys;

    /// Creates consumer groups reading from id `0`, creating the stream if needed.
    /// Existing groups are left as they are.
    async fn ensure_groups(&self, groups: &[String]) -> Result<(), BackendError>;

    /// Takes over the entries of `group` that are pending on other consumers and have been
    /// idle for at least `min_idle` (XAUTOCLAIM), so that a consumer that is gone does not
    /// strand them. Consumers left with nothing pending are removed.
    async fn claim(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
    ) -> Result<ClaimReport, BackendError>;

    /// Answers when the backend can be used (PING).
    async fn ping(&self) -> Result<(), BackendError>;

    /// The run's bookkeeping hash (`{stream}:run`), empty if there is none.
    async fn read_checkpoint(&self) -> Result<Vec<(String, String)>, BackendError>;

    /// Replaces fields of the run's bookkeeping hash.
    async fn write_checkpoint(&self, fields: &[(&str, String)]) -> Result<(), BackendError>;

    /// Takes the stream's lease (`{stream}:lease`) for `holder` until `ttl` from now, if no
    /// one else holds it or the holder is `replacing`; otherwise returns who holds it.
    async fn take_lease(
        &self,
        holder: &str,
        ttl: Duration,
        replacing: Option<&str>,
    ) -> Result<Option<String>, BackendError>;

    /// Extends `holder`'s lease to `ttl` from now; false when someone else holds it. A lease
    /// that lapsed is taken again only while the run's record (`{stream}:run`, field
    /// `holder`) still names `holder`: no other run started in between.
    async fn renew_lease(&self, holder: &str, ttl: Duration) -> Result<bool, BackendError>;

    /// Gives the lease up, if `holder` has it.
    async fn release_lease(&self, holder: &str) -> Result<(), BackendError>;

    /// Who holds the lease, if anyone.
    async fn lease_holder(&self) -> Result<Option<String>, BackendError>;

    /// Keys of the run that exist with another type than agora gives them.
    async fn key_conflicts(&self) -> Result<Vec<KeyConflict>, BackendError>;

    /// Appends a note to one of the run's bookkeeping streams (the workers' control and
    /// report streams).
    async fn note(&self, key: &str, text: &str) -> Result<EntryId, BackendError>;

    /// Notes on a bookkeeping stream after `after`, waiting up to `block` for one to come.
    /// Uses a connection of its own, so it never holds up other commands.
    async fn notes(
        &self,
        key: &str,
        after: EntryId,
        block: Duration,
    ) -> Result<Vec<(EntryId, String)>, BackendError>;

    /// Drops the notes of a bookkeeping stream older than `before`; returns how many.
    async fn trim_notes(&self, key: &str, before: EntryId) -> Result<u64, BackendError>;

    /// Sets a field of one of the run's bookkeeping hashes (worker registrations).
    async fn hash_set(&self, key: &str, field: &str, value: &str) -> Result<(), BackendError>;

    /// All fields of one of the run's bookkeeping hashes.
    async fn hash_all(&self, key: &str) -> Result<Vec<(String, String)>, BackendError>;

    /// Appends messages to the stream outside of any step (tests, tools).
    async fn publish(&self, messages: &[Arc<Message>]) -> Result<Vec<EntryId>, BackendError>;

    /// Appends an entry with arbitrary fields, as another program would.
    async fn publish_fields(&self, fields: &[(String, String)]) -> Result<EntryId, BackendError>;

    /// Reads for several groups at once (one round trip on Redis). Answers come in the order
    /// of `reads`; groups that read the same entries may share one batch.
    async fn read(&self, reads: &[GroupRead]) -> Result<Vec<Batch>, BackendError>;

    /// Acknowledges entries of a group; returns how many were pending.
    async fn ack(&self, group: &str, ids: &[EntryId]) -> Result<u64, BackendError>;

    /// The stream's consumer groups, sorted by name.
    async fn groups(&self) -> Result<Vec<GroupInfo>, BackendError>;

    /// Up to `count` entries after `after`, in stream order (no group involved).
    async fn range(&self, after: EntryId, count: usize) -> Result<Vec<Delivery>, BackendError>;

    /// The id of the newest entry, or `EntryId::ZERO` if the stream is empty.
    async fn last_id(&self) -> Result<EntryId, BackendError>;

    /// Waits up to `timeout` for an entry newer than `after`; returns the newest id if one
    /// came.
    async fn wait_for_entries(
        &self,
        after: EntryId,
        timeout: Duration,
    ) -> Result<Option<EntryId>, BackendError>;

    /// Trims the stream towards `maxlen` entries, never removing an entry some group has not
    /// read and acknowledged. Returns how many entries were removed.
    async fn trim(&self, maxlen: u64) -> Result<u64, BackendError>;

    /// The dead-letter stream's entries, oldest first.
    async fn dead_letters(&self) -> Result<Vec<Vec<(String, String)>>, BackendError>;

    /// Appends entries to the cache outside of a step.
    async fn cache_append(&self, appends: &[CacheAppend]) -> Result<(), BackendError>;

    /// Runs cache reads (one round trip on Redis); answers come in the order of `queries`.
    async fn cache_read(&self, queries: &[CacheQuery]) -> Result<Vec<CacheAnswer>, BackendError>;

    /// Answers a cache read at once, without waiting, if this backend can (the memory backend
    /// always can; Redis never does).
    fn cache_read_now(&self, query: &CacheQuery) -> Option<CacheAnswer>;

    /// Sets an agent's list to expire after `ttl`.
    async fn cache_expire(&self, agent: &str, ttl: Duration) -> Result<bool, BackendError>;

    /// Deletes one agent's list.
    async fn cache_clear(&self, agent: &str) -> Result<(), BackendError>;

    /// Deletes every cache key under the prefix; returns how many keys went.
    async fn cache_clear_all(&self) -> Result<u64, BackendError>;

    /// Applies one agent step atomically; returns the ids of the published entries.
    async fn commit(&self, commit: &Commit<'_>) -> Result<Vec<EntryId>, BackendError>;

    /// The saved states of these agents (`None` where an agent has none).
    async fn load_states(&self, agents: &[Arc<str>]) -> Result<Vec<Option<String>>, BackendError>;

    /// Sizes of the run's keys.
    async fn sizes(&self) -> Result<Sizes, BackendError>;

    /// Deletes the run's keys: the groups, the stream, dead letters, the cache under the
    /// prefix and agora's own bookkeeping, and nothing else.
    async fn cleanup(&self) -> Result<CleanupReport, BackendError>;

    /// `n` distinct members of the sorted set within `bound`, drawn with `rng`.
    async fn cache_sample(
        &self,
        n: usize,
        rng: &mut ChaCha8Rng,
        bound: ScoreBound,
    ) -> Result<Vec<String>, BackendError> {
        let count = match self.cache_read(&[CacheQuery::Count { bound }]).await?.pop() {
            Some(CacheAnswer::Count(c)) => c,
            _ => return Err(BackendError::command("cache count returned no number")),
        };
        let ranks = crate::random::distinct(rng, count, n);
        let queries: Vec<CacheQuery> = ranks.iter().map(|&rank| CacheQuery::Rank { rank }).collect();
        let mut members = Vec::with_capacity(ranks.len());
        for answer in self.cache_read(&queries).await? {
            if let CacheAnswer::Members(m) = answer {
                members.extend(m);
            }
        }
        Ok(members)
    }
}
