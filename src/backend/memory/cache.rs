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
    /// Each member's score, so that re-adding a member finds its old place quickly. Built
    /// on the first append that may re-add a member, and kept from then on: a run's entries
    /// are numbered by their writers and never met it (W1: this table's inserts, each a
    /// cache miss in a table of every member, were 8% of the run, and its 5 MB a tenth of
    /// the memory).
    scores: Option<HashMap<Member, f64>>,
    /// For members that read as numbered ([`numbered`]): the highest number added under each
    /// prefix. A member numbered above it cannot be in the set yet.
    highest: HashMap<Box<str>, u64>,
}

/// A member as the runtime writes cache entries, `{"agent":"a","n":12,...`, split into the
/// text up to its number and the number; `None` for any other text, and for an agent name
/// with a `"` in it (those members take the slower path of the score index). The uniqueness
/// test relies only on this: equal texts split equally.
fn numbered(member: &str) -> Option<(&str, u64)> {
    const AGENT: &[u8] = b"{\"agent\":\"";
    const FIELD: &[u8] = b",\"n\":";
    // Bytes, not `str::find`: a substring search's set-up cost more than the rest of an
    // append (W1 appends 100,000 entries).
    let bytes = member.as_bytes();
    let name = bytes.strip_prefix(AGENT)?;
    let quote = AGENT.len() + name.iter().position(|&b| b == b'"')?;
    let prefix = quote + 1 + FIELD.len();
    if !bytes[quote + 1..].starts_with(FIELD) {
        return None;
    }
    let digits = bytes[prefix..].iter().take_while(|b| b.is_ascii_digit()).count();
    // Only ASCII was looked at, so these are char boundaries.
    let n = member[prefix..prefix + digits].parse().ok()?;
    Some((&member[..prefix], n))
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
        if !self.is_new(&member) || self.scores.is_some() {
            let timestamps = &self.timestamps;
            let scores = self.scores.get_or_insert_with(|| {
                timestamps
                    .iter()
                    .map(|(s, m)| (Member::new(m.clone()), *s))
                    .collect()
            });
            if let Some(old) = scores.insert(Member::new(member.clone()), a.score) {
                let at = self.zset_position(old, &member);
                if self.timestamps.get(at).is_some_and(|(_, m)| *m == member) {
                    self.timestamps.remove(at);
                }
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

    /// Whether `member` cannot be in the sorted set: it is numbered above every member added
    /// under its prefix since the set was last emptied. Notes its number either way.
    fn is_new(&mut self, member: &str) -> bool {
        let Some((prefix, n)) = numbered(member) else {
            return false;
        };
        match self.highest.get_mut(prefix) {
            Some(highest) if n <= *highest => false,
            Some(highest) => {
                *highest = n;
                true
            }
            None => {
                self.highest.insert(prefix.into(), n);
                true
            }
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
        self.scores = None;
        self.highest.clear();
        lists + zset
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn append(cache: &mut CacheStore, member: &str, score: f64) {
        cache.append(&CacheAppend {
            agent: "a".into(),
            member: member.into(),
            score,
        });
    }

    fn members(cache: &CacheStore) -> Vec<(f64, &str)> {
        cache.timestamps.iter().map(|(s, m)| (*s, &**m)).collect()
    }

    #[test]
    fn numbered_members_split_at_their_number() {
        let entry = r#"{"agent":"a-1","n":12,"tick":null,"value":3}"#;
        assert_eq!(numbered(entry), Some((r#"{"agent":"a-1","n":"#, 12)));
        assert_eq!(numbered(r#"{"agent":"a","n":x}"#), None);
        assert_eq!(numbered("plain text"), None);
        assert_eq!(numbered(r#"{"agent":"a","tick":1}"#), None);
        assert_eq!(numbered(r#"{"agent":"a","n":}"#), None);
        assert_eq!(numbered(r#"{"agent":"a"#), None);
        // A name with a quote in it is not split, however the entry goes on.
        assert_eq!(numbered(r#"{"agent":"a\",\"n\":1","n":2}"#), None);
        assert_eq!(
            numbered(r#"{"agent":"é","n":7}"#),
            Some((r#"{"agent":"é","n":"#, 7))
        );
    }

    #[test]
    fn a_numbered_member_added_again_moves() {
        let mut cache = CacheStore::default();
        let first = r#"{"agent":"a","n":1,"value":0}"#;
        let second = r#"{"agent":"a","n":2,"value":0}"#;
        append(&mut cache, first, 1.0);
        append(&mut cache, second, 2.0);
        append(&mut cache, first, 3.0);
        assert_eq!(members(&cache), [(2.0, second), (3.0, first)]);
        // Once the index exists it follows new members too.
        let third = r#"{"agent":"a","n":3,"value":0}"#;
        append(&mut cache, third, 4.0);
        append(&mut cache, third, 0.5);
        assert_eq!(members(&cache), [(0.5, third), (2.0, second), (3.0, first)]);
    }

    #[test]
    fn an_emptied_set_takes_members_again() {
        let mut cache = CacheStore::default();
        let member = r#"{"agent":"a","n":1,"value":0}"#;
        append(&mut cache, member, 1.0);
        assert_eq!(cache.clear(), 2);
        append(&mut cache, member, 2.0);
        append(&mut cache, member, 3.0);
        assert_eq!(members(&cache), [(3.0, member)]);
    }

    proptest! {
        /// The set against ZADD done the slow way: members drawn from a few numbered and
        /// unnumbered texts, so that re-adds and new members interleave.
        #[test]
        fn the_sorted_set_is_zadd(ops in proptest::collection::vec((0u8..8, 0u8..4, any::<bool>()), 1..60)) {
            let mut cache = CacheStore::default();
            let mut model: Vec<(f64, String)> = Vec::new();
            for (which, score, clear) in ops {
                if clear && which == 0 {
                    cache.clear();
                    model.clear();
                    continue;
                }
                let member = match which {
                    0..=4 => format!(r#"{{"agent":"a{}","n":{},"v":0}}"#, which % 2, which / 2),
                    _ => format!("text {which}"),
                };
                let score = f64::from(score);
                append(&mut cache, &member, score);
                model.retain(|(_, m)| *m != member);
                model.push((score, member));
                model.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            }
            let expected: Vec<(f64, &str)> = model.iter().map(|(s, m)| (*s, m.as_str())).collect();
            prop_assert_eq!(members(&cache), expected);
        }
    }
}
