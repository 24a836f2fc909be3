//! Behaviours that are programs (CONTRACT.md, "Behaviours in other languages"), written in
//! Python with `python/agora_behaviour.py`: the same transcripts as the built-in behaviours
//! they copy, in lockstep and free mode, on memory and Redis, with workers and after a kill;
//! and each way a program can fail, with its documented outcome.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::redis_server::RedisServer;
use common::{agora, run_dir_under, text, transcript_hash};
use serde_json::Value;

fn run(scenario: &Path, out: &Path, extra: &[&str]) -> Output {
    agora()
        .arg("run")
        .arg(scenario)
        .arg("--quiet")
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn lines(out: &Path, file: &str) -> Vec<Value> {
    std::fs::read_to_string(run_dir_under(out).join(file))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Opinion dynamics at a size that keeps a debug build quick.
const OPINION: &[&str] = &["--set", "agents.0.count=30", "--set", "scenario.ticks=8"];

#[test]
fn the_python_opinion_gives_the_built_in_transcript_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let builtin = transcript_hash(&run(
        Path::new("scenarios/opinion.toml"),
        &dir.path().join("builtin"),
        OPINION,
    ));
    let python = Path::new("scenarios/python-opinion.toml");
    let memory = run(python, &dir.path().join("memory"), OPINION);
    assert_eq!(transcript_hash(&memory), builtin, "in memory");
    let redis = RedisServer::start();
    let url = redis.url();
    for workers in [None, Some("1"), Some("2")] {
        let mut args: Vec<&str> = OPINION.to_vec();
        args.extend(["--backend", "redis", "--redis-url", &url]);
        if let Some(n) = workers {
            args.extend(["--workers", n]);
        }
        let out = dir.path().join(format!("redis-{}", workers.unwrap_or("0")));
        assert_eq!(
            transcript_hash(&run(python, &out, &args)),
            builtin,
            "on Redis with {workers:?} workers"
        );
    }
}

#[test]
fn the_python_relay_gives_the_built_in_transcript_in_lockstep_and_its_messages_in_free_mode() {
    let dir = tempfile::tempdir().unwrap();
    let small = [
        "--set",
        "agents.0.params.hops=30",
        "--set",
        "agents.0.params.tokens=7",
    ];
    let lockstep = [
        &small[..],
        &["--set", "scenario.mode=lockstep", "--set", "scenario.ticks=40"],
    ]
    .concat();
    let builtin = run(Path::new("scenarios/w1.toml"), &dir.path().join("b"), &lockstep);
    let python = run(
        Path::new("scenarios/python-relay.toml"),
        &dir.path().join("p"),
        &lockstep,
    );
    assert_eq!(transcript_hash(&python), transcript_hash(&builtin));

    // Free mode: publication order is the run's own, but what is published is the same.
    let published = |out: &Path| {
        let mut found: Vec<String> = lines(out, "transcript.jsonl")
            .iter()
            .map(|l| format!("{} {} {}", l["sender_id"], l["to"], l["content"]))
            .collect();
        found.sort();
        found
    };
    let builtin = dir.path().join("free-b");
    transcript_hash(&run(Path::new("scenarios/w1.toml"), &builtin, &small));
    let expected = published(&builtin);
    assert_eq!(expected.len(), 7 * 30);
    let redis = RedisServer::start();
    let url = redis.url();
    for (name, extra) in [
        ("memory", vec![]),
        ("redis", vec!["--backend", "redis", "--redis-url", url.as_str()]),
        (
            "two workers",
            vec![
                "--backend",
                "redis",
                "--redis-url",
                url.as_str(),
                "--workers",
                "2",
            ],
        ),
    ] {
        let out = dir.path().join(format!("free-{name}"));
        transcript_hash(&run(
            Path::new("scenarios/python-relay.toml"),
            &out,
            &[&small[..], &extra[..]].concat(),
        ));
        assert_eq!(published(&out), expected, "free mode, {name}");
    }
}

#[test]
fn a_python_behaviour_killed_mid_run_resumes_to_the_same_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let longer = ["--set", "agents.0.count=30", "--set", "scenario.ticks=30"];
    let python = Path::new("scenarios/python-opinion.toml");
    let expected = transcript_hash(&run(python, &dir.path().join("whole"), &longer));
    let redis = RedisServer::start();
    let url = redis.url();
    let on_redis = [&longer[..], &["--backend", "redis", "--redis-url", &url]].concat();
    let out = dir.path().join("killed");
    let mut child = agora()
        .arg("run")
        .arg(python)
        .args(["--quiet", "--out"])
        .arg(&out)
        .args(&on_redis)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for_tick(&redis, "python-opinion", 5);
    child.kill().unwrap();
    child.wait().unwrap();
    let resumed = run(python, &out, &[&on_redis[..], &["--resume"]].concat());
    assert_eq!(transcript_hash(&resumed), expected);
}

/// A behaviour program written for a test, with the helper on its path.
fn program(dir: &Path, name: &str, body: &str) -> PathBuf {
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let path = dir.join(format!("{name}.py"));
    std::fs::write(
        &path,
        format!(
            "import sys, os, time\nsys.path.insert(0, {helper:?})\n\
             from agora_behaviour import Behaviour, Effects, Refuse, run\n{body}\n"
        ),
    )
    .unwrap();
    path
}

/// A scenario of three agents of program `script`.
fn scenario(dir: &Path, script: &Path, extra: &str) -> PathBuf {
    let path = dir.join("s.toml");
    std::fs::write(
        &path,
        format!(
            "[scenario]\nname = \"faulty\"\nticks = 3\nmax_retries = 1\n\
             [behaviours.faulty]\ncommand = [\"python3\", {:?}]\ntimeout = \"2s\"\n{extra}\n\
             [[agents]]\nid = \"b\"\ncount = 3\nbehaviour = \"faulty\"\n",
            script.display().to_string()
        ),
    )
    .unwrap();
    path
}

/// A behaviour that fails by `failing` on the message "boom" and answers anything else: the
/// first agent says "boom" at the start and "hello" in tick 1.
fn faulty(failing: &str) -> String {
    format!(
        r#"
class Faulty(Behaviour):
    def on_start(self, state, ctx):
        if ctx.peer_index == 0:
            return Effects().publish("boom")

    def on_tick(self, state, ctx):
        if ctx.peer_index == 0 and ctx.tick == 1:
            return Effects().publish("hello")

    def on_message(self, state, msg, ctx):
        if msg.content == "boom":
            print("about to fail", file=sys.stderr)
            {failing}
        if not msg.content.startswith("re:"):
            return Effects().publish("re: " + msg.content)

run(Faulty())
"#
    )
}

/// Runs a faulty program; returns the output, the dead letters and the transcript.
fn run_faulty(failing: &str) -> (Output, Vec<Value>, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    run_faulty_in(dir.path(), failing)
}

fn run_faulty_in(dir: &Path, failing: &str) -> (Output, Vec<Value>, Vec<Value>) {
    let script = program(dir, "faulty", &faulty(failing));
    let out = dir.join("out");
    // Every line the program writes, repeats included (by default they are shown once).
    let output = agora()
        .arg("run")
        .arg(scenario(dir, &script, ""))
        .args(["--quiet", "--out"])
        .arg(&out)
        .env("RUST_LOG", "warn,agora::program=debug")
        .output()
        .unwrap();
    (
        output,
        lines(&out, "dead_letters.jsonl"),
        lines(&out, "transcript.jsonl"),
    )
}

#[test]
fn a_program_that_fails_a_step_is_retried_restarted_and_its_messages_dead_lettered() {
    for (how, failing, reason) in [
        (
            "an exception",
            "raise ValueError('no boom here')",
            "ValueError: no boom here",
        ),
        ("exiting", "os._exit(3)", "exited"),
        (
            "a metric of the run's own",
            "return Effects().count('messages', 1)",
            "which every run records itself (messages, deliveries, seconds)",
        ),
        ("hanging", "time.sleep(30)", "did not answer within 2s"),
        (
            "a fraction counted",
            "return Effects().count('n', 0.5)",
            "a counter adds whole numbers",
        ),
        (
            "an answer JSON cannot hold",
            "return Effects().remember({1, 2})",
            "the step's answer is not JSON (Object of type set",
        ),
        (
            "garbage",
            "sys.__stdout__.write('not json\\n'); sys.__stdout__.flush()",
            "not a reply of the protocol",
        ),
        (
            "a flood",
            "sys.__stdout__.write('x' * (20 << 20) + '\\n'); sys.__stdout__.flush()",
            "longer than 16 MiB",
        ),
    ] {
        let (output, dead, transcript) = run_faulty(failing);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{how}: {stderr}");
        assert!(stderr.contains("dead-lettered"), "{how}: {stderr}");
        // The program's own words, passed on with the behaviour and the agent; asked again
        // on the retry (max_retries = 1), not answered from the first failure.
        assert_eq!(
            stderr.matches("faulty b_2: about to fail").count(),
            2,
            "{how}: {stderr}"
        );
        let reasons: Vec<&str> = dead.iter().filter_map(|d| d["reason"].as_str()).collect();
        assert!(reasons.iter().all(|r| r.contains(reason)), "{how}: {reasons:?}");
        let contents: Vec<&str> = dead.iter().filter_map(|d| d["content"].as_str()).collect();
        assert_eq!(contents, vec!["boom", "boom"], "{how}: b_2 and b_3 gave up on it");
        // Numbers as numbers, as in the transcript.
        assert!(
            dead.iter().all(|d| d["seq"] == 1 && d["tick"] == 0),
            "{how}: {dead:?}"
        );
        // The run went on: the restarted program answered the next message.
        let replies = transcript.iter().filter(|l| l["content"] == "re: hello").count();
        assert_eq!(replies, 2, "{how}: {transcript:?}");
    }
}

/// A behaviour whose agents all publish every tick and whose `on_tick` fails by `failing`
/// in tick 2, after its messages were handled.
fn failing_at_the_end_of_tick_2(failing: &str) -> String {
    format!(
        r#"
class Ticking(Behaviour):
    def on_start(self, state, ctx):
        return Effects().publish("hi")

    def on_message(self, state, msg, ctx):
        return None

    def on_tick(self, state, ctx):
        if ctx.tick == 2 and ctx.peer_index == 1:
            {failing}
        return Effects().publish("hi")

run(Ticking())
"#
    )
}

#[test]
fn a_program_failing_in_on_tick_stops_the_run_without_dead_lettering_its_messages() {
    for (how, failing, words) in [
        ("an exception", "1 / 0", "ZeroDivisionError: division by zero"),
        (
            "a dict returned",
            "return {'publish': 'hi'}",
            "on_tick returned a dict; it must return Effects",
        ),
        (
            "a value that is no number",
            "return Effects().report('x', 'high')",
            "could not convert string to float",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let script = program(dir.path(), "faulty", &failing_at_the_end_of_tick_2(failing));
        let out = dir.path().join("out");
        let output = run(&scenario(dir.path(), &script, ""), &out, &[]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{how}: {stderr}");
        // The messages were handled; the end of the tick failed. Dead-lettering them would
        // not mend that (before, three warnings said it did, and the summary said none).
        assert!(!stderr.contains("dead-letter"), "{how}: {stderr}");
        let error = stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_default();
        assert!(
            error.contains("agent b_2") && error.contains("at the end of a tick") && error.contains(words),
            "{how}: {stderr}"
        );
        assert!(lines(&out, "dead_letters.jsonl").is_empty(), "{how}");
    }
}

/// The value of `name` in `tick` in a `metrics.csv`.
fn metric_at(metrics: &str, tick: u64, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{tick},{name},")))
        .and_then(|l| l.rsplit(',').next()?.parse::<f64>().ok())
}

#[test]
fn a_program_s_model_reporters_are_worked_out_from_its_agents_values_each_tick() {
    // Agent b_k reports x = k * tick; the program declares the mean, the spread and the
    // count of x, and a reporter of a value nobody reports.
    let dir = tempfile::tempdir().unwrap();
    let body = r#"
class Reporting(Behaviour):
    model_reporters = {"x_mean": ("mean", "x"), "x_std": ("std", "x"), "x_count": ("count", "x"),
                       "y_max": ("max", "y")}
    def on_start(self, state, ctx):
        return Effects().publish("hi")
    def on_tick(self, state, ctx):
        return Effects().publish("hi").report("x", (ctx.peer_index + 1) * ctx.tick)
run(Reporting())
"#;
    let script = program(dir.path(), "faulty", body);
    let out = dir.path().join("out");
    let output = run(&scenario(dir.path(), &script, ""), &out, &["--no-plots"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let metrics = std::fs::read_to_string(run_dir_under(&out).join("metrics.csv")).unwrap();
    let row = |tick: u64, name: &str| metric_at(&metrics, tick, name);
    // Tick 2: x is 2, 4 and 6.
    assert_eq!(row(2, "x_mean"), Some(4.0), "{metrics}");
    assert_eq!(row(2, "x_count"), Some(3.0), "{metrics}");
    let std = row(2, "x_std").unwrap();
    assert!((std - (8.0f64 / 3.0).sqrt()).abs() < 1e-12, "{metrics}");
    assert_eq!(row(3, "x_mean"), Some(6.0), "{metrics}");
    assert!(!metrics.contains("y_max"), "{metrics}");

    // Two tables of the program: its reporters are over all its agents (x = 2, 4, 6, 8 in
    // tick 2), not the largest of each table's (6 for b's, 8 for c's mean).
    let two_tables = scenario(dir.path(), &script, "");
    let text_of = std::fs::read_to_string(&two_tables).unwrap();
    std::fs::write(
        &two_tables,
        format!("{text_of}\n[[agents]]\nid = \"c\"\nbehaviour = \"faulty\"\n"),
    )
    .unwrap();
    let out = dir.path().join("two");
    let output = run(&two_tables, &out, &["--no-plots"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let metrics = std::fs::read_to_string(run_dir_under(&out).join("metrics.csv")).unwrap();
    let row = |tick: u64, name: &str| metric_at(&metrics, tick, name);
    assert_eq!(row(2, "x_mean"), Some(5.0), "{metrics}");
    assert_eq!(row(2, "x_count"), Some(4.0), "{metrics}");

    // A statistic agora does not know is bad input before the run.
    std::fs::write(
        &script,
        std::fs::read_to_string(&script)
            .unwrap()
            .replace("\"max\"", "\"maximum\""),
    )
    .unwrap();
    let output = run(&scenario(dir.path(), &script, ""), &dir.path().join("out2"), &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown variant `maximum`"), "{stderr}");
}

#[test]
fn a_program_that_fails_once_is_asked_again_and_the_step_goes_through() {
    // Each agent's program crashes the first time it meets "boom" (a marker file per agent
    // remembers), then answers: the retry gets the answer, and nothing is dead-lettered.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("crashed-");
    let failing = format!(
        "marker = {:?} + ctx.agent\n            if not os.path.exists(marker):\n                open(marker, 'w').close()\n                os._exit(3)",
        marker.display().to_string()
    );
    let (output, dead, transcript) = run_faulty_in(dir.path(), &failing);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(dead.is_empty(), "{dead:?}");
    let replies = transcript.iter().filter(|l| l["content"] == "re: boom").count();
    assert_eq!(
        replies, 2,
        "b_2 and b_3 answered boom on their retry: {transcript:?}"
    );
}

#[test]
fn a_reply_nobody_asked_for_is_caught_before_it_answers_the_next_request() {
    // Agent b_1's tick-1 reply is written twice when DOUBLE is set: taken as the next
    // request's reply, it would shift every reply after it by one.
    let body = r#"
import json
doubled = os.environ.get("DOUBLE") != "1"
for line in sys.stdin:
    req = json.loads(line)
    if req["type"] == "hello":
        reply = {"type": "ready", "protocol": 1}
    elif req["kind"] == "start":
        reply = {"type": "done", "state": {"n": 0}, "publish": [{"content": "hello from " + req["agent"]}]}
    else:
        state = req["state"]
        state["n"] += len(req["messages"])
        said = [{"content": "%s heard %d" % (req["agent"], state["n"])}] if req["tick"] < 3 else []
        reply = {"type": "done", "state": state, "publish": said}
    line = json.dumps(reply)
    if req.get("tick") == 1 and req.get("agent") == "b_1" and not doubled:
        doubled = True
        # The stray copy in the same write as the reply: on a loaded machine a second write
        # could come after agora sent the next request, and no reader can tell a reply that
        # late from the next one's (the clean-clone CI failed so while a build ran beside it).
        line += "\n" + line
    print(line, flush=True)
"#;
    let dir = tempfile::tempdir().unwrap();
    let script = program(dir.path(), "doubling", body);
    let mut runs = Vec::new();
    for double in ["0", "1"] {
        let out = dir.path().join(format!("out-{double}"));
        let scenario = scenario(dir.path(), &script, &format!("env = {{ DOUBLE = \"{double}\" }}"));
        let output = run(&scenario, &out, &[]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        runs.push((text(&output.stderr), lines(&out, "transcript.jsonl")));
    }
    let (clean, doubled) = (&runs[0], &runs[1]);
    assert!(!clean.0.contains("unasked"), "{}", clean.0);
    assert!(
        doubled.0.contains("after its last reply, unasked"),
        "{}",
        doubled.0
    );
    // The request that met the stray line was asked again of a restarted copy.
    assert_eq!(doubled.1, clean.1);
}

/// `agora check` of a scenario whose program is `body`: the exit code and stderr.
fn check(body: &str, extra: &str, params: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let script = program(dir.path(), "p", body);
    let path = scenario(dir.path(), &script, extra);
    let text_ = std::fs::read_to_string(&path).unwrap() + params;
    std::fs::write(&path, text_).unwrap();
    let output = agora().arg("check").arg(&path).output().unwrap();
    (output.status.code(), text(&output.stderr))
}

#[test]
fn programs_that_cannot_serve_are_bad_input_before_the_run() {
    let declared = r#"
class Voter(Behaviour):
    params = {"p": (0.5, "a probability")}
    def check(self, table, params):
        params = super().check(table, params)
        if not 0 <= params["p"] <= 1:
            raise Refuse("p must be between 0 and 1, not %s" % params["p"], "p")
        return params
run(Voter())
"#;
    let (code, stderr) = check(declared, "", "params = { p = 0.7 }\n");
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = check(declared, "", "params = { p = 7 }\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("agents[0].params.p: p must be between 0 and 1, not 7"),
        "{stderr}"
    );
    let (code, stderr) = check(declared, "", "params = { q = 1 }\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("unknown parameter 'q'"), "{stderr}");
    // JSON has no NaN: refused by agora, not handed over as null.
    let (code, stderr) = check(declared, "", "params = { p = nan }\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("agents[0].params.p: a NaN or an infinity cannot be sent to a program"),
        "{stderr}"
    );

    // A default of None, natural in Python, that a scenario cannot hold: said so.
    let (code, stderr) = check(
        "class P(Behaviour):\n    params = {'model': (None, 'a model')}\nrun(P())\n",
        "",
        "",
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("its parameter \"model\" is None (null)"),
        "{stderr}"
    );

    // Another version of the protocol.
    let future = "import json\nfor line in sys.stdin:\n    print(json.dumps({'type': 'ready', 'protocol': 2}), flush=True)\n";
    let (code, stderr) = check(future, "", "");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("speaks version 2 of the protocol, and this agora speaks version 1"),
        "{stderr}"
    );

    // No such program; a program that dies at once.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("s.toml");
    std::fs::write(
        &missing,
        "[scenario]\nname = \"m\"\nticks = 1\n[behaviours.ghost]\ncommand = [\"no-such-program-here\", \"x\"]\n\
         [[agents]]\nid = \"g\"\nbehaviour = \"ghost\"\n",
    )
    .unwrap();
    let output = agora()
        .arg("run")
        .arg(&missing)
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("behaviours.ghost.command") && stderr.contains("no-such-program-here x"),
        "{stderr}"
    );
    assert!(stderr.contains("no such program"), "{stderr}");
    // A folder where the program should be: said so, not "not executable".
    std::fs::write(
        &missing,
        "[scenario]\nname = \"m\"\nticks = 1\n[behaviours.ghost]\ncommand = [\"/tmp\"]\n\
         [[agents]]\nid = \"g\"\nbehaviour = \"ghost\"\n",
    )
    .unwrap();
    let output = agora().arg("check").arg(&missing).output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`/tmp`: it is a directory"), "{stderr}");
    let (code, stderr) = check("raise SystemExit('cannot load the model')", "", "");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("exited without answering the hello") && stderr.contains("cannot load the model"),
        "{stderr}"
    );
}

#[test]
fn programs_read_the_cache_within_the_step_and_list_their_params() {
    // Each agent reports, every tick, how many entries the cache held before it and what
    // it itself remembered: reads answered by agora, own writes laid over them.
    let body = r#"
class Reader(Behaviour):
    params = {"window": (3, "how many entries to read")}
    acts_unprompted = True
    def on_tick(self, state, ctx):
        before = len(ctx.last(ctx.params["window"]))
        effects = Effects().remember({"by": ctx.agent, "tick": ctx.tick})
        own = [e.value for e in ctx.own_last(10)]
        sample = ctx.sample(2)
        return effects.publish("%d %d %d" % (before, len(own), len(sample))).count("reads", 1)
run(Reader())
"#;
    let dir = tempfile::tempdir().unwrap();
    let script = program(dir.path(), "reader", body);
    let path = scenario(dir.path(), &script, "");
    let out = dir.path().join("out");
    let first = run(&path, &out, &[]);
    let hash = transcript_hash(&first);
    let transcript = lines(&out, "transcript.jsonl");
    let at = |tick: u64| -> Vec<String> {
        transcript
            .iter()
            .filter(|l| l["tick"] == tick)
            .map(|l| l["content"].as_str().unwrap().to_string())
            .collect()
    };
    // Tick 1: nothing remembered before; tick 3: 3 agents x 2 ticks before, the window is 3.
    assert_eq!(at(1), vec!["0 0 0"; 3]);
    assert_eq!(at(3), vec!["3 2 2"; 3]);
    let again = run(&path, &dir.path().join("again"), &[]);
    assert_eq!(
        transcript_hash(&again),
        hash,
        "reads and samples are the same in every run"
    );
    let listed = agora().args(["behaviours"]).arg(&path).output().unwrap();
    let listed = text(&listed.stdout);
    assert!(
        listed.contains("faulty")
            && listed.contains("window = 3")
            && listed.contains("how many entries to read"),
        "{listed}"
    );
}

/// The program of docs/protocol.md, "A program in a few lines", as the page shows it.
fn program_of_the_protocol_page() -> String {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/protocol.md")).unwrap();
    let section = page
        .split("## A program in a few lines")
        .nth(1)
        .expect("the section");
    let code = section.split("```python\n").nth(1).expect("its code");
    code.split("```").next().unwrap().to_string()
}

#[test]
fn the_protocol_page_is_enough_to_write_a_program() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("echo.py");
    std::fs::write(&script, program_of_the_protocol_page()).unwrap();
    let path = scenario(dir.path(), &script, "");
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let output = run(&path, &first, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let transcript = lines(&first, "transcript.jsonl");
    let hellos = transcript.iter().filter(|l| l["content"] == "hello").count();
    assert!(hellos > 1, "the hello was echoed: {transcript:?}");
    assert_eq!(
        transcript_hash(&output),
        transcript_hash(&run(&path, &second, &[]))
    );
}

#[test]
fn an_error_that_names_no_message_dead_letters_the_batch() {
    // Fails every step that has messages, without saying on which: each is dead-lettered,
    // and the run goes on (the start steps, without messages, succeed).
    let body = r#"
import json, sys
for line in sys.stdin:
    req = json.loads(line)
    if req["type"] == "hello":
        reply = {"type": "ready", "protocol": 1}
    elif req["messages"]:
        reply = {"type": "error", "message": "no idea where"}
    else:
        out = [{"content": "hi"}] if req["kind"] == "start" and req["peer_index"] == 0 else []
        reply = {"type": "done", "state": None, "publish": out}
    print(json.dumps(reply), flush=True)
"#;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("errors.py");
    std::fs::write(&script, body).unwrap();
    let out = dir.path().join("out");
    let output = run(&scenario(dir.path(), &script, ""), &out, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let dead = lines(&out, "dead_letters.jsonl");
    let who: Vec<(&str, &str)> = dead
        .iter()
        .map(|d| {
            (
                d["agent"].as_str().unwrap_or(""),
                d["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(who.len(), 2, "b_2 and b_3 gave up on the hi: {dead:?}");
    assert!(
        who.iter().all(|(_, reason)| reason.contains("no idea where")),
        "{who:?}"
    );
}

#[test]
fn a_python_behaviour_reports_agent_values_as_the_built_in_does() {
    let dir = tempfile::tempdir().unwrap();
    let small = [OPINION, &["--no-plots"]].concat();
    let (builtin, python) = (dir.path().join("builtin"), dir.path().join("python"));
    transcript_hash(&run(Path::new("scenarios/opinion.toml"), &builtin, &small));
    transcript_hash(&run(Path::new("scenarios/python-opinion.toml"), &python, &small));
    let agents = |out: &Path| std::fs::read_to_string(run_dir_under(out).join("agents.csv")).unwrap();
    let expected = agents(&builtin);
    assert!(expected.lines().count() > 30 * 9, "{expected}");
    assert_eq!(agents(&python), expected);
}

#[test]
fn a_failing_program_s_repeated_words_are_shown_once() {
    // b_2 and b_3 fail on "boom", each twice (max_retries = 1): the same traceback four
    // times, and the same dead-letter reason; shown once, with a note that repeats are held.
    let dir = tempfile::tempdir().unwrap();
    let script = program(dir.path(), "faulty", &faulty("raise ValueError('no boom here')"));
    let output = run(&scenario(dir.path(), &script, ""), &dir.path().join("out"), &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("ValueError: no boom here\n").count(),
        1,
        "{stderr}"
    );
    assert_eq!(stderr.matches(": about to fail").count(), 1, "{stderr}");
    assert!(
        stderr.contains("faulty: lines its program wrote before are not shown again"),
        "{stderr}"
    );
    // The warnings of the run itself, one per dead letter, name their agents: all shown.
    assert_eq!(stderr.matches("dead-lettering it").count(), 2, "{stderr}");
}

#[test]
fn a_script_beside_the_scenario_runs_from_any_folder() {
    // `command = ["python3", "faulty.py"]` with faulty.py next to the scenario, and `cwd`
    // naming a folder next to it too: agora is started from the repository, elsewhere.
    let dir = tempfile::tempdir().unwrap();
    program(dir.path(), "faulty", &faulty("pass"));
    std::fs::create_dir(dir.path().join("work")).unwrap();
    let scenario = scenario(dir.path(), Path::new("faulty.py"), "cwd = \"work\"");
    let out = dir.path().join("out");
    let output = run(&scenario, &out, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(lines(&out, "transcript.jsonl").len() > 3);
    // The scenario named bare, from its own folder: the script is given in full, since the
    // program runs in `work`.
    let checked = agora()
        .current_dir(dir.path())
        .args(["check", "s.toml"])
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", text(&checked.stderr));
    let script = dir.path().join("faulty.py").canonicalize().unwrap();
    assert!(
        text(&checked.stdout).contains(&format!(
            "command = [\"python3\", {:?}]",
            script.display().to_string()
        )),
        "{}",
        text(&checked.stdout)
    );
    // A path found nowhere is still the program's to report, with both places named.
    let missing = self::scenario(dir.path(), Path::new("missing.py"), "");
    let output = run(&missing, &dir.path().join("out2"), &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("or else beside the scenario file"), "{stderr}");
    let gone = self::scenario(dir.path(), Path::new("faulty.py"), "cwd = \"nowhere\"");
    let output = run(&gone, &dir.path().join("out3"), &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nowhere is not a directory (nor is "), "{stderr}");
}
