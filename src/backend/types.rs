//! The values that cross the backend seam: reads, group descriptions, dead letters, a step's
//! commit, cache queries and their answers, and what admin commands report.

use std::sync::Arc;

use crate::backend::cache::{CacheAppend, ScoreBound};
use crate::message::{EntryId, Message};

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

/// Everything one agent step changes, applied atomically by [`RunStore::commit`](super::RunStore::commit).
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

/// What [`RunStore::delete_run`](super::RunStore::delete_run) (or `agora cleanup`) deleted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CleanupReport {
    pub groups: u64,
    pub keys: u64,
}

/// What [`Stream::claim`](super::Stream::claim) took over.
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
