//! Connecting to Redis, and turning what can go wrong into errors a user can act on.
//!
//! Every message names the address and never the password; each comes with a hint.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, ServerErrorKind};

use super::connection::Connection;

use crate::backend::url::RedisUrl;
use crate::backend::{BackendError, KEYS_DELETED};

/// How long the first connection may take before agora gives up on it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a command's reply may take. Blocking reads use a connection of their own with a
/// longer limit (DESIGN.md invariant 4).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The oldest Redis with everything agora uses (XAUTOCLAIM, exclusive XRANGE bounds).
const MIN_MAJOR_VERSION: u32 = 7;

/// Hides the password in any text about this URL, including errors from the client library.
#[derive(Clone)]
pub(crate) struct Scrubber {
    password: Option<String>,
}

impl Scrubber {
    pub fn new(url: &RedisUrl) -> Self {
        Scrubber {
            password: url.password().filter(|p| !p.is_empty()).map(str::to_string),
        }
    }

    pub fn scrub(&self, text: &str) -> String {
        let text = crate::backend::url::redact(text);
        match &self.password {
            Some(p) => text.replace(p.as_str(), "***"),
            None => text,
        }
    }
}

const START_HINT: &str = "start Redis with `docker compose up -d` (in agora's folder), or by hand with \
`redis-server --port 6379 --appendonly yes`";

/// An error from the first connection to `url`.
pub(crate) fn connect_error(url: &RedisUrl, scrubber: &Scrubber, e: &RedisError) -> BackendError {
    let address = url.address();
    let detail = scrubber.scrub(&e.to_string());
    if e.code() == Some("NOPERM") {
        return BackendError::denied(format!(
            "Redis at {address} accepted the credentials, but the user may not run a command agora needs ({detail})"
        ));
    }
    if e.kind() == ErrorKind::AuthenticationFailed
        || e.code().is_some_and(|c| c == "WRONGPASS" || c == "NOAUTH")
    {
        let hint = if url.is_unix() {
            "check the user and password in the URL: unix:///path/to/redis.sock?user=U&pass=P"
        } else {
            "check the user and password in the URL: redis://user:password@host:port/db"
        };
        return BackendError::unavailable(
            format!("Redis at {address} refused the credentials ({detail})"),
            hint,
        );
    }
    if detail.contains("SELECT is not allowed in cluster mode") {
        return BackendError::unavailable(
            format!(
                "Redis at {address} is a node of a Redis Cluster, which has only database 0, and the URL names database {}",
                url.db()
            ),
            "drop the database number from the URL: redis://host:port (a Redis Cluster has only database 0)",
        );
    }
    if is_missing_database(e) {
        return BackendError::unavailable(
            format!("Redis at {address} has no database of the number in the URL ({detail})"),
            "choose a database number below the server's `databases` setting (16 by default): redis://host:port/0",
        );
    }
    if is_tls_failure(e) {
        return BackendError::unavailable(
            format!("cannot connect to Redis at {address} with TLS: {detail}"),
            "if the server's certificate is self-signed, trust its CA on this machine, or append \
             #insecure to the URL to skip verification (for testing only)",
        );
    }
    if e.is_connection_refusal() && url.is_unix() {
        return BackendError::unavailable(
            format!("cannot connect to Redis at {address}: no Redis listens on that socket"),
            "check the path; Redis opens a Unix socket only when told to (`unixsocket` in \
             redis.conf, or `redis-server --unixsocket /path/to/redis.sock`); or run on the \
             embedded backend with --backend memory",
        );
    }
    if e.is_connection_refusal() {
        return BackendError::unavailable(
            format!("cannot connect to Redis at {address}: nothing is listening there"),
            START_HINT,
        );
    }
    if e.is_timeout() {
        return BackendError::unavailable(
            format!(
                "no answer from Redis at {address} within {} s",
                CONNECT_TIMEOUT.as_secs()
            ),
            if url.is_tls() {
                // A TLS hello to a server without TLS gets no answer at all.
                "check the host and port in the URL, and that a firewall lets you through; if that \
                 Redis does not speak TLS, write redis:// instead of rediss://"
            } else {
                "check the host and port in the URL, and that a firewall lets you through"
            },
        );
    }
    if matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType) || e.is_connection_dropped() {
        return BackendError::unavailable(
            format!("{address} did not answer like a Redis server ({detail})"),
            "check the port: is Redis listening there, and with TLS (rediss://) or without (redis://)?",
        );
    }
    BackendError::unavailable(format!("cannot use Redis at {address}: {detail}"), START_HINT)
}

/// Whether a server error only means "not now": Redis loading its data after a restart, a
/// replica without its master, a cluster slot moving. A transaction refused at EXEC
/// (EXECABORT: nothing of it ran) is transient when every command was refused for such a
/// reason, as they are when Redis restarts between MULTI and EXEC.
///
/// On a Redis Cluster, MOVED and ASK are such a reason too when the client could not follow
/// them itself: a transaction or pipeline sent to another node while its slot's primary was
/// down (a new user's killed primary stopped the run with exit 1 and the raw redirects,
/// though the primary came back at once). Sent again after the wait, it goes to the right node.
pub(crate) fn is_transient(e: &RedisError) -> bool {
    let transient = |kind: ServerErrorKind| {
        matches!(
            kind,
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
        )
    };
    // One server error, or each of a pipeline's or an aborted transaction's.
    e.clone().into_server_errors().is_some_and(|errors| {
        !errors.is_empty() && errors.iter().all(|(_, s)| s.kind().is_some_and(transient))
    })
}

/// `SELECT` of a database the server does not have. Redis gives it no code of its own
/// (`ERR`), so its detail tells.
fn is_missing_database(e: &RedisError) -> bool {
    e.code() == Some("ERR")
        && e.detail()
            .is_some_and(|d| d.starts_with("DB index is out of range"))
}

/// The TLS handshake failed: rustls refused the server's certificate, or the server speaks
/// no TLS. The client library keeps the I/O error (behind an `Arc`) that tokio-rustls made
/// of rustls's error.
fn is_tls_failure(e: &RedisError) -> bool {
    use std::error::Error;
    let mut next: Option<&(dyn Error + 'static)> = e.source();
    while let Some(err) = next {
        let err: &(dyn Error + 'static) = match err.downcast_ref::<Arc<dyn Error + Send + Sync>>() {
            Some(inner) => &**inner,
            None => err,
        };
        let io_of_rustls = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .is_some_and(|inner| inner.is::<rustls::Error>());
        if err.is::<rustls::Error>() || io_of_rustls {
            return true;
        }
        next = err.source();
    }
    false
}

/// `XINFO` or another read of a key that does not exist: `ERR no such key`; or an `XGROUP`
/// subcommand on one: `ERR The XGROUP subcommand requires the key to exist` (a run retiring
/// an idle consumer just after `agora cleanup` deleted its stream).
pub(crate) fn is_no_such_key(e: &RedisError) -> bool {
    e.code() == Some("ERR")
        && e.detail().is_some_and(|d| {
            d.starts_with("no such key") || d.starts_with("The XGROUP subcommand requires the key to exist")
        })
}

/// An error from a command on a connection that worked.
pub(crate) fn command_error(what: &str, scrubber: &Scrubber, e: &RedisError) -> BackendError {
    let detail = scrubber.scrub(&e.to_string());
    if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || is_transient(e)
    {
        return BackendError::unavailable(
            format!("lost the connection to Redis during {what}: {detail}"),
            "check that Redis is running; an interrupted run can be continued with --resume",
        );
    }
    if e.code() == Some("NOPERM") {
        return BackendError::denied(format!(
            "Redis refused {what}: the user may not run it ({detail})"
        ));
    }
    if e.code() == Some("WRONGTYPE") {
        return BackendError::conflict(
            format!("{what}: a key agora uses holds another type of value ({detail})"),
            "another program or run uses the same keys: choose another backend.stream or backend.cache_prefix",
        );
    }
    // Only a command that has not said what a missing key means gets here (the others
    // handle `is_no_such_key` themselves): the run's stream was deleted under it.
    if is_no_such_key(e) {
        return BackendError::conflict(
            format!("{what}: the run's stream is gone from Redis ({detail})"),
            KEYS_DELETED,
        );
    }
    if e.code() == Some("NOGROUP") || detail.contains("NOGROUP") {
        return BackendError::conflict(
            format!("{what}: the run's consumer groups are gone from Redis ({detail})"),
            KEYS_DELETED,
        );
    }
    BackendError::command(format!("{what} failed on Redis: {detail}"))
}

/// What makes connections: to one server, or to a Redis Cluster.
pub(crate) enum Connector {
    Single(Box<Client>),
    Cluster,
}

/// Connects, checks that the server is a Redis that can run agora (and a cluster node
/// exactly when `cluster`), and returns the reconnecting command connection.
pub(crate) async fn connect(
    url: &RedisUrl,
    scrubber: &Scrubber,
    reconnect_timeout: Duration,
    cluster: Option<bool>,
) -> Result<(Connector, Connection, bool), BackendError> {
    let unusable = |e: RedisError| {
        BackendError::unavailable(
            format!(
                "{url} is not a usable Redis URL: {}",
                scrubber.scrub(&e.to_string())
            ),
            "write it as redis://[user:password@]host:port/db, rediss:// for TLS, or \
             unix:///path/to/redis.sock?db=N for a Unix socket",
        )
    };
    let client = url.connection_info().and_then(Client::open).map_err(unusable)?;
    // A plain first connection with short timeouts, so that a wrong address fails fast and
    // clearly instead of being retried.
    let probe_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(CONNECT_TIMEOUT));
    let mut probe = client
        .get_multiplexed_async_connection_with_config(&probe_config)
        .await
        .map_err(|e| match connect_error(url, scrubber, &e) {
            _ if cluster == Some(true) && e.is_connection_refusal() => BackendError::unavailable(
                format!(
                    "cannot connect to Redis at {}: nothing is listening there",
                    url.address()
                ),
                "start the cluster's nodes (README, \"On a Redis Cluster\"), and give any of them in \
                 backend.url (or --redis-url) as redis://host:port",
            ),
            other => other,
        })?;
    check_server(url, scrubber, &mut probe).await?;
    let cluster = check_cluster_mode(url, scrubber, &mut probe, cluster).await?;
    if cluster {
        check_cluster_state(url, scrubber, &mut probe).await?;
    }

    if cluster {
        let con = cluster_connection(url, scrubber, reconnect_timeout).await?;
        return Ok((Connector::Cluster, con, true));
    }
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(retries_within(reconnect_timeout));
    let manager = ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(|e| connect_error(url, scrubber, &e))?;
    Ok((
        Connector::Single(Box::new(client)),
        Connection::Single(manager),
        false,
    ))
}

/// The command connection to the Redis Cluster `url` names a node of.
pub(crate) async fn cluster_connection(
    url: &RedisUrl,
    scrubber: &Scrubber,
    reconnect_timeout: Duration,
) -> Result<Connection, BackendError> {
    let client = cluster_client(url, RESPONSE_TIMEOUT, retries_within(reconnect_timeout))
        .map_err(|e| connect_error(url, scrubber, &e))?;
    client
        .get_async_connection()
        .await
        .map(Connection::Cluster)
        .map_err(|e| connect_error(url, scrubber, &e))
}

/// A cluster client that starts from the node `url` names and finds the others itself.
fn cluster_client(
    url: &RedisUrl,
    response_timeout: Duration,
    retries: usize,
) -> redis::RedisResult<ClusterClient> {
    ClusterClientBuilder::new([url.connection_info()?])
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(response_timeout)
        .retries(retries.min(u32::MAX as usize) as u32)
        .build()
}

/// Whether the server is a cluster node. When `expected` says which it should be, refuses a
/// cluster node taken for one server, and one server taken for a cluster: each would fail
/// later, and less clearly (MOVED replies, or keys that all land on one node).
async fn check_cluster_mode(
    url: &RedisUrl,
    scrubber: &Scrubber,
    con: &mut MultiplexedConnection,
    expected: Option<bool>,
) -> Result<bool, BackendError> {
    let Some(info) = info_unless_denied(url, scrubber, con, redis::cmd("INFO").arg("cluster")).await? else {
        return Ok(expected.unwrap_or(false));
    };
    let enabled = info.lines().any(|l| l.trim() == "cluster_enabled:1");
    let address = url.address();
    match (expected.unwrap_or(enabled), enabled) {
        (true, false) => Err(BackendError::unavailable(
            format!("Redis at {address} is not a cluster node, and the scenario sets backend.cluster = true"),
            "remove backend.cluster (or set it to false) to run on this one server, or point \
             backend.url at a node of your Redis Cluster",
        )),
        (false, true) => Err(BackendError::unavailable(
            format!("Redis at {address} is a node of a Redis Cluster"),
            "set backend.cluster = true (or --set backend.cluster=true) to run on the cluster",
        )),
        _ => Ok(enabled),
    }
}

/// The text an `INFO`-like command answers; `None` when an ACL keeps the user from it: such a
/// user can still run agora, and what the command would have checked goes unchecked.
async fn info_unless_denied(
    url: &RedisUrl,
    scrubber: &Scrubber,
    con: &mut MultiplexedConnection,
    command: &redis::Cmd,
) -> Result<Option<String>, BackendError> {
    match command.query_async(con).await {
        Ok(info) => Ok(Some(info)),
        Err(e) if e.code() == Some("NOPERM") => Ok(None),
        Err(e) => Err(connect_error(url, scrubber, &e)),
    }
}

/// Enough reconnection attempts (at most 2 s apart) to cover `timeout`.
fn retries_within(timeout: Duration) -> usize {
    (timeout.as_secs() as usize / 2).clamp(3, 10_000)
}

async fn check_server(
    url: &RedisUrl,
    scrubber: &Scrubber,
    con: &mut MultiplexedConnection,
) -> Result<(), BackendError> {
    let Some(info) = info_unless_denied(url, scrubber, con, redis::cmd("INFO").arg("server")).await? else {
        tracing::debug!("cannot check the Redis version: INFO is not allowed");
        return Ok(());
    };
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .unwrap_or("");
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < MIN_MAJOR_VERSION {
        return Err(BackendError::unavailable(
            format!(
                "Redis at {} is version {:?}; agora needs Redis {MIN_MAJOR_VERSION} or newer",
                url.address(),
                version
            ),
            "upgrade Redis, or use the docker-compose.yml in agora's folder (Redis 7)",
        ));
    }
    Ok(())
}

/// Refuses a cluster that says it cannot serve every slot (`cluster_state:fail`: a primary is
/// down, or slots have no owner), which would otherwise be waited for as a lost connection.
async fn check_cluster_state(
    url: &RedisUrl,
    scrubber: &Scrubber,
    con: &mut MultiplexedConnection,
) -> Result<(), BackendError> {
    let Some(info) = info_unless_denied(url, scrubber, con, redis::cmd("CLUSTER").arg("INFO")).await? else {
        return Ok(());
    };
    match info.lines().find_map(|l| l.trim().strip_prefix("cluster_state:")) {
        Some("ok") | None => Ok(()),
        Some(state) => Err(cluster_down(
            url,
            &format!(
                "the Redis Cluster at {} reports cluster_state:{state}",
                url.address()
            ),
        )),
    }
}

/// A cluster that cannot serve every slot, with what to do.
pub(crate) fn cluster_down(url: &RedisUrl, message: &str) -> BackendError {
    BackendError::unavailable(
        format!("{message}: some of its slots have no working primary"),
        format!(
            "start the node that is down (`redis-cli --cluster check {}` names it), or wait until \
             a replica takes over; then run again",
            url.address()
        ),
    )
}

impl Connector {
    /// A connection of its own for blocking reads, with no reply timeout shorter than the
    /// block.
    pub async fn blocking(
        &self,
        url: &RedisUrl,
        scrubber: &Scrubber,
        block: Duration,
    ) -> Result<Connection, BackendError> {
        let timeout = block + RESPONSE_TIMEOUT;
        match self {
            Connector::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(timeout));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Connection::Plain)
                    .map_err(|e| connect_error(url, scrubber, &e))
            }
            Connector::Cluster => {
                let client = cluster_client(url, timeout, 3).map_err(|e| connect_error(url, scrubber, &e))?;
                client
                    .get_async_connection()
                    .await
                    .map(Connection::Cluster)
                    .map_err(|e| connect_error(url, scrubber, &e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_hides_the_password_everywhere() {
        let url = RedisUrl::parse("redis://alice:pa55word@h:1/0").unwrap();
        let s = Scrubber::new(&url);
        assert_eq!(s.scrub("auth pa55word failed"), "auth *** failed");
        assert!(!s.scrub("redis://alice:pa55word@h:1/0").contains("pa55word"));
        let bare = Scrubber::new(&RedisUrl::parse("redis://h:1").unwrap());
        assert_eq!(bare.scrub("text"), "text");
    }

    /// The error a server's reply `reply` (RESP) makes.
    fn server_error(reply: &str) -> RedisError {
        redis::parse_redis_value(reply.as_bytes())
            .unwrap()
            .extract_error()
            .unwrap_err()
    }

    #[test]
    fn a_missing_key_is_told_apart_from_other_errors() {
        assert!(is_no_such_key(&server_error("-ERR no such key\r\n")));
        assert!(is_no_such_key(&server_error(
            "-ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.\r\n"
        )));
        assert!(!is_no_such_key(&server_error("-ERR syntax error\r\n")));
    }

    #[test]
    fn redirects_and_restarts_are_waited_out_and_other_errors_are_not() {
        for transient in [
            "-MOVED 7826 127.0.0.1:7102\r\n",
            "-ASK 7826 127.0.0.1:7102\r\n",
            "-LOADING Redis is loading the dataset in memory\r\n",
            "-CLUSTERDOWN The cluster is down\r\n",
        ] {
            assert!(is_transient(&server_error(transient)), "{transient}");
        }
        for lasting in [
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            "-NOPERM this user has no permissions\r\n",
            "-EXECABORT Transaction discarded because of previous errors.\r\n",
        ] {
            assert!(!is_transient(&server_error(lasting)), "{lasting}");
        }
    }
}
