//! Running a scenario: agents as actix actors, a shard that feeds them, a coordinator that
//! drives ticks (lockstep) or watches the flow (free mode) and decides when to stop.
//!
//! `run` is the whole of `agora run`: it starts an actix system, opens the backend,
//! prepares the keys and the output directory, runs, and writes `transcript.jsonl` and
//! `summary.json`, also when the run is interrupted or fails part-way. It takes its stop
//! signal and an observer as arguments, so two runs in one process share nothing.
//!
//! - `agent`: one agent's step, and the actor that runs it.
//! - `shard`: the agents of one process, and the reader that feeds them.
//! - `hosting`: where the agents live, behind one trait (here, or in workers).
//! - `coordinator`: prepares, drives lockstep or free mode, writes the outputs.
//! - `distributed`: worker processes and how they talk to the coordinator.
//! - `liveness`: the stream's lease, so that one run at a time uses its keys.
//! - `model`: the run's model client (answers kept with the run, replay, limits).
//! - `pacing`: free mode's least interval between publishes (the old time controller).
//! - `programs`: the running copies of behaviour programs, and a step's exchange with one.
//! - `reconnect`: riding out a lost backend; `observer`: what a run tells its watcher.

mod agent;
mod coordinator;
mod distributed;
mod error;
pub(crate) mod folder;
mod hosting;
pub(crate) mod liveness;
mod model;
mod observer;
mod pacing;
mod programs;
mod reconnect;
mod shard;

pub use distributed::{ShardId, WorkerEnd, WorkerOptions, run_worker};
pub use error::RunError;
pub use observer::{RunObserver, RunProgress, Unobserved};

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use self::reconnect::Reconnect;
use crate::backend::{self, Backend, WithBackend};
use crate::report::Summary;
use crate::scenario::{BackendKind, Scenario};

/// How to run, beyond what the scenario says.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue an interrupted run from what the backend holds.
    pub resume: bool,
    /// Names this process's consumers (`{agent}@{instance}`); default: host and process id.
    pub instance: Option<String>,
    /// Host the agents in worker processes: `Some(n)` starts `n` local ones, `Some(0)` waits
    /// for workers started by hand; `None` hosts them in this process.
    pub workers: Option<u32>,
    /// Replace the outputs of another scenario's run in the run's folder, instead of refusing.
    pub overwrite: bool,
    /// Answer every completion from this recording (an `llm.jsonl`), with no network.
    pub replay: Option<PathBuf>,
    /// How many threads a run's agents use on the embedded backend when their behaviours are
    /// plain Rust: `None` (the default) one per core in lockstep from 500 agents, and in free
    /// mode from two (unless publishes are paced), else this thread alone; `Some(n)` spreads
    /// them over `n` threads (`Some(1)`: this thread) whatever their number. A lockstep
    /// transcript is the same either way.
    pub agent_threads: Option<usize>,
    /// Lockstep: run every tick even when one publishes nothing. Not a scenario setting: the
    /// benchmark harness uses it to time empty ticks.
    #[doc(hidden)]
    pub run_all_ticks: bool,
}

/// What a run produced. `error` is set when the run stopped on a failure; the files were
/// written all the same.
#[derive(Debug)]
pub struct RunOutcome {
    pub summary: Summary,
    pub run_dir: PathBuf,
    pub transcript: PathBuf,
    pub summary_path: PathBuf,
    /// Written only when some messages were dead-lettered.
    pub dead_letters_path: Option<PathBuf>,
    pub error: Option<RunError>,
}

/// Runs `scenario` on the backend it names, in a new actix system, until it ends or
/// `shutdown` completes (then it stops at the next safe point: the end of the tick in
/// lockstep). `observer` hears how far it has got and what it waits for.
///
/// # Errors
///
/// A run that cannot start: bad input given the backend's state (`RunError::Refused`,
/// `RunError::Usage`), a backend that cannot be used. A run that started and then failed
/// returns `Ok`, with its outputs written and the error in [`RunOutcome::error`].
pub fn run(
    scenario: &Scenario,
    options: &RunOptions,
    shutdown: impl Future<Output = ()> + 'static,
    observer: Arc<dyn RunObserver>,
) -> Result<RunOutcome, RunError> {
    if options.resume && scenario.backend.kind == BackendKind::Memory {
        return Err(RunError::Usage(
            "--resume needs the redis backend: the memory backend keeps nothing after the process ends"
                .to_string(),
        ));
    }
    if let Some(workers) = options.workers {
        ShardId::check_workers(workers, scenario.agents.len()).map_err(RunError::Usage)?;
    }
    let system = actix_rt::System::new();
    system.block_on(async {
        let task = RunTask {
            scenario,
            options,
            shutdown,
            observer,
        };
        backend::open(&scenario.backend, task).await?
    })
}

/// Runs `scenario` on `backend`, from within an actix system, until it ends or `shutdown`
/// completes.
///
/// # Errors
///
/// As [`run`].
pub async fn run_on<B: Backend>(
    backend: B,
    scenario: &Scenario,
    options: &RunOptions,
    shutdown: impl Future<Output = ()> + 'static,
    observer: Arc<dyn RunObserver>,
) -> Result<RunOutcome, RunError> {
    let (stop, stopping) = watch::channel(false);
    let asked = stop.clone();
    let watcher = actix::spawn(async move {
        shutdown.await;
        let _ = asked.send(true);
    });
    let reconnect = Reconnect::new(scenario.backend.reconnect_timeout, observer);
    let outcome = coordinator::Coordinator::new(backend, scenario, options, reconnect)
        .run(coordinator::StopSignal { stop, stopping })
        .await;
    watcher.abort();
    outcome
}

/// [`run_on`] with the backend [`backend::open`] gives.
struct RunTask<'a, S> {
    scenario: &'a Scenario,
    options: &'a RunOptions,
    shutdown: S,
    observer: Arc<dyn RunObserver>,
}

impl<S: Future<Output = ()> + 'static> WithBackend for RunTask<'_, S> {
    type Output = Result<RunOutcome, RunError>;

    async fn with<B: Backend>(self, backend: B) -> Self::Output {
        run_on(backend, self.scenario, self.options, self.shutdown, self.observer).await
    }
}

/// The text of a caught panic.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// This process's name among consumers and workers: host and process id.
pub(crate) fn instance_name() -> String {
    format!("{}-{}", liveness::host_name(), std::process::id())
}
