//! Backends: the stream with one consumer group per agent, the cache, and the run's store.
//!
//! A backend plays three roles, one trait each, gathered by [`Backend`]:
//!
//! - [`Stream`]: Redis Streams semantics. Entries with ids, consumer groups created from id
//!   `0`, reads of new entries with a count, a pending list per group, acknowledgements, lag,
//!   claiming what an idle consumer left pending, trimming that spares what some group has
//!   not read and acknowledged.
//! - [`Cache`]: the old project's cache. A list per agent and one sorted set of everything,
//!   ordered by score and then by member bytes.
//! - [`RunStore`]: what makes a run safe. [`RunStore::commit`] applies one agent step
//!   (acknowledgements, publishes, cache writes, new state, dead letters) all at once or not
//!   at all (DESIGN.md invariant 2); saved states; the run's record; the stream's lease; the
//!   dead letters.
//!
//! Worker processes talk through a [`Transport`] (bookkeeping streams and hashes), which only
//! a backend that several processes can share provides ([`Backend::transport`]).
//!
//! Two implementations keep the same semantics: [`memory::MemoryBackend`], the embedded
//! default, and [`redis::RedisBackend`], the real engine. [`open`] is the one place that knows
//! every kind: a third backend (NATS JetStream, Redis Cluster) is a module under `backend/`
//! that implements the traits, a variant of [`BackendKind`], an arm in [`open`], and a line in
//! `tests/conformance.rs` so that the conformance suite runs on it.

pub mod cache;
mod error;
pub mod keys;
pub mod memory;
pub mod redis;
mod types;
pub mod url;

use std::sync::Arc;
use std::time::Duration;

pub use cache::{CacheAppend, CacheEntry, ScoreBound};
pub use error::{BackendError, BackendErrorKind};
pub use keys::Keys;
pub use types::{
    CacheAnswer, CacheQuery, ClaimReport, CleanupReport, Commit, DeadLetter, GroupInfo, GroupRead,
    KeyConflict, Sizes,
};

use crate::message::{Batch, Delivery, EntryId, Message};
use crate::random::ChaCha8Rng;
use crate::scenario::BackendConfig;
pub use crate::scenario::BackendKind;

/// The field of the run's record (`{stream}:run`) that names the lease's holder.
pub const LEASE_HOLDER: &str = "holder";

/// The stream and its consumer groups.
///
/// Futures need not be `Send`: agents live on actix arbiters, which are single-threaded.
#[allow(async_fn_in_trait)]
pub trait Stream {
    /// Creates consumer groups reading from id `0`, creating the stream if needed.
    /// Existing groups are left as they are.
    async fn ensure_groups(&self, groups: &[String]) -> Result<(), BackendError>;

    /// Reads for several groups at once (one round trip on Redis). Answers come in the order
    /// of `reads`; groups that read the same entries may share one batch.
    ///
    /// # Errors
    ///
    /// A group that does not exist (NOGROUP), or the backend failing.
    async fn read(&self, reads: &[GroupRead]) -> Result<Vec<Batch>, BackendError>;

    /// Acknowledges entries of a group; returns how many were pending.
    async fn ack(&self, group: &str, ids: &[EntryId]) -> Result<u64, BackendError>;

    /// Takes over the entries of `group` that are pending on other consumers and have been
    /// idle for at least `min_idle` (XAUTOCLAIM), so that a consumer that is gone does not
    /// strand them. Consumers other than `consumer` left with nothing pending are removed.
    async fn claim(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
    ) -> Result<ClaimReport, BackendError>;

    /// Trims the stream towards `maxlen` entries, never removing an entry some group has not
    /// read and acknowledged. Returns how many entries were removed.
    async fn trim(&self, maxlen: u64) -> Result<u64, BackendError>;

    /// Appends messages to the stream outside of any step (tests, tools).
    async fn publish(&self, messages: &[Arc<Message>]) -> Result<Vec<EntryId>, BackendError>;

    /// Appends an entry with arbitrary fields, as another program would.
    async fn publish_fields(&self, fields: &[(String, String)]) -> Result<EntryId, BackendError>;

    /// Up to `count` entries after `after`, in stream order (no group involved).
    async fn range(&self, after: EntryId, count: usize) -> Result<Vec<Delivery>, BackendError>;

    /// The id of the newest entry, or `EntryId::ZERO` if the stream is empty.
    async fn last_id(&self) -> Result<EntryId, BackendError>;

    /// Waits up to `timeout` for an entry newer than `after`; returns the newest id if one
    /// came. Never holds up other commands (DESIGN.md invariant 4).
    async fn wait_for_entries(
        &self,
        after: EntryId,
        timeout: Duration,
    ) -> Result<Option<EntryId>, BackendError>;

    /// The stream's consumer groups, sorted by name.
    async fn groups(&self) -> Result<Vec<GroupInfo>, BackendError>;

    /// How many entries were ever added to the stream (Redis's `entries-added`): trimming and
    /// deleting do not lower it; deleting the stream does.
    async fn entries_added(&self) -> Result<u64, BackendError>;
}

/// The cache: a list per agent and one sorted set of everything.
#[allow(async_fn_in_trait)]
pub trait Cache {
    /// Appends entries to the cache outside of a step.
    async fn cache_append(&self, appends: &[CacheAppend]) -> Result<(), BackendError>;

    /// Runs cache reads (one round trip on Redis); answers come in the order of `queries`.
    async fn cache_read(&self, queries: &[CacheQuery]) -> Result<Vec<CacheAnswer>, BackendError>;

    /// Answers a cache read at once, without waiting, if this backend can (the memory backend
    /// always can; Redis never does).
    fn cache_read_now(&self, query: &CacheQuery) -> Option<CacheAnswer>;

    /// Sets an agent's list to expire after `ttl`; false when the agent has no list.
    async fn cache_expire(&self, agent: &str, ttl: Duration) -> Result<bool, BackendError>;

    /// Deletes one agent's list.
    async fn cache_clear(&self, agent: &str) -> Result<(), BackendError>;

    /// Deletes every cache key under the prefix; returns how many keys went.
    async fn cache_clear_all(&self) -> Result<u64, BackendError>;

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

/// What keeps a run safe across crashes and processes: atomic steps, saved states, the run's
/// record, the stream's lease, dead letters.
#[allow(async_fn_in_trait)]
pub trait RunStore {
    /// Applies one agent step atomically; returns the ids of the published entries.
    ///
    /// # Errors
    ///
    /// A step that acknowledges entries of a group that does not exist fails with a NOGROUP
    /// error and changes nothing: nothing is published by a step whose acknowledgement
    /// failed.
    async fn commit(&self, commit: &Commit<'_>) -> Result<Vec<EntryId>, BackendError>;

    /// The saved states of these agents (`None` where an agent has none).
    async fn load_states(&self, agents: &[Arc<str>]) -> Result<Vec<Option<String>>, BackendError>;

    /// The run's record (`{stream}:run`) as fields, empty if there is none.
    async fn read_record(&self) -> Result<Vec<(String, String)>, BackendError>;

    /// Replaces fields of the run's record.
    async fn write_record(&self, fields: &[(&str, String)]) -> Result<(), BackendError>;

    /// Replaces fields of the run's record if it is still there. A conflict error (with the
    /// hint that the run's keys were deleted) when it is gone: a run whose keys `agora
    /// cleanup` deleted while it ran must not bring its record back, which would stand as
    /// an unfinished run in the way of the next.
    async fn update_record(&self, fields: &[(&str, String)]) -> Result<(), BackendError>;

    /// Takes the stream's lease (`{stream}:lease`) for `holder` until `ttl` from now, if no
    /// one else holds it or the holder is `replacing`; otherwise returns who holds it.
    async fn take_lease(
        &self,
        holder: &str,
        ttl: Duration,
        replacing: Option<&str>,
    ) -> Result<Option<String>, BackendError>;

    /// Extends `holder`'s lease to `ttl` from now; false when someone else holds it. A lease
    /// that lapsed is taken again only while the run's record (field [`LEASE_HOLDER`]) still
    /// names `holder`: no other run started in between.
    async fn renew_lease(&self, holder: &str, ttl: Duration) -> Result<bool, BackendError>;

    /// Gives the lease up, if `holder` has it.
    async fn release_lease(&self, holder: &str) -> Result<(), BackendError>;

    /// Who holds the lease, if anyone.
    async fn lease_holder(&self) -> Result<Option<String>, BackendError>;

    /// The dead-letter stream's entries, oldest first.
    async fn dead_letters(&self) -> Result<Vec<Vec<(String, String)>>, BackendError>;

    /// Deletes the run's keys: the groups, the stream, dead letters, the cache under the
    /// prefix and the run's own bookkeeping (not its lease), and nothing else.
    async fn delete_run(&self) -> Result<CleanupReport, BackendError>;

    /// The model's answer to the request with `key`, if the run has one (`{stream}:llm`).
    async fn load_answer(&self, key: &str) -> Result<Option<String>, BackendError>;

    /// Keeps an answer with the run, unless one is kept for `key` already; returns the one
    /// kept (the first wins, so every process uses the same answer).
    async fn save_answer(&self, key: &str, answer: &str) -> Result<String, BackendError>;

    /// Every answer kept with the run.
    async fn answers(&self) -> Result<Vec<String>, BackendError>;

    /// Books the run's next turn at the model (across all its processes): the turn starts now
    /// or when the last turn booked ends, whichever is later, and lasts `cost_ms`; returns how
    /// many milliseconds from now it starts. A request waits for its turn, so that requests
    /// and tokens per minute hold over any minute (the generic cell rate algorithm, without
    /// bursts). "Now" is the backend's clock where it has one (Redis's `TIME`), so that
    /// processes on machines whose clocks disagree book from one.
    async fn book_model_turn(&self, cost_ms: u64) -> Result<u64, BackendError>;
}

/// Bookkeeping streams and hashes through which a coordinator and its worker processes talk.
#[allow(async_fn_in_trait)]
pub trait Transport: Clone + 'static {
    /// Appends a note to one of the run's bookkeeping streams (the workers' control and
    /// report streams).
    async fn note(&self, key: &str, text: &str) -> Result<EntryId, BackendError>;

    /// Notes on a bookkeeping stream after `after`, waiting up to `block` for one to come.
    /// Never holds up other commands.
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
}

/// A backend: a stream, a cache and a run store under one key layout.
#[allow(async_fn_in_trait)]
pub trait Backend: Stream + Cache + RunStore + Clone + Unpin + Send + Sync + 'static {
    /// How this backend's worker processes talk, when it has any.
    type Transport: Transport;

    fn kind(&self) -> BackendKind;

    fn keys(&self) -> &Keys;

    /// Answers when the backend can be used (PING).
    async fn ping(&self) -> Result<(), BackendError>;

    /// Checks, before a run writes anything, that it can use its keys: none of them holds
    /// something agora did not put there (a `Conflict` error names it), and the backend lets
    /// the run do everything it will do.
    async fn preflight(&self) -> Result<(), BackendError>;

    /// The transport worker processes share, or `None` when processes cannot share this
    /// backend (the in-process memory backend).
    fn transport(&self) -> Option<Self::Transport>;
}

/// Something to do with whichever backend a scenario names: see [`open`].
#[allow(async_fn_in_trait)]
pub trait WithBackend {
    type Output;

    async fn with<B: Backend>(self, backend: B) -> Self::Output;
}

/// Opens the backend `config` names and hands it to `task`.
///
/// # Errors
///
/// The backend cannot be used (Redis unreachable, refusing the credentials, not Redis):
/// `BackendErrorKind::Unavailable`, with a hint.
pub async fn open<W: WithBackend>(config: &BackendConfig, task: W) -> Result<W::Output, BackendError> {
    match config.kind {
        BackendKind::Memory => {
            let backend = memory::MemoryBackend::with_network(config.keys.clone(), config.network.clone());
            Ok(task.with(backend).await)
        }
        BackendKind::Redis => {
            let backend =
                redis::RedisBackend::connect(&config.url, config.keys.clone(), config.reconnect_timeout)
                    .await?
                    .with_network(config.network.clone());
            Ok(task.with(backend).await)
        }
    }
}

/// The hint when a run's keys have gone from under it.
pub(crate) const KEYS_DELETED: &str = "the run's keys were deleted while it ran (by agora cleanup, FLUSHDB or another program): start it afresh";

/// The error of a write to the run's record after the record was deleted.
pub(crate) fn record_gone() -> BackendError {
    BackendError::conflict(
        "writing the run's record: it is gone from the backend",
        KEYS_DELETED,
    )
}

/// The wall clock in milliseconds since the Unix epoch: "now" for [`RunStore::book_model_turn`]
/// where the backend has no clock of its own.
pub(crate) fn unix_millis() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}
