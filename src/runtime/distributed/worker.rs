//! `agora worker`: a process that hosts one share of a scenario's agents and does what the
//! coordinator says, through the backend's transport only (see [`super::control`]).

use std::sync::Arc;
use std::time::Duration;

use super::control::{self, Command, HEARTBEAT, Registration, Report, ShardId};
use crate::backend::{self, Backend, Transport, WithBackend};
use crate::message::EntryId;
use crate::runtime::hosting::{Hosting, LocalHosting};
use crate::runtime::model::Recording;
use crate::runtime::observer::Unobserved;
use crate::runtime::reconnect::Reconnect;
use crate::runtime::shard::{Shard, ShardOptions};
use crate::runtime::{RunError, instance_name};
use crate::scenario::{AgentSpec, Scenario};
use crate::tally::Tally;

/// Which share a worker hosts.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub shard: ShardId,
    /// Exit when this process (the `agora run` that started this worker) is gone.
    pub parent: Option<u32>,
}

/// How a worker's service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerEnd {
    /// The coordinator ended the run.
    RunOver,
    /// `stop` completed first (a signal, for a worker started by hand): the coordinator was
    /// told, if a run had begun, and stops the run with its keys kept for `--resume`.
    Stopped,
}

/// Runs a worker until the coordinator ends the run, or until `stop` completes with what
/// stopped it (`"Ctrl-C"`, say).
///
/// # Errors
///
/// A backend that worker processes cannot share (`RunError::Usage`), a backend that cannot
/// be used, a scenario that is not the coordinator's, a failure while running.
pub fn run_worker(
    scenario: &Scenario,
    options: &WorkerOptions,
    stop: impl Future<Output = &'static str>,
) -> Result<WorkerEnd, RunError> {
    let system = actix_rt::System::new();
    system.block_on(async {
        backend::open(
            &scenario.backend,
            WorkerTask {
                scenario,
                options,
                stop,
            },
        )
        .await?
    })
}

struct WorkerTask<'a, S> {
    scenario: &'a Scenario,
    options: &'a WorkerOptions,
    stop: S,
}

impl<S: Future<Output = &'static str>> WithBackend for WorkerTask<'_, S> {
    type Output = Result<WorkerEnd, RunError>;

    async fn with<B: Backend>(self, backend: B) -> Result<WorkerEnd, RunError> {
        let Some(transport) = backend.transport() else {
            return Err(RunError::Usage(
                "workers share the agents of a run through Redis: use --backend redis (and the same --redis-url as the coordinator)".into(),
            ));
        };
        Worker::new(backend, transport, self.scenario, self.options)
            .serve(self.stop)
            .await
    }
}

/// The agents of `scenario` that shard `shard` hosts.
pub(crate) fn share(scenario: &Scenario, shard: ShardId) -> Vec<AgentSpec> {
    let mut names: Vec<&str> = scenario.agents.iter().map(|a| &*a.name).collect();
    names.sort_unstable();
    scenario
        .agents
        .iter()
        .filter(|a| control::shard_of(&names, &a.name, shard.count()) == shard.index())
        .cloned()
        .collect()
}

struct Worker<'a, B: Backend> {
    backend: B,
    transport: B::Transport,
    reconnect: Reconnect,
    scenario: &'a Scenario,
    options: &'a WorkerOptions,
    instance: String,
    /// The run this worker serves, once a `Run` names it.
    run: Option<String>,
    hosting: Option<LocalHosting<B>>,
    /// The last control note read.
    cursor: EntryId,
}

impl<'a, B: Backend> Worker<'a, B> {
    fn new(backend: B, transport: B::Transport, scenario: &'a Scenario, options: &'a WorkerOptions) -> Self {
        Worker {
            backend,
            transport,
            reconnect: Reconnect::new(scenario.backend.reconnect_timeout, Arc::new(Unobserved)),
            scenario,
            options,
            instance: instance_name(),
            run: None,
            hosting: None,
            cursor: EntryId::ZERO,
        }
    }

    async fn serve(mut self, stop: impl Future<Output = &'static str>) -> Result<WorkerEnd, RunError> {
        let keys = self.backend.keys().clone();
        let heartbeat = {
            let transport = self.transport.clone();
            let (key, field) = (keys.workers(), self.options.shard.to_string());
            let instance = self.instance.clone();
            actix::spawn(async move {
                loop {
                    let value = Registration::now(&instance).encode();
                    if let Err(e) = transport.hash_set(&key, &field, &value).await {
                        tracing::debug!("heartbeat failed: {e}");
                    }
                    tokio::time::sleep(HEARTBEAT).await;
                }
            })
        };
        let shard = self.options.shard;
        if self.options.parent.is_some() {
            // Ctrl-C in the terminal reaches the whole process group: the coordinator that
            // started this worker handles it and tells the workers to stop.
            actix::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
        }
        tracing::info!(shard = %shard, instance = %self.instance, "worker waiting for the coordinator");
        if self.options.parent.is_none() {
            // Started by hand: say what it waits for (workers that `agora run --workers N`
            // started share its terminal, and stay quiet).
            eprintln!(
                "worker {shard}: waiting for the coordinator (`agora run <scenario> --workers 0` with the same scenario and Redis)"
            );
        }
        // A signal ends the worker at once, as a crash would (the coordinator's `--resume`
        // finishes what its agents were doing), but says so: the coordinator stops the run
        // now, naming the signal, instead of after five seconds without a heartbeat.
        let control = keys.control();
        let (result, stopped_by) = tokio::select! {
            result = self.follow(&control) => (result, None),
            what = stop => (Ok(()), Some(what)),
        };
        heartbeat.abort();
        let failure = match (&result, stopped_by) {
            (Err(e), _) => Some(e.to_string()),
            (Ok(()), Some(what)) => {
                eprintln!("worker {shard}: stopped by {what}");
                Some(format!("stopped by {what}"))
            }
            (Ok(()), None) => None,
        };
        if let (Some(error), Some(run)) = (failure, &self.run) {
            let failed = Report::Failed {
                run: run.clone(),
                shard: shard.index(),
                error,
            };
            let _ = self.report(&failed).await;
        }
        result.map(|()| {
            if stopped_by.is_some() {
                WorkerEnd::Stopped
            } else {
                WorkerEnd::RunOver
            }
        })
    }

    async fn report(&self, report: &Report) -> Result<(), RunError> {
        let text = serde_json::to_string(report).map_err(|e| RunError::Internal(e.to_string()))?;
        let key = self.backend.keys().reports();
        self.reconnect
            .retry(&self.backend, || self.transport.note(&key, &text))
            .await?;
        Ok(())
    }

    fn parent_gone(&self) -> bool {
        self.options
            .parent
            .is_some_and(|p| std::os::unix::process::parent_id() != p)
    }

    /// Control notes after the last one read, waiting up to `block` for one.
    async fn commands(&mut self, control_key: &str, block: Duration) -> Result<Vec<Command>, RunError> {
        let cursor = self.cursor;
        let notes = self
            .reconnect
            .retry(&self.backend, || self.transport.notes(control_key, cursor, block))
            .await?;
        let mut commands = Vec::with_capacity(notes.len());
        for (id, text) in notes {
            self.cursor = id;
            match serde_json::from_str::<Command>(&text) {
                Ok(command) => commands.push(command),
                Err(_) => tracing::warn!("ignoring a control note that is not a command: {text}"),
            }
        }
        Ok(commands)
    }

    /// Reads commands and carries them out until `Exit`.
    async fn follow(&mut self, control_key: &str) -> Result<(), RunError> {
        loop {
            if self.parent_gone() {
                // The coordinator was killed or stopped: nothing is wrong here.
                return Err(RunError::Worker(
                    "the agora run that started this worker is gone (killed or stopped); the worker stops with it, and --resume continues the run".into(),
                ));
            }
            for command in self.commands(control_key, Duration::from_millis(500)).await? {
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
            replay,
            workers,
        } = &command
        {
            if !workers.contains(&self.instance) {
                return Ok(false);
            }
            self.join(run, fingerprint, *shards, (*resume, replay.as_deref()))
                .await?;
            return Ok(false);
        }
        if self.run.as_deref() != Some(command.run()) {
            return Ok(false);
        }
        let run = command.run().to_string();
        let mode = self.scenario.mode;
        let shard = self.options.shard.index();
        let Some(hosting) = self.hosting.as_mut() else {
            return Ok(false);
        };
        let done = match command {
            Command::Start { .. } => {
                let report = hosting.start_agents(mode).await?;
                let tick = (mode == crate::scenario::Mode::Lockstep).then_some(0);
                (tick, report.tally)
            }
            Command::Tick { tick, expected, .. } => {
                (Some(tick), hosting.run_tick(tick, &expected).await?.tally)
            }
            Command::Free { .. } => {
                self.free(run).await?;
                return Ok(false);
            }
            Command::Exit { .. } => return Ok(true),
            Command::Stop { .. } | Command::Run { .. } => return Ok(false),
        };
        let (tick, counts) = done;
        self.report(&Report::Done {
            run,
            shard,
            tick,
            counts,
        })
        .await?;
        Ok(false)
    }

    /// Joins a run: checks the scenario and hosts the agents.
    async fn join(
        &mut self,
        run: &str,
        fingerprint: &str,
        shards: u32,
        (resume, replay): (bool, Option<&std::path::Path>),
    ) -> Result<(), RunError> {
        self.run = Some(run.to_string());
        // A new run (a resumed one) replaces the agents of the last one.
        self.hosting = None;
        let shard = self.options.shard;
        if shards != shard.count() {
            return Err(RunError::Usage(format!(
                "this worker was started as shard {shard} but the run has {shards} shards"
            )));
        }
        if fingerprint != self.scenario.fingerprint() {
            return Err(RunError::Usage(
                "this worker's scenario is not the coordinator's: start it with the same file, --set and environment".into(),
            ));
        }
        let agents = share(self.scenario, shard);
        let options = ShardOptions {
            resume,
            instance: self.instance.clone(),
            reconnect: self.reconnect.clone(),
            replay: replay.map(Recording::read).transpose()?.map(Arc::new),
            processes: shards,
            // As a coordinator's own shard: threads for a large lockstep shard on the
            // embedded backend (workers share it only in tests), none on Redis.
            agent_threads: None,
        };
        let hosted = Shard::start(self.backend.clone(), self.scenario, &agents, &options).await?;
        self.hosting = Some(LocalHosting::new(hosted, resume));
        tracing::info!(shard = %shard, agents = agents.len(), "worker hosting its agents");
        if self.options.parent.is_none() {
            eprintln!("worker {shard}: hosting {} agents", agents.len());
        }
        self.report(&Report::Ready {
            run: run.to_string(),
            shard: shard.index(),
            agents: agents.len() as u64,
        })
        .await
    }

    /// Free mode: runs the agents, reporting progress, until the coordinator says stop.
    async fn free(&mut self, run: String) -> Result<(), RunError> {
        const REPORT_EVERY: Duration = Duration::from_millis(200);
        let Some(mut hosting) = self.hosting.take() else {
            return Ok(());
        };
        let shard = self.options.shard.index();
        let control_key = self.backend.keys().control();
        let mut pending: Tally = hosting.start_free().await?.tally;
        let mut last_report = tokio::time::Instant::now();
        loop {
            let progress = hosting.free_progress(REPORT_EVERY).await?;
            pending += progress.report.tally;
            let idle = progress.idle;
            if last_report.elapsed() < REPORT_EVERY {
                continue;
            }
            last_report = tokio::time::Instant::now();
            let counts = std::mem::take(&mut pending);
            self.report(&Report::Progress {
                run: run.clone(),
                shard,
                counts,
                idle,
            })
            .await?;
            let commands = self.commands(&control_key, Duration::from_millis(1)).await?;
            let stop = commands
                .iter()
                .any(|c| matches!(c, Command::Stop { run: r } | Command::Exit { run: r } if *r == run));
            if stop || self.parent_gone() {
                break;
            }
        }
        pending += hosting.stop_free().await?.tally;
        self.hosting = Some(hosting);
        self.report(&Report::Stopped {
            run,
            shard,
            counts: pending,
        })
        .await
    }
}
