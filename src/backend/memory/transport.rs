//! An in-process [`Transport`]: bookkeeping streams and hashes kept in the memory backend's
//! store, for code that runs a coordinator and its workers in one process (tests). Worker
//! processes cannot share it, so [`MemoryBackend`] offers none to the runtime.

use std::collections::BTreeMap;
use std::time::Duration;

use super::MemoryBackend;
use super::store::{HashMap, id};
use crate::backend::{BackendError, Transport};
use crate::message::EntryId;

/// The bookkeeping of the memory backend's store. A run's deletion clears it, as it deletes
/// the bookkeeping keys on Redis.
#[derive(Default)]
pub(super) struct Books {
    /// Bookkeeping streams by key: sequence numbers and texts.
    notes: HashMap<String, Vec<(u64, String)>>,
    /// Keeps growing across a deletion, as ids do.
    pub next_note: u64,
    hashes: HashMap<String, BTreeMap<String, String>>,
}

/// The transport over a [`MemoryBackend`]'s store.
#[derive(Clone)]
pub struct MemoryTransport {
    backend: MemoryBackend,
}

impl MemoryBackend {
    /// A transport over this backend's store, for a coordinator and workers in one process.
    pub fn in_process_transport(&self) -> MemoryTransport {
        MemoryTransport {
            backend: self.clone(),
        }
    }
}

impl MemoryTransport {
    fn with_books<T>(&self, f: impl FnOnce(&mut Books) -> T) -> T {
        f(&mut self.backend.store().books)
    }
}

impl Transport for MemoryTransport {
    async fn note(&self, key: &str, text: &str) -> Result<EntryId, BackendError> {
        let seq = self.with_books(|books| {
            books.next_note += 1;
            let seq = books.next_note;
            books
                .notes
                .entry(key.to_string())
                .or_default()
                .push((seq, text.to_string()));
            seq
        });
        self.backend.shared.noted.notify_waiters();
        Ok(id(seq))
    }

    async fn notes(
        &self,
        key: &str,
        after: EntryId,
        block: Duration,
    ) -> Result<Vec<(EntryId, String)>, BackendError> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let noted = self.backend.shared.noted.notified();
            tokio::pin!(noted);
            noted.as_mut().enable();
            let found: Vec<(EntryId, String)> = self.with_books(|books| {
                books
                    .notes
                    .get(key)
                    .map(|n| {
                        n.iter()
                            .filter(|(seq, _)| id(*seq) > after)
                            .map(|(seq, t)| (id(*seq), t.clone()))
                            .collect()
                    })
                    .unwrap_or_default()
            });
            if !found.is_empty() || tokio::time::timeout_at(deadline, noted).await.is_err() {
                return Ok(found);
            }
        }
    }

    async fn trim_notes(&self, key: &str, before: EntryId) -> Result<u64, BackendError> {
        Ok(self.with_books(|books| {
            let Some(notes) = books.notes.get_mut(key) else {
                return 0;
            };
            let len = notes.len();
            notes.retain(|(seq, _)| id(*seq) >= before);
            (len - notes.len()) as u64
        }))
    }

    async fn hash_set(&self, key: &str, field: &str, value: &str) -> Result<(), BackendError> {
        self.with_books(|books| {
            books
                .hashes
                .entry(key.to_string())
                .or_default()
                .insert(field.to_string(), value.to_string())
        });
        Ok(())
    }

    async fn hash_all(&self, key: &str) -> Result<Vec<(String, String)>, BackendError> {
        Ok(self.with_books(|books| {
            books
                .hashes
                .get(key)
                .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        }))
    }
}
