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

/// One command as the rights check sends it: its words, owned.
fn command(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

/// Every command a run (and its workers) sends, with its keys, as Redis's ACL sees them.
fn commands(keys: &Keys) -> Vec<Vec<String>> {
    let (stream, state, record, lease) = (&keys.stream, keys.agent_state(), keys.checkpoint(), keys.lease());
    let (list, zset) = (keys.cache_list("agent"), keys.cache_timestamps());
    let mut all = consumer_group_commands(stream);
    all.extend([
        command(&["XREAD", "STREAMS", stream, "0"]),
        command(&["RPUSH", &list, "x"]),
        command(&["LRANGE", &list, "0", "-1"]),
        command(&["ZADD", &zset, "0", "x"]),
        command(&["ZREVRANGEBYSCORE", &zset, "+inf", "-inf"]),
        command(&["ZCOUNT", &zset, "-inf", "+inf"]),
        command(&["ZRANGE", &zset, "0", "0"]),
        command(&["HSET", &state, "a", "x"]),
        command(&["HMGET", &state, "a"]),
        command(&["HSET", &record, "a", "x"]),
        command(&["HGETALL", &record]),
        command(&["HGET", &record, "a"]),
        command(&["GET", &lease]),
        command(&["SET", &lease, "x"]),
        command(&["SCAN", "0"]),
        command(&["PING"]),
        // A step is MULTI, its script, XACK, EXEC.
        command(&["MULTI"]),
        command(&["EXEC"]),
        command(&["EVAL", "return 0", "1", stream]),
    ]);
    all.extend(bookkeeping_commands(keys));
    if keys.cluster {
        all.extend(cluster_commands(keys));
    }
    all
}

/// What a run sends to the stream `key` its agents' consumer groups live on.
fn consumer_group_commands(key: &str) -> Vec<Vec<String>> {
    vec![
        command(&["XGROUP", "CREATE", key, "g", "0", "MKSTREAM"]),
        command(&["XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", key, ">"]),
        command(&["XACK", key, "g", "0-1"]),
        command(&["XADD", key, "*", "f", "v"]),
        command(&["XAUTOCLAIM", key, "g", "c", "0", "0-0"]),
        command(&["XINFO", "GROUPS", key]),
        command(&["XINFO", "CONSUMERS", key, "g"]),
        command(&["XGROUP", "DELCONSUMER", key, "g", "c"]),
        command(&["XGROUP", "DESTROY", key, "g"]),
        command(&["XRANGE", key, "-", "+"]),
        command(&["XREVRANGE", key, "+", "-"]),
        command(&["XTRIM", key, "MINID", "0"]),
        command(&["XLEN", key]),
        command(&["XPENDING", key, "g"]),
    ]
}

/// What a run on a cluster sends besides: the agents' inboxes with their groups, an agent's
/// outbox and state, the relays' records (see `outbox`), the relay script by hash, and the
/// cluster's layout.
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
    let mut all = consumer_group_commands(&inbox);
    all.extend([
        command(&["XADD", &outbox, "*", "f", "v"]),
        command(&["XRANGE", &outbox, "-", "+"]),
        command(&["XDEL", &outbox, "0-1"]),
        command(&["HSET", &state, "a", "x"]),
        command(&["HGET", &state, "a"]),
        command(&["EVALSHA", "0000000000000000000000000000000000000000", "1", &inbox]),
        command(&["SCRIPT", "LOAD", "return 0"]),
        command(&["CLUSTER", "SLOTS"]),
        command(&["CLUSTER", "NODES"]),
    ]);
    for key in &relayed {
        all.push(command(&["HGET", key, "a"]));
        all.push(command(&["HSET", key, "a", "x"]));
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
    let mut all = Vec::new();
    for bookkeeping in [&dead, &control, &reports] {
        all.push(command(&["XADD", bookkeeping, "*", "f", "v"]));
        all.push(command(&["XRANGE", bookkeeping, "-", "+"]));
        all.push(command(&["XREAD", "STREAMS", bookkeeping, "0"]));
        all.push(command(&["XTRIM", bookkeeping, "MINID", "0"]));
    }
    all.push(command(&["HSET", &workers, "a", "x"]));
    all.push(command(&["HGETALL", &workers]));
    let (answers, model_use) = (keys.answers(), keys.model_use());
    all.push(command(&["HSETNX", &answers, "k", "x"]));
    all.push(command(&["HGET", &answers, "k"]));
    all.push(command(&["HVALS", &answers]));
    all.push(command(&["HGET", &model_use, "turns_end"]));
    all.push(command(&["HSET", &model_use, "turns_end", "0"]));
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
        all.push(command(&["TYPE", key]));
        all.push(command(&["DEL", key]));
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
    let mut con = b.con();
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
