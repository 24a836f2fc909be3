//! agora on a real Redis: the same transcripts as the embedded backend, cleanup that spares
//! other programs' keys, interoperability with the old project's agents, and connection
//! errors a user can act on. Every test starts its own redis-server.

mod common;

use common::{agora, agora_for, lockstep_scenarios, text};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use agora::backend::Keys;
use agora::backend::redis::RedisBackend;
use agora::runtime::{self, RunOptions};
use agora::{Behaviour, BehaviourError, Context, Effects, Message, Registry, Setup};
use common::redis_server::RedisServer;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Runs a scenario file; returns the process output and the run directory.
fn run(mut cmd: Command, scenario: &Path, out: &Path, extra: &[&str]) -> (Output, PathBuf) {
    let output = cmd
        .arg("run")
        .arg(scenario)
        .arg("--quiet")
        .arg("--out")
        .arg(out)
        .args(extra)
        .args(common::replay_args(scenario))
        .output()
        .unwrap();
    let name = toml::from_str::<toml::Table>(&std::fs::read_to_string(scenario).unwrap()).unwrap()["scenario"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = std::fs::read_dir(out)
        .ok()
        .and_then(|mut d| {
            d.find(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&name)
            })
        })
        .map(|e| e.unwrap().path())
        .unwrap_or_default();
    (output, dir)
}

/// `run` with `agora run <scenario> --backend redis --redis-url <url> <extra>`.
fn run_on_redis(scenario: &str, out: &Path, url: &str, extra: &[&str]) -> (Output, PathBuf) {
    let args = [&["--backend", "redis", "--redis-url", url][..], extra].concat();
    run(agora(), Path::new(scenario), out, &args)
}

fn summary(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn lockstep_transcripts_are_the_same_on_redis_and_in_memory() {
    let server = RedisServer::start();
    for scenario in lockstep_scenarios() {
        let make = || agora_for(&scenario);
        let memory_out = tempfile::tempdir().unwrap();
        let (m, memory_dir) = run(make(), &scenario, memory_out.path(), &[]);
        assert!(m.status.success(), "{}: {}", scenario.display(), text(&m.stderr));
        let redis_out = tempfile::tempdir().unwrap();
        let (r, redis_dir) = run(
            make(),
            &scenario,
            redis_out.path(),
            &["--backend", "redis", "--redis-url", &server.url()],
        );
        assert!(r.status.success(), "{}: {}", scenario.display(), text(&r.stderr));
        let memory = std::fs::read(memory_dir.join("transcript.jsonl")).unwrap();
        let redis = std::fs::read(redis_dir.join("transcript.jsonl")).unwrap();
        assert!(!memory.is_empty());
        assert!(memory == redis, "{}: the transcripts differ", scenario.display());
        assert_eq!(summary(&redis_dir)["backend"], "redis");
        assert_eq!(text(&m.stdout).lines().last(), text(&r.stdout).lines().last());
    }
}

#[test]
fn free_mode_w1_on_redis_publishes_every_hop() {
    let server = RedisServer::start();
    let out = tempfile::tempdir().unwrap();
    let (output, dir) = run_on_redis(
        "scenarios/w1.toml",
        out.path(),
        &server.url(),
        &["--set", "agents.0.params.hops=50"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let s = summary(&dir);
    assert_eq!(s["messages"], 100 * 50);
    assert_eq!(s["deliveries"], 100 * 50 * 10);
    assert_eq!(s["stop_reason"], "quiescent");
    // cleanup = "both": nothing left behind.
    assert_eq!(server.command(&["DBSIZE"]).trim(), ":0");
}

fn keys_on(server: &RedisServer) -> Vec<String> {
    let reply = server.command(&["KEYS", "*"]);
    let mut keys: Vec<String> = reply
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with('$'))
        .map(str::to_string)
        .collect();
    keys.sort();
    keys
}

#[test]
fn cleanup_after_removes_the_run_and_nothing_else() {
    let server = RedisServer::start();
    // Another program's keys, some with names close to the run's.
    server.command(&["SET", "other:key", "1"]);
    server.command(&["SET", "discussion-archive", "2"]);
    server.command(&["XADD", "discussion2", "*", "sender_id", "x", "content", "y"]);
    let out = tempfile::tempdir().unwrap();
    let (output, _) = run_on_redis(
        "scenarios/discussion.toml",
        out.path(),
        &server.url(),
        &["--set", "backend.cleanup=never"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let during = keys_on(&server);
    for k in [
        "discussion",
        "discussion:cache:timestamps",
        "discussion:cache:moderator",
        "discussion:state",
        "discussion:run",
    ] {
        assert!(during.contains(&k.to_string()), "{k} missing from {during:?}");
    }
    // A new run will not silently run over the earlier one's keys.
    let (refused, _) = run_on_redis(
        "scenarios/discussion.toml",
        out.path(),
        &server.url(),
        &["--set", "backend.cleanup=after"],
    );
    assert_eq!(refused.status.code(), Some(2));
    let stderr = text(&refused.stderr);
    // It finished: the hint offers what can be done, and --resume is not (it would say
    // there is nothing to resume).
    assert!(
        stderr.contains("keys of an earlier run")
            && stderr.contains("agora cleanup")
            && !stderr.contains("--resume"),
        "{stderr}"
    );
    let url = server.url();
    let cleanup = || {
        agora()
            .args(["cleanup", "--redis-url", &url, "--stream", "discussion"])
            .output()
            .unwrap()
    };
    assert!(cleanup().status.success());
    assert_eq!(
        keys_on(&server),
        ["discussion-archive", "discussion2", "other:key"]
    );
    // Again: nothing to delete is fine, and said, in case the stream was misspelt.
    let again = cleanup();
    assert!(again.status.success());
    assert!(
        text(&again.stderr).contains("nothing of stream \"discussion\" was there"),
        "{}",
        text(&again.stderr)
    );
    let (output, _) = run_on_redis(
        "scenarios/discussion.toml",
        out.path(),
        &server.url(),
        &["--set", "backend.cleanup=after"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        keys_on(&server),
        ["discussion-archive", "discussion2", "other:key"]
    );
}

/// Remembers every message that did not come from an agora agent (no `seq`).
struct Listener;

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

impl Behaviour for Listener {
    type State = ();

    fn init(&self, _ctx: &mut Context<'_>) -> Result<(), BehaviourError> {
        Ok(())
    }

    fn on_message(
        &self,
        _state: &mut (),
        msg: &Message,
        _ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        if msg.seq.is_some() {
            return Ok(Effects::none());
        }
        Ok(Effects::new().remember(serde_json::json!({ "from": &*msg.sender_id, "content": msg.content })))
    }
}

#[test]
fn seed_style_entries_are_handled_and_malformed_ones_dead_lettered() {
    let server = RedisServer::start();
    let mut registry = Registry::builtin();
    registry.register(
        "listener",
        "remembers outside messages",
        &[],
        |_: NoParams, _: &Setup<'_>| Ok(Listener),
    );
    let text = "[scenario]\nname = \"interop\"\nmode = \"free\"\n\
        [backend]\nkind = \"redis\"\ncleanup = \"before\"\n\
        [[agents]]\nid = \"relay\"\ncount = 3\nbehaviour = \"relay\"\nparams = { tokens = 1, hops = 4000 }\n\
        [[agents]]\nid = \"ear\"\ncount = 2\nbehaviour = \"listener\"\n";
    let out = tempfile::tempdir().unwrap();
    let scenario = common::scenario_on_redis("interop.toml", text, &server.url(), out.path(), &registry);
    let url = server.url();

    let outcome = common::block_on(async {
        let b = &scenario.backend;
        let backend = RedisBackend::connect(&b.url, b.keys.clone(), b.reconnect_timeout)
            .await
            .unwrap();
        let options = RunOptions::default();
        // The old project's agents, on a plain client, while the run goes on.
        let outsider = async {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut con = client.get_multiplexed_async_connection().await.unwrap();
            // Wait until the run has started and is busy relaying.
            let started = Instant::now();
            loop {
                let len: u64 = redis::cmd("XLEN")
                    .arg("interop")
                    .query_async(&mut con)
                    .await
                    .unwrap();
                if len > 50 || started.elapsed() > Duration::from_secs(20) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            for i in 0..5 {
                let _: String = redis::cmd("XADD")
                    .arg("interop")
                    .arg("*")
                    .arg("sender_id")
                    .arg("seed_agent")
                    .arg("content")
                    .arg(format!("hello {i}"))
                    .query_async(&mut con)
                    .await
                    .unwrap();
            }
            let _: String = redis::cmd("XADD")
                .arg("interop")
                .arg("*")
                .arg("content")
                .arg("who sent this?")
                .query_async(&mut con)
                .await
                .unwrap();
        };
        let (outcome, ()) = futures_util::join!(
            runtime::run_on(
                backend,
                &scenario,
                &options,
                std::future::pending(),
                std::sync::Arc::new(runtime::Unobserved)
            ),
            outsider
        );
        outcome.unwrap()
    });
    let s = &outcome.summary;
    assert_eq!(s.stop_reason, "quiescent");
    assert_eq!(s.messages, 4000, "the run must still have been relaying: {s:?}");
    assert_eq!(
        s.deliveries,
        (4000 + 6) * 5,
        "every group read every entry, outside ones too"
    );
    assert_eq!(s.dead_letters, 1);
    assert_eq!(s.behaviour_failures, 0);

    let lists = common::block_on(async {
        let backend = RedisBackend::connect(
            &server.parsed_url(),
            Keys::for_stream("interop"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        backend.sizes().await.unwrap()
    });
    assert!(lists.lists.contains(&("ear_1".to_string(), 5)), "{lists:?}");
    assert!(lists.lists.contains(&("ear_2".to_string(), 5)), "{lists:?}");
    let dead = server.command(&["XRANGE", "interop:dead", "-", "+"]);
    assert!(dead.contains("malformed entry: no `sender_id` field"), "{dead}");
    assert!(dead.contains("who sent this?"), "{dead}");
}

#[test]
fn no_redis_listening_exits_3_quickly_with_a_hint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (output, _) = run_on_redis(
        "scenarios/gossip.toml",
        out.path(),
        &format!("redis://127.0.0.1:{port}/0"),
        &[],
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(output.status.code(), Some(3));
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(&format!("127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("hint: ") && lines[1].contains("docker compose up -d"),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(out.path()).unwrap().next().is_none(),
        "nothing written"
    );
}

#[test]
fn a_wrong_password_exits_3_and_is_never_shown() {
    let server = RedisServer::start_with(&["--requirepass", "the-right-one"]);
    let secret = "hunter2-not-right";
    let url = format!("redis://:{secret}@127.0.0.1:{}/0", server.port);
    let out = tempfile::tempdir().unwrap();
    let (output, _) = run(
        {
            let mut c = agora();
            // Every log line there is, to see that none of them shows the password.
            c.env("RUST_LOG", "trace");
            c
        },
        Path::new("scenarios/gossip.toml"),
        out.path(),
        &["--backend", "redis", "--redis-url", &url],
    );
    assert_eq!(output.status.code(), Some(3));
    let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(all.contains("refused the credentials"), "{all}");
    assert!(!all.contains(secret), "{all}");
    // Through the environment, and from inspect, too.
    let inspect = agora()
        .args(["inspect", "--redis-url", &url, "--stream", "x"])
        .output()
        .unwrap();
    assert_eq!(inspect.status.code(), Some(3));
    assert!(!format!("{}{}", text(&inspect.stdout), text(&inspect.stderr)).contains(secret));
    let (env_run, _) = run(
        {
            let mut c = agora();
            c.env("AGORA_BACKEND__URL", &url);
            c
        },
        Path::new("scenarios/gossip.toml"),
        out.path(),
        &["--backend", "redis"],
    );
    assert_eq!(env_run.status.code(), Some(3));
    assert!(!text(&env_run.stderr).contains(secret));
}

#[test]
fn user_and_password_urls_work_and_stay_hidden() {
    let server = RedisServer::start_with(&["--user", "alice", "on", ">wonderland-pw", "~*", "&*", "+@all"]);
    let url = format!("redis://alice:wonderland-pw@127.0.0.1:{}/0", server.port);
    let out = tempfile::tempdir().unwrap();
    let (output, dir) = run_on_redis("scenarios/relay.toml", out.path(), &url, &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary_text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    assert!(!summary_text.contains("wonderland-pw"));
    let check = agora()
        .args(["check", "scenarios/relay.toml", "--redis-url", &url])
        .output()
        .unwrap();
    assert!(check.status.success());
    assert!(text(&check.stdout).contains("redis://alice:***@127.0.0.1"));
    assert!(!text(&check.stdout).contains("wonderland-pw"));
}

#[test]
fn a_user_with_the_rights_the_readme_lists_can_run_inspect_and_clean_up() {
    // No INFO (agora then skips its version check), no admin commands.
    let server = RedisServer::start_with(&[
        "--user",
        "bob",
        "on",
        ">builder",
        "~*",
        "&*",
        "+@read",
        "+@write",
        "+@stream",
        "+@scripting",
        "+@transaction",
        "+@connection",
    ]);
    let url = format!("redis://bob:builder@127.0.0.1:{}/0", server.port);
    let out = tempfile::tempdir().unwrap();
    let (output, _) = run_on_redis(
        "scenarios/discussion.toml",
        out.path(),
        &url,
        &["--set", "backend.cleanup=never"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    for command in ["inspect", "cleanup"] {
        let output = agora()
            .args([command, "--redis-url", &url, "--stream", "discussion"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{command}: {}", text(&output.stderr));
    }
    // LLM agents under requests_per_minute book their turns in a script that asks Redis's
    // clock (TIME), which these rights leave out: it takes the process's own instead.
    let model = common::llm_server::LlmServer::start(common::llm_server::Behaviour::default());
    let base_url = format!("llm.base_url={}", model.base_url());
    // A copy, away from its recording: its model is asked live.
    let debate = out.path().join("debate.toml");
    std::fs::copy("scenarios/llm-debate.toml", &debate).unwrap();
    let (output, _) = run_on_redis(
        debate.to_str().unwrap(),
        out.path(),
        &url,
        &[
            "--set",
            &base_url,
            "--set",
            "llm.model=stub-model",
            "--set",
            "llm.requests_per_minute=6000",
            "--set",
            "scenario.ticks=3",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(model.answered() >= 3, "{} answered", model.answered());
    // Without the scripting commands no step can be committed: the check before the run
    // says what is missing (exit 3, the backend cannot be used), before anything is written.
    server.command(&["ACL", "SETUSER", "bob", "-@scripting"]);
    let (output, _) = run_on_redis("scenarios/discussion.toml", out.path(), &url, &[]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("error: the Redis user at 127.0.0.1:")
            && stderr.contains("may not run scripts (EVAL, EVALSHA)")
            && stderr.contains("hint: grant the user the commands listed in agora's README"),
        "{stderr}"
    );
}

#[test]
fn a_database_the_server_lacks_exits_3_with_a_hint() {
    let server = RedisServer::start();
    let out = tempfile::tempdir().unwrap();
    let url = format!("redis://127.0.0.1:{}/99", server.port);
    let (output, _) = run_on_redis("scenarios/relay.toml", out.path(), &url, &[]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("has no database of the number in the URL")
            && stderr.contains("hint: choose a database number"),
        "{stderr}"
    );
}

#[test]
fn unix_socket_urls_work_with_a_database_and_a_password() {
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("redis.sock");
    let socket_text = socket.to_str().unwrap();
    let server = RedisServer::start_with(&[
        "--unixsocket",
        socket_text,
        "--unixsocketperm",
        "700",
        "--requirepass",
        "sock-secret",
    ]);
    let tcp_url = format!("redis://:sock-secret@127.0.0.1:{}/0", server.port);
    let unix_url = format!("unix://{socket_text}?db=3&pass=sock-secret");
    let scenario = Path::new("scenarios/relay.toml");
    let (tcp_out, unix_out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (tcp, tcp_dir) = run(
        agora(),
        scenario,
        tcp_out.path(),
        &["--backend", "redis", "--redis-url", &tcp_url],
    );
    assert!(tcp.status.success(), "{}", text(&tcp.stderr));
    let (unix, unix_dir) = run(
        agora(),
        scenario,
        unix_out.path(),
        &[
            "--backend",
            "redis",
            "--redis-url",
            &unix_url,
            "--set",
            "backend.cleanup=before",
        ],
    );
    assert!(unix.status.success(), "{}", text(&unix.stderr));
    assert_eq!(
        std::fs::read(tcp_dir.join("transcript.jsonl")).unwrap(),
        std::fs::read(unix_dir.join("transcript.jsonl")).unwrap()
    );
    let summary_text = std::fs::read_to_string(unix_dir.join("summary.json")).unwrap();
    assert!(!summary_text.contains("sock-secret"), "{summary_text}");
    // The run's keys went to database 3, kept because cleanup was only `before`.
    let mut con = redis::Client::open(unix_url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let in_db3: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert!(in_db3 > 0, "nothing in database 3");

    let missing = format!("unix://{}/nothing-here.sock", socket_dir.path().display());
    let out = tempfile::tempdir().unwrap();
    let (output, _) = run(
        agora(),
        scenario,
        out.path(),
        &["--backend", "redis", "--redis-url", &missing],
    );
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("nothing-here.sock") && stderr.contains("--unixsocket"),
        "{stderr}"
    );
}

#[test]
fn tls_urls_work() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed to make a certificate for the TLS test");
    assert!(made.status.success(), "{}", text(&made.stderr));
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &cert,
        "--tls-auth-clients",
        "no",
    ]);
    drop(server.url());
    let out = tempfile::tempdir().unwrap();
    let url = format!("rediss://127.0.0.1:{tls_port}/0#insecure");
    let (output, dir) = run_on_redis("scenarios/gossip.toml", out.path(), &url, &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(summary(&dir)["backend"], "redis");
    // Without #insecure the self-signed certificate is refused, with a hint about it.
    let strict = format!("rediss://127.0.0.1:{tls_port}/0");
    let (refused, _) = run_on_redis("scenarios/gossip.toml", out.path(), &strict, &[]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(
        text(&refused.stderr).contains("#insecure"),
        "{}",
        text(&refused.stderr)
    );
}

#[test]
fn inspect_and_cleanup_commands() {
    let server = RedisServer::start();
    let out = tempfile::tempdir().unwrap();
    let (output, _) = run_on_redis(
        "scenarios/relay.toml",
        out.path(),
        &server.url(),
        &["--set", "backend.cleanup=never"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let shown = agora()
        .args(["inspect", "--redis-url", &server.url(), "--stream", "relay"])
        .output()
        .unwrap();
    assert!(shown.status.success());
    let table = text(&shown.stdout);
    assert!(table.contains("relay (60 entries)"), "{table}");
    assert!(table.contains("group_relay_1"), "{table}");
    let json = agora()
        .args([
            "inspect",
            "--redis-url",
            &server.url(),
            "--stream",
            "relay",
            "--json",
        ])
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["length"], 60);
    assert_eq!(json["groups"].as_array().unwrap().len(), 5);
    assert!(
        json["groups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["pending"] == 0 && g["lag"] == 0)
    );
    assert_eq!(json["cache_lists"], 5);
    assert_eq!(json["cache_timestamps"], 60);

    server.command(&["SET", "unrelated", "1"]);
    let cleaned = agora()
        .args(["cleanup", "--redis-url", &server.url(), "--stream", "relay"])
        .output()
        .unwrap();
    assert!(cleaned.status.success(), "{}", text(&cleaned.stderr));
    assert!(
        text(&cleaned.stdout).contains("deleted 5 consumer groups"),
        "{}",
        text(&cleaned.stdout)
    );
    assert_eq!(keys_on(&server), ["unrelated"]);

    // The old project's numbered groups.
    server.command(&["XADD", "old", "*", "sender_id", "a", "content", "b"]);
    for i in 1..=3 {
        server.command(&["XGROUP", "CREATE", "old", &format!("group_{i}"), "0"]);
    }
    let cleaned = agora()
        .args([
            "cleanup",
            "--redis-url",
            &server.url(),
            "--stream",
            "old",
            "--num-groups",
            "3",
        ])
        .output()
        .unwrap();
    assert!(
        text(&cleaned.stdout).contains("deleted 3 consumer groups"),
        "{}",
        text(&cleaned.stdout)
    );
    assert_eq!(keys_on(&server), ["unrelated"]);

    // A --stream that names someone else's key (a string here): refused, and left alone.
    let url = server.url();
    let inspect = ["inspect", "--redis-url", &url, "--stream", "unrelated"];
    let cleanup = [
        "cleanup",
        "--redis-url",
        &url,
        "--stream",
        "unrelated",
        "--num-groups",
        "2",
    ];
    for args in [&inspect[..], &cleanup[..]] {
        let command = args[0];
        let output = agora().args(args).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{command}: {}",
            text(&output.stderr)
        );
        assert!(
            text(&output.stderr).starts_with("error: key \"unrelated\" holds a string"),
            "{}",
            text(&output.stderr)
        );
    }
    assert_eq!(keys_on(&server), ["unrelated"]);
}

#[test]
fn maxlen_trims_what_every_group_has_read() {
    let server = RedisServer::start();
    let out = tempfile::tempdir().unwrap();
    let (output, dir) = run_on_redis(
        "scenarios/opinion.toml",
        out.path(),
        &server.url(),
        &["--set", "backend.maxlen=300", "--set", "backend.cleanup=never"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(summary(&dir)["messages"], 4200);
    let len = server.command(&["XLEN", "opinion"]);
    let len: u64 = len.trim().trim_start_matches(':').parse().unwrap();
    // The last tick's 200 messages were never read, so they stay; older ones are trimmed.
    assert!((200..=400).contains(&len), "{len}");
    // Trimming changes nothing in the transcript.
    let memory_out = tempfile::tempdir().unwrap();
    let (plain, plain_dir) = run(
        agora(),
        Path::new("scenarios/opinion.toml"),
        memory_out.path(),
        &[],
    );
    assert!(plain.status.success());
    assert_eq!(
        std::fs::read(plain_dir.join("transcript.jsonl")).unwrap(),
        std::fs::read(dir.join("transcript.jsonl")).unwrap()
    );
}

/// A tick with more messages than one read brings (1,024 a group): each agent reads it in
/// several rounds, and gets the same batch in the same order on both backends.
#[test]
fn ticks_larger_than_a_read_are_read_whole_on_both_backends() {
    let server = RedisServer::start();
    let sets = [
        "--set",
        "agents.0.count=1100",
        "--set",
        "scenario.ticks=2",
        "--no-plots",
    ];
    let memory = tempfile::tempdir().unwrap();
    let (output, in_memory) = run(agora(), Path::new("scenarios/opinion.toml"), memory.path(), &sets);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let on_redis = tempfile::tempdir().unwrap();
    let (output, on_redis) = run_on_redis("scenarios/opinion.toml", on_redis.path(), &server.url(), &sets);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let (a, b) = (summary(&in_memory), summary(&on_redis));
    assert_eq!(a["deliveries"], 1100 * 1100 * 2);
    assert_eq!(a["deliveries"], b["deliveries"]);
    assert_eq!(a["transcript_sha256"], b["transcript_sha256"]);
}
