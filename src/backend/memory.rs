//! The embedded backend: Redis Streams and the cache, in process.
//!
//! It keeps the semantics the Redis backend has (consumer groups reading from `0`, pending
//! lists, acknowledgements, lag, trimming that spares unread entries, a list per agent and
//! one sorted set ordered by score and then by member bytes) so that a scenario runs the same
//! on both. Each entry is stored once behind an `Arc`; a group holds a cursor and a pending
//! list, so a delivery costs a pointer copy. One lock covers the whole store, which is what
//! makes [`Backend::commit`] atomic.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A fast hash map: keys are agent names and cache members, not attacker-chosen.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use super::LEASE_HOLDER;
use super::{
    Backend, BackendError, CacheAnswer, CacheAppend, CacheQuery, ClaimReport, CleanupReport, Commit,
    GroupInfo, GroupRead, KeyConflict, Keys, Sizes,
};
use crate::message::{Batch, Delivery, Entry, EntryId, Message, parse_fields};

/// The embedded backend. Cloning it gives another handle on the same store.
#[derive(Clone)]
pub struct MemoryBackend {
    shared: Arc<Shared>,
}

struct Shared {
    keys: Keys,
    store: Mutex<Store>,
    /// Woken on every append, for [`Backend::wait_for_entries`].
    appended: Notify,
    /// Woken on every note.
    noted: Notify,
    last_seq: AtomicU64,
}

#[derive(Default)]
struct Store {
    /// Entries in id order; sequence numbers are contiguous from the front's.
    entries: VecDeque<Stored>,
    next_seq: u64,
    groups: BTreeMap<String, Group>,
    dead: Vec<Vec<(String, String)>>,
    lists: HashMap<String, CacheList>,
    /// The global sorted set: by score, then by member bytes (Redis's order).
    timestamps: Vec<(f64, Arc<str>)>,
    /// Each member's score, so that re-adding a member finds its old place quickly.
    scores: HashMap<Arc<str>, f64>,
    states: HashMap<String, String>,
    checkpoint: BTreeMap<String, String>,
    /// The stream's lease: holder and expiry.
    lease: Option<(String, Instant)>,
    /// Bookkeeping streams (worker control) by key: sequence numbers and texts.
    notes: HashMap<String, Vec<(u64, String)>>,
    next_note: u64,
    hashes: HashMap<String, BTreeMap<String, String>>,
}

struct Stored {
    seq: u64,
    entry: Entry,
}

#[derive(Default)]
struct Group {
    last_delivered: u64,
    /// Delivered and not yet acknowledged, in sequence order. Acknowledged entries are
    /// marked and dropped once they reach the front, so an in-order ack is O(1).
    pending: VecDeque<Pending>,
    live: u64,
    /// Consumer names; pending entries refer to them by position.
    consumers: Vec<String>,
}

struct Pending {
    seq: u64,
    consumer: u32,
    acked: bool,
    /// When it was last delivered, for claiming entries of idle consumers.
    delivered: Instant,
}

#[derive(Default)]
struct CacheList {
    items: Vec<Arc<str>>,
    expires: Option<Instant>,
}

impl CacheList {
    fn expired(&self) -> bool {
        self.expires.is_some_and(|at| Instant::now() >= at)
    }
}

fn id(seq: u64) -> EntryId {
    EntryId::new(0, seq)
}

impl MemoryBackend {
    pub fn new(keys: Keys) -> Self {
        MemoryBackend {
            shared: Arc::new(Shared {
                keys,
                store: Mutex::new(Store {
                    next_seq: 1,
                    ..Store::default()
                }),
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
}

impl Store {
    fn lease_holder(&self) -> Option<&str> {
        self.lease
            .as_ref()
            .filter(|(_, until)| *until > Instant::now())
            .map(|(holder, _)| holder.as_str())
    }

    fn append(&mut self, entry: Entry) -> EntryId {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push_back(Stored { seq, entry });
        id(seq)
    }

    fn first_seq(&self) -> u64 {
        self.entries.front().map_or(self.next_seq, |e| e.seq)
    }

    fn get(&self, seq: u64) -> Option<&Stored> {
        let first = self.first_seq();
        seq.checked_sub(first).and_then(|i| self.entries.get(i as usize))
    }

    /// One group's read. `shared` is the previous new-entries read of the same call: a group
    /// that reads the same range shares its batch.
    fn read(&mut self, r: &GroupRead, shared: &mut Option<(u64, u64, Batch)>) -> Result<Batch, BackendError> {
        let first = self.first_seq();
        let last = self.next_seq - 1;
        let Some(group) = self.groups.get_mut(&r.group) else {
            return Err(no_group(&r.group));
        };
        let consumer = match group.consumers.iter().position(|c| *c == r.consumer) {
            Some(i) => i as u32,
            None => {
                group.consumers.push(r.consumer.clone());
                (group.consumers.len() - 1) as u32
            }
        };
        let mut out = Vec::new();
        if r.pending {
            let now = Instant::now();
            for p in group
                .pending
                .iter_mut()
                .filter(|p| !p.acked && p.consumer == consumer)
            {
                p.delivered = now;
                if out.len() >= r.count {
                    break;
                }
                let at = p
                    .seq
                    .checked_sub(first)
                    .and_then(|i| self.entries.get(i as usize));
                if let Some(stored) = at {
                    out.push(Delivery {
                        id: id(stored.seq),
                        entry: stored.entry.clone(),
                    });
                }
            }
            return Ok(out.into());
        }
        let from = (group.last_delivered + 1).max(first);
        let to = last.min(from.saturating_add(r.count as u64).saturating_sub(1));
        if from > to || r.count == 0 {
            return Ok(out.into());
        }
        let batch = match shared {
            Some((f, t, batch)) if (*f, *t) == (from, to) => batch.clone(),
            _ => {
                let batch: Batch = self
                    .entries
                    .range((from - first) as usize..=(to - first) as usize)
                    .map(|stored| Delivery {
                        id: id(stored.seq),
                        entry: stored.entry.clone(),
                    })
                    .collect();
                *shared = Some((from, to, batch.clone()));
                batch
            }
        };
        let now = Instant::now();
        group.pending.extend((from..=to).map(|seq| Pending {
            seq,
            consumer,
            acked: false,
            delivered: now,
        }));
        group.live += batch.len() as u64;
        group.last_delivered = to;
        Ok(batch)
    }

    fn ack(&mut self, group: &str, ids: &[EntryId]) -> u64 {
        let Some(group) = self.groups.get_mut(group) else {
            return 0;
        };
        let mut acked = 0;
        // Ids usually come in order, as they were read: look from where the last one was.
        let mut from = 0;
        for entry_id in ids {
            if entry_id.ms != 0 {
                continue;
            }
            let found = match group.pending.get(from) {
                Some(p) if p.seq == entry_id.seq => Some(from),
                _ => group.pending.binary_search_by_key(&entry_id.seq, |p| p.seq).ok(),
            };
            if let Some(i) = found {
                from = i + 1;
                if !group.pending[i].acked {
                    group.pending[i].acked = true;
                    acked += 1;
                }
            }
        }
        group.live -= acked;
        while group.pending.front().is_some_and(|p| p.acked) {
            group.pending.pop_front();
        }
        acked
    }

    fn list(&mut self, agent: &str) -> Option<&mut CacheList> {
        if self.lists.get(agent).is_some_and(CacheList::expired) {
            self.lists.remove(agent);
        }
        self.lists.get_mut(agent)
    }

    fn cache_append(&mut self, a: &CacheAppend) {
        let member: Arc<str> = Arc::from(a.member.as_str());
        if self.list(&a.agent).is_none() {
            self.lists.insert(a.agent.to_string(), CacheList::default());
        }
        if let Some(list) = self.lists.get_mut(&*a.agent) {
            list.items.push(member.clone());
        }
        // ZADD semantics: a member appears once; adding it again moves it to its new score.
        if let Some(old) = self.scores.insert(member.clone(), a.score) {
            let at = self.zset_position(old, &member);
            if self.timestamps.get(at).is_some_and(|(_, m)| *m == member) {
                self.timestamps.remove(at);
            }
        }
        // Free mode scores by the clock and lockstep by the tick: most members go at the end.
        let last = self.timestamps.last();
        if last.is_none_or(|(s, m)| {
            s.total_cmp(&a.score)
                .then_with(|| m.as_bytes().cmp(member.as_bytes()))
                .is_lt()
        }) {
            self.timestamps.push((a.score, member));
        } else {
            let at = self.zset_position(a.score, &member);
            self.timestamps.insert(at, (a.score, member));
        }
    }

    /// Where (score, member) is or would be in the sorted set.
    fn zset_position(&self, score: f64, member: &str) -> usize {
        self.timestamps.partition_point(|(s, m)| {
            s.total_cmp(&score)
                .then_with(|| m.as_bytes().cmp(member.as_bytes()))
                .is_lt()
        })
    }

    fn cache_query(&mut self, q: &CacheQuery) -> CacheAnswer {
        match q {
            CacheQuery::OwnLast { agent, n } => {
                let items = self.list(agent).map(|l| {
                    let from = l.items.len().saturating_sub(*n);
                    l.items[from..].iter().map(|m| m.to_string()).collect()
                });
                CacheAnswer::Members(items.unwrap_or_default())
            }
            CacheQuery::Last { n, bound } => {
                let end = self.timestamps.partition_point(|(s, _)| bound.admits(*s));
                let from = end.saturating_sub(*n);
                CacheAnswer::Members(
                    self.timestamps[from..end]
                        .iter()
                        .map(|(_, m)| m.to_string())
                        .collect(),
                )
            }
            CacheQuery::Count { bound } => {
                CacheAnswer::Count(self.timestamps.partition_point(|(s, _)| bound.admits(*s)) as u64)
            }
            CacheQuery::Rank { rank } => CacheAnswer::Members(
                usize::try_from(*rank)
                    .ok()
                    .and_then(|r| self.timestamps.get(r))
                    .map(|(_, m)| vec![m.to_string()])
                    .unwrap_or_default(),
            ),
        }
    }
}

fn no_group(group: &str) -> BackendError {
    BackendError::command(format!(
        "NOGROUP: no consumer group {group:?} on the stream (create it before reading)"
    ))
}

impl Backend for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn keys(&self) -> &Keys {
        &self.shared.keys
    }

    async fn ensure_groups(&self, groups: &[String]) -> Result<(), BackendError> {
        let mut store = self.store();
        for group in groups {
            store.groups.entry(group.clone()).or_default();
        }
        Ok(())
    }

    async fn claim(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
    ) -> Result<ClaimReport, BackendError> {
        let mut store = self.store();
        let Some(g) = store.groups.get_mut(group) else {
            return Err(no_group(group));
        };
        let me = match g.consumers.iter().position(|c| c == consumer) {
            Some(i) => i as u32,
            None => {
                g.consumers.push(consumer.to_string());
                (g.consumers.len() - 1) as u32
            }
        };
        let now = Instant::now();
        let mut claimed = 0;
        // As XAUTOCLAIM does: idle entries of any consumer, the claimant's own included.
        for p in g.pending.iter_mut().filter(|p| !p.acked) {
            if now.duration_since(p.delivered) >= min_idle {
                p.consumer = me;
                p.delivered = now;
                claimed += 1;
            }
        }
        Ok(ClaimReport { claimed, deleted: 0 })
    }

    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn read_checkpoint(&self) -> Result<Vec<(String, String)>, BackendError> {
        Ok(self
            .store()
            .checkpoint
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn write_checkpoint(&self, fields: &[(&str, String)]) -> Result<(), BackendError> {
        let mut store = self.store();
        for (k, v) in fields {
            store.checkpoint.insert(k.to_string(), v.clone());
        }
        Ok(())
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
            None => store.checkpoint.get(LEASE_HOLDER).is_some_and(|h| h == holder),
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

    async fn key_conflicts(&self) -> Result<Vec<KeyConflict>, BackendError> {
        // Nothing else shares the embedded store.
        Ok(Vec::new())
    }

    async fn note(&self, key: &str, text: &str) -> Result<EntryId, BackendError> {
        let mut store = self.store();
        store.next_note += 1;
        let seq = store.next_note;
        store
            .notes
            .entry(key.to_string())
            .or_default()
            .push((seq, text.to_string()));
        drop(store);
        self.shared.noted.notify_waiters();
        Ok(id(seq))
    }

    async fn notes(
        &self,
        key: &str,
        after: EntryId,
        block: Duration,
    ) -> Result<Vec<(EntryId, String)>, BackendError> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let noted = self.shared.noted.notified();
            tokio::pin!(noted);
            noted.as_mut().enable();
            let found: Vec<(EntryId, String)> = self
                .store()
                .notes
                .get(key)
                .map(|n| {
                    n.iter()
                        .filter(|(seq, _)| id(*seq) > after)
                        .map(|(seq, t)| (id(*seq), t.clone()))
                        .collect()
                })
                .unwrap_or_default();
            if !found.is_empty() || tokio::time::timeout_at(deadline, noted).await.is_err() {
                return Ok(found);
            }
        }
    }

    async fn trim_notes(&self, key: &str, before: EntryId) -> Result<u64, BackendError> {
        let mut store = self.store();
        let Some(notes) = store.notes.get_mut(key) else {
            return Ok(0);
        };
        let len = notes.len();
        notes.retain(|(seq, _)| id(*seq) >= before);
        Ok((len - notes.len()) as u64)
    }

    async fn hash_set(&self, key: &str, field: &str, value: &str) -> Result<(), BackendError> {
        self.store()
            .hashes
            .entry(key.to_string())
            .or_default()
            .insert(field.to_string(), value.to_string());
        Ok(())
    }

    async fn hash_all(&self, key: &str) -> Result<Vec<(String, String)>, BackendError> {
        Ok(self
            .store()
            .hashes
            .get(key)
            .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    async fn publish(&self, messages: &[Arc<Message>]) -> Result<Vec<EntryId>, BackendError> {
        let mut store = self.store();
        let ids: Vec<EntryId> = messages
            .iter()
            .map(|m| store.append(Entry::Message(m.clone())))
            .collect();
        let last = store.next_seq - 1;
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

    async fn read(&self, reads: &[GroupRead]) -> Result<Vec<Batch>, BackendError> {
        let mut store = self.store();
        let mut shared = None;
        reads.iter().map(|r| store.read(r, &mut shared)).collect()
    }

    async fn ack(&self, group: &str, ids: &[EntryId]) -> Result<u64, BackendError> {
        Ok(self.store().ack(group, ids))
    }

    async fn groups(&self) -> Result<Vec<GroupInfo>, BackendError> {
        let store = self.store();
        let last = store.next_seq - 1;
        Ok(store
            .groups
            .iter()
            .map(|(name, g)| GroupInfo {
                name: name.clone(),
                consumers: g.consumers.len() as u64,
                pending: g.live,
                lag: Some(last.saturating_sub(g.last_delivered)),
                last_delivered: id(g.last_delivered),
            })
            .collect())
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

    async fn trim(&self, maxlen: u64) -> Result<u64, BackendError> {
        let mut store = self.store();
        let safe = store
            .groups
            .values()
            .map(|g| {
                let first_unacked = g.pending.iter().find(|p| !p.acked).map(|p| p.seq);
                first_unacked
                    .unwrap_or(g.last_delivered + 1)
                    .min(g.last_delivered + 1)
            })
            .min()
            .unwrap_or(u64::MAX);
        let mut removed = 0;
        while store.entries.len() as u64 > maxlen && store.entries.front().is_some_and(|e| e.seq < safe) {
            store.entries.pop_front();
            removed += 1;
        }
        Ok(removed)
    }

    async fn dead_letters(&self) -> Result<Vec<Vec<(String, String)>>, BackendError> {
        Ok(self.store().dead.clone())
    }

    async fn cache_append(&self, appends: &[CacheAppend]) -> Result<(), BackendError> {
        let mut store = self.store();
        for a in appends {
            store.cache_append(a);
        }
        Ok(())
    }

    async fn cache_read(&self, queries: &[CacheQuery]) -> Result<Vec<CacheAnswer>, BackendError> {
        let mut store = self.store();
        Ok(queries.iter().map(|q| store.cache_query(q)).collect())
    }

    fn cache_read_now(&self, query: &CacheQuery) -> Option<CacheAnswer> {
        Some(self.store().cache_query(query))
    }

    async fn cache_expire(&self, agent: &str, ttl: Duration) -> Result<bool, BackendError> {
        let mut store = self.store();
        Ok(match store.list(agent) {
            Some(list) => {
                list.expires = Some(Instant::now() + ttl);
                true
            }
            None => false,
        })
    }

    async fn cache_clear(&self, agent: &str) -> Result<(), BackendError> {
        self.store().lists.remove(agent);
        Ok(())
    }

    async fn cache_clear_all(&self) -> Result<u64, BackendError> {
        let mut store = self.store();
        let lists = store.lists.drain().filter(|(_, l)| !l.expired()).count() as u64;
        let zset = u64::from(!store.timestamps.is_empty());
        store.timestamps.clear();
        store.scores.clear();
        Ok(lists + zset)
    }

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
            store.cache_append(a);
        }
        if let Some((agent, state)) = c.state {
            store.states.insert(agent.to_string(), state.to_string());
        }
        for d in c.dead {
            store.dead.push(d.to_fields());
        }
        let last = store.next_seq - 1;
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

    async fn sizes(&self) -> Result<Sizes, BackendError> {
        let mut store = self.store();
        let agents: Vec<String> = store.lists.keys().cloned().collect();
        let mut lists: Vec<(String, u64)> = agents
            .into_iter()
            .filter_map(|a| store.list(&a).map(|l| (a, l.items.len() as u64)))
            .collect();
        lists.sort();
        Ok(Sizes {
            stream: store.entries.len() as u64,
            dead_letters: store.dead.len() as u64,
            lists,
            timestamps: store.timestamps.len() as u64,
        })
    }

    async fn cleanup(&self) -> Result<CleanupReport, BackendError> {
        let mut store = self.store();
        let groups = store.groups.len() as u64;
        let mut keys = 0;
        keys += u64::from(!store.entries.is_empty() || groups > 0);
        keys += u64::from(!store.dead.is_empty());
        keys += u64::from(!store.states.is_empty());
        keys += u64::from(!store.checkpoint.is_empty());
        keys += store.lists.len() as u64 + u64::from(!store.timestamps.is_empty());
        // Ids keep growing across a cleanup, as a recreated Redis stream's would not; no one
        // relies on either.
        let next_seq = store.next_seq;
        let next_note = store.next_note;
        let lease = store.lease.take();
        *store = Store {
            next_seq,
            next_note,
            lease,
            ..Store::default()
        };
        Ok(CleanupReport { groups, keys })
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
            store.cache_append(&CacheAppend {
                agent: "x".into(),
                member: member.into(),
                score,
            });
        }
        let order: Vec<&str> = store.timestamps.iter().map(|(_, m)| &**m).collect();
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
