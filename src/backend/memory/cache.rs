//! The embedded cache: a list per agent and one sorted set of everything, ordered as Redis
//! orders a sorted set (by score, then by member bytes).

use std::sync::Arc;
use std::time::Instant;

use super::store::HashMap;
use crate::backend::{CacheAnswer, CacheAppend, CacheQuery};

#[derive(Default)]
pub(super) struct CacheList {
    pub items: Vec<Arc<str>>,
    pub expires: Option<Instant>,
}

impl CacheList {
    pub fn expired(&self) -> bool {
        self.expires.is_some_and(|at| Instant::now() >= at)
    }
}

#[derive(Default)]
pub(super) struct CacheStore {
    pub lists: HashMap<String, CacheList>,
    /// The global sorted set: by score, then by member bytes (Redis's order).
    pub timestamps: Vec<(f64, Arc<str>)>,
    /// Each member's score, so that re-adding a member finds its old place quickly.
    scores: HashMap<Member, f64>,
}

/// A sorted-set member with its hash computed once: the set grows to every message of a run,
/// and growing the table rehashed every member's text (W1: 5% of the run).
#[derive(Clone, PartialEq, Eq)]
struct Member {
    hash: u64,
    text: Arc<str>,
}

impl Member {
    fn new(text: Arc<str>) -> Self {
        use std::hash::BuildHasher;
        // A fixed seed: the hash only has to agree with itself within this process.
        let hash = foldhash::fast::FixedState::with_seed(0).hash_one(&*text);
        Member { hash, text }
    }
}

impl std::hash::Hash for Member {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl CacheStore {
    pub fn list(&mut self, agent: &str) -> Option<&mut CacheList> {
        if self.lists.get(agent).is_some_and(CacheList::expired) {
            self.lists.remove(agent);
        }
        self.lists.get_mut(agent)
    }

    pub fn append(&mut self, a: &CacheAppend) {
        let member = a.member.clone();
        // One lookup for the common case, an agent's list that exists and has not expired.
        match self.lists.get_mut(&*a.agent) {
            Some(list) if !list.expired() => list.items.push(member.clone()),
            _ => {
                let list = CacheList {
                    items: vec![member.clone()],
                    expires: None,
                };
                self.lists.insert(a.agent.to_string(), list);
            }
        }
        // ZADD semantics: a member appears once; adding it again moves it to its new score.
        if let Some(old) = self.scores.insert(Member::new(member.clone()), a.score) {
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

    pub fn query(&mut self, q: &CacheQuery) -> CacheAnswer {
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

    /// Deletes every list and the sorted set; returns how many keys there were.
    pub fn clear(&mut self) -> u64 {
        let lists = self.lists.drain().filter(|(_, l)| !l.expired()).count() as u64;
        let zset = u64::from(!self.timestamps.is_empty());
        self.timestamps.clear();
        self.scores.clear();
        lists + zset
    }
}
