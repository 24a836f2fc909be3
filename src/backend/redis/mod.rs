//! The Redis backend: the stream, one consumer group per agent, and the cache on a real Redis.
//!
//! Commands go through one reconnecting multiplexed connection, so that concurrent agents'
//! commands are pipelined onto the socket together; reads for many groups go in one pipeline
//! (one round trip); an agent step is one script, atomic as a MULTI/EXEC is. The only blocking
//! command, the wake-up read, has a connection of its own (DESIGN.md invariant 4).
//!
//! - `stream`, `cache`, `run_store`, `transport`: the backend's roles.
//! - `reader` and `parse`: reading replies fast; `connect`: connecting and errors;
//!   `admin`: `agora cleanup` and `agora inspect`.
//!
//! Keys (CONTRACT.md, "Wire format on Redis"): the stream `{stream}`, groups
//! `{group_prefix}{agent}`, dead letters `{stream}:dead`, cache lists `{cache_prefix}{agent}`
//! and the sorted set `{cache_prefix}timestamps`; agora's own bookkeeping in `{stream}:state`
//! (agent states) and `{stream}:run` (the run's checkpoint).

pub mod admin;
mod cache;
mod connect;
mod connection;
mod outbox;
mod parse;
mod reader;
mod resp;
mod rights;
mod run_store;
mod stream;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use redis::{FromRedisValue, Pipeline, Value};

use self::connect::{Connector, Scrubber};
use self::connection::{Connection, SlotOwners};
use self::reader::{Address, GroupReader, Target};
use self::resp::EntryCache;
use super::{Backend, BackendError, BackendKind, GroupInfo, Keys, Sizes};
use crate::backend::url::RedisUrl;
use crate::message::EntryId;
use crate::network::Network;

#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Keys,
    /// Who hears whom, when agents read inboxes of their own (`keys.inboxes`).
    network: Option<Arc<Network>>,
    url: RedisUrl,
    scrubber: Scrubber,
    connector: Connector,
    /// For every command but blocking reads. On a cluster, made anew when a node comes back
    /// after an outage ([`RedisBackend::ping`]): the client does not take it back itself.
    con: std::sync::RwLock<Connection>,
    /// For blocking reads only, made when first needed.
    waiter: tokio::sync::Mutex<Option<Connection>>,
    /// For blocking reads of bookkeeping streams (worker control), apart from `waiter`.
    note_waiter: tokio::sync::Mutex<Option<Connection>>,
    /// Group reads: their own connection (plain TCP only) and the entries seen lately.
    reads: tokio::sync::Mutex<ReadPath>,
    /// How long a lost connection is waited for.
    reconnect_timeout: Duration,
    /// On a cluster, agents whose last relay failed: their outbox is relayed before their
    /// next step.
    unrelayed: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// On a cluster, which node owns which slots, so that a relay sends one script per node;
    /// read again when a node refuses a key it no longer holds.
    slot_owners: std::sync::RwLock<SlotOwners>,
}

struct ReadPath {
    /// `None` for TLS and clusters, where reads take the client library's path.
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
        let cluster = keys.cluster;
        Self::open(url, keys, reconnect_timeout, Some(cluster)).await
    }

    /// Connects as [`RedisBackend::connect`] does, to one server or a cluster, whichever
    /// `url` leads to (the keys spread over slots on a cluster): for `agora cleanup` and
    /// `agora inspect`, which are not told.
    pub async fn connect_as_found(
        url: &RedisUrl,
        keys: Keys,
        reconnect_timeout: Duration,
    ) -> Result<Self, BackendError> {
        Self::open(url, keys, reconnect_timeout, None).await
    }

    async fn open(
        url: &RedisUrl,
        keys: Keys,
        reconnect_timeout: Duration,
        cluster: Option<bool>,
    ) -> Result<Self, BackendError> {
        let scrubber = Scrubber::new(url);
        let (connector, con, cluster) = connect::connect(url, &scrubber, reconnect_timeout, cluster).await?;
        let keys = if cluster { keys.with_cluster(true) } else { keys };
        let slot_owners = con
            .slot_owners()
            .await
            .map_err(|e| connect::connect_error(url, &scrubber, &e))?;
        if cluster {
            // A primary that is down is found now, not after `reconnect_timeout` of retries.
            if let Err((node, _)) = ping_primaries(&con, &slot_owners.primaries(), &scrubber).await {
                return Err(connect::cluster_down(
                    url,
                    &format!(
                        "cannot reach {node}, a primary of the Redis Cluster at {}",
                        url.address()
                    ),
                ));
            }
        }
        let fast = match &connector {
            Connector::Single(client) => {
                let info = client.get_connection_info();
                let address = match info.addr() {
                    redis::ConnectionAddr::Tcp(host, port) => Some(Address::Tcp {
                        host: host.clone(),
                        port: *port,
                    }),
                    redis::ConnectionAddr::Unix(path) => Some(Address::Unix(path.clone())),
                    _ => None,
                };
                address.map(|address| {
                    GroupReader::new(Target {
                        address,
                        db: info.redis_settings().db(),
                        username: info.redis_settings().username().map(str::to_string),
                        password: info.redis_settings().password().map(str::to_string),
                    })
                })
            }
            Connector::Cluster => None,
        };
        Ok(RedisBackend {
            inner: Arc::new(Inner {
                keys,
                network: None,
                reconnect_timeout,
                unrelayed: std::sync::Mutex::new(std::collections::BTreeSet::new()),
                slot_owners: std::sync::RwLock::new(slot_owners),
                url: url.clone(),
                scrubber,
                connector,
                con: std::sync::RwLock::new(con),
                waiter: tokio::sync::Mutex::new(None),
                note_waiter: tokio::sync::Mutex::new(None),
                reads: tokio::sync::Mutex::new(ReadPath {
                    fast,
                    cache: EntryCache::new(ENTRY_CACHE),
                }),
            }),
        })
    }

    /// The same backend, with agents reading inboxes filled as `network` says (before it is
    /// shared: `keys.inboxes` must say so too).
    #[must_use]
    pub fn with_network(mut self, network: Option<Arc<Network>>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.network = network;
        }
        self
    }

    /// The inboxes of those who hear `message` ([`Network::hearers`]; `None` for another
    /// program's entry), when agents have inboxes.
    fn inboxes_of(&self, message: Option<&crate::message::Message>) -> Vec<String> {
        let Some(network) = &self.inner.network else {
            return Vec::new();
        };
        let keys = &self.inner.keys;
        network
            .hearers(message)
            .map(|r| keys.inbox(network.name(r)))
            .collect()
    }

    pub fn url(&self) -> &RedisUrl {
        &self.inner.url
    }

    /// The command connection (a handle: clones share its sockets).
    fn con(&self) -> Connection {
        self.inner
            .con
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn error(&self, what: &str, e: &redis::RedisError) -> BackendError {
        connect::command_error(what, &self.inner.scrubber, e)
    }

    async fn query<T: FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> Result<T, BackendError> {
        let mut con = self.con();
        cmd.query_async(&mut con).await.map_err(|e| self.error(what, &e))
    }

    async fn pipeline<T: FromRedisValue>(&self, what: &str, pipe: &Pipeline) -> Result<T, BackendError> {
        let mut con = self.con();
        pipe.query_async(&mut con).await.map_err(|e| self.error(what, &e))
    }

    /// `XREAD COUNT count BLOCK ms STREAMS key after` on the connection in `slot`, made when
    /// first needed: a blocked read would stall every other command on a shared connection
    /// (DESIGN.md invariant 4). After an error the connection is dropped and made anew.
    async fn blocking_xread(
        &self,
        slot: &tokio::sync::Mutex<Option<Connection>>,
        key: &str,
        after: EntryId,
        count: usize,
        block: Duration,
    ) -> Result<Value, BackendError> {
        let mut slot = slot.lock().await;
        let con = match slot.as_mut() {
            Some(con) => con,
            None => slot.insert(
                self.inner
                    .connector
                    .blocking(&self.inner.url, &self.inner.scrubber, block)
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
        let streams: Vec<String> = match &self.inner.network {
            Some(network) => (0..network.agents() as u32)
                .map(|i| self.inner.keys.inbox(network.name(i)))
                .collect(),
            None => vec![self.inner.keys.stream.clone()],
        };
        self.groups_on(&streams).await
    }

    /// The consumer groups on `streams` (XINFO GROUPS, pipelined), sorted by name; a stream
    /// that does not exist has none.
    async fn groups_on(&self, streams: &[String]) -> Result<Vec<GroupInfo>, BackendError> {
        let mut infos = Vec::new();
        for chunk in streams.chunks(1000) {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for stream in chunk {
                pipe.cmd("XINFO").arg("GROUPS").arg(stream);
            }
            let replies: Vec<redis::RedisResult<Value>> = self.pipeline("XINFO GROUPS", &pipe).await?;
            for reply in replies {
                match reply {
                    Ok(v) => infos.extend(parse::groups(v)?),
                    Err(e) if connect::is_no_such_key(&e) => {}
                    Err(e) => return Err(self.error("XINFO GROUPS", &e)),
                }
            }
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }
}

impl RedisBackend {
    /// Sizes of the run's keys, for `agora inspect`.
    pub async fn sizes(&self) -> Result<Sizes, BackendError> {
        admin::sizes(self).await
    }
}

/// `XADD key id field value ...` into `pipe` (`id` is `*` for the server to number it).
fn xadd(
    pipe: &mut Pipeline,
    key: &str,
    id: &str,
    fields: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<str>)>,
) {
    pipe.cmd("XADD").arg(key).arg(id);
    for (k, v) in fields {
        pipe.arg(k.as_ref()).arg(v.as_ref());
    }
}

fn ids_reply(values: Vec<Value>) -> Result<Vec<EntryId>, BackendError> {
    values.into_iter().map(parse::entry_id).collect()
}

/// PINGs each of a cluster's `primaries` (`host:port`) through `con`, each within
/// `CONNECT_TIMEOUT`; the first that does not answer, and why. Any failure counts, of the node
/// or of the client's way to it (no connection to it yet).
async fn ping_primaries(
    con: &Connection,
    primaries: &[&str],
    scrubber: &Scrubber,
) -> Result<(), (String, String)> {
    for node in primaries {
        let (host, port) = node.rsplit_once(':').unwrap_or((node, "0"));
        let ping = con.on_node(redis::cmd("PING"), host, port.parse().unwrap_or(0));
        let failed = match tokio::time::timeout(connect::CONNECT_TIMEOUT, ping).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => scrubber.scrub(&e.to_string()),
            Err(_) => "no answer".to_string(),
        };
        return Err(((*node).to_string(), failed));
    }
    Ok(())
}

impl Backend for RedisBackend {
    type Transport = RedisBackend;

    fn kind(&self) -> BackendKind {
        BackendKind::Redis
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// On a cluster, a PING that fails or hangs makes the command connection anew and asks
    /// again: the cluster client keeps waiting on a primary that went away and came back
    /// (a new user's killed and restarted primary stopped every run until `--resume`).
    async fn ping(&self) -> Result<(), BackendError> {
        if !self.con().is_cluster() {
            return self.query::<()>("PING", &redis::cmd("PING")).await;
        }
        let ping = || async {
            // Every primary: one answering while another is down is not the backend back.
            let primaries: Vec<String> = self
                .inner
                .slot_owners
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .primaries()
                .into_iter()
                .map(str::to_string)
                .collect();
            let primaries: Vec<&str> = primaries.iter().map(String::as_str).collect();
            ping_primaries(&self.con(), &primaries, &self.inner.scrubber)
                .await
                .map_err(|(node, failed)| {
                    BackendError::unavailable(
                        format!("{node}, a primary of the Redis Cluster, did not answer PING ({failed})"),
                        "",
                    )
                })
        };
        if ping().await.is_ok() {
            return Ok(());
        }
        let fresh = connect::cluster_connection(
            &self.inner.url,
            &self.inner.scrubber,
            self.inner.reconnect_timeout,
        );
        let fresh = tokio::time::timeout(connect::CONNECT_TIMEOUT, fresh)
            .await
            .unwrap_or_else(|_| {
                Err(BackendError::unavailable(
                    "connecting to the Redis Cluster timed out",
                    "",
                ))
            })?;
        // Who owns which slots may have changed too (a replica promoted).
        if let Ok(owners) = fresh.slot_owners().await {
            *self
                .inner
                .slot_owners
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = owners;
        }
        *self
            .inner
            .con
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        ping().await
    }

    async fn preflight(&self) -> Result<(), BackendError> {
        rights::check(self).await?;
        match admin::key_conflicts(self).await?.first() {
            None => Ok(()),
            Some(c) => Err(BackendError::conflict(
                format!(
                    "key {:?} already holds a {}, where this run keeps a {}: another program (or run) uses it",
                    c.key, c.found, c.expected
                ),
                "choose another backend.stream (or backend.cache_prefix) for this scenario",
            )),
        }
    }

    fn transport(&self) -> Option<RedisBackend> {
        Some(self.clone())
    }
}
