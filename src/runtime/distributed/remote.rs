//! The coordinator's side of worker processes, second half: commands sent, reports gathered.
//! Workers report counts only; the coordinator reads the messages from the stream.

use std::time::Duration;

use super::control::{Command, Report, ShardId};
use super::launch::Workers;
use crate::backend::{Backend, Transport};
use crate::runtime::RunError;
use crate::runtime::agent::StepReport;
use crate::runtime::hosting::{FreeProgress, Hosting};
use crate::runtime::shard::Expected;
use crate::scenario::Mode;
use crate::tally::Tally;

/// How many commands between trims of the control and report streams.
const TRIM_EVERY: u32 = 64;

impl<B: Backend> Workers<B> {
    pub(super) async fn send(&mut self, command: &Command) -> Result<(), RunError> {
        let text = serde_json::to_string(command).map_err(|e| RunError::Internal(e.to_string()))?;
        let key = self.backend.keys().control();
        self.last_command = self
            .reconnect
            .retry(&self.backend, || self.transport.note(&key, &text))
            .await?;
        Ok(())
    }

    /// Every so many commands, drops the commands every worker has carried out and the
    /// reports already read, so that a long run's bookkeeping streams stay short.
    async fn trim(&mut self) -> Result<(), RunError> {
        self.since_trim += 1;
        if self.since_trim < TRIM_EVERY {
            return Ok(());
        }
        self.since_trim = 0;
        let keys = self.backend.keys().clone();
        let (control, reports) = (keys.control(), keys.reports());
        let (last_command, cursor) = (self.last_command, self.cursor);
        self.reconnect
            .retry(&self.backend, || {
                self.transport.trim_notes(&control, last_command)
            })
            .await?;
        self.reconnect
            .retry(&self.backend, || self.transport.trim_notes(&reports, cursor))
            .await?;
        Ok(())
    }

    /// Reads reports of this run until `wanted` has matched one from every shard.
    pub(super) async fn gather(&mut self, wanted: impl Fn(&Report) -> bool) -> Result<Vec<Report>, RunError> {
        let mut got: Vec<Option<Report>> = vec![None; self.shards as usize];
        while got.iter().any(Option::is_none) {
            for (shard, report) in self.read_reports(Duration::from_millis(500)).await? {
                if wanted(&report) {
                    got[shard.slot()] = Some(report);
                }
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    /// The reports of this run that came within `block`, each with the shard it is from.
    ///
    /// # Errors
    ///
    /// A worker that failed, died or stopped answering, and a report that names a shard the
    /// run does not have: the run stops (exit 1) rather than trust it.
    async fn read_reports(&mut self, block: Duration) -> Result<Vec<(ShardId, Report)>, RunError> {
        self.check_children()?;
        self.check_heartbeats().await?;
        let key = self.backend.keys().reports();
        let cursor = self.cursor;
        let notes = self
            .reconnect
            .retry(&self.backend, || self.transport.notes(&key, cursor, block))
            .await?;
        let mut out = Vec::new();
        for (id, text) in notes {
            self.cursor = id;
            let Ok(report) = serde_json::from_str::<Report>(&text) else {
                continue;
            };
            if report.run() != self.run {
                continue;
            }
            let shard = ShardId::new(report.shard(), self.shards).map_err(|e| {
                RunError::Worker(format!(
                    "a worker's report names a shard this run does not have ({e}; the run has {}): {text}",
                    self.shards
                ))
            })?;
            if let Report::Failed { error, .. } = &report {
                return Err(RunError::Worker(format!("worker {shard} failed: {error}")));
            }
            out.push((shard, report));
        }
        Ok(out)
    }

    fn counts(reports: Vec<Report>) -> Tally {
        let mut total = Tally::default();
        for r in reports {
            if let Report::Done { counts, .. }
            | Report::Stopped { counts, .. }
            | Report::Progress { counts, .. } = r
            {
                total += counts;
            }
        }
        total
    }
}

impl<B: Backend> Hosting for Workers<B> {
    fn reports_messages(&self) -> bool {
        false
    }

    async fn start_agents(&mut self, _mode: Mode) -> Result<StepReport, RunError> {
        self.send(&Command::Start {
            run: self.run.clone(),
        })
        .await?;
        let done = self.gather(|r| matches!(r, Report::Done { .. })).await?;
        Ok(StepReport::counts(Self::counts(done)))
    }

    async fn run_tick(&mut self, tick: u64, expected: &Expected) -> Result<StepReport, RunError> {
        self.send(&Command::Tick {
            run: self.run.clone(),
            tick,
            expected: expected.clone(),
        })
        .await?;
        let done = self
            .gather(|r| matches!(r, Report::Done { tick: Some(t), .. } if *t == tick))
            .await?;
        self.trim().await?;
        Ok(StepReport::counts(Self::counts(done)))
    }

    async fn start_free(&mut self) -> Result<StepReport, RunError> {
        self.idle = vec![false; self.shards as usize];
        self.send(&Command::Free {
            run: self.run.clone(),
        })
        .await?;
        Ok(StepReport::default())
    }

    async fn free_progress(&mut self, wait: Duration) -> Result<FreeProgress, RunError> {
        let mut tally = Tally::default();
        for (shard, report) in self.read_reports(wait).await? {
            if let Report::Progress {
                counts, idle: now, ..
            } = report
            {
                tally += counts;
                self.idle[shard.slot()] = now;
            }
        }
        Ok(FreeProgress {
            report: StepReport::counts(tally),
            idle: self.idle.iter().all(|&i| i),
        })
    }

    async fn stop_free(&mut self) -> Result<StepReport, RunError> {
        self.send(&Command::Stop {
            run: self.run.clone(),
        })
        .await?;
        let mut total = Tally::default();
        let mut stopped = vec![false; self.shards as usize];
        while stopped.iter().any(|s| !s) {
            for (shard, report) in self.read_reports(Duration::from_millis(500)).await? {
                match report {
                    Report::Progress { counts, .. } => total += counts,
                    Report::Stopped { counts, .. } => {
                        total += counts;
                        stopped[shard.slot()] = true;
                    }
                    _ => {}
                }
            }
        }
        Ok(StepReport::counts(total))
    }
}
