//! The cache on Redis: a list per agent (`{cache_prefix}{agent}`) and one sorted set
//! (`{cache_prefix}timestamps`).

use std::time::Duration;

use redis::{FromRedisValue, Pipeline, Value};

use super::{RedisBackend, admin};
use crate::backend::{BackendError, Cache, CacheAnswer, CacheAppend, CacheQuery, Keys, ScoreBound};

/// Cache writes as few commands as they can be: one RPUSH per agent with all its entries in
/// order, one ZADD with every (score, member) pair.
pub(super) fn push_cache(pipe: &mut Pipeline, keys: &Keys, appends: &[CacheAppend]) {
    if appends.is_empty() {
        return;
    }
    let mut agents: Vec<&str> = appends.iter().map(|a| &*a.agent).collect();
    agents.sort_unstable();
    agents.dedup();
    for agent in agents {
        pipe.cmd("RPUSH").arg(keys.cache_list(agent));
        for a in appends.iter().filter(|a| &*a.agent == agent) {
            pipe.arg(&*a.member);
        }
        pipe.ignore();
    }
    pipe.cmd("ZADD").arg(keys.cache_timestamps());
    for a in appends {
        pipe.arg(a.score).arg(&*a.member);
    }
    pipe.ignore();
}

/// `(score` for "strictly below", as ZRANGEBYSCORE writes it.
fn upper(bound: ScoreBound) -> String {
    match bound.0 {
        Some(b) => format!("({b}"),
        None => "+inf".to_string(),
    }
}

impl Cache for RedisBackend {
    async fn cache_append(&self, appends: &[CacheAppend]) -> Result<(), BackendError> {
        if appends.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        push_cache(&mut pipe, &self.inner.keys, appends);
        self.pipeline::<()>("cache append", &pipe).await
    }

    async fn cache_read(&self, queries: &[CacheQuery]) -> Result<Vec<CacheAnswer>, BackendError> {
        let keys = &self.inner.keys;
        let zset = keys.cache_timestamps();
        let mut pipe = redis::pipe();
        let mut sent = Vec::with_capacity(queries.len());
        for q in queries {
            let asks = match q {
                CacheQuery::OwnLast { agent, n } if *n > 0 => {
                    pipe.cmd("LRANGE")
                        .arg(keys.cache_list(agent))
                        .arg(-(*n as i64))
                        .arg(-1);
                    true
                }
                CacheQuery::Last { n, bound } if *n > 0 => {
                    pipe.cmd("ZREVRANGEBYSCORE")
                        .arg(&zset)
                        .arg(upper(*bound))
                        .arg("-inf")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(*n);
                    true
                }
                CacheQuery::Count { bound } => {
                    pipe.cmd("ZCOUNT").arg(&zset).arg("-inf").arg(upper(*bound));
                    true
                }
                CacheQuery::Rank { rank } => {
                    pipe.cmd("ZRANGE").arg(&zset).arg(*rank).arg(*rank);
                    true
                }
                _ => false,
            };
            sent.push(asks);
        }
        let mut replies: std::vec::IntoIter<Value> = if pipe.is_empty() {
            Vec::new().into_iter()
        } else {
            self.pipeline::<Vec<Value>>("cache read", &pipe)
                .await?
                .into_iter()
        };
        let mut answers = Vec::with_capacity(queries.len());
        for (q, asked) in queries.iter().zip(sent) {
            let reply = if asked {
                replies.next().unwrap_or(Value::Nil)
            } else {
                Value::Nil
            };
            answers.push(match q {
                CacheQuery::Count { .. } => CacheAnswer::Count(u64::from_redis_value(reply).unwrap_or(0)),
                CacheQuery::Last { .. } => {
                    let mut members = Vec::<String>::from_redis_value(reply).unwrap_or_default();
                    members.reverse();
                    CacheAnswer::Members(members)
                }
                _ => CacheAnswer::Members(Vec::<String>::from_redis_value(reply).unwrap_or_default()),
            });
        }
        Ok(answers)
    }

    fn cache_read_now(&self, _query: &CacheQuery) -> Option<CacheAnswer> {
        None
    }

    async fn cache_expire(&self, agent: &str, ttl: Duration) -> Result<bool, BackendError> {
        let key = self.inner.keys.cache_list(agent);
        let set: i64 = self
            .query(
                "PEXPIRE",
                redis::cmd("PEXPIRE").arg(key).arg(ttl.as_millis().max(1) as u64),
            )
            .await?;
        Ok(set == 1)
    }

    async fn cache_clear(&self, agent: &str) -> Result<(), BackendError> {
        self.query::<()>("DEL", redis::cmd("DEL").arg(self.inner.keys.cache_list(agent)))
            .await
    }

    async fn cache_clear_all(&self) -> Result<u64, BackendError> {
        admin::delete_matching(self, &self.inner.keys.cache_prefix).await
    }
}
