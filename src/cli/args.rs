//! The command line's arguments, as clap reads them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "Run multi-agent simulations on Redis Streams (or the embedded memory backend).";

const AFTER_HELP: &str = "\
Examples:
  agora run scenarios/gossip.toml                 run on the embedded memory backend
  agora run scenarios/gossip.toml --seed 7        another seed, another (reproducible) run
  agora run scenarios/relay.toml --backend redis  run on Redis at redis://127.0.0.1:6379/0
  agora check scenarios/opinion.toml              validate and show the resolved scenario
  agora behaviours                                list behaviours and their parameters

Exit codes: 0 success, 1 failure while running, 2 bad input, 3 backend unusable,
130 interrupted (Ctrl-C or SIGTERM; the outputs are written).
Warnings go to stderr; RUST_LOG=agora=debug asks for more, with timestamps.";

#[derive(Parser)]
#[command(name = "agora", version, about = ABOUT, after_help = AFTER_HELP)]
pub(super) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub(super) enum Command {
    /// Run a scenario and write its transcript, summary, metrics and agents CSVs, cache, states and plots
    #[command(after_help = "\
Precedence, highest first: --set and the flags, then AGORA_<SECTION>__<KEY> environment
variables (such as AGORA_SCENARIO__SEED=7), then the file, then defaults.

Output: {output.dir}/{name}-{seed}/: transcript.jsonl, summary.json, metrics.csv (tick,name,value),
agents.csv (tick,agent,name,value), cache.jsonl, states.jsonl and plots/; the last line printed
is `transcript sha256: <hex>`.

Exit codes: 0 done, 1 a failure while running, 2 bad input (or the stream is in use by a run
still going, or its folder by another run), 3 the backend cannot be used, 130 interrupted by
Ctrl-C or SIGTERM (the outputs are written; --resume continues a Redis run).")]
    Run(RunArgs),
    /// Host one share of a scenario's agents, for runs spread over processes
    Worker(WorkerArgs),
    /// Validate a scenario and print it resolved, every default filled in
    Check(CheckArgs),
    /// List the behaviours and their parameters (with a scenario: its programs' too)
    Behaviours(BehavioursArgs),
    /// Delete a run's keys from Redis: stream, groups, dead letters, cache
    #[command(after_help = "\
Deletes the stream, its consumer groups, its dead letters ({stream}:dead), the cache
({cache-prefix}*), the run's record and its lease. A run of the stream still going is
warned about, and stops when it finds its keys gone. The stream key is the scenario's
backend.stream (its name unless set; `agora check` shows it).

Example: agora cleanup --redis-url redis://127.0.0.1:6379/0 --stream gossip

Exit codes: 0 deleted (also when there was nothing to delete), 2 no Redis named (neither
--redis-url nor AGORA_BACKEND__URL) or the keys are not a run's, 3 Redis cannot be used.")]
    Cleanup(CleanupArgs),
    /// Show a run's keys on Redis: stream length, groups' pending and lag, dead letters, cache
    #[command(after_help = "\
Reads, changes nothing, and may be run while the run goes on. Shows the stream and its
length; the dead letters ({stream}:dead); the cache (agents' lists, their entries, the
sorted set); the run's record (mode, tick, seed, as the run last wrote them); model calls
when the run asks a model; on a Redis Cluster, what the agents' outboxes hold not relayed
yet; who holds the run's lease; then one row per consumer group (one per agent):
  consumers       the consumers reading in the group
  pending         entries delivered to the group and not acknowledged yet
  lag             entries of the stream the group has not read yet (? when Redis cannot tell)
  last delivered  the id of the last entry the group read
The stream key is the scenario's backend.stream (its name unless set; `agora check` shows it).

Examples:
  agora inspect --stream gossip
  agora inspect --redis-url redis://127.0.0.1:6380/0 --stream gossip --json

Exit codes: 0 shown, 2 no such stream (or its keys are not a run's), 3 Redis cannot be used.")]
    Inspect(InspectArgs),
    /// Draw a run's plots again from its folder (metrics.csv and agents.csv) into RUN_DIR/plots,
    /// or a sweep's from its sweep.csv
    #[command(after_help = "\
Each model-level metric over time (counters as running totals), and each agent-level value as
one line per agent (every k-th agent beyond 2000), as SVG and PNG of 1200 x 750 pixels. The
text needs a TrueType font: the usual system ones are found, or set AGORA_FONT to a .ttf file.")]
    Plot(PlotArgs),
    /// Run a scenario over a grid of parameter values and seeds; sum the runs up in sweep.csv
    #[command(after_help = "\
Every combination of the --vary values runs with every seed (the first --vary outermost, seeds
innermost), --jobs runs at a time, each an `agora run` of its own into
{out}/{name}-sweep/run-NNN/{name}-{seed}/. Then {out}/{name}-sweep/sweep.csv has one row per
run: run, seed, one column per varied key, stop_reason, ticks, messages, deliveries,
elapsed_s, transcript_sha256, the last value of every model-level metric, dir and error; and
{out}/{name}-sweep/plots/ each metric's final value against the first varied key (mean over
seeds, 95% interval).

Run it again and it skips the runs that completed (same scenario, same values); runs cut short
or failed run again. A failed run is a row with its error, and the sweep goes on (exit 1 at
the end); a run that finds the backend or the model server unusable (exit 3) stops the sweep
from starting more (exit 3), unless the sweep varies llm.*, backend.* or a model. On Redis every run has a stream of its own ({name}-sweep-NNN).

Example: agora sweep scenarios/opinion.toml --vary agents.0.params.epsilon=0.05,0.1,0.2,0.4 --seeds 1..10")]
    Sweep(SweepArgs),
}

#[derive(Args)]
pub(super) struct SweepArgs {
    /// The scenario file, such as scenarios/opinion.toml
    pub scenario: PathBuf,
    /// A key and the values to run it with, as KEY=V1,V2,... (the dotted keys of --set, such
    /// as agents.0.params.epsilon=0.1,0.2); repeatable: every combination runs
    #[arg(long = "vary", value_name = "KEY=V1,V2,...")]
    pub vary: Vec<String>,
    /// The seeds of every combination: a range A..B, both ends included (1..10 is ten seeds),
    /// or a list such as 1,2,5 [default: the scenario's seed]
    #[arg(long, value_name = "SEEDS", allow_hyphen_values = true)]
    pub seeds: Option<String>,
    /// How many runs at a time [default: the number of cores]
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = whole_number::<u32>)]
    pub jobs: Option<u32>,
    /// Override a key for every run, as with agora run (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// The backend of every run: the embedded `memory` one, or `redis`
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// The Redis URL of every run (also means --backend redis)
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// The output directory (output.dir): the sweep goes into {out}/{name}-sweep/
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// No progress bar
    #[arg(long)]
    pub quiet: bool,
    /// Draw no plots, neither the runs' nor the sweep's
    #[arg(long)]
    pub no_plots: bool,
}

#[derive(Args)]
pub(super) struct PlotArgs {
    /// A run's folder, such as runs/opinion-7, or a sweep's, such as runs/opinion-sweep
    pub run_dir: PathBuf,
}

#[derive(Args)]
pub(super) struct ScenarioArgs {
    /// The scenario file, such as scenarios/gossip.toml
    pub scenario: PathBuf,
    /// Override a key with a TOML value, such as --set scenario.seed=7 or
    /// --set agents.0.count=50 (repeatable; plain words are strings)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// The backend: the embedded `memory` one, or `redis`
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// The Redis URL, which also means --backend redis: redis://[user:password@]host:port/db,
    /// rediss:// for TLS, or unix:///path/to/redis.sock?db=N for a Unix socket; for a Redis
    /// Cluster, any node's redis://host:port with --set backend.cluster=true
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// The seed (scenario.seed)
    #[arg(long, allow_hyphen_values = true, value_parser = whole_number::<u64>)]
    pub seed: Option<u64>,
    /// The output directory (output.dir)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// `KEY=VALUE` overrides that other flags gave (a sweep's `--vary`), applied after
    /// `--set`, each with the flag its errors name.
    #[arg(skip)]
    pub sets_from: Vec<(&'static str, String)>,
}

#[derive(Args)]
pub(super) struct RunArgs {
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// No progress line (the summary is still printed)
    #[arg(long)]
    pub quiet: bool,
    /// Continue an interrupted Redis run from what Redis holds (never cleans up first)
    #[arg(long)]
    pub resume: bool,
    /// Replace the outputs of a run of another scenario (or other parameters) in the run's
    /// folder; without it such a run is moved to {name}-{seed}.previous-N beside it
    #[arg(long)]
    pub overwrite: bool,
    /// Run the agents in N worker processes sharing the Redis backend
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = whole_number::<u32>)]
    pub workers: Option<u32>,
    /// Answer every LLM request from a recording (the llm.jsonl of an earlier run), with no
    /// network and no key: the transcript is the recorded run's, byte for byte
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Do not draw the plots (RUN_DIR/plots; `agora plot RUN_DIR` draws them later)
    #[arg(long)]
    pub no_plots: bool,
}

#[derive(Args)]
#[command(after_help = "\
Start one worker per share, on any machines that reach the Redis, with the same scenario
(file, --set, environment) as the coordinator; then `agora run <scenario> --backend redis
--workers 0` coordinates them. Agents are shared out by name: the same on every machine.")]
pub(super) struct WorkerArgs {
    /// The scenario file (the same as the coordinator's)
    pub scenario: PathBuf,
    /// Which share of the agents to host, as I/N (from 1/N to N/N)
    #[arg(long, value_name = "I/N")]
    pub shard: String,
    /// The Redis URL (default: the scenario's backend.url)
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Override a key, as for `agora run`
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

#[derive(Args)]
pub(super) struct BehavioursArgs {
    /// A scenario whose behaviour programs ([behaviours.NAME]) to list as well
    pub scenario: Option<PathBuf>,
}

#[derive(Args)]
pub(super) struct CheckArgs {
    #[command(flatten)]
    pub scenario: ScenarioArgs,
}

#[derive(Args)]
pub(super) struct CleanupArgs {
    /// The Redis URL (default: $AGORA_BACKEND__URL; one of the two is needed)
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// The stream key
    #[arg(long, value_name = "KEY")]
    pub stream: String,
    /// Delete groups {group-prefix}1..N instead of those XINFO GROUPS lists
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = whole_number::<u64>)]
    pub num_groups: Option<u64>,
    /// Consumer group prefix
    #[arg(long, value_name = "P", default_value = "group_")]
    pub group_prefix: String,
    /// Cache key prefix (default: "{stream}:cache:")
    #[arg(long, value_name = "P")]
    pub cache_prefix: Option<String>,
}

#[derive(Args)]
pub(super) struct InspectArgs {
    /// The Redis URL (default: $AGORA_BACKEND__URL, else redis://127.0.0.1:6379/0)
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// The stream key
    #[arg(long, value_name = "KEY")]
    pub stream: String,
    /// Cache key prefix (default: "{stream}:cache:")
    #[arg(long, value_name = "P")]
    pub cache_prefix: Option<String>,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum BackendArg {
    Memory,
    Redis,
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
