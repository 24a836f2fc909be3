//! What a run records for analysis (CONTRACT.md, "Metrics, plots and sweeps"): `metrics.csv`
//! and `agents.csv` checked against the transcript and the summary, the same after a kill and
//! a resume, and in free mode.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Output, Stdio};

use common::redis_server::RedisServer;
use common::{agora, run_dir_under, text, transcript_hash};
use serde_json::Value;

fn run(scenario: &str, out: &Path, extra: &[&str]) -> Output {
    let output = agora()
        .arg("run")
        .arg(scenario)
        .arg("--quiet")
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(output.status.success(), "{scenario}: {}", text(&output.stderr));
    output
}

/// A CSV file as rows of strings, the header first.
fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

fn transcript(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("transcript.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn summary(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// `metrics.csv` as (tick, name) -> value.
fn metrics(dir: &Path) -> BTreeMap<(u64, String), String> {
    let rows = csv_rows(&dir.join("metrics.csv"));
    assert_eq!(rows[0], ["tick", "name", "value"]);
    rows[1..]
        .iter()
        .map(|r| ((r[0].parse().unwrap(), r[1].clone()), r[2].clone()))
        .collect()
}

const OPINION: &[&str] = &["--set", "agents.0.count=40", "--set", "scenario.ticks=12"];

#[test]
fn opinion_csvs_agree_with_the_transcript_and_the_summary() {
    let out = tempfile::tempdir().unwrap();
    run("scenarios/opinion.toml", out.path(), OPINION);
    let dir = run_dir_under(out.path());
    let lines = transcript(&dir);

    // agents.csv at tick t: exactly the opinion each agent published at tick t.
    let rows = csv_rows(&dir.join("agents.csv"));
    assert_eq!(rows[0], ["tick", "agent", "name", "value"]);
    assert_eq!(
        rows.len() - 1,
        40 * 13,
        "one row per agent per tick, ticks 0 to 12"
    );
    let published: BTreeMap<(u64, String), f64> = lines
        .iter()
        .map(|l| {
            (
                (
                    l["tick"].as_u64().unwrap(),
                    l["sender_id"].as_str().unwrap().to_string(),
                ),
                l["data"]["opinion"].as_f64().unwrap(),
            )
        })
        .collect();
    for row in &rows[1..] {
        assert_eq!(row[2], "opinion");
        let key = (row[0].parse::<u64>().unwrap(), row[1].clone());
        let value: f64 = row[3].parse().unwrap();
        assert_eq!(Some(&value), published.get(&key), "{row:?}");
    }
    // Agents in declaration order within a tick.
    assert_eq!(rows[1][1], "citizen_1");
    assert_eq!(rows[2][1], "citizen_2");

    // metrics.csv: messages and deliveries per tick add up to the transcript and the summary.
    let m = metrics(&dir);
    let s = summary(&dir);
    let mut deliveries = 0;
    for tick in 0..=12u64 {
        let in_transcript = lines.iter().filter(|l| l["tick"] == tick).count();
        assert_eq!(
            m[&(tick, "messages".into())],
            in_transcript.to_string(),
            "tick {tick}"
        );
        deliveries += m[&(tick, "deliveries".into())].parse::<u64>().unwrap();
        let seconds: f64 = m[&(tick, "seconds".into())].parse().unwrap();
        assert!(seconds > 0.0);
        let clusters: f64 = m[&(tick, "clusters".into())].parse().unwrap();
        assert!((1.0..=40.0).contains(&clusters));
    }
    assert_eq!(deliveries, s["deliveries"].as_u64().unwrap());
    // summary.json: one entry per tick in every per-tick array.
    assert_eq!(s["tick_seconds"].as_array().unwrap().len(), 13);
    let clusters = &s["levels"]["clusters"];
    assert_eq!(clusters["per_tick"].as_array().unwrap().len(), 13);
    assert_eq!(
        clusters["last"].as_f64().unwrap().to_string(),
        m[&(12, "clusters".into())]
    );
}

#[test]
fn gossip_counts_and_flags_agree() {
    let out = tempfile::tempdir().unwrap();
    run("scenarios/gossip.toml", out.path(), &[]);
    let dir = run_dir_under(out.path());
    let s = summary(&dir);
    let ticks = s["ticks"].as_u64().unwrap();
    let informed = &s["metrics"]["informed"];
    assert_eq!(informed["per_tick"].as_array().unwrap().len() as u64, ticks + 1);
    let m = metrics(&dir);
    for tick in 0..=ticks {
        assert_eq!(
            m[&(tick, "informed".into())],
            informed["per_tick"][tick as usize].to_string(),
            "tick {tick}"
        );
    }
    // Each agent's flag: 0 or 1 at the start, then 1 the tick it learnt the rumor.
    let rows = csv_rows(&dir.join("agents.csv"));
    let became: Vec<u64> = rows[1..]
        .iter()
        .filter(|r| r[3] == "1" || r[3] == "1.0")
        .map(|r| r[0].parse().unwrap())
        .collect();
    let total: i64 = informed["total"].as_i64().unwrap();
    assert_eq!(became.len() as i64, total, "one flag per informed agent");
    for tick in 0..=ticks {
        let counted: i64 = informed["per_tick"][tick as usize].as_i64().unwrap();
        assert_eq!(
            became.iter().filter(|&&t| t == tick).count() as i64,
            counted,
            "tick {tick}"
        );
    }
}

#[test]
fn free_mode_records_whole_seconds() {
    let out = tempfile::tempdir().unwrap();
    let free = [
        "--set",
        "scenario.mode=free",
        "--set",
        "agents.0.params.hops=2000",
    ];
    run("scenarios/relay.toml", out.path(), &free);
    let dir = run_dir_under(out.path());
    let m = metrics(&dir);
    let published: u64 = m
        .iter()
        .filter(|((_, name), _)| name == "messages")
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum();
    assert_eq!(published, summary(&dir)["messages"].as_u64().unwrap());
    assert!(m.keys().all(|(_, name)| name != "seconds"));
}

/// The CSVs without the wall-clock rows, which no two runs share.
fn without_seconds(dir: &Path) -> (String, String) {
    let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let metrics = metrics
        .lines()
        .filter(|l| !l.contains(",seconds,"))
        .collect::<Vec<_>>()
        .join("\n");
    (metrics, std::fs::read_to_string(dir.join("agents.csv")).unwrap())
}

#[test]
fn a_killed_and_resumed_run_writes_the_csvs_of_an_uninterrupted_one() {
    let longer = ["--set", "agents.0.count=200", "--set", "scenario.ticks=30"];
    let whole = tempfile::tempdir().unwrap();
    run("scenarios/opinion.toml", whole.path(), &longer);
    let expected = without_seconds(&run_dir_under(whole.path()));

    let redis = RedisServer::start();
    let url = redis.url();
    let on_redis = [&longer[..], &["--backend", "redis", "--redis-url", &url]].concat();
    let out = tempfile::tempdir().unwrap();
    let mut child = agora()
        .arg("run")
        .arg("scenarios/opinion.toml")
        .args(["--quiet", "--out"])
        .arg(out.path())
        .args(&on_redis)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for_tick(&redis, "opinion", 10);
    child.kill().unwrap();
    child.wait().unwrap();
    let dir = run_dir_under(out.path());
    let (cut, _) = without_seconds(&dir);
    assert!(cut.len() < expected.0.len(), "the kill came before the end");
    run(
        "scenarios/opinion.toml",
        out.path(),
        &[&on_redis[..], &["--resume"]].concat(),
    );
    assert!(without_seconds(&dir) == expected, "the resumed run's CSVs differ");
}

/// A PNG's width and height, from its IHDR chunk (after checking the signature).
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

fn check_svg(path: &Path) {
    let svg = std::fs::read_to_string(path).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{}",
        path.display()
    );
    assert!(
        svg.contains(r#"width="1200""#) && svg.contains(r#"height="750""#),
        "{}",
        path.display()
    );
}

#[test]
fn plots_are_drawn_with_the_run_and_again_by_agora_plot() {
    let out = tempfile::tempdir().unwrap();
    let stdout = text(&run("scenarios/opinion.toml", out.path(), OPINION).stdout);
    assert!(
        stdout.lines().last().unwrap().starts_with("transcript sha256: "),
        "{stdout}"
    );
    let dir = run_dir_under(out.path());
    let plots = dir.join("plots");
    for stem in ["agents-opinion", "clusters", "messages", "deliveries", "seconds"] {
        assert_eq!(
            png_size(&plots.join(format!("{stem}.png"))),
            (1200, 750),
            "{stem}"
        );
        check_svg(&plots.join(format!("{stem}.svg")));
    }
    let svg = std::fs::read_to_string(plots.join("agents-opinion.svg")).unwrap();
    assert!(
        svg.contains("opinion, seed 7") && svg.contains("epsilon=0.2"),
        "titled with the scenario, seed and parameters"
    );

    std::fs::remove_dir_all(&plots).unwrap();
    let output = agora().arg("plot").arg(&dir).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(png_size(&plots.join("agents-opinion.png")), (1200, 750));

    let bare = tempfile::tempdir().unwrap();
    run(
        "scenarios/opinion.toml",
        bare.path(),
        &[OPINION, &["--no-plots"]].concat(),
    );
    assert!(!run_dir_under(bare.path()).join("plots").exists());

    let output = agora().arg("plot").arg(bare.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "not a run's folder");
    assert!(
        text(&output.stderr).contains("metrics.csv"),
        "{}",
        text(&output.stderr)
    );
    // A file of the run given for the run: its folder is named.
    let summary = run_dir_under(bare.path()).join("summary.json");
    let output = agora().arg("plot").arg(&summary).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains(&format!(
            "is a file: give the run's folder, such as {}",
            run_dir_under(bare.path()).display()
        )),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn agent_values_can_be_left_out() {
    let (with, without) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = run(
        "scenarios/opinion.toml",
        with.path(),
        &[OPINION, &["--no-plots"]].concat(),
    );
    let b = run(
        "scenarios/opinion.toml",
        without.path(),
        &[OPINION, &["--no-plots", "--set", "output.agent_values=false"]].concat(),
    );
    assert_eq!(
        transcript_hash(&a),
        transcript_hash(&b),
        "the transcript does not change"
    );
    let agents = std::fs::read_to_string(run_dir_under(without.path()).join("agents.csv")).unwrap();
    assert_eq!(agents, "tick,agent,name,value\n");
    assert!(
        !metrics(&run_dir_under(without.path()))
            .keys()
            .any(|(_, n)| n == "clusters")
    );
}

#[test]
fn what_agents_remembered_and_ended_as_is_written_with_the_run() {
    let out = tempfile::tempdir().unwrap();
    run("scenarios/discussion.toml", out.path(), &["--no-plots"]);
    let dir = run_dir_under(out.path());
    let posts = transcript(&dir).len();
    let cache: Vec<Value> = std::fs::read_to_string(dir.join("cache.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Every post is remembered once, by its author, in the cache's order (tick, then bytes).
    assert_eq!(cache.len(), posts);
    assert!(
        cache
            .windows(2)
            .all(|w| w[0]["tick"].as_u64() <= w[1]["tick"].as_u64())
    );
    assert!(
        cache.iter().all(|e| e["value"]["author"] == e["agent"]),
        "{cache:?}"
    );
    let states: Vec<Value> = std::fs::read_to_string(dir.join("states.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let s = summary(&dir);
    assert_eq!(states.len() as u64, s["agents"].as_u64().unwrap());
    let posted: u64 = states
        .iter()
        .map(|st| st["state"]["posts"].as_u64().unwrap())
        .sum();
    assert_eq!(
        posted as usize, posts,
        "each agent's final state counts its posts"
    );
}

#[test]
fn relay_counts_the_tokens_in_flight() {
    let out = tempfile::tempdir().unwrap();
    run("scenarios/relay.toml", out.path(), &["--no-plots"]);
    let dir = run_dir_under(out.path());
    let s = summary(&dir);
    let in_flight = &s["metrics"]["in_flight"];
    let running: Vec<i64> = in_flight["cumulative"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    // scenarios/relay.toml: 3 tokens start at tick 0, each is published 20 times, one hop a
    // tick, so all three are in flight until the last hop.
    assert_eq!(running[0], 3);
    assert_eq!(*running.last().unwrap(), 0, "{running:?}");
    let lines = transcript(&dir);
    for (tick, &n) in running.iter().enumerate() {
        let published = lines.iter().filter(|l| l["tick"] == tick as u64).count() as i64;
        assert_eq!(n, published.min(3), "tick {tick}: {running:?}");
    }
}
