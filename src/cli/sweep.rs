//! `agora sweep`: plans the runs, skips those that completed, runs the rest as `agora run`
//! processes `--jobs` at a time behind a progress bar, keeps `sweep.csv` up to date after
//! every run, and draws the sweep's plots.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::args::{BackendArg, ScenarioArgs, SweepArgs};
use super::commands::load;
use crate::behaviour::Registry;
use crate::error::{Error, exit};
use crate::scenario::BackendKind;
use crate::sweep::{self, PlannedRun, RunResult, Varied, relocate, table};

/// Set by Ctrl-C or SIGTERM: no more runs start; those running stop as Ctrl-C stops a run.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Set by SIGTERM, which (unlike Ctrl-C at a terminal) may reach the sweep alone (`kill`):
/// the sweep passes it on to its running runs, then clears it. A run that gets it from a
/// supervisor too takes the second as the same request.
static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    // An atomic store is all a signal handler may safely do here.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

extern "C" fn on_terminate(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    TERMINATED.store(true, Ordering::SeqCst);
}

/// Ctrl-C stops the sweep between runs: the terminal sends it to the runs too, which stop
/// at their next safe point with their outputs written; sweep.csv is then written and the
/// sweep exits with 130. SIGTERM (from `kill`, systemd or a batch scheduler) does the same,
/// the sweep passing it on to its runs. (A sweep started with a signal ignored, as `&` in a
/// script does for SIGINT, keeps it ignored.)
fn stop_on_interrupt() {
    for (signal, handler) in [
        (libc::SIGINT, on_interrupt as extern "C" fn(libc::c_int)),
        (libc::SIGTERM, on_terminate as extern "C" fn(libc::c_int)),
    ] {
        if super::commands::ignored(signal) {
            continue;
        }
        // SAFETY: installs a handler that only stores to atomics, which is async-signal-safe.
        unsafe { libc::signal(signal, handler as libc::sighandler_t) };
    }
}

/// Passes a SIGTERM the sweep received on to its running runs until every worker thread is
/// done; a run started just as it arrived is told by its own thread (see `wait_for`).
fn forward_terminations(running: &Mutex<Vec<u32>>, workers: &[std::thread::ScopedJoinHandle<'_, ()>]) {
    while !workers.iter().all(std::thread::ScopedJoinHandle::is_finished) {
        if TERMINATED.swap(false, Ordering::SeqCst) {
            for &pid in running.lock().iter().flat_map(|pids| pids.iter()) {
                terminate(pid);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn terminate(pid: u32) {
    // SAFETY: sends a signal to a run this sweep started and has not yet waited for, so the
    // process id cannot have been reused.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
}

/// One run, ready to start.
struct Job {
    planned: PlannedRun,
    /// The folder `agora run --out` gets: `{sweep}/run-NNN`.
    out: PathBuf,
    /// The run's own folder under it.
    run_dir: PathBuf,
    /// `--set` arguments: the sweep's, the run's values, its stream on Redis.
    sets: Vec<String>,
}

pub(super) fn sweep(args: SweepArgs, registry: &Registry) -> Result<u8, Error> {
    let varied = varied_keys(&args.vary)?;
    let base = load(
        &scenario_args(&args, Vec::new(), None, args.out.clone()),
        registry,
    )?;
    let seeds = match &args.seeds {
        Some(text) => sweep::parse_seeds(text).map_err(Error::Usage)?,
        None => vec![base.seed],
    };
    let jobs = match args.jobs {
        Some(0) => return Err(Error::Usage("--jobs: at least 1".into())),
        Some(n) => n as usize,
        None => std::thread::available_parallelism().map_or(2, usize::from),
    };
    let sweep_dir = base.output_dir.join(format!("{}-sweep", base.name));
    let planned = sweep::plan(&varied, &seeds);
    let total = planned.len();
    let mark = sweep_mark(&args, &varied);
    refuse_another_sweep(&sweep_dir, &mark)?;
    let (results, todo) = prepare(&args, registry, &base, &sweep_dir, planned)?;
    claim_folder(&sweep_dir, mark)?;
    let skipped = total - todo.len();
    let keys: Vec<String> = varied.iter().map(|v| v.key.clone()).collect();
    let csv_path = sweep_dir.join(sweep::SWEEP_FILE);
    let write_csv = |results: &[Option<RunResult>]| {
        let rows: Vec<RunResult> = results.iter().flatten().cloned().collect();
        table::write(&csv_path, &keys, &rows).map_err(|e| Error::Output {
            path: csv_path.clone(),
            source: e,
        })
    };
    write_csv(&results)?;
    stop_on_interrupt();
    let Ran {
        results,
        failed,
        unusable,
    } = run_jobs(&args, jobs, results, todo, &sweep_dir, &write_csv)?;
    write_csv(&results)?;
    let rows: Vec<RunResult> = results.into_iter().flatten().collect();
    if !args.no_plots {
        let title = format!("{} sweep", base.name);
        match crate::plot::sweep::draw_sweep(&sweep_dir.join(crate::plot::PLOTS_DIR), &title, &rows) {
            Ok(files) if !files.is_empty() => {
                println!("plots:   {}", sweep_dir.join(crate::plot::PLOTS_DIR).display());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("the sweep's plots were not drawn: {e}"),
        }
    }
    let runs = if total == 1 { "run" } else { "runs" };
    println!(
        "sweep:   {total} {runs} ({} run now, {skipped} done before, {failed} failed)",
        rows.len() - skipped
    );
    println!("results: {}", csv_path.display());
    if let Some(error) = unusable {
        // Every other run would meet the same backend or model server.
        eprintln!("error: {error}");
        eprintln!(
            "hint: the sweep stopped starting runs: make the backend or model server usable, then run the sweep again (completed runs are kept)"
        );
        return Ok(exit::BACKEND_UNAVAILABLE);
    }
    if INTERRUPTED.load(Ordering::SeqCst) {
        let missing = total - rows.len();
        eprintln!(
            "interrupted: {missing} runs not started and {failed} stopped or failed; run the sweep again to finish it"
        );
        return Ok(exit::INTERRUPTED);
    }
    if failed > 0 {
        eprintln!(
            "error: {failed} of {total} runs failed (their rows in {} say why, in the column `error`)\nhint: a run that failed on its own fault (a behaviour's error, a bad parameter) fails the same way again: fix that first; then run the sweep again, and it runs only the runs that failed",
            csv_path.display()
        );
        return Ok(exit::RUN_FAILED);
    }
    Ok(exit::SUCCESS)
}

/// The file in a sweep's folder that says which sweep it holds.
const MARK: &str = ".agora.sweep";

/// What a sweep's folder records of the sweep (`.agora.sweep`): its scenario, its `--set`
/// values and its varied keys. Another sweep into the same folder is refused.
fn sweep_mark(args: &SweepArgs, varied: &[Varied]) -> String {
    let scenario = std::fs::canonicalize(&args.scenario).unwrap_or_else(|_| args.scenario.clone());
    let keys: Vec<&str> = varied.iter().map(|v| v.key.as_str()).collect();
    serde_json::json!({
        "scenario": scenario.display().to_string(),
        "set": args.sets,
        "vary": keys,
    })
    .to_string()
}

/// Refuses a folder that holds another sweep, before anything in it is touched.
fn refuse_another_sweep(sweep_dir: &std::path::Path, mark: &str) -> Result<(), Error> {
    if let Ok(found) = std::fs::read_to_string(sweep_dir.join(MARK))
        && found.trim() != mark
    {
        let described = serde_json::from_str::<serde_json::Value>(&found)
            .map(|v| format!("{} varying {}", v["scenario"].as_str().unwrap_or("?"), v["vary"]))
            .unwrap_or_else(|_| "something else".into());
        return Err(Error::Usage(format!(
            "{} holds another sweep ({described}): give this one --out ANOTHER_DIR, or delete that folder",
            sweep_dir.display()
        )));
    }
    Ok(())
}

/// Makes the sweep's folder, marked as this sweep's.
fn claim_folder(sweep_dir: &std::path::Path, mark: String) -> Result<(), Error> {
    std::fs::create_dir_all(sweep_dir).map_err(|e| Error::Output {
        path: sweep_dir.to_path_buf(),
        source: e,
    })?;
    let path = sweep_dir.join(MARK);
    std::fs::write(&path, mark + "\n").map_err(|e| Error::Output { path, source: e })
}

/// The `--vary` arguments, read and checked.
fn varied_keys(args: &[String]) -> Result<Vec<Varied>, Error> {
    let varied: Vec<Varied> = args
        .iter()
        .map(|v| Varied::parse(v))
        .collect::<Result<_, _>>()
        .map_err(Error::Usage)?;
    for (i, v) in varied.iter().enumerate() {
        if varied[..i].iter().any(|w| w.key == v.key) {
            return Err(Error::Usage(format!("--vary {}: the key is varied twice", v.key)));
        }
        if ["scenario.seed", "output.dir"].contains(&v.key.as_str()) {
            return Err(Error::Usage(format!(
                "--vary {}: the sweep sets this key itself; use --seeds for seeds and --out for the folder",
                v.key
            )));
        }
    }
    Ok(varied)
}

fn scenario_args(
    args: &SweepArgs,
    sets_from: Vec<(&'static str, String)>,
    seed: Option<u64>,
    out: Option<PathBuf>,
) -> ScenarioArgs {
    ScenarioArgs {
        scenario: args.scenario.clone(),
        sets: args.sets.clone(),
        backend: args.backend,
        redis_url: args.redis_url.clone(),
        seed,
        out,
        sets_from,
    }
}

/// Loads (and so checks) every run's scenario before anything runs; moves the runs that
/// completed under other numbers to this plan's (see `sweep::relocate`); returns the results
/// of the runs that completed before, and the jobs left to run.
fn prepare(
    args: &SweepArgs,
    registry: &Registry,
    base: &crate::scenario::Scenario,
    sweep_dir: &std::path::Path,
    planned: Vec<PlannedRun>,
) -> Result<(Vec<Option<RunResult>>, VecDeque<Job>), Error> {
    let total = planned.len();
    let mut loaded = Vec::with_capacity(total);
    for run in planned {
        let (job, fingerprint) = load_job(args, registry, base, sweep_dir, run, total)?;
        loaded.push((job, fingerprint));
    }
    // On Redis each run's stream is named by its number, so a run under another number is
    // another run (its fingerprint says so): there is nothing to move.
    let folders: Vec<relocate::PlannedFolder> = loaded
        .iter()
        .map(|(job, fingerprint)| relocate::PlannedFolder {
            fingerprint: fingerprint.clone(),
            run_dir: job.run_dir.clone(),
        })
        .collect();
    let relocated = relocate::relocate(sweep_dir, &folders).map_err(|e| match e {
        // A run still going in the folder: bad input, as for `agora run` into a busy folder.
        relocate::RelocateError::Busy(message) => Error::Usage(message),
        relocate::RelocateError::Io(source) => Error::Output {
            path: sweep_dir.to_path_buf(),
            source,
        },
    })?;
    if relocated.moved > 0 {
        eprintln!(
            "moved {} completed runs to their numbers in this plan",
            relocated.moved
        );
    }
    if relocated.set_aside > 0 {
        eprintln!(
            "moved {} run folders that are not in this plan to {}",
            relocated.set_aside,
            sweep_dir.join(relocate::UNPLANNED).display()
        );
    }
    let mut results: Vec<Option<RunResult>> = vec![None; total];
    let mut todo = VecDeque::new();
    for (job, fingerprint) in loaded {
        let done = std::fs::read_to_string(job.run_dir.join("summary.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .filter(|s| table::completed(s, &fingerprint));
        match done {
            Some(summary) => {
                let at = job.planned.number - 1;
                results[at] = Some(RunResult {
                    dir: relative(&job.run_dir, sweep_dir),
                    planned: job.planned,
                    summary: Some(summary),
                    error: None,
                });
            }
            None => todo.push_back(job),
        }
    }
    Ok((results, todo))
}

/// One planned run as a job, its scenario loaded; and that scenario's fingerprint.
fn load_job(
    args: &SweepArgs,
    registry: &Registry,
    base: &crate::scenario::Scenario,
    sweep_dir: &std::path::Path,
    run: PlannedRun,
    total: usize,
) -> Result<(Job, String), Error> {
    let out = sweep_dir.join(run.folder(total));
    // After --set: the run's values, then its own stream on Redis.
    let mut sets_from: Vec<(&'static str, String)> = run.sets().into_iter().map(|s| ("--vary", s)).collect();
    if base.backend.kind == BackendKind::Redis {
        let stream = format!("{}-sweep-{:03}", base.name, run.number);
        sets_from.push(("--set", format!("backend.stream={stream}")));
        sets_from.push(("--set", format!("backend.cache_prefix={stream}:cache:")));
    }
    let scenario_args = scenario_args(args, sets_from, Some(run.seed), Some(out.clone()));
    let scenario = load(&scenario_args, registry)?;
    // The run's process gets them all as --set, in the same order.
    let sets = scenario_args
        .sets
        .into_iter()
        .chain(scenario_args.sets_from.into_iter().map(|(_, s)| s))
        .collect();
    let job = Job {
        planned: run,
        out,
        run_dir: scenario.run_dir(),
        sets,
    };
    Ok((job, scenario.fingerprint()))
}

/// Writes `sweep.csv` from the results so far.
type WriteCsv<'a> = dyn Fn(&[Option<RunResult>]) -> Result<(), Error> + Sync + 'a;

/// What running a sweep's jobs came to.
struct Ran {
    /// Every run's result, by number; `None` for runs not run.
    results: Vec<Option<RunResult>>,
    /// How many runs failed.
    failed: usize,
    /// The error of a run that found the backend or the model server unusable (exit 3), after
    /// which no other run was started.
    unusable: Option<String>,
}

/// Runs the jobs, `jobs` at a time, keeping `sweep.csv` up to date.
fn run_jobs(
    args: &SweepArgs,
    jobs: usize,
    results: Vec<Option<RunResult>>,
    todo: VecDeque<Job>,
    sweep_dir: &std::path::Path,
    write_csv: &WriteCsv<'_>,
) -> Result<Ran, Error> {
    let total = results.len();
    let bar = progress_bar(total, total - todo.len(), args.quiet);
    let exe =
        std::env::current_exe().map_err(|e| Error::Usage(format!("cannot find agora's own program: {e}")))?;
    let queue = Mutex::new(todo);
    let shared = Mutex::new((results, 0usize));
    let unusable: Mutex<Option<String>> = Mutex::new(None);
    // A run that finds the backend or the model server unusable stops the sweep, unless the
    // sweep varies what decides that (a model, a server, a key): then it is one bad value.
    let varies_server = args.vary.iter().any(|v| {
        let key = v.split('=').next().unwrap_or_default().trim();
        // What decides which server is asked, and with which key and model; not the
        // temperature or the token budget.
        ["llm.base_url", "llm.model", "llm.api_key_env", "llm.timeout"].contains(&key)
            || key.starts_with("backend.")
            || key.ends_with(".model")
    });
    let running = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs.min(total.max(1)))
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        let stop = unusable.lock().map_or(true, |u| u.is_some());
                        if INTERRUPTED.load(Ordering::SeqCst) || stop {
                            return;
                        }
                        let Some(job) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                            return;
                        };
                        let (result, code) = run_one(&exe, args, &job, sweep_dir, &running);
                        if code == Some(i32::from(exit::BACKEND_UNAVAILABLE))
                            && !varies_server
                            && let Ok(mut first) = unusable.lock()
                        {
                            let said = result.error.as_deref().unwrap_or_default();
                            let said = said.strip_prefix("exit 3: ").unwrap_or(said);
                            first.get_or_insert_with(|| said.to_string());
                        }
                        let Ok(mut guard) = shared.lock() else { return };
                        let (results, failed) = &mut *guard;
                        if result.error.is_some() {
                            *failed += 1;
                            bar.set_message(format!("{failed} failed"));
                        }
                        let at = result.planned.number - 1;
                        results[at] = Some(result);
                        if let Err(e) = write_csv(results) {
                            tracing::warn!("{e}");
                        }
                        bar.inc(1);
                    }
                })
            })
            .collect();
        forward_terminations(&running, &workers);
    });
    bar.finish_and_clear();
    let panicked = || Error::Usage("a sweep thread panicked".into());
    let (results, failed) = shared.into_inner().map_err(|_| panicked())?;
    Ok(Ran {
        results,
        failed,
        unusable: unusable.into_inner().map_err(|_| panicked())?,
    })
}

/// Runs one job as `agora run`; its result, from its summary and exit, and its exit code.
fn run_one(
    exe: &std::path::Path,
    args: &SweepArgs,
    job: &Job,
    sweep_dir: &std::path::Path,
    running: &Mutex<Vec<u32>>,
) -> (RunResult, Option<i32>) {
    let mut command = Command::new(exe);
    command
        .arg("run")
        .arg(&args.scenario)
        .args(["--quiet", "--overwrite", "--out"])
        .arg(&job.out)
        .args(["--seed", &job.planned.seed.to_string()]);
    for set in &job.sets {
        command.args(["--set", set]);
    }
    match args.backend {
        Some(BackendArg::Memory) => {
            command.args(["--backend", "memory"]);
        }
        Some(BackendArg::Redis) => {
            command.args(["--backend", "redis"]);
        }
        None => {}
    }
    if let Some(url) = &args.redis_url {
        command.args(["--redis-url", url]);
    }
    if args.no_plots {
        command.arg("--no-plots");
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches only the child: a run dies with the
        // sweep (killed, or ended by SIGTERM) instead of running on without it.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|child| wait_for(child, running));
    let code = output.as_ref().ok().and_then(|o| o.status.code());
    let summary = std::fs::read_to_string(job.run_dir.join("summary.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let error = match output {
        Ok(output) if output.status.success() => None,
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let said = stderr
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .unwrap_or("no error message");
            Some(match output.status.code() {
                Some(130) => "interrupted (exit 130)".to_string(),
                Some(code) => format!("exit {code}: {said}"),
                None => format!("killed by a signal: {said}"),
            })
        }
        Err(e) => Some(format!("cannot start {}: {e}", exe.display())),
    };
    let result = RunResult {
        planned: job.planned.clone(),
        dir: relative(&job.run_dir, sweep_dir),
        summary,
        error,
    };
    (result, code)
}

/// Waits for a run to end, its process id in `running` meanwhile so that a SIGTERM can be
/// passed on to it. The id leaves `running` before the process is reaped, so that it is
/// never signalled after the system may have given the id to another process.
fn wait_for(
    mut child: std::process::Child,
    running: &Mutex<Vec<u32>>,
) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    let pid = child.id();
    if let Ok(mut pids) = running.lock() {
        pids.push(pid);
    }
    // A SIGTERM that came between the check for it and the start: this run is told here.
    if INTERRUPTED.load(Ordering::SeqCst) {
        terminate(pid);
    }
    let mut stderr = Vec::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_end(&mut stderr)?;
    }
    // SAFETY: waits, without reaping, for the end of a child of this process.
    while unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT)
    } != 0
        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
    {}
    if let Ok(mut pids) = running.lock() {
        pids.retain(|&p| p != pid);
    }
    let status = child.wait()?;
    Ok(std::process::Output {
        status,
        stdout: Vec::new(),
        stderr,
    })
}

/// `path` relative to `base`, with `/` between parts.
fn relative(path: &std::path::Path, base: &std::path::Path) -> String {
    let rel = path.strip_prefix(base).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn progress_bar(total: usize, done: usize, quiet: bool) -> ProgressBar {
    let target = if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(Some(total as u64), target);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} runs {pos}/{len} [{bar:30}] {elapsed}, about {eta} left {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_position(done as u64);
    bar.reset_eta();
    bar
}
