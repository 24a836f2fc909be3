//! Looking after a run's keys on Redis: what `agora cleanup` deletes and `agora inspect`
//! shows. Keys are found with `SCAN MATCH prefix*`, never `KEYS`, and nothing outside the
//! run's own names is touched.

use redis::Value;
use serde::Serialize;

use super::{RedisBackend, parse};
use crate::backend::{Backend, BackendError, CleanupReport, GroupInfo, KeyConflict, Sizes};

/// Which consumer groups cleanup destroys.
#[derive(Debug, Clone, PartialEq)]
pub enum Groups {
    /// Those XINFO GROUPS lists on the stream.
    Listed,
    /// `{prefix}1` .. `{prefix}{count}`, as the old project's cleanup did with `num_groups`.
    Numbered { prefix: String, count: u64 },
}

/// `text` with the glob characters SCAN MATCH would interpret escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Keys starting with `prefix` (of `kind` when given), by SCAN: on a cluster, on each of
/// its primaries.
async fn scan(b: &RedisBackend, prefix: &str, kind: Option<&str>) -> Result<Vec<String>, BackendError> {
    let pattern = format!("{}*", glob_escape(prefix));
    let nodes = if b.con().is_cluster() {
        primaries(b).await?.into_iter().map(Some).collect()
    } else {
        vec![None]
    };
    let mut keys = Vec::new();
    for node in nodes {
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
            if let Some(kind) = kind {
                cmd.arg("TYPE").arg(kind);
            }
            let (next, batch): (u64, Vec<String>) = match &node {
                None => b.query("SCAN", &cmd).await?,
                Some((host, port)) => {
                    let reply = b.con().on_node(cmd, host, *port).await;
                    let reply = reply.map_err(|e| b.error("SCAN", &e))?;
                    redis::from_redis_value(reply).map_err(|e| BackendError::command(format!("SCAN: {e}")))?
                }
            };
            keys.extend(batch.into_iter().filter(|k| k.starts_with(prefix)));
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The primaries of the cluster, as (host, port), from CLUSTER NODES. A primary marked as
/// failing is an error: what it holds could not be found.
pub(crate) async fn primaries(b: &RedisBackend) -> Result<Vec<(String, u16)>, BackendError> {
    let nodes: String = b
        .query("CLUSTER NODES", redis::cmd("CLUSTER").arg("NODES"))
        .await?;
    let mut out = Vec::new();
    for (host, port, failing) in parse_primaries(&nodes) {
        if failing {
            return Err(BackendError::unavailable(
                format!("the cluster's primary {host}:{port} is failing: its keys cannot be listed"),
                "wait until the cluster has a working primary for every slot (redis-cli --cluster check), then try again",
            ));
        }
        out.push((host, port));
    }
    Ok(out)
}

/// The primaries in CLUSTER NODES's text (a line per node, `id host:port@bus flags ...`), and
/// whether each is marked as failing.
fn parse_primaries(nodes: &str) -> Vec<(String, u16, bool)> {
    let mut out = Vec::new();
    for line in nodes.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_id), Some(address), Some(flags)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if !flags.split(',').any(|f| f == "master") {
            continue;
        }
        let failing = flags.split(',').any(|f| f == "fail" || f == "fail?");
        let address = address.split(['@', ',']).next().unwrap_or_default();
        if let Some((host, port)) = address.rsplit_once(':')
            && let Ok(port) = port.parse()
        {
            out.push((host.trim_matches(['[', ']']).to_string(), port, failing));
        }
    }
    out.sort();
    out
}

/// Deletes every key that starts with `prefix`; returns how many there were.
pub(crate) async fn delete_matching(b: &RedisBackend, prefix: &str) -> Result<u64, BackendError> {
    let keys = scan(b, prefix, None).await?;
    let mut deleted = 0;
    for chunk in keys.chunks(500) {
        let mut cmd = redis::cmd("DEL");
        for k in chunk {
            cmd.arg(k);
        }
        deleted += b.query::<u64>("DEL", &cmd).await?;
    }
    Ok(deleted)
}

/// Deletes the run's keys: its groups, the stream, dead letters, agora's bookkeeping and the
/// cache keys under the prefix.
pub async fn cleanup(b: &RedisBackend, groups: Groups) -> Result<CleanupReport, BackendError> {
    refuse_conflicts(b).await?;
    let keys = b.keys().clone();
    let groups_listed = groups == Groups::Listed;
    let names: Vec<String> = match groups {
        Groups::Listed => b.group_infos().await?.into_iter().map(|g| g.name).collect(),
        Groups::Numbered { prefix, count } => (1..=count).map(|i| format!("{prefix}{i}")).collect(),
    };
    let mut destroyed = 0;
    for chunk in names.chunks(500) {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for g in chunk {
            pipe.cmd("XGROUP")
                .arg("DESTROY")
                .arg(&*keys.group_stream(g))
                .arg(g);
        }
        let results: Vec<redis::RedisResult<u64>> = b.pipeline("XGROUP DESTROY", &pipe).await?;
        destroyed += results.into_iter().filter_map(Result::ok).sum::<u64>();
    }
    let mut del = redis::cmd("DEL");
    for (k, _) in keys.run_keys().filter(|(_, what)| what.cleaned_up) {
        del.arg(k);
    }
    let mut deleted: u64 = b.query("DEL", &del).await?;
    // The agents' inboxes go whole, with their groups.
    if groups_listed {
        destroyed += inbox_groups(b).await?.len() as u64;
    }
    for prefix in keys.agent_key_prefixes() {
        deleted += delete_matching(b, &prefix).await?;
    }
    deleted += delete_matching(b, &keys.cache_prefix).await?;
    Ok(CleanupReport {
        groups: destroyed,
        keys: deleted,
    })
}

/// The consumer groups on the agents' inboxes (`{stream}:inbox:*`, a run with a sparse
/// network), found by SCAN: `agora inspect` and `agora cleanup` are not told the scenario.
async fn inbox_groups(b: &RedisBackend) -> Result<Vec<GroupInfo>, BackendError> {
    let inboxes = scan(b, &b.keys().inbox_prefix(), Some("stream")).await?;
    b.groups_on(&inboxes).await
}

/// Adds `more` to `groups`, each name once, sorted by name.
fn merge_groups(groups: &mut Vec<GroupInfo>, more: Vec<GroupInfo>) {
    for g in more {
        if !groups.iter().any(|known| known.name == g.name) {
            groups.push(g);
        }
    }
    groups.sort_by(|a, b| a.name.cmp(&b.name));
}

/// Removes the consumers of `group` other than `keep` that have nothing pending.
pub(crate) async fn remove_idle_consumers(
    b: &RedisBackend,
    group: &str,
    keep: &str,
) -> Result<(), BackendError> {
    let stream = &*b.keys().group_stream(group);
    let reply: Value = b
        .query(
            "XINFO CONSUMERS",
            redis::cmd("XINFO").arg("CONSUMERS").arg(stream).arg(group),
        )
        .await?;
    let mut idle = Vec::new();
    for consumer in parse::array(reply, "XINFO CONSUMERS")? {
        let fields = parse::array(consumer, "XINFO CONSUMERS")?;
        let mut name = None;
        let mut pending = None;
        let mut it = fields.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            match parse::text(k).as_deref() {
                Ok("name") => name = parse::text(v).ok(),
                Ok("pending") => pending = parse::text(v).ok(),
                _ => {}
            }
        }
        if let (Some(name), Some(pending)) = (name, pending)
            && pending == "0"
            && name != keep
        {
            idle.push(name);
        }
    }
    for name in idle {
        b.query::<u64>(
            "XGROUP DELCONSUMER",
            redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(stream)
                .arg(group)
                .arg(&name),
        )
        .await?;
    }
    Ok(())
}

/// Errs when a key of the run holds another type than agora gives it: those keys are someone
/// else's, and neither deleted nor described as a run's.
async fn refuse_conflicts(b: &RedisBackend) -> Result<(), BackendError> {
    match key_conflicts(b).await?.first() {
        None => Ok(()),
        Some(c) => Err(BackendError::conflict(
            format!(
                "key {:?} holds a {}, where a run keeps a {}: it is not an agora run's",
                c.key, c.found, c.expected
            ),
            "check --stream (and --cache-prefix): nothing was changed",
        )),
    }
}

/// The run's keys that exist with another type than agora gives them: a stream name or cache
/// prefix that collides with someone else's keys.
pub(crate) async fn key_conflicts(b: &RedisBackend) -> Result<Vec<KeyConflict>, BackendError> {
    let keys = b.keys();
    let expected: Vec<(String, &'static str)> = keys
        .run_keys()
        .map(|(key, what)| (key, what.kind))
        .chain([(keys.cache_timestamps(), "zset")])
        .collect();
    let mut pipe = redis::pipe();
    for (k, _) in &expected {
        pipe.cmd("TYPE").arg(k);
    }
    let types: Vec<String> = b.pipeline("TYPE", &pipe).await?;
    let mut conflicts: Vec<KeyConflict> = expected
        .iter()
        .zip(types)
        .filter(|((_, want), found)| found != "none" && found != want)
        .map(|((key, want), found)| KeyConflict {
            key: key.clone(),
            found,
            expected: want,
        })
        .collect();
    let timestamps = keys.cache_timestamps();
    let cached = scan(b, &keys.cache_prefix, None).await?;
    let cached: Vec<String> = cached.into_iter().filter(|k| *k != timestamps).collect();
    for chunk in cached.chunks(500) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("TYPE").arg(k);
        }
        let types: Vec<String> = b.pipeline("TYPE", &pipe).await?;
        for (k, found) in chunk.iter().zip(types) {
            if found != "list" && found != "none" {
                conflicts.push(KeyConflict {
                    key: k.clone(),
                    found,
                    expected: "list",
                });
            }
        }
    }
    Ok(conflicts)
}

pub(crate) async fn sizes(b: &RedisBackend) -> Result<Sizes, BackendError> {
    let keys = b.keys();
    let mut pipe = redis::pipe();
    pipe.cmd("XLEN").arg(&keys.stream);
    pipe.cmd("XLEN").arg(keys.dead_letters());
    pipe.cmd("ZCARD").arg(keys.cache_timestamps());
    let (stream, dead_letters, timestamps): (u64, u64, u64) = b.pipeline("XLEN", &pipe).await?;
    let list_keys = scan(b, &keys.cache_prefix, Some("list")).await?;
    let mut lists = Vec::with_capacity(list_keys.len());
    for chunk in list_keys.chunks(500) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("LLEN").arg(k);
        }
        let lengths: Vec<u64> = b.pipeline("LLEN", &pipe).await?;
        for (k, len) in chunk.iter().zip(lengths) {
            let agent = k[keys.cache_prefix.len()..]
                .trim_start_matches('{')
                .trim_end_matches('}');
            lists.push((agent.to_string(), len));
        }
    }
    Ok(Sizes {
        stream,
        dead_letters,
        lists,
        timestamps,
    })
}

/// What `agora inspect` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub stream: String,
    pub length: u64,
    pub groups: Vec<GroupView>,
    pub dead_letters: u64,
    pub cache_prefix: String,
    pub cache_lists: u64,
    pub cache_list_entries: u64,
    pub cache_timestamps: u64,
    /// agora's record of the run (`{stream}:run`), if there is one.
    pub checkpoint: Vec<(String, String)>,
    /// Who holds the stream's lease: a running coordinator.
    pub lease: Option<LeaseView>,
    /// The completions the run got from a model (`{stream}:llm`), when it asked one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<crate::llm::ModelUse>,
    /// On a Redis Cluster: what the agents' outboxes hold that is not relayed yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxView>,
}

/// The agents' outboxes (a run on a Redis Cluster): entries committed by steps and not yet
/// relayed to the stream, the inboxes, the cache's sorted set or the dead letters. A run that
/// stopped cleanly leaves none; `--resume` (or the next step of a running one) relays them.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxView {
    /// Outboxes that hold something.
    pub agents: u64,
    pub entries: u64,
}

/// The run's outbox backlog, when it has outboxes at all.
async fn outbox_backlog(b: &RedisBackend) -> Result<Option<OutboxView>, BackendError> {
    let outboxes = scan(b, &b.keys().outbox_prefix(), Some("stream")).await?;
    if outboxes.is_empty() {
        return Ok(None);
    }
    let mut backlog = OutboxView {
        agents: 0,
        entries: 0,
    };
    for key in &outboxes {
        // One key at a time: on a cluster each outbox lives in its own agent's slot.
        let length: u64 = b.query("XLEN", redis::cmd("XLEN").arg(key)).await?;
        backlog.agents += u64::from(length > 0);
        backlog.entries += length;
    }
    Ok(Some(backlog))
}

#[derive(Debug, Clone, Serialize)]
pub struct LeaseView {
    /// The holder, as the lease names it (JSON: host, pid, machine, start).
    pub holder: String,
    /// How long the lease lasts unless renewed.
    pub lapses_in_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    pub name: String,
    pub consumers: u64,
    pub pending: u64,
    pub lag: Option<u64>,
    pub last_delivered: String,
}

impl From<GroupInfo> for GroupView {
    fn from(g: GroupInfo) -> Self {
        GroupView {
            name: g.name,
            consumers: g.consumers,
            pending: g.pending,
            lag: g.lag,
            last_delivered: g.last_delivered.to_string(),
        }
    }
}

/// A field of the run's record as `agora inspect` shows it: the checkpoint without its
/// routes (one per message of the last tick on a sparse network: too long to read).
fn shown_record_value(key: &str, value: &str) -> String {
    match key {
        "checkpoint" => shown_checkpoint(value).unwrap_or_else(|| value.to_string()),
        "holder" => format!(
            "{} (the process that started or resumed the run last)",
            crate::runtime::liveness::describe(value)
        ),
        _ => value.to_string(),
    }
}

/// A checkpoint in words: where the run was and what it had done, without the per-tick
/// figures (`--json` shows everything).
fn shown_checkpoint(value: &str) -> Option<String> {
    let fields: serde_json::Value = serde_json::from_str(value).ok()?;
    let number = |v: &serde_json::Value| v.as_u64().map_or_else(|| "?".to_string(), |n| n.to_string());
    let tally = &fields["totals"]["tally"];
    let mut shown = format!(
        "{} published, {} deliveries, {} handled, {} dead letters",
        number(&tally["published"]),
        number(&tally["deliveries"]),
        number(&tally["handled"]),
        number(&tally["dead_letters"]),
    );
    if let Some(tick) = fields["tick"].as_u64() {
        shown = format!("at tick {tick}: {shown}");
    }
    if let Some(lines) = fields["transcript_lines"].as_u64() {
        shown.push_str(&format!(
            "; transcript {lines} lines ({} bytes)",
            number(&fields["transcript_bytes"])
        ));
    }
    if let Some(routes) = fields["routes"].as_array() {
        shown.push_str(&format!("; {} messages in flight", routes.len()));
    }
    if let Some(last) = fields["last_id"].as_str() {
        shown.push_str(&format!("; last entry {last}"));
    }
    Some(shown)
}

pub async fn inspect(b: &RedisBackend) -> Result<Inspection, BackendError> {
    refuse_conflicts(b).await?;
    let keys = b.keys();
    let mut exists = redis::cmd("EXISTS");
    for (key, _) in keys.run_keys() {
        exists.arg(key);
    }
    let found: u64 = b.query("EXISTS", &exists).await?;
    if found == 0 {
        return Err(BackendError::not_found(
            format!(
                "there is no stream {:?} on Redis at {}, nor any of a run's keys named after it",
                keys.stream,
                b.url().address()
            ),
            "check --stream and --redis-url (a run's stream is its backend.stream, by default the scenario's name)",
        ));
    }
    let sizes = sizes(b).await?;
    let outbox = outbox_backlog(b).await?;
    let mut groups = b.group_infos().await?;
    merge_groups(&mut groups, inbox_groups(b).await?);
    let checkpoint: Value = b
        .query("HGETALL", redis::cmd("HGETALL").arg(keys.checkpoint()))
        .await?;
    let mut pairs = Vec::new();
    let flat = parse::array(checkpoint, "HGETALL").unwrap_or_default();
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if let (Ok(k), Ok(v)) = (parse::text(k), parse::text(v)) {
            pairs.push((k, v));
        }
    }
    pairs.sort();
    let (holder, ttl): (Option<String>, i64) = b
        .pipeline(
            "GET",
            redis::pipe()
                .cmd("GET")
                .arg(keys.lease())
                .cmd("PTTL")
                .arg(keys.lease()),
        )
        .await?;
    let answers: Vec<crate::llm::Exchange> = crate::backend::RunStore::answers(b)
        .await?
        .iter()
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect();
    Ok(Inspection {
        outbox,
        llm: (!answers.is_empty()).then(|| crate::llm::ModelUse::of(&answers)),
        stream: keys.stream.clone(),
        length: sizes.stream,
        groups: groups.into_iter().map(GroupView::from).collect(),
        dead_letters: sizes.dead_letters,
        cache_prefix: keys.cache_prefix.clone(),
        cache_lists: sizes.lists.len() as u64,
        cache_list_entries: sizes.lists.iter().map(|(_, n)| n).sum(),
        cache_timestamps: sizes.timestamps,
        checkpoint: pairs,
        lease: holder.map(|holder| LeaseView {
            holder,
            lapses_in_ms: ttl.max(0) as u64,
        }),
    })
}

impl Inspection {
    /// A readable table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "stream        {} ({} entries)\ndead letters  {} ({} entries)\ncache         {}* ({} lists, {} entries; {} in the sorted set)\n",
            self.stream,
            self.length,
            format_args!("{}:dead", self.stream),
            self.dead_letters,
            self.cache_prefix,
            self.cache_lists,
            self.cache_list_entries,
            self.cache_timestamps,
        );
        // The run's record, a field a line: who, then where it stands, then the rest.
        const FIRST: [&str; 5] = ["scenario", "seed", "mode", "status", "tick"];
        let mut record: Vec<&(String, String)> = self.checkpoint.iter().collect();
        record.sort_by_key(|(k, _)| FIRST.iter().position(|f| f == k).unwrap_or(FIRST.len()));
        for (i, (key, value)) in record.into_iter().enumerate() {
            let label = if i == 0 { "run" } else { "" };
            out.push_str(&format!(
                "{label:<14}{key:<12}{}\n",
                shown_record_value(key, value)
            ));
        }
        if let Some(used) = &self.llm {
            out.push_str(&format!(
                "llm           {} calls ({} prompt + {} completion tokens; latency p50 {} ms, p95 {} ms)\n",
                used.calls,
                used.prompt_tokens,
                used.completion_tokens,
                used.latency_p50_ms,
                used.latency_p95_ms
            ));
        }
        if let Some(outbox) = &self.outbox {
            out.push_str(&match outbox.entries {
                0 => "outbox        empty (everything the steps committed is relayed)\n".to_string(),
                n => format!(
                    "outbox        {n} {} committed and not relayed yet, in {} {} (the run's next step, or --resume, relays them)\n",
                    if n == 1 { "entry" } else { "entries" },
                    outbox.agents,
                    if outbox.agents == 1 { "agent's outbox" } else { "agents' outboxes" },
                ),
            });
        }
        if let Some(lease) = &self.lease {
            out.push_str(&format!(
                "lease         held by {} (lapses in {:.1} s unless renewed)\n",
                crate::runtime::liveness::describe(&lease.holder),
                lease.lapses_in_ms as f64 / 1000.0
            ));
        }
        if self.groups.is_empty() {
            out.push_str("groups        none\n");
            return out;
        }
        out.push_str(&self.groups_table());
        out
    }

    /// The groups, one a line, in agent order; and what a finished run's lag means.
    fn groups_table(&self) -> String {
        let mut out = String::new();
        let width = self.groups.iter().map(|g| g.name.len()).max().unwrap_or(5).max(5);
        out.push_str(&format!(
            "\n{:<width$}  {:>9}  {:>9}  {:>9}  last delivered\n",
            "group", "consumers", "pending", "lag"
        ));
        // In agent order (group_x_2 before group_x_10), not the order of the letters.
        let mut groups: Vec<&GroupView> = self.groups.iter().collect();
        groups.sort_by_cached_key(|g| {
            let digits = g.name.len() - g.name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
            let (stem, number) = g.name.split_at(g.name.len() - digits);
            (stem.to_string(), number.parse::<u64>().ok(), g.name.clone())
        });
        for g in groups {
            let lag = g.lag.map_or_else(|| "?".to_string(), |l| l.to_string());
            out.push_str(&format!(
                "{:<width$}  {:>9}  {:>9}  {:>9}  {}\n",
                g.name, g.consumers, g.pending, lag, g.last_delivered
            ));
        }
        let record = |key: &str| {
            self.checkpoint
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        if record("status") == Some("finished")
            && record("mode") == Some("lockstep")
            && self.groups.iter().any(|g| g.lag.is_some_and(|l| l > 0))
        {
            out.push_str(
                "\n(the lag of a finished lockstep run is its last tick's messages, which no tick reads)\n",
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_are_read_from_cluster_nodes() {
        let nodes = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,hostname4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002,hostname2 master - 0 1426238316232 2 connected 5461-10922
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001,hostname1 myself,master - 0 0 1 connected 0-5460
6ec23923021cf3ffec47632106199cb7f496ce01 [::1]:30005@31005 master,fail? - 1426238316232 0 5 connected 10923-16383
";
        assert_eq!(
            parse_primaries(nodes),
            [
                ("127.0.0.1".to_string(), 30001, false),
                ("127.0.0.1".to_string(), 30002, false),
                ("::1".to_string(), 30005, true),
            ]
        );
    }

    #[test]
    fn globs_are_escaped() {
        assert_eq!(glob_escape("run:cache:"), "run:cache:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
