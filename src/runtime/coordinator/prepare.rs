//! Before a run starts: its keys checked, the stream's lease taken, an earlier run's keys
//! cleaned up or continued, and the start recorded.

use super::Coordinator;
use super::record::{Checkpoint, RunRecord, RunStatus};
use crate::backend::{Backend, BackendErrorKind};
use crate::runtime::RunError;
use crate::runtime::liveness;
use crate::runtime::model::ModelClient;
use crate::scenario::Mode;

impl<B: Backend> Coordinator<'_, B> {
    /// Refuses keys of the run's names that hold something else (someone else's), and a
    /// backend that would refuse the run's commands.
    pub(super) async fn preflight(&self) -> Result<(), RunError> {
        match self
            .reconnect
            .retry(&self.backend, || self.backend.preflight())
            .await
        {
            Err(RunError::Backend(e)) if e.kind == BackendErrorKind::Conflict => Err(RunError::Refused {
                message: e.message,
                hint: e
                    .hint
                    .unwrap_or_else(|| "choose another backend.stream for this scenario".to_string()),
            }),
            other => other,
        }
    }

    /// Checks, before any agent runs, that the model servers answer, take the key and serve
    /// the scenario's models (not on `--replay`, which asks no server).
    pub(super) async fn probe_models(&self) -> Result<(), RunError> {
        let Some(config) = &self.scenario.llm else {
            return Ok(());
        };
        if self.options.replay.is_some() {
            return Ok(());
        }
        let client = ModelClient::new(config.clone(), None, self.backend.clone(), self.reconnect.clone())?;
        client.probe(&self.scenario.models()).await
    }

    /// Takes the stream's lease, or refuses to run while another run of the stream is going:
    /// cleaning up or resuming would pull its keys from under it.
    pub(super) async fn take_lease(&self) -> Result<(), RunError> {
        let holder = &self.holder;
        let taken = self
            .reconnect
            .retry(&self.backend, || liveness::take(&self.backend, holder))
            .await?;
        match taken {
            None => Ok(()),
            Some(other) => Err(RunError::Refused {
                message: format!(
                    "a run of stream {:?} is still going: {}",
                    self.scenario.backend.keys.stream,
                    liveness::describe(&other)
                ),
                hint: format!(
                    "wait for it to end or stop it (Ctrl-C keeps it resumable; a run that died frees the stream within {} s); to run both at once, give this one a stream of its own (--set backend.stream=...)",
                    liveness::LEASE.as_secs()
                ),
            }),
        }
    }

    pub(super) async fn give_up_lease(&self) {
        if let Err(e) = self.backend.release_lease(&self.holder.to_value()).await {
            tracing::debug!("could not give the stream's lease up (it lapses by itself): {e}");
        }
    }

    /// Cleans up or refuses to run over an earlier run, and records the start. On
    /// `--resume`, returns the checkpoint to continue from (lockstep).
    pub(super) async fn prepare(&mut self) -> Result<Option<Checkpoint>, RunError> {
        let record = self
            .reconnect
            .retry(&self.backend, || self.backend.read_record())
            .await
            .map(RunRecord::from_fields)?;
        let checkpoint = if self.options.resume {
            let checkpoint = self.resumable(&record)?;
            self.elapsed_before = std::time::Duration::from_secs_f64(record.elapsed_s.unwrap_or(0.0));
            if let Some(c) = &checkpoint {
                self.check_cut_tick_whole(c).await?;
            }
            checkpoint
        } else {
            self.clear_earlier_run(&record).await?;
            None
        };
        let start = RunRecord::start_fields(self.scenario, &self.holder.to_value());
        let resume = self.options.resume;
        self.reconnect
            .retry(&self.backend, || async {
                // A resumed run's record was just read: should `agora cleanup` have deleted
                // it since, the run's keys are gone, and the record is not brought back.
                if resume {
                    self.backend.update_record(&start).await
                } else {
                    self.backend.write_record(&start).await
                }
            })
            .await?;
        Ok(checkpoint)
    }

    /// The checkpoint to resume from, or why the run in `record` cannot be resumed.
    fn resumable(&self, record: &RunRecord) -> Result<Option<Checkpoint>, RunError> {
        let stream = &self.scenario.backend.keys.stream;
        let refused = |message: String, hint: &str| RunError::Refused {
            message,
            hint: hint.to_string(),
        };
        if !record.exists {
            return Err(refused(
                format!("nothing to resume: there is no run of stream {stream:?} on this backend"),
                "run it without --resume to start it",
            ));
        }
        if record.fingerprint.as_deref() != Some(self.scenario.fingerprint().as_str()) {
            return Err(refused(
                format!(
                    "the scenario changed since the run of stream {stream:?} started; resuming it would not give the transcript of either"
                ),
                crate::runtime::folder::RESUME_THE_SAME,
            ));
        }
        if record.status == Some(RunStatus::Finished) {
            return Err(refused(
                format!("the run of stream {stream:?} finished; there is nothing to resume"),
                "run it without --resume to start it again",
            ));
        }
        if self.scenario.mode == Mode::Free {
            return Ok(None);
        }
        record.checkpoint().map(Some).map_err(|e| {
            refused(
                format!("the run's checkpoint is unreadable: {e}"),
                "start afresh without --resume",
            )
        })
    }

    /// Refuses to resume when messages of the last completed tick, which the cut tick reads,
    /// are gone from the stream: the run could not end as it began. (With `backend.maxlen` the
    /// stream is trimmed on purpose, of what every agent has read; nothing can be told then.)
    async fn check_cut_tick_whole(&self, checkpoint: &Checkpoint) -> Result<(), RunError> {
        let Some(tick) = checkpoint.tick else {
            return Ok(());
        };
        if self.scenario.backend.maxlen > 0 {
            return Ok(());
        }
        let found = self
            .published_on_stream(crate::message::EntryId::ZERO, |m| m.tick == Some(tick))
            .await?
            .len() as u64;
        if found < checkpoint.expected.messages {
            return Err(RunError::Refused {
                message: format!(
                    "cannot resume: tick {tick} published {} messages, and stream {:?} holds only {found} of them (the rest were deleted or trimmed)",
                    checkpoint.expected.messages, self.scenario.backend.keys.stream
                ),
                hint: crate::runtime::error::ENTRIES_GONE.to_string(),
            });
        }
        Ok(())
    }

    /// Deletes the keys of an earlier run when `backend.cleanup` allows it; refuses to run
    /// over them otherwise.
    async fn clear_earlier_run(&self, record: &RunRecord) -> Result<(), RunError> {
        let backend = &self.scenario.backend;
        if record.exists && !backend.cleanup.before() {
            return Err(self.kept_keys(record));
        }
        if record.is_resumable() {
            // An interrupted run holds work that --resume can finish: deleting it is asked
            // for, never done in passing.
            return Err(RunError::Refused {
                message: format!(
                    "stream {:?} holds a run that did not finish (status: {}): starting afresh would delete it",
                    backend.keys.stream,
                    record.status_text.as_deref().unwrap_or("unknown")
                ),
                hint: format!(
                    "continue it with --resume, or discard it first with `agora cleanup --redis-url {} --stream {}`",
                    backend.url, backend.keys.stream
                ),
            });
        }
        if backend.cleanup.before() {
            self.reconnect
                .retry(&self.backend, || self.backend.delete_run())
                .await?;
        }
        Ok(())
    }

    /// The refusal of a run over an earlier run's keys that `backend.cleanup` keeps.
    fn kept_keys(&self, record: &RunRecord) -> RunError {
        let backend = &self.scenario.backend;
        RunError::Refused {
            message: format!(
                "the keys of an earlier run of stream {:?} are still there (status: {}), and backend.cleanup = {:?} keeps them",
                backend.keys.stream,
                record.status_text.as_deref().unwrap_or("unknown"),
                format!("{:?}", backend.cleanup).to_lowercase()
            ),
            hint: format!(
                "{}delete it with `agora cleanup --redis-url {} --stream {}`, or set backend.cleanup = \"before\"",
                // A finished run has nothing to resume: the hint names only what can be done.
                if record.is_resumable() {
                    "continue it with --resume, "
                } else {
                    ""
                },
                backend.url,
                backend.keys.stream
            ),
        }
    }
}
