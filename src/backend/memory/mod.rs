//! The embedded backend: Redis Streams and the cache, in process.
//!
//! It keeps the semantics the Redis backend has (consumer groups reading from `0`, pending
//! lists, acknowledgements, lag, trimming that spares unread entries, a list per agent and
//! one sorted set ordered by score and then by member bytes) so that a scenario runs the same
//! on both. Each entry is stored once behind an `Arc`; a group holds a cursor and a pending
//! list, so a delivery costs a pointer copy. One lock covers the whole store, which is what
//! makes [`RunStore::commit`] atomic.
//!
//! - `store`: the stream, its groups and the run's records.
//! - `pending`: a consumer group's pending entries list.
//! - `cache`: the lists and the sorted set.
//! - `transport`: notes and hashes for a coordinator and workers in one process.

mod cache;
mod pending;
mod store;
mod transport;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use self::store::{Inboxes, Store, id, no_group};
pub use self::transport::MemoryTransport;
use super::{
    Backend, BackendError, BackendKind, Cache, CacheAnswer, CacheAppend, CacheQuery, ClaimReport,
    CleanupReport, Commit, GroupInfo, GroupRead, Keys, LEASE_HOLDER, RunStore, Sizes, Stream,
};
use crate::message::{Batch, Delivery, Entry, EntryId, Message, parse_fields};
use crate::network::Network;

/// The embedded backend. Cloning it gives another handle on the same store.
#[derive(Clone)]
pub struct MemoryBackend {
    shared: Arc<Shared>,
}

struct Shared {
    keys: Keys,
    store: Mutex<Store>,
    /// Woken on every append, for [`Stream::wait_for_entries`].
    appended: Notify,
    /// Woken on every note of the in-process transport.
    noted: Notify,
    last_seq: AtomicU64,
}

impl MemoryBackend {
    pub fn new(keys: Keys) -> Self {
        Self::with_network(keys, None)
    }

    /// A backend whose agents read inboxes of their own, filled as `network` says, when there
    /// is one (`keys.inboxes` must say so too).
    pub fn with_network(keys: Keys, network: Option<Arc<Network>>) -> Self {
        let store = Store {
            inboxes: network.map(Inboxes::new),
            ..Store::default()
        };
        MemoryBackend {
            shared: Arc::new(Shared {
                keys,
                store: Mutex::new(store),
                appended: Notify::new(),
                noted: Notify::new(),
                last_seq: AtomicU64::new(0),
            }),
        }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave the store half-changed (every change is
        // applied after its checks), so a poisoned lock is still a consistent store.
        self.shared.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn appended(&self, last: u64) {
        self.shared.last_seq.store(last, Ordering::Release);
        self.shared.appended.notify_waiters();
    }

    /// Sizes of the run's keys, as `agora inspect` shows them on Redis.
    pub async fn sizes(&self) -> Result<Sizes, BackendError> {
        let mut store = self.store();
        let agents: Vec<String> = store.cache.lists.keys().cloned().collect();
        let mut lists: Vec<(String, u64)> = agents
            .into_iter()
            .filter_map(|a| store.cache.list(&a).map(|l| (a, l.items.len() as u64)))
            .collect();
        lists.sort();
        Ok(Sizes {
            stream: store.entries.len() as u64,
            dead_letters: store.dead.len() as u64,
            lists,
            timestamps: store.cache.timestamps.len() as u64,
        })
    }
}

impl Stream for MemoryBackend {
    async fn ensure_groups(&self, groups: &[String]) -> Result<(), BackendError> {
        let mut store = self.store();
        let keys = &self.shared.keys;
        for group in groups {
            store.ensure_group(group, keys.agent_of_group(group).filter(|_| keys.inboxes));
        }
        Ok(())
    }

    async fn read(&self, reads: &[GroupRead]) -> Result<Vec<Batch>, BackendError> {
        let mut store = self.store();
        let mut shared = None;
        reads.iter().map(|r| store.read(r, &mut shared)).collect()
    }

    async fn ack(&self, group: &str, ids: &[EntryId]) -> Result<u64, BackendError> {
        Ok(self.store().ack(group, ids))
    }

    async fn claim(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
    ) -> Result<ClaimReport, BackendError> {
        let mut store = self.store();
        match store.groups.get_mut(group) {
            Some(g) => Ok(g.claim(consumer, min_idle)),
            None => Err(no_group(group)),
        }
    }

    async fn trim(&self, maxlen: u64) -> Result<u64, BackendError> {
        Ok(self.store().trim(maxlen))
    }

    async fn publish(&self, messages: &[Arc<Message>]) -> Result<Vec<EntryId>, BackendError> {
        let mut store = self.store();
        let ids: Vec<EntryId> = messages
            .iter()
            .map(|m| store.append(Entry::Message(m.clone())))
            .collect();
        let last = store.last_seq();
        drop(store);
        self.appended(last);
        Ok(ids)
    }

    async fn publish_fields(&self, fields: &[(String, String)]) -> Result<EntryId, BackendError> {
        let mut store = self.store();
        let entry_id = store.append(parse_fields(fields));
        drop(store);
        self.appended(entry_id.seq);
        Ok(entry_id)
    }

    async fn range(&self, after: EntryId, count: usize) -> Result<Vec<Delivery>, BackendError> {
        let store = self.store();
        let from = if after.ms > 0 { u64::MAX } else { after.seq + 1 }.max(store.first_seq());
        let mut out = Vec::new();
        let mut seq = from;
        while out.len() < count {
            let Some(stored) = store.get(seq) else { break };
            out.push(Delivery {
                id: id(seq),
                entry: stored.entry.clone(),
            });
            seq += 1;
        }
        Ok(out)
    }

    async fn last_id(&self) -> Result<EntryId, BackendError> {
        let store = self.store();
        Ok(store.entries.back().map_or(EntryId::ZERO, |e| id(e.seq)))
    }

    async fn wait_for_entries(
        &self,
        after: EntryId,
        timeout: Duration,
    ) -> Result<Option<EntryId>, BackendError> {
        let newest = || {
            let last = self.shared.last_seq.load(Ordering::Acquire);
            (id(last) > after).then(|| id(last))
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(newest) = newest() {
                return Ok(Some(newest));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(newest());
            }
        }
    }

    async fn groups(&self) -> Result<Vec<GroupInfo>, BackendError> {
        let store = self.store();
        let last = store.last_seq();
        Ok(store
            .groups
            .iter()
            .map(|(name, g)| {
                let mut info = g.info(name, last);
                if let Some(queued) = store.queued(g) {
                    info.lag = Some(queued);
                }
                info
            })
            .collect())
    }

    async fn entries_added(&self) -> Result<u64, BackendError> {
        Ok(self.store().entries_added)
    }
}

impl Cache for MemoryBackend {
    async fn cache_append(&self, appends: &[CacheAppend]) -> Result<(), BackendError> {
        let mut store = self.store();
        for a in appends {
            store.cache.append(a);
        }
        Ok(())
    }

    async fn cache_read(&self, queries: &[CacheQuery]) -> Result<Vec<CacheAnswer>, BackendError> {
        let mut store = self.store();
        Ok(queries.iter().map(|q| store.cache.query(q)).collect())
    }

    fn cache_read_now(&self, query: &CacheQuery) -> Option<CacheAnswer> {
        Some(self.store().cache.query(query))
    }

    async fn cache_expire(&self, agent: &str, ttl: Duration) -> Result<bool, BackendError> {
        let mut store = self.store();
        Ok(match store.cache.list(agent) {
            Some(list) => {
                list.expires = Some(Instant::now() + ttl);
                true
            }
            None => false,
        })
    }

    async fn cache_clear(&self, agent: &str) -> Result<(), BackendError> {
        self.store().cache.lists.remove(agent);
        Ok(())
    }

    async fn cache_clear_all(&self) -> Result<u64, BackendError> {
        Ok(self.store().cache.clear())
    }
}

impl RunStore for MemoryBackend {
    async fn commit(&self, c: &Commit<'_>) -> Result<Vec<EntryId>, BackendError> {
        let mut store = self.store();
        if !c.acks.is_empty() && !store.groups.contains_key(c.group) {
            return Err(no_group(c.group));
        }
        store.ack(c.group, c.acks);
        let ids: Vec<EntryId> = c
            .publish
            .iter()
            .map(|m| store.append(Entry::Message(m.clone())))
            .collect();
        for a in c.cache {
            store.cache.append(a);
        }
        if let Some((agent, state)) = c.state {
            // Most steps overwrite a state that is there: into its own buffer.
            match store.states.get_mut(agent) {
                Some(saved) => {
                    saved.clear();
                    saved.push_str(state);
                }
                None => {
                    store.states.insert(agent.to_string(), state.to_string());
                }
            }
        }
        for d in c.dead {
            store.dead.push(d.to_fields());
        }
        let last = store.last_seq();
        drop(store);
        if !ids.is_empty() {
            self.appended(last);
        }
        Ok(ids)
    }

    async fn load_states(&self, agents: &[Arc<str>]) -> Result<Vec<Option<String>>, BackendError> {
        let store = self.store();
        Ok(agents.iter().map(|a| store.states.get(&**a).cloned()).collect())
    }

    async fn read_record(&self) -> Result<Vec<(String, String)>, BackendError> {
        Ok(self
            .store()
            .record
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn write_record(&self, fields: &[(&str, String)]) -> Result<(), BackendError> {
        let mut store = self.store();
        for (k, v) in fields {
            store.record.insert(k.to_string(), v.clone());
        }
        Ok(())
    }

    async fn update_record(&self, fields: &[(&str, String)]) -> Result<(), BackendError> {
        if self.store().record.is_empty() {
            return Err(super::record_gone());
        }
        self.write_record(fields).await
    }

    async fn take_lease(
        &self,
        holder: &str,
        ttl: Duration,
        replacing: Option<&str>,
    ) -> Result<Option<String>, BackendError> {
        let mut store = self.store();
        match store.lease_holder() {
            Some(current) if current != holder && Some(current) != replacing => Ok(Some(current.to_string())),
            _ => {
                store.lease = Some((holder.to_string(), Instant::now() + ttl));
                Ok(None)
            }
        }
    }

    async fn renew_lease(&self, holder: &str, ttl: Duration) -> Result<bool, BackendError> {
        let mut store = self.store();
        let renewable = match store.lease_holder() {
            Some(current) => current == holder,
            None => store.record.get(LEASE_HOLDER).is_some_and(|h| h == holder),
        };
        if renewable {
            store.lease = Some((holder.to_string(), Instant::now() + ttl));
        }
        Ok(renewable)
    }

    async fn release_lease(&self, holder: &str) -> Result<(), BackendError> {
        let mut store = self.store();
        if store.lease_holder() == Some(holder) {
            store.lease = None;
        }
        Ok(())
    }

    async fn lease_holder(&self) -> Result<Option<String>, BackendError> {
        Ok(self.store().lease_holder().map(str::to_string))
    }

    async fn dead_letters(&self) -> Result<Vec<Vec<(String, String)>>, BackendError> {
        Ok(self.store().dead.clone())
    }

    async fn delete_run(&self) -> Result<CleanupReport, BackendError> {
        let mut store = self.store();
        let groups = store.groups.len() as u64;
        let mut keys = 0;
        keys += u64::from(!store.entries.is_empty() || groups > 0);
        keys += u64::from(!store.dead.is_empty());
        keys += u64::from(!store.states.is_empty());
        keys += u64::from(!store.record.is_empty());
        keys += u64::from(!store.answers.is_empty());
        keys += u64::from(store.model_turns_end > 0);
        keys += store.cache.clear();
        // Ids keep growing across a deletion, as a recreated Redis stream's would not; no one
        // relies on either.
        let next_seq = store.next_seq;
        let next_note = store.books.next_note;
        let lease = store.lease.take();
        let inboxes = store.inboxes.take().map(|i| Inboxes::new(i.network));
        *store = Store {
            next_seq,
            lease,
            inboxes,
            ..Store::default()
        };
        store.books.next_note = next_note;
        Ok(CleanupReport { groups, keys })
    }

    async fn load_answer(&self, key: &str) -> Result<Option<String>, BackendError> {
        Ok(self.store().answers.get(key).cloned())
    }

    async fn save_answer(&self, key: &str, answer: &str) -> Result<String, BackendError> {
        let mut store = self.store();
        Ok(store
            .answers
            .entry(key.to_string())
            .or_insert_with(|| answer.to_string())
            .clone())
    }

    async fn answers(&self) -> Result<Vec<String>, BackendError> {
        Ok(self.store().answers.values().cloned().collect())
    }

    async fn book_model_turn(&self, cost_ms: u64) -> Result<u64, BackendError> {
        let now_ms = crate::backend::unix_millis();
        let mut store = self.store();
        let start = store.model_turns_end.max(now_ms);
        store.model_turns_end = start + cost_ms;
        Ok(start - now_ms)
    }
}

impl Backend for MemoryBackend {
    type Transport = MemoryTransport;

    fn kind(&self) -> BackendKind {
        BackendKind::Memory
    }

    fn keys(&self) -> &Keys {
        &self.shared.keys
    }

    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn preflight(&self) -> Result<(), BackendError> {
        // Nothing else shares the embedded store, and it refuses nothing.
        Ok(())
    }

    fn transport(&self) -> Option<MemoryTransport> {
        // Worker processes cannot reach another process's memory.
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> MemoryBackend {
        MemoryBackend::new(Keys::for_stream("t"))
    }

    #[test]
    fn sorted_set_orders_by_score_then_bytes() {
        let b = backend();
        let mut store = b.store();
        for (score, member) in [(2.0, "b"), (1.0, "z"), (2.0, "a"), (1.0, "y")] {
            store.cache.append(&CacheAppend {
                agent: "x".into(),
                member: member.into(),
                score,
            });
        }
        let order: Vec<&str> = store.cache.timestamps.iter().map(|(_, m)| &**m).collect();
        assert_eq!(order, ["y", "z", "a", "b"]);
    }

    #[tokio::test]
    async fn groups_reading_the_same_entries_share_a_batch_not_a_pending_list() {
        let b = backend();
        let groups: Vec<String> = ["g1", "g2", "g3"].map(String::from).to_vec();
        b.ensure_groups(&groups).await.unwrap();
        for i in 0..3 {
            let fields = [("sender_id", "x"), ("content", &*i.to_string())]
                .map(|(k, v)| (k.to_string(), v.to_string()));
            b.publish_fields(&fields).await.unwrap();
        }
        let read = |group: &str, count| GroupRead {
            group: group.into(),
            consumer: "c".into(),
            count,
            pending: false,
        };
        let batches = b
            .read(&[read("g1", 10), read("g2", 10), read("g3", 2)])
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&batches[0], &batches[1]));
        assert_eq!(batches[0].len(), 3);
        // Another range, another batch.
        assert_eq!(batches[2].len(), 2);
        let ids: Vec<EntryId> = batches[0].iter().map(|d| d.id).collect();
        assert_eq!(b.ack("g1", &ids).await.unwrap(), 3);
        let pending: Vec<u64> = b.groups().await.unwrap().iter().map(|g| g.pending).collect();
        assert_eq!(pending, [0, 3, 2]);
        // g2 still has all three pending for its consumer.
        let again = b
            .read(&[GroupRead {
                pending: true,
                ..read("g2", 10)
            }])
            .await
            .unwrap();
        assert_eq!(again[0].iter().map(|d| d.id).collect::<Vec<_>>(), ids);
    }
}
