//! Whether the Redis user may do everything a run will do, found out before the run writes
//! anything: a user without a right would otherwise fail half-way, with keys written and
//! an empty transcript.
//!
//! One script asks Redis itself (`redis.acl_check_cmd`, Redis 7) about every command a run
//! sends, on the run's own keys; nothing is executed. A user who may not run scripts at all
//! is told so by the script being refused.

use std::sync::LazyLock;

use super::RedisBackend;
use crate::backend::{BackendError, Keys};

/// Answers, for each command in ARGV (its argument count, then the command), whether the
/// user may run it: the 1-based numbers of those it may not.
static PROBE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "local refused, i, n = {}, 1, 0
         while i <= #ARGV do
           local argc = tonumber(ARGV[i])
           n = n + 1
           if not redis.acl_check_cmd(unpack(ARGV, i + 1, i + argc)) then
             refused[#refused + 1] = n
           end
           i = i + 1 + argc
         end
         return refused",
    )
});

/// Every command a run (and its workers) sends, with its keys, as Redis's ACL sees them.
fn commands(keys: &Keys) -> Vec<Vec<String>> {
    let (stream, state, record, lease) = (&keys.stream, keys.agent_state(), keys.checkpoint(), keys.lease());
    let (list, zset) = (keys.cache_list("agent"), keys.cache_timestamps());
    let c = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<String>>();
    let mut all = consumer_group_commands(stream);
    all.extend([
        c(&["XREAD", "STREAMS", stream, "0"]),
        c(&["RPUSH", &list, "x"]),
        c(&["LRANGE", &list, "0", "-1"]),
        c(&["ZADD", &zset, "0", "x"]),
        c(&["ZREVRANGEBYSCORE", &zset, "+inf", "-inf"]),
        c(&["ZCOUNT", &zset, "-inf", "+inf"]),
        c(&["ZRANGE", &zset, "0", "0"]),
        c(&["HSET", &state, "a", "x"]),
        c(&["HMGET", &state, "a"]),
        c(&["HSET", &record, "a", "x"]),
        c(&["HGETALL", &record]),
        c(&["HGET", &record, "a"]),
        c(&["GET", &lease]),
        c(&["SET", &lease, "x"]),
        c(&["SCAN", "0"]),
        c(&["PING"]),
        // A step is MULTI, its script, XACK, EXEC.
        c(&["MULTI"]),
        c(&["EXEC"]),
        c(&["EVAL", "return 0", "1", stream]),
    ]);
    all.extend(bookkeeping_commands(keys));
    if keys.cluster {
        all.extend(cluster_commands(keys));
    }
    all
}

/// What a run sends to the stream `key` its agents' consumer groups live on.
fn consumer_group_commands(key: &str) -> Vec<Vec<String>> {
    let c = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<String>>();
    vec![
        c(&["XGROUP", "CREATE", key, "g", "0", "MKSTREAM"]),
        c(&["XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", key, ">"]),
        c(&["XACK", key, "g", "0-1"]),
        c(&["XADD", key, "*", "f", "v"]),
        c(&["XAUTOCLAIM", key, "g", "c", "0", "0-0"]),
        c(&["XINFO", "GROUPS", key]),
        c(&["XINFO", "CONSUMERS", key, "g"]),
        c(&["XGROUP", "DELCONSUMER", key, "g", "c"]),
        c(&["XGROUP", "DESTROY", key, "g"]),
        c(&["XRANGE", key, "-", "+"]),
        c(&["XREVRANGE", key, "+", "-"]),
        c(&["XTRIM", key, "MINID", "0"]),
        c(&["XLEN", key]),
        c(&["XPENDING", key, "g"]),
    ]
}

/// What a run on a cluster sends besides (the agents' inboxes with their groups): an agent's outbox and state, the relays' records
/// (see `outbox`), the relay scripts by hash, and the cluster's layout.
fn cluster_commands(keys: &Keys) -> Vec<Vec<String>> {
    let (inbox, outbox, state) = (
        keys.inbox("agent"),
        keys.outbox("agent"),
        keys.agent_state_of("agent"),
    );
    let relayed = [
        keys.relayed(&inbox),
        keys.relayed(&keys.stream),
        keys.relayed(&keys.dead_letters()),
    ];
    let c = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<String>>();
    let mut all = consumer_group_commands(&inbox);
    all.extend([
        c(&["XADD", &outbox, "*", "f", "v"]),
        c(&["XRANGE", &outbox, "-", "+"]),
        c(&["XDEL", &outbox, "0-1"]),
        c(&["HSET", &state, "a", "x"]),
        c(&["HGET", &state, "a"]),
        c(&["EVALSHA", "0000000000000000000000000000000000000000", "1", &inbox]),
        c(&["SCRIPT", "LOAD", "return 0"]),
        c(&["CLUSTER", "SLOTS"]),
        c(&["CLUSTER", "NODES"]),
    ]);
    for key in &relayed {
        all.push(c(&["HGET", key, "a"]));
        all.push(c(&["HSET", key, "a", "x"]));
    }
    all
}

/// The commands on the run's own bookkeeping: dead letters, the workers' streams and hash,
/// the model's answers, and deleting every key.
fn bookkeeping_commands(keys: &Keys) -> Vec<Vec<String>> {
    let (stream, dead, state, record) = (
        &keys.stream,
        keys.dead_letters(),
        keys.agent_state(),
        keys.checkpoint(),
    );
    let (control, reports, workers, lease) = (keys.control(), keys.reports(), keys.workers(), keys.lease());
    let (list, zset) = (keys.cache_list("agent"), keys.cache_timestamps());
    let c = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<String>>();
    let mut all = Vec::new();
    for bookkeeping in [&dead, &control, &reports] {
        all.push(c(&["XADD", bookkeeping, "*", "f", "v"]));
        all.push(c(&["XRANGE", bookkeeping, "-", "+"]));
        all.push(c(&["XREAD", "STREAMS", bookkeeping, "0"]));
        all.push(c(&["XTRIM", bookkeeping, "MINID", "0"]));
    }
    all.push(c(&["HSET", &workers, "a", "x"]));
    all.push(c(&["HGETALL", &workers]));
    let (answers, model_use) = (keys.answers(), keys.model_use());
    all.push(c(&["HSETNX", &answers, "k", "x"]));
    all.push(c(&["HGET", &answers, "k"]));
    all.push(c(&["HVALS", &answers]));
    all.push(c(&["HINCRBY", &model_use, "k", "1"]));
    for key in [
        stream.as_str(),
        &dead,
        &state,
        &record,
        &control,
        &reports,
        &workers,
        &answers,
        &model_use,
        &lease,
        &list,
        &zset,
    ] {
        all.push(c(&["TYPE", key]));
        all.push(c(&["DEL", key]));
    }
    all
}

/// Fails (`Denied`) naming the commands the user may not run on the run's keys.
pub(super) async fn check(b: &RedisBackend) -> Result<(), BackendError> {
    let commands = commands(&b.inner.keys);
    let mut invocation = PROBE.prepare_invoke();
    invocation.key(&b.inner.keys.stream);
    for command in &commands {
        invocation.arg(command.len()).arg(command);
    }
    let mut con = b.inner.con.clone();
    let refused: Vec<usize> = match invocation.invoke_async(&mut con).await {
        Ok(refused) => refused,
        Err(e) if e.code() == Some("NOPERM") => {
            return Err(BackendError::denied(format!(
                "the Redis user at {} may not run scripts (EVAL, EVALSHA), which every agent step uses",
                b.inner.url.address()
            )));
        }
        Err(e) => return Err(b.error("the check of the user's rights", &e)),
    };
    if refused.is_empty() {
        return Ok(());
    }
    let mut named: Vec<String> = refused
        .iter()
        .filter_map(|&n| commands.get(n - 1))
        .map(|c| match c.get(1) {
            Some(first) if c[0] == "XGROUP" || c[0] == "XINFO" => format!("{} {first}", c[0]),
            _ => c[0].clone(),
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    named.retain(|n| seen.insert(n.clone()));
    Err(BackendError::denied(format!(
        "the Redis user at {} may not run {} on the run's keys (stream {:?}); nothing was written",
        b.inner.url.address(),
        named.join(", "),
        b.inner.keys.stream
    )))
}
