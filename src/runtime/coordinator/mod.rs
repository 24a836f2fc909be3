//! The coordinator: prepares a run, drives it in lockstep or free mode, decides when to stop,
//! records where the run is (so that `--resume` can continue it), and writes what the run
//! leaves behind.
//!
//! - [`record`]: the run's record on the backend, and the checks before a run starts.
//! - [`lockstep`]: tick after tick, with a barrier between them.
//! - [`free`]: agents as fast as messages arrive, until something stops them.
//! - [`outputs`]: the transcript, the summary, the dead letters, the run's end.

mod free;
mod lockstep;
mod outputs;
mod prepare;
mod record;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use self::record::{Checkpoint, RunTotals};
use super::distributed::{Launch, Workers};
use super::folder::{Claim, RunFolder};
use super::hosting::{Hosting, LocalHosting};
use super::liveness::{Heartbeat, Holder, LostTo};
use super::model::Recording;
use super::observer::RunProgress;
use super::reconnect::Reconnect;
use super::shard::{Shard, ShardOptions};
use super::{RunError, RunOptions, RunOutcome};
use crate::backend::Backend;
use crate::message::{EntryId, Message};
use crate::report::{StopReason, TidyWriter, TranscriptWriter};
use crate::scenario::{Mode, Scenario};
use crate::tally::Tally;

pub(crate) struct Coordinator<'a, B> {
    backend: B,
    scenario: &'a Scenario,
    options: &'a RunOptions,
    reconnect: Reconnect,
    totals: RunTotals,
    last_tick: Option<u64>,
    /// Free mode: what was published, with stream ids, for a transcript in stream order
    /// written when the run ends.
    free_published: Vec<(EntryId, Arc<Message>)>,
    /// Lockstep: the stream's newest entry when the last tick ended.
    tick_start: EntryId,
    /// `metrics.csv` and `agents.csv`, once the run has started.
    tidy: Option<TidyWriter>,
    /// Free mode: what was reported in the current second, and which second that is.
    free_bucket: Tally,
    free_second: u64,
    /// With a sparse network: each agent's last reported values, for the degree classes'
    /// means (an agent reports in the ticks it steps, and keeps its value in between).
    last_values: Tally,
    /// Free mode, resumed: the seconds the interrupted run recorded.
    free_offset: u64,
    /// When the agents started, for rates and elapsed time.
    started: Instant,
    /// How long the run had run before this process resumed it.
    elapsed_before: Duration,
    /// This run, as the stream's lease names it.
    holder: Holder,
    /// How this run lost its lease, if it did: then the keys are no longer its own.
    lost_to: LostTo,
    /// Model reporters named like the run's own metrics, warned about once each.
    shadowing: std::collections::BTreeSet<String>,
}

/// What a run needs to stop: `stop` asks it to (the lease's heartbeat does when another run
/// takes over), `stopping` tells it it was asked (Ctrl-C, or the heartbeat).
pub(crate) struct StopSignal {
    pub stop: watch::Sender<bool>,
    pub stopping: watch::Receiver<bool>,
}

impl<'a, B: Backend> Coordinator<'a, B> {
    pub fn new(backend: B, scenario: &'a Scenario, options: &'a RunOptions, reconnect: Reconnect) -> Self {
        Coordinator {
            backend,
            scenario,
            options,
            reconnect,
            totals: RunTotals::default(),
            last_tick: None,
            free_published: Vec::new(),
            tick_start: EntryId::ZERO,
            tidy: None,
            free_bucket: Tally::default(),
            free_second: 0,
            last_values: Tally::default(),
            free_offset: 0,
            started: Instant::now(),
            elapsed_before: Duration::ZERO,
            holder: Holder::me(),
            lost_to: LostTo::default(),
            shadowing: std::collections::BTreeSet::new(),
        }
    }

    /// The error of a run whose lease another run took, if this one's was.
    fn displaced(&self) -> Option<RunError> {
        self.lost_to.borrow().clone().map(RunError::Displaced)
    }

    /// Runs the scenario until it ends or `signal` stops it, and writes its outputs.
    ///
    /// # Errors
    ///
    /// A run that cannot start (bad input given the backend's state, the backend unusable):
    /// nothing was run. A run that started and failed returns `Ok` with the error in
    /// [`RunOutcome::error`], its outputs written.
    pub async fn run(mut self, signal: StopSignal) -> Result<RunOutcome, RunError> {
        let run_dir = self.scenario.run_dir();
        let claim = Claim {
            scenario: &self.scenario.name,
            fingerprint: self.scenario.fingerprint(),
            overwrite: self.options.overwrite,
            resume: self.options.resume,
            resumable: self.scenario.backend.kind == crate::scenario::BackendKind::Redis,
        };
        let recording = self.read_recording(&run_dir)?;
        let mut folder = RunFolder::claim(&run_dir, &claim)?;
        self.preflight().await?;
        self.probe_models().await?;
        self.take_lease().await?;
        // Renewed from now on: cleaning up or rebuilding a transcript may take a while.
        let heartbeat = Heartbeat::start(
            self.backend.clone(),
            &self.holder,
            signal.stop.clone(),
            self.lost_to.clone(),
        );
        let prepared = async {
            let checkpoint = self.prepare().await?;
            // The first write into the folder: nothing of an earlier run has moved before
            // this run could start.
            folder.take_over()?;
            let transcript = self.open_transcript(&run_dir, checkpoint.as_ref()).await?;
            self.open_tidy(&run_dir, checkpoint.as_ref())?;
            self.write_network(&run_dir)?;
            Ok((checkpoint, transcript))
        }
        .await;
        let (checkpoint, mut transcript) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                drop(heartbeat);
                self.give_up_lease().await;
                return Err(e);
            }
        };
        folder.keep(!self.options.resume);
        if let Some(c) = &checkpoint {
            self.totals = c.totals.clone();
            self.last_tick = c.tick;
        }
        self.started = Instant::now();
        if let Some(recording) = &recording {
            tracing::info!(
                "answering the model's requests from {} recorded exchanges",
                recording.len()
            );
        }
        let outcome = self
            .host_and_drive(checkpoint, recording, &mut transcript, &signal.stopping)
            .await;
        let elapsed = self.elapsed();
        if let Err(e) = self.write_free_transcript(&mut transcript) {
            drop(heartbeat);
            self.give_up_lease().await;
            return Err(e);
        }
        let outcome = match self.displaced() {
            Some(displaced) => Err(displaced),
            None => outcome,
        };
        let (stop_reason, error) = match outcome {
            Ok(reason) => (reason, None),
            Err(e) => (StopReason::Failed, Some(e)),
        };
        let outcome = self
            .finish(run_dir, transcript, stop_reason, error, elapsed, heartbeat)
            .await;
        drop(folder);
        outcome
    }

    /// The recording `--replay` names, read and checked before anything is written.
    fn read_recording(&self, run_dir: &std::path::Path) -> Result<Option<Arc<Recording>>, RunError> {
        let Some(replay) = self.options.replay.as_deref() else {
            return Ok(None);
        };
        // The run writes its own llm.jsonl: replaying the one in its folder would write over
        // the only copy of the recording, and a replay that fails would leave it empty.
        if same_file(replay, &run_dir.join(outputs::LLM_FILE)) {
            return Err(RunError::Refused {
                message: format!(
                    "--replay {}: that is the llm.jsonl this run would write over",
                    replay.display()
                ),
                hint: "copy the recording elsewhere first (cp it to recorded.llm.jsonl, say) and replay that, or give the replay its own folder with --out DIR".into(),
            });
        }
        Recording::read(replay).map(|r| Some(Arc::new(r)))
    }

    /// Starts the agents where they live (here, or in worker processes) and drives them.
    async fn host_and_drive(
        &mut self,
        checkpoint: Option<Checkpoint>,
        recording: Option<Arc<Recording>>,
        transcript: &mut TranscriptWriter,
        stopping: &watch::Receiver<bool>,
    ) -> Result<StopReason, RunError> {
        let scenario = self.scenario;
        let Some(n) = self.options.workers else {
            let options = ShardOptions {
                resume: self.options.resume,
                instance: self.options.instance.clone().unwrap_or_else(super::instance_name),
                reconnect: self.reconnect.clone(),
                replay: recording,
                processes: 1,
                agent_threads: self.options.agent_threads,
            };
            let shard = Shard::start(self.backend.clone(), scenario, &scenario.agents, &options).await?;
            let mut hosting = LocalHosting::new(shard, self.options.resume);
            return self.drive(&mut hosting, checkpoint, transcript, stopping).await;
        };
        let Some(transport) = self.backend.transport() else {
            return Err(RunError::Usage(
                "--workers: worker processes share the agents of a run through Redis; add --backend redis"
                    .into(),
            ));
        };
        let launch = if n == 0 {
            Launch::External
        } else {
            Launch::Local(n)
        };
        let launching = Workers::launch(
            self.backend.clone(),
            transport,
            self.reconnect.clone(),
            scenario,
            launch,
            self.options.resume,
            self.options.replay.as_deref(),
        );
        // Ctrl-C while the run waits for its workers stops it there: no agent has stepped,
        // and the workers started here go when this process does.
        let mut asked = stopping.clone();
        let mut workers = tokio::select! {
            launched = launching => launched?,
            Ok(_) = asked.wait_for(|stop| *stop) => return Ok(StopReason::Interrupted),
        };
        let outcome = self.drive(&mut workers, checkpoint, transcript, stopping).await;
        workers.finish().await;
        outcome
    }

    async fn drive<H: Hosting>(
        &mut self,
        hosting: &mut H,
        checkpoint: Option<Checkpoint>,
        transcript: &mut TranscriptWriter,
        stopping: &watch::Receiver<bool>,
    ) -> Result<StopReason, RunError> {
        match self.scenario.mode {
            Mode::Lockstep => self.lockstep(hosting, checkpoint, transcript, stopping).await,
            Mode::Free => self.free(hosting, stopping).await,
        }
    }

    /// Tells the observer how far the run has got.
    fn report_progress(&self, tick: Option<u64>) {
        self.reconnect.observer().progress(&RunProgress {
            tick,
            messages: self.totals.tally.published,
            deliveries: self.totals.tally.deliveries,
            elapsed: self.elapsed(),
        });
    }

    /// How long the run has run: in this process, and before it was resumed.
    fn elapsed(&self) -> Duration {
        self.elapsed_before + self.started.elapsed()
    }
}

/// Whether `a` and `b` name the same existing file.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
