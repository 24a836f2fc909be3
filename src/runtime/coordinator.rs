//! The coordinator: prepares a run, drives it in lockstep or free mode, decides when to stop,
//! records where the run is (so that `--resume` can continue it), and writes what the run
//! leaves behind.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::agent::StepReport;
use super::liveness::{self, Heartbeat, Holder, LostTo};
use super::reconnect;
use super::shard::{Shard, ShardEvent, ShardOptions};
use super::workers::{Launch, Workers};
use super::{RunError, RunOptions, RunOutcome};
use crate::backend::{Backend, LEASE_HOLDER};
use crate::message::{EntryId, Message};
use crate::report::{MetricSeries, Progress, Summary, TranscriptWriter};
use crate::scenario::{Mode, Scenario};
use crate::tally::Tally;

/// How often a free-mode run trims its stream (when `backend.maxlen` is set).
const TRIM_EVERY: Duration = Duration::from_millis(500);

/// Why a run stopped (`stop_reason` in `summary.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Lockstep: all `ticks` ran.
    Ticks,
    /// Free mode: `duration` elapsed.
    Duration,
    /// `max_messages` were published.
    Budget,
    /// Nothing left to do: a tick published nothing (lockstep), or nothing is in flight (free).
    Quiescent,
    /// Ctrl-C.
    Interrupted,
    /// An error stopped the run.
    Failed,
}

impl StopReason {
    /// `stop_reason` in `summary.json`, one of CONTRACT.md's five: a run an error stopped
    /// was interrupted too (and can be resumed); the summary's `error` says what happened.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Ticks => "ticks",
            StopReason::Duration => "duration",
            StopReason::Budget => "budget",
            StopReason::Quiescent => "quiescent",
            StopReason::Interrupted | StopReason::Failed => "interrupted",
        }
    }

    /// The run's status as its checkpoint records it.
    fn status(self) -> &'static str {
        match self {
            StopReason::Failed => "failed",
            StopReason::Interrupted => "interrupted",
            _ => "finished",
        }
    }

    fn finished(self) -> bool {
        matches!(
            self,
            StopReason::Ticks | StopReason::Duration | StopReason::Budget | StopReason::Quiescent
        )
    }
}

/// Counts over the whole run, and the behaviours' counters tick by tick.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct RunTotals {
    tally: Tally,
    metrics: BTreeMap<String, MetricSeries>,
}

impl RunTotals {
    fn add(&mut self, tally: &Tally, tick: Option<u64>) {
        self.tally += tally;
        for (name, delta) in &tally.metrics {
            let series = self.metrics.entry(name.clone()).or_default();
            match tick {
                Some(t) => series.record_tick(t, *delta),
                None => series.total += delta,
            }
        }
    }
}

/// Where the agents live: in this process, or in worker processes.
enum Hosting<B: Backend> {
    Local(Shard<B>),
    Remote(Workers<B>),
}

impl<B: Backend> Hosting<B> {
    async fn start_agents(&mut self, mode: Mode) -> Result<StepReport, RunError> {
        match self {
            Hosting::Local(shard) => shard.start_agents(mode).await,
            Hosting::Remote(workers) => workers.start_agents().await,
        }
    }

    async fn run_tick(&mut self, tick: u64, expect: u64) -> Result<StepReport, RunError> {
        match self {
            Hosting::Local(shard) => shard.run_tick(tick, expect).await,
            Hosting::Remote(workers) => workers.run_tick(tick, expect).await,
        }
    }

    fn is_remote(&self) -> bool {
        matches!(self, Hosting::Remote(_))
    }
}

/// Where a lockstep run is, as `{stream}:run` records it after every tick.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    /// The last tick completed.
    tick: Option<u64>,
    /// Messages that tick published: what each agent reads in the next tick.
    expect: u64,
    /// The stream's newest entry when that tick ended.
    last_id: String,
    /// How much of the transcript covers the completed ticks.
    transcript_bytes: u64,
    transcript_lines: u64,
    totals: RunTotals,
}

pub(crate) struct Coordinator<'a, B> {
    backend: B,
    scenario: &'a Scenario,
    options: &'a RunOptions,
    totals: RunTotals,
    last_tick: Option<u64>,
    /// Free mode: what was published, with stream ids, for a transcript in stream order
    /// written when the run ends.
    free_published: Vec<(EntryId, Arc<Message>)>,
    /// Lockstep: the stream's newest entry when the last tick ended.
    tick_start: EntryId,
    /// Lockstep: how long each tick (from 1) took in this process.
    tick_seconds: Vec<f64>,
    /// This run, as the stream's lease names it.
    holder: Holder,
    /// How this run lost its lease, if it did: then the keys are no longer its own.
    lost_to: LostTo,
}

impl<'a, B: Backend> Coordinator<'a, B> {
    pub fn new(backend: B, scenario: &'a Scenario, options: &'a RunOptions) -> Self {
        Coordinator {
            backend,
            scenario,
            options,
            totals: RunTotals::default(),
            last_tick: None,
            free_published: Vec::new(),
            tick_start: EntryId::ZERO,
            tick_seconds: Vec::new(),
            holder: Holder::me(),
            lost_to: LostTo::default(),
        }
    }

    /// The error of a run whose lease another run took, if this one's was.
    fn displaced(&self) -> Option<RunError> {
        self.lost_to.borrow().clone().map(RunError::Displaced)
    }

    fn timeout(&self) -> Duration {
        self.scenario.backend.reconnect_timeout
    }

    pub async fn run(mut self) -> Result<RunOutcome, RunError> {
        let scenario = self.scenario;
        // Before the backend is touched: a directory that cannot be made is bad input.
        let run_dir = scenario.run_dir();
        std::fs::create_dir_all(&run_dir).map_err(|e| RunError::Refused {
            message: format!("cannot create the run's directory {}: {e}", run_dir.display()),
            hint: "choose a directory this user can write with --out DIR (or output.dir)".to_string(),
        })?;
        self.refuse_conflicts().await?;
        self.take_lease().await?;
        // Renewed from now on: cleaning up or rebuilding a transcript may take a while.
        let (stop, interrupted) = watch::channel(false);
        let heartbeat = Heartbeat::start(
            self.backend.clone(),
            &self.holder,
            stop.clone(),
            self.lost_to.clone(),
        );
        let prepared = async {
            let checkpoint = self.prepare().await?;
            let transcript = self.open_transcript(&run_dir, checkpoint.as_ref()).await?;
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
        watch_interrupts(stop);
        if let Some(c) = &checkpoint {
            self.totals = c.totals.clone();
            self.last_tick = c.tick;
        }
        let progress = match scenario.mode {
            Mode::Lockstep => Progress::lockstep(scenario.ticks.unwrap_or(0), self.options.quiet),
            Mode::Free => Progress::free(self.options.quiet),
        };

        let started = Instant::now();
        let shard_options = ShardOptions {
            resume: self.options.resume,
            instance: self.options.instance.clone().unwrap_or_else(super::instance_name),
        };
        let hosting = match self.options.workers {
            None => Shard::start(self.backend.clone(), scenario, &scenario.agents, &shard_options)
                .await
                .map(Hosting::Local),
            Some(n) => {
                let launch = if n == 0 {
                    Launch::External
                } else {
                    Launch::Local(n)
                };
                Workers::launch(self.backend.clone(), scenario, launch, self.options.resume)
                    .await
                    .map(Hosting::Remote)
            }
        };
        let outcome = match hosting {
            Ok(mut hosting) => {
                let outcome = match (scenario.mode, &mut hosting) {
                    (Mode::Lockstep, hosting) => {
                        self.lockstep(
                            hosting,
                            checkpoint,
                            &mut transcript,
                            &progress,
                            &interrupted,
                            started,
                        )
                        .await
                    }
                    (Mode::Free, Hosting::Local(shard)) => {
                        self.free(shard, &progress, interrupted, started).await
                    }
                    (Mode::Free, Hosting::Remote(workers)) => {
                        self.free_remote(workers, &progress, interrupted, started).await
                    }
                };
                if let Hosting::Remote(workers) = hosting {
                    workers.finish().await;
                }
                outcome
            }
            Err(e) => Err(e),
        };
        let elapsed = started.elapsed();
        progress.finish();
        // In free mode the transcript is in publication order: stream order.
        let mut published = std::mem::take(&mut self.free_published);
        published.sort_by_key(|(id, _)| *id);
        published.dedup_by_key(|(id, _)| *id);
        if let Err(e) = transcript.write(published.iter().map(|(_, m)| m)) {
            drop(heartbeat);
            self.give_up_lease().await;
            return Err(RunError::output(transcript_path(scenario), e));
        }
        let outcome = match self.displaced() {
            Some(displaced) => Err(displaced),
            None => outcome,
        };
        let (stop_reason, error) = match outcome {
            Ok(reason) => (reason, None),
            Err(e) => (StopReason::Failed, Some(e)),
        };
        self.finish(run_dir, transcript, stop_reason, error, elapsed, heartbeat)
            .await
    }

    /// Refuses to touch keys of the run's names that hold another type: someone else's.
    async fn refuse_conflicts(&self) -> Result<(), RunError> {
        let conflicts =
            reconnect::retry(&self.backend, self.timeout(), || self.backend.key_conflicts()).await?;
        if let Some(c) = conflicts.first() {
            return Err(RunError::Refused {
                message: format!(
                    "key {:?} already holds a {}, where this run keeps a {}: another program (or run) uses it",
                    c.key, c.found, c.expected
                ),
                hint: "choose another backend.stream (or backend.cache_prefix) for this scenario".to_string(),
            });
        }
        Ok(())
    }

    /// Takes the stream's lease, or refuses to run while another run of the stream is going:
    /// cleaning up or resuming would pull its keys from under it.
    async fn take_lease(&self) -> Result<(), RunError> {
        let holder = &self.holder;
        let taken = reconnect::retry(&self.backend, self.timeout(), || {
            liveness::take(&self.backend, holder)
        })
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

    async fn give_up_lease(&self) {
        if let Err(e) = self.backend.release_lease(&self.holder.to_value()).await {
            tracing::debug!("could not give the stream's lease up (it lapses by itself): {e}");
        }
    }

    /// Checks the keys, cleans up or refuses to run over an earlier run, and records the
    /// start. On `--resume`, returns the checkpoint to continue from.
    async fn prepare(&mut self) -> Result<Option<Checkpoint>, RunError> {
        let scenario = self.scenario;
        let keys = &scenario.backend.keys;
        let fields =
            reconnect::retry(&self.backend, self.timeout(), || self.backend.read_checkpoint()).await?;
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let fingerprint = scenario.fingerprint();
        let mut checkpoint = None;
        if self.options.resume {
            if fields.is_empty() {
                return Err(RunError::Refused {
                    message: format!(
                        "nothing to resume: there is no run of stream {:?} on this backend",
                        keys.stream
                    ),
                    hint: "run it without --resume to start it".to_string(),
                });
            }
            if field("fingerprint").as_deref() != Some(fingerprint.as_str()) {
                return Err(RunError::Refused {
                    message: format!(
                        "the scenario changed since the run of stream {:?} started; resuming it would not give the transcript of either",
                        keys.stream
                    ),
                    hint: "resume with the scenario (and --set, --seed, environment) the run started with, or start afresh without --resume".to_string(),
                });
            }
            if field("status").as_deref() == Some("finished") {
                return Err(RunError::Refused {
                    message: format!(
                        "the run of stream {:?} finished; there is nothing to resume",
                        keys.stream
                    ),
                    hint: "run it without --resume to start it again".to_string(),
                });
            }
            if scenario.mode == Mode::Lockstep {
                checkpoint =
                    match field("checkpoint") {
                        Some(json) => Some(serde_json::from_str::<Checkpoint>(&json).map_err(|e| {
                            RunError::Refused {
                                message: format!("the run's checkpoint is unreadable: {e}"),
                                hint: "start afresh without --resume".to_string(),
                            }
                        })?),
                        None => Some(Checkpoint::default()),
                    };
            }
        } else if scenario.backend.cleanup.before() {
            reconnect::retry(&self.backend, self.timeout(), || self.backend.cleanup()).await?;
        } else if !fields.is_empty() {
            return Err(RunError::Refused {
                message: format!(
                    "the keys of an earlier run of stream {:?} are still there (status: {}), and backend.cleanup = {:?} keeps them",
                    keys.stream,
                    field("status").unwrap_or_else(|| "unknown".into()),
                    format!("{:?}", scenario.backend.cleanup).to_lowercase()
                ),
                hint: format!(
                    "continue it with --resume, delete it with `agora cleanup --stream {}`, or set backend.cleanup = \"before\"",
                    keys.stream
                ),
            });
        }
        let start = [
            ("status", "running".to_string()),
            ("scenario", scenario.name.clone()),
            ("fingerprint", fingerprint),
            ("mode", scenario.mode.as_str().to_string()),
            ("seed", scenario.seed.to_string()),
            // Lets this run take its lease back after it lapsed (a long outage), as long as
            // no other run has started since.
            (LEASE_HOLDER, self.holder.to_value()),
        ];
        reconnect::retry(&self.backend, self.timeout(), || {
            self.backend.write_checkpoint(&start)
        })
        .await?;
        Ok(checkpoint)
    }

    /// The transcript to write to: a fresh one, or on resume the interrupted one, cut back to
    /// what the checkpoint covers (or rebuilt from the stream when the file is gone).
    async fn open_transcript(
        &mut self,
        run_dir: &Path,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<TranscriptWriter, RunError> {
        let fresh = || TranscriptWriter::create(run_dir).map_err(|e| RunError::output(run_dir, e));
        if !self.options.resume {
            return fresh();
        }
        let Some(c) = checkpoint else {
            // Free mode: the transcript is rebuilt from the stream.
            self.free_published = self.published_on_stream(EntryId::ZERO, |_| true).await?;
            if self.scenario.backend.maxlen > 0 {
                tracing::warn!(
                    "the stream is trimmed (backend.maxlen), so the transcript keeps only what it still holds"
                );
            }
            return fresh();
        };
        if let Some(w) = TranscriptWriter::resume(run_dir, c.transcript_bytes, c.transcript_lines)
            .map_err(|e| RunError::output(run_dir, e))?
        {
            return Ok(w);
        }
        // The interrupted run's transcript is not here: rebuild it from the stream, if the
        // stream still holds everything.
        let Some(done) = c.tick else { return fresh() };
        let mut messages: Vec<Arc<Message>> = self
            .published_on_stream(EntryId::ZERO, |m| m.tick.is_some_and(|t| t <= done))
            .await?
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        if messages.len() as u64 != c.transcript_lines {
            return Err(RunError::Refused {
                message: format!(
                    "cannot resume: {} is missing, and the stream no longer holds every message to rebuild it",
                    transcript_path(self.scenario).display()
                ),
                hint: "resume from the folder the run was started in, or start afresh".to_string(),
            });
        }
        messages.sort_by(|a, b| a.lockstep_key().cmp(&b.lockstep_key()));
        let mut w = fresh()?;
        w.write(&messages).map_err(|e| RunError::output(run_dir, e))?;
        Ok(w)
    }

    /// Agora messages on the stream after `after` that `keep` accepts, in stream order.
    async fn published_on_stream(
        &self,
        after: EntryId,
        keep: impl Fn(&Message) -> bool,
    ) -> Result<Vec<(EntryId, Arc<Message>)>, RunError> {
        let mut out = Vec::new();
        let mut from = after;
        loop {
            let batch =
                reconnect::retry(&self.backend, self.timeout(), || self.backend.range(from, 10_000)).await?;
            let Some(last) = batch.last() else { break };
            from = last.id;
            for d in batch {
                if let Some(m) = d.message()
                    && m.seq.is_some()
                    && keep(m)
                {
                    out.push((d.id, m.clone()));
                }
            }
        }
        Ok(out)
    }

    /// Tick 0 runs `on_start`; tick `t` hands every agent what tick `t - 1` published.
    async fn lockstep(
        &mut self,
        hosting: &mut Hosting<B>,
        checkpoint: Option<Checkpoint>,
        transcript: &mut TranscriptWriter,
        progress: &Progress,
        interrupted: &watch::Receiver<bool>,
        started: Instant,
    ) -> Result<StopReason, RunError> {
        let scenario = self.scenario;
        let ticks = scenario.ticks.unwrap_or(0);
        let resumed = checkpoint.clone().unwrap_or_default();
        self.tick_start = resumed.last_id.parse().unwrap_or(EntryId::ZERO);
        let mut expect = resumed.expect;
        let first_tick = match resumed.tick {
            Some(t) => t + 1,
            None => {
                let mut totals = self.done_before_resume(hosting, 0).await?;
                totals += hosting.start_agents(Mode::Lockstep).await?;
                self.messages_from_stream(hosting, 0, &mut totals).await?;
                expect = self.record_tick(0, totals, transcript).await?;
                progress.update(
                    Some(0),
                    self.totals.tally.published,
                    self.totals.tally.deliveries,
                    started.elapsed(),
                );
                1
            }
        };
        for tick in first_tick..=ticks {
            if expect == 0 && !self.options.run_all_ticks {
                return Ok(StopReason::Quiescent);
            }
            let tick_started = Instant::now();
            if self.totals.tally.published >= scenario.max_messages {
                return Ok(StopReason::Budget);
            }
            if *interrupted.borrow() {
                return Ok(StopReason::Interrupted);
            }
            let mut totals = if tick == first_tick {
                self.done_before_resume(hosting, tick).await?
            } else {
                StepReport::default()
            };
            totals += hosting.run_tick(tick, expect).await?;
            self.messages_from_stream(hosting, tick, &mut totals).await?;
            expect = self.record_tick(tick, totals, transcript).await?;
            progress.update(
                Some(tick),
                self.totals.tally.published,
                self.totals.tally.deliveries,
                started.elapsed(),
            );
            self.trim().await?;
            self.tick_seconds.push(tick_started.elapsed().as_secs_f64());
        }
        Ok(StopReason::Ticks)
    }

    /// With worker processes, the tick's messages come from the stream (workers report only
    /// counts): everything published with this tick since the last tick ended.
    async fn messages_from_stream(
        &self,
        hosting: &Hosting<B>,
        tick: u64,
        totals: &mut StepReport,
    ) -> Result<(), RunError> {
        if hosting.is_remote() {
            totals.published = self
                .published_on_stream(self.tick_start, |m| m.tick == Some(tick))
                .await?;
        }
        Ok(())
    }

    /// After a resume: what the agents that finished `tick` before the crash did in it
    /// (their messages are on the stream, their counts in their saved records). Workers
    /// report this themselves.
    async fn done_before_resume(&self, hosting: &Hosting<B>, tick: u64) -> Result<StepReport, RunError> {
        let mut totals = StepReport::default();
        let Hosting::Local(shard) = hosting else {
            return Ok(totals);
        };
        if !self.options.resume {
            return Ok(totals);
        }
        let done = shard.done_at(tick);
        if done.is_empty() {
            return Ok(totals);
        }
        for (_, tally) in &done {
            totals.tally += *tally;
        }
        let names: std::collections::HashSet<&str> = done.iter().map(|(a, _)| &*a.name).collect();
        totals.published = self
            .published_on_stream(self.tick_start, |m| {
                m.tick == Some(tick) && names.contains(&*m.sender_id)
            })
            .await?;
        tracing::info!(
            tick,
            agents = done.len(),
            "resuming a tick that some agents had finished"
        );
        Ok(totals)
    }

    /// Adds a tick's results to the totals and its messages, sorted, to the transcript, and
    /// records the checkpoint. Returns how many messages the tick published.
    async fn record_tick(
        &mut self,
        tick: u64,
        totals: StepReport,
        transcript: &mut TranscriptWriter,
    ) -> Result<u64, RunError> {
        if let Some(displaced) = self.displaced() {
            // The run's record (and perhaps its folder) is another run's now.
            return Err(displaced);
        }
        self.totals.add(&totals.tally, Some(tick));
        self.last_tick = Some(tick);
        let mut published: Vec<Arc<Message>> = totals.published.into_iter().map(|(_, m)| m).collect();
        published.sort_by(|a, b| a.lockstep_key().cmp(&b.lockstep_key()));
        published.dedup_by(|b, a| a.lockstep_key() == b.lockstep_key());
        let path = transcript_path(self.scenario);
        transcript
            .write(&published)
            .map_err(|e| RunError::output(&path, e))?;
        transcript.flush().map_err(|e| RunError::output(&path, e))?;
        let last_id = reconnect::retry(&self.backend, self.timeout(), || self.backend.last_id()).await?;
        self.tick_start = last_id;
        let checkpoint = Checkpoint {
            tick: Some(tick),
            expect: published.len() as u64,
            last_id: last_id.to_string(),
            transcript_bytes: transcript.bytes(),
            transcript_lines: transcript.lines(),
            totals: self.totals.clone(),
        };
        let json = serde_json::to_string(&checkpoint).map_err(|e| RunError::Internal(e.to_string()))?;
        if let Some(displaced) = self.displaced() {
            return Err(displaced);
        }
        let fields = [("tick", tick.to_string()), ("checkpoint", json)];
        reconnect::retry(&self.backend, self.timeout(), || {
            self.backend.write_checkpoint(&fields)
        })
        .await?;
        Ok(published.len() as u64)
    }

    /// Agents run as fast as messages arrive until the duration, the budget, quiescence or
    /// Ctrl-C stops them.
    async fn free(
        &mut self,
        shard: &mut Shard<B>,
        progress: &Progress,
        mut interrupted: watch::Receiver<bool>,
        started: Instant,
    ) -> Result<StopReason, RunError> {
        let scenario = self.scenario;
        if self.options.resume {
            self.totals.tally.published = self.free_published.len() as u64;
        }
        let start = shard.start_agents(Mode::Free).await?;
        self.totals.add(&start.tally, None);
        self.free_published.extend(start.published);

        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let groups: Vec<String> = scenario
            .agents
            .iter()
            .map(|a| scenario.backend.keys.group(&a.name))
            .collect();
        let feeding = shard.run_free(events_tx, stop_rx);
        let deadline = scenario.duration.map(|d| tokio::time::Instant::now() + d);
        let mut reason: Option<StopReason> = None;
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        let mut last_trim = Instant::now();
        let stop = |why: StopReason, reason: &mut Option<StopReason>| {
            if reason.is_none() {
                *reason = Some(why);
                let _ = stop_tx.send(true);
            }
        };
        if self.totals.tally.published >= scenario.max_messages {
            stop(StopReason::Budget, &mut reason);
        }
        let watching = async {
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Some(ShardEvent::Step(report)) => {
                            self.totals.add(&report.tally, None);
                            self.free_published.extend(report.published);
                            if self.totals.tally.published >= scenario.max_messages {
                                stop(StopReason::Budget, &mut reason);
                            }
                        }
                        Some(ShardEvent::Idle) => {
                            if reason.is_none() && self.nothing_in_flight(&groups).await? {
                                stop(StopReason::Quiescent, &mut reason);
                            }
                        }
                        None => break,
                    },
                    _ = sleep_until(deadline), if reason.is_none() => stop(StopReason::Duration, &mut reason),
                    changed = interrupted.changed(), if reason.is_none() => {
                        if changed.is_ok() && *interrupted.borrow() {
                            stop(StopReason::Interrupted, &mut reason);
                        }
                    }
                    _ = ticker.tick() => {
                        progress.update(None, self.totals.tally.published, self.totals.tally.deliveries, started.elapsed());
                        if last_trim.elapsed() >= TRIM_EVERY {
                            self.trim().await?;
                            last_trim = Instant::now();
                        }
                    }
                }
            }
            Ok::<_, RunError>(reason)
        };
        let (fed, watched) = tokio::join!(feeding, watching);
        fed?;
        Ok(watched?.unwrap_or(StopReason::Quiescent))
    }

    /// Free mode with worker processes: they report progress; the coordinator decides when
    /// to stop, as in [`Coordinator::free`].
    async fn free_remote(
        &mut self,
        workers: &mut Workers<B>,
        progress: &Progress,
        mut interrupted: watch::Receiver<bool>,
        started: Instant,
    ) -> Result<StopReason, RunError> {
        let scenario = self.scenario;
        let groups: Vec<String> = scenario
            .agents
            .iter()
            .map(|a| scenario.backend.keys.group(&a.name))
            .collect();
        workers.start_free().await?;
        let deadline = scenario.duration.map(|d| tokio::time::Instant::now() + d);
        let mut idle = vec![false; workers.shards() as usize];
        let mut last_trim = Instant::now();
        let reason = loop {
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                break StopReason::Duration;
            }
            if *interrupted.borrow_and_update() {
                break StopReason::Interrupted;
            }
            let counts = workers.progress(&mut idle).await?;
            let busy = counts.deliveries > 0 || counts.published > 0;
            self.add_counts(counts);
            progress.update(
                None,
                self.totals.tally.published,
                self.totals.tally.deliveries,
                started.elapsed(),
            );
            if self.totals.tally.published >= scenario.max_messages {
                break StopReason::Budget;
            }
            if !busy && idle.iter().all(|&i| i) && self.nothing_in_flight(&groups).await? {
                break StopReason::Quiescent;
            }
            if last_trim.elapsed() >= TRIM_EVERY {
                self.trim().await?;
                last_trim = Instant::now();
            }
        };
        let last = workers.stop().await?;
        self.add_counts(last);
        // The workers report counts; the messages come from the stream, in its order.
        self.free_published = self.published_on_stream(EntryId::ZERO, |_| true).await?;
        self.totals.tally.published = self.free_published.len() as u64;
        Ok(reason)
    }

    fn add_counts(&mut self, counts: Tally) {
        self.totals.add(&counts, None);
    }

    /// Trims the stream towards `backend.maxlen` (when set), sparing what some group has not
    /// read and acknowledged.
    async fn trim(&self) -> Result<(), RunError> {
        let maxlen = self.scenario.backend.maxlen;
        if maxlen > 0 {
            let removed =
                reconnect::retry(&self.backend, self.timeout(), || self.backend.trim(maxlen)).await?;
            tracing::debug!(removed, maxlen, "trimmed the stream");
        }
        Ok(())
    }

    /// Whether every agent's group has read and acknowledged everything on the stream.
    async fn nothing_in_flight(&self, groups: &[String]) -> Result<bool, RunError> {
        let infos = reconnect::retry(&self.backend, self.timeout(), || self.backend.groups()).await?;
        Ok(groups.iter().all(|g| {
            infos
                .iter()
                .find(|i| &i.name == g)
                .is_some_and(|i| i.pending == 0 && i.lag.is_none_or(|lag| lag == 0))
        }))
    }

    async fn finish(
        mut self,
        run_dir: PathBuf,
        transcript: TranscriptWriter,
        stop_reason: StopReason,
        error: Option<RunError>,
        elapsed: Duration,
        heartbeat: Heartbeat,
    ) -> Result<RunOutcome, RunError> {
        let scenario = self.scenario;
        if let Some(displaced) = self.displaced() {
            // Another run has the stream's keys, and may be writing into the same folder:
            // leave everything to it.
            transcript.abandon();
            return Err(displaced);
        }
        let (transcript_path, sha) = transcript
            .finish()
            .map_err(|e| RunError::output(run_dir.join(crate::report::transcript::FILE_NAME), e))?;

        let dead_letters_path = if self.totals.tally.dead_letters > 0 {
            let path = run_dir.join("dead_letters.jsonl");
            let read = tokio::time::timeout(Duration::from_secs(5), self.backend.dead_letters()).await;
            match read.unwrap_or_else(|_| Err(crate::backend::BackendError::command("timed out"))) {
                Ok(entries) => {
                    write_dead_letters(&path, &entries).map_err(|e| RunError::output(&path, e))?;
                    Some(path)
                }
                Err(e) => {
                    tracing::warn!("could not read the dead letters back: {e}");
                    None
                }
            }
        } else {
            None
        };

        let mut metrics = std::mem::take(&mut self.totals.metrics);
        for series in metrics.values_mut() {
            series.finish();
        }
        let elapsed_s = elapsed.as_secs_f64();
        let summary = Summary {
            scenario: scenario.name.clone(),
            seed: scenario.seed,
            mode: scenario.mode.as_str().to_string(),
            backend: self.backend.kind().to_string(),
            agents: scenario.agents.len() as u64,
            ticks: match scenario.mode {
                Mode::Lockstep => self.last_tick,
                Mode::Free => None,
            },
            messages: self.totals.tally.published,
            deliveries: self.totals.tally.deliveries,
            handled: self.totals.tally.handled,
            dead_letters: self.totals.tally.dead_letters,
            behaviour_failures: self.totals.tally.failures,
            elapsed_s,
            deliveries_per_s: self.totals.tally.deliveries as f64 / elapsed_s.max(1e-9),
            stop_reason: stop_reason.as_str().to_string(),
            error: error.as_ref().map(ToString::to_string),
            transcript_sha256: sha,
            metrics,
            tick_seconds: std::mem::take(&mut self.tick_seconds),
        };
        let summary_path = run_dir.join("summary.json");
        let json = serde_json::to_string_pretty(&summary).map_err(|e| RunError::Internal(e.to_string()))?;
        std::fs::write(&summary_path, json + "\n").map_err(|e| RunError::output(&summary_path, e))?;

        // The lease is held (renewed) until the end is recorded and the keys perhaps deleted;
        // a run displaced meanwhile leaves them alone.
        if self.displaced().is_none() {
            self.record_end(stop_reason, error.as_ref()).await?;
            drop(heartbeat);
            self.give_up_lease().await;
        }
        Ok(RunOutcome {
            summary,
            run_dir,
            transcript: transcript_path,
            summary_path,
            dead_letters_path,
            error,
        })
    }

    /// Marks the run's end in its keys and deletes them if the scenario says so.
    async fn record_end(&self, stop_reason: StopReason, error: Option<&RunError>) -> Result<(), RunError> {
        // Only a finished run is marked so; an interrupted or failed one stays resumable.
        if let Err(e) = self
            .backend
            .write_checkpoint(&[("status", stop_reason.status().to_string())])
            .await
        {
            // After losing the backend this is expected, and the run's error says it all.
            if error.is_some_and(RunError::backend_unavailable) {
                tracing::debug!("could not record the run's end: {e}");
            } else {
                tracing::warn!("could not record the run's end: {e}");
            }
        }
        if self.scenario.backend.cleanup.after() {
            if stop_reason.finished() {
                self.backend.cleanup().await?;
            } else {
                tracing::warn!(
                    "the run did not finish, so its keys were kept for --resume (cleanup = \"after\" applies to finished runs)"
                );
            }
        }
        Ok(())
    }
}

fn transcript_path(scenario: &Scenario) -> PathBuf {
    scenario.run_dir().join(crate::report::transcript::FILE_NAME)
}

fn write_dead_letters(path: &Path, entries: &[Vec<(String, String)>]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for fields in entries {
        let object: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        writeln!(out, "{}", serde_json::Value::Object(object))?;
    }
    out.flush()
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Turns true on Ctrl-C. A second Ctrl-C aborts at once.
/// Turns the first Ctrl-C into `stop`; a second one aborts.
fn watch_interrupts(tx: watch::Sender<bool>) {
    actix::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("interrupted: stopping at the next safe point (Ctrl-C again to abort)");
            let _ = tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
}
