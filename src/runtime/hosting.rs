//! Where a run's agents live, behind one trait: in this process ([`LocalHosting`], a shard
//! of them all) or in worker processes (`distributed::Workers`). The coordinator drives
//! either the same way, and a worker process drives its own share through a
//! [`LocalHosting`] too.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::RunError;
use super::agent::StepReport;
use super::shard::{Expected, FeederEvent, Shard, ShardEvent};
use crate::backend::Backend;
use crate::scenario::Mode;
use crate::tally::Tally;

/// What free-mode agents did since the last look.
#[derive(Debug, Default)]
pub(crate) struct FreeProgress {
    pub report: StepReport,
    /// Every host had nothing to do at its last word.
    pub idle: bool,
}

/// The agents of a run, wherever they live.
#[allow(async_fn_in_trait)]
pub(crate) trait Hosting {
    /// Whether step reports carry the messages the steps published; when they do not, the
    /// coordinator reads them from the stream.
    fn reports_messages(&self) -> bool;

    /// `init` and `on_start` for every agent that has not started yet.
    async fn start_agents(&mut self, mode: Mode) -> Result<StepReport, RunError>;

    /// Lockstep tick `tick`: every agent that has not done it reads its share of what tick
    /// `tick - 1` published (`expected`), handles it and commits.
    async fn run_tick(&mut self, tick: u64, expected: &Expected) -> Result<StepReport, RunError>;

    /// Free mode: starts the agents (`on_start`) and sets them going.
    async fn start_free(&mut self) -> Result<StepReport, RunError>;

    /// Free mode: what was done since the last call, waiting up to `wait` for news.
    async fn free_progress(&mut self, wait: Duration) -> Result<FreeProgress, RunError>;

    /// Free mode: stops the agents; what they did since the last progress.
    async fn stop_free(&mut self) -> Result<StepReport, RunError>;
}

/// Agents in this process.
pub(crate) struct LocalHosting<B: Backend> {
    /// `None` while free mode runs it on a task of its own.
    shard: Option<Shard<B>>,
    /// After a resume: the next step also counts what agents did in the cut tick before the
    /// crash (they are not run again).
    resumed: bool,
    free: Option<FreeTask<B>>,
}

/// Free mode's shard, running on a task of its own.
struct FreeTask<B: Backend> {
    events: mpsc::UnboundedReceiver<FeederEvent>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<(Shard<B>, Result<(), RunError>)>,
    /// Whether each of the shard's readers was idle at its last word.
    idle: Vec<bool>,
}

impl<B: Backend> FreeTask<B> {
    /// Counts `event` into `report`.
    fn take(&mut self, (feeder, event): FeederEvent, report: &mut StepReport) {
        match event {
            ShardEvent::Step(step) => {
                *report += step;
                self.idle[feeder] = false;
            }
            ShardEvent::Idle => self.idle[feeder] = true,
        }
    }
}

impl<B: Backend> LocalHosting<B> {
    pub fn new(shard: Shard<B>, resumed: bool) -> Self {
        LocalHosting {
            shard: Some(shard),
            resumed,
            free: None,
        }
    }

    fn shard(&mut self) -> Result<&mut Shard<B>, RunError> {
        self.shard
            .as_mut()
            .ok_or_else(|| RunError::Internal("the shard is running free mode".into()))
    }

    /// After a resume, what the agents that finished `tick` before the crash counted in it;
    /// nothing otherwise.
    fn done_before_resume(&mut self, tick: u64) -> Result<Tally, RunError> {
        let mut tally = Tally::default();
        if std::mem::take(&mut self.resumed) {
            for (_, last) in self.shard()?.done_at(tick) {
                tally += last;
            }
        }
        Ok(tally)
    }
}

impl<B: Backend> Hosting for LocalHosting<B> {
    fn reports_messages(&self) -> bool {
        true
    }

    async fn start_agents(&mut self, mode: Mode) -> Result<StepReport, RunError> {
        let before = match mode {
            Mode::Lockstep => self.done_before_resume(0)?,
            Mode::Free => Tally::default(),
        };
        let mut report = self.shard()?.start_agents(mode).await?;
        report.tally += &before;
        Ok(report)
    }

    async fn run_tick(&mut self, tick: u64, expected: &Expected) -> Result<StepReport, RunError> {
        let before = self.done_before_resume(tick)?;
        let mut report = self.shard()?.run_tick(tick, expected).await?;
        report.tally += &before;
        Ok(report)
    }

    async fn start_free(&mut self) -> Result<StepReport, RunError> {
        self.resumed = false;
        let report = self.start_agents(Mode::Free).await?;
        let mut shard = self
            .shard
            .take()
            .ok_or_else(|| RunError::Internal("free mode started twice".into()))?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let idle = vec![false; shard.feeders()];
        let task = actix::spawn(async move {
            let result = shard.run_free(events_tx, stop_rx).await;
            (shard, result)
        });
        self.free = Some(FreeTask {
            events,
            stop,
            task,
            idle,
        });
        Ok(report)
    }

    async fn free_progress(&mut self, wait: Duration) -> Result<FreeProgress, RunError> {
        let Some(free) = self.free.as_mut() else {
            return Ok(FreeProgress::default());
        };
        let mut report = StepReport::default();
        match tokio::time::timeout(wait, free.events.recv()).await {
            Ok(Some(event)) => free.take(event, &mut report),
            // The shard stopped on its own: an error, which stopping it brings back.
            Ok(None) => {
                let mut rest = self.stop_free().await?;
                rest += report;
                return Ok(FreeProgress {
                    report: rest,
                    idle: false,
                });
            }
            Err(_) => {}
        }
        while let Ok(event) = free.events.try_recv() {
            free.take(event, &mut report);
        }
        Ok(FreeProgress {
            report,
            idle: free.idle.iter().all(|&idle| idle),
        })
    }

    async fn stop_free(&mut self) -> Result<StepReport, RunError> {
        let Some(mut free) = self.free.take() else {
            return Ok(StepReport::default());
        };
        let _ = free.stop.send(true);
        let mut report = StepReport::default();
        while let Some((_, event)) = free.events.recv().await {
            if let ShardEvent::Step(step) = event {
                report += step;
            }
        }
        let (shard, result) = free
            .task
            .await
            .map_err(|e| RunError::Internal(format!("the shard's task ended abnormally: {e}")))?;
        self.shard = Some(shard);
        result?;
        Ok(report)
    }
}
