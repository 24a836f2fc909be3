//! agora's benchmark harness: `cargo bench` (all workloads) or `cargo bench -- w1-memory`.
//!
//! Each workload runs the release `agora` binary as a user would, reads `summary.json`, and
//! takes the child's peak resident memory from `wait4`. Results are printed as a table with
//! the machine they ran on; BENCHMARKS.md keeps them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

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
    (code, usage.ru_maxrss as f64 / 1024.0)
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
                note: format!("stop: {}", s["stop_reason"].as_str().unwrap_or("?")),
            }
        })
        .collect();
    runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    runs.swap_remove(runs.len() / 2)
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

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn main() {
    // `cargo bench` passes `--bench`; anything else selects workloads by name.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let w1 = repo().join("scenarios/w1.toml");
    let w1 = w1.to_str().unwrap();
    let opinion = repo().join("scenarios/opinion.toml");
    let opinion = opinion.to_str().unwrap();
    let started = Instant::now();
    let mut results = Vec::new();

    if wanted("w1-memory") {
        results.push(workload("w1-memory (N=10, K=100, H=1000, free)", 5, &[w1]));
    }
    if wanted("opinion-memory") {
        results.push(workload(
            "opinion-memory (1000 agents, 20 ticks)",
            3,
            &[opinion, "--set", "agents.0.count=1000"],
        ));
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
    println!("(harness took {:.1}s)", started.elapsed().as_secs_f64());
}
