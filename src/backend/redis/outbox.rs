//! Agent steps on a Redis Cluster: the transactional outbox.
//!
//! A MULTI/EXEC may only touch one hash slot, and an agent's step must stay atomic (DESIGN.md
//! invariant 2). So on a cluster every key an agent's step writes lives in the agent's slot
//! (hash tag `{agent}`): its inbox (acknowledged and trimmed), its cache list, its saved
//! state, and its outbox, a stream that takes what the step publishes, dead-letters and adds
//! to the cache's sorted set. After the transaction, the outbox is *relayed*: each entry is
//! copied into the keys it is for (the hearers' inboxes, the stream, the dead letters, the
//! sorted set), which live in other slots, and then deleted from the outbox.
//!
//! A relay can stop half-way (the process dies). Whoever hosts the agent next relays what is
//! left in its outbox before the agent takes a step ([`RedisBackend::relay_leftovers`]), so
//! nothing committed is lost. Nothing is doubled either: each target key has a hash beside
//! it, in its slot, holding per agent the last outbox entry relayed into it, and one script
//! per target adds an entry only when it is newer (outbox ids only grow, and one agent's
//! entries are relayed in order, by one process at a time). This is the (`sender_id`, `seq`)
//! identity of a message, kept as the outbox id that stands for it.
//!
//! Inboxes are filled before the stream, so that a reader woken by a new entry on the stream
//! finds its inbox already filled.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use futures_util::future::try_join_all;
use redis::Value;

use super::run_store::{StepScript, xadd_fields};
use super::{RedisBackend, parse};
use crate::backend::keys::slot_of;
use crate::backend::{BackendError, Commit};
use crate::message::{Entry, EntryId, Message, parse_fields};

/// The field of an outbox entry that says what it is for.
const FOR: &str = "relay";

/// Adds outbox entries of agent `ARGV[1]` to target keys, each entry unless the target's hash
/// of what was relayed says an entry of that outbox at least as new was relayed already;
/// returns the new ids, target after target (`""` for each skipped). `ARGV` holds, after the
/// agent, per target: its key, its hash, its number of entries, then per entry its outbox id,
/// its argument count and XADD's arguments after the key. The targets are on one node, in
/// slots of their own (Redis 7's `allow-cross-slot-keys`); `KEYS[1]`, one of them, routes the
/// call.
const RELAY: &str = "#!lua flags=allow-cross-slot-keys
local agent = ARGV[1]
local function parts(id)
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local ids, i = {}, 2
while i <= #ARGV do
  local target, seen, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local last_ms, last_seq = -1, -1
  local last = redis.call('HGET', seen, agent)
  if last then last_ms, last_seq = parts(last) end
  local newest = false
  for _ = 1, n do
    local id, argc = ARGV[i], tonumber(ARGV[i + 1])
    local ms, seq = parts(id)
    if ms > last_ms or (ms == last_ms and seq > last_seq) then
      ids[#ids + 1] = redis.call('XADD', target, unpack(ARGV, i + 2, i + 1 + argc))
      last_ms, last_seq, newest = ms, seq, id
    else
      ids[#ids + 1] = ''
    end
    i = i + 2 + argc
  end
  if newest then redis.call('HSET', seen, agent, newest) end
end
return ids";

static RELAY_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RELAY));

/// The most outbox entries one relay script carries (Lua's `unpack` has a limit).
const CHUNK: usize = 200;

/// An outbox entry as a relay takes it: (outbox id, XADD's arguments after the key).
type Item = (EntryId, Vec<String>);
type Items = Vec<Item>;

/// What an outbox entry is for.
enum Relayed {
    /// A message: to its hearers' inboxes and the stream.
    Message(Arc<Message>),
    /// Members for the cache's sorted set, as (score, member).
    Cache(Vec<(f64, String)>),
    /// A dead letter's fields.
    Dead(Vec<(String, String)>),
}

impl Relayed {
    fn to_fields(&self) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        match self {
            Relayed::Message(m) => {
                fields.push((FOR.to_string(), "message".to_string()));
                fields.extend(m.to_fields().into_iter().map(|(k, v)| (k.to_string(), v)));
            }
            Relayed::Cache(pairs) => {
                fields.push((FOR.to_string(), "cache".to_string()));
                let json = serde_json::to_string(pairs).unwrap_or_else(|_| "[]".to_string());
                fields.push(("pairs".to_string(), json));
            }
            Relayed::Dead(dead) => {
                fields.push((FOR.to_string(), "dead".to_string()));
                fields.extend(dead.iter().cloned());
            }
        }
        fields
    }

    /// An outbox entry read back; `None` for one agora did not write.
    fn from_fields(fields: Vec<(String, String)>) -> Option<Relayed> {
        let kind = fields.iter().find(|(k, _)| k == FOR)?.1.clone();
        let rest: Vec<(String, String)> = fields.into_iter().filter(|(k, _)| k != FOR).collect();
        match kind.as_str() {
            "message" => match parse_fields(&rest) {
                Entry::Message(m) => Some(Relayed::Message(m)),
                Entry::Malformed(_) => None,
            },
            "cache" => {
                let json = rest.iter().find(|(k, _)| k == "pairs")?;
                serde_json::from_str(&json.1).ok().map(Relayed::Cache)
            }
            "dead" => Some(Relayed::Dead(rest)),
            _ => None,
        }
    }
}

impl RedisBackend {
    /// An agent step on a cluster: one transaction in the agent's slot, then the relay.
    pub(super) async fn commit_in_slot(&self, c: &Commit<'_>) -> Result<Vec<EntryId>, BackendError> {
        let keys = &self.inner.keys;
        let agent = keys.agent_of_group(c.group).ok_or_else(|| {
            BackendError::command(format!("group {:?} is not an agent's group of this run", c.group))
        })?;
        self.settle(agent).await?;
        let outbox = keys.outbox(agent);
        let group_stream = keys.group_stream(c.group);
        let mut step = StepScript::new(&group_stream, c.group, c.acks);
        let mut relayed: Vec<Relayed> = c.publish.iter().cloned().map(Relayed::Message).collect();
        if !c.cache.is_empty() {
            relayed.push(Relayed::Cache(
                c.cache.iter().map(|a| (a.score, a.member.to_string())).collect(),
            ));
        }
        relayed.extend(c.dead.iter().map(|d| Relayed::Dead(d.to_fields())));
        for r in &relayed {
            step.command(true, "XADD", &outbox, xadd_fields(r.to_fields()));
        }
        step.push_cache_lists(keys, c.cache);
        if let Some((agent, state)) = c.state {
            step.command(
                false,
                "HSET",
                &keys.agent_state_of(agent),
                [agent.to_string(), state.to_string()],
            );
        }
        // Until the relay is done, the step's outbox may hold what it published: a reply lost
        // here leaves the agent to be settled before anyone reads its state or steps it.
        self.unrelayed().insert(agent.to_string());
        let outbox_ids = self.run_step(step, &group_stream, c).await?;
        let entries: Vec<(EntryId, Relayed)> = outbox_ids.into_iter().zip(relayed).collect();
        let ids = self.relay_until_done(agent, &entries).await?;
        self.unrelayed().remove(agent);
        if ids.iter().all(Option::is_some) {
            return Ok(ids.into_iter().flatten().collect());
        }
        // A relay tried again after a lost reply skips what the stream already has.
        self.find_on_stream(agent, c.publish).await
    }

    /// Relays what is left in `agent`'s outbox when a step of it may not have finished its
    /// relay (a lost reply): before the agent steps again, and before its saved state is read
    /// to tell whether that step went through (whose messages are then looked for on the
    /// stream).
    pub(super) async fn settle(&self, agent: &str) -> Result<(), BackendError> {
        if self.unrelayed().contains(agent) {
            self.relay_leftovers(&[agent]).await?;
            self.unrelayed().remove(agent);
        }
        Ok(())
    }

    /// The stream ids of `agent`'s messages `published`, looked for from the newest entry back.
    async fn find_on_stream(
        &self,
        agent: &str,
        published: &[Arc<Message>],
    ) -> Result<Vec<EntryId>, BackendError> {
        let mut found: Vec<Option<EntryId>> = vec![None; published.len()];
        let mut before = "+".to_string();
        while found.iter().any(Option::is_none) {
            let reply: Value = self
                .query(
                    "XREVRANGE",
                    redis::cmd("XREVRANGE")
                        .arg(&self.inner.keys.stream)
                        .arg(&before)
                        .arg("-")
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            let entries = parse::raw_range(reply)?;
            let Some((oldest, _)) = entries.last() else { break };
            before = format!("({oldest}");
            for (id, fields) in entries {
                if let Entry::Message(m) = parse_fields(&fields)
                    && &*m.sender_id == agent
                    && let Some(i) = published.iter().position(|p| p.seq == m.seq)
                {
                    found[i] = Some(id);
                }
            }
        }
        found
            .into_iter()
            .map(|id| {
                id.ok_or_else(|| {
                    BackendError::command(format!("a message of {agent} relayed to the stream is not on it"))
                })
            })
            .collect()
    }

    fn unrelayed(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.inner
            .unrelayed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`relay`](Self::relay), tried again while the cluster is out of reach (for as long as
    /// `reconnect_timeout`): the step is committed, and its readers wait for what it
    /// published. When it cannot finish, the agent's outbox is relayed before its next step.
    async fn relay_until_done(
        &self,
        agent: &str,
        entries: &[(EntryId, Relayed)],
    ) -> Result<Vec<Option<EntryId>>, BackendError> {
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            match self.relay(agent, entries).await {
                Ok(ids) => return Ok(ids),
                Err(e) if e.is_unavailable() && started.elapsed() < self.inner.reconnect_timeout => {
                    tracing::debug!(agent, "relaying the outbox: {e}; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(2));
                }
                Err(e) => {
                    self.unrelayed().insert(agent.to_string());
                    return Err(e);
                }
            }
        }
    }

    /// Relays what is left in the outboxes of `agents`, from steps whose relay did not finish
    /// (the process hosting them stopped): before they take a step elsewhere.
    pub(super) async fn relay_leftovers(&self, agents: &[&str]) -> Result<u64, BackendError> {
        let mut relayed = 0;
        for chunk in agents.chunks(256) {
            let reads = chunk.iter().map(|agent| async move {
                let reply: Value = self
                    .query(
                        "XRANGE",
                        redis::cmd("XRANGE")
                            .arg(self.inner.keys.outbox(agent))
                            .arg("-")
                            .arg("+"),
                    )
                    .await?;
                let entries: Vec<(EntryId, Relayed)> = parse::raw_range(reply)?
                    .into_iter()
                    .filter_map(|(id, fields)| Relayed::from_fields(fields).map(|r| (id, r)))
                    .collect();
                if !entries.is_empty() {
                    self.relay(agent, &entries).await?;
                }
                Ok::<u64, BackendError>(entries.len() as u64)
            });
            relayed += try_join_all(reads).await?.into_iter().sum::<u64>();
        }
        if relayed > 0 {
            tracing::info!("relayed {relayed} outbox entries left by an earlier process");
        }
        Ok(relayed)
    }

    /// Copies `entries` of `agent`'s outbox where they belong, then deletes them from it.
    /// Returns the stream ids of its messages (`None` for one relayed before).
    async fn relay(
        &self,
        agent: &str,
        entries: &[(EntryId, Relayed)],
    ) -> Result<Vec<Option<EntryId>>, BackendError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let keys = &self.inner.keys;
        let mut inboxes: BTreeMap<String, Items> = BTreeMap::new();
        let mut messages = Vec::new();
        let mut dead = Vec::new();
        let mut members = Vec::new();
        for (id, r) in entries {
            match r {
                Relayed::Message(m) => {
                    let fields = xadd_fields(m.to_fields());
                    for inbox in self.inboxes_of(Some(m)) {
                        inboxes.entry(inbox).or_default().push((*id, fields.clone()));
                    }
                    messages.push((*id, fields));
                }
                Relayed::Cache(pairs) => members.extend(pairs.iter().cloned()),
                Relayed::Dead(fields) => dead.push((*id, xadd_fields(fields.clone()))),
            }
        }
        // One script per node, for the inboxes in its slots.
        let mut by_node: BTreeMap<String, Vec<(&str, &Items)>> = BTreeMap::new();
        {
            let owners = self
                .inner
                .slot_owners
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (inbox, items) in &inboxes {
                let node = owners.owner(slot_of(inbox)).unwrap_or_default().to_string();
                by_node.entry(node).or_default().push((inbox, items));
            }
        }
        try_join_all(by_node.values().map(|targets| self.relay_on_node(agent, targets))).await?;
        for chunk in members.chunks(500) {
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(keys.cache_timestamps());
            for (score, member) in chunk {
                zadd.arg(*score).arg(member);
            }
            self.query::<()>("ZADD", &zadd).await?;
        }
        self.relay_into(&keys.dead_letters(), agent, &dead).await?;
        let ids = self.relay_into(&keys.stream, agent, &messages).await?;
        let mut xdel = redis::cmd("XDEL");
        xdel.arg(keys.outbox(agent));
        for (id, _) in entries {
            xdel.arg(id.to_string());
        }
        self.query::<u64>("XDEL", &xdel).await?;
        Ok(ids)
    }

    /// [`RELAY`] of `targets` (keys in slots of one node, and their items). When the node
    /// refuses a key (the cluster moved its slot), the slots' owners are read again and each
    /// target is relayed on its own.
    async fn relay_on_node(&self, agent: &str, targets: &[(&str, &Items)]) -> Result<(), BackendError> {
        if let [(target, items)] = targets {
            return self.relay_into(target, agent, items).await.map(drop);
        }
        let together: Vec<(&str, &[Item])> =
            targets.iter().map(|(t, items)| (*t, items.as_slice())).collect();
        match self.run_relay(agent, &together).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_unavailable() => Err(error),
            Err(error) => {
                tracing::debug!("relaying to one node at once: {error}; relaying key by key");
                if let Ok(owners) = self.con().slot_owners().await {
                    *self
                        .inner
                        .slot_owners
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = owners;
                }
                for (target, items) in targets {
                    self.relay_into(target, agent, items).await?;
                }
                Ok(())
            }
        }
    }

    /// [`RELAY`] of `items` into `target`, a bounded number of entries a call.
    async fn relay_into(
        &self,
        target: &str,
        agent: &str,
        items: &Items,
    ) -> Result<Vec<Option<EntryId>>, BackendError> {
        let mut ids = Vec::with_capacity(items.len());
        for chunk in items.chunks(CHUNK) {
            ids.extend(self.run_relay(agent, &[(target, chunk)]).await?);
        }
        Ok(ids)
    }

    /// One call of [`RELAY`]: the new ids, target after target (`None` for an entry relayed
    /// before).
    async fn run_relay(
        &self,
        agent: &str,
        targets: &[(&str, &[Item])],
    ) -> Result<Vec<Option<EntryId>>, BackendError> {
        let Some((first, _)) = targets.first() else {
            return Ok(Vec::new());
        };
        let mut invocation = RELAY_SCRIPT.key(*first);
        invocation.arg(agent);
        for (target, items) in targets {
            invocation
                .arg(*target)
                .arg(self.inner.keys.relayed(target))
                .arg(items.len());
            for (id, args) in items.iter() {
                invocation.arg(id.to_string()).arg(args.len()).arg(args);
            }
        }
        let mut con = self.con();
        let reply: Value = invocation
            .invoke_async(&mut con)
            .await
            .map_err(|e| self.error("the relay script", &e))?;
        parse::array(reply, "the relay script")?
            .into_iter()
            .map(|id| match parse::text(id) {
                Ok(text) if text.is_empty() => Ok(None),
                Ok(text) => text
                    .parse()
                    .map(Some)
                    .map_err(|_| BackendError::command(format!("the relay script returned {text:?}"))),
                Err(v) => Err(BackendError::command(format!("the relay script returned {v:?}"))),
            })
            .collect()
    }
}
