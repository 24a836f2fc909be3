//! Committing a step, and telling after a lost reply whether the commit went through.
//!
//! A commit whose reply was lost (Redis went away mid-transaction) may or may not have been
//! applied. The agent's saved record tells: every committed record differs from the one
//! before, so if the stored record is this step's, the commit went through, and the step's
//! messages are found on the stream by sender and counter; otherwise it is sent again.

use std::sync::Arc;

use super::step::AgentCore;
use crate::backend::{Backend, Commit};
use crate::message::{EntryId, Message};
use crate::runtime::RunError;

impl<B: Backend> AgentCore<B> {
    /// Commits a step, riding out a lost connection: after Redis is back, the saved record
    /// tells whether the commit went through before the connection broke.
    pub(super) async fn commit(
        &self,
        commit: &Commit<'_>,
        publish: &[Arc<Message>],
    ) -> Result<Vec<EntryId>, RunError> {
        loop {
            match self.backend.commit(commit).await {
                Ok(ids) => return Ok(ids),
                Err(e) if e.is_unavailable() => {
                    tracing::debug!(agent = %self.spec.name, "{e}; waiting for the backend to come back");
                    self.reconnect.wait(&self.backend).await?;
                    let stored = self
                        .reconnect
                        .retry(&self.backend, || {
                            self.backend.load_states(std::slice::from_ref(&self.spec.name))
                        })
                        .await?;
                    let record = commit.state.map(|(_, r)| r);
                    if stored.first().and_then(|s| s.as_deref()) == record {
                        return self.find_published(publish).await;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The stream ids of messages this agent published in a commit whose reply was lost.
    async fn find_published(&self, publish: &[Arc<Message>]) -> Result<Vec<EntryId>, RunError> {
        let mut ids = Vec::with_capacity(publish.len());
        let mut after = self.last_own_id;
        while ids.len() < publish.len() {
            let batch = self
                .reconnect
                .retry(&self.backend, || self.backend.range(after, 1000))
                .await?;
            let Some(last) = batch.last() else { break };
            after = last.id;
            for d in &batch {
                if let Some(m) = d.message()
                    && m.sender_id == self.spec.name
                    && publish.iter().any(|p| p.seq == m.seq)
                {
                    ids.push(d.id);
                }
            }
        }
        if ids.len() != publish.len() {
            return Err(RunError::Internal(format!(
                "agent {}: its commit went through but only {} of its {} messages are on the stream",
                self.spec.name,
                ids.len(),
                publish.len()
            )));
        }
        Ok(ids)
    }
}
