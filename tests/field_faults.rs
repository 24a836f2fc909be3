//! Faults found by trying real-world reports (issue "Faults found by trying real-world
//! reports"): one test for each kind. URLs read one way, by one parser; entries that vanish
//! are errors, never success; a Redis user without a right is refused before anything is
//! written; output read by programs carries no terminal codes; a run's folder and exit code
//! are its own.

mod common;

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::{agora, text};
use serde_json::Value;

fn summary(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn bad_input(output: &Output, secret: &str) -> String {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        !stderr.contains(secret) && !text(&output.stdout).contains(secret),
        "{stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[test]
fn a_redis_url_is_read_once_by_one_parser() {
    let out = tempfile::tempdir().unwrap();
    // An unencoded `?` in a password: bad input everywhere, with how to encode it, unprinted.
    let pasted = "redis://admin:Sec?Ret9@127.0.0.1:6379/0";
    for args in [
        vec!["check", "scenarios/gossip.toml", "--redis-url", pasted],
        vec!["run", "scenarios/gossip.toml", "--redis-url", pasted],
        vec!["inspect", "--redis-url", pasted, "--stream", "gossip"],
        vec!["cleanup", "--redis-url", pasted, "--stream", "gossip"],
    ] {
        let output = agora().args(&args).output().unwrap();
        let stderr = bad_input(&output, "Ret9");
        assert!(stderr.contains("%3F"), "{args:?}: {stderr}");
    }
    // The same from the environment.
    let output = agora()
        .args(["inspect", "--stream", "gossip"])
        .env("AGORA_BACKEND__URL", pasted)
        .output()
        .unwrap();
    bad_input(&output, "Ret9");
    // Malformed URLs of every kind are bad input (2), not an unusable backend (3).
    for url in [
        "redis://::1:6379",
        "redis://u:a/b@h:1/0",
        "redis://h:6379/0?timeout=3",
        "redis://h:x/0",
    ] {
        let output = agora()
            .args(["check", "scenarios/gossip.toml", "--redis-url", url])
            .output()
            .unwrap();
        let stderr = bad_input(&output, "a/b");
        if url.contains("timeout") {
            assert!(stderr.contains("\"timeout\""), "{stderr}");
        }
    }
    // `?db=` is honoured, as redis-py honours it: the run goes where agora says it goes.
    let check = agora()
        .args([
            "check",
            "scenarios/gossip.toml",
            "--redis-url",
            "redis://127.0.0.1:6379/0?db=3",
        ])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains("url = \"redis://127.0.0.1:6379/3\""),
        "{}",
        text(&check.stdout)
    );
    let server = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}/0?db=3", server.port);
    let output = agora()
        .args([
            "run",
            "scenarios/gossip.toml",
            "--quiet",
            "--redis-url",
            &url,
            "--set",
            "backend.cleanup=\"never\"",
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(server.command(&["DBSIZE"]), ":0\r\n", "nothing in database 0");
    let in_three = agora()
        .args([
            "inspect",
            "--stream",
            "gossip",
            "--redis-url",
            &format!("redis://127.0.0.1:{}/3", server.port),
        ])
        .output()
        .unwrap();
    assert!(
        in_three.status.success(),
        "the run is in database 3: {}",
        text(&in_three.stderr)
    );
}

/// The scenario used to see entries vanish: every agent publishes every tick.
const BUSY: &str = "[scenario]\nname = \"busy\"\nseed = 3\nticks = 400\n\
    [[agents]]\nid = \"citizen\"\ncount = 80\nbehaviour = \"opinion\"\n";

fn start(scenario: &Path, out: &Path, url: &str, extra: &[&str]) -> Child {
    agora()
        .arg("run")
        .arg(scenario)
        .args(["--quiet", "--redis-url", url, "--out"])
        .arg(out)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn entries_that_vanish_stop_the_run_and_refuse_its_resume() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("busy.toml");
    std::fs::write(&scenario, BUSY).unwrap();
    let server = RedisServer::start();
    let out = tempfile::tempdir().unwrap();
    // Another program trims the stream, again and again, while the run goes on.
    let mut run = start(&scenario, out.path(), &server.url(), &[]);
    wait_until("a few ticks", || {
        server.completed_tick("busy").is_some_and(|t| t >= 3)
    });
    while run.try_wait().unwrap().is_none() {
        server.command(&["XTRIM", "busy", "MAXLEN", "0"]);
        std::thread::sleep(Duration::from_millis(2));
    }
    let output = run.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("and found none: they were deleted"), "{stderr}");
    let s = summary(&out.path().join("busy-3"));
    assert_eq!(s["stop_reason"], "interrupted", "{s}");
    assert!(s["error"].as_str().unwrap().contains("deleted"), "{s}");

    // A run killed at a tick, whose stream is then trimmed: resuming it is refused.
    server.command(&["FLUSHALL"]);
    let out = tempfile::tempdir().unwrap();
    let mut run = start(&scenario, out.path(), &server.url(), &[]);
    wait_until("a few ticks", || {
        server.completed_tick("busy").is_some_and(|t| t >= 3)
    });
    run.kill().unwrap();
    run.wait().unwrap();
    server.command(&["XTRIM", "busy", "MAXLEN", "0"]);
    let resumed = start(&scenario, out.path(), &server.url(), &["--resume"])
        .wait_with_output()
        .unwrap();
    let stderr = text(&resumed.stderr);
    assert_eq!(resumed.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("error: cannot resume:"), "{stderr}");
}

#[test]
fn a_resumed_free_run_reports_the_whole_run() {
    let server = RedisServer::start();
    let reference = tempfile::tempdir().unwrap();
    let w1 = Path::new("scenarios/w1.toml");
    let small = [
        "--set",
        "agents.0.params.tokens=20",
        "--set",
        "backend.cleanup=\"before\"",
    ];
    let output = agora()
        .args(["run", "scenarios/w1.toml", "--quiet", "--out"])
        .arg(reference.path())
        .args(small)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let expected = summary(&reference.path().join("w1-0"));
    let out = tempfile::tempdir().unwrap();
    let mut run = start(w1, out.path(), &server.url(), &small);
    // Killed part-way (some steps committed), then resumed.
    wait_until("some messages", || {
        server
            .command(&["XLEN", "w1"])
            .trim_start_matches(':')
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
            > 2000
    });
    run.kill().unwrap();
    run.wait().unwrap();
    let resumed = start(
        w1,
        out.path(),
        &server.url(),
        &[&small[..], &["--resume"]].concat(),
    )
    .wait_with_output()
    .unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    let got = summary(&out.path().join("w1-0"));
    for key in [
        "messages",
        "deliveries",
        "handled",
        "dead_letters",
        "behaviour_failures",
        "stop_reason",
    ] {
        assert_eq!(got[key], expected[key], "{key}: {got}");
    }
}

#[test]
fn a_user_without_a_right_is_refused_before_anything_is_written() {
    let server = RedisServer::start();
    // Everything but XAUTOCLAIM, which a run needs to take over what a dead process left.
    server.command(&[
        "ACL",
        "SETUSER",
        "limited",
        "on",
        ">pw",
        "~*",
        "+@all",
        "-xautoclaim",
    ]);
    let url = format!("redis://limited:pw@127.0.0.1:{}/0", server.port);
    let out = tempfile::tempdir().unwrap();
    let output = agora()
        .args([
            "run",
            "scenarios/gossip.toml",
            "--quiet",
            "--redis-url",
            &url,
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("may not run XAUTOCLAIM"), "{stderr}");
    assert!(stderr.contains("hint: grant the user"), "{stderr}");
    assert!(!stderr.contains(":pw@"), "{stderr}");
    assert_eq!(server.command(&["DBSIZE"]), ":0\r\n", "nothing written");
    assert!(!out.path().join("gossip-42").exists(), "no run folder");
    // Without scripts at all, it is said so.
    server.command(&[
        "ACL",
        "SETUSER",
        "noscripts",
        "on",
        ">pw",
        "~*",
        "+@all",
        "-@scripting",
    ]);
    let url = format!("redis://noscripts:pw@127.0.0.1:{}/0", server.port);
    let output = agora()
        .args([
            "run",
            "scenarios/gossip.toml",
            "--quiet",
            "--redis-url",
            &url,
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("may not run scripts"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn warnings_read_by_programs_carry_no_terminal_codes() {
    let server = RedisServer::start();
    // Another program left something that is not a cache entry in the cache: the debaters
    // reading their feed fail on it, and the runtime warns, with fields, before giving up.
    server.command(&["ZADD", "discussion:cache:timestamps", "-1", "not json"]);
    let out = tempfile::tempdir().unwrap();
    for no_color in [None, Some("1")] {
        let mut cmd = agora();
        cmd.args([
            "run",
            "scenarios/discussion.toml",
            "--quiet",
            "--redis-url",
            &server.url(),
            "--set",
            "backend.cleanup=\"never\"",
            "--set",
            "scenario.ticks=2",
            "--set",
            "scenario.max_retries=0",
            "--overwrite",
            "--out",
        ])
        .arg(out.path());
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let output = cmd.output().unwrap();
        let stderr = text(&output.stderr);
        assert!(stderr.contains("warning: behaviour failed"), "{stderr}");
        assert!(stderr.contains("agent="), "{stderr}");
        assert!(!stderr.contains('\u{1b}'), "escape codes in {stderr:?}");
        server.command(&[
            "DEL",
            "discussion",
            "discussion:run",
            "discussion:state",
            "discussion:dead",
            "discussion:lease",
        ]);
    }
}

#[test]
fn a_runs_folder_and_exit_code_are_its_own() {
    let out = tempfile::tempdir().unwrap();
    let long = [
        "--set",
        "scenario.ticks=100000000",
        "--set",
        "scenario.max_messages=1000000000000",
    ];
    let first = agora()
        .args(["run", "scenarios/opinion.toml", "--quiet", "--out"])
        .arg(out.path())
        .args(long)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let folder = out.path().join("opinion-7");
    wait_until("the first run's lock", || folder.join(".agora.lock").exists());
    // A second writer of the same folder is refused, naming the first.
    let second = agora()
        .args(["run", "scenarios/opinion.toml", "--quiet", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = bad_input(&second, "\u{1b}");
    assert!(
        stderr.contains(&format!("being written by another run (process {}", first.id())),
        "{stderr}"
    );
    // Ctrl-C: the outputs are written, and the exit code says it was interrupted.
    // SAFETY: sending a signal to the child we started.
    unsafe { libc::kill(first.id() as libc::pid_t, libc::SIGINT) };
    let output = first.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    assert_eq!(summary(&folder)["stop_reason"], "interrupted");
    // The folder belongs to that scenario: a run with other parameters sets it aside, whole,
    // or replaces it when asked.
    let run_with = |extra: &[&str]| {
        agora()
            .args(["run", "scenarios/opinion.toml", "--quiet", "--out"])
            .arg(out.path())
            .args(["--set", "agents.0.params.epsilon=0.3"])
            .args(extra)
            .output()
            .unwrap()
    };
    let interrupted = std::fs::read(folder.join("transcript.jsonl")).unwrap();
    let other = run_with(&[]);
    let stderr = text(&other.stderr);
    assert!(other.status.success(), "{stderr}");
    let aside = folder.with_file_name(format!(
        "{}.previous-1",
        folder.file_name().unwrap().to_string_lossy()
    ));
    assert!(
        stderr.contains("held a run with other settings") && stderr.contains(&*aside.to_string_lossy()),
        "{stderr}"
    );
    assert_eq!(summary(&aside)["stop_reason"], "interrupted");
    assert_eq!(
        std::fs::read(aside.join("transcript.jsonl")).unwrap(),
        interrupted
    );
    assert_eq!(
        summary(&folder)["parameters"]["agents"][0]["params"]["epsilon"],
        0.3
    );
    let asked = run_with(&["--overwrite", "--set", "agents.0.params.mu=0.3"]);
    assert!(asked.status.success(), "{}", text(&asked.stderr));
    assert!(
        !text(&asked.stderr).contains("previous-2"),
        "{}",
        text(&asked.stderr)
    );
    let s = summary(&folder);
    assert_eq!(s["parameters"]["agents"][0]["params"]["epsilon"], 0.3, "{s}");
    assert_eq!(s["fingerprint"].as_str().unwrap().len(), 64);
    assert_eq!(s["agora_version"], env!("CARGO_PKG_VERSION"));
    // The same scenario again is its own run again.
    let again = run_with(&[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
}

#[test]
fn a_fresh_run_over_a_resumable_one_is_refused_and_inspect_tells_what_is_not_there() {
    let server = RedisServer::start();
    let out = tempfile::tempdir().unwrap();
    let long = [
        "--set",
        "scenario.ticks=100000000",
        "--set",
        "scenario.max_messages=1000000000000",
    ];
    let mut first = start(
        Path::new("scenarios/opinion.toml"),
        out.path(),
        &server.url(),
        &long,
    );
    wait_until("a tick", || server.completed_tick("opinion").is_some());
    first.kill().unwrap();
    first.wait().unwrap();
    let fresh_out = tempfile::tempdir().unwrap();
    let fresh = start(
        Path::new("scenarios/opinion.toml"),
        fresh_out.path(),
        &server.url(),
        &long,
    )
    .wait_with_output()
    .unwrap();
    let stderr = text(&fresh.stderr);
    assert_eq!(fresh.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("did not finish") && stderr.contains("--resume"),
        "{stderr}"
    );
    assert!(stderr.contains("agora cleanup"), "{stderr}");
    assert!(
        std::fs::read_dir(fresh_out.path()).unwrap().next().is_none(),
        "a refused run leaves no folder"
    );
    // inspect and cleanup take their URL as run does, from the environment too.
    let inspect = agora()
        .args(["inspect", "--stream", "opinion"])
        .env("AGORA_BACKEND__URL", server.url())
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", text(&inspect.stderr));
    assert!(
        text(&inspect.stdout).contains("stream        opinion"),
        "{}",
        text(&inspect.stdout)
    );
    let nosuch = agora()
        .args(["inspect", "--stream", "nosuch", "--redis-url", &server.url()])
        .output()
        .unwrap();
    let stderr = bad_input(&nosuch, "\u{1b}");
    assert!(stderr.contains("there is no stream \"nosuch\""), "{stderr}");
}
