//! LLM agents against a real HTTP server that speaks the chat-completions API (the test's
//! own, on a free port): the transcript does not depend on concurrency, reply order or
//! retries, replays offline byte for byte, never shows the key, and every server a user can
//! get wrong gives one clear error.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::llm_server::{Behaviour, LlmServer};
use common::redis_server::RedisServer;
use common::{agora, text, transcript_hash};
use serde_json::Value;

const KEY: &str = "sk-agora-test-key-0123456789";

/// A lockstep debate: with turn-taking (one chain of replies) and `activity`, so that many
/// agents call the model in the same tick.
fn debate(url: &str, agents: u32, ticks: u32, activity: f64, llm: &str) -> String {
    format!(
        r#"
[scenario]
name = "debate"
seed = 7
ticks = {ticks}

[llm]
base_url = "{url}"
model = "stub-model"
{llm}

[[agents]]
id = "d"
count = {agents}
behaviour = "llm"

[agents.params]
activity = {activity}
feed = 4
turns = "random"
vars = {{ topic = "taxes" }}
system = "You are {{{{ agent }}}} ({{{{ index }}}}), on {{{{ topic }}}}."
prompt = "{{% for p in feed %}}{{{{ p.sender_id }}}}: {{{{ p.content }}}} {{% endfor %}}{{{{ message.content if message else 'open' }}}}"
"#
    )
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("debate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(scenario: &Path, out: &Path, extra: &[&str]) -> Output {
    agora()
        .arg("run")
        .arg(scenario)
        .arg("--quiet")
        .arg("--out")
        .arg(out)
        .args(extra)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .unwrap()
}

fn run_dir(out: &Path) -> PathBuf {
    out.join("debate-7")
}

fn summary(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir(out).join("summary.json")).unwrap()).unwrap()
}

/// A debate run against `server` with `max_concurrency` requests in flight.
fn live(server: &LlmServer, concurrency: u32) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(
        dir.path(),
        &debate(
            &server.base_url(),
            24,
            4,
            0.5,
            &format!("max_concurrency = {concurrency}"),
        ),
    );
    let output = run(&scenario, &dir.path().join("runs"), &[]);
    (transcript_hash(&output), dir)
}

#[test]
fn a_lockstep_transcript_does_not_depend_on_concurrency_reply_order_or_retries() {
    let shuffled = Behaviour {
        latency: Duration::from_millis(5),
        jitter: Duration::from_millis(40),
        ..Behaviour::default()
    };
    let one_at_a_time = LlmServer::start(shuffled.clone());
    let (reference, _kept) = live(&one_at_a_time, 1);
    assert_eq!(one_at_a_time.max_in_flight(), 1);

    let many = LlmServer::start(shuffled.clone());
    let (at_16, recorded) = live(&many, 16);
    assert_eq!(at_16, reference, "max_concurrency 16, replies in shuffled order");
    assert!(many.max_in_flight() > 1, "calls of one tick overlap");

    for status in [500, 429] {
        let failing = LlmServer::start(Behaviour {
            fail_every: Some((4, status)),
            ..shuffled.clone()
        });
        let (with_failures, _kept) = live(&failing, 8);
        assert_eq!(
            with_failures, reference,
            "every 4th request failing with {status}"
        );
        assert!(
            failing.requests() > failing.answered() + 2,
            "the failed requests were retried"
        );
        assert_eq!(failing.answered_twice(), 0, "no request was answered twice");
    }

    // Offline: the recording of the run at 16, no server at all.
    let recording = run_dir(&recorded.path().join("runs")).join("llm.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), &debate("http://127.0.0.1:9/v1", 24, 4, 0.5, ""));
    let out = dir.path().join("runs");
    let replayed = run(&scenario, &out, &["--replay", recording.to_str().unwrap()]);
    assert_eq!(transcript_hash(&replayed), reference, "replayed offline");
    assert_eq!(
        std::fs::read(run_dir(&out).join("llm.jsonl")).unwrap(),
        std::fs::read(&recording).unwrap(),
        "the replay records the exchanges it used: the recording's"
    );
    let s = summary(&out);
    // The summary says where the answers came from.
    assert_eq!(
        s["replayed_from"].as_str(),
        Some(recording.canonicalize().unwrap().to_str().unwrap())
    );
    assert!(
        summary(&recorded.path().join("runs"))
            .get("replayed_from")
            .is_none()
    );
    // Replaying a run's own llm.jsonl into its folder would write over the recording.
    let own = run_dir(&out).join("llm.jsonl");
    let before = std::fs::read(&own).unwrap();
    let refused = run(
        &scenario,
        &out,
        &["--replay", own.to_str().unwrap(), "--overwrite"],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("that is the llm.jsonl this run would write over"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(std::fs::read(&own).unwrap(), before, "the recording is intact");
    assert_eq!(s["llm_calls"], many.answered_requests().len());
    assert!(s["llm_tokens"]["prompt"].as_u64().unwrap() > 0);
    assert!(s["llm_latency_ms"]["p95"].as_u64().unwrap() >= s["llm_latency_ms"]["p50"].as_u64().unwrap());
}

#[test]
fn never_more_requests_in_flight_than_max_concurrency() {
    let server = LlmServer::start(Behaviour {
        latency: Duration::from_millis(40),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(
        dir.path(),
        &debate(&server.base_url(), 30, 2, 1.0, "max_concurrency = 4"),
    );
    let output = run(&scenario, &dir.path().join("runs"), &[]);
    transcript_hash(&output);
    assert!(server.answered() >= 60, "{} calls", server.answered());
    let most = server.max_in_flight();
    assert!((2..=4).contains(&most), "{most} requests in flight at once");
}

/// Every file under `dir`, as text.
fn files_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push((
                path.clone(),
                String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned(),
            ));
        }
    }
    found
}

#[test]
fn the_key_never_appears_in_any_output() {
    let server = LlmServer::start(Behaviour {
        key: Some(KEY.to_string()),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), &debate(&server.base_url(), 5, 3, 1.0, ""));
    let out = dir.path().join("runs");
    let with_key = |cmd: &mut Command| {
        cmd.env("OPENAI_API_KEY", KEY).env("RUST_LOG", "agora=debug");
    };
    let mut cmd = agora();
    cmd.arg("run").arg(&scenario).arg("--out").arg(&out);
    with_key(&mut cmd);
    let output = cmd.output().unwrap();
    transcript_hash(&output);
    let mut check = agora();
    check.arg("check").arg(&scenario);
    with_key(&mut check);
    let checked = check.output().unwrap();
    assert!(checked.status.success());
    let mut shown = vec![
        ("stdout".into(), text(&output.stdout)),
        ("stderr".into(), text(&output.stderr)),
        ("check".into(), text(&checked.stdout)),
    ];
    shown.extend(
        files_under(&out)
            .into_iter()
            .map(|(p, t)| (p.display().to_string(), t)),
    );
    assert!(shown.iter().any(|(name, _)| name.ends_with("llm.jsonl")));
    for (name, shown) in &shown {
        assert!(!shown.contains(KEY), "{name} shows the key");
    }

    // A wrong key: refused before the run, and not shown either.
    let wrong = "sk-wrong-key-9876543210";
    let refused = run_with_env(
        &scenario,
        &dir.path().join("refused"),
        &[("OPENAI_API_KEY", wrong)],
    );
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused.stderr));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.starts_with("error: ")
            && stderr.contains("401")
            && stderr.contains("hint: check the key in OPENAI_API_KEY"),
        "{stderr}"
    );
    assert!(!stderr.contains(wrong) && !text(&refused.stdout).contains(wrong));
}

fn run_with_env(scenario: &Path, out: &Path, envs: &[(&str, &str)]) -> Output {
    let mut cmd = agora();
    cmd.arg("run").arg(scenario).arg("--quiet").arg("--out").arg(out);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A run that must fail with `code`, its one `error:` line containing every word of `says`.
fn fails(scenario_text: &str, extra: &[&str], code: i32, says: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), scenario_text);
    let out = dir.path().join("runs");
    let output = run(&scenario, &out, extra);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    for word in says {
        assert!(error.contains(word), "{word:?} is not in {error:?}");
    }
    assert!(stderr.contains("\nhint: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    if code == 3 {
        assert!(!run_dir(&out).join("transcript.jsonl").exists(), "no agent ran");
    }
    stderr
}

#[test]
fn servers_that_cannot_be_used_are_refused_before_any_agent_runs() {
    // Nothing listening: a port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("http://127.0.0.1:{port}/v1");
    let unreached = fails(
        &debate(&nowhere, 3, 2, 0.0, ""),
        &[],
        3,
        &[&nowhere, "could not be reached"],
    );
    assert!(unreached.contains("--replay"), "{unreached}");

    let keyed = LlmServer::start(Behaviour {
        key: Some(KEY.to_string()),
        ..Behaviour::default()
    });
    let unkeyed = fails(&debate(&keyed.base_url(), 3, 2, 0.0, ""), &[], 3, &["401"]);
    assert!(
        unkeyed.contains("hint: no key was sent: the environment variable OPENAI_API_KEY"),
        "{unkeyed}"
    );

    let server = LlmServer::start(Behaviour::default());
    let unknown = debate(&server.base_url(), 3, 2, 0.0, "").replace("\"stub-model\"", "\"no-such-model\"");
    fails(&unknown, &[], 3, &["no model \"no-such-model\""]);
    // The server's address without the API's root (/v1): found before any agent runs.
    let root = server.base_url().trim_end_matches("/v1").to_string();
    let stderr = fails(
        &debate(&root, 3, 2, 0.0, ""),
        &[],
        3,
        &["answered 404: no OpenAI API there"],
    );
    assert!(stderr.contains("hint: base_url is the API's root"), "{stderr}");

    let html = LlmServer::start(Behaviour {
        html: true,
        ..Behaviour::default()
    });
    let stderr = fails(
        &debate(&html.base_url(), 3, 2, 0.0, ""),
        &[],
        3,
        &["not the OpenAI API"],
    );
    assert!(stderr.contains("/v1"), "{stderr}");
}

#[test]
fn replies_a_run_cannot_use_stop_it_naming_the_agent_and_tick() {
    let no_choices = LlmServer::start(Behaviour {
        no_choices: true,
        ..Behaviour::default()
    });
    let scenario = debate(&no_choices.base_url(), 3, 2, 0.0, "max_attempts = 2");
    fails(&scenario, &[], 1, &["agent d_1 at tick 0", "choices"]);

    let short_context = LlmServer::start(Behaviour {
        context_chars: 10,
        ..Behaviour::default()
    });
    fails(
        &debate(&short_context.base_url(), 3, 2, 0.0, ""),
        &[],
        1,
        &["agent d_1 at tick 0", "context length"],
    );

    // A recording of another seed lacks this run's requests.
    let server = LlmServer::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let recorded = write(dir.path(), &debate(&server.base_url(), 3, 2, 0.0, ""));
    let out = dir.path().join("runs");
    transcript_hash(&run(&recorded, &out, &["--seed", "7"]));
    let recording = run_dir(&out).join("llm.jsonl");
    let stderr = fails(
        &debate(&server.base_url(), 3, 2, 0.0, "").replace("seed = 7", "seed = 8"),
        &["--replay", recording.to_str().unwrap()],
        1,
        &["agent d_1 at tick 0", "the recording has no answer"],
    );
    assert!(stderr.contains("llm.jsonl"), "{stderr}");
    // Another model: the error says which was recorded and which is asked for.
    fails(
        &debate(&server.base_url(), 3, 2, 0.0, "").replace("\"stub-model\"", "\"other-model\""),
        &["--replay", recording.to_str().unwrap()],
        1,
        &[
            "it asks with model \"other-model\"",
            "the recording was made with model \"stub-model\"",
        ],
    );
}

#[test]
fn the_debate_scenarios_replay_their_recordings() {
    // The recording beside each scenario of LLM agents is what this server answers; with
    // AGORA_WRITE_RECORDING=1 the test writes them anew (after a change to the prompts).
    let server = LlmServer::start(Behaviour {
        models: vec!["gpt-4o-mini".to_string()],
        ..Behaviour::default()
    });
    for (name, seed) in [("llm-debate", 2024), ("python-debate", 11)] {
        let dir = tempfile::tempdir().unwrap();
        let scenario = PathBuf::from(format!("scenarios/{name}.toml"));
        let url = format!("llm.base_url='{}'", server.base_url());
        let live = run(&scenario, &dir.path().join("live"), &["--set", &url]);
        let live_hash = transcript_hash(&live);
        let made = dir.path().join(format!("live/{name}-{seed}/llm.jsonl"));
        let recording = scenario.with_extension("llm.jsonl");
        if std::env::var_os("AGORA_WRITE_RECORDING").is_some() {
            std::fs::copy(&made, &recording).unwrap();
        }
        let keys = |path: &Path| -> Vec<String> {
            let text = std::fs::read_to_string(path).unwrap();
            text.lines()
                .map(|l| {
                    serde_json::from_str::<Value>(l).unwrap()["key"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        assert_eq!(
            keys(&recording),
            keys(&made),
            "{name}: the recording is out of date: run AGORA_WRITE_RECORDING=1 cargo test --test llm the_debate"
        );
        let replayed = run(
            &scenario,
            &dir.path().join("replayed"),
            &["--replay", recording.to_str().unwrap()],
        );
        assert_eq!(transcript_hash(&replayed), live_hash, "{name}");
        if name == "llm-debate" {
            // The llm behaviour's calls and tokens, tick by tick, add up to the summary's.
            let run_dir = dir.path().join(format!("replayed/{name}-{seed}"));
            let summary: Value =
                serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
                    .unwrap();
            let metrics = std::fs::read_to_string(run_dir.join("metrics.csv")).unwrap();
            let sum = |metric: &str| -> u64 {
                metrics
                    .lines()
                    .filter_map(|l| {
                        let f: Vec<&str> = l.split(',').collect();
                        (f.len() == 3 && f[1] == metric)
                            .then(|| f[2].parse::<u64>().ok())
                            .flatten()
                    })
                    .sum()
            };
            assert_eq!(sum("llm_calls"), summary["llm_calls"].as_u64().unwrap());
            let tokens = &summary["llm_tokens"];
            let total = tokens["prompt"].as_u64().unwrap() + tokens["completion"].as_u64().unwrap();
            assert_eq!(sum("llm_tokens"), total);
        }
    }
}

/// Waits until `done`, failing after a while.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn answers_kept(redis: &RedisServer) -> u64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    redis::cmd("HLEN").arg("debate:llm").query(&mut conn).unwrap()
}

#[test]
fn on_redis_a_debate_killed_mid_tick_resumes_without_asking_twice() {
    let reference_server = LlmServer::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let text_of = |url: &str| debate(url, 12, 4, 1.0, "max_concurrency = 4");
    let reference = run(
        &write(dir.path(), &text_of(&reference_server.base_url())),
        &dir.path().join("memory"),
        &[],
    );
    let reference = transcript_hash(&reference);

    // Tick 0 asks once (the opener), tick 1 thirteen times: the gate answers eight, and the
    // requests after them wait there, unanswered, until the run is killed.
    let gated = LlmServer::start(Behaviour {
        gate_after: Some(8),
        ..Behaviour::default()
    });
    let redis = RedisServer::start();
    let out = dir.path().join("redis");
    let on_redis = ["--backend", "redis", "--redis-url", &redis.url()];
    let mut child = agora()
        .arg("run")
        .arg(write(dir.path(), &text_of(&gated.base_url())))
        .args(["--quiet", "--out"])
        .arg(&out)
        .args(on_redis)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("eight answers, kept", || {
        gated.answered() == 8 && answers_kept(&redis) == 8
    });
    child.kill().unwrap();
    child.wait().unwrap();

    // Resumed against another server (where requests go is not part of the run), which
    // must not be asked again what the first one answered.
    let server = LlmServer::start(Behaviour::default());
    let scenario = write(dir.path(), &text_of(&server.base_url()));
    let resumed = run(&scenario, &out, &[&on_redis[..], &["--resume"]].concat());
    assert_eq!(
        transcript_hash(&resumed),
        reference,
        "the resumed run's transcript"
    );
    let (before, after) = (gated.answered_requests(), server.answered_requests());
    assert_eq!(
        before.intersection(&after).count(),
        0,
        "a request was asked again after the resume"
    );
    assert_eq!(server.answered_twice(), 0, "a request was answered twice");
    assert_eq!(
        before.len() + after.len(),
        reference_server.answered() as usize,
        "every request answered once"
    );
    assert_eq!(summary(&out)["llm_calls"], reference_server.answered());

    // Worker processes share the answers too.
    let shared = LlmServer::start(Behaviour::default());
    let scenario = write(dir.path(), &text_of(&shared.base_url()));
    let workers = run(
        &scenario,
        &dir.path().join("workers"),
        &[&on_redis[..], &["--workers", "2"]].concat(),
    );
    assert_eq!(transcript_hash(&workers), reference, "with two worker processes");
    assert_eq!(
        shared.answered_twice(),
        0,
        "with two worker processes, a request was answered twice"
    );
}

/// `agora check` of `scenario`: exit 2, its error line containing every word of `says`.
fn refused_at_check(scenario: &str, says: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), scenario);
    let output = agora().arg("check").arg(&path).output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let error = stderr.lines().next().unwrap_or_default();
    for word in says {
        assert!(error.contains(word), "{word:?} is not in {error:?}");
    }
    stderr
}

#[test]
fn requests_per_minute_hold_over_any_minute_not_per_calendar_minute() {
    // 600 a minute is one request every 100 ms, however many agents ask at once (the old
    // calendar-minute count let a whole minute's requests through in a burst).
    let server = LlmServer::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(
        dir.path(),
        &debate(
            &server.base_url(),
            12,
            2,
            1.0,
            "max_concurrency = 16\nrequests_per_minute = 600",
        ),
    );
    let output = run(&scenario, &dir.path().join("runs"), &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let arrivals = server.arrivals();
    assert!(arrivals.len() >= 12, "{} requests", arrivals.len());
    for pair in arrivals.windows(2) {
        // A little slack for the clock's and the scheduler's jitter: never a burst.
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(80), "two requests {gap:?} apart");
    }
}

#[test]
fn a_server_that_asks_to_wait_is_waited_for_and_the_wait_is_said() {
    let server = LlmServer::start(Behaviour {
        fail_every: Some((2, 429)),
        retry_after: "1",
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), &debate(&server.base_url(), 3, 3, 0.0, ""));
    let output = run(&scenario, &dir.path().join("runs"), &[]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        server.requests() >= server.answered() + 2,
        "two requests or more were refused"
    );
    assert_eq!(
        stderr
            .matches("the model server asked to wait 1 s (429, Retry-After)")
            .count(),
        1,
        "said once, not once a request: {stderr}"
    );
}

#[test]
fn secrets_given_in_the_wrong_place_are_never_shown() {
    const SECRET: &str = "sk-Secret0123456789";
    let dir = tempfile::tempdir().unwrap();
    let server = LlmServer::start(Behaviour::default());
    let scenario = write(dir.path(), &debate(&server.base_url(), 3, 2, 0.0, ""));
    let agora_with = |args: &[&str]| agora().args(args).output().unwrap();
    let check = |set: String| {
        let output = agora_with(&["check", scenario.to_str().unwrap(), "--set", &set]);
        (output.status.code(), text(&output.stdout) + &text(&output.stderr))
    };
    // A key where the variable's name goes, or as a key of its own.
    let (code, shown) = check(format!("llm.api_key_env={SECRET}"));
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        !shown.contains(SECRET) && shown.contains("is not the name of an environment variable"),
        "{shown}"
    );
    // Empty: a server that wants no key.
    let (code, shown) = check("llm.api_key_env=".to_string());
    assert_eq!(code, Some(0), "{shown}");
    let (code, shown) = check(format!("llm.api_key={SECRET}"));
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        !shown.contains(SECRET) && shown.contains("hint: a key is never written in a scenario"),
        "{shown}"
    );
    // A password in a base URL: not in check's output, an error, or summary.json.
    let with_password = server
        .base_url()
        .replace("http://", &format!("http://user:{SECRET}@"));
    let (code, shown) = check(format!("llm.base_url={with_password}"));
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        !shown.contains(SECRET) && shown.contains("http://***@127.0.0.1"),
        "{shown}"
    );
    let out = dir.path().join("runs");
    let set = format!("llm.base_url={with_password}");
    let output = run(&scenario, &out, &["--set", &set]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary = std::fs::read_to_string(run_dir(&out).join("summary.json")).unwrap();
    assert!(!summary.contains(SECRET), "{summary}");
    let dead = format!("llm.base_url=http://user:{SECRET}@127.0.0.1:9/v1");
    let output = run(&scenario, &dir.path().join("dead"), &["--set", &dead]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert!(!text(&output.stderr).contains(SECRET), "{}", text(&output.stderr));
}

#[test]
fn bad_llm_settings_are_refused_at_check() {
    let good = debate("http://127.0.0.1:8000/v1", 3, 2, 0.0, "");
    let path = tempfile::tempdir().unwrap();
    let ok = agora()
        .arg("check")
        .arg(write(path.path(), &good))
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    // A template variable that is none of the known ones, named with the template.
    refused_at_check(
        &good.replace("{{ topic }}", "{{ topik }}"),
        &["debate.toml:", "agents[0].params.system", "`topik`", "topic"],
    );
    refused_at_check(
        &good.replace("'open'", "persona"),
        &["agents[0].params.prompt", "`persona`"],
    );
    let unparsed = refused_at_check(
        &good.replace("{% for p in feed %}", "{% for p in feed"),
        &["agents[0].params.prompt", "does not parse"],
    );
    // The template's own hint, not the list of the behaviour's parameters.
    assert!(unparsed.contains("\nhint: templates are Jinja2"), "{unparsed}");
    refused_at_check(
        &good.replace("model = \"stub-model\"", ""),
        &["runs `llm`, and no model is named"],
    );
    refused_at_check(
        &good.replace("model = \"stub-model\"", "modle = \"x\""),
        &["modle"],
    );
    refused_at_check(
        &good.replace("http://127.0.0.1:8000/v1", "localhost:8000"),
        &["llm.base_url"],
    );
    refused_at_check(
        &good.replace("activity = 0", "activity = 2"),
        &["agents[0].params.activity"],
    );
    refused_at_check(
        &good.replace("turns = \"random\"", "turns = \"echo\""),
        &["stance"],
    );
    refused_at_check(
        &good.replace("vars = {", "vars = { feed = 2,"),
        &["vars.feed", "hide the template variable"],
    );
    refused_at_check(&format!("{good}\n[llm.extra]\n"), &["extra"]);
}

#[test]
fn agents_that_post_unprompted_are_not_stopped_by_a_quiet_tick() {
    // No turn-taking: nobody opens, so tick 0 is quiet; the agents post from tick 1 on.
    let server = LlmServer::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let text = debate(&server.base_url(), 4, 3, 1.0, "").replace("turns = \"random\"", "turns = \"none\"");
    let out = dir.path().join("runs");
    transcript_hash(&run(&write(dir.path(), &text), &out, &[]));
    let s = summary(&out);
    assert_eq!(
        (s["ticks"].as_u64(), s["stop_reason"].as_str()),
        (Some(3), Some("ticks"))
    );
    assert_eq!(s["messages"], 4 * 3);
    assert_eq!(server.answered(), 4 * 3);
}

#[test]
fn a_run_a_failing_server_stops_says_how_to_go_on() {
    // Every completion refused with 503: after the attempts, the run stops (exit 3), and
    // the hint says what a resume needs on the backend it ran on.
    let server = LlmServer::start(Behaviour {
        fail_every: Some((1, 503)),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), &debate(&server.base_url(), 3, 2, 0.0, ""));
    let output = run(
        &scenario,
        &dir.path().join("runs"),
        &["--set", "llm.max_attempts=2"],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("on the embedded backend a stopped run starts over"),
        "{stderr}"
    );
}
