//! Redis Cluster (`backend.cluster = true`) on a real three-node cluster of the test's own:
//! the same transcripts as on memory, with and without a network, with workers and after
//! kills; the keys spread over every node; a relay cut short finished once; cleanup and
//! inspect find a run on every node; a cluster taken for one server (and the reverse) is a
//! clear error.

mod common;

use std::sync::Arc;
use std::time::Duration;

use agora::backend::redis::RedisBackend;
use agora::backend::{GroupRead, Keys, Stream};
use agora::message::EntryId;
use common::redis_cluster::RedisCluster;
use common::redis_server::RedisServer;
use common::{
    SMALL_WORLD, agora, hash_of as hash, run_quietly as run, run_quietly_ok as run_ok, text,
    write_file as write,
};

/// The same village where everyone hears everyone (no `[network]`).
fn broadcast_village() -> String {
    SMALL_WORLD.replace("[network]\nkind = \"watts_strogatz\"\nk = 4\np = 0.2\n", "")
}

fn on_cluster(url: &str) -> Vec<&str> {
    vec![
        "--backend",
        "redis",
        "--redis-url",
        url,
        "--set",
        "backend.cluster=true",
    ]
}

#[test]
fn runs_on_a_three_node_cluster_give_their_memory_transcripts_and_spread_over_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let cluster_args = on_cluster(&url);
    for (name, text) in [
        ("network.toml", SMALL_WORLD.to_string()),
        ("broadcast.toml", broadcast_village()),
    ] {
        let scenario = write(dir.path(), name, &text);
        let memory = tempfile::tempdir().unwrap();
        let expected = hash(&run_ok(&scenario, memory.path(), &[]));
        let mut workers = cluster_args.clone();
        workers.extend(["--workers", "2"]);
        for extra in [cluster_args.clone(), workers] {
            let out = tempfile::tempdir().unwrap();
            assert_eq!(
                hash(&run_ok(&scenario, out.path(), &extra)),
                expected,
                "{name} {extra:?}"
            );
        }
        // The run's keys (kept: cleanup is "before") are on all three nodes.
        let keys = cluster.keys_per_node();
        assert!(keys.iter().all(|&n| n > 10), "{name}: keys per node {keys:?}");
    }
    // The table at the end says where the run went.
    let out = tempfile::tempdir().unwrap();
    let shown = agora()
        .arg("run")
        .arg(dir.path().join("broadcast.toml"))
        .args(["--no-plots", "--overwrite", "--out"])
        .arg(out.path())
        .args(&cluster_args)
        .output()
        .unwrap();
    assert!(
        text(&shown.stdout).contains("lockstep on a Redis Cluster"),
        "{}",
        text(&shown.stdout)
    );
}

#[test]
fn a_run_killed_on_a_cluster_resumes_to_its_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let (scenario, memory_run) = common::long_village(dir.path());
    let expected = hash(&memory_run);
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let out = tempfile::tempdir().unwrap();
    let args = on_cluster(&url);
    let run_dir = common::run_with_kills(&scenario, out.path(), &args, &[5, 60, 150], &|| {
        cluster.completed_tick("village")
    });
    assert_eq!(hash(&run_dir), expected, "after kills and --resume");
}

#[test]
fn a_run_rides_out_a_primary_killed_and_started_again() {
    // A primary goes away mid-run and comes back with its data: the run waits, makes its
    // connection to the cluster anew, and goes on to the memory transcript (a new user's
    // run stopped here, and waited the whole reconnect_timeout for nothing first).
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), "village.toml", &broadcast_village());
    let longer = ["--set", "scenario.ticks=40"];
    let memory = tempfile::tempdir().unwrap();
    let expected = hash(&run_ok(&scenario, memory.path(), &longer));
    let mut cluster = RedisCluster::start_with_aof();
    let url = cluster.url();
    let out = tempfile::tempdir().unwrap();
    let child = agora()
        .arg("run")
        .arg(&scenario)
        .args(["--quiet", "--no-plots", "--out"])
        .arg(out.path())
        .args(on_cluster(&url))
        .args(longer)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while cluster.completed_tick("village").is_none_or(|t| t < 3) {
        assert!(started.elapsed() < Duration::from_secs(60), "tick 3 never came");
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.nodes[1].kill();
    std::thread::sleep(Duration::from_secs(2));
    cluster.nodes[1].restart();
    // Every tick appends to cache lists on every node, so a run still going after the
    // restart has met the outage. The redis client's own retries may ride out an outage
    // this short without agora seeing an error; when agora does see one, it must say the
    // backend came back.
    let mut child = child;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before the primary came back, so it never met the outage"
    );
    let output = child.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    if stderr.contains("lost the backend") {
        assert!(stderr.contains("the backend answers again"), "{stderr}");
    }
    let run_dir = out.path().join(
        std::fs::read_dir(out.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name(),
    );
    assert_eq!(hash(&run_dir), expected);
}

fn read(group: &str) -> GroupRead {
    GroupRead {
        group: group.to_string(),
        consumer: "c".to_string(),
        count: 100,
        pending: false,
    }
}

fn contents(batch: &[agora::message::Delivery]) -> Vec<String> {
    batch
        .iter()
        .map(|d| d.message().map(|m| m.content.clone()).unwrap_or_default())
        .collect()
}

/// A step committed in its agent's slot whose relay stopped after some followers' inboxes:
/// the next process to host the agent relays the rest, and a relay done again adds nothing.
/// Eight followers on three nodes: some node holds several, relayed by one script.
#[test]
fn a_relay_cut_short_is_finished_once_by_the_next_host() {
    let cluster = RedisCluster::start();
    let keys = Keys::for_stream("relay").with_cluster(true);
    let names: Vec<Arc<str>> = std::iter::once("a".to_string())
        .chain((1..=8).map(|i| format!("f{i}")))
        .map(Arc::from)
        .collect();
    let follows = (1..=8).map(|i| (i, 0)).collect();
    let network = Arc::new(agora::network::Network::new(names.clone(), follows));
    let groups: Vec<String> = names.iter().map(|a| keys.group(a)).collect();
    common::block_on(async {
        let b = RedisBackend::connect(&cluster.parsed_url(), keys.clone(), Duration::from_secs(5))
            .await
            .unwrap()
            .with_network(Some(network));
        b.ensure_groups(&groups).await.unwrap();
        // What a's step left: the message in its outbox, relayed into f1..f4's inboxes only.
        let message = ["sender_id", "a", "content", "left over", "seq", "1", "tick", "0"];
        let outbox = keys.outbox("a");
        let mut add = vec!["XADD", outbox.as_str(), "*", "relay", "message"];
        add.extend(message);
        let reply = cluster.command(&add);
        let outbox_id = reply.lines().nth(1).unwrap().to_string();
        for follower in &names[1..5] {
            let inbox = keys.inbox(follower);
            let mut copy = vec!["XADD", &*inbox, "*"];
            copy.extend(message);
            cluster.command(&copy);
            cluster.command(&["HSET", &keys.relayed(&inbox), "a", &outbox_id]);
        }
        // Two hosts in turn take a over.
        b.ensure_groups(&groups).await.unwrap();
        b.ensure_groups(&groups).await.unwrap();
        let reads: Vec<GroupRead> = groups.iter().map(|g| read(g)).collect();
        let got = b.read(&reads).await.unwrap();
        assert!(got[0].is_empty(), "a does not follow itself");
        for (follower, batch) in names[1..].iter().zip(&got[1..]) {
            assert_eq!(contents(batch), ["left over"], "{follower} has it once");
        }
        let stream = b.range(EntryId::ZERO, 10).await.unwrap();
        assert_eq!(contents(&stream), ["left over"], "the stream has it once");
        let left = cluster.command(&["XLEN", &outbox]);
        assert_eq!(left.trim(), ":0", "the outbox is emptied");
    });
}

#[test]
fn cleanup_and_inspect_find_a_run_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let scenario = write(dir.path(), "village.toml", SMALL_WORLD);
    let out = tempfile::tempdir().unwrap();
    let cluster_args = on_cluster(&url);
    run_ok(&scenario, out.path(), &cluster_args);
    let inspect = agora()
        .args(["inspect", "--stream", "village", "--redis-url", &url, "--json"])
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", text(&inspect.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(
        shown["groups"].as_array().unwrap().len(),
        64,
        "every agent's inbox group"
    );
    assert_eq!(shown["length"], 1092);
    assert_eq!(shown["outbox"]["entries"], 0, "a finished run relayed everything");
    // An entry a step committed and nobody relayed (the process died between the two).
    let outbox = "village:outbox:{citizen_1}";
    let added = cluster.command(&["XADD", outbox, "*", "relay", "message", "sender_id", "citizen_1"]);
    assert!(!added.starts_with('-'), "{added}");
    let inspect = agora()
        .args(["inspect", "--stream", "village", "--redis-url", &url])
        .output()
        .unwrap();
    assert!(
        text(&inspect.stdout)
            .contains("outbox        1 entry committed and not relayed yet, in 1 agent's outbox"),
        "{}",
        text(&inspect.stdout)
    );
    let cleanup = agora()
        .args(["cleanup", "--stream", "village", "--redis-url", &url])
        .output()
        .unwrap();
    assert!(cleanup.status.success(), "{}", text(&cleanup.stderr));
    assert_eq!(cluster.keys_per_node(), [0, 0, 0], "{}", text(&cleanup.stdout));
}

#[test]
fn a_cluster_taken_for_one_server_and_the_reverse_and_a_node_down_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), "village.toml", SMALL_WORLD);
    let out = tempfile::tempdir().unwrap();
    let mut cluster = RedisCluster::start();
    let plain = run(
        &scenario,
        out.path(),
        &["--backend", "redis", "--redis-url", &cluster.url()],
    );
    assert_eq!(plain.status.code(), Some(3));
    assert!(
        text(&plain.stderr).contains("backend.cluster = true"),
        "{}",
        text(&plain.stderr)
    );
    let server = RedisServer::start();
    let taken = run(&scenario, out.path(), &on_cluster(&server.url()));
    assert_eq!(taken.status.code(), Some(3));
    assert!(
        text(&taken.stderr).contains("is not a cluster node"),
        "{}",
        text(&taken.stderr)
    );
    let numbered_url = format!("{}/3", cluster.url());
    let numbered = run(&scenario, out.path(), &on_cluster(&numbered_url));
    assert_eq!(numbered.status.code(), Some(3));
    assert!(
        text(&numbered.stderr).contains("only database 0"),
        "{}",
        text(&numbered.stderr)
    );
    let url = cluster.url();
    let mut braced_args = on_cluster(&url);
    braced_args.extend(["--set", "backend.stream=vil{lage}"]);
    let braced = run(&scenario, out.path(), &braced_args);
    assert_eq!(braced.status.code(), Some(2));
    assert!(
        text(&braced.stderr).contains("hash tag"),
        "{}",
        text(&braced.stderr)
    );
    // A primary down: refused at the start, not waited for as a lost connection.
    cluster.nodes[2].kill();
    let down = run(&scenario, out.path(), &on_cluster(&cluster.url()));
    assert_eq!(down.status.code(), Some(3));
    let stderr = text(&down.stderr);
    assert!(
        stderr.contains("some of its slots have no working primary"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("Failed to connect").count(), 0, "{stderr}");
}
