//! `agora run`, `agora worker`, `agora check` and `agora behaviours`.

use std::sync::Arc;

use super::args::{BackendArg, BehavioursArgs, CheckArgs, PlotArgs, RunArgs, ScenarioArgs, WorkerArgs};
use super::report_error;
use crate::behaviour::Registry;
use crate::error::{Error, exit};
use crate::report::{Progress, StopReason};
use crate::runtime::{self, RunError, RunOptions};
use crate::scenario::{self, BackendKind, Mode, Overrides, Scenario};

pub(super) fn load(args: &ScenarioArgs, registry: &Registry) -> Result<Scenario, Error> {
    let mut overrides = Overrides::new();
    for set in &args.sets {
        overrides.set(set)?;
    }
    for (flag, set) in &args.sets_from {
        overrides.set_from(flag, set)?;
    }
    if let Some(backend) = args.backend {
        let kind = match backend {
            BackendArg::Memory => "memory",
            BackendArg::Redis => "redis",
        };
        overrides.flag("--backend", "backend.kind", toml::Value::String(kind.into()));
    }
    if let Some(url) = &args.redis_url {
        overrides.flag("--redis-url", "backend.url", toml::Value::String(url.clone()));
        // A Redis URL on the command line means "run on this Redis", unless the backend is
        // chosen on the command line too.
        let kind_set = args
            .sets
            .iter()
            .any(|s| s.trim_start().starts_with("backend.kind"));
        if args.backend.is_none() && !kind_set {
            overrides.flag("--redis-url", "backend.kind", toml::Value::String("redis".into()));
        }
    }
    if let Some(seed) = args.seed {
        // TOML integers stop at i64::MAX; a larger seed travels as a string of digits.
        let value =
            i64::try_from(seed).map_or_else(|_| toml::Value::String(seed.to_string()), toml::Value::Integer);
        overrides.flag("--seed", "scenario.seed", value);
    }
    if let Some(out) = &args.out {
        overrides.flag(
            "--out",
            "output.dir",
            toml::Value::String(out.display().to_string()),
        );
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    Ok(scenario::load(&args.scenario, &env, &overrides, registry)?)
}

pub(super) fn run(args: RunArgs, registry: &Registry) -> Result<u8, Error> {
    let scenario = load(&args.scenario, registry)?;
    if args.workers.is_some() && scenario.backend.kind != BackendKind::Redis {
        return Err(Error::Usage(
            "--workers: worker processes share the agents of a run through Redis; add --backend redis".into(),
        ));
    }
    if args.replay.is_some() && scenario.llm.is_none() {
        tracing::warn!(
            "--replay: this scenario asks no language model, so there is nothing to answer from the recording"
        );
    }
    let options = RunOptions {
        resume: args.resume,
        overwrite: args.overwrite,
        workers: args.workers,
        replay: args.replay,
        ..RunOptions::default()
    };
    let progress = Arc::new(match scenario.mode {
        Mode::Lockstep => Progress::lockstep(scenario.ticks.unwrap_or(0), args.quiet),
        Mode::Free => Progress::free(args.quiet),
    });
    let outcome = runtime::run(&scenario, &options, interrupted(), progress.clone());
    progress.finish();
    // A resumed run needs the Redis that holds it: the embedded backend is no way out.
    let offer = |e: RunError| if args.resume { e } else { or_in_memory(e) };
    let mut outcome = outcome.map_err(offer)?;
    let s = &outcome.summary;
    let mut files = vec![
        ("transcript", outcome.transcript.display().to_string()),
        ("summary", outcome.summary_path.display().to_string()),
    ];
    if let Some(path) = &outcome.dead_letters_path {
        files.push(("dead letters", path.display().to_string()));
    }
    if !args.no_plots {
        // The run's outputs are written: a plot that cannot be drawn is a warning, not a
        // failed run.
        match crate::plot::draw_run(&outcome.run_dir) {
            Ok(_) => files.push((
                "plots",
                outcome.run_dir.join(crate::plot::PLOTS_DIR).display().to_string(),
            )),
            Err(e) => tracing::warn!("the plots were not drawn: {e}"),
        }
    }
    println!("{}", s.table(&files).trim_end());
    println!("transcript sha256: {}", s.transcript_sha256);
    if let Some(error) = outcome.error.take() {
        let error = after_server_trouble(error, scenario.backend.kind);
        let e = Error::from(offer(error));
        report_error(&e);
        return Ok(e.exit_code());
    }
    if s.stop_reason == StopReason::Interrupted {
        return Ok(exit::INTERRUPTED);
    }
    if s.behaviour_failures > 0 {
        eprintln!(
            "error: {} message(s) were dead-lettered because their behaviour kept failing (see {})",
            s.behaviour_failures,
            outcome.dead_letters_path.as_deref().map_or_else(
                || "the dead-letter stream".to_string(),
                |p| p.display().to_string()
            )
        );
        return Ok(exit::RUN_FAILED);
    }
    Ok(exit::SUCCESS)
}

/// `agora plot RUN_DIR`.
pub(super) fn plot(args: PlotArgs) -> Result<u8, Error> {
    use crate::plot::PlotError;
    // A folder or a file that is not what agora wrote is bad input; a plot that cannot be
    // drawn is not.
    let sweep_csv = args.run_dir.join(crate::sweep::SWEEP_FILE);
    let drawn = if sweep_csv.is_file() {
        crate::sweep::table::read(&sweep_csv)
            .map_err(PlotError::Data)
            .and_then(|rows| {
                let folder = args
                    .run_dir
                    .canonicalize()
                    .unwrap_or_else(|_| args.run_dir.clone());
                let name = folder
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let title = format!("{} sweep", name.strip_suffix("-sweep").unwrap_or(&name));
                crate::plot::sweep::draw_sweep(&args.run_dir.join(crate::plot::PLOTS_DIR), &title, &rows)
            })
    } else {
        crate::plot::draw_run(&args.run_dir)
    };
    let written = drawn.map_err(|e| match e {
        PlotError::Data(message) => Error::Usage(message),
        // The user named the font: a file that is not one is bad input.
        PlotError::NoFont(message) if std::env::var_os("AGORA_FONT").is_some() => {
            Error::Usage(format!("environment variable AGORA_FONT: {message}"))
        }
        PlotError::NoFont(message) => Error::Failed {
            message,
            hint: Some("set AGORA_FONT to a .ttf file, or install fonts-dejavu-core".to_string()),
        },
        PlotError::Draw(message) => Error::Failed { message, hint: None },
    })?;
    if written.is_empty() && sweep_csv.is_file() {
        eprintln!(
            "no plots: a sweep's plots need a first varied key with numbers for values, and runs that finished with metrics"
        );
    }
    for path in &written {
        println!("{}", path.display());
    }
    Ok(exit::SUCCESS)
}

/// Whether `signal` was ignored when agora started (`&` in a script ignores SIGINT; `nohup`
/// and some batch systems ignore others): an ignored signal stays ignored, as Unix programs do.
pub(super) fn ignored(signal: libc::c_int) -> bool {
    // SAFETY: reads the disposition by setting it and putting it back, before any handler
    // of ours is installed; nothing else in the process handles these signals.
    unsafe {
        let old = libc::signal(signal, libc::SIG_IGN);
        libc::signal(signal, old);
        old == libc::SIG_IGN
    }
}

/// A handler for `signal`, or none when it was ignored or cannot be handled.
fn listen(signal: libc::c_int) -> Option<tokio::signal::unix::Signal> {
    if ignored(signal) {
        return None;
    }
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(signal)).ok()
}

/// The next delivery of a handled signal; never, for one not handled.
async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Completes at the first Ctrl-C (SIGINT) or SIGTERM (`kill`, `timeout`, `docker stop`,
/// a batch scheduler's end of job), which asks the run to stop at its next safe point with
/// its outputs written. A second Ctrl-C, a second or more after the first, ends the process
/// at once. Further SIGTERMs do not: supervisors (systemd, Slurm, `timeout`) send it to every
/// process of a job, and a sweep passes it on as well, so one stop request often arrives
/// twice; they follow it with SIGKILL when they mean it.
async fn interrupted() {
    let mut sigint = listen(libc::SIGINT);
    let mut sigterm = listen(libc::SIGTERM);
    let what = match first_stop_signal(&mut sigint, &mut sigterm).await {
        StopSignal::CtrlC => "interrupted (Ctrl-C): stopping at the next safe point (Ctrl-C again to abort)",
        StopSignal::Sigterm => "terminated (SIGTERM): stopping at the next safe point (Ctrl-C to abort)",
    };
    tracing::warn!("{what}");
    let first = std::time::Instant::now();
    actix::spawn(async move {
        loop {
            tokio::select! {
                // A second Ctrl-C in the same instant is the same request, delivered twice
                // (to the process group and to the process).
                () = next(&mut sigint) => if first.elapsed() >= REPEAT_GRACE {
                    break;
                },
                () = next(&mut sigterm) => {}
            }
        }
        eprintln!("aborted: the run's outputs are not written; on Redis, --resume continues it");
        std::process::exit(i32::from(exit::INTERRUPTED));
    });
}

/// A signal that asks agora to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopSignal {
    /// SIGINT.
    CtrlC,
    Sigterm,
}

impl StopSignal {
    fn name(self) -> &'static str {
        match self {
            StopSignal::CtrlC => "Ctrl-C",
            StopSignal::Sigterm => "SIGTERM",
        }
    }
}

/// The first of the signals handled that asks agora to stop.
async fn first_stop_signal(
    sigint: &mut Option<tokio::signal::unix::Signal>,
    sigterm: &mut Option<tokio::signal::unix::Signal>,
) -> StopSignal {
    tokio::select! {
        () = next(sigint) => StopSignal::CtrlC,
        () = next(sigterm) => StopSignal::Sigterm,
    }
}

/// Completes at the first Ctrl-C (SIGINT) or SIGTERM, with which it was.
async fn signalled() -> &'static str {
    let mut sigint = listen(libc::SIGINT);
    let mut sigterm = listen(libc::SIGTERM);
    first_stop_signal(&mut sigint, &mut sigterm).await.name()
}

/// How soon after the first a second Ctrl-C is taken for the same one.
const REPEAT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A run that a model server stopped (down, refusing, rate-limiting past the retries) says
/// how to go on: on Redis, `--resume` asks only for the answers it lacks; on the embedded
/// backend nothing survives the process, so the next run starts over.
fn after_server_trouble(error: RunError, backend: crate::scenario::BackendKind) -> RunError {
    match error {
        RunError::Completion { agent, tick, error } if error.cannot_be_used() => {
            let then = match backend {
                crate::scenario::BackendKind::Redis => {
                    "then continue the run with --resume: it asks only for the answers it lacks"
                }
                _ => {
                    "on the embedded backend a stopped run starts over (and asks again): run LLM scenarios with --backend redis to --resume them"
                }
            };
            let hint = match &error.hint {
                Some(hint) => format!("{hint}; {then}"),
                None => then.to_string(),
            };
            RunError::Completion {
                agent,
                tick,
                error: error.with_hint(hint),
            }
        }
        other => other,
    }
}

/// A run on a Redis that cannot be reached could run on the embedded backend instead.
fn or_in_memory(error: RunError) -> RunError {
    match error {
        RunError::Backend(e) => RunError::Backend(e.or_in_memory()),
        other => other,
    }
}

pub(super) fn worker(args: WorkerArgs, registry: &Registry) -> Result<u8, Error> {
    let shard = runtime::ShardId::parse(&args.shard).map_err(Error::Usage)?;
    let scenario = load(
        &ScenarioArgs {
            scenario: args.scenario,
            sets: args.sets,
            // Workers only make sense on Redis.
            backend: Some(BackendArg::Redis),
            redis_url: args.redis_url,
            seed: None,
            out: None,
            sets_from: Vec::new(),
        },
        registry,
    )?;
    let parent = std::env::var("AGORA_WORKER_PARENT")
        .ok()
        .and_then(|p| p.parse().ok());
    let options = runtime::WorkerOptions { shard, parent };
    // Started by `agora run --workers N`, a worker leaves signals to that run, which stops it;
    // started by hand, Ctrl-C or SIGTERM stops it.
    let end = if parent.is_some() {
        runtime::run_worker(&scenario, &options, std::future::pending())?
    } else {
        runtime::run_worker(&scenario, &options, signalled())?
    };
    Ok(match end {
        runtime::WorkerEnd::RunOver => exit::SUCCESS,
        runtime::WorkerEnd::Stopped => exit::INTERRUPTED,
    })
}

pub(super) fn check(args: CheckArgs, registry: &Registry) -> Result<u8, Error> {
    let scenario = load(&args.scenario, registry)?;
    println!(
        "# {}: valid; {} agents, {} mode, {} backend",
        scenario.path.display(),
        scenario.agents.len(),
        scenario.mode.as_str(),
        scenario.backend.kind.as_str()
    );
    print!("{}", scenario.to_toml());
    Ok(exit::SUCCESS)
}

/// `agora behaviours [SCENARIO]`: the built-in behaviours, and a scenario's programs.
pub(super) fn behaviours(args: BehavioursArgs, registry: &Registry) -> Result<u8, Error> {
    print!("{}", behaviours_text(registry));
    if let Some(path) = args.scenario {
        let scenario = load(
            &ScenarioArgs {
                scenario: path,
                sets: Vec::new(),
                backend: None,
                redis_url: None,
                seed: None,
                out: None,
                sets_from: Vec::new(),
            },
            registry,
        )?;
        let mut listed: Vec<&str> = Vec::new();
        for table in &scenario.tables {
            let Some(program) = table.behaviour.as_program() else {
                continue;
            };
            if listed.contains(&program.name.as_str()) {
                continue;
            }
            listed.push(&program.name);
            let command = scenario
                .programs
                .get(&program.name)
                .map_or_else(String::new, |spec| format!(" (a program: {})", spec.shown()));
            let summary = format!("{}{command}", program.summary);
            print!(
                "{}",
                behaviour_text(&program.name, &summary, &program.param_docs())
            );
        }
    }
    Ok(exit::SUCCESS)
}

/// `agora behaviours`: each behaviour, what it does, its parameters and their defaults.
pub fn behaviours_text(registry: &Registry) -> String {
    registry
        .entries()
        .map(|entry| behaviour_text(&entry.name, &entry.summary, &entry.params))
        .collect()
}

fn behaviour_text(name: &str, summary: &str, params: &[crate::behaviour::ParamDoc]) -> String {
    let mut out = format!("{name}\n  {summary}\n");
    let width = params.iter().map(|p| assignment(p).len()).max().unwrap_or(0);
    for p in params {
        let assignment = assignment(p);
        out.push_str(&format!("    {assignment:<width$}  {}\n", p.doc));
    }
    out.push('\n');
    out
}

/// `name = default`, or `name (optional)` for a parameter unset by default. A long default
/// (a template) is cut short on one line: `agora check` prints a scenario's in full.
fn assignment(p: &crate::behaviour::ParamDoc) -> String {
    const LONGEST: usize = 36;
    let Some(default) = &p.default else {
        return format!("{} (optional)", p.name);
    };
    let one_line = match toml::from_str::<toml::Table>(&format!("v = {default}")) {
        Ok(t) => match t.get("v") {
            Some(toml::Value::String(s)) => format!("{s:?}"),
            _ => default.replace('\n', " "),
        },
        Err(_) => default.replace('\n', " "),
    };
    if one_line.chars().count() <= LONGEST {
        return format!("{} = {one_line}", p.name);
    }
    let cut: String = one_line.chars().take(LONGEST - 4).collect();
    format!("{} = {cut}...\"", p.name)
}
