//! The coordinator's side of worker processes, first half: starting them (`--workers N`) or
//! waiting for them (`--workers 0`), and noticing, by name, a worker that fails to start or
//! dies. The other half ([`super::remote`]) sends them commands and gathers their reports.

use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use super::control::{self, Command, Registration, Report, ShardId};
use crate::backend::{Backend, Transport};
use crate::message::EntryId;
use crate::runtime::RunError;
use crate::runtime::reconnect::Reconnect;
use crate::scenario::Scenario;

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

/// The worker processes of a run, as the coordinator sees them.
pub(crate) struct Workers<B: Backend> {
    pub(super) backend: B,
    pub(super) transport: B::Transport,
    pub(super) reconnect: Reconnect,
    /// This run's id: commands and reports of other runs are ignored.
    pub(super) run: String,
    pub(super) shards: u32,
    /// Local worker processes, by shard (index 0 is shard 1).
    children: Vec<Child>,
    /// A scenario file written for local workers, removed at the end.
    scenario_file: Option<PathBuf>,
    /// The last report read.
    pub(super) cursor: EntryId,
    last_liveness_check: Instant,
    /// The worker instance serving each shard (index 0 is shard 1).
    instances: Vec<String>,
    /// The id of the last command sent.
    pub(super) last_command: EntryId,
    /// Commands sent since the control and report streams were last trimmed.
    pub(super) since_trim: u32,
    /// Free mode: whether each worker said it was idle in its latest report.
    pub(super) idle: Vec<bool>,
}

impl<B: Backend> Workers<B> {
    /// Starts (or waits for) the workers, and has each join the run and host its agents.
    ///
    /// # Errors
    ///
    /// A worker that cannot be started, exits, or does not register in time; workers that
    /// do not host every agent of the scenario.
    pub async fn launch(
        backend: B,
        transport: B::Transport,
        reconnect: Reconnect,
        scenario: &Scenario,
        launch: Launch,
        resume: bool,
        replay: Option<&std::path::Path>,
    ) -> Result<Self, RunError> {
        let mut workers = Workers {
            run: format!("{}-{}", crate::runtime::instance_name(), control::now_ms()),
            shards: 0,
            children: Vec::new(),
            scenario_file: None,
            cursor: EntryId::ZERO,
            last_liveness_check: Instant::now(),
            instances: Vec::new(),
            last_command: EntryId::ZERO,
            since_trim: 0,
            idle: Vec::new(),
            backend,
            transport,
            reconnect,
        };
        workers.skip_old_reports().await?;
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
            // Absolute, so that a worker started elsewhere (another directory) finds it.
            replay: replay.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())),
            workers: instances.clone(),
        };
        workers.send(&command).await?;
        tracing::info!(workers = ?instances, "workers joined the run");
        let ready = workers.gather(|r| matches!(r, Report::Ready { .. })).await?;
        // Every worker has read the scenario and built its agents: the file has done its
        // work, and a coordinator killed from now on leaves none in the temp folder.
        workers.remove_scenario_file();
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

    /// Reports of earlier runs are not ours: reading starts after them.
    async fn skip_old_reports(&mut self) -> Result<(), RunError> {
        let reports = self.backend.keys().reports();
        loop {
            let cursor = self.cursor;
            let old = self
                .reconnect
                .retry(&self.backend, || {
                    self.transport.notes(&reports, cursor, Duration::from_millis(1))
                })
                .await?;
            match old.last() {
                Some((id, _)) => self.cursor = *id,
                None => return Ok(()),
            }
        }
    }

    /// Removes the resolved scenario the local workers were started with, if there is one.
    fn remove_scenario_file(&mut self) {
        if let Some(file) = self.scenario_file.take() {
            let _ = std::fs::remove_file(file);
        }
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

    /// The live registrations: (shard, instance). A registration counts once its heartbeat
    /// has moved while we watched (`first_seen`: a worker killed a moment ago still has a
    /// fresh one), and, for local workers, once it is one of ours.
    async fn live_registrations(
        &self,
        local: bool,
        first_seen: &mut std::collections::HashMap<String, u64>,
    ) -> Result<Vec<(ShardId, String)>, RunError> {
        let key = self.backend.keys().workers();
        let pids: Vec<u32> = self.children.iter().map(Child::id).collect();
        let fields = self
            .reconnect
            .retry(&self.backend, || self.transport.hash_all(&key))
            .await?;
        let mut live = Vec::new();
        for (field, value) in fields {
            let (Ok(shard), Some(reg)) = (ShardId::parse(&field), Registration::decode(&value)) else {
                continue;
            };
            if local && !pids.contains(&reg.pid) {
                continue;
            }
            let seen = *first_seen.entry(reg.instance.clone()).or_insert(reg.heartbeat_ms);
            if reg.heartbeat_ms != seen {
                live.push((shard, reg.instance));
            }
        }
        Ok(live)
    }

    /// Waits until every shard has a live registration; returns their instances.
    async fn wait_for_registrations(&mut self, local: bool) -> Result<Vec<String>, RunError> {
        let started = Instant::now();
        let mut first_seen = std::collections::HashMap::new();
        loop {
            self.check_children()?;
            let live = self.live_registrations(local, &mut first_seen).await?;
            if self.shards == 0
                && let Some((shard, _)) = live.first()
            {
                self.shards = shard.count();
            }
            let n = self.shards;
            let instances: Vec<String> = (1..=n)
                .filter_map(|i| {
                    live.iter()
                        .find(|(s, _)| s.index() == i && s.count() == n)
                        .map(|(_, instance)| instance.clone())
                })
                .collect();
            if n > 0 && instances.len() as u32 == n {
                self.reconnect.observer().waiting(None);
                return Ok(instances);
            }
            let waiting = if n == 0 {
                "for workers (agora worker <scenario> --shard I/N)".to_string()
            } else {
                format!("for workers: {} of {n} registered", instances.len())
            };
            self.reconnect.observer().waiting(Some(&waiting));
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
    pub(super) fn check_children(&mut self) -> Result<(), RunError> {
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

    /// Fails if a worker's heartbeat has stopped, or another process took its place.
    pub(super) async fn check_heartbeats(&mut self) -> Result<(), RunError> {
        if self.last_liveness_check.elapsed() < Duration::from_secs(1) {
            return Ok(());
        }
        self.last_liveness_check = Instant::now();
        let key = self.backend.keys().workers();
        let fields = self
            .reconnect
            .retry(&self.backend, || self.transport.hash_all(&key))
            .await?;
        let now = control::now_ms();
        for i in 1..=self.shards {
            let label = format!("{i}/{}", self.shards);
            let registration = fields
                .iter()
                .find(|(f, _)| *f == label)
                .and_then(|(_, v)| Registration::decode(v));
            let expected = self.instances.get(i as usize - 1).map(String::as_str);
            match registration {
                Some(reg) if Some(reg.instance.as_str()) != expected => {
                    return Err(RunError::Worker(format!(
                        "worker {label} was replaced by another process ({}) during the run",
                        reg.instance
                    )));
                }
                Some(reg) if !reg.is_silent(now) => {}
                Some(reg) => {
                    return Err(RunError::Worker(format!(
                        "worker {label} ({}, pid {}) stopped answering {} s ago",
                        reg.instance,
                        reg.pid,
                        now.saturating_sub(reg.heartbeat_ms) / 1000
                    )));
                }
                None => return Err(RunError::Worker(format!("worker {label} is gone"))),
            }
        }
        Ok(())
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
        self.remove_scenario_file();
    }
}
