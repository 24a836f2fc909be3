//! The coordinator: prepares a run, drives it in lockstep or free mode, decides when to stop,
//! and writes what the run leaves behind.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::shard::{Shard, ShardEvent, Totals};
use super::{RunError, RunOptions, RunOutcome};
use crate::backend::Backend;
use crate::message::{EntryId, Message};
use crate::report::{MetricSeries, Progress, Summary, TranscriptWriter};
use crate::scenario::{Mode, Scenario};

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
    /// An error stopped the run; `summary.json` says which.
    Failed,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Ticks => "ticks",
            StopReason::Duration => "duration",
            StopReason::Budget => "budget",
            StopReason::Quiescent => "quiescent",
            StopReason::Interrupted => "interrupted",
            StopReason::Failed => "failed",
        }
    }
}

/// Counts over the whole run.
#[derive(Debug, Default)]
struct RunTotals {
    messages: u64,
    deliveries: u64,
    handled: u64,
    dead_letters: u64,
    failures: u64,
    metrics: BTreeMap<String, MetricSeries>,
    last_tick: Option<u64>,
}

impl RunTotals {
    fn add(&mut self, totals: &Totals, tick: Option<u64>) {
        self.messages += totals.published.len() as u64;
        self.deliveries += totals.deliveries;
        self.handled += totals.handled;
        self.dead_letters += totals.dead_letters;
        self.failures += totals.failures;
        for (name, delta) in &totals.metrics {
            let series = self.metrics.entry(name.clone()).or_default();
            match tick {
                Some(t) => series.record_tick(t, *delta),
                None => series.total += delta,
            }
        }
    }
}

pub(crate) struct Coordinator<'a, B> {
    backend: B,
    scenario: &'a Scenario,
    options: &'a RunOptions,
    totals: RunTotals,
    /// Free mode: what was published, with stream ids, for a transcript in stream order
    /// written when the run ends.
    free_published: Vec<(EntryId, Arc<Message>)>,
}

impl<'a, B: Backend> Coordinator<'a, B> {
    pub fn new(backend: B, scenario: &'a Scenario, options: &'a RunOptions) -> Self {
        Coordinator {
            backend,
            scenario,
            options,
            totals: RunTotals::default(),
            free_published: Vec::new(),
        }
    }

    pub async fn run(mut self) -> Result<RunOutcome, RunError> {
        let scenario = self.scenario;
        if !self.options.resume && scenario.backend.cleanup.before() {
            self.backend.cleanup().await?;
        }
        let run_dir = scenario.run_dir();
        std::fs::create_dir_all(&run_dir).map_err(|e| RunError::output(&run_dir, e))?;
        let mut transcript = TranscriptWriter::create(&run_dir).map_err(|e| RunError::output(&run_dir, e))?;
        let interrupted = watch_interrupts();
        let progress = match scenario.mode {
            Mode::Lockstep => Progress::lockstep(scenario.ticks.unwrap_or(0), self.options.quiet),
            Mode::Free => Progress::free(self.options.quiet),
        };

        let started = Instant::now();
        let outcome = match Shard::start(
            self.backend.clone(),
            scenario,
            &scenario.agents,
            self.options.resume,
        )
        .await
        {
            Ok(mut shard) => match scenario.mode {
                Mode::Lockstep => {
                    self.lockstep(&mut shard, &mut transcript, &progress, &interrupted, started)
                        .await
                }
                Mode::Free => self.free(shard, &progress, interrupted, started).await,
            },
            Err(e) => Err(e),
        };
        let elapsed = started.elapsed();
        progress.finish();
        // In free mode the transcript is in publication order: stream order.
        let mut published = std::mem::take(&mut self.free_published);
        published.sort_by_key(|(id, _)| *id);
        transcript
            .write(published.iter().map(|(_, m)| m))
            .map_err(|e| RunError::output(transcript_path(scenario), e))?;
        let (stop_reason, error) = match outcome {
            Ok(reason) => (reason, None),
            Err(e) => (StopReason::Failed, Some(e)),
        };
        self.finish(run_dir, transcript, stop_reason, error, elapsed)
            .await
    }

    /// Tick 0 runs `on_start`; tick `t` hands every agent what tick `t - 1` published.
    async fn lockstep(
        &mut self,
        shard: &mut Shard<B>,
        transcript: &mut TranscriptWriter,
        progress: &Progress,
        interrupted: &watch::Receiver<bool>,
        started: Instant,
    ) -> Result<StopReason, RunError> {
        let scenario = self.scenario;
        let ticks = scenario.ticks.unwrap_or(0);
        let start = shard.start_agents(Mode::Lockstep).await?;
        let mut expect = self.record_tick(0, start, transcript)?;
        progress.update(
            Some(0),
            self.totals.messages,
            self.totals.deliveries,
            started.elapsed(),
        );
        for tick in 1..=ticks {
            if expect == 0 {
                return Ok(StopReason::Quiescent);
            }
            if self.totals.messages >= scenario.max_messages {
                return Ok(StopReason::Budget);
            }
            if *interrupted.borrow() {
                return Ok(StopReason::Interrupted);
            }
            let totals = shard.run_tick(tick, expect).await?;
            expect = self.record_tick(tick, totals, transcript)?;
            self.trim().await?;
            progress.update(
                Some(tick),
                self.totals.messages,
                self.totals.deliveries,
                started.elapsed(),
            );
        }
        Ok(StopReason::Ticks)
    }

    /// Adds a tick's results to the totals and its messages, sorted, to the transcript.
    /// Returns how many messages the tick published.
    fn record_tick(
        &mut self,
        tick: u64,
        totals: Totals,
        transcript: &mut TranscriptWriter,
    ) -> Result<u64, RunError> {
        self.totals.add(&totals, Some(tick));
        self.totals.last_tick = Some(tick);
        let mut published: Vec<Arc<Message>> = totals.published.into_iter().map(|(_, m)| m).collect();
        published.sort_by(|a, b| a.lockstep_key().cmp(&b.lockstep_key()));
        transcript
            .write(&published)
            .map_err(|e| RunError::output(transcript_path(self.scenario), e))?;
        Ok(published.len() as u64)
    }

    /// Agents run as fast as messages arrive until the duration, the budget, quiescence or
    /// Ctrl-C stops them.
    async fn free(
        &mut self,
        mut shard: Shard<B>,
        progress: &Progress,
        mut interrupted: watch::Receiver<bool>,
        started: Instant,
    ) -> Result<StopReason, RunError> {
        let scenario = self.scenario;
        let start = shard.start_agents(Mode::Free).await?;
        self.totals.add(&start, None);
        self.free_published.extend(start.published);

        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let groups: Vec<String> = scenario
            .agents
            .iter()
            .map(|a| scenario.backend.keys.group(&a.name))
            .collect();
        let feeding = actix::spawn(async move {
            let result = shard.run_free(events_tx, stop_rx).await;
            (shard, result)
        });
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
        if self.totals.messages >= scenario.max_messages {
            stop(StopReason::Budget, &mut reason);
        }
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(ShardEvent::Step(report)) => {
                        let mut totals = Totals::default();
                        totals.add(report);
                        self.totals.add(&totals, None);
                        self.free_published.extend(totals.published);
                        if self.totals.messages >= scenario.max_messages {
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
                    progress.update(None, self.totals.messages, self.totals.deliveries, started.elapsed());
                    if last_trim.elapsed() >= TRIM_EVERY {
                        self.trim().await?;
                        last_trim = Instant::now();
                    }
                }
            }
        }
        let (_shard, result) = feeding
            .await
            .map_err(|e| RunError::Internal(format!("the shard task ended abnormally: {e}")))?;
        result?;
        Ok(reason.unwrap_or(StopReason::Quiescent))
    }

    /// Trims the stream towards `backend.maxlen` (when set), sparing what some group has not
    /// read and acknowledged.
    async fn trim(&self) -> Result<(), RunError> {
        let maxlen = self.scenario.backend.maxlen;
        if maxlen > 0 {
            let removed = self.backend.trim(maxlen).await?;
            tracing::debug!(removed, maxlen, "trimmed the stream");
        }
        Ok(())
    }

    /// Whether every agent's group has read and acknowledged everything on the stream.
    async fn nothing_in_flight(&self, groups: &[String]) -> Result<bool, RunError> {
        let infos = self.backend.groups().await?;
        Ok(groups.iter().all(|g| {
            infos
                .iter()
                .find(|i| &i.name == g)
                .is_some_and(|i| i.pending == 0 && i.lag.is_none_or(|lag| lag == 0))
        }))
    }

    async fn finish(
        self,
        run_dir: std::path::PathBuf,
        transcript: TranscriptWriter,
        stop_reason: StopReason,
        error: Option<RunError>,
        elapsed: Duration,
    ) -> Result<RunOutcome, RunError> {
        let scenario = self.scenario;
        let (transcript_path, sha) = transcript
            .finish()
            .map_err(|e| RunError::output(run_dir.join(crate::report::transcript::FILE_NAME), e))?;

        let dead_letters_path = if self.totals.dead_letters > 0 {
            let path = run_dir.join("dead_letters.jsonl");
            match self.backend.dead_letters().await {
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

        let mut metrics = self.totals.metrics;
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
                Mode::Lockstep => self.totals.last_tick,
                Mode::Free => None,
            },
            messages: self.totals.messages,
            deliveries: self.totals.deliveries,
            handled: self.totals.handled,
            dead_letters: self.totals.dead_letters,
            behaviour_failures: self.totals.failures,
            elapsed_s,
            deliveries_per_s: self.totals.deliveries as f64 / elapsed_s.max(1e-9),
            stop_reason: stop_reason.as_str().to_string(),
            error: error.as_ref().map(ToString::to_string),
            transcript_sha256: sha,
            metrics,
        };
        let summary_path = run_dir.join("summary.json");
        let json = serde_json::to_string_pretty(&summary).map_err(|e| RunError::Internal(e.to_string()))?;
        std::fs::write(&summary_path, json + "\n").map_err(|e| RunError::output(&summary_path, e))?;

        let finished = matches!(
            stop_reason,
            StopReason::Ticks | StopReason::Duration | StopReason::Budget | StopReason::Quiescent
        );
        if scenario.backend.cleanup.after() {
            if finished {
                self.backend.cleanup().await?;
            } else {
                tracing::warn!(
                    "the run did not finish, so its keys were kept (cleanup = \"after\" applies to finished runs)"
                );
            }
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
}

fn transcript_path(scenario: &Scenario) -> std::path::PathBuf {
    scenario.run_dir().join(crate::report::transcript::FILE_NAME)
}

fn write_dead_letters(path: &std::path::Path, entries: &[Vec<(String, String)>]) -> std::io::Result<()> {
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
fn watch_interrupts() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    actix::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("interrupted: stopping at the next safe point (Ctrl-C again to abort)");
            let _ = tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    rx
}
