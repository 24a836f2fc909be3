//! `agora worker`: a process that hosts one share of a scenario's agents and does what the
//! coordinator says, through Redis only (see [`super::control`]).

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::agent::StepReport;
use super::control::{self, Command, HEARTBEAT, Registration, Report};
use super::shard::{Shard, ShardEvent, ShardOptions};
use super::{RunError, instance_name, reconnect};
use crate::backend::Backend;
use crate::backend::redis::RedisBackend;
use crate::message::EntryId;
use crate::scenario::{AgentSpec, BackendKind, Mode, Scenario};

/// Which share a worker hosts.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// 1-based.
    pub shard: u32,
    pub shards: u32,
    /// Exit when this process (the `agora run` that started this worker) is gone.
    pub parent: Option<u32>,
}

/// Runs a worker until the coordinator ends the run.
pub fn run_worker(scenario: &Scenario, options: &WorkerOptions) -> Result<(), RunError> {
    if scenario.backend.kind != BackendKind::Redis {
        return Err(RunError::Usage(
            "workers share the agents of a run through Redis: use --backend redis (and the same --redis-url as the coordinator)".into(),
        ));
    }
    let system = actix_rt::System::new();
    system.block_on(async {
        let b = &scenario.backend;
        let backend = RedisBackend::connect(&b.url, b.keys.clone(), b.reconnect_timeout).await?;
        Worker::new(backend, scenario, options).serve().await
    })
}

/// The agents of `scenario` that shard `shard` of `shards` hosts.
pub(crate) fn share(scenario: &Scenario, shard: u32, shards: u32) -> Vec<AgentSpec> {
    let mut names: Vec<&str> = scenario.agents.iter().map(|a| &*a.name).collect();
    names.sort_unstable();
    scenario
        .agents
        .iter()
        .filter(|a| control::shard_of(&names, &a.name, shards) == shard)
        .cloned()
        .collect()
}

struct Worker<'a, B: Backend> {
    backend: B,
    scenario: &'a Scenario,
    options: &'a WorkerOptions,
    label: String,
    instance: String,
    /// The run this worker serves, once a `Run` names it.
    run: Option<String>,
    shard: Option<Shard<B>>,
    /// After a resume, the first step also reports what agents did before the crash.
    resumed: bool,
    /// The last control note read.
    cursor: EntryId,
}

impl<'a, B: Backend> Worker<'a, B> {
    fn new(backend: B, scenario: &'a Scenario, options: &'a WorkerOptions) -> Self {
        Worker {
            backend,
            scenario,
            options,
            label: format!("{}/{}", options.shard, options.shards),
            instance: instance_name(),
            run: None,
            shard: None,
            resumed: false,
            cursor: EntryId::ZERO,
        }
    }

    async fn serve(mut self) -> Result<(), RunError> {
        let keys = self.backend.keys().clone();
        let heartbeat = {
            let backend = self.backend.clone();
            let (key, field) = (keys.workers(), self.label.clone());
            let registration = |instance: &str| {
                let host_pid = instance.rsplit_once('-');
                Registration {
                    host: host_pid.map_or(instance, |(h, _)| h).to_string(),
                    pid: std::process::id(),
                    heartbeat_ms: control::now_ms(),
                }
            };
            let instance = self.instance.clone();
            actix::spawn(async move {
                loop {
                    let value = serde_json::to_string(&registration(&instance)).unwrap_or_default();
                    let value = format!("{instance} {value}");
                    if let Err(e) = backend.hash_set(&key, &field, &value).await {
                        tracing::debug!("heartbeat failed: {e}");
                    }
                    tokio::time::sleep(HEARTBEAT).await;
                }
            })
        };
        if self.options.parent.is_some() {
            // Ctrl-C in the terminal reaches the whole process group: the coordinator that
            // started this worker handles it and tells the workers to stop.
            actix::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
        }
        tracing::info!(shard = %self.label, instance = %self.instance, "worker waiting for the coordinator");
        if self.options.parent.is_none() {
            // Started by hand: say what it waits for (workers that `agora run --workers N`
            // started share its terminal, and stay quiet).
            eprintln!(
                "worker {}: waiting for the coordinator (`agora run <scenario> --workers 0` with the same scenario and Redis)",
                self.label
            );
        }
        let result = self.follow(&keys.control()).await;
        heartbeat.abort();
        if let (Err(e), Some(run)) = (&result, &self.run) {
            let _ = self
                .report(&Report::Failed {
                    run: run.clone(),
                    shard: self.options.shard,
                    error: e.to_string(),
                })
                .await;
        }
        result
    }

    async fn report(&self, report: &Report) -> Result<(), RunError> {
        let text = serde_json::to_string(report).map_err(|e| RunError::Internal(e.to_string()))?;
        let key = self.backend.keys().reports();
        reconnect::retry(&self.backend, self.scenario.backend.reconnect_timeout, || {
            self.backend.note(&key, &text)
        })
        .await?;
        Ok(())
    }

    fn parent_gone(&self) -> bool {
        self.options
            .parent
            .is_some_and(|p| std::os::unix::process::parent_id() != p)
    }

    /// Reads commands and carries them out until `Exit`.
    async fn follow(&mut self, control_key: &str) -> Result<(), RunError> {
        loop {
            if self.parent_gone() {
                return Err(RunError::Internal(
                    "the agora run that started this worker is gone".into(),
                ));
            }
            let timeout = self.scenario.backend.reconnect_timeout;
            let cursor = self.cursor;
            let notes = reconnect::retry(&self.backend, timeout, || {
                self.backend
                    .notes(control_key, cursor, Duration::from_millis(500))
            })
            .await?;
            for (id, text) in notes {
                self.cursor = id;
                let Ok(command) = serde_json::from_str::<Command>(&text) else {
                    tracing::warn!("ignoring a control note that is not a command: {text}");
                    continue;
                };
                if self.handle(command).await? {
                    return Ok(());
                }
            }
        }
    }

    /// Carries out one command; returns true when the worker is done.
    async fn handle(&mut self, command: Command) -> Result<bool, RunError> {
        if let Command::Run {
            run,
            fingerprint,
            shards,
            resume,
            workers,
        } = &command
        {
            if !workers.contains(&self.instance) {
                return Ok(false);
            }
            return self
                .join(run, fingerprint, *shards, *resume)
                .await
                .map(|()| false);
        }
        if self.run.as_deref() != Some(command.run()) {
            return Ok(false);
        }
        let shard_no = self.options.shard;
        let run = command.run().to_string();
        let mode = self.scenario.mode;
        let Some(shard) = self.shard.as_mut() else {
            return Ok(false);
        };
        match command {
            Command::Start { .. } => {
                let mut totals = shard.start_agents(mode).await?;
                if std::mem::take(&mut self.resumed) && mode == Mode::Lockstep {
                    add_done_before(&mut totals, shard, 0);
                }
                let tick = (mode == Mode::Lockstep).then_some(0);
                let counts = totals.tally;
                self.report(&Report::Done {
                    run,
                    shard: shard_no,
                    tick,
                    counts,
                })
                .await?;
            }
            Command::Tick { tick, expect, .. } => {
                let mut totals = shard.run_tick(tick, expect).await?;
                if std::mem::take(&mut self.resumed) {
                    add_done_before(&mut totals, shard, tick);
                }
                let counts = totals.tally;
                self.report(&Report::Done {
                    run,
                    shard: shard_no,
                    tick: Some(tick),
                    counts,
                })
                .await?;
            }
            Command::Free { .. } => self.free(run).await?,
            Command::Stop { .. } => {}
            Command::Exit { .. } => return Ok(true),
            Command::Run { .. } => {}
        }
        Ok(false)
    }

    /// Joins a run: checks the scenario and hosts the agents.
    async fn join(
        &mut self,
        run: &str,
        fingerprint: &str,
        shards: u32,
        resume: bool,
    ) -> Result<(), RunError> {
        self.run = Some(run.to_string());
        // A new run (a resumed one) replaces the agents of the last one.
        self.shard = None;
        if shards != self.options.shards {
            return Err(RunError::Usage(format!(
                "this worker was started as shard {} but the run has {shards} shards",
                self.label
            )));
        }
        if fingerprint != self.scenario.fingerprint() {
            return Err(RunError::Usage(
                "this worker's scenario is not the coordinator's: start it with the same file, --set and environment".into(),
            ));
        }
        let agents = share(self.scenario, self.options.shard, self.options.shards);
        let options = ShardOptions {
            resume,
            instance: self.instance.clone(),
        };
        self.shard = Some(Shard::start(self.backend.clone(), self.scenario, &agents, &options).await?);
        self.resumed = resume;
        tracing::info!(shard = %self.label, agents = agents.len(), "worker hosting its agents");
        if self.options.parent.is_none() {
            eprintln!("worker {}: hosting {} agents", self.label, agents.len());
        }
        self.report(&Report::Ready {
            run: run.to_string(),
            shard: self.options.shard,
            agents: agents.len() as u64,
        })
        .await
    }

    /// Free mode: runs the shard, reporting progress, until the coordinator says stop.
    async fn free(&mut self, run: String) -> Result<(), RunError> {
        let Some(mut shard) = self.shard.take() else {
            return Ok(());
        };
        let shard_no = self.options.shard;
        let start = shard.start_agents(Mode::Free).await?;
        let mut pending = start.tally;
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let feeding = actix::spawn(async move {
            let result = shard.run_free(events_tx, stop_rx).await;
            (shard, result)
        });
        let control_key = self.backend.keys().control();
        let mut idle = false;
        let mut ticker = tokio::time::interval(Duration::from_millis(200));
        let stopped_by_command = loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(ShardEvent::Step(report)) => {
                        pending += report.tally;
                        idle = false;
                    }
                    Some(ShardEvent::Idle) => idle = true,
                    None => break false,
                },
                _ = ticker.tick() => {
                    let counts = std::mem::take(&mut pending);
                    self.report(&Report::Progress { run: run.clone(), shard: shard_no, counts, idle }).await?;
                    let notes = self.backend.notes(&control_key, self.cursor, Duration::from_millis(1)).await?;
                    let mut stop = false;
                    for (id, text) in notes {
                        self.cursor = id;
                        if let Ok(Command::Stop { run: r } | Command::Exit { run: r }) = serde_json::from_str(&text) {
                            stop |= r == run;
                        }
                    }
                    if stop || self.parent_gone() {
                        let _ = stop_tx.send(true);
                        break true;
                    }
                }
            }
        };
        if stopped_by_command {
            while let Some(event) = events.recv().await {
                if let ShardEvent::Step(report) = event {
                    pending += report.tally;
                }
            }
        }
        let (shard, result) = feeding
            .await
            .map_err(|e| RunError::Internal(format!("the shard task ended abnormally: {e}")))?;
        result?;
        self.shard = Some(shard);
        self.report(&Report::Stopped {
            run,
            shard: shard_no,
            counts: pending,
        })
        .await
    }
}

/// Adds what this shard's agents did in `tick` before a crash (they are not run again).
fn add_done_before<B: Backend>(totals: &mut StepReport, shard: &Shard<B>, tick: u64) {
    for (_, tally) in shard.done_at(tick) {
        totals.tally += tally;
    }
}
