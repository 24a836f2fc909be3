//! The `agora` command line, run as a user types it.

mod common;

use common::{agora, agora_for, custom_example, text};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn run_in(out: &Path, cmd: &mut Command) -> Output {
    cmd.arg("--out").arg(out).arg("--quiet");
    // Keep the user's environment from changing what the tests see.
    for (k, _) in std::env::vars() {
        if k.starts_with("AGORA_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().unwrap()
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn scenario_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("scenarios")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// Checks a finished run's files against CONTRACT.md; returns the summary.
fn check_outputs(out: &Path, output: &Output) -> Value {
    let stdout = text(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let hex = last
        .strip_prefix("transcript sha256: ")
        .unwrap_or_else(|| panic!("last line: {last:?}"));
    assert_eq!(hex.len(), 64);
    let run_dir = std::fs::read_dir(out).unwrap().next().unwrap().unwrap().path();
    let transcript = run_dir.join("transcript.jsonl");
    assert_eq!(sha256_hex(&transcript), hex);
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap();
    for key in [
        "scenario",
        "seed",
        "mode",
        "backend",
        "agents",
        "ticks",
        "messages",
        "deliveries",
        "handled",
        "dead_letters",
        "elapsed_s",
        "stop_reason",
        "transcript_sha256",
    ] {
        assert!(summary.get(key).is_some(), "summary.json lacks {key}: {summary}");
    }
    assert_eq!(summary["transcript_sha256"], hex);
    let lines = std::fs::read_to_string(&transcript).unwrap();
    assert_eq!(
        summary["messages"].as_u64().unwrap(),
        lines.lines().count() as u64
    );
    for line in lines.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        for key in ["tick", "sender_id", "seq", "content"] {
            assert!(v.get(key).is_some(), "transcript line lacks {key}: {line}");
        }
    }
    summary
}

/// What each lockstep scenario in `scenarios/` gives at its own seed. "Run it again next
/// week and get the same result": a change to the runtime or a built-in behaviour that changes
/// one of these changes what users' runs give, and must be made on purpose (and said in the
/// README), not by accident.
const PINNED_TRANSCRIPTS: [(&str, &str); 6] = [
    (
        "custom",
        "2737245f4806c77a743e78b5dd51a0429c31298e21cd6a1ae18b8d01733b66dc",
    ),
    (
        "discussion",
        "d2c7f50c4a76082eb23c20ce759e14f95e3ab8f5ca567c79768ed4ae83998ed2",
    ),
    (
        "gossip",
        "6bd35919be800271e87115d911c20a039492638b8c0b2ff13bc42646c874c397",
    ),
    (
        "opinion",
        "474bd13f5b94630dd212488b284361c8b957761ee73b67cc71096192fcd728ba",
    ),
    (
        "opinion-network",
        "22adde8ea2db4c6361c6678d64221e79cde5e100399ef74b4463a316c9a9f6ac",
    ),
    (
        "relay",
        "b6ae88da300f887b98a0cc81f0671bc9726af9b049327e32c37fb38d42b16512",
    ),
];

#[test]
fn every_scenario_runs_and_writes_its_files() {
    for file in scenario_files() {
        let out = tempfile::tempdir().unwrap();
        let mut cmd = agora_for(&file);
        // A scenario of LLM agents runs from the recording beside it: no network, no key.
        cmd.arg("run").arg(&file).args(common::replay_args(&file));
        let output = run_in(out.path(), &mut cmd);
        assert!(
            output.status.success(),
            "{}: {}",
            file.display(),
            text(&output.stderr)
        );
        let summary = check_outputs(out.path(), &output);
        assert!(summary["messages"].as_u64().unwrap() > 0, "{}", file.display());
        let name = file.file_stem().unwrap().to_str().unwrap();
        if let Some((_, pinned)) = PINNED_TRANSCRIPTS.iter().find(|(n, _)| *n == name) {
            assert_eq!(
                summary["transcript_sha256"],
                *pinned,
                "{}: the transcript is not the one this scenario and seed always gave",
                file.display()
            );
        }
        assert!(
            ["ticks", "quiescent"].contains(&summary["stop_reason"].as_str().unwrap()),
            "{}: {summary}",
            file.display()
        );
    }
}

#[test]
fn the_custom_behaviour_is_unknown_to_plain_agora() {
    let out = tempfile::tempdir().unwrap();
    let output = run_in(out.path(), agora().args(["run", "scenarios/custom.toml"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("unknown behaviour \"echo\""));
    let listed = custom_example().arg("behaviours").output().unwrap();
    assert!(text(&listed.stdout).contains("echo\n"));
}

fn transcript_of(args: &[&str], envs: &[(&str, &str)]) -> (String, Value) {
    let out = tempfile::tempdir().unwrap();
    let mut cmd = agora();
    cmd.args(args);
    let output = {
        cmd.arg("--out").arg(out.path()).arg("--quiet");
        for (k, _) in std::env::vars() {
            if k.starts_with("AGORA_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(envs.iter().copied());
        cmd.output().unwrap()
    };
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary = check_outputs(out.path(), &output);
    let run_dir = std::fs::read_dir(out.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    (
        std::fs::read_to_string(run_dir.join("transcript.jsonl")).unwrap(),
        summary,
    )
}

#[test]
fn seeds_from_flags_set_and_environment() {
    let (base, s) = transcript_of(&["run", "scenarios/gossip.toml"], &[]);
    assert_eq!(s["seed"], 42);
    let (again, _) = transcript_of(&["run", "scenarios/gossip.toml"], &[]);
    assert_eq!(base, again, "the same scenario and seed give the same bytes");
    let (set, s) = transcript_of(&["run", "scenarios/gossip.toml", "--set", "scenario.seed=7"], &[]);
    assert_eq!(s["seed"], 7);
    assert_ne!(set, base);
    let (env, s) = transcript_of(
        &["run", "scenarios/gossip.toml"],
        &[("AGORA_SCENARIO__SEED", "7")],
    );
    assert_eq!(s["seed"], 7);
    assert_eq!(env, set);
    let (flag, _) = transcript_of(&["run", "scenarios/gossip.toml", "--seed", "7"], &[]);
    assert_eq!(flag, set);
    // --set wins over the environment.
    let (both, s) = transcript_of(
        &["run", "scenarios/gossip.toml", "--set", "scenario.seed=8"],
        &[("AGORA_SCENARIO__SEED", "7")],
    );
    assert_eq!(s["seed"], 8);
    assert_ne!(both, set);
}

/// Runs `agora run` on a scenario text and checks it is refused as bad input.
fn refused(scenario: &str, extra: &[&str], expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, scenario).unwrap();
    let output = run_in(dir.path(), agora().arg("run").arg(&path).args(extra));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{scenario}\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        lines.len() == 1 || (lines.len() == 2 && lines[1].starts_with("hint: ")),
        "{stderr}"
    );
    assert!(lines[0].contains(expect), "expected {expect:?} in {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("bad-0").exists(),
        "a refused scenario writes nothing"
    );
}

const GOOD: &str =
    "[scenario]\nname = \"bad\"\nticks = 3\n\n[[agents]]\nid = \"a\"\ncount = 3\nbehaviour = \"gossip\"\n";

#[test]
fn bad_scenarios_are_refused_with_one_line() {
    refused("[scenario\nname = 1", &[], "bad.toml:1:");
    refused(
        &GOOD.replace("ticks = 3", "ticks = 3\ncolour = \"red\""),
        &[],
        "bad.toml:4: scenario.colour: unknown field",
    );
    refused(
        &GOOD.replace("ticks = 3", "ticks = \"3\""),
        &[],
        "bad.toml:3: scenario.ticks: invalid type",
    );
    refused(
        &GOOD.replace("count = 3", "count = 0"),
        &[],
        "bad.toml:7: agents[0].count: must be at least 1",
    );
    refused(
        &GOOD.replace("count = 3", "count = -2"),
        &[],
        "agents[0].count: must be at least 1, got -2",
    );
    refused(
        &format!("{GOOD}\n[[agents]]\nid = \"a_2\"\nbehaviour = \"relay\"\n"),
        &[],
        "agents[1].id: agent name \"a_2\" is already used",
    );
    refused(
        &GOOD.replace("\"gossip\"", "\"gosip\""),
        &[],
        "agents[0].behaviour: unknown behaviour \"gosip\"",
    );
    refused(
        &format!("{GOOD}params = {{ fanot = 2 }}\n"),
        &[],
        "bad.toml:9: agents[0].params.fanot: unknown field",
    );
    refused(
        &format!("{GOOD}params = {{ fanout = \"two\" }}\n"),
        &[],
        "agents[0].params.fanout: invalid type",
    );
    refused(&GOOD.replace("ticks = 3", ""), &[], "lockstep mode needs `ticks`");
    refused(
        GOOD,
        &["--set", "agents.0.count=zero"],
        "--set agents.0.count=zero",
    );
    refused(GOOD, &["--set", "scenario"], "expected KEY=VALUE");
    refused(GOOD, &["--backend", "postgres"], "invalid value 'postgres'");
    refused(GOOD, &["--frobnicate"], "unexpected argument '--frobnicate'");
}

#[test]
fn the_unknown_behaviour_error_lists_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, GOOD.replace("\"gossip\"", "\"gosip\"")).unwrap();
    let output = run_in(dir.path(), agora().arg("run").arg(&path));
    assert!(text(&output.stderr).contains("hint: known behaviours: discussion, gossip, llm, opinion, relay"));
}

#[test]
fn missing_and_unreadable_files_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_in(dir.path(), agora().args(["run", "no/such/scenario.toml"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).starts_with("error: no/such/scenario.toml: no such file"));
    let binary = dir.path().join("binary.toml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let output = run_in(dir.path(), agora().arg("run").arg(&binary));
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("not valid UTF-8"));
    let output = run_in(dir.path(), agora().arg("run").arg(dir.path()));
    assert_eq!(output.status.code(), Some(2));
    let output = agora().arg("run").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

/// Asserts that `output` failed as bad input, with one `error:` line and at most a `hint:`.
fn bad_input(output: &Output, expect: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(expect),
        "{stderr}"
    );
    assert!(
        lines.len() == 1 || (lines.len() == 2 && lines[1].starts_with("hint: ")),
        "{stderr}"
    );
}

#[test]
fn careless_command_lines_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    bad_input(&agora().output().unwrap(), "no command given");
    // Every command is named, the later ones too.
    for command in ["plot", "sweep", "inspect"] {
        bad_input(&agora().output().unwrap(), command);
    }
    // --out naming a file: refused before anything runs.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let output = agora()
        .args(["run", "scenarios/relay.toml", "--quiet", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    bad_input(&output, "cannot create the run's directory");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    // A database that is not a number.
    let output = agora()
        .args([
            "run",
            "scenarios/relay.toml",
            "--redis-url",
            "redis://127.0.0.1:1/abc",
        ])
        .output()
        .unwrap();
    bad_input(&output, "names database \"abc\"");
    // A seed past u64.
    let output = agora()
        .args(["check", "scenarios/relay.toml", "--seed", "18446744073709551616"])
        .output()
        .unwrap();
    bad_input(&output, "--seed");
    // Negative numbers are wrong values, not unknown flags.
    for (flag, value) in [("--seed", "-1"), ("--workers", "-2")] {
        let output = agora()
            .args(["run", "scenarios/relay.toml", flag, value])
            .output()
            .unwrap();
        bad_input(&output, "expected a whole number from 0 to");
    }
}

#[test]
fn a_redis_url_on_the_command_line_means_redis() {
    let shown = |extra: &[&str]| {
        let output = agora()
            .args(["check", "scenarios/relay.toml"])
            .args(extra)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        let out = text(&output.stdout);
        out.lines()
            .find(|l| l.starts_with("kind = "))
            .unwrap()
            .to_string()
    };
    assert_eq!(shown(&[]), "kind = \"memory\"");
    assert_eq!(shown(&["--redis-url", "redis://h:1/0"]), "kind = \"redis\"");
    assert_eq!(
        shown(&["--redis-url", "redis://h:1/0", "--backend", "memory"]),
        "kind = \"memory\""
    );
    assert_eq!(
        shown(&["--redis-url", "redis://h:1/0", "--set", "backend.kind=memory"]),
        "kind = \"memory\""
    );
}

#[test]
fn warnings_are_plain_lines() {
    let output = agora()
        .args(["check", "scenarios/relay.toml", "--set", "scenario.duration=5s"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        text(&output.stderr).trim_end(),
        "warning: scenario.duration applies only to free mode; lockstep runs for `ticks`"
    );
}

#[test]
fn an_earlier_transcript_survives_a_refused_run() {
    let out = tempfile::tempdir().unwrap();
    let first = run_in(out.path(), agora().args(["run", "scenarios/relay.toml"]));
    assert!(first.status.success());
    let transcript = out.path().join("relay-1").join("transcript.jsonl");
    let before = std::fs::read(&transcript).unwrap();
    let refused = run_in(
        out.path(),
        agora().args(["run", "scenarios/relay.toml", "--set", "agents.0.count=0"]),
    );
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(std::fs::read(&transcript).unwrap(), before);
}

#[test]
fn behaviours_lists_the_built_ins_and_their_defaults() {
    let output = agora().arg("behaviours").output().unwrap();
    assert!(output.status.success());
    let listed = text(&output.stdout);
    for expected in [
        "relay\n",
        "tokens = 1",
        "hops = 100",
        "gossip\n",
        "fanout = 2",
        "p_forward = 1.0",
        "seeds = 1",
        "rumor = \"the bridge is closed\"",
        "opinion\n",
        "epsilon = 0.2",
        "mu = 0.5",
        "discussion\n",
        "topic = \"a four-day work week\"",
        "policy = \"random\"",
        "echo_probability = 0.6",
        "feed = 5",
    ] {
        assert!(listed.contains(expected), "missing {expected:?} in\n{listed}");
    }
}

#[test]
fn check_prints_the_resolved_scenario() {
    let output = agora()
        .args(["check", "scenarios/gossip.toml", "--set", "agents.0.count=5"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let printed = text(&output.stdout);
    let parsed: toml::Table = toml::from_str(&printed).unwrap();
    assert_eq!(parsed["agents"][0]["count"].as_integer(), Some(5));
    assert_eq!(parsed["backend"]["stream"].as_str(), Some("gossip"));
    assert_eq!(parsed["backend"]["cache_prefix"].as_str(), Some("gossip:cache:"));
    assert_eq!(parsed["agents"][0]["params"]["p_forward"].as_float(), Some(0.9));
    // Every default filled in, off switches included.
    assert_eq!(parsed["backend"]["cluster"].as_bool(), Some(false));
    let hidden = agora()
        .args([
            "check",
            "scenarios/gossip.toml",
            "--redis-url",
            "redis://me:s3cret@example:6379/0",
        ])
        .output()
        .unwrap();
    assert!(hidden.status.success());
    assert!(!text(&hidden.stdout).contains("s3cret"));
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["worker", "--help"],
        vec!["check", "--help"],
        vec!["behaviours", "--help"],
        vec!["cleanup", "--help"],
        vec!["inspect", "--help"],
    ] {
        let output = agora().args(&args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(text(&output.stdout).contains("Usage:"), "{args:?}");
    }
    let version = agora().arg("--version").output().unwrap();
    assert!(text(&version.stdout).starts_with("agora "));
}

#[test]
fn ctrl_c_stops_cleanly_and_still_writes_the_outputs() {
    stops_cleanly_on(libc::SIGINT, 1);
}

/// `kill`, `timeout`, `docker stop` and batch schedulers end a job with SIGTERM: a run takes
/// it as it takes Ctrl-C, where the default would end it with no outputs and its folder
/// still locked.
#[test]
fn sigterm_stops_cleanly_and_still_writes_the_outputs() {
    stops_cleanly_on(libc::SIGTERM, 1);
}

#[test]
fn sigterm_sent_twice_as_supervisors_do_still_stops_cleanly() {
    // systemd, Slurm and `timeout` signal every process of a job, and a sweep passes the
    // signal on too: the second is the same request, not an abort.
    stops_cleanly_on(libc::SIGTERM, 2);
}

fn stops_cleanly_on(signal: libc::c_int, times: usize) {
    let out = tempfile::tempdir().unwrap();
    let child = agora()
        .args(["run", "scenarios/w1.toml", "--quiet", "--out"])
        .arg(out.path())
        .args(common::ENDLESS_W1)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the run is under way (its transcript file exists), then interrupt it.
    common::wait_for_file(&out.path().join("w1-0").join("transcript.jsonl.partial"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    for _ in 0..times {
        // SAFETY: sending a signal to the child we started.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let output = child.wait_with_output().unwrap();
    // 130, as shells expect of Ctrl-C: a script or a sweep loop does not take it for done.
    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    let summary = check_outputs(out.path(), &output);
    assert_eq!(summary["stop_reason"], "interrupted");
    assert!(summary["messages"].as_u64().unwrap() > 0);
    // Nothing is left half-written or locked (the scenario's mark, `.agora.run`, stays by
    // design): the folder can be run into again.
    let left: Vec<_> = std::fs::read_dir(out.path().join("w1-0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name == ".agora.lock" || name.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn free_mode_keeps_the_least_interval_between_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let paced = |interval: &str, agent_interval: &str| {
        let path = dir.path().join("paced.toml");
        std::fs::write(
            &path,
            format!(
                "[scenario]\nname = \"paced\"\nmode = \"free\"\nmin_publish_interval = \"{interval}\"\n\
                 [[agents]]\nid = \"a\"\ncount = 3\nbehaviour = \"relay\"\nparams = {{ tokens = 1, hops = 6 }}\n\
                 min_publish_interval = \"{agent_interval}\"\n"
            ),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let output = run_in(
            &dir.path().join("out"),
            agora().args(["run", "--overwrite"]).arg(&path),
        );
        assert!(output.status.success(), "{}", text(&output.stderr));
        let summary = check_outputs(&dir.path().join("out"), &output);
        (summary["messages"].as_u64().unwrap(), started.elapsed())
    };
    // One token, six hops: six publishes, one after the other.
    let (messages, took) = paced("150ms", "0s");
    assert_eq!(messages, 6);
    assert!(
        took >= std::time::Duration::from_millis(750),
        "five intervals of 150 ms took {took:?}"
    );
    // Three agents in a ring, each publishing every third time: the fourth publish (the
    // first agent's second) waits for that agent's own 600 ms.
    let (_, took) = paced("0s", "600ms");
    assert!(took >= std::time::Duration::from_millis(600), "{took:?}");
}

#[test]
fn an_unreachable_redis_offers_the_embedded_backend_only_to_a_run() {
    // Nothing listens on port 1 (binding it takes root).
    let url = "redis://127.0.0.1:1/0";
    let run = agora()
        .args(["run", "scenarios/relay.toml", "--quiet", "--redis-url", url])
        .output()
        .unwrap();
    let inspect = agora()
        .args(["inspect", "--stream", "relay", "--redis-url", url])
        .output()
        .unwrap();
    let cleanup = agora()
        .args(["cleanup", "--stream", "relay", "--redis-url", url])
        .output()
        .unwrap();
    for output in [&run, &inspect, &cleanup] {
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("nothing is listening"), "{stderr}");
        assert!(stderr.contains("hint: start Redis"), "{stderr}");
    }
    assert!(text(&run.stderr).contains("or run on the embedded backend with --backend memory"));
    for output in [&inspect, &cleanup] {
        // They need Redis itself: the embedded backend is no way out.
        assert!(
            !text(&output.stderr).contains("--backend memory"),
            "{}",
            text(&output.stderr)
        );
    }
}

#[test]
fn careless_inputs_are_told_in_the_users_words() {
    let check = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = agora();
        command.args(["check", "scenarios/llm-debate.toml"]).args(args);
        for (name, value) in env {
            command.env(name, value);
        }
        command.output().unwrap()
    };
    // No names of agora's Rust types.
    for (set, expect) in [
        (
            "network=5",
            "network: invalid type: integer `5`, expected a table",
        ),
        ("llm.base_url=[1]", "expected a URL such as"),
        ("agents.0.params.turns=5", "expected one of its names"),
        ("agents.x.count=5", "cannot set `x` in a list of tables"),
        ("scenario.seed.x=1", "which is an integer"),
    ] {
        let output = check(&["--set", set], &[]);
        bad_input(&output, expect);
        let stderr = text(&output.stderr);
        assert!(!stderr.contains("struct") && !stderr.contains("enum"), "{stderr}");
    }
    // What starts as a TOML array, table or string must be one; a plain word stays a word.
    bad_input(
        &check(&["--set", "agents.0.params.vars=[1,2"], &[]),
        "[1,2 is not a TOML value",
    );
    bad_input(
        &check(&[], &[("AGORA_SCENARIO__NAME", "\"open")]),
        "environment variable AGORA_SCENARIO__NAME",
    );
    assert!(check(&["--set", "scenario.name=plain"], &[]).status.success());
    // A flag and a --set of the same key: the flag wins, and says so.
    let output = check(&["--seed", "5", "--set", "scenario.seed=6"], &[]);
    assert!(text(&output.stdout).contains("seed = 5\n"));
    assert!(
        text(&output.stderr).contains("warning: --seed 5 wins over --set scenario.seed=6"),
        "{}",
        text(&output.stderr)
    );
    // A server from the environment is blamed on the environment, not on the file.
    let output = check(&[], &[("OPENAI_BASE_URL", "notaurl")]);
    bad_input(&output, "environment variable OPENAI_BASE_URL");
    // One table written as a list of tables.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        "[[scenario]]\nname = \"x\"\n[[agents]]\nid = \"a\"\nbehaviour = \"gossip\"\n",
    )
    .unwrap();
    let output = agora().arg("check").arg(&file).output().unwrap();
    bad_input(&output, "[[scenario]] makes a list of tables");
    assert!(text(&output.stderr).contains("hint: write [scenario]"));
    // An unknown section names those there are.
    bad_input(
        &check(&[], &[("AGORA_FOO__BAR", "1")]),
        "scenario, backend, output, llm, network",
    );
    // Negative numbers are wrong values, not unknown flags.
    let output = agora()
        .args(["sweep", "scenarios/opinion.toml", "--seeds", "-1..3"])
        .output()
        .unwrap();
    bad_input(&output, "--seeds -1..3");
    let output = agora()
        .args(["cleanup", "--stream", "s", "--num-groups", "-1"])
        .output()
        .unwrap();
    bad_input(&output, "expected a whole number");
    // Cleanup deletes keys: it never falls back to a default server.
    let output = agora()
        .args(["cleanup", "--stream", "s"])
        .env_remove("AGORA_BACKEND__URL")
        .output()
        .unwrap();
    bad_input(&output, "pass --redis-url URL");
    // A run's own key is not a stream to clean up or inspect (nothing listens on port 1).
    for command in ["cleanup", "inspect"] {
        let output = agora()
            .args([
                command,
                "--stream",
                "x:dead",
                "--redis-url",
                "redis://127.0.0.1:1",
            ])
            .output()
            .unwrap();
        bad_input(&output, "give the stream itself, --stream \"x\"");
    }
}

#[test]
fn more_workers_than_can_be_used_are_refused_before_any_starts() {
    // Refused before Redis is asked: nothing listens on port 1.
    for (workers, expect) in [
        ("6", "the scenario has 5 agents"),
        ("5000", "the scenario has 5 agents"),
    ] {
        let output = agora()
            .args(["run", "scenarios/relay.toml", "--quiet", "--workers", workers])
            .args(["--redis-url", "redis://127.0.0.1:1/0"])
            .output()
            .unwrap();
        bad_input(&output, expect);
    }
    let output = agora()
        .args(["run", "scenarios/relay.toml", "--quiet", "--workers", "2000"])
        .args([
            "--set",
            "agents.0.count=3000",
            "--redis-url",
            "redis://127.0.0.1:1/0",
        ])
        .output()
        .unwrap();
    bad_input(&output, "at most 1024 worker processes");
}

#[test]
fn output_that_cannot_be_written_and_a_font_that_is_not_one_are_not_bugs() {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let output = agora().arg("behaviours").stdout(full).output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: cannot write to standard output"),
        "{stderr}"
    );
    assert!(!stderr.contains("bug"), "{stderr}");
    // A run folder to plot, with a font that is not there.
    let out = tempfile::tempdir().unwrap();
    let run = agora()
        .args(["run", "scenarios/relay.toml", "--quiet", "--no-plots", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));
    let output = agora()
        .arg("plot")
        .arg(out.path().join("relay-1"))
        .env("AGORA_FONT", out.path().join("no-such.ttf"))
        .output()
        .unwrap();
    bad_input(&output, "environment variable AGORA_FONT");
}

#[test]
fn every_scenario_checked_reads_back_the_same_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir("scenarios").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let first = agora_for(&path).arg("check").arg(&path).output().unwrap();
        assert!(
            first.status.success(),
            "{}: {}",
            path.display(),
            text(&first.stderr)
        );
        let resolved = dir.path().join(path.file_name().unwrap());
        std::fs::write(&resolved, &first.stdout).unwrap();
        let again = agora_for(&path).arg("check").arg(&resolved).output().unwrap();
        let stderr = text(&again.stderr);
        assert!(again.status.success(), "{}: {stderr}", path.display());
        assert!(!stderr.contains("warning"), "{}: {stderr}", path.display());
        // The same scenario, but for the comment naming the file.
        let body = |out: &Output| text(&out.stdout).lines().skip(1).collect::<Vec<_>>().join("\n");
        assert_eq!(body(&again), body(&first), "{}", path.display());
        checked += 1;
    }
    assert!(checked >= 10, "{checked} scenarios");
}
