//! Runs spread over worker processes: the same transcripts as in one process, and workers
//! that die are reported by name, with `--resume` finishing the run.

mod common;

use common::{agora, agora_for, lockstep_scenarios, run_dir_under, text};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;

fn transcript(out: &Path) -> Vec<u8> {
    std::fs::read(run_dir_under(out).join("transcript.jsonl")).unwrap()
}

fn run(mut cmd: Command, scenario: &Path, out: &Path, extra: &[&str]) -> Output {
    cmd.arg("run")
        .arg(scenario)
        .args(["--quiet", "--out"])
        .arg(out)
        .args(extra)
        .args(common::replay_args(scenario))
        .output()
        .unwrap()
}

#[test]
fn transcripts_do_not_depend_on_the_number_of_workers() {
    let server = RedisServer::start();
    for scenario in lockstep_scenarios() {
        let make = || agora_for(&scenario);
        let alone = tempfile::tempdir().unwrap();
        let output = run(make(), &scenario, alone.path(), &[]);
        assert!(
            output.status.success(),
            "{}: {}",
            scenario.display(),
            text(&output.stderr)
        );
        let expected = transcript(alone.path());
        for workers in ["1", "2", "3"] {
            let out = tempfile::tempdir().unwrap();
            let output = run(
                make(),
                &scenario,
                out.path(),
                &[
                    "--backend",
                    "redis",
                    "--redis-url",
                    &server.url(),
                    "--workers",
                    workers,
                ],
            );
            assert!(
                output.status.success(),
                "{} with {workers} workers: {}",
                scenario.display(),
                text(&output.stderr)
            );
            assert!(
                transcript(out.path()) == expected,
                "{} with {workers} workers: the transcript differs",
                scenario.display()
            );
        }
    }
}

const MIXED: &str = "[scenario]\nname = \"mixed\"\nseed = 5\nticks = 40\n\
    [[agents]]\nid = \"citizen\"\ncount = 120\nbehaviour = \"opinion\"\n\
    [[agents]]\nid = \"gossip\"\ncount = 30\nbehaviour = \"gossip\"\nparams = { seeds = 2 }\n\
    [[agents]]\nid = \"speaker\"\ncount = 4\nbehaviour = \"discussion\"\n";

/// MIXED written out (in the directory returned first, kept while it lives), and the outputs
/// of its run in one process: the transcript a run with workers must give.
fn mixed_with_reference() -> (tempfile::TempDir, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("mixed.toml");
    std::fs::write(&scenario, MIXED).unwrap();
    let reference = tempfile::tempdir().unwrap();
    assert!(run(agora(), &scenario, reference.path(), &[]).status.success());
    (dir, scenario, reference)
}

/// The pid of the worker process for `shard` (`I/N`), from its registration.
fn worker_pid(server: &RedisServer, stream: &str, shard: &str) -> Option<u32> {
    let reply = server.command(&["HGET", &format!("{stream}:workers"), shard]);
    let line = reply.lines().nth(1)?;
    let json = line.split_once(' ')?.1;
    serde_json::from_str::<serde_json::Value>(json).ok()?["pid"]
        .as_u64()
        .map(|p| p as u32)
}

fn start(scenario: &Path, out: &Path, server: &RedisServer, extra: &[&str]) -> Child {
    agora()
        .arg("run")
        .arg(scenario)
        .args([
            "--quiet",
            "--backend",
            "redis",
            "--redis-url",
            &server.url(),
            "--out",
        ])
        .arg(out)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_killed_worker_is_reported_by_name_and_resume_finishes_the_run() {
    let (_dir, scenario, reference) = mixed_with_reference();
    let server = RedisServer::start();
    let out = tempfile::tempdir().unwrap();
    let child = start(&scenario, out.path(), &server, &["--workers", "3"]);
    wait_until("tick 3", || {
        server.completed_tick("mixed").is_some_and(|t| t >= 3)
    });
    // The resolved scenario the workers were started with is gone once they read it: a
    // coordinator killed now leaves nothing in the temp folder.
    let handed = std::env::temp_dir().join(format!("agora-mixed-{}.toml", child.id()));
    assert!(!handed.exists(), "{} is still there", handed.display());
    let victim = worker_pid(&server, "mixed", "2/3").expect("worker 2/3 registered");
    // SAFETY: a signal to a process this test's run started.
    unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) };
    let output = child.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("error: worker 2/3 (pid {victim}) exited")),
        "{stderr}"
    );
    assert!(stderr.contains("--resume"), "{stderr}");
    // The other workers do not linger.
    wait_until("the other workers to exit", || {
        worker_pid(&server, "mixed", "1/3")
            .is_none_or(|pid| std::fs::metadata(format!("/proc/{pid}")).is_err() || is_zombie(pid))
    });

    let resumed = start(&scenario, out.path(), &server, &["--workers", "3", "--resume"])
        .wait_with_output()
        .unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert!(transcript(out.path()) == transcript(reference.path()));
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[test]
fn workers_started_by_hand_are_waited_for() {
    let server = RedisServer::start();
    let reference = tempfile::tempdir().unwrap();
    let scenario = Path::new("scenarios/gossip.toml");
    assert!(run(agora(), scenario, reference.path(), &[]).status.success());
    let out = tempfile::tempdir().unwrap();
    // Not --quiet, and no terminal: what it waits for is said as a line.
    let coordinator = agora()
        .arg("run")
        .arg(scenario)
        .args(["--redis-url", &server.url(), "--workers", "0", "--out"])
        .arg(out.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let workers: Vec<Child> = ["1/2", "2/2"]
        .iter()
        .map(|shard| {
            agora()
                .args([
                    "worker",
                    "scenarios/gossip.toml",
                    "--shard",
                    shard,
                    "--redis-url",
                    &server.url(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let output = coordinator.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("waiting: for workers"),
        "{}",
        text(&output.stderr)
    );
    assert!(transcript(out.path()) == transcript(reference.path()));
    for (w, shard) in workers.into_iter().zip(["1/2", "2/2"]) {
        let output = w.wait_with_output().unwrap();
        assert!(output.status.success(), "a worker exits when the run is over");
        // Started by hand, a worker says what it is doing.
        let said = text(&output.stderr);
        assert!(
            said.contains(&format!("worker {shard}: waiting for the coordinator"))
                && said.contains(&format!("worker {shard}: hosting 20 agents")),
            "{said}"
        );
    }
}

#[test]
fn a_signal_while_waiting_for_workers_stops_the_run_at_once_and_resume_finishes_it() {
    let server = RedisServer::start();
    let out = tempfile::tempdir().unwrap();
    let scenario = Path::new("scenarios/gossip.toml");
    let mut coordinator = start(scenario, out.path(), &server, &["--workers", "0"]);
    // Waiting: its lease is taken, and no worker will come.
    wait_until("the run's lease", || {
        server.command(&["EXISTS", "gossip:lease"]).trim() == ":1"
    });
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: sending a signal to the child we started.
    unsafe { libc::kill(coordinator.id() as libc::pid_t, libc::SIGTERM) };
    let stopped = Instant::now();
    while coordinator.try_wait().unwrap().is_none() {
        if stopped.elapsed() > Duration::from_secs(30) {
            coordinator.kill().unwrap();
            panic!("the first SIGTERM did not stop a run waiting for its workers");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = coordinator.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir_under(out.path()).join("summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["stop_reason"], "interrupted");
    // The folder is not locked and the run is resumable, here without workers.
    let resumed = run(
        agora(),
        scenario,
        out.path(),
        &["--redis-url", &server.url(), "--resume"],
    );
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    let reference = tempfile::tempdir().unwrap();
    assert!(run(agora(), scenario, reference.path(), &[]).status.success());
    assert!(transcript(out.path()) == transcript(reference.path()));
}

#[test]
fn a_worker_with_another_scenario_is_refused() {
    let server = RedisServer::start();
    let out = tempfile::tempdir().unwrap();
    let coordinator = start(
        Path::new("scenarios/gossip.toml"),
        out.path(),
        &server,
        &["--workers", "0"],
    );
    let worker = agora()
        .args([
            "worker",
            "scenarios/gossip.toml",
            "--shard",
            "1/1",
            "--redis-url",
            &server.url(),
        ])
        .args(["--set", "scenario.seed=1"])
        .output()
        .unwrap();
    assert_eq!(worker.status.code(), Some(2), "{}", text(&worker.stderr));
    assert!(text(&worker.stderr).contains("this worker's scenario is not the coordinator's"));
    let output = coordinator.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("worker 1/1 failed"),
        "{}",
        text(&output.stderr)
    );
}

/// Free mode, with the agents on two worker processes; one is killed, the run is resumed:
/// every message is handled exactly once in effect. The relay agent a token is addressed to
/// remembers (token, hop) in the cache when it handles it, so each pair must be there once.
#[test]
fn free_mode_with_a_killed_worker_handles_every_message_once() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("free.toml");
    std::fs::write(
        &scenario,
        "[scenario]\nname = \"free\"\nmode = \"free\"\n[backend]\nclaim_idle = \"1s\"\n\
         [[agents]]\nid = \"r\"\ncount = 6\nbehaviour = \"relay\"\nparams = { tokens = 12, hops = 400 }\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let child = start(&scenario, out.path(), &server, &["--workers", "2"]);
    wait_until("the relay to be under way", || {
        let len = server.command(&["XLEN", "free"]);
        len.trim().trim_start_matches(':').parse::<u64>().unwrap_or(0) > 600
    });
    let victim = worker_pid(&server, "free", "1/2").expect("worker 1/2 registered");
    // SAFETY: a signal to a process this test's run started.
    unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) };
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("worker 1/2"),
        "{}",
        text(&output.stderr)
    );

    let resumed = start(&scenario, out.path(), &server, &["--workers", "2", "--resume"])
        .wait_with_output()
        .unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir_under(out.path()).join("summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["stop_reason"], "quiescent");
    assert_eq!(summary["messages"], 12 * 400);

    // Count (token, hop) in every agent's cache list: each exactly once.
    let mut seen: BTreeMap<(u64, u64), u32> = BTreeMap::new();
    for i in 1..=6 {
        let reply = server.command(&["LRANGE", &format!("free:cache:r_{i}"), "0", "-1"]);
        for line in reply.lines().filter(|l| l.starts_with('{')) {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = (
                entry["value"]["token"].as_u64().unwrap(),
                entry["value"]["hop"].as_u64().unwrap(),
            );
            *seen.entry(key).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), 12 * 400, "every hop was handled");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "handled twice: {twice:?}");
    // And the transcript holds every message once.
    let lines = String::from_utf8(transcript(out.path())).unwrap();
    let mut ids: Vec<(String, u64)> = lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["sender_id"].as_str().unwrap().to_string(),
                v["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12 * 400);
}

/// A report on `{stream}:reports` that names a shard the run does not have (0, or N + 1)
/// stops the coordinator with a clear error and exit code 1: it is never used to index the
/// run's shards.
#[test]
fn a_report_naming_a_shard_the_run_lacks_stops_the_run_cleanly() {
    for bad_shard in [0, 2] {
        let server = RedisServer::start();
        let out = tempfile::tempdir().unwrap();
        // Long enough that the report comes while ticks are still being gathered.
        let long = ["--set", "scenario.ticks=100000"];
        let scenario = Path::new("scenarios/opinion.toml");
        let coordinator = start(
            scenario,
            out.path(),
            &server,
            &[&["--workers", "0"][..], &long].concat(),
        );
        let mut worker = agora()
            .args([
                "worker",
                "scenarios/opinion.toml",
                "--shard",
                "1/1",
                "--redis-url",
                &server.url(),
            ])
            .args(long)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The run's id, from the command that has the worker join it.
        let mut run = String::new();
        wait_until("the coordinator's run command", || {
            let reply = server.command(&["XRANGE", "opinion:control", "-", "+"]);
            run = reply
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["command"] == "run")
                .and_then(|v| v["run"].as_str().map(str::to_string))
                .unwrap_or_default();
            !run.is_empty()
        });
        let report = serde_json::json!({
            "report": "progress", "run": run, "shard": bad_shard,
            "counts": {}, "idle": false,
        });
        server.command(&["XADD", "opinion:reports", "*", "note", &report.to_string()]);
        let output = coordinator.wait_with_output().unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "shard {bad_shard}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "error: a worker's report names a shard this run does not have (shard {bad_shard} of 1"
            )),
            "shard {bad_shard}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        let _ = worker.kill();
        let _ = worker.wait();
    }
}

#[test]
fn ctrl_c_stops_a_worker_started_by_hand_and_the_run_says_so_at_once() {
    let (_dir, scenario, reference) = mixed_with_reference();
    let server = RedisServer::start();
    let out = tempfile::tempdir().unwrap();
    let coordinator = start(&scenario, out.path(), &server, &["--workers", "0"]);
    let mut workers: Vec<Child> = ["1/2", "2/2"]
        .iter()
        .map(|shard| {
            agora()
                .arg("worker")
                .arg(&scenario)
                .args(["--shard", shard, "--redis-url", &server.url()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_until("tick 3", || {
        server.completed_tick("mixed").is_some_and(|t| t >= 3)
    });
    // SAFETY: a signal to a process this test started.
    unsafe { libc::kill(workers[0].id() as libc::pid_t, libc::SIGINT) };
    let output = coordinator.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    // Said by the worker, not found by a heartbeat missing for five seconds ("stopped
    // answering").
    assert!(
        stderr.contains("worker 1/2 failed: stopped by Ctrl-C"),
        "{stderr}"
    );
    let worker = workers.remove(0).wait_with_output().unwrap();
    assert_eq!(worker.status.code(), Some(130), "{}", text(&worker.stderr));
    assert!(
        text(&worker.stderr).contains("worker 1/2: stopped by Ctrl-C"),
        "{}",
        text(&worker.stderr)
    );
    for mut other in workers {
        let _ = other.kill();
        let _ = other.wait();
    }

    let resumed = start(&scenario, out.path(), &server, &["--workers", "2", "--resume"])
        .wait_with_output()
        .unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert!(transcript(out.path()) == transcript(reference.path()));
}
