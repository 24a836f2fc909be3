//! agora's benchmark harness: `cargo bench` (all workloads) or `cargo bench -- w1-memory`.
//!
//! Each workload runs the release `agora` binary as a user would, reads `summary.json`, and
//! takes the child's peak resident memory from `wait4`. Results are printed as a table with
//! the machine they ran on; BENCHMARKS.md keeps them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use agora::runtime::{self, RunOptions};
use agora::scenario::{self as scenarios, Overrides};
use agora::{Behaviour, BehaviourError, Context, Effects, Message, Registry, Setup};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[path = "../tests/common/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;
use redis_server::RedisServer;

#[path = "../tests/common/redis_cluster.rs"]
#[allow(dead_code)]
mod redis_cluster;
use redis_cluster::RedisCluster;

#[path = "../tests/common/llm_server.rs"]
mod llm_server;

struct Measured {
    workload: String,
    deliveries: u64,
    messages: u64,
    elapsed_s: f64,
    peak_rss_mb: f64,
    note: String,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.deliveries as f64 / self.elapsed_s
    }
}

/// Runs `agora run` with `args`; returns the summary and the peak RSS in MiB.
fn agora_run(out: &Path, args: &[&str]) -> (Value, f64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agora"))
        .arg("run")
        .args(args)
        .arg("--quiet")
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start agora");
    let (status, peak) = wait_with_peak_rss(&mut child);
    assert!(status == 0, "agora run {args:?} exited with {status}");
    let run_dir = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .unwrap();
    let summary = std::fs::read_to_string(run_dir.join("summary.json")).unwrap();
    (serde_json::from_str(&summary).unwrap(), peak)
}

fn wait_with_peak_rss(child: &mut std::process::Child) -> (i32, f64) {
    let (code, usage) = wait_with_usage(child);
    (code, usage.ru_maxrss as f64 / 1024.0)
}

/// Waits for `child`; its exit code and what it used (`wait4`).
fn wait_with_usage(child: &mut std::process::Child) -> (i32, libc::rusage) {
    let mut status = 0;
    // SAFETY: `rusage` is plain data, and `wait4` writes it for the child we spawned.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, usage)
}

/// The whole `agora run` process with `args`, wall and CPU seconds (user and system, all
/// threads): medians of `repeat` runs.
fn whole_process(repeat: usize, args: &[&str]) -> (f64, f64) {
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..repeat {
        let out = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_agora"))
            .args(["run", "--quiet", "--no-plots", "--out"])
            .arg(out.path())
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start agora");
        let (code, usage) = wait_with_usage(&mut child);
        assert_eq!(code, 0, "agora run {args:?} exited with {code}");
        walls.push(started.elapsed().as_secs_f64());
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        cpus.push(seconds(usage.ru_utime) + seconds(usage.ru_stime));
    }
    (median(walls), median(cpus))
}

/// The middle of `values` (the upper one of an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs a workload `repeat` times and keeps the median by rate.
fn workload(name: &str, repeat: usize, args: &[&str]) -> Measured {
    let mut runs: Vec<Measured> = (0..repeat)
        .map(|_| {
            let out = tempfile::tempdir().unwrap();
            let (s, peak) = agora_run(out.path(), args);
            Measured {
                workload: name.to_string(),
                deliveries: s["deliveries"].as_u64().unwrap(),
                messages: s["messages"].as_u64().unwrap(),
                elapsed_s: s["elapsed_s"].as_f64().unwrap(),
                peak_rss_mb: peak,
                note: match s["tick_seconds"].as_array() {
                    Some(ticks) if !ticks.is_empty() => {
                        let mean = ticks.iter().filter_map(Value::as_f64).sum::<f64>() / ticks.len() as f64;
                        format!("{:.0} ms per tick", mean * 1e3)
                    }
                    _ => format!("stop: {}", s["stop_reason"].as_str().unwrap_or("?")),
                },
            }
        })
        .collect();
    runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    runs.swap_remove(runs.len() / 2)
}

/// The bounded-confidence model as a plain Rust loop over the same opinions (all pairs, as
/// agora's `opinion` reads them): the floor for a runtime. Returns the seconds `ticks` steps
/// of `n` agents take.
fn opinion_floor(n: usize, ticks: usize) -> f64 {
    let (epsilon, mu) = (0.2, 0.5);
    // Any fixed opinions do: a small generator, not the run's.
    let mut x: u64 = 7;
    let mut opinions: Vec<f64> = (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect();
    let started = Instant::now();
    for _ in 0..ticks {
        let before = opinions.clone();
        for own in opinions.iter_mut() {
            let (mut sum, mut count) = (*own, 1.0);
            for &other in &before {
                if (other - *own).abs() <= epsilon {
                    sum += other;
                    count += 1.0;
                }
            }
            *own = (*own + mu * (sum / count - *own)).clamp(0.0, 1.0);
        }
    }
    std::hint::black_box(&opinions);
    started.elapsed().as_secs_f64()
}

/// Issue 15: opinion 1,000 x 20 against Mesa (one model's steps) and a plain Rust loop;
/// opinion 10,000 x 10 and gossip 20,000 on memory, with peak memory.
fn speed_benchmarks(opinion: &str, results: &mut Vec<Measured>, notes: &mut Vec<String>) {
    let args = [opinion, "--set", "agents.0.count=1000"];
    let agora = workload("opinion-memory (1000 agents, 20 ticks)", 5, &args);
    // The whole process, start-up and files included, as a user waits for it: the figure
    // set against Mesa's steps alone.
    let (process, cpu) = whole_process(5, &args);
    let floor = (0..3)
        .map(|_| opinion_floor(1000, 20))
        .fold(f64::INFINITY, f64::min);
    notes.push(format!(
        "opinion 1000 x 20: agora's run {:.3} s, its whole process {process:.3} s ({cpu:.3} s of CPU); a plain Rust loop over the same opinions {floor:.3} s (the run is {:.1}x the floor)",
        agora.elapsed_s,
        agora.elapsed_s / floor
    ));
    match mesa_opinion("single") {
        (_, Ok(text)) => {
            // "mesa single: all-pairs 1.234s sorted 0.123s"
            let seconds: Vec<f64> = text
                .split_whitespace()
                .filter_map(|w| w.strip_suffix('s').and_then(|n| n.parse().ok()))
                .collect();
            if let [all_pairs, sorted] = seconds[..] {
                notes.push(format!(
                    "  Mesa 3, one model's 20 steps: all pairs (agora's model) {all_pairs:.3} s, agora's whole process {:.1}x faster ({:.1}x by CPU time); sorted with prefix sums {sorted:.3} s, agora {:.2}x",
                    all_pairs / process,
                    all_pairs / cpu,
                    sorted / process
                ));
            }
        }
        (_, Err(skipped)) => notes.push(skipped),
    }
    results.push(agora);
    results.push(workload(
        "opinion-memory (10,000 agents, 10 ticks)",
        1,
        &[
            opinion,
            "--set",
            "agents.0.count=10000",
            "--set",
            "scenario.ticks=10",
        ],
    ));
    let gossip = std::env::temp_dir().join(format!("agora-bench-gossip20k-{}.toml", std::process::id()));
    std::fs::write(
        &gossip,
        "[scenario]\nname = \"gossip20k\"\nseed = 1\nticks = 10\n\
         [[agents]]\nid = \"g\"\ncount = 20000\nbehaviour = \"gossip\"\nparams = { fanout = 2, seeds = 100 }\n",
    )
    .unwrap();
    results.push(workload(
        "gossip-memory (20,000 agents, 10 ticks)",
        1,
        &[gossip.to_str().unwrap()],
    ));
    let _ = std::fs::remove_file(&gossip);
}

/// A scenario of `count` agents of `behaviour` on a Watts-Strogatz graph of degree 10.
fn small_world(name: &str, behaviour: &str, params: &str, count: u64, ticks: u64) -> PathBuf {
    let path = std::env::temp_dir().join(format!("agora-bench-{name}-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "[scenario]\nname = \"{name}\"\nseed = 1\nticks = {ticks}\n[backend]\ncleanup = \"both\"\n\
             [network]\nkind = \"watts_strogatz\"\nk = 10\np = 0.1\n\
             [[agents]]\nid = \"a\"\ncount = {count}\nbehaviour = \"{behaviour}\"\nparams = {params}\n"
        ),
    )
    .unwrap();
    path
}

/// Redis's own CPU seconds so far (`INFO cpu`: user and system, main thread and others).
fn redis_cpu_seconds(server: &RedisServer) -> f64 {
    let info = server.command(&["INFO", "cpu"]);
    info.lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| l.split(':').nth(1).and_then(|v| v.trim().parse::<f64>().ok()))
        .sum()
}

/// Networks (issue 14): gossip and opinion on a small world of degree 10, 100,000 agents on
/// memory and 20,000 on Redis, and the same 2,000-agent gossip broadcast and on the graph.
fn network_benchmarks(results: &mut Vec<Measured>, notes: &mut Vec<String>) {
    let gossip_params = "{ fanout = 2, seeds = 100 }";
    let opinion_params = "{ epsilon = 0.2, mu = 0.5 }";
    let files = [
        small_world("ws-gossip-100k", "gossip", gossip_params, 100_000, 30),
        small_world("ws-opinion-100k", "opinion", opinion_params, 100_000, 5),
        small_world("ws-gossip-20k", "gossip", gossip_params, 20_000, 30),
        small_world("ws-opinion-20k", "opinion", opinion_params, 20_000, 5),
        small_world("ws-gossip-2k", "gossip", "{ fanout = 2, seeds = 20 }", 2_000, 10),
    ];
    let arg = |i: usize| files[i].to_str().unwrap().to_string();
    results.push(workload("ws-gossip-memory (100k agents, k=10)", 1, &[&arg(0)]));
    results.push(workload(
        "ws-opinion-memory (100k agents, k=10, 5 ticks)",
        1,
        &[&arg(1)],
    ));
    results.push(workload("ws-gossip-memory (2000 agents, k=10)", 3, &[&arg(4)]));
    let server = RedisServer::start();
    let url = server.url();
    for (i, name) in [
        (2, "ws-gossip-redis (20k agents, k=10)"),
        (3, "ws-opinion-redis (20k agents, k=10, 5 ticks)"),
    ] {
        let before = redis_cpu_seconds(&server);
        let run = workload(name, 1, &[&arg(i), "--backend", "redis", "--redis-url", &url]);
        let cpu = redis_cpu_seconds(&server) - before;
        notes.push(format!(
            "{name}: Redis used {cpu:.2} s of CPU: {:.2} us per delivery, {:.2} us per message",
            cpu * 1e6 / run.deliveries.max(1) as f64,
            cpu * 1e6 / run.messages.max(1) as f64
        ));
        results.push(run);
    }
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
}

/// One Redis node against a three-node Redis Cluster on this machine, for the same 20,000-agent
/// small-world runs: time, and each node's CPU and keys (how the work spreads).
fn cluster_benchmarks(results: &mut Vec<Measured>, notes: &mut Vec<String>) {
    let files = [
        small_world(
            "cl-opinion-20k",
            "opinion",
            "{ epsilon = 0.2, mu = 0.5 }",
            20_000,
            5,
        ),
        small_world(
            "cl-gossip-20k",
            "gossip",
            "{ fanout = 2, seeds = 100 }",
            20_000,
            30,
        ),
    ];
    let labels = ["opinion (20k agents, k=10, 5 ticks)", "gossip (20k agents, k=10)"];
    let server = RedisServer::start();
    let cluster = RedisCluster::start();
    let cpu_of =
        |nodes: &[&RedisServer]| -> Vec<f64> { nodes.iter().map(|n| redis_cpu_seconds(n)).collect() };
    let keep = ["--set", "backend.cleanup=before"];
    for (file, label) in files.iter().zip(labels) {
        let file = file.to_str().unwrap();
        let before = redis_cpu_seconds(&server);
        let url = server.url();
        let mut args = vec![file, "--backend", "redis", "--redis-url", &url];
        args.extend(keep);
        results.push(workload(&format!("{label}, one node"), 1, &args));
        notes.push(format!(
            "{label}, one node: Redis used {:.2} s of CPU",
            redis_cpu_seconds(&server) - before
        ));
        let nodes: Vec<&RedisServer> = cluster.nodes.iter().collect();
        let before = cpu_of(&nodes);
        let url = cluster.url();
        let mut args = vec![
            file,
            "--backend",
            "redis",
            "--redis-url",
            &url,
            "--set",
            "backend.cluster=true",
        ];
        args.extend(keep);
        results.push(workload(&format!("{label}, 3-node cluster"), 1, &args));
        let used: Vec<f64> = cpu_of(&nodes).iter().zip(&before).map(|(a, b)| a - b).collect();
        notes.push(format!(
            "{label}, three-node cluster: Redis used {:.2} s of CPU in all, by node {}; keys by node {:?}",
            used.iter().sum::<f64>(),
            used.iter()
                .map(|c| format!("{c:.2} s"))
                .collect::<Vec<_>>()
                .join(", "),
            cluster.keys_per_node()
        ));
    }
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
}

/// The old Python layer's W1 on the same Redis: deliveries per second.
fn seed_python(port: u16, n: u32, k: u32, h: u32) -> Result<f64, String> {
    let script = std::env::var("AGORA_SEED_BENCH")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("../shared/baseline/seed_py/bench_seed.py"));
    if !script.exists() {
        return Err(format!("{} not found (set AGORA_SEED_BENCH)", script.display()));
    }
    let python = python_with("AGORA_SEED_PYTHON", "redis");
    let output = Command::new(&python)
        .arg(script.file_name().unwrap())
        .args([n.to_string(), k.to_string(), h.to_string(), port.to_string()])
        .current_dir(script.parent().unwrap())
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "{python} {} failed (is the `redis` package installed? set AGORA_SEED_PYTHON): {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    // "... in 14.66s = 682 deliveries/s, 68 handled/s"
    stdout
        .split(" = ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("unexpected output: {stdout}"))
}

/// `redis-benchmark -P 64` XADD requests per second on the same Redis.
fn redis_benchmark(port: u16) -> Result<f64, String> {
    let output = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-P",
            "64",
            "-n",
            "1000000",
            "-q",
            "XADD",
            "bench:xadd",
            "*",
            "field",
            "value",
        ])
        .output()
        .map_err(|e| format!("cannot run redis-benchmark: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The last report: "XADD ...: 607533.38 requests per second, p50=..."
    stdout
        .rsplit("XADD bench:xadd * field value: ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("unexpected output: {stdout}"))
}

/// Agents that do nothing: every tick is empty.
struct Silent;

#[derive(Default, Serialize, Deserialize)]
struct NoParams {}

impl Behaviour for Silent {
    type State = ();
    fn init(&self, _ctx: &mut Context<'_>) -> Result<(), BehaviourError> {
        Ok(())
    }
    fn on_message(&self, _: &mut (), _: &Message, _: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        Ok(Effects::none())
    }
}

/// The time of an empty lockstep tick (no messages) with `agents` agents on Redis: the
/// coordinator's whole tick (dispatch to every agent actor, the barrier, the checkpoint),
/// timed by the runtime. Returns the median and the mean, in seconds.
fn empty_tick(url: &str, agents: u32, ticks: u32) -> (f64, f64) {
    let mut registry = Registry::builtin();
    registry.register("silent", "does nothing", &[], |_: NoParams, _: &Setup<'_>| {
        Ok(Silent)
    });
    let out = tempfile::tempdir().unwrap();
    let text = format!(
        "[scenario]\nname = \"empty\"\nticks = {ticks}\n[backend]\nkind = \"redis\"\nurl = \"{url}\"\ncleanup = \"both\"\n\
         [[agents]]\nid = \"quiet\"\ncount = {agents}\nbehaviour = \"silent\"\n[output]\ndir = \"{}\"\n",
        out.path().display()
    );
    let scenario = scenarios::load_str(
        std::path::Path::new("empty.toml"),
        text,
        &[],
        &Overrides::new(),
        &registry,
    )
    .expect("the empty-tick scenario");
    let options = RunOptions {
        run_all_ticks: true,
        ..RunOptions::default()
    };
    let outcome = runtime::run(
        &scenario,
        &options,
        std::future::pending(),
        std::sync::Arc::new(runtime::Unobserved),
    )
    .expect("the empty-tick run");
    let times = outcome.summary.tick_seconds.clone();
    assert_eq!(times.len() as u32, ticks);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    (median(times), mean)
}

/// A debate of `agents` LLM agents for `ticks` lockstep ticks, each posting every tick
/// (`activity = 1`, no turn-taking), against a chat-completions server answering after
/// `latency`, with `concurrency` requests in flight. Returns the run's time (s) and calls.
fn llm_debate(latency: std::time::Duration, agents: u32, ticks: u32, concurrency: u32) -> (f64, u64) {
    let server = llm_server::LlmServer::start(llm_server::Behaviour {
        latency,
        ..llm_server::Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("debate.toml");
    std::fs::write(
        &scenario,
        format!(
            "[scenario]\nname = \"debate\"\nticks = {ticks}\n[llm]\nbase_url = \"{}\"\nmodel = \"stub-model\"\n\
             max_concurrency = {concurrency}\n[[agents]]\nid = \"d\"\ncount = {agents}\nbehaviour = \"llm\"\n\
             params = {{ activity = 1.0, turns = \"none\", feed = 8 }}\n",
            server.base_url()
        ),
    )
    .unwrap();
    let (s, _) = agora_run(&dir.path().join("runs"), &[scenario.to_str().unwrap()]);
    (s["elapsed_s"].as_f64().unwrap(), s["llm_calls"].as_u64().unwrap())
}

/// The old project's way: one call at a time, a global 3 s between publishes (free mode,
/// turn-taking, `min_publish_interval`), for `posts` posts. Returns the seconds from one post
/// to the next.
fn llm_old_way(latency: std::time::Duration, posts: u32) -> f64 {
    let server = llm_server::LlmServer::start(llm_server::Behaviour {
        latency,
        ..llm_server::Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("old.toml");
    std::fs::write(
        &scenario,
        format!(
            "[scenario]\nname = \"old\"\nmode = \"free\"\nmax_messages = {posts}\nmin_publish_interval = \"3s\"\n\
             [llm]\nbase_url = \"{}\"\nmodel = \"stub-model\"\nmax_concurrency = 1\n\
             [[agents]]\nid = \"d\"\ncount = 10\nbehaviour = \"llm\"\nparams = {{ turns = \"random\", feed = 8 }}\n",
            server.base_url()
        ),
    )
    .unwrap();
    let (s, _) = agora_run(&dir.path().join("runs"), &[scenario.to_str().unwrap()]);
    // The first post goes at once; each later one waits for its slot.
    s["elapsed_s"].as_f64().unwrap() / (s["messages"].as_f64().unwrap() - 1.0)
}

/// The LLM debate at `max_concurrency` 1, 8, 32 and 64 against 200 ms per call, with the
/// ideal (`calls x latency / concurrency`) and the lockstep bound (`ticks x ceil(agents /
/// concurrency) x latency`); then the old way; then agora's own cost per call (no latency).
fn llm_benchmarks(notes: &mut Vec<String>) {
    let latency = std::time::Duration::from_millis(200);
    let (agents, ticks) = (100u32, 10u32);
    notes.push(format!(
        "llm-debate: {agents} agents x {ticks} ticks, activity 1, 200 ms per call; wall time against the ideal"
    ));
    for concurrency in [1u32, 8, 32, 64] {
        let (elapsed, calls) = llm_debate(latency, agents, ticks, concurrency);
        let ideal = calls as f64 * latency.as_secs_f64() / f64::from(concurrency);
        let bound = f64::from(ticks) * f64::from(agents.div_ceil(concurrency)) * latency.as_secs_f64();
        notes.push(format!(
            "  max_concurrency {concurrency:>2}: {elapsed:>7.2} s for {calls} calls; ideal {ideal:>7.2} s ({:+.1}%), lockstep bound {bound:>7.2} s ({:+.1}%)",
            (elapsed / ideal - 1.0) * 100.0,
            (elapsed / bound - 1.0) * 100.0
        ));
    }
    let per_post = llm_old_way(latency, 11);
    notes.push(format!(
        "  the old way (one call at a time, 3 s between publishes): {per_post:.2} s from post to post, so {:.0} s for {} posts",
        per_post * f64::from(agents * ticks - 1),
        agents * ticks
    ));
    let (elapsed, calls) = llm_debate(std::time::Duration::ZERO, agents, ticks, 64);
    notes.push(format!(
        "  no latency, max_concurrency 64: {elapsed:.2} s for {calls} calls = {:.2} ms per call, the stub server's HTTP included",
        elapsed / calls as f64 * 1e3
    ));
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<f64>()
                    .unwrap_or(0.0)
                    / 1048576.0
            })
        })
        .unwrap_or(0.0);
    format!("{cpu}, {cores} cores, {mem:.0} GiB")
}

/// `agora sweep` of 40 opinion runs (1,000 agents, 20 ticks; epsilon 0.1 to 0.4, ten seeds
/// each) with --jobs 2, against the same with Mesa's batch_run in two processes
/// (`benches/mesa_opinion.py`, with the Python that AGORA_MESA_PYTHON names, which needs
/// `mesa`).
fn sweep_benchmarks(opinion: &str, notes: &mut Vec<String>) {
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_agora"))
        .args([
            "sweep",
            opinion,
            "--quiet",
            "--no-plots",
            "--jobs",
            "2",
            "--seeds",
            "1..10",
        ])
        .args([
            "--vary",
            "agents.0.params.epsilon=0.1,0.2,0.3,0.4",
            "--set",
            "agents.0.count=1000",
        ])
        .arg("--out")
        .arg(out.path())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run agora sweep");
    assert!(status.success(), "agora sweep failed");
    let agora_s = started.elapsed().as_secs_f64();
    notes.push(format!(
        "sweep of 40 opinion runs (1000 agents, 20 ticks), 2 at a time: agora sweep {agora_s:.2}s"
    ));
    match mesa_opinion("2") {
        (python, Ok(said)) => notes.push(format!("  same sweep, {} (Mesa 3, {python})", said.trim())),
        (_, Err(skipped)) => notes.push(skipped),
    }
}

/// `benches/mesa_opinion.py ARG` with the Python that has Mesa (`AGORA_MESA_PYTHON`, else
/// one the harness finds or makes): that Python, and the script's output, or the note saying
/// why the comparison was skipped.
fn mesa_opinion(arg: &str) -> (String, Result<String, String>) {
    let python = python_with("AGORA_MESA_PYTHON", "mesa");
    let ran = Command::new(&python)
        .arg(repo().join("benches/mesa_opinion.py"))
        .arg(arg)
        .output();
    let result = match ran {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).to_string()),
        Ok(out) => Err(format!(
            "  mesa: skipped ({python} benches/mesa_opinion.py failed: {}; AGORA_MESA_PYTHON names a Python with mesa)",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("no message")
        )),
        Err(e) => Err(format!(
            "  mesa: skipped (cannot start {python}: {e}; AGORA_MESA_PYTHON names a Python with mesa)"
        )),
    };
    (python, result)
}

/// The Python for a comparison that imports `module` (`mesa` for Mesa 3, `redis` for the old
/// Python layer): the one `env` names; else `python3`, if it can import it; else a virtual
/// environment the harness makes once, in `target/bench-python`, with both packages from PyPI.
/// If that cannot be made, the Python it would have been, and the comparison says it skipped.
fn python_with(env: &str, module: &str) -> String {
    if let Ok(python) = std::env::var(env) {
        return python;
    }
    // Mesa before 3 has another API: such a Python does not count.
    let check = match module {
        "mesa" => "import mesa, sys; sys.exit(int(mesa.__version__.split('.')[0]) < 3)".to_string(),
        _ => format!("import {module}"),
    };
    let imports = |python: &str| {
        Command::new(python)
            .args(["-c", &check])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if imports("python3") {
        return "python3".into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    let venv = target.join("bench-python");
    let python = venv.join("bin/python").display().to_string();
    // Tried once a run: the old layer's comparison asks again for each of its runs.
    static TRIED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut tried = TRIED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if *tried || imports(&python) {
        return python;
    }
    *tried = true;
    eprintln!(
        "harness: installing mesa 3 and redis into {} for the comparisons (once; {env} names another Python)",
        venv.display()
    );
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "mesa>=3,<4", "redis"])
            .status()
            .is_ok_and(|s| s.success());
    if !made {
        eprintln!(
            "harness: could not make {} (python3 -m venv, then pip install from PyPI)",
            venv.display()
        );
    }
    python
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every workload, by the name `cargo bench --bench harness -- NAME` picks it by (a part of
/// a name picks every workload whose name holds it).
const WORKLOADS: [&str; 16] = [
    "speed",
    "network",
    "cluster",
    "w1-memory",
    "w1-redis",
    "gossip-memory",
    "gossip-redis",
    "opinion-memory",
    "empty-tick",
    "seed-py",
    "redis-benchmark",
    "py-relay-memory",
    "py-relay-redis",
    "protocol-batching",
    "sweep",
    "llm-debate",
];

fn main() {
    // `cargo bench` passes `--bench`; anything else selects workloads by name.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let Some(unknown) = filters
        .iter()
        .find(|f| !WORKLOADS.iter().any(|w| w.contains(f.as_str())))
    {
        eprintln!("error: no workload is named like {unknown:?}");
        eprintln!("hint: the workloads are {}", WORKLOADS.join(", "));
        std::process::exit(2);
    }
    let wanted = |name: &str| {
        assert!(WORKLOADS.contains(&name), "{name} is missing from WORKLOADS");
        filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
    };
    let w1 = repo().join("scenarios/w1.toml");
    let w1 = w1.to_str().unwrap();
    let opinion = repo().join("scenarios/opinion.toml");
    let opinion = opinion.to_str().unwrap();
    let started = Instant::now();
    let mut results = Vec::new();

    if wanted("w1-memory") {
        results.push(workload("w1-memory (N=10, K=100, H=1000, free)", 5, &[w1]));
    }
    // W1 with the relay written in Python (examples/python/relay.py), through the protocol.
    let py_relay = repo().join("scenarios/python-relay.toml");
    let py_relay = py_relay.to_str().unwrap();
    let py_w1 = |processes: &str, rest: &[&'static str]| -> Vec<String> {
        [py_relay, "--set", "agents.0.params.hops=1000", "--set"]
            .iter()
            .map(|s| s.to_string())
            .chain([format!("behaviours.py_relay.processes={processes}")])
            .chain(rest.iter().map(|s| s.to_string()))
            .collect()
    };
    if wanted("py-relay-memory") {
        for processes in ["1", "2"] {
            let args = py_w1(processes, &[]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            results.push(workload(
                &format!("py-relay-memory (W1 in Python, {processes} proc.)"),
                3,
                &args,
            ));
        }
    }
    let redis_wanted = [
        "w1-redis",
        "py-relay-redis",
        "seed-py",
        "redis-benchmark",
        "gossip-redis",
        "empty-tick",
    ]
    .iter()
    .any(|w| wanted(w));
    let gossip_file = std::env::temp_dir().join(format!("agora-bench-gossip-{}.toml", std::process::id()));
    std::fs::write(
        &gossip_file,
        "[scenario]\nname = \"gossip2000\"\nseed = 1\nticks = 10\n[backend]\ncleanup = \"both\"\n\
         [[agents]]\nid = \"g\"\ncount = 2000\nbehaviour = \"gossip\"\nparams = { fanout = 2, seeds = 20 }\n",
    )
    .unwrap();
    let gossip = gossip_file.to_str().unwrap();
    let mut notes: Vec<String> = Vec::new();
    if wanted("gossip-memory") {
        results.push(workload("gossip-memory (2000 agents, 10 ticks)", 3, &[gossip]));
    }
    let server = redis_wanted.then(RedisServer::start);
    let mut comparisons: Vec<(String, f64)> = Vec::new();
    if let Some(server) = &server {
        let url = server.url();
        if wanted("w1-redis") {
            results.push(workload(
                "w1-redis (N=10, K=100, H=1000, free)",
                3,
                &[w1, "--backend", "redis", "--redis-url", &url],
            ));
        }
        if wanted("py-relay-redis") {
            let args = py_w1("2", &["--backend", "redis"]);
            let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
            args.extend(["--redis-url", &url]);
            results.push(workload("py-relay-redis (W1 in Python, 2 proc.)", 3, &args));
        }
        if wanted("gossip-redis") {
            results.push(workload(
                "gossip-redis (2000 agents, 10 ticks)",
                1,
                &[gossip, "--backend", "redis", "--redis-url", &url],
            ));
        }
        if wanted("empty-tick") {
            let (median, mean) = empty_tick(&url, 1000, 50);
            notes.push(format!(
                "empty lockstep tick, 1000 agents on Redis: median {:.2} ms, mean {:.2} ms (50 ticks)",
                median * 1e3,
                mean * 1e3
            ));
        }
        if wanted("seed-py") {
            // Its small runs vary by a factor of two from one to the next: keep the median of 3.
            match (0..3)
                .map(|_| seed_python(server.port, 10, 10, 100))
                .collect::<Result<Vec<f64>, _>>()
            {
                Ok(mut rates) => {
                    rates.sort_by(f64::total_cmp);
                    comparisons.push((
                        "seed-py W1 (N=10, K=10, H=100), median of 3, deliveries/s".into(),
                        rates[1],
                    ))
                }
                Err(e) => println!("seed-py: skipped: {e}"),
            }
        }
        if wanted("redis-benchmark") {
            match redis_benchmark(server.port) {
                Ok(rate) => comparisons.push(("redis-benchmark -P 64 XADD, requests/s".into(), rate)),
                Err(e) => println!("redis-benchmark: skipped: {e}"),
            }
        }
    }
    if wanted("llm-debate") {
        llm_benchmarks(&mut notes);
    }
    if wanted("protocol-batching") {
        let output = Command::new("python3")
            .arg(repo().join("benches/protocol_batching.py"))
            .output()
            .expect("run python3 benches/protocol_batching.py");
        notes.push(
            "the protocol, 100,000 opinion messages by batch size (Python side, through a pipe):".into(),
        );
        notes.extend(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(|l| format!("  {l}")),
        );
    }
    if wanted("opinion-memory") {
        // With and without agents' own values recorded (agents.csv, the clusters), in turn,
        // so that both see the same machine.
        let mut with = Vec::new();
        let mut without = Vec::new();
        for _ in 0..9 {
            with.push(workload(
                "opinion-memory (1000 agents, 20 ticks)",
                1,
                &[opinion, "--set", "agents.0.count=1000"],
            ));
            without.push(workload(
                "opinion-memory, agent_values = false",
                1,
                &[
                    opinion,
                    "--set",
                    "agents.0.count=1000",
                    "--set",
                    "output.agent_values=false",
                ],
            ));
        }
        for mut runs in [with, without] {
            runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
            results.push(runs.swap_remove(runs.len() / 2));
        }
    }
    if wanted("sweep") {
        sweep_benchmarks(opinion, &mut notes);
    }
    if wanted("cluster") {
        cluster_benchmarks(&mut results, &mut notes);
    }
    if wanted("network") {
        network_benchmarks(&mut results, &mut notes);
    }
    if wanted("speed") {
        speed_benchmarks(opinion, &mut results, &mut notes);
    }

    println!("\nmachine: {}", machine());
    println!(
        "{:<44} {:>12} {:>10} {:>9} {:>16} {:>9}  note",
        "workload", "deliveries", "messages", "time", "deliveries/s", "peak RSS"
    );
    for r in &results {
        println!(
            "{:<44} {:>12} {:>10} {:>8.3}s {:>16.0} {:>7.1}MB  {}",
            r.workload,
            r.deliveries,
            r.messages,
            r.elapsed_s,
            r.rate(),
            r.peak_rss_mb,
            r.note
        );
    }
    for note in &notes {
        println!("{note}");
    }
    let _ = std::fs::remove_file(&gossip_file);
    if !comparisons.is_empty() {
        println!("\nsame Redis, same run:");
        let w1_redis = results
            .iter()
            .find(|r| r.workload.starts_with("w1-redis"))
            .map(Measured::rate);
        for (what, rate) in &comparisons {
            let py_redis = results
                .iter()
                .find(|r| r.workload.starts_with("py-relay-redis"))
                .map(Measured::rate);
            let ratio = [("w1-redis", w1_redis), ("py-relay-redis", py_redis)]
                .iter()
                .filter_map(|(name, rate_of)| rate_of.map(|w| format!("  ({name} is {:.2}x this)", w / rate)))
                .collect::<String>();
            println!("{what:<62} {rate:>12.0}{ratio}");
        }
    }
    println!("(harness took {:.1}s)", started.elapsed().as_secs_f64());
}
