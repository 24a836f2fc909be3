//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;

use agora::Message;

/// Three behaviours on a small world: opinions broadcast to followers, rumors addressed to
/// random peers (who may not follow the teller), a discussion.
pub const SMALL_WORLD: &str = r#"
[scenario]
name = "village"
seed = 5
ticks = 25

[network]
kind = "watts_strogatz"
k = 4
p = 0.2

[[agents]]
id = "citizen"
count = 40
behaviour = "opinion"

[[agents]]
id = "gossip"
count = 20
behaviour = "gossip"
params = { fanout = 2, seeds = 2 }

[[agents]]
id = "speaker"
count = 4
behaviour = "discussion"
params = { policy = "echo" }
"#;

/// Runs a future to completion on a fresh actix system, as `agora run` does.
pub fn block_on<F: Future>(future: F) -> F::Output {
    actix_rt::System::new().block_on(future)
}

pub fn message(sender: &str, seq: u64, tick: Option<u64>, to: Option<&str>, content: &str) -> Arc<Message> {
    Arc::new(Message {
        tick,
        sender_id: Arc::from(sender),
        seq: Some(seq),
        to: to.map(Arc::from),
        content: content.to_string(),
        data: None,
        decoded: agora::message::DecodedData::default(),
    })
}

pub fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
pub mod conformance;

pub mod remote_cache {
    //! The memory backend, except that cache reads can never be answered at once: every
    //! read goes through a fetch, as on Redis. Running a scenario on it exercises the
    //! runtime's fetch-and-replay of agent steps.

    use std::sync::Arc;
    use std::time::Duration;

    use agora::backend::memory::{MemoryBackend, MemoryTransport};
    use agora::backend::*;
    use agora::message::{Batch, Delivery, EntryId, Message};

    #[derive(Clone)]
    pub struct RemoteCache(pub MemoryBackend);

    impl Stream for RemoteCache {
        async fn ensure_groups(&self, groups: &[String]) -> Result<(), BackendError> {
            self.0.ensure_groups(groups).await
        }
        async fn read(&self, reads: &[GroupRead]) -> Result<Vec<Batch>, BackendError> {
            self.0.read(reads).await
        }
        async fn ack(&self, group: &str, ids: &[EntryId]) -> Result<u64, BackendError> {
            self.0.ack(group, ids).await
        }
        async fn claim(
            &self,
            group: &str,
            consumer: &str,
            min_idle: Duration,
        ) -> Result<ClaimReport, BackendError> {
            self.0.claim(group, consumer, min_idle).await
        }
        async fn trim(&self, maxlen: u64) -> Result<u64, BackendError> {
            self.0.trim(maxlen).await
        }
        async fn publish(&self, messages: &[Arc<Message>]) -> Result<Vec<EntryId>, BackendError> {
            self.0.publish(messages).await
        }
        async fn publish_fields(&self, fields: &[(String, String)]) -> Result<EntryId, BackendError> {
            self.0.publish_fields(fields).await
        }
        async fn range(&self, after: EntryId, count: usize) -> Result<Vec<Delivery>, BackendError> {
            self.0.range(after, count).await
        }
        async fn last_id(&self) -> Result<EntryId, BackendError> {
            self.0.last_id().await
        }
        async fn wait_for_entries(
            &self,
            after: EntryId,
            timeout: Duration,
        ) -> Result<Option<EntryId>, BackendError> {
            self.0.wait_for_entries(after, timeout).await
        }
        async fn groups(&self) -> Result<Vec<GroupInfo>, BackendError> {
            self.0.groups().await
        }
        async fn entries_added(&self) -> Result<u64, BackendError> {
            self.0.entries_added().await
        }
    }

    impl Cache for RemoteCache {
        async fn cache_append(&self, appends: &[CacheAppend]) -> Result<(), BackendError> {
            self.0.cache_append(appends).await
        }
        async fn cache_read(&self, queries: &[CacheQuery]) -> Result<Vec<CacheAnswer>, BackendError> {
            self.0.cache_read(queries).await
        }
        fn cache_read_now(&self, _query: &CacheQuery) -> Option<CacheAnswer> {
            None
        }
        async fn cache_expire(&self, agent: &str, ttl: Duration) -> Result<bool, BackendError> {
            self.0.cache_expire(agent, ttl).await
        }
        async fn cache_clear(&self, agent: &str) -> Result<(), BackendError> {
            self.0.cache_clear(agent).await
        }
        async fn cache_clear_all(&self) -> Result<u64, BackendError> {
            self.0.cache_clear_all().await
        }
    }

    impl RunStore for RemoteCache {
        async fn commit(&self, commit: &Commit<'_>) -> Result<Vec<EntryId>, BackendError> {
            self.0.commit(commit).await
        }
        async fn load_states(&self, agents: &[Arc<str>]) -> Result<Vec<Option<String>>, BackendError> {
            self.0.load_states(agents).await
        }
        async fn read_record(&self) -> Result<Vec<(String, String)>, BackendError> {
            self.0.read_record().await
        }
        async fn write_record(&self, fields: &[(&str, String)]) -> Result<(), BackendError> {
            self.0.write_record(fields).await
        }
        async fn update_record(&self, fields: &[(&str, String)]) -> Result<(), BackendError> {
            self.0.update_record(fields).await
        }
        async fn take_lease(
            &self,
            holder: &str,
            ttl: Duration,
            replacing: Option<&str>,
        ) -> Result<Option<String>, BackendError> {
            self.0.take_lease(holder, ttl, replacing).await
        }
        async fn renew_lease(&self, holder: &str, ttl: Duration) -> Result<bool, BackendError> {
            self.0.renew_lease(holder, ttl).await
        }
        async fn release_lease(&self, holder: &str) -> Result<(), BackendError> {
            self.0.release_lease(holder).await
        }
        async fn lease_holder(&self) -> Result<Option<String>, BackendError> {
            self.0.lease_holder().await
        }
        async fn dead_letters(&self) -> Result<Vec<Vec<(String, String)>>, BackendError> {
            self.0.dead_letters().await
        }
        async fn delete_run(&self) -> Result<CleanupReport, BackendError> {
            self.0.delete_run().await
        }
        async fn load_answer(&self, key: &str) -> Result<Option<String>, BackendError> {
            self.0.load_answer(key).await
        }
        async fn save_answer(&self, key: &str, answer: &str) -> Result<String, BackendError> {
            self.0.save_answer(key, answer).await
        }
        async fn answers(&self) -> Result<Vec<String>, BackendError> {
            self.0.answers().await
        }
        async fn book_model_turn(&self, cost_ms: u64) -> Result<u64, BackendError> {
            self.0.book_model_turn(cost_ms).await
        }
    }

    impl Backend for RemoteCache {
        type Transport = MemoryTransport;

        fn kind(&self) -> BackendKind {
            BackendKind::Memory
        }
        fn keys(&self) -> &Keys {
            self.0.keys()
        }
        async fn ping(&self) -> Result<(), BackendError> {
            self.0.ping().await
        }
        async fn preflight(&self) -> Result<(), BackendError> {
            self.0.preflight().await
        }
        fn transport(&self) -> Option<MemoryTransport> {
            None
        }
    }
}

/// What the conformance suite asks of a backend beyond the traits: its inherent admin
/// methods, and a transport over the same keys.
pub trait Admin: agora::backend::Backend {
    type Books: agora::backend::Transport;
    async fn sizes(&self) -> Result<agora::backend::Sizes, agora::backend::BackendError>;
    fn books(&self) -> Self::Books;
}

impl Admin for agora::backend::memory::MemoryBackend {
    type Books = agora::backend::memory::MemoryTransport;
    async fn sizes(&self) -> Result<agora::backend::Sizes, agora::backend::BackendError> {
        agora::backend::memory::MemoryBackend::sizes(self).await
    }
    fn books(&self) -> Self::Books {
        self.in_process_transport()
    }
}

impl Admin for agora::backend::redis::RedisBackend {
    type Books = agora::backend::redis::RedisBackend;
    async fn sizes(&self) -> Result<agora::backend::Sizes, agora::backend::BackendError> {
        agora::backend::redis::RedisBackend::sizes(self).await
    }
    fn books(&self) -> Self::Books {
        self.clone()
    }
}

pub mod llm_server;
pub mod redis_cluster;
pub mod redis_server;

/// The `agora` binary, as a user runs it, without the caller's `AGORA_*` variables.
pub fn agora() -> std::process::Command {
    without_agora_env(std::process::Command::new(env!("CARGO_BIN_EXE_agora")))
}

/// The custom-behaviour example (built by `cargo test` next to the binaries): agora's command
/// line with one more behaviour.
pub fn custom_example() -> std::process::Command {
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_agora"));
    without_agora_env(std::process::Command::new(
        bin.parent().unwrap().join("examples").join("custom_behaviour"),
    ))
}

/// The binary that runs `scenario`: the custom-behaviour example for `custom.toml`, which
/// needs its behaviour, `agora` for every other.
pub fn agora_for(scenario: &std::path::Path) -> std::process::Command {
    if scenario.ends_with("custom.toml") {
        custom_example()
    } else {
        agora()
    }
}

fn without_agora_env(mut cmd: std::process::Command) -> std::process::Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("AGORA_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Process output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The lockstep scenarios in `scenarios/`, `custom.toml` (which needs the example binary)
/// included, sorted.
/// The recording beside a scenario of LLM agents (`x.llm.jsonl` next to `x.toml`), if it has
/// one: with `--replay` it runs with no network and no key.
pub fn recording_of(scenario: &std::path::Path) -> Option<std::path::PathBuf> {
    let recording = scenario.with_extension("llm.jsonl");
    recording.exists().then_some(recording)
}

/// `--replay` and the scenario's recording, or nothing for a scenario without one.
pub fn replay_args(scenario: &std::path::Path) -> Vec<std::ffi::OsString> {
    recording_of(scenario)
        .map(|r| vec!["--replay".into(), r.into_os_string()])
        .unwrap_or_default()
}

/// The lockstep scenarios of `scenarios/` whose behaviours are compiled into agora.
pub fn lockstep_scenarios() -> Vec<std::path::PathBuf> {
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir("scenarios")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            // Scenarios whose behaviours are programs run at a size a debug build gets
            // through quickly in tests/programs.rs and tests/llm.rs.
            !text.contains("mode = \"free\"") && !text.contains("[behaviours.")
        })
        .collect();
    found.sort();
    assert!(found.len() >= 5, "{found:?}");
    found
}

/// Loads a scenario written inline, as if from `file`, to run on the Redis at `url` with its
/// outputs under `out`.
pub fn scenario_on_redis(
    file: &str,
    text: &str,
    url: &str,
    out: &std::path::Path,
    registry: &agora::Registry,
) -> agora::scenario::Scenario {
    let mut overrides = agora::scenario::Overrides::new();
    overrides.flag("--redis-url", "backend.url", toml::Value::String(url.to_string()));
    overrides.flag(
        "--out",
        "output.dir",
        toml::Value::String(out.display().to_string()),
    );
    agora::scenario::load_str(std::path::Path::new(file), text.into(), &[], &overrides, registry).unwrap()
}

/// Waits until the lockstep run on `stream` has completed `tick` (its record says so),
/// failing after a minute.
pub fn wait_for_tick(redis: &redis_server::RedisServer, stream: &str, tick: u64) {
    let started = std::time::Instant::now();
    loop {
        let reply = redis.command(&["HGET", &format!("{stream}:run"), "tick"]);
        if reply
            .lines()
            .find_map(|l| l.trim().parse::<u64>().ok())
            .is_some_and(|t| t >= tick)
        {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the run never reached tick {tick}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The transcript's SHA-256 from the last line of a run that must have succeeded.
pub fn transcript_hash(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "the run failed: {}",
        text(&output.stderr)
    );
    let stdout = text(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    last.strip_prefix("transcript sha256: ")
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_string()
}

/// The one run folder that a run with `--out out` made.
pub fn run_dir_under(out: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(out).unwrap().next().unwrap().unwrap().path()
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `agora run SCENARIO --quiet --no-plots --out OUT EXTRA...` (with the scenario's recording
/// when it has one), to its end.
pub fn run_quietly(
    scenario: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    agora_for(scenario)
        .arg("run")
        .arg(scenario)
        .args(["--quiet", "--no-plots", "--out"])
        .arg(out)
        .args(extra)
        .args(replay_args(scenario))
        .output()
        .unwrap()
}

/// [`run_quietly`], which must succeed; returns the run's folder.
pub fn run_quietly_ok(
    scenario: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> std::path::PathBuf {
    let output = run_quietly(scenario, out, extra);
    assert!(
        output.status.success(),
        "{} {extra:?}: {}",
        scenario.display(),
        text(&output.stderr)
    );
    run_dir_under(out)
}

/// A run folder's `summary.json`.
pub fn summary_of(run_dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap()
}

/// The run's transcript hash, as its summary gives it.
pub fn hash_of(run_dir: &std::path::Path) -> String {
    summary_of(run_dir)["transcript_sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

/// SMALL_WORLD for 300 ticks, long enough for kills to land while it runs, written into
/// `dir`; and its run on the memory backend (under `dir`), whose transcript every other run
/// must give.
pub fn long_village(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let scenario = write_file(
        dir,
        "village.toml",
        &SMALL_WORLD.replace("ticks = 25", "ticks = 300"),
    );
    let memory_run = run_quietly_ok(&scenario, &dir.join("memory"), &[]);
    (scenario, memory_run)
}

/// Runs `scenario` with `args` on Redis, killing it (SIGKILL) once its record says it
/// completed each tick of `kill_at` (`completed_tick` reads it), and resuming it each time;
/// then resumes it to the end. At least two kills must land. Returns the run's folder.
pub fn run_with_kills(
    scenario: &std::path::Path,
    out: &std::path::Path,
    args: &[&str],
    kill_at: &[u64],
    completed_tick: &dyn Fn() -> Option<u64>,
) -> std::path::PathBuf {
    use std::time::{Duration, Instant};
    let mut kills = 0;
    for &tick in kill_at {
        let mut child = agora()
            .arg("run")
            .arg(scenario)
            .args(["--quiet", "--no-plots", "--out"])
            .arg(out)
            .args(args)
            .args(if kills > 0 { &["--resume"][..] } else { &[] })
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while completed_tick().is_none_or(|t| t < tick) && child.try_wait().unwrap().is_none() {
            assert!(started.elapsed() < Duration::from_secs(60), "no tick {tick}");
            std::thread::sleep(Duration::from_millis(1));
        }
        if child.try_wait().unwrap().is_some() {
            assert!(kills >= 2, "the run finished after only {kills} kills");
            return run_dir_under(out);
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    assert!(kills >= 2, "only {kills} kills landed");
    let mut resume = args.to_vec();
    resume.push("--resume");
    run_quietly_ok(scenario, out, &resume)
}

/// W1 made endless (a billion hops, no budget): a run or sweep that goes on until a signal.
#[allow(dead_code)]
pub const ENDLESS_W1: [&str; 4] = [
    "--set",
    "agents.0.params.hops=1000000000",
    "--set",
    "scenario.max_messages=1000000000000",
];

/// Waits (up to a minute) until `path` exists: a run under way has its transcript's
/// `.partial` file.
#[allow(dead_code)]
pub fn wait_for_file(path: &std::path::Path) {
    let started = std::time::Instant::now();
    while !path.exists() && started.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
