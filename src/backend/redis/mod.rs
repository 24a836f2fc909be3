//! The Redis backend: the stream, one consumer group per agent, and the cache on a real Redis.
//!
//! Commands go through one reconnecting multiplexed connection, so that concurrent agents'
//! commands are pipelined onto the socket together; reads for many groups go in one pipeline
//! (one round trip); an agent step is one MULTI/EXEC. The only blocking command, the wake-up
//! read, has a connection of its own (DESIGN.md invariant 4).
//!
//! Keys (CONTRACT.md, "Wire format on Redis"): the stream `{stream}`, groups
//! `{group_prefix}{agent}`, dead letters `{stream}:dead`, cache lists `{cache_prefix}{agent}`
//! and the sorted set `{cache_prefix}timestamps`; agora's own bookkeeping in `{stream}:state`
//! (agent states) and `{stream}:run` (the run's checkpoint).

pub mod admin;
mod connect;
mod parse;
mod reader;

use std::sync::Arc;
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{Client, FromRedisValue, Pipeline, Value};

use self::connect::Scrubber;
use self::reader::{Address, EntryCache, GroupReader, Target};
use super::{
    Backend, BackendError, CacheAnswer, CacheAppend, CacheQuery, ClaimReport, CleanupReport, Commit,
    GroupInfo, GroupRead, KeyConflict, Keys, ScoreBound, Sizes,
};
use crate::backend::url::RedisUrl;
use crate::message::{Batch, Delivery, EntryId, Message, share_equal};

/// The most entries one XREADGROUP asks for.
const MAX_READ_COUNT: usize = 100_000;

#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Keys,
    url: RedisUrl,
    scrubber: Scrubber,
    client: Client,
    /// For every command but blocking reads.
    con: ConnectionManager,
    /// For blocking reads only, made when first needed.
    waiter: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// For blocking reads of bookkeeping streams (worker control), apart from `waiter`.
    note_waiter: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Group reads: their own connection (plain TCP only) and the entries seen lately.
    reads: tokio::sync::Mutex<ReadPath>,
}

struct ReadPath {
    /// `None` for TLS, where reads take the client library's path.
    fast: Option<GroupReader>,
    cache: EntryCache,
}

/// How many recently read entries are kept to share between groups.
const ENTRY_CACHE: usize = 1 << 16;

impl RedisBackend {
    /// Connects to `url` for a run with `keys`. Fails fast, with a hint, when Redis is not
    /// there, refuses the credentials or is not Redis. Once connected, a lost connection is
    /// re-established in the background for as long as `reconnect_timeout`.
    pub async fn connect(
        url: &RedisUrl,
        keys: Keys,
        reconnect_timeout: Duration,
    ) -> Result<Self, BackendError> {
        let scrubber = Scrubber::new(url);
        let (client, con) = connect::connect(url, &scrubber, reconnect_timeout).await?;
        let info = client.get_connection_info();
        let address = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => Some(Address::Tcp {
                host: host.clone(),
                port: *port,
            }),
            redis::ConnectionAddr::Unix(path) => Some(Address::Unix(path.clone())),
            _ => None,
        };
        let fast = address.map(|address| {
            GroupReader::new(Target {
                address,
                db: info.redis_settings().db(),
                username: info.redis_settings().username().map(str::to_string),
                password: info.redis_settings().password().map(str::to_string),
            })
        });
        Ok(RedisBackend {
            inner: Arc::new(Inner {
                keys,
                url: url.clone(),
                scrubber,
                client,
                con,
                waiter: tokio::sync::Mutex::new(None),
                note_waiter: tokio::sync::Mutex::new(None),
                reads: tokio::sync::Mutex::new(ReadPath {
                    fast,
                    cache: EntryCache::new(ENTRY_CACHE),
                }),
            }),
        })
    }

    pub fn url(&self) -> &RedisUrl {
        &self.inner.url
    }

    fn error(&self, what: &str, e: &redis::RedisError) -> BackendError {
        connect::command_error(what, &self.inner.scrubber, e)
    }

    async fn query<T: FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> Result<T, BackendError> {
        let mut con = self.inner.con.clone();
        cmd.query_async(&mut con).await.map_err(|e| self.error(what, &e))
    }

    async fn pipeline<T: FromRedisValue>(&self, what: &str, pipe: &Pipeline) -> Result<T, BackendError> {
        let mut con = self.inner.con.clone();
        pipe.query_async(&mut con).await.map_err(|e| self.error(what, &e))
    }

    /// `XREAD COUNT count BLOCK ms STREAMS key after` on the connection in `slot`, made when
    /// first needed: a blocked read would stall every other command on a shared connection
    /// (DESIGN.md invariant 4). After an error the connection is dropped and made anew.
    async fn blocking_xread(
        &self,
        slot: &tokio::sync::Mutex<Option<MultiplexedConnection>>,
        key: &str,
        after: EntryId,
        count: usize,
        block: Duration,
    ) -> Result<Value, BackendError> {
        let mut slot = slot.lock().await;
        let con = match slot.as_mut() {
            Some(con) => con,
            None => slot.insert(
                connect::blocking_connection(
                    &self.inner.client,
                    &self.inner.url,
                    &self.inner.scrubber,
                    block,
                )
                .await?,
            ),
        };
        let reply = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(key)
            .arg(after.to_string())
            .query_async(con)
            .await;
        reply.map_err(|e| {
            *slot = None;
            self.error("XREAD BLOCK", &e)
        })
    }

    /// XINFO GROUPS, or nothing when the stream does not exist.
    async fn group_infos(&self) -> Result<Vec<GroupInfo>, BackendError> {
        let mut con = self.inner.con.clone();
        let reply: Result<Value, _> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.inner.keys.stream)
            .query_async(&mut con)
            .await;
        match reply {
            Ok(v) => parse::groups(v),
            Err(e) if e.to_string().contains("no such key") => Ok(Vec::new()),
            Err(e) => Err(self.error("XINFO GROUPS", &e)),
        }
    }
}

fn xadd(
    pipe: &mut Pipeline,
    key: &str,
    fields: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<str>)>,
) {
    pipe.cmd("XADD").arg(key).arg("*");
    for (k, v) in fields {
        pipe.arg(k.as_ref()).arg(v.as_ref());
    }
}

/// Cache writes as few commands as they can be: one RPUSH per agent with all its entries in
/// order, one ZADD with every (score, member) pair.
fn push_cache(pipe: &mut Pipeline, keys: &Keys, appends: &[CacheAppend]) {
    if appends.is_empty() {
        return;
    }
    let mut agents: Vec<&str> = appends.iter().map(|a| &*a.agent).collect();
    agents.sort_unstable();
    agents.dedup();
    for agent in agents {
        pipe.cmd("RPUSH").arg(keys.cache_list(agent));
        for a in appends.iter().filter(|a| &*a.agent == agent) {
            pipe.arg(&a.member);
        }
        pipe.ignore();
    }
    pipe.cmd("ZADD").arg(keys.cache_timestamps());
    for a in appends {
        pipe.arg(a.score).arg(&a.member);
    }
    pipe.ignore();
}

fn ids_reply(values: Vec<Value>) -> Result<Vec<EntryId>, BackendError> {
    values.into_iter().map(parse::entry_id).collect()
}

/// `(score` for "strictly below", as ZRANGEBYSCORE writes it.
fn upper(bound: ScoreBound) -> String {
    match bound.0 {
        Some(b) => format!("({b}"),
        None => "+inf".to_string(),
    }
}

impl Backend for RedisBackend {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    async fn ensure_groups(&self, groups: &[String]) -> Result<(), BackendError> {
        for chunk in groups.chunks(1000) {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for g in chunk {
                pipe.cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&self.inner.keys.stream)
                    .arg(g)
                    .arg("0")
                    .arg("MKSTREAM");
            }
            let results: Vec<redis::RedisResult<Value>> = self.pipeline("XGROUP CREATE", &pipe).await?;
            for r in results {
                match r {
                    Ok(_) => {}
                    Err(e) if e.code() == Some("BUSYGROUP") => {}
                    Err(e) => return Err(self.error("XGROUP CREATE", &e)),
                }
            }
        }
        Ok(())
    }

    async fn claim(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
    ) -> Result<ClaimReport, BackendError> {
        let stream = &self.inner.keys.stream;
        let mut report = ClaimReport::default();
        let mut cursor = "0-0".to_string();
        loop {
            let reply: Value = self
                .query(
                    "XAUTOCLAIM",
                    redis::cmd("XAUTOCLAIM")
                        .arg(stream)
                        .arg(group)
                        .arg(consumer)
                        .arg(min_idle.as_millis() as u64)
                        .arg(&cursor)
                        .arg("COUNT")
                        .arg(1000)
                        .arg("JUSTID"),
                )
                .await?;
            let mut parts = parse::array(reply, "XAUTOCLAIM")?.into_iter();
            let next = parts
                .next()
                .map(parse::entry_id)
                .transpose()?
                .unwrap_or(EntryId::ZERO);
            report.claimed += parse::array(parts.next().unwrap_or(Value::Nil), "XAUTOCLAIM")?.len() as u64;
            report.deleted += parse::array(parts.next().unwrap_or(Value::Nil), "XAUTOCLAIM")?.len() as u64;
            if next == EntryId::ZERO {
                break;
            }
            cursor = next.to_string();
        }
        admin::remove_idle_consumers(self, group, consumer).await?;
        Ok(report)
    }

    async fn ping(&self) -> Result<(), BackendError> {
        self.query::<()>("PING", &redis::cmd("PING")).await
    }

    async fn read_checkpoint(&self) -> Result<Vec<(String, String)>, BackendError> {
        self.query("HGETALL", redis::cmd("HGETALL").arg(self.inner.keys.checkpoint()))
            .await
    }

    async fn write_checkpoint(&self, fields: &[(&str, String)]) -> Result<(), BackendError> {
        if fields.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.inner.keys.checkpoint());
        for (k, v) in fields {
            cmd.arg(*k).arg(v);
        }
        self.query::<()>("HSET", &cmd).await
    }

    async fn take_lease(
        &self,
        holder: &str,
        ttl: Duration,
        replacing: Option<&str>,
    ) -> Result<Option<String>, BackendError> {
        // One script, so that two runs starting at once cannot both take it. ARGV[3] is the
        // holder known to be gone, or "-", which no holder is.
        static TAKE: LazyLock<redis::Script> = LazyLock::new(|| {
            redis::Script::new(
                "local current = redis.call('GET', KEYS[1])
                 if (not current) or current == ARGV[1] or current == ARGV[3] then
                   redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
                   return false
                 end
                 return current",
            )
        });
        let mut invocation = TAKE.key(self.inner.keys.lease());
        invocation
            .arg(holder)
            .arg(ttl.as_millis() as u64)
            .arg(replacing.unwrap_or("-"));
        let mut con = self.inner.con.clone();
        invocation
            .invoke_async(&mut con)
            .await
            .map_err(|e| self.error("the lease script", &e))
    }

    async fn renew_lease(&self, holder: &str, ttl: Duration) -> Result<bool, BackendError> {
        static RENEW: LazyLock<redis::Script> = LazyLock::new(|| {
            redis::Script::new(
                "local current = redis.call('GET', KEYS[1])
                 if current == ARGV[1]
                    or ((not current) and redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[1]) then
                   redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
                   return 1
                 end
                 return 0",
            )
        });
        let mut invocation = RENEW.key(self.inner.keys.lease());
        invocation
            .key(self.inner.keys.checkpoint())
            .arg(holder)
            .arg(ttl.as_millis() as u64)
            .arg(super::LEASE_HOLDER);
        let mut con = self.inner.con.clone();
        let renewed: i64 = invocation
            .invoke_async(&mut con)
            .await
            .map_err(|e| self.error("the lease script", &e))?;
        Ok(renewed == 1)
    }

    async fn release_lease(&self, holder: &str) -> Result<(), BackendError> {
        static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
            redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
                 return 0",
            )
        });
        let mut invocation = RELEASE.key(self.inner.keys.lease());
        invocation.arg(holder);
        let mut con = self.inner.con.clone();
        invocation
            .invoke_async::<i64>(&mut con)
            .await
            .map(drop)
            .map_err(|e| self.error("the lease script", &e))
    }

    async fn lease_holder(&self) -> Result<Option<String>, BackendError> {
        self.query("GET", redis::cmd("GET").arg(self.inner.keys.lease()))
            .await
    }

    async fn key_conflicts(&self) -> Result<Vec<KeyConflict>, BackendError> {
        admin::key_conflicts(self).await
    }

    async fn note(&self, key: &str, text: &str) -> Result<EntryId, BackendError> {
        let id: Value = self
            .query("XADD", redis::cmd("XADD").arg(key).arg("*").arg("note").arg(text))
            .await?;
        parse::entry_id(id)
    }

    async fn notes(
        &self,
        key: &str,
        after: EntryId,
        block: Duration,
    ) -> Result<Vec<(EntryId, String)>, BackendError> {
        let reply = self
            .blocking_xread(&self.inner.note_waiter, key, after, 1000, block)
            .await?;
        Ok(parse::raw_stream_entries(reply)?
            .into_iter()
            .map(|(id, fields)| {
                let text = fields
                    .into_iter()
                    .find(|(k, _)| k == "note")
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                (id, text)
            })
            .collect())
    }

    async fn trim_notes(&self, key: &str, before: EntryId) -> Result<u64, BackendError> {
        self.query(
            "XTRIM",
            redis::cmd("XTRIM").arg(key).arg("MINID").arg(before.to_string()),
        )
        .await
    }

    async fn hash_set(&self, key: &str, field: &str, value: &str) -> Result<(), BackendError> {
        self.query::<()>("HSET", redis::cmd("HSET").arg(key).arg(field).arg(value))
            .await
    }

    async fn hash_all(&self, key: &str) -> Result<Vec<(String, String)>, BackendError> {
        self.query("HGETALL", redis::cmd("HGETALL").arg(key)).await
    }

    async fn publish(&self, messages: &[Arc<Message>]) -> Result<Vec<EntryId>, BackendError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for m in messages {
            xadd(&mut pipe, &self.inner.keys.stream, m.to_fields());
        }
        ids_reply(self.pipeline("XADD", &pipe).await?)
    }

    async fn publish_fields(&self, fields: &[(String, String)]) -> Result<EntryId, BackendError> {
        let mut pipe = redis::pipe();
        xadd(
            &mut pipe,
            &self.inner.keys.stream,
            fields.iter().map(|(k, v)| (k, v)),
        );
        let mut ids = ids_reply(self.pipeline("XADD", &pipe).await?)?;
        ids.pop()
            .ok_or_else(|| BackendError::command("XADD returned no id"))
    }

    async fn read(&self, reads: &[GroupRead]) -> Result<Vec<Batch>, BackendError> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        let mut path = self.inner.reads.lock().await;
        let ReadPath { fast, cache } = &mut *path;
        if let Some(fast) = fast {
            return fast
                .read(&self.inner.keys.stream, reads, cache, MAX_READ_COUNT)
                .await
                .map(share_equal);
        }
        let mut pipe = redis::pipe();
        for r in reads {
            pipe.cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&r.group)
                .arg(&r.consumer)
                .arg("COUNT")
                .arg(r.count.clamp(1, MAX_READ_COUNT))
                .arg("STREAMS")
                .arg(&self.inner.keys.stream)
                .arg(if r.pending { "0" } else { ">" });
        }
        let replies: Vec<Value> = self.pipeline("XREADGROUP", &pipe).await?;
        let batches = replies
            .into_iter()
            .map(|v| parse::read_reply(v, cache))
            .collect::<Result<_, _>>()?;
        Ok(share_equal(batches))
    }

    async fn ack(&self, group: &str, ids: &[EntryId]) -> Result<u64, BackendError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.inner.keys.stream).arg(group);
        for id in ids {
            cmd.arg(id.to_string());
        }
        self.query("XACK", &cmd).await
    }

    async fn groups(&self) -> Result<Vec<GroupInfo>, BackendError> {
        self.group_infos().await
    }

    async fn range(&self, after: EntryId, count: usize) -> Result<Vec<Delivery>, BackendError> {
        let start = if after == EntryId::ZERO {
            "-".to_string()
        } else {
            format!("({after}")
        };
        let reply: Value = self
            .query(
                "XRANGE",
                redis::cmd("XRANGE")
                    .arg(&self.inner.keys.stream)
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count.max(1)),
            )
            .await?;
        parse::entries(reply, &mut EntryCache::new(0))
    }

    async fn last_id(&self) -> Result<EntryId, BackendError> {
        let reply: Value = self
            .query(
                "XREVRANGE",
                redis::cmd("XREVRANGE")
                    .arg(&self.inner.keys.stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
        let last = parse::entries(reply, &mut EntryCache::new(0))?;
        Ok(last.first().map_or(EntryId::ZERO, |d| d.id))
    }

    async fn wait_for_entries(
        &self,
        after: EntryId,
        timeout: Duration,
    ) -> Result<Option<EntryId>, BackendError> {
        let stream = &self.inner.keys.stream;
        let reply = self
            .blocking_xread(&self.inner.waiter, stream, after, 1, timeout)
            .await?;
        Ok(parse::read_reply(reply, &mut EntryCache::new(0))?
            .last()
            .map(|d| d.id))
    }

    async fn trim(&self, maxlen: u64) -> Result<u64, BackendError> {
        let stream = &self.inner.keys.stream;
        let len: u64 = self.query("XLEN", redis::cmd("XLEN").arg(stream)).await?;
        if len <= maxlen {
            return Ok(0);
        }
        // Keep everything some group has not read and acknowledged.
        let groups = self.group_infos().await?;
        let mut safe = EntryId::new(u64::MAX, u64::MAX);
        if !groups.is_empty() {
            let mut pipe = redis::pipe();
            for g in &groups {
                pipe.cmd("XPENDING").arg(stream).arg(&g.name);
            }
            let summaries: Vec<Value> = self.pipeline("XPENDING", &pipe).await?;
            for (g, summary) in groups.iter().zip(summaries) {
                let after_delivered =
                    EntryId::new(g.last_delivered.ms, g.last_delivered.seq.saturating_add(1));
                let group_safe =
                    parse::pending_min(summary)?.map_or(after_delivered, |p| p.min(after_delivered));
                safe = safe.min(group_safe);
            }
        }
        // The first entry to keep by length.
        let excess = (len - maxlen) as usize;
        let reply: Value = self
            .query(
                "XRANGE",
                redis::cmd("XRANGE")
                    .arg(stream)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(excess + 1),
            )
            .await?;
        let head = parse::entries(reply, &mut EntryCache::new(0))?;
        let Some(cut) = head.get(excess).map(|d| d.id) else {
            return Ok(0);
        };
        let minid = safe.min(cut);
        self.query(
            "XTRIM",
            redis::cmd("XTRIM")
                .arg(stream)
                .arg("MINID")
                .arg("=")
                .arg(minid.to_string()),
        )
        .await
    }

    async fn dead_letters(&self) -> Result<Vec<Vec<(String, String)>>, BackendError> {
        let reply: Value = self
            .query(
                "XRANGE",
                redis::cmd("XRANGE")
                    .arg(self.inner.keys.dead_letters())
                    .arg("-")
                    .arg("+"),
            )
            .await?;
        parse::raw_entries(reply)
    }

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

    async fn commit(&self, c: &Commit<'_>) -> Result<Vec<EntryId>, BackendError> {
        let keys = &self.inner.keys;
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !c.acks.is_empty() {
            pipe.cmd("XACK").arg(&keys.stream).arg(c.group);
            for id in c.acks {
                pipe.arg(id.to_string());
            }
            pipe.ignore();
        }
        for m in c.publish {
            xadd(&mut pipe, &keys.stream, m.to_fields());
        }
        push_cache(&mut pipe, keys, c.cache);
        if let Some((agent, state)) = c.state {
            pipe.cmd("HSET")
                .arg(keys.agent_state())
                .arg(agent)
                .arg(state)
                .ignore();
        }
        let dead = keys.dead_letters();
        for d in c.dead {
            xadd(&mut pipe, &dead, d.to_fields());
            pipe.ignore();
        }
        let ids: Vec<Value> = self.pipeline("an agent's step (MULTI/EXEC)", &pipe).await?;
        ids_reply(ids)
    }

    async fn load_states(&self, agents: &[Arc<str>]) -> Result<Vec<Option<String>>, BackendError> {
        let mut out = Vec::with_capacity(agents.len());
        for chunk in agents.chunks(1000) {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(self.inner.keys.agent_state());
            for a in chunk {
                cmd.arg(&**a);
            }
            let states: Vec<Option<String>> = self.query("HMGET", &cmd).await?;
            out.extend(states);
        }
        Ok(out)
    }

    async fn sizes(&self) -> Result<Sizes, BackendError> {
        admin::sizes(self).await
    }

    async fn cleanup(&self) -> Result<CleanupReport, BackendError> {
        self.inner.reads.lock().await.cache.clear();
        admin::cleanup(self, admin::Groups::Listed).await
    }
}
