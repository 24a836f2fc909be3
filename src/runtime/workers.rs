//! The coordinator's side of worker processes: starting them (`--workers N`) or waiting for
//! them (`--workers 0`), sending commands and gathering reports, and noticing, by name, a
//! worker that fails to start or dies.

use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use super::agent::StepReport;
use super::control::{self, Command, Report, WORKER_SILENCE};
use super::{RunError, reconnect};
use crate::backend::Backend;
use crate::message::EntryId;
use crate::report::progress;
use crate::scenario::Scenario;
use crate::tally::Tally;

/// How many ticks between trims of the control and report streams.
const TRIM_EVERY: u32 = 64;

/// How long local workers may take to start and register.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How to get worker processes.
#[derive(Debug, Clone)]
pub(crate) enum Launch {
    /// Start this many local `agora worker` processes.
    Local(u32),
    /// Wait for workers started by hand (`agora worker ... --shard I/N`).
    External,
}

pub(crate) struct Workers<B: Backend> {
    backend: B,
    run: String,
    shards: u32,
    /// Local worker processes, by shard (index 0 is shard 1).
    children: Vec<Child>,
    /// A scenario file written for local workers, removed at the end.
    scenario_file: Option<PathBuf>,
    /// The last report read.
    cursor: EntryId,
    timeout: Duration,
    last_liveness_check: Instant,
    /// The worker instance serving each shard (index 0 is shard 1).
    instances: Vec<String>,
    /// The id of the last command sent.
    last_command: EntryId,
    /// Commands sent since the control and report streams were last trimmed.
    since_trim: u32,
}

impl<B: Backend> Workers<B> {
    /// Starts (or waits for) the workers, and has each join the run and host its agents.
    pub async fn launch(
        backend: B,
        scenario: &Scenario,
        launch: Launch,
        resume: bool,
    ) -> Result<Self, RunError> {
        let keys = backend.keys().clone();
        let timeout = scenario.backend.reconnect_timeout;
        let mut workers = Workers {
            run: format!("{}-{}", super::instance_name(), control::now_ms()),
            shards: 0,
            children: Vec::new(),
            scenario_file: None,
            cursor: EntryId::ZERO,
            timeout,
            last_liveness_check: Instant::now(),
            instances: Vec::new(),
            last_command: EntryId::ZERO,
            since_trim: 0,
            backend,
        };
        // Reports of earlier runs are not ours: start reading after them.
        let reports = keys.reports();
        loop {
            let cursor = workers.cursor;
            let old = reconnect::retry(&workers.backend, timeout, || {
                workers.backend.notes(&reports, cursor, Duration::from_millis(1))
            })
            .await?;
            match old.last() {
                Some((id, _)) => workers.cursor = *id,
                None => break,
            }
        }
        if let Launch::Local(n) = launch {
            workers.shards = n;
            workers.spawn(scenario, n)?;
        }
        let instances = workers
            .wait_for_registrations(matches!(launch, Launch::Local(_)))
            .await?;
        workers.instances = instances.clone();
        let command = Command::Run {
            run: workers.run.clone(),
            fingerprint: scenario.fingerprint(),
            shards: workers.shards,
            resume,
            workers: instances.clone(),
        };
        workers.send(&command).await?;
        tracing::info!(workers = ?instances, "workers joined the run");
        let ready = workers.gather(|r| matches!(r, Report::Ready { .. })).await?;
        let agents: u64 = ready
            .iter()
            .map(|r| match r {
                Report::Ready { agents, .. } => *agents,
                _ => 0,
            })
            .sum();
        if agents != scenario.agents.len() as u64 {
            return Err(RunError::Internal(format!(
                "the workers host {agents} agents, not the scenario's {}",
                scenario.agents.len()
            )));
        }
        Ok(workers)
    }

    /// Starts `n` local worker processes with the resolved scenario.
    fn spawn(&mut self, scenario: &Scenario, n: u32) -> Result<(), RunError> {
        let exe = std::env::current_exe()
            .map_err(|e| RunError::Internal(format!("cannot find agora itself: {e}")))?;
        let file = std::env::temp_dir().join(format!("agora-{}-{}.toml", scenario.name, std::process::id()));
        std::fs::write(&file, scenario.to_toml()).map_err(|e| RunError::output(&file, e))?;
        self.scenario_file = Some(file.clone());
        for i in 1..=n {
            let child = Process::new(&exe)
                .arg("worker")
                .arg(&file)
                .arg("--shard")
                .arg(format!("{i}/{n}"))
                // The resolved scenario hides the password; the real URL goes by environment.
                .env("AGORA_BACKEND__URL", scenario.backend.url.expose())
                .env("AGORA_WORKER_PARENT", std::process::id().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| RunError::Internal(format!("cannot start worker {i}/{n}: {e}")))?;
            self.children.push(child);
        }
        Ok(())
    }

    /// Waits until every shard has a live registration; returns their instances. A
    /// registration counts once its heartbeat has moved while we watched (a worker killed a
    /// moment ago still has a fresh one), and, for local workers, once it is one of ours.
    async fn wait_for_registrations(&mut self, local: bool) -> Result<Vec<String>, RunError> {
        let started = Instant::now();
        let key = self.backend.keys().workers();
        let pids: Vec<u32> = self.children.iter().map(Child::id).collect();
        let mut first_seen: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        loop {
            self.check_children()?;
            let fields =
                reconnect::retry(&self.backend, self.timeout, || self.backend.hash_all(&key)).await?;
            let mut live: Vec<(u32, u32, String)> = Vec::new();
            for (field, value) in fields {
                let (Ok((i, n)), Some((instance, json))) =
                    (control::parse_shard(&field), value.split_once(' '))
                else {
                    continue;
                };
                let Ok(reg) = serde_json::from_str::<control::Registration>(json) else {
                    continue;
                };
                if local && !pids.contains(&reg.pid) {
                    continue;
                }
                let seen = *first_seen.entry(instance.to_string()).or_insert(reg.heartbeat_ms);
                if reg.heartbeat_ms != seen {
                    live.push((i, n, instance.to_string()));
                }
            }
            if self.shards == 0
                && let Some((_, n, _)) = live.first()
            {
                self.shards = *n;
            }
            let n = self.shards;
            let mut instances = Vec::new();
            for i in 1..=n {
                if let Some((_, _, instance)) = live.iter().find(|(li, ln, _)| *li == i && *ln == n) {
                    instances.push(instance.clone());
                }
            }
            if n > 0 && instances.len() as u32 == n {
                progress::set_waiting(None);
                return Ok(instances);
            }
            let waiting = if n == 0 {
                "for workers (agora worker <scenario> --shard I/N)".to_string()
            } else {
                format!("for workers: {} of {n} registered", instances.len())
            };
            progress::set_waiting(Some(&waiting));
            if local && started.elapsed() > START_TIMEOUT {
                return Err(RunError::Worker(format!(
                    "the local workers did not all register within {} s ({} of {n})",
                    START_TIMEOUT.as_secs(),
                    instances.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails if a local worker has exited.
    fn check_children(&mut self) -> Result<(), RunError> {
        let n = self.children.len();
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(RunError::Worker(format!(
                    "worker {}/{n} (pid {}) exited ({status})",
                    i + 1,
                    child.id()
                )));
            }
        }
        Ok(())
    }

    /// Fails if a worker's heartbeat has stopped.
    async fn check_heartbeats(&mut self) -> Result<(), RunError> {
        if self.last_liveness_check.elapsed() < Duration::from_secs(1) {
            return Ok(());
        }
        self.last_liveness_check = Instant::now();
        let key = self.backend.keys().workers();
        let fields = reconnect::retry(&self.backend, self.timeout, || self.backend.hash_all(&key)).await?;
        let now = control::now_ms();
        for i in 1..=self.shards {
            let label = format!("{i}/{}", self.shards);
            let heartbeat = fields
                .iter()
                .find(|(f, _)| *f == label)
                .and_then(|(_, v)| v.split_once(' '))
                .and_then(|(instance, json)| {
                    serde_json::from_str::<control::Registration>(json)
                        .ok()
                        .map(|r| (instance.to_string(), r))
                });
            let expected = self.instances.get(i as usize - 1).map(String::as_str);
            match heartbeat {
                Some((instance, _)) if Some(instance.as_str()) != expected => {
                    return Err(RunError::Worker(format!(
                        "worker {label} was replaced by another process ({instance}) during the run"
                    )));
                }
                Some((_, reg))
                    if now.saturating_sub(reg.heartbeat_ms) < WORKER_SILENCE.as_millis() as u64 => {}
                Some((instance, reg)) => {
                    return Err(RunError::Worker(format!(
                        "worker {label} ({instance}, pid {}) stopped answering {} s ago",
                        reg.pid,
                        now.saturating_sub(reg.heartbeat_ms) / 1000
                    )));
                }
                None => return Err(RunError::Worker(format!("worker {label} is gone"))),
            }
        }
        Ok(())
    }

    async fn send(&mut self, command: &Command) -> Result<(), RunError> {
        let text = serde_json::to_string(command).map_err(|e| RunError::Internal(e.to_string()))?;
        let key = self.backend.keys().control();
        self.last_command =
            reconnect::retry(&self.backend, self.timeout, || self.backend.note(&key, &text)).await?;
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
        reconnect::retry(&self.backend, self.timeout, || {
            self.backend.trim_notes(&control, last_command)
        })
        .await?;
        reconnect::retry(&self.backend, self.timeout, || {
            self.backend.trim_notes(&reports, cursor)
        })
        .await?;
        Ok(())
    }

    /// Reads reports of this run until `wanted` has matched one from every shard.
    async fn gather(&mut self, wanted: impl Fn(&Report) -> bool) -> Result<Vec<Report>, RunError> {
        let mut got: Vec<Option<Report>> = vec![None; self.shards as usize];
        while got.iter().any(Option::is_none) {
            for report in self.read_reports(Duration::from_millis(500)).await? {
                let shard = match &report {
                    Report::Ready { shard, .. }
                    | Report::Done { shard, .. }
                    | Report::Progress { shard, .. }
                    | Report::Stopped { shard, .. } => *shard,
                    Report::Failed { .. } => 0,
                };
                if wanted(&report) && (1..=self.shards).contains(&shard) {
                    got[shard as usize - 1] = Some(report);
                }
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    /// The reports of this run that came within `block`; fails on a worker's failure or death.
    async fn read_reports(&mut self, block: Duration) -> Result<Vec<Report>, RunError> {
        self.check_children()?;
        self.check_heartbeats().await?;
        let key = self.backend.keys().reports();
        let cursor = self.cursor;
        let notes = reconnect::retry(&self.backend, self.timeout, || {
            self.backend.notes(&key, cursor, block)
        })
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
            if let Report::Failed { shard, error, .. } = &report {
                return Err(RunError::Worker(format!(
                    "worker {shard}/{} failed: {error}",
                    self.shards
                )));
            }
            out.push(report);
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

    /// `init` and `on_start` on every worker.
    pub async fn start_agents(&mut self) -> Result<StepReport, RunError> {
        self.send(&Command::Start {
            run: self.run.clone(),
        })
        .await?;
        let done = self.gather(|r| matches!(r, Report::Done { .. })).await?;
        Ok(StepReport::counts(Self::counts(done)))
    }

    /// A lockstep tick on every worker: the barrier.
    pub async fn run_tick(&mut self, tick: u64, expect: u64) -> Result<StepReport, RunError> {
        self.send(&Command::Tick {
            run: self.run.clone(),
            tick,
            expect,
        })
        .await?;
        let done = self
            .gather(|r| matches!(r, Report::Done { tick: Some(t), .. } if *t == tick))
            .await?;
        self.trim().await?;
        Ok(StepReport::counts(Self::counts(done)))
    }

    /// Free mode: sets every worker going.
    pub async fn start_free(&mut self) -> Result<(), RunError> {
        self.send(&Command::Free {
            run: self.run.clone(),
        })
        .await
    }

    /// Free mode: progress since the last call, and whether every worker said it was idle in
    /// its latest report.
    pub async fn progress(&mut self, idle: &mut [bool]) -> Result<Tally, RunError> {
        let mut total = Tally::default();
        for report in self.read_reports(Duration::from_millis(100)).await? {
            if let Report::Progress {
                shard,
                counts,
                idle: now_idle,
                ..
            } = report
            {
                total += counts;
                if let Some(slot) = idle.get_mut(shard as usize - 1) {
                    *slot = now_idle;
                }
            }
        }
        Ok(total)
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Free mode: stops every worker; what they did since their last progress report.
    pub async fn stop(&mut self) -> Result<Tally, RunError> {
        self.send(&Command::Stop {
            run: self.run.clone(),
        })
        .await?;
        let mut total = Tally::default();
        let mut stopped = vec![false; self.shards as usize];
        while stopped.iter().any(|s| !s) {
            for report in self.read_reports(Duration::from_millis(500)).await? {
                match report {
                    Report::Progress { counts, .. } => total += counts,
                    Report::Stopped { shard, counts, .. } => {
                        total += counts;
                        stopped[shard as usize - 1] = true;
                    }
                    _ => {}
                }
            }
        }
        Ok(total)
    }

    /// Tells the workers the run is over and waits for local ones to exit.
    pub async fn finish(mut self) {
        let _ = self
            .send(&Command::Exit {
                run: self.run.clone(),
            })
            .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in &mut self.children {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

impl<B: Backend> Drop for Workers<B> {
    fn drop(&mut self) {
        for child in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(file) = &self.scenario_file {
            let _ = std::fs::remove_file(file);
        }
    }
}
