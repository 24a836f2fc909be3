//! The `agora` command line. Parsing and printing only: every command calls the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};

use std::time::Duration;

use crate::backend::redis::{RedisBackend, admin};
use crate::backend::url::RedisUrl;
use crate::backend::{Keys, RunStore};
use crate::behaviour::Registry;
use crate::error::{Error, exit};
use crate::report::Progress;
use crate::runtime::{self, RunOptions};
use crate::scenario::{self, BackendKind, Mode, Overrides, Scenario};

const ABOUT: &str = "Run multi-agent simulations on Redis Streams (or the embedded memory backend).";

const AFTER_HELP: &str = "\
Examples:
  agora run scenarios/gossip.toml                 run on the embedded memory backend
  agora run scenarios/gossip.toml --seed 7        another seed, another (reproducible) run
  agora run scenarios/relay.toml --backend redis  run on Redis at redis://127.0.0.1:6379/0
  agora check scenarios/opinion.toml              validate and show the resolved scenario
  agora behaviours                                list behaviours and their parameters

Exit codes: 0 success, 1 failure while running, 2 bad input, 3 backend unusable.
Warnings go to stderr; RUST_LOG=agora=debug asks for more, with timestamps.";

#[derive(Parser)]
#[command(name = "agora", version, about = ABOUT, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario and write transcript.jsonl and summary.json
    #[command(after_help = "\
Precedence, highest first: --set and the flags, then AGORA_<SECTION>__<KEY> environment
variables (such as AGORA_SCENARIO__SEED=7), then the file, then defaults.

Output: {output.dir}/{name}-{seed}/transcript.jsonl and summary.json; the last line printed is
`transcript sha256: <hex>`.

Exit codes: 0 done, 1 a failure while running, 2 bad input (or the stream is in use by a run
still going), 3 the backend cannot be used.")]
    Run(RunArgs),
    /// Host one share of a scenario's agents, for runs spread over processes
    Worker(WorkerArgs),
    /// Validate a scenario and print it resolved, every default filled in
    Check(CheckArgs),
    /// List the behaviours and their parameters
    Behaviours,
    /// Delete a run's keys from Redis: stream, groups, dead letters, cache
    Cleanup(CleanupArgs),
    /// Show a run's keys on Redis: stream length, groups' pending and lag, dead letters, cache
    Inspect(InspectArgs),
}

#[derive(Args)]
struct ScenarioArgs {
    /// The scenario file, such as scenarios/gossip.toml
    scenario: PathBuf,
    /// Override a key with a TOML value, such as --set scenario.seed=7 or
    /// --set agents.0.count=50 (repeatable; plain words are strings)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// The backend: the embedded `memory` one, or `redis`
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// The Redis URL, which also means --backend redis: redis://[user:password@]host:port/db,
    /// rediss:// for TLS, or unix:///path/to/redis.sock?db=N for a Unix socket
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// The seed (scenario.seed)
    #[arg(long, allow_hyphen_values = true, value_parser = whole_number::<u64>)]
    seed: Option<u64>,
    /// The output directory (output.dir)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    scenario: ScenarioArgs,
    /// No progress line (the summary is still printed)
    #[arg(long)]
    quiet: bool,
    /// Continue an interrupted Redis run from what Redis holds (never cleans up first)
    #[arg(long)]
    resume: bool,
    /// Run the agents in N worker processes sharing the Redis backend
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = whole_number::<u32>)]
    workers: Option<u32>,
}

#[derive(Args)]
#[command(after_help = "\
Start one worker per share, on any machines that reach the Redis, with the same scenario
(file, --set, environment) as the coordinator; then `agora run <scenario> --backend redis
--workers 0` coordinates them. Agents are shared out by name: the same on every machine.")]
struct WorkerArgs {
    /// The scenario file (the same as the coordinator's)
    scenario: PathBuf,
    /// Which share of the agents to host, as I/N (from 1/N to N/N)
    #[arg(long, value_name = "I/N")]
    shard: String,
    /// The Redis URL (default: the scenario's backend.url)
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// Override a key, as for `agora run`
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    scenario: ScenarioArgs,
}

#[derive(Args)]
struct CleanupArgs {
    /// The Redis URL
    #[arg(long, value_name = "URL")]
    redis_url: String,
    /// The stream key
    #[arg(long, value_name = "KEY")]
    stream: String,
    /// Delete groups {group-prefix}1..N instead of those XINFO GROUPS lists
    #[arg(long, value_name = "N")]
    num_groups: Option<u64>,
    /// Consumer group prefix
    #[arg(long, value_name = "P", default_value = "group_")]
    group_prefix: String,
    /// Cache key prefix (default: "{stream}:cache:")
    #[arg(long, value_name = "P")]
    cache_prefix: Option<String>,
}

#[derive(Args)]
struct InspectArgs {
    /// The Redis URL
    #[arg(long, value_name = "URL")]
    redis_url: String,
    /// The stream key
    #[arg(long, value_name = "KEY")]
    stream: String,
    /// Cache key prefix (default: "{stream}:cache:")
    #[arg(long, value_name = "P")]
    cache_prefix: Option<String>,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Memory,
    Redis,
}

/// Runs the command line with `registry`'s behaviours; returns the process's exit code.
/// A program with behaviours of its own calls this from its `main`.
pub fn main(registry: Registry) -> ExitCode {
    install_panic_hook();
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatch(cli, &registry)));
    let result = match outcome {
        Ok(result) => result,
        Err(panic) => {
            let message = crate::runtime::panic_text(&*panic);
            eprintln!("error: internal error: {message}");
            eprintln!("hint: this is a bug in agora; please report it with the scenario file");
            return ExitCode::from(exit::RUN_FAILED);
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            report_error(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

fn report_error(e: &Error) {
    eprintln!("error: {}", one_line(&e.to_string()));
    if let Some(hint) = e.hint() {
        eprintln!("hint: {}", one_line(&hint));
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// clap's errors as one `error:` line and a `hint:`; help and version as clap prints them.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!("error: no command given: run, worker, check, behaviours, cleanup or inspect");
            eprintln!("hint: agora run scenarios/gossip.toml runs a scenario; agora --help says more");
            ExitCode::from(exit::BAD_INPUT)
        }
        _ => {
            let rendered = e.render().to_string();
            // clap writes the message, sometimes continued on indented lines, then a blank
            // line and the usage.
            let message: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
                .collect();
            let message = message.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("error: {}", one_line(message));
            let usage = rendered.lines().find(|l| l.starts_with("Usage:"));
            match usage {
                Some(u) => eprintln!("hint: {} (see --help)", u.trim()),
                None => eprintln!("hint: see agora --help"),
            }
            ExitCode::from(exit::BAD_INPUT)
        }
    }
}

fn dispatch(cli: Cli, registry: &Registry) -> Result<u8, Error> {
    match cli.command {
        Command::Run(args) => run(args, registry),
        Command::Check(args) => check(args, registry),
        Command::Behaviours => {
            print!("{}", behaviours_text(registry));
            Ok(exit::SUCCESS)
        }
        Command::Worker(args) => worker(args, registry),
        Command::Cleanup(args) => cleanup(args),
        Command::Inspect(args) => inspect(args),
    }
}

fn load(args: &ScenarioArgs, registry: &Registry) -> Result<Scenario, Error> {
    let mut overrides = Overrides::new();
    for set in &args.sets {
        overrides.set(set)?;
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

fn run(args: RunArgs, registry: &Registry) -> Result<u8, Error> {
    let scenario = load(&args.scenario, registry)?;
    if args.workers.is_some() && scenario.backend.kind != BackendKind::Redis {
        return Err(Error::Usage(
            "--workers: worker processes share the agents of a run through Redis; add --backend redis".into(),
        ));
    }
    let options = RunOptions {
        resume: args.resume,
        workers: args.workers,
        ..RunOptions::default()
    };
    let progress = Arc::new(match scenario.mode {
        Mode::Lockstep => Progress::lockstep(scenario.ticks.unwrap_or(0), args.quiet),
        Mode::Free => Progress::free(args.quiet),
    });
    let outcome = runtime::run(&scenario, &options, interrupted(), progress.clone());
    progress.finish();
    let outcome = outcome?;
    let s = &outcome.summary;
    println!("{}", s.table().trim_end());
    println!("  transcript    {}", outcome.transcript.display());
    println!("  summary       {}", outcome.summary_path.display());
    if let Some(path) = &outcome.dead_letters_path {
        println!("  dead letters  {}", path.display());
    }
    println!("transcript sha256: {}", s.transcript_sha256);
    if let Some(error) = outcome.error {
        let e = Error::from(error);
        report_error(&e);
        return Ok(e.exit_code());
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

/// Completes at the first Ctrl-C, which asks the run to stop at its next safe point; a
/// second Ctrl-C ends the process at once.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        // No signal handling here: never interrupted.
        return std::future::pending().await;
    }
    tracing::warn!("interrupted: stopping at the next safe point (Ctrl-C again to abort)");
    actix::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
}

fn worker(args: WorkerArgs, registry: &Registry) -> Result<u8, Error> {
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
        },
        registry,
    )?;
    let parent = std::env::var("AGORA_WORKER_PARENT")
        .ok()
        .and_then(|p| p.parse().ok());
    runtime::run_worker(&scenario, &runtime::WorkerOptions { shard, parent })?;
    Ok(exit::SUCCESS)
}

fn check(args: CheckArgs, registry: &Registry) -> Result<u8, Error> {
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

/// Connects to Redis for `cleanup` and `inspect`.
fn connect_admin(
    url: &str,
    stream: &str,
    group_prefix: &str,
    cache_prefix: Option<&str>,
) -> Result<(RedisUrl, Keys), Error> {
    let url = RedisUrl::parse(url).map_err(|m| Error::Usage(format!("--redis-url: {m}")))?;
    if stream.is_empty() {
        return Err(Error::Usage("--stream: the stream key must not be empty".into()));
    }
    let cache_prefix = cache_prefix.map_or_else(|| Keys::default_cache_prefix(stream), str::to_string);
    Ok((url, Keys::new(stream, group_prefix, cache_prefix)))
}

fn cleanup(args: CleanupArgs) -> Result<u8, Error> {
    let (url, keys) = connect_admin(
        &args.redis_url,
        &args.stream,
        &args.group_prefix,
        args.cache_prefix.as_deref(),
    )?;
    let groups = match args.num_groups {
        Some(count) => admin::Groups::Numbered {
            prefix: args.group_prefix.clone(),
            count,
        },
        None => admin::Groups::Listed,
    };
    let report = actix_rt::System::new().block_on(async {
        let backend = RedisBackend::connect(&url, keys.clone(), Duration::from_secs(5)).await?;
        let holder = backend.lease_holder().await?;
        if let Some(holder) = holder.as_deref().filter(|h| !crate::runtime::liveness::gone(h)) {
            tracing::warn!(
                "a run of stream {:?} is still going: {}; its keys are deleted all the same, and it will stop",
                keys.stream,
                crate::runtime::liveness::describe(holder)
            );
        }
        let mut report = admin::cleanup(&backend, groups).await?;
        // A run's own cleanup keeps the lease; this one removes the run, lease and all (a live
        // run finds its lease and record gone, and stops).
        if let Some(holder) = holder {
            backend.release_lease(&holder).await?;
            report.keys += 1;
        }
        Ok::<_, crate::backend::BackendError>(report)
    })?;
    println!(
        "deleted {} consumer group{} and {} key{} of stream {:?} on {url}",
        report.groups,
        if report.groups == 1 { "" } else { "s" },
        report.keys,
        if report.keys == 1 { "" } else { "s" },
        keys.stream
    );
    Ok(exit::SUCCESS)
}

fn inspect(args: InspectArgs) -> Result<u8, Error> {
    let (url, keys) = connect_admin(
        &args.redis_url,
        &args.stream,
        "group_",
        args.cache_prefix.as_deref(),
    )?;
    let inspection = actix_rt::System::new().block_on(async {
        let backend = RedisBackend::connect(&url, keys, Duration::from_secs(5)).await?;
        admin::inspect(&backend).await
    })?;
    if args.json {
        let json = serde_json::to_string_pretty(&inspection).map_err(|e| Error::Usage(e.to_string()))?;
        println!("{json}");
    } else {
        print!("{}", inspection.table());
    }
    Ok(exit::SUCCESS)
}

/// `agora behaviours`: each behaviour, what it does, its parameters and their defaults.
pub fn behaviours_text(registry: &Registry) -> String {
    let mut out = String::new();
    for entry in registry.entries() {
        out.push_str(&format!("{}\n  {}\n", entry.name, entry.summary));
        let width = entry
            .params
            .iter()
            .map(|p| assignment(p).len())
            .max()
            .unwrap_or(0);
        for p in &entry.params {
            let assignment = assignment(p);
            out.push_str(&format!("    {assignment:<width$}  {}\n", p.doc));
        }
        out.push('\n');
    }
    out
}

/// `name = default`, or `name (optional)` for a parameter unset by default.
fn assignment(p: &crate::behaviour::ParamDoc) -> String {
    match &p.default {
        Some(default) => format!("{} = {default}", p.name),
        None => format!("{} (optional)", p.name),
    }
}

/// Warnings go to stderr as `warning: ...` lines, in the style of the `error:` line a failed
/// command ends with. `RUST_LOG` asks for more, in tracing's full format with timestamps.
fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    match EnvFilter::try_from_default_env() {
        Ok(filter) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(crate::report::progress::LogWriter)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false)
                .try_init();
        }
        Err(_) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new("warn"))
                .with_writer(crate::report::progress::LogWriter)
                .event_format(crate::report::progress::PlainLines)
                .try_init();
        }
    }
}

/// Panics are caught (behaviours are retried; anything else becomes one `error:` line), so
/// the default hook's message and backtrace are never printed.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::debug!("panic{location}: {}", crate::runtime::panic_text(info.payload()));
    }));
}

/// Parses a flag's whole number, saying which numbers it takes when it is not one (`-1`, `1.5`,
/// `ten`); clap would otherwise read `-1` as an unknown flag.
fn whole_number<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr + Largest,
{
    text.trim()
        .parse()
        .map_err(|_| format!("expected a whole number from 0 to {}", T::LARGEST))
}

trait Largest {
    const LARGEST: u64;
}

impl Largest for u32 {
    const LARGEST: u64 = u32::MAX as u64;
}

impl Largest for u64 {
    const LARGEST: u64 = u64::MAX;
}
