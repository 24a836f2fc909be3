//! What keeps a run safe on Redis: each agent step in one transaction, saved states in
//! `{stream}:state`, the run's record in `{stream}:run`, the lease in `{stream}:lease`, dead
//! letters in `{stream}:dead`.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Value;

use super::{RedisBackend, admin, ids_reply, parse};
use crate::backend::{BackendError, CleanupReport, Commit, RunStore};
use crate::message::EntryId;

/// The writes of one agent step, refused whole (NOGROUP) when the agent's consumer group is
/// gone: XACK on a missing group answers 0 without an error, so a MULTI/EXEC alone would
/// publish the step's messages all the same. A step is `MULTI`, this script, `XACK` of the
/// step's entries, `EXEC`: atomic, nothing published by a step whose acknowledgement failed
/// (as on the memory backend), and the acknowledgement (most of a step's arguments) stays a
/// native command, which Lua's per-argument cost would triple.
///
/// The script is sent whole (EVAL): inside MULTI a script missing from Redis's cache (after
/// a restart) would fail after the XACK had been queued.
///
/// Arguments: the group, whether the step acknowledges anything (`1`), then each command as
/// its argument count, a mark and the command itself. The mark is `1` if the command's reply
/// is returned (the step's XADDs to the stream), `0` if not, and `=` for an XADD to an
/// agent's inbox, which takes the id the last XADD to the stream got (an inbox receives
/// entries in the stream's order, so the ids only grow, and a message has one id
/// everywhere).
const WRITES: &str = "local stream, group = KEYS[1], ARGV[1]
if ARGV[2] == '1' then
  local found = redis.pcall('XINFO', 'CONSUMERS', stream, group)
  if type(found) == 'table' and found.err then
    return redis.error_reply(found.err)
  end
end
local ids, i = {}, 3
while i <= #ARGV do
  local argc, keep = tonumber(ARGV[i]), ARGV[i + 1]
  if keep == '=' then
    local command = {unpack(ARGV, i + 2, i + 1 + argc)}
    command[3] = ids[#ids]
    redis.call(unpack(command))
  else
    local reply = redis.call(unpack(ARGV, i + 2, i + 1 + argc))
    if keep == '1' then ids[#ids + 1] = reply end
  end
  i = i + 2 + argc
end
return ids";

/// The most members one RPUSH or ZADD of a step carries (Lua's `unpack` has a limit).
const CHUNK: usize = 500;

/// A step's transaction, built command by command.
pub(super) struct StepScript {
    /// `EVAL` of [`WRITES`].
    writes: redis::Cmd,
}

impl StepScript {
    pub fn new(stream: &str, group: &str, acks: &[EntryId]) -> Self {
        let mut writes = redis::cmd("EVAL");
        writes
            .arg(WRITES)
            .arg(1)
            .arg(stream)
            .arg(group)
            .arg(if acks.is_empty() { "0" } else { "1" });
        StepScript { writes }
    }

    /// `command key args...`, its reply returned when `keep`.
    pub fn command(&mut self, keep: bool, command: &str, key: &str, args: impl IntoIterator<Item = String>) {
        let args: Vec<String> = args.into_iter().collect();
        self.marked(if keep { "1" } else { "0" }, command, key, &args);
    }

    /// RPUSH of each agent's cache entries, in order, onto its list.
    pub fn push_cache_lists(&mut self, keys: &crate::backend::Keys, cache: &[crate::backend::CacheAppend]) {
        let agents = cache
            .iter()
            .map(|a| &*a.agent)
            .collect::<std::collections::BTreeSet<_>>();
        for agent in agents {
            let members: Vec<&str> = cache
                .iter()
                .filter(|a| &*a.agent == agent)
                .map(|a| &*a.member)
                .collect();
            for chunk in members.chunks(CHUNK) {
                self.command(
                    false,
                    "RPUSH",
                    &keys.cache_list(agent),
                    chunk.iter().map(|m| m.to_string()),
                );
            }
        }
    }

    fn marked(&mut self, mark: &str, command: &str, key: &str, args: &[String]) {
        self.writes
            .arg(args.len() + 2)
            .arg(mark)
            .arg(command)
            .arg(key)
            .arg(args);
    }

    /// XADD of `fields` (starting with `*`) to each inbox, with the id of the XADD before.
    fn copy_to_inboxes(&mut self, inboxes: &[String], fields: &[String]) {
        for inbox in inboxes {
            self.marked("=", "XADD", inbox, fields);
        }
    }
}

/// An entry's fields as XADD takes them: `*`, then field, value, ...
pub(super) fn xadd_fields(fields: Vec<(impl Into<String>, String)>) -> Vec<String> {
    let mut args = Vec::with_capacity(1 + 2 * fields.len());
    args.push("*".to_string());
    for (k, v) in fields {
        args.push(k.into());
        args.push(v);
    }
    args
}

impl RedisBackend {
    /// `step` in MULTI/EXEC with the acknowledgement of the step's entries on `group_stream`;
    /// returns the replies the script kept.
    pub(super) async fn run_step(
        &self,
        step: StepScript,
        group_stream: &str,
        c: &Commit<'_>,
    ) -> Result<Vec<EntryId>, BackendError> {
        let keys = &self.inner.keys;
        let mut pipe = redis::pipe();
        pipe.atomic().ignore_errors().add_command(step.writes);
        if !c.acks.is_empty() {
            pipe.cmd("XACK").arg(group_stream).arg(c.group);
            for id in c.acks {
                pipe.arg(id.to_string());
            }
            if keys.inboxes
                && let Some(newest) = c.acks.iter().max()
            {
                // An inbox has one reader, which acknowledges what it read in order, a whole
                // batch a step: everything up to the newest acknowledged entry is done with.
                // Trimmed approximately (whole nodes of the stream), which costs Redis far
                // less than deleting each entry, and keeps inboxes as small as what is still
                // to be read (the stream keeps every message, trimmed by `maxlen`).
                pipe.cmd("XTRIM")
                    .arg(group_stream)
                    .arg("MINID")
                    .arg("~")
                    .arg(newest.to_string());
            }
        }
        let what = "an agent's step (MULTI/EXEC)";
        let mut replies: Vec<redis::RedisResult<Value>> = self.pipeline(what, &pipe).await?;
        let writes = if replies.is_empty() {
            return Err(BackendError::command(format!("{what}: no reply")));
        } else {
            replies.swap_remove(0)
        };
        let ids = writes.map_err(|e| self.error(what, &e))?;
        ids_reply(parse::array(ids, "the step's script")?)
    }
}

impl RunStore for RedisBackend {
    async fn commit(&self, c: &Commit<'_>) -> Result<Vec<EntryId>, BackendError> {
        let keys = &self.inner.keys;
        if keys.cluster {
            return self.commit_in_slot(c).await;
        }
        let group_stream = keys.group_stream(c.group);
        let mut step = StepScript::new(&group_stream, c.group, c.acks);
        for m in c.publish {
            let fields = xadd_fields(m.to_fields());
            step.marked("1", "XADD", &keys.stream, &fields);
            step.copy_to_inboxes(&self.inboxes_of(Some(m)), &fields);
        }
        step.push_cache_lists(keys, c.cache);
        for chunk in c.cache.chunks(CHUNK) {
            let pairs = chunk
                .iter()
                .flat_map(|a| [a.score.to_string(), a.member.to_string()]);
            step.command(false, "ZADD", &keys.cache_timestamps(), pairs);
        }
        if let Some((agent, state)) = c.state {
            step.command(
                false,
                "HSET",
                &keys.agent_state(),
                [agent.to_string(), state.to_string()],
            );
        }
        let dead = keys.dead_letters();
        for d in c.dead {
            step.command(false, "XADD", &dead, xadd_fields(d.to_fields()));
        }
        self.run_step(step, &group_stream, c).await
    }

    async fn load_states(&self, agents: &[Arc<str>]) -> Result<Vec<Option<String>>, BackendError> {
        let mut out = Vec::with_capacity(agents.len());
        if self.inner.keys.cluster {
            for agent in agents {
                self.settle(agent).await?;
            }
            // Each agent's state is in its own slot: one HGET each, sent together.
            for chunk in agents.chunks(1000) {
                let mut pipe = redis::pipe();
                for a in chunk {
                    pipe.cmd("HGET").arg(self.inner.keys.agent_state_of(a)).arg(&**a);
                }
                let states: Vec<Option<String>> = self.pipeline("HGET", &pipe).await?;
                out.extend(states);
            }
            return Ok(out);
        }
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

    async fn read_record(&self) -> Result<Vec<(String, String)>, BackendError> {
        self.query("HGETALL", redis::cmd("HGETALL").arg(self.inner.keys.checkpoint()))
            .await
    }

    async fn write_record(&self, fields: &[(&str, String)]) -> Result<(), BackendError> {
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

    async fn update_record(&self, fields: &[(&str, String)]) -> Result<(), BackendError> {
        // One script: the record checked and written at once, so that a cleanup cannot come
        // in between.
        static UPDATE: LazyLock<redis::Script> = LazyLock::new(|| {
            redis::Script::new(
                "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
                 redis.call('HSET', KEYS[1], unpack(ARGV))
                 return 1",
            )
        });
        if fields.is_empty() {
            return Ok(());
        }
        let mut invocation = UPDATE.key(self.inner.keys.checkpoint());
        for (k, v) in fields {
            invocation.arg(*k).arg(v);
        }
        let mut con = self.con();
        let updated: i64 = invocation
            .invoke_async(&mut con)
            .await
            .map_err(|e| self.error("the record script", &e))?;
        if updated == 0 {
            return Err(crate::backend::record_gone());
        }
        Ok(())
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
        let mut con = self.con();
        invocation
            .invoke_async(&mut con)
            .await
            .map_err(|e| self.error("the lease script", &e))
    }

    /// The lease is renewed while its holder has it, or, when it has lapsed, while the run's
    /// record still names the holder. The record is read first and the lease checked and set in
    /// a script: on a cluster the two keys are in different slots, which no script may touch
    /// together. Should the lease lapse in between and another run take it (and rewrite the
    /// record), the script finds it taken and the renewal fails, as it should.
    async fn renew_lease(&self, holder: &str, ttl: Duration) -> Result<bool, BackendError> {
        static RENEW: LazyLock<redis::Script> = LazyLock::new(|| {
            redis::Script::new(
                "local current = redis.call('GET', KEYS[1])
                 if current == ARGV[1] or ((not current) and ARGV[3] == ARGV[1]) then
                   redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
                   return 1
                 end
                 return 0",
            )
        });
        let recorded: Option<String> = self
            .query(
                "HGET",
                redis::cmd("HGET")
                    .arg(self.inner.keys.checkpoint())
                    .arg(crate::backend::LEASE_HOLDER),
            )
            .await?;
        let mut invocation = RENEW.key(self.inner.keys.lease());
        invocation
            .arg(holder)
            .arg(ttl.as_millis() as u64)
            .arg(recorded.unwrap_or_default());
        let mut con = self.con();
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
        let mut con = self.con();
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

    async fn delete_run(&self) -> Result<CleanupReport, BackendError> {
        self.inner.reads.lock().await.cache.clear();
        admin::cleanup(self, admin::Groups::Listed).await
    }

    async fn load_answer(&self, key: &str) -> Result<Option<String>, BackendError> {
        self.query("HGET", redis::cmd("HGET").arg(self.inner.keys.answers()).arg(key))
            .await
    }

    async fn save_answer(&self, key: &str, answer: &str) -> Result<String, BackendError> {
        let hash = self.inner.keys.answers();
        let (_, kept): (bool, Option<String>) = self
            .pipeline(
                "HSETNX",
                // One transaction (one key, so one slot): on a cluster a plain pipeline's
                // commands go out separately, and the HGET must see the HSETNX.
                redis::pipe()
                    .atomic()
                    .cmd("HSETNX")
                    .arg(&hash)
                    .arg(key)
                    .arg(answer)
                    .cmd("HGET")
                    .arg(&hash)
                    .arg(key),
            )
            .await?;
        Ok(kept.unwrap_or_else(|| answer.to_string()))
    }

    async fn answers(&self) -> Result<Vec<String>, BackendError> {
        self.query("HVALS", redis::cmd("HVALS").arg(self.inner.keys.answers()))
            .await
    }

    async fn book_model_turn(&self, cost_ms: u64) -> Result<u64, BackendError> {
        // The server's clock, one for every process, or this process's own (ARGV[2]) for a
        // user whose ACL leaves TIME out; milliseconds since the epoch are below 2^53, exact
        // in Lua's numbers. The hash's field leaves room for what else the run may count
        // about the model.
        static BOOK: LazyLock<redis::Script> = LazyLock::new(|| {
            redis::Script::new(
                "local t = redis.pcall('TIME')
                 local now = tonumber(ARGV[2])
                 if type(t) == 'table' and t[1] then
                     now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
                 end
                 local start = math.max(tonumber(redis.call('HGET', KEYS[1], 'turns_end') or '0'), now)
                 redis.call('HSET', KEYS[1], 'turns_end', string.format('%d', start + tonumber(ARGV[1])))
                 return start - now",
            )
        });
        let mut invocation = BOOK.key(self.inner.keys.model_use());
        invocation.arg(cost_ms).arg(crate::backend::unix_millis());
        let mut con = self.con();
        invocation
            .invoke_async::<u64>(&mut con)
            .await
            .map_err(|e| self.error("the model-turn script", &e))
    }
}
