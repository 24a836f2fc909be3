//! The command connection: one Redis server, or a Redis Cluster.
//!
//! Both are multiplexed: concurrent commands share the sockets. On a cluster a pipeline may
//! only touch one hash slot (the client routes it by its first key), so a pipeline that is
//! not a transaction is sent as its commands, concurrently, each to the node that holds its
//! key; replies come back in order, with server errors in place, as from one pipeline. A
//! transaction (MULTI/EXEC) is left whole: agora keeps each one inside one slot.

use futures_util::future::{BoxFuture, join_all};
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

#[derive(Clone)]
pub(crate) enum Connection {
    /// One server, reconnecting on its own.
    Single(ConnectionManager),
    /// One server, not reconnecting: a blocking read's connection, made anew after an error.
    Plain(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Connection {
    /// `cmd` on the node at `host:port` of a cluster (SCAN, which no key routes); on one
    /// server, on it.
    pub async fn on_node(&self, cmd: Cmd, host: &str, port: u16) -> RedisResult<Value> {
        match self {
            Connection::Single(con) => cmd.query_async(&mut con.clone()).await,
            Connection::Plain(con) => cmd.query_async(&mut con.clone()).await,
            Connection::Cluster(con) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.to_string(),
                    port,
                });
                con.clone().route_command(cmd, route).await?.extract_error()
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }

    /// On a cluster, which primary (`host:port`) owns which slots, from CLUSTER SLOTS; on one
    /// server, nothing.
    pub async fn slot_owners(&self) -> RedisResult<SlotOwners> {
        let Connection::Cluster(con) = self else {
            return Ok(SlotOwners::default());
        };
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut con.clone())
            .await?;
        let mut ranges = Vec::new();
        if let Value::Array(items) = reply {
            for item in items {
                let Value::Array(parts) = item else { continue };
                let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
                    (parts.first(), parts.get(1), parts.get(2))
                else {
                    continue;
                };
                let host = match primary.first() {
                    Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(Value::SimpleString(s)) => s.clone(),
                    _ => continue,
                };
                let Some(Value::Int(port)) = primary.get(1) else {
                    continue;
                };
                ranges.push((*start as u16, *end as u16, format!("{host}:{port}")));
            }
        }
        ranges.sort();
        Ok(SlotOwners(ranges))
    }
}

/// Which primary owns which hash slots: (first slot, last slot, `host:port`), sorted.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotOwners(Vec<(u16, u16, String)>);

impl SlotOwners {
    /// Every primary that owns slots, once each.
    pub fn primaries(&self) -> Vec<&str> {
        let mut nodes: Vec<&str> = self.0.iter().map(|(_, _, node)| node.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// The primary that owns `slot`, if known.
    pub fn owner(&self, slot: u16) -> Option<&str> {
        let i = self.0.partition_point(|(start, _, _)| *start <= slot);
        let (start, end, node) = self.0.get(i.checked_sub(1)?)?;
        (*start <= slot && slot <= *end).then_some(node.as_str())
    }
}

/// A command's reply as a pipeline carries it: a server error is a value in its place.
fn in_place(reply: RedisResult<Value>) -> RedisResult<Value> {
    match reply {
        Ok(value) => Ok(value),
        Err(e) => match e.clone().into_server_errors() {
            Some(errors) if errors.len() == 1 => Ok(Value::ServerError(errors[0].1.clone())),
            _ => Err(e),
        },
    }
}

fn split_pipeline(
    con: &ClusterConnection,
    pipeline: &Pipeline,
) -> BoxFuture<'static, RedisResult<Vec<Value>>> {
    let sends: Vec<_> = pipeline
        .cmd_iter()
        .map(|cmd| {
            let mut con = con.clone();
            let cmd = cmd.clone();
            async move { in_place(con.req_packed_command(&cmd).await) }
        })
        .collect();
    Box::pin(async move { join_all(sends).await.into_iter().collect() })
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(con) => con.req_packed_command(cmd),
            Connection::Plain(con) => con.req_packed_command(cmd),
            Connection::Cluster(con) => con.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(con) => con.req_packed_commands(pipeline, offset, count),
            Connection::Plain(con) => con.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(con) => {
                if pipeline.is_transaction() {
                    con.req_packed_commands(pipeline, offset, count)
                } else {
                    split_pipeline(con, pipeline)
                }
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(con) => con.get_db(),
            Connection::Plain(con) => con.get_db(),
            Connection::Cluster(_) => 0,
        }
    }
}
