//! Networks (CONTRACT.md, "Networks"): a complete graph changes no transcript; a sparse one
//! delivers a message to its sender's followers and addressee only, and gives the same
//! transcript on memory, on Redis, with workers and after a kill and resume.

mod common;

use common::{
    SMALL_WORLD, agora, hash_of as hash, lockstep_scenarios, run_dir_under, run_quietly as run,
    run_quietly_ok as run_ok, summary_of as summary, text, write_file as write,
};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::redis_server::RedisServer;

/// `network.csv` as follower -> followees.
fn follows(run_dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(run_dir.join("network.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("follower,followee"));
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in lines {
        let (a, b) = line.split_once(',').unwrap();
        out.entry(a.to_string()).or_default().insert(b.to_string());
    }
    out
}

#[test]
fn a_complete_network_gives_todays_transcripts() {
    let without_network = lockstep_scenarios()
        .into_iter()
        .filter(|s| !std::fs::read_to_string(s).unwrap().contains("[network]"));
    for scenario in without_network {
        let plain = tempfile::tempdir().unwrap();
        let without = run_ok(&scenario, plain.path(), &[]);
        let complete = tempfile::tempdir().unwrap();
        let with = run_ok(&scenario, complete.path(), &["--set", "network.kind=complete"]);
        assert_eq!(hash(&with), hash(&without), "{}", scenario.display());
        assert_eq!(summary(&with)["deliveries"], summary(&without)["deliveries"]);
        let agents = summary(&with)["agents"].as_u64().unwrap() as usize;
        let graph = follows(&with);
        let edges: usize = graph.values().map(BTreeSet::len).sum();
        assert_eq!(edges, agents * (agents - 1), "{}", scenario.display());
    }
}

#[test]
fn a_sparse_network_delivers_to_followers_and_addressees_only() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), "village.toml", SMALL_WORLD);
    let out = tempfile::tempdir().unwrap();
    let run_dir = run_ok(&scenario, out.path(), &[]);
    let graph = follows(&run_dir);
    // Watts-Strogatz keeps n k / 2 undirected edges: n k follows, each both ways.
    let edges: usize = graph.values().map(BTreeSet::len).sum();
    assert_eq!(edges, 64 * 4);
    for (a, followees) in &graph {
        for b in followees {
            assert!(graph[b].contains(a), "{a} follows {b} but not back");
        }
    }
    let summary = summary(&run_dir);
    let last_tick = summary["ticks"].as_u64().unwrap();
    // A message of tick t is read in tick t + 1.
    let (expected, addressed_to_strangers) = expected_deliveries(&run_dir, Some(last_tick));
    assert!(
        addressed_to_strangers > 0,
        "the test needs messages addressed to strangers"
    );
    assert_eq!(summary["deliveries"].as_u64().unwrap(), expected);
    assert!(expected < 64 * 63 * last_tick / 4, "not sparse: {expected}");
}

/// What the run's messages (those of ticks before `before`, if given) should have cost: one
/// delivery per follower of the sender, and one to the addressee when it does not follow the
/// sender. Also returns how many messages went to such strangers.
fn expected_deliveries(run_dir: &Path, before: Option<u64>) -> (u64, u64) {
    let graph = follows(run_dir);
    let transcript = std::fs::read_to_string(run_dir.join("transcript.jsonl")).unwrap();
    let (mut expected, mut strangers) = (0, 0);
    for line in transcript.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        if before.is_some_and(|b| m["tick"].as_u64().unwrap() >= b) {
            continue;
        }
        let sender = m["sender_id"].as_str().unwrap();
        expected += graph.values().filter(|f| f.contains(sender)).count() as u64;
        if let Some(to) = m["to"].as_str()
            && !graph.get(to).is_some_and(|f| f.contains(sender))
        {
            expected += 1;
            strangers += 1;
        }
    }
    (expected, strangers)
}

#[test]
fn free_mode_on_a_network_delivers_the_same_way_everywhere() {
    let w1 = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/w1.toml");
    let ring = ["--set", "network.kind=ring", "--set", "network.k=4"];
    let server = RedisServer::start();
    let url = server.url();
    for extra in [
        &[][..],
        &["--backend", "redis", "--redis-url", &url],
        &["--backend", "redis", "--redis-url", &url, "--workers", "2"],
    ] {
        let out = tempfile::tempdir().unwrap();
        let mut args = ring.to_vec();
        args.extend_from_slice(extra);
        args.extend(["--set", "agents.0.params.hops=200"]);
        let run_dir = run_ok(&w1, out.path(), &args);
        let summary = summary(&run_dir);
        assert_eq!(summary["stop_reason"], "quiescent", "{extra:?}");
        let (expected, _) = expected_deliveries(&run_dir, None);
        assert_eq!(summary["deliveries"].as_u64().unwrap(), expected, "{extra:?}");
        assert!(
            expected < summary["messages"].as_u64().unwrap() * 10,
            "{extra:?}: not sparse"
        );
    }
}

#[test]
fn gossip_tells_followers_and_the_summary_describes_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), "village.toml", SMALL_WORLD);
    let out = tempfile::tempdir().unwrap();
    let run_dir = run_ok(&scenario, out.path(), &[]);
    let graph = follows(&run_dir);
    let transcript = std::fs::read_to_string(run_dir.join("transcript.jsonl")).unwrap();
    let mut rumors = 0;
    for line in transcript.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        let sender = m["sender_id"].as_str().unwrap();
        if let (true, Some(to)) = (sender.starts_with("gossip"), m["to"].as_str()) {
            assert!(
                graph[to].contains(sender),
                "{sender} told {to}, who does not follow it"
            );
            rumors += 1;
        }
    }
    assert!(rumors > 5, "{rumors} rumors");
    let summary = summary(&run_dir);
    let network = &summary["network"];
    assert_eq!(network["kind"], "watts_strogatz");
    assert_eq!(network["follows"], 256);
    assert_eq!(network["mean_degree"], 4.0);
    let agents: u64 = network["out_degree"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(agents, 64);
    // The graph, drawn: one dot per agent.
    let plotted = agora().arg("plot").arg(&run_dir).output().unwrap();
    assert!(plotted.status.success(), "{}", text(&plotted.stderr));
    let svg = std::fs::read_to_string(run_dir.join("plots").join("network.svg")).unwrap();
    assert_eq!(svg.matches("<circle").count(), 64);
    // Coloured by the first agent-level series, with its scale beside the circle: a bar of
    // a hundred shades.
    assert!(svg.contains("coloured by last informed"), "{svg:.2000}");
    assert!(svg.matches("<rect").count() >= 100, "{svg:.2000}");
    assert!(run_dir.join("plots").join("degrees.svg").is_file());
    // Each agent value, averaged by degree class, tick by tick.
    let levels = summary["levels"].as_object().unwrap();
    for value in ["informed", "opinion"] {
        let classes: Vec<&String> = levels
            .keys()
            .filter(|k| k.starts_with(&format!("{value}_degree_")))
            .collect();
        assert!(!classes.is_empty(), "{value}: {:?}", levels.keys());
        for class in classes {
            let per_tick = levels[class]["per_tick"].as_array().unwrap();
            assert!(
                per_tick
                    .iter()
                    .all(|v| v.as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)))
            );
        }
    }
}

#[test]
fn generated_networks_are_drawn_from_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), "village.toml", SMALL_WORLD);
    let graph = |extra: &[&str]| {
        let out = tempfile::tempdir().unwrap();
        let mut args = vec!["--set", "scenario.ticks=1"];
        args.extend_from_slice(extra);
        follows(&run_ok(&scenario, out.path(), &args))
    };
    for kind in [
        &["--set", "network.kind=watts_strogatz"][..],
        &["--set", "network.kind=barabasi_albert", "--set", "network.m=2"],
        &["--set", "network.kind=erdos_renyi", "--set", "network.p=0.1"],
    ] {
        let first = graph(kind);
        assert_eq!(graph(kind), first, "{kind:?}");
        let mut reseeded = kind.to_vec();
        reseeded.extend(["--seed", "6"]);
        assert_ne!(graph(&reseeded), first, "{kind:?}");
    }
    // The ring needs no random numbers: every agent follows its k nearest.
    let ring = graph(&["--set", "network.kind=ring"]);
    assert!(ring.values().all(|f| f.len() == 4));
    assert!(ring["citizen_1"].contains("speaker_4") && ring["citizen_1"].contains("citizen_3"));
    // Barabasi-Albert: m follows each way per agent after the first m.
    let ba = graph(&["--set", "network.kind=barabasi_albert", "--set", "network.m=2"]);
    let edges: usize = ba.values().map(BTreeSet::len).sum();
    assert_eq!(edges, 2 * 2 * (64 - 2));
}

/// A talker and three listeners whose follows come from `follows.csv` beside the scenario:
/// two listeners follow the talker, the talker follows the first listener.
fn chain(dir: &Path) -> PathBuf {
    write(
        dir,
        "follows.csv",
        "follower,followee\nlistener_1,talker\nlistener_2,talker\ntalker,listener_1\n",
    );
    write(
        dir,
        "chain.toml",
        "[scenario]\nname = \"chain\"\nticks = 3\n[network]\nkind = \"file\"\nfile = \"follows.csv\"\n\
         [[agents]]\nid = \"talker\"\nbehaviour = \"opinion\"\n\
         [[agents]]\nid = \"listener\"\ncount = 3\nbehaviour = \"opinion\"\n",
    )
}

#[test]
fn an_edge_list_and_tables_that_follow_tables() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = chain(dir.path());
    // Run from elsewhere: the file is found beside the scenario.
    let out = tempfile::tempdir().unwrap();
    let run_dir = run_ok(&scenario, out.path(), &[]);
    let graph = follows(&run_dir);
    assert_eq!(graph.len(), 3);
    assert!(!graph.contains_key("listener_3"));
    // Ticks 1..3 read ticks 0..2: talker's opinion reaches two listeners, listener_1's the
    // talker.
    assert_eq!(summary(&run_dir)["deliveries"], 9);

    // A table that follows only another table, on a complete network.
    let restricted = std::fs::read_to_string(&scenario)
        .unwrap()
        .replace("kind = \"file\"\nfile = \"follows.csv\"", "kind = \"complete\"")
        .replace("id = \"listener\"", "id = \"listener\"\nfollows = [\"talker\"]");
    let scenario = write(dir.path(), "restricted.toml", &restricted);
    let out = tempfile::tempdir().unwrap();
    let run_dir = run_ok(&scenario, out.path(), &[]);
    let graph = follows(&run_dir);
    assert_eq!(graph["talker"].len(), 3);
    for l in 1..=3 {
        assert_eq!(
            graph[&format!("listener_{l}")],
            BTreeSet::from(["talker".to_string()])
        );
    }
}

#[test]
fn the_table_at_the_end_keeps_one_column_with_long_metric_names() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), "village.toml", SMALL_WORLD);
    let out = tempfile::tempdir().unwrap();
    let shown = agora()
        .arg("run")
        .arg(&scenario)
        .args(["--no-plots", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = text(&shown.stdout);
    assert!(stdout.contains("_degree_"), "{stdout}");
    // Where each row's value begins: after the key and the spaces that pad it.
    let columns: BTreeSet<usize> = stdout
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(|l| {
            let key_end = 2 + l[2..].find("  ").unwrap();
            key_end + l[key_end..].find(|c: char| c != ' ').unwrap()
        })
        .collect();
    assert_eq!(columns.len(), 1, "{stdout}");
}

#[test]
fn an_edge_list_warns_of_each_line_it_leaves_out() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = chain(dir.path());
    write(
        dir.path(),
        "follows.csv",
        "follower,followee\nlistener_1,talker\ntalker,talker\nlistener_1,talker\n",
    );
    let output = agora().arg("check").arg(&scenario).output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("follows.csv:3: talker follows itself; left out"),
        "{stderr}"
    );
    assert!(
        stderr.contains("follows.csv:4: listener_1 -> talker was given on line 2 already; left out"),
        "{stderr}"
    );
}

#[test]
fn bad_networks_are_refused_with_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), "village.toml", SMALL_WORLD);
    write(
        dir.path(),
        "bad.csv",
        "follower,followee\ncitizen_1,citizen_2\ncitizen_2,mallory\n",
    );
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "network.k=3"], "network.k"),
        (&["--set", "network.p=1.5"], "network.p"),
        (&["--set", "network.kind=barabasi_albert"], "needs `m`"),
        (&["--set", "network.kind=hypercube"], "network.kind"),
        (
            &["--set", "network.kind=file", "--set", "network.file=bad.csv"],
            "bad.csv:3: no agent is called \"mallory\"",
        ),
        (
            &["--set", "network.kind=file", "--set", "network.file=missing.csv"],
            "no such file: ",
        ),
        (
            &["--set", "agents.0.follows=[\"nobody\"]"],
            "agents[0].follows[0]",
        ),
    ];
    for (extra, needle) in cases {
        let output = agora().arg("check").arg(&scenario).args(*extra).output().unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Two pairs of brackets, as agents have.
    let doubled = write(
        dir.path(),
        "doubled.toml",
        &SMALL_WORLD.replace("[network]", "[[network]]"),
    );
    let output = agora().arg("check").arg(&doubled).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("hint: write [network], with one pair of brackets"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn a_sparse_network_gives_one_transcript_on_every_backend_and_after_kills() {
    let dir = tempfile::tempdir().unwrap();
    let (scenario, memory_run) = common::long_village(dir.path());
    let expected = hash(&memory_run);
    let server = RedisServer::start();
    let url = server.url();
    for extra in [
        &["--backend", "redis", "--redis-url", &url][..],
        &["--backend", "redis", "--redis-url", &url, "--workers", "2"],
    ] {
        let out = tempfile::tempdir().unwrap();
        let run_dir = run_ok(&scenario, out.path(), extra);
        assert_eq!(hash(&run_dir), expected, "{extra:?}");
    }
    // Killed mid-run (SIGKILL) a few times, then resumed to the end, on a stream of its own
    // (the runs above left theirs finished).
    let out = tempfile::tempdir().unwrap();
    let args = [
        "--backend",
        "redis",
        "--redis-url",
        &url,
        "--set",
        "backend.stream=village-killed",
    ];
    let run_dir = common::run_with_kills(&scenario, out.path(), &args, &[5, 40, 90], &|| {
        server.completed_tick("village-killed")
    });
    assert_eq!(hash(&run_dir), expected, "after kills and --resume");
    let memory_summary = summary(&memory_run);
    assert_eq!(summary(&run_dir)["deliveries"], memory_summary["deliveries"]);
}

/// LLM agents on a ring (each follows its two neighbours), every agent posting every tick,
/// the prompt listing the feed's authors (`*` for a recommended post).
fn llm_ring(url: &str, feed: &str) -> String {
    format!(
        r#"
[scenario]
name = "feeds"
seed = 3
ticks = 4

[network]
kind = "ring"
k = 2

[llm]
base_url = "{url}"
model = "stub-model"

[[agents]]
id = "d"
count = 10
behaviour = "llm"

[agents.params]
activity = 1.0
turns = "none"
feed = 3
{feed}
prompt = "FEED[{{% for p in feed %}}{{{{ p.sender_id }}}}{{% if p.recommended %}}*{{% endif %}},{{% endfor %}}]"
"#
    )
}

/// Each exchange's agent and the authors its feed showed.
fn feeds(run_dir: &Path) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(run_dir.join("llm.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let e: serde_json::Value = serde_json::from_str(line).unwrap();
            let prompt = e["request"]["messages"][1]["content"]
                .as_str()
                .unwrap()
                .to_string();
            let inside = prompt.split_once("FEED[").unwrap().1.split_once(']').unwrap().0;
            let authors = inside
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect();
            (e["agent"].as_str().unwrap().to_string(), authors)
        })
        .collect()
}

#[test]
fn llm_feeds_come_from_the_network_and_mix_in_recommendations() {
    let server = common::llm_server::LlmServer::start(common::llm_server::Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let run = |feed: &str| {
        let scenario = write(dir.path(), "feeds.toml", &llm_ring(&server.base_url(), feed));
        let out = tempfile::tempdir().unwrap();
        let run_dir = run_ok(&scenario, out.path(), &[]);
        (follows(&run_dir), feeds(&run_dir), out)
    };
    let (graph, following, _keep) = run("feed_from = \"following\"");
    assert!(following.iter().any(|(_, f)| f.len() == 2), "{following:?}");
    for (agent, authors) in &following {
        assert!(authors.len() <= 3);
        for a in authors {
            assert!(
                graph[agent].contains(a),
                "{agent}'s feed shows {a}, whom it does not follow"
            );
        }
    }
    let (graph, mixed, _keep) = run("feed_from = \"mix\"\nrecommended = 1\nrecommend_by = \"random\"");
    let mut recommended = 0;
    for (agent, authors) in &mixed {
        for a in authors {
            match a.strip_suffix('*') {
                Some(outside) => {
                    recommended += 1;
                    assert!(
                        !graph[agent].contains(outside) && outside != agent,
                        "{agent}: {a}"
                    );
                }
                None => assert!(graph[agent].contains(a), "{agent}: {a}"),
            }
        }
    }
    assert!(recommended > 10, "{recommended} recommendations");
    // The same scenario, the same feeds.
    let (_, again, _keep) = run("feed_from = \"mix\"\nrecommended = 1\nrecommend_by = \"random\"");
    assert_eq!(again.len(), mixed.len());
    let sorted = |mut f: Vec<(String, Vec<String>)>| {
        f.sort();
        f
    };
    assert_eq!(sorted(again), sorted(mixed));
}

#[test]
fn a_python_behaviour_sees_its_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let helper = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python");
    let script = write(
        dir.path(),
        "neighbours.py",
        &format!(
            "import sys\nsys.path.insert(0, {helper:?})\nfrom agora_behaviour import Behaviour, Effects, run\n\
             class Neighbours(Behaviour):\n\
             \x20   def init(self, ctx):\n\
             \x20       return {{}}\n\
             \x20   def on_start(self, state, ctx):\n\
             \x20       return Effects().publish('hi', data={{'audience': ctx.audience, 'following': ctx.following}})\n\
             run(Neighbours())\n"
        ),
    );
    let scenario = write(
        dir.path(),
        "py.toml",
        &format!(
            "[scenario]\nname = \"py-net\"\nticks = 1\n\
             [behaviours.neighbours]\ncommand = [\"python3\", {:?}]\n\
             [network]\nkind = \"barabasi_albert\"\nm = 2\n\
             [[agents]]\nid = \"p\"\ncount = 8\nbehaviour = \"neighbours\"\n",
            script.display().to_string()
        ),
    );
    let out = tempfile::tempdir().unwrap();
    let run_dir = run_ok(&scenario, out.path(), &[]);
    let graph = follows(&run_dir);
    let transcript = std::fs::read_to_string(run_dir.join("transcript.jsonl")).unwrap();
    assert_eq!(transcript.lines().count(), 8);
    for line in transcript.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        let agent = m["sender_id"].as_str().unwrap();
        let names = |key: &str| -> BTreeSet<String> {
            m["data"][key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names("following"), graph[agent], "{agent}");
        let followers: BTreeSet<String> = graph
            .iter()
            .filter(|(_, f)| f.contains(agent))
            .map(|(a, _)| a.clone())
            .collect();
        assert_eq!(names("audience"), followers, "{agent}");
    }
}

#[test]
fn inspect_shows_and_cleanup_removes_the_inboxes() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), "village.toml", SMALL_WORLD);
    let server = RedisServer::start();
    let url = server.url();
    let out = tempfile::tempdir().unwrap();
    run_ok(
        &scenario,
        out.path(),
        &[
            "--backend",
            "redis",
            "--redis-url",
            &url,
            "--set",
            "backend.cleanup=never",
        ],
    );
    assert!(
        server
            .command(&["EXISTS", "village:inbox:citizen_1"])
            .contains(":1")
    );
    let inspect = agora()
        .args(["inspect", "--redis-url", &url, "--stream", "village"])
        .output()
        .unwrap();
    let shown = text(&inspect.stdout);
    assert!(inspect.status.success(), "{}", text(&inspect.stderr));
    assert!(
        shown.contains("group_citizen_1") && shown.contains("group_speaker_4"),
        "{shown}"
    );
    let cleanup = agora()
        .args(["cleanup", "--redis-url", &url, "--stream", "village"])
        .output()
        .unwrap();
    assert!(cleanup.status.success(), "{}", text(&cleanup.stderr));
    let left = server.command(&["KEYS", "village*"]);
    assert!(left.starts_with("*0"), "left behind: {left}");
}

#[test]
fn worker_processes_find_a_relative_edge_list() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = chain(dir.path());
    let alone = tempfile::tempdir().unwrap();
    let expected = hash(&run_ok(&scenario, alone.path(), &[]));
    let server = RedisServer::start();
    let out = tempfile::tempdir().unwrap();
    let run_dir = run_ok(
        &scenario,
        out.path(),
        &[
            "--backend",
            "redis",
            "--redis-url",
            &server.url(),
            "--workers",
            "2",
        ],
    );
    assert_eq!(hash(&run_dir), expected);
}

#[test]
fn a_complete_network_of_many_agents_is_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), "village.toml", SMALL_WORLD);
    let out = tempfile::tempdir().unwrap();
    let output = run(
        &scenario,
        out.path(),
        &[
            "--set",
            "network.kind=complete",
            "--set",
            "agents.0.count=1000",
            "--set",
            "scenario.ticks=1",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let run_dir = run_dir_under(out.path());
    assert!(!run_dir.join("network.csv").exists());
    assert!(
        text(&output.stderr).contains("network.csv is not written"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(summary(&run_dir)["network"]["follows"], 1024 * 1023);
}

/// `backend.maxlen` on a sparse network: the groups read inboxes, so the stream (the run's
/// record) is trimmed by length alone, on Redis as in memory, and the transcript is the same.
#[test]
fn a_trimmed_stream_on_a_network_keeps_the_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), "village.toml", SMALL_WORLD);
    let trim = ["--set", "backend.maxlen=100"];
    let memory = tempfile::tempdir().unwrap();
    let expected = hash(&run_ok(&scenario, memory.path(), &trim));
    let server = RedisServer::start();
    let url = server.url();
    let out = tempfile::tempdir().unwrap();
    let mut on_redis = vec!["--backend", "redis", "--redis-url", &url];
    on_redis.extend(trim);
    assert_eq!(hash(&run_ok(&scenario, out.path(), &on_redis)), expected);
    let length = server.command(&["XLEN", "village"]);
    let length: u64 = length.trim().trim_start_matches(':').parse().unwrap();
    assert!(length <= 200, "the stream keeps {length} entries");
}
