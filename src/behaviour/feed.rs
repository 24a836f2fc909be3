//! An agent's feed: the recent posts it reads before it writes (the `llm` behaviour's `feed`).
//!
//! From everyone (the old project's feed: the last posts in the cache), from the agents it
//! follows, or both mixed with recommended posts from outside, as CAMEL's OASIS builds an
//! in-network and out-of-network feed. Every choice is a pure function of the cache as the
//! step may see it and the agent's random stream, so a feed is part of the reproducible run.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{BehaviourError, Context};
use crate::backend::CacheEntry;
use crate::random;

/// Where the feed's posts come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedFrom {
    /// The last posts of anyone.
    #[default]
    Everyone,
    /// The last posts of the agents this one follows.
    Following,
    /// The last posts of the agents it follows, and some recommended from outside.
    Mix,
}

/// How a `mix` feed picks the posts it recommends from outside the agent's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recommend {
    /// The most recent.
    #[default]
    Recent,
    /// Those of the authors most replied to lately (posts that remember `replying_to`).
    Replied,
    /// At random, from the agent's own random stream.
    Random,
}

/// The most recent posts a feed looks through to find those of the agents one follows.
pub const MAX_SCAN: usize = 4096;

/// What a feed is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeedSpec {
    pub from: FeedFrom,
    /// Posts from the network (or from everyone).
    pub size: usize,
    /// `mix`: posts recommended from outside.
    pub recommended: usize,
    pub by: Recommend,
}

/// A post of the feed, and whether it was recommended from outside the network.
pub struct FeedPost {
    pub entry: CacheEntry,
    pub recommended: bool,
}

impl FeedSpec {
    /// The feed for the agent of `ctx`, oldest first. Without a network (everyone hears
    /// everyone) every kind of feed is the last posts of anyone.
    ///
    /// # Errors
    ///
    /// `Pending` while the runtime fetches the cache: pass it on with `?`.
    pub fn read(&self, ctx: &mut Context<'_>) -> Result<Vec<FeedPost>, BehaviourError> {
        let following: Option<HashSet<String>> =
            ctx.following().map(|f| f.iter().map(|a| a.to_string()).collect());
        let (Some(following), FeedFrom::Following | FeedFrom::Mix) = (following, self.from) else {
            return Ok(plain(ctx.last(self.size)?));
        };
        // Look back until enough posts of followed agents are found (or the cache ends).
        let mut window = (self.size * 8).clamp(64, MAX_SCAN);
        let recent = loop {
            let recent = ctx.last(window)?;
            let found = recent.iter().filter(|e| following.contains(&e.agent)).count();
            if found >= self.size || recent.len() < window || window >= MAX_SCAN {
                break recent;
            }
            window = (window * 4).min(MAX_SCAN);
        };
        let inside: Vec<usize> = (0..recent.len())
            .filter(|&i| following.contains(&recent[i].agent))
            .collect();
        let mut chosen: Vec<(usize, bool)> = inside[inside.len().saturating_sub(self.size)..]
            .iter()
            .map(|&i| (i, false))
            .collect();
        if self.from == FeedFrom::Mix && self.recommended > 0 {
            let me = ctx.agent().to_string();
            let outside: Vec<usize> = (0..recent.len())
                .filter(|&i| !following.contains(&recent[i].agent) && recent[i].agent != me)
                .collect();
            let picked = self.recommend(&recent, &outside, ctx);
            chosen.extend(picked.into_iter().map(|i| (i, true)));
            chosen.sort_unstable();
        }
        Ok(chosen
            .into_iter()
            .map(|(i, recommended)| FeedPost {
                entry: recent[i].clone(),
                recommended,
            })
            .collect())
    }

    /// `recommended` of the `outside` posts (positions in `recent`).
    fn recommend(&self, recent: &[CacheEntry], outside: &[usize], ctx: &mut Context<'_>) -> Vec<usize> {
        let n = self.recommended;
        match self.by {
            Recommend::Recent => outside[outside.len().saturating_sub(n)..].to_vec(),
            Recommend::Random => random::distinct(ctx.rng(), outside.len() as u64, n)
                .into_iter()
                .map(|i| outside[i as usize])
                .collect(),
            Recommend::Replied => {
                let mut replies: BTreeMap<&str, usize> = BTreeMap::new();
                for e in recent {
                    if let Some(to) = e.value.get("replying_to").and_then(|v| v.as_str()) {
                        *replies.entry(to).or_default() += 1;
                    }
                }
                let mut ranked = outside.to_vec();
                // Most replied-to author first; among equals, the most recent post.
                ranked.sort_by_key(|&i| {
                    let count = replies.get(recent[i].agent.as_str()).copied().unwrap_or(0);
                    (std::cmp::Reverse(count), std::cmp::Reverse(i))
                });
                ranked.truncate(n);
                ranked
            }
        }
    }
}

fn plain(entries: Vec<CacheEntry>) -> Vec<FeedPost> {
    entries
        .into_iter()
        .map(|entry| FeedPost {
            entry,
            recommended: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::behaviour::{CacheReads, Neighbours};
    use crate::random::agent_rng;
    use crate::scenario::AgentSpec;

    /// A cache of posts `author:n`, oldest first.
    struct Posts(Vec<CacheEntry>);

    impl CacheReads for Posts {
        fn own_last(&mut self, _n: usize) -> Result<Vec<CacheEntry>, BehaviourError> {
            Ok(Vec::new())
        }
        fn last(&mut self, n: usize) -> Result<Vec<CacheEntry>, BehaviourError> {
            Ok(self.0[self.0.len().saturating_sub(n)..].to_vec())
        }
        fn count(&mut self) -> Result<u64, BehaviourError> {
            Ok(self.0.len() as u64)
        }
        fn at_ranks(&mut self, ranks: &[u64]) -> Result<Vec<CacheEntry>, BehaviourError> {
            Ok(ranks.iter().map(|&r| self.0[r as usize].clone()).collect())
        }
    }

    fn posts(authors: &[(&str, Option<&str>)]) -> Posts {
        Posts(
            authors
                .iter()
                .enumerate()
                .map(|(n, (a, reply))| CacheEntry {
                    agent: a.to_string(),
                    n: n as u64,
                    tick: Some(0),
                    value: match reply {
                        Some(to) => serde_json::json!({ "content": n, "replying_to": to }),
                        None => serde_json::json!({ "content": n }),
                    },
                })
                .collect(),
        )
    }

    fn feed(spec: FeedSpec, cache: &mut Posts, following: Option<&[&str]>) -> Vec<(String, bool)> {
        let spec_agent = AgentSpec {
            name: Arc::from("me"),
            index: 0,
            table: 0,
            peer_index: 0,
            table_index: 0,
        };
        let neighbours = following.map(|f| Neighbours {
            audience: Arc::from([]),
            following: f.iter().map(|a| Arc::from(*a)).collect(),
        });
        let mut rng = agent_rng(1, 0);
        let mut ctx =
            Context::new(&spec_agent, &[], Some(1), &mut rng, cache).with_neighbours(neighbours.as_ref());
        spec.read(&mut ctx)
            .unwrap()
            .into_iter()
            .map(|p| (format!("{}:{}", p.entry.agent, p.entry.n), p.recommended))
            .collect()
    }

    fn spec(from: FeedFrom, by: Recommend) -> FeedSpec {
        FeedSpec {
            from,
            size: 2,
            recommended: 1,
            by,
        }
    }

    #[test]
    fn feeds_from_everyone_the_network_or_a_mix() {
        let mut cache = posts(&[
            ("a", None),
            ("b", Some("c")),
            ("c", None),
            ("a", None),
            ("d", Some("c")),
            ("me", None),
            ("b", None),
        ]);
        let names = |f: Vec<(String, bool)>| {
            f.into_iter()
                .map(|(n, r)| format!("{n}{}", if r { "*" } else { "" }))
                .collect::<Vec<_>>()
        };
        let everyone = feed(
            spec(FeedFrom::Everyone, Recommend::Recent),
            &mut cache,
            Some(&["a"]),
        );
        assert_eq!(names(everyone), ["me:5", "b:6"]);
        // No network: every feed is everyone's.
        let no_network = feed(spec(FeedFrom::Following, Recommend::Recent), &mut cache, None);
        assert_eq!(names(no_network), ["me:5", "b:6"]);
        let following = feed(
            spec(FeedFrom::Following, Recommend::Recent),
            &mut cache,
            Some(&["a"]),
        );
        assert_eq!(names(following), ["a:0", "a:3"]);
        let recent = feed(spec(FeedFrom::Mix, Recommend::Recent), &mut cache, Some(&["a"]));
        assert_eq!(names(recent), ["a:0", "a:3", "b:6*"], "never one's own post");
        let replied = feed(spec(FeedFrom::Mix, Recommend::Replied), &mut cache, Some(&["a"]));
        assert_eq!(names(replied), ["a:0", "c:2*", "a:3"]);
        let random = feed(spec(FeedFrom::Mix, Recommend::Random), &mut cache, Some(&["a"]));
        assert_eq!(random.iter().filter(|(_, r)| *r).count(), 1);
        assert_eq!(
            random,
            feed(spec(FeedFrom::Mix, Recommend::Random), &mut cache, Some(&["a"]))
        );
    }
}
