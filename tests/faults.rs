//! Faults, injected: processes killed at random points, Redis restarted or gone, behaviours
//! that panic. The promise in lockstep mode: whatever is killed and whenever, a resumed run
//! ends with the same transcript.jsonl as a run that was never interrupted.

mod common;

use common::{agora, text};

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;

/// Three kinds of agents at once: opinion (every agent publishes every tick), gossip
/// (metrics, random peers) and discussion (cache reads).
const MIXED: &str = r#"
[scenario]
name = "mixed"
seed = 11
ticks = 30

[[agents]]
id = "citizen"
count = 60
behaviour = "opinion"

[[agents]]
id = "gossip"
count = 30
behaviour = "gossip"
params = { fanout = 2, seeds = 2 }

[[agents]]
id = "speaker"
count = 5
behaviour = "discussion"
params = { policy = "echo" }
"#;

/// The last tick a kill waits for: well before MIXED's 30, so that the kill lands before the end.
const LAST_KILL_TICK: u64 = 20;

fn scenario_file(dir: &Path) -> PathBuf {
    let path = dir.join("mixed.toml");
    std::fs::write(&path, MIXED).unwrap();
    path
}

fn start(scenario: &Path, out: &Path, url: &str, extra: &[&str]) -> Child {
    agora()
        .arg("run")
        .arg(scenario)
        .args(["--quiet", "--backend", "redis", "--redis-url", url, "--out"])
        .arg(out)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn transcript(out: &Path) -> Vec<u8> {
    std::fs::read(out.join("mixed-11").join("transcript.jsonl")).unwrap()
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("mixed-11").join("summary.json")).unwrap())
        .unwrap()
}

/// The transcript of an uninterrupted run, on the embedded backend.
fn reference(scenario: &Path) -> (Vec<u8>, serde_json::Value) {
    let out = tempfile::tempdir().unwrap();
    let output = agora()
        .arg("run")
        .arg(scenario)
        .arg("--quiet")
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    (transcript(out.path()), summary(out.path()))
}

fn wait_for_tick(server: &RedisServer, tick: u64, child: &mut Child) {
    let started = Instant::now();
    while server.completed_tick("mixed").is_none_or(|t| t < tick) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before tick {tick}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no tick {tick} after 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A small, seeded random generator for kill points, so that a failure can be replayed with
/// AGORA_FAULT_SEED.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[test]
fn a_second_run_of_a_stream_still_going_is_refused_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario_file(dir.path());
    let server = RedisServer::start();
    let out = tempfile::tempdir().unwrap();
    // Should the test fail half-way, the endless run ends soon after its Redis is gone.
    let endless = [
        "--set",
        "scenario.ticks=1000000",
        "--set",
        "backend.reconnect_timeout=\"2s\"",
    ];
    let mut first = start(&scenario, out.path(), &server.url(), &endless);
    wait_for_tick(&server, 2, &mut first);
    // Another terminal, the same scenario: a fresh run would clean up, a resume would take
    // over; both are refused while the first is alive.
    let resume = [&endless[..], &["--resume"]].concat();
    for extra in [&endless[..], &resume[..]] {
        let other = tempfile::tempdir().unwrap();
        let mut second = start(&scenario, other.path(), &server.url(), extra);
        let started = Instant::now();
        while second.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                second.kill().unwrap();
                panic!("{extra:?}: the second run was not refused: it is running");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let output = second.wait_with_output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{extra:?}: {}",
            text(&output.stderr)
        );
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(&format!(
                "error: a run of stream \"mixed\" is still going: process {}",
                first.id()
            )),
            "{stderr}"
        );
        assert!(stderr.contains("--set backend.stream=..."), "{stderr}");
    }
    // The first run went on undisturbed, and stops cleanly on Ctrl-C.
    let before = server.completed_tick("mixed").unwrap();
    wait_for_tick(&server, before + 2, &mut first);
    // SAFETY: sending a signal to the child we started.
    unsafe { libc::kill(first.id() as libc::pid_t, libc::SIGINT) };
    let output = first.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    let got = summary(out.path());
    assert_eq!(got["stop_reason"], "interrupted");
    assert!(got.get("error").is_none(), "{got}");
    // Once it has ended, the stream is free again (to resume: a fresh run would delete it).
    let resume_endless = [&endless[..], &["--resume"]].concat();
    let mut again = start(&scenario, out.path(), &server.url(), &resume_endless);
    let holder = |server: &RedisServer| server.command(&["GET", "mixed:lease"]);
    let wait_for_lease = |child: &mut Child| {
        while !holder(&server).contains(&format!("\"pid\":{}", child.id())) {
            if child.try_wait().unwrap().is_some() {
                let mut stderr = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
                panic!("the run ended: {stderr}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for_lease(&mut again);
    // `agora inspect` says who runs the stream.
    let inspect = agora()
        .args(["inspect", "--redis-url", &server.url(), "--stream", "mixed"])
        .output()
        .unwrap();
    let shown = text(&inspect.stdout);
    assert!(
        shown.contains(&format!("lease         held by process {} on ", again.id())),
        "{shown}"
    );
    // The run's record, a field a line, its checkpoint in words.
    assert!(shown.contains("\nrun           scenario    mixed\n"), "{shown}");
    assert!(shown.contains(" published, "), "{shown}");
    // `agora cleanup` does what it is told, but says what it is doing to a live run.
    let cleanup = agora()
        .args(["cleanup", "--redis-url", &server.url(), "--stream", "mixed"])
        .output()
        .unwrap();
    assert!(cleanup.status.success(), "{}", text(&cleanup.stderr));
    assert!(
        text(&cleanup.stderr).contains("warning: a run of stream \"mixed\" is still going: process"),
        "{}",
        text(&cleanup.stderr)
    );
    // The run stops, and says why: its groups or its messages were deleted, whichever it
    // meets first.
    let stopped = again.wait_with_output().unwrap();
    let said = text(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(1), "{said}");
    assert!(
        said.contains("hint: the run's keys were deleted while it ran")
            || said.contains("hint: something deleted or trimmed the run's stream while it ran"),
        "{said}"
    );
    // A run whose lease another run took (it was stopped for longer than the lease lasts, and
    // the other started meanwhile) stops rather than share the keys.
    let mut displaced = start(&scenario, out.path(), &server.url(), &endless);
    wait_for_lease(&mut displaced);
    let other = r#"{"host":"elsewhere","pid":1,"machine":"another","since_ms":0}"#;
    server.command(&["SET", "mixed:lease", other]);
    let output = displaced.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains(
            "error: another run took over stream \"mixed\" (process 1 on elsewhere); this run stopped"
        ),
        "{}",
        text(&output.stderr)
    );
    // It writes no outputs (the other run may be writing into the same folder), and the
    // lease and the keys stay with the run that took it.
    assert!(
        !text(&output.stdout).contains("transcript sha256"),
        "{}",
        text(&output.stdout)
    );
    assert!(holder(&server).contains(other), "{}", holder(&server));
    let status = server.command(&["HGET", "mixed:run", "status"]);
    assert!(status.contains("running"), "{status}");
    // `agora cleanup` removes a run, lease and all.
    let cleanup = agora()
        .args(["cleanup", "--redis-url", &server.url(), "--stream", "mixed"])
        .output()
        .unwrap();
    assert!(cleanup.status.success(), "{}", text(&cleanup.stderr));
    assert_eq!(server.command(&["DBSIZE"]), ":0\r\n");
}

#[test]
fn sigkill_at_random_points_then_resume_gives_the_same_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario_file(dir.path());
    let (expected, expected_summary) = reference(&scenario);
    let seed = std::env::var("AGORA_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2026);
    let mut rng = Lcg(seed);
    let server = RedisServer::start();
    let out = tempfile::tempdir().unwrap();
    let mut kills = 0;
    let mut resume = false;
    let mut finished = None;
    for round in 0..40 {
        let extra: &[&str] = if resume { &["--resume"] } else { &[] };
        let mut child = start(&scenario, out.path(), &server.url(), extra);
        if kills < 12 {
            // Kill points follow the run's progress, not the clock, so that they land on a
            // fast machine as on a slow one: a few while the process starts and restores,
            // the rest a little after a tick ahead of the last one completed.
            let done = server.completed_tick("mixed").unwrap_or(0);
            let delay = if rng.next(4) == 0 || done >= LAST_KILL_TICK {
                Duration::from_millis(20 + rng.next(60))
            } else {
                wait_for_tick(&server, done + 1 + rng.next(LAST_KILL_TICK - done), &mut child);
                Duration::from_millis(rng.next(10))
            };
            let deadline = Instant::now() + delay;
            while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(1));
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                resume = true;
                continue;
            }
        }
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "round {round} (seed {seed}): {}",
            text(&output.stderr)
        );
        finished = Some(output);
        break;
    }
    assert!(finished.is_some(), "the run never finished");
    assert!(kills >= 10, "only {kills} kills landed (seed {seed})");
    assert!(
        transcript(out.path()) == expected,
        "the resumed transcript differs (seed {seed}, {kills} kills)"
    );
    let got = summary(out.path());
    for key in [
        "messages",
        "deliveries",
        "handled",
        "ticks",
        "stop_reason",
        "transcript_sha256",
        "metrics",
    ] {
        assert_eq!(got[key], expected_summary[key], "{key} (seed {seed})");
    }
}

#[test]
fn a_redis_restart_mid_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario_file(dir.path());
    let (expected, _) = reference(&scenario);
    let mut server = RedisServer::start_with_aof();
    let out = tempfile::tempdir().unwrap();
    let mut child = start(&scenario, out.path(), &server.url(), &[]);
    wait_for_tick(&server, 5, &mut child);
    server.restart();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(transcript(out.path()) == expected);
    assert!(
        text(&output.stderr).contains("waiting up to"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn redis_gone_for_good_exits_3_and_a_later_resume_completes() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario_file(dir.path());
    let (expected, _) = reference(&scenario);
    let mut server = RedisServer::start_with_aof();
    let out = tempfile::tempdir().unwrap();
    let timeout = ["--set", "backend.reconnect_timeout=2s"];
    let mut child = start(&scenario, out.path(), &server.url(), &timeout);
    wait_for_tick(&server, 5, &mut child);
    server.kill();
    let stopped = Instant::now();
    let output: Output = child.wait_with_output().unwrap();
    let took = stopped.elapsed();
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert!(
        took < Duration::from_secs(4),
        "gave up after {took:?}; the limit was 2 s"
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("error: gave up after waiting 2s") && stderr.contains("--resume"),
        "{stderr}"
    );
    let stopped = summary(out.path());
    assert_eq!(stopped["stop_reason"], "interrupted");
    assert!(
        stopped["error"].as_str().unwrap().contains("gave up"),
        "{stopped}"
    );

    server.restart();
    let output = start(&scenario, out.path(), &server.url(), &["--resume"])
        .wait_with_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(transcript(out.path()) == expected);
    assert_eq!(summary(out.path())["stop_reason"], "ticks");
}

#[test]
fn resuming_is_refused_when_it_cannot_be_right() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario_file(dir.path());
    let server = RedisServer::start();
    let out = tempfile::tempdir().unwrap();
    let nothing = start(&scenario, out.path(), &server.url(), &["--resume"])
        .wait_with_output()
        .unwrap();
    assert_eq!(nothing.status.code(), Some(2));
    assert!(text(&nothing.stderr).contains("nothing to resume"));

    let mut child = start(&scenario, out.path(), &server.url(), &[]);
    wait_for_tick(&server, 2, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let changed = start(
        &scenario,
        out.path(),
        &server.url(),
        &["--resume", "--seed", "12"],
    )
    .wait_with_output()
    .unwrap();
    assert_eq!(changed.status.code(), Some(2));
    assert!(
        text(&changed.stderr).contains("the scenario changed"),
        "{}",
        text(&changed.stderr)
    );
    let fresh = start(
        &scenario,
        out.path(),
        &server.url(),
        &["--set", "backend.cleanup=never"],
    )
    .wait_with_output()
    .unwrap();
    assert_eq!(fresh.status.code(), Some(2));
    assert!(
        text(&fresh.stderr).contains("keys of an earlier run"),
        "{}",
        text(&fresh.stderr)
    );
    // A run that did not finish is not deleted in passing: a fresh run is refused, with the
    // way to discard it, after which the default (cleanup before) starts afresh.
    let refused = start(&scenario, out.path(), &server.url(), &[])
        .wait_with_output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("did not finish") && text(&refused.stderr).contains("--resume"),
        "{}",
        text(&refused.stderr)
    );
    let discard = agora()
        .args(["cleanup", "--redis-url", &server.url(), "--stream", "mixed"])
        .output()
        .unwrap();
    assert!(discard.status.success(), "{}", text(&discard.stderr));
    let again = start(&scenario, out.path(), &server.url(), &[])
        .wait_with_output()
        .unwrap();
    assert!(again.status.success(), "{}", text(&again.stderr));
}

mod panics {

    use agora::backend::redis::RedisBackend;
    use agora::runtime::{self, RunOptions};
    use agora::{Behaviour, BehaviourError, Context, Effects, Message, Outgoing, Registry, Setup};
    use serde::{Deserialize, Serialize};

    use super::common;
    use super::common::redis_server::RedisServer;

    /// Panics on one message, for one agent; everyone else remembers everything it hears.
    struct Fragile;

    #[derive(Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoParams {}

    impl Behaviour for Fragile {
        type State = u64;

        fn init(&self, _ctx: &mut Context<'_>) -> Result<u64, BehaviourError> {
            Ok(0)
        }

        fn on_start(&self, _heard: &mut u64, ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
            let said = if ctx.peer_index() == 0 {
                "poison".to_string()
            } else {
                format!("hi from {}", ctx.agent())
            };
            Ok(Effects::new().publish(Outgoing::broadcast(said)))
        }

        fn on_message(
            &self,
            heard: &mut u64,
            msg: &Message,
            ctx: &mut Context<'_>,
        ) -> Result<Effects, BehaviourError> {
            *heard += 1;
            if msg.content == "poison" && ctx.agent() == "f_3" {
                panic!("f_3 cannot take it");
            }
            Ok(Effects::new().remember(serde_json::json!(msg.content)))
        }
    }

    #[test]
    fn a_panicking_behaviour_on_redis_dead_letters_its_message_and_the_others_finish() {
        let server = RedisServer::start();
        let mut registry = Registry::builtin();
        registry.register(
            "fragile",
            "panics on poison",
            &[],
            |_: NoParams, _: &Setup<'_>| Ok(Fragile),
        );
        let text = "[scenario]\nname = \"fragile\"\nticks = 3\n[backend]\nkind = \"redis\"\ncleanup = \"never\"\n\
            [[agents]]\nid = \"f\"\ncount = 5\nbehaviour = \"fragile\"\n";
        let out = tempfile::tempdir().unwrap();
        let scenario = common::scenario_on_redis("f.toml", text, &server.url(), out.path(), &registry);
        let outcome = common::block_on(async {
            let b = &scenario.backend;
            let backend = RedisBackend::connect(&b.url, b.keys.clone(), b.reconnect_timeout)
                .await
                .unwrap();
            runtime::run_on(
                backend,
                &scenario,
                &RunOptions::default(),
                std::future::pending(),
                std::sync::Arc::new(runtime::Unobserved),
            )
            .await
        })
        .unwrap();
        let s = &outcome.summary;
        assert_eq!((s.dead_letters, s.behaviour_failures), (1, 1));
        assert_eq!(
            s.handled,
            5 * 4 - 1,
            "every agent handled every other agent's message but one"
        );
        let dead = server.command(&["XRANGE", "fragile:dead", "-", "+"]);
        assert!(
            dead.contains("f_3 cannot take it") && dead.contains("poison"),
            "{dead}"
        );
        // The other agents' caches are complete: four messages each; f_3 has three.
        for (agent, expected) in [("f_1", 4), ("f_2", 4), ("f_3", 3), ("f_4", 4), ("f_5", 4)] {
            let len = server.command(&["LLEN", &format!("fragile:cache:{agent}")]);
            assert_eq!(len.trim(), format!(":{expected}"), "{agent}");
        }
        assert!(outcome.dead_letters_path.is_some());
    }
}

#[test]
fn elapsed_time_counts_the_whole_run_across_a_resume() {
    // The README: after a resume every figure of summary.json describes the whole run, its
    // elapsed time and rates included.
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario_file(dir.path());
    let server = RedisServer::start();
    let out = tempfile::tempdir().unwrap();
    let endless = ["--set", "scenario.ticks=1000000"];
    let mut elapsed = Vec::new();
    for resume in [false, true] {
        let extra = if resume {
            [&endless[..], &["--resume"]].concat()
        } else {
            endless.to_vec()
        };
        // Forty ticks, then one more than where the first part stopped (a tick the resumed
        // process has run itself, so that its Ctrl-C handler is there).
        let until = server.completed_tick("mixed").map_or(40, |t| t + 1);
        let mut child = start(&scenario, out.path(), &server.url(), &extra);
        wait_for_tick(&server, until, &mut child);
        // SAFETY: sending a signal to the child we started.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
        elapsed.push(summary(out.path())["elapsed_s"].as_f64().unwrap());
    }
    // A tick or two more than the first part's forty: longer than it, where the resumed
    // part alone would be a fraction of it.
    assert!(elapsed[1] > elapsed[0], "{elapsed:?}");
}
