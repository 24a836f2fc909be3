//! The stream and its consumer groups on Redis.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::resp::EntryCache;
use super::{ReadPath, RedisBackend, admin, ids_reply, parse, xadd};
use crate::backend::{BackendError, ClaimReport, GroupInfo, GroupRead, Stream};
use crate::message::{Batch, Delivery, EntryId, Message, share_equal};

/// The most entries one XREADGROUP asks for.
const MAX_READ_COUNT: usize = 100_000;

/// An entry added outside of a step: the inboxes it goes to, and its fields.
type Heard = (Vec<String>, Vec<(String, String)>);

impl RedisBackend {
    /// Adds entries outside of a step: each to the stream and to the inboxes given with it
    /// (when agents have inboxes); returns their ids on the stream. On one server an inbox
    /// entry takes the id its entry got on the stream, so the stream goes first. On a cluster
    /// each inbox numbers its entries itself (relays fill them, see `outbox`), and the inboxes
    /// go first, as a relay fills them: a reader woken by the stream finds its inbox filled.
    async fn add_heard(&self, entries: &[Heard]) -> Result<Vec<EntryId>, BackendError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let cluster = self.inner.keys.cluster;
        if cluster {
            self.add_to_inboxes(
                entries
                    .iter()
                    .map(|(inboxes, fields)| (inboxes, "*".to_string(), fields)),
            )
            .await?;
        }
        let mut pipe = redis::pipe();
        for (_, fields) in entries {
            xadd(
                &mut pipe,
                &self.inner.keys.stream,
                "*",
                fields.iter().map(|(k, v)| (k, v)),
            );
        }
        let ids = ids_reply(self.pipeline("XADD", &pipe).await?)?;
        if !cluster {
            self.add_to_inboxes(
                entries
                    .iter()
                    .zip(&ids)
                    .map(|((inboxes, fields), id)| (inboxes, id.to_string(), fields)),
            )
            .await?;
        }
        Ok(ids)
    }

    /// XADD of each (inboxes, id, fields) to its inboxes, in one pipeline.
    async fn add_to_inboxes<'a>(
        &self,
        copies: impl Iterator<Item = (&'a Vec<String>, String, &'a Vec<(String, String)>)>,
    ) -> Result<(), BackendError> {
        let mut pipe = redis::pipe();
        for (inboxes, id, fields) in copies {
            for inbox in inboxes {
                xadd(&mut pipe, inbox, &id, fields.iter().map(|(k, v)| (k, v)));
            }
        }
        if !pipe.is_empty() {
            self.pipeline::<Vec<Value>>("XADD", &pipe).await?;
        }
        Ok(())
    }
}

impl Stream for RedisBackend {
    async fn ensure_groups(&self, groups: &[String]) -> Result<(), BackendError> {
        for chunk in groups.chunks(1000) {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for g in chunk {
                pipe.cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&*self.inner.keys.group_stream(g))
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
        if self.inner.keys.cluster {
            let agents: Vec<&str> = groups
                .iter()
                .filter_map(|g| self.inner.keys.agent_of_group(g))
                .collect();
            self.relay_leftovers(&agents).await?;
        }
        Ok(())
    }

    async fn read(&self, reads: &[GroupRead]) -> Result<Vec<Batch>, BackendError> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        let mut path = self.inner.reads.lock().await;
        let ReadPath { fast, cache } = &mut *path;
        if let Some(fast) = fast {
            return fast
                .read(&self.inner.keys, reads, cache, MAX_READ_COUNT)
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
                .arg(&*self.inner.keys.group_stream(&r.group))
                .arg(if r.pending { "0" } else { ">" });
        }
        let replies: Vec<Value> = self.pipeline("XREADGROUP", &pipe).await?;
        // On a cluster each inbox gives its entries ids of its own (see `outbox`): an id
        // names an entry only within one inbox, so entries are not looked up by id.
        let mut uncached = EntryCache::new(0);
        let seen = if self.inner.keys.cluster {
            &mut uncached
        } else {
            cache
        };
        let batches = replies
            .into_iter()
            .map(|v| parse::read_reply(v, seen))
            .collect::<Result<_, _>>()?;
        Ok(share_equal(batches))
    }

    async fn ack(&self, group: &str, ids: &[EntryId]) -> Result<u64, BackendError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&*self.inner.keys.group_stream(group)).arg(group);
        for id in ids {
            cmd.arg(id.to_string());
        }
        self.query("XACK", &cmd).await
    }

    async fn claim(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
    ) -> Result<ClaimReport, BackendError> {
        let stream = &*self.inner.keys.group_stream(group);
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

    async fn trim(&self, maxlen: u64) -> Result<u64, BackendError> {
        let stream = &self.inner.keys.stream;
        let len: u64 = self.query("XLEN", redis::cmd("XLEN").arg(stream)).await?;
        if len <= maxlen {
            return Ok(0);
        }
        // Keep everything some group has not read and acknowledged. With inboxes the groups
        // read their inboxes, not the stream, which is then only the run's record.
        let groups = if self.inner.keys.inboxes {
            Vec::new()
        } else {
            self.group_infos().await?
        };
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

    async fn publish(&self, messages: &[Arc<Message>]) -> Result<Vec<EntryId>, BackendError> {
        let entries: Vec<Heard> = messages
            .iter()
            .map(|m| {
                let fields = m
                    .to_fields()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                (self.inboxes_of(Some(m)), fields)
            })
            .collect();
        self.add_heard(&entries).await
    }

    async fn publish_fields(&self, fields: &[(String, String)]) -> Result<EntryId, BackendError> {
        // Another program's entry: every agent hears it.
        let mut ids = self
            .add_heard(&[(self.inboxes_of(None), fields.to_vec())])
            .await?;
        ids.pop()
            .ok_or_else(|| BackendError::command("XADD returned no id"))
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

    async fn groups(&self) -> Result<Vec<GroupInfo>, BackendError> {
        self.group_infos().await
    }

    async fn entries_added(&self) -> Result<u64, BackendError> {
        let mut con = self.con();
        let reply: Result<Value, _> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&self.inner.keys.stream)
            .query_async(&mut con)
            .await;
        match reply {
            Ok(v) => parse::stream_counter(v, "entries-added"),
            Err(e) if super::connect::is_no_such_key(&e) => Ok(0),
            Err(e) => Err(self.error("XINFO STREAM", &e)),
        }
    }
}
