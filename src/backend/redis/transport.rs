//! How a coordinator and its worker processes talk through Redis: notes on bookkeeping
//! streams (`{stream}:control`, `{stream}:reports`) and registrations in a hash
//! (`{stream}:workers`).

use std::time::Duration;

use redis::Value;

use super::{RedisBackend, parse};
use crate::backend::{BackendError, Transport};
use crate::message::EntryId;

impl Transport for RedisBackend {
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
}
