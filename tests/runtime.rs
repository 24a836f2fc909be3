//! The runtime, through the library: determinism, each built-in behaviour's own rules, and
//! how failing behaviours and cache reads are handled.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agora::backend::Keys;
use agora::backend::memory::MemoryBackend;
use agora::runtime::{self, RunOptions, RunOutcome};
use agora::scenario::{self, Overrides, Scenario};
use agora::{Behaviour, BehaviourError, Context, Effects, Message, Outgoing, Registry, Setup};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use common::remote_cache::RemoteCache;

fn load(path_or_text: &str, sets: &[&str], out: &Path, registry: &Registry) -> Scenario {
    let mut overrides = Overrides::new();
    for s in sets {
        overrides.set(s).unwrap();
    }
    overrides.flag(
        "--out",
        "output.dir",
        toml::Value::String(out.display().to_string()),
    );
    let path = Path::new(path_or_text);
    if path.exists() {
        scenario::load(path, &[], &overrides, registry).unwrap()
    } else {
        scenario::load_str(
            Path::new("test.toml"),
            path_or_text.to_string(),
            &[],
            &overrides,
            registry,
        )
        .unwrap()
    }
}

/// A finished run and the directory its files are in (deleted when this is dropped).
struct Run {
    outcome: RunOutcome,
    lines: Vec<Value>,
    _dir: tempfile::TempDir,
}

/// Runs a scenario (a file or TOML text) on the memory backend.
fn run_with(path_or_text: &str, sets: &[&str], registry: &Registry) -> Run {
    run_with_options(path_or_text, sets, registry, &RunOptions::default())
}

fn run_with_options(path_or_text: &str, sets: &[&str], registry: &Registry, options: &RunOptions) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let scenario = load(path_or_text, sets, dir.path(), registry);
    let outcome = runtime::run(
        &scenario,
        options,
        std::future::pending(),
        Arc::new(runtime::Unobserved),
    )
    .unwrap();
    let lines = transcript(&outcome.transcript);
    Run {
        outcome,
        lines,
        _dir: dir,
    }
}

fn run(path_or_text: &str, sets: &[&str]) -> Run {
    run_with(path_or_text, sets, &Registry::builtin())
}

fn transcript(path: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The lockstep scenarios that plain agora runs (custom.toml needs the example's registry).
/// The lockstep scenarios plain agora runs with nothing but itself: not the custom
/// behaviour's, and not those of LLM agents (tests/llm.rs runs those, from their recordings).
fn lockstep_scenarios() -> Vec<String> {
    common::lockstep_scenarios()
        .into_iter()
        .filter(|p| !p.ends_with("custom.toml") && common::recording_of(p).is_none())
        .map(|p| p.display().to_string())
        .collect()
}

#[test]
fn agents_spread_over_threads_give_the_transcript_of_one_thread() {
    let on = |threads: usize, path: &str| {
        let options = RunOptions {
            agent_threads: Some(threads),
            ..RunOptions::default()
        };
        run_with_options(path, &[], &Registry::builtin(), &options)
    };
    for path in lockstep_scenarios() {
        let one = on(1, &path);
        let three = on(3, &path);
        assert!(!one.lines.is_empty(), "{path} published nothing");
        assert_eq!(
            one.outcome.summary.transcript_sha256, three.outcome.summary.transcript_sha256,
            "{path}"
        );
        assert_eq!(
            one.outcome.summary.deliveries, three.outcome.summary.deliveries,
            "{path}"
        );
    }
}

#[test]
fn lockstep_runs_repeat_byte_for_byte() {
    for path in lockstep_scenarios() {
        let Run {
            outcome: a,
            lines,
            _dir,
            ..
        } = run(&path, &[]);
        let Run { outcome: b, _dir, .. } = run(&path, &[]);
        assert!(!lines.is_empty(), "{path} published nothing");
        assert_eq!(a.summary.transcript_sha256, b.summary.transcript_sha256, "{path}");
        let Run { outcome: c, _dir, .. } = run(&path, &["scenario.seed=99"]);
        assert_ne!(
            a.summary.transcript_sha256, c.summary.transcript_sha256,
            "{path}: seed changed nothing"
        );
    }
}

#[test]
fn transcripts_are_sorted_and_numbered() {
    for path in lockstep_scenarios() {
        let Run {
            outcome, lines, _dir, ..
        } = run(&path, &[]);
        let keys: Vec<(u64, String, u64)> = lines
            .iter()
            .map(|l| {
                (
                    l["tick"].as_u64().unwrap(),
                    l["sender_id"].as_str().unwrap().to_string(),
                    l["seq"].as_u64().unwrap(),
                )
            })
            .collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "{path}: lines sorted by (tick, sender, seq)"
        );
        // Each sender counts from 1 without gaps.
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for (_, sender, seq) in &keys {
            let prev = last.insert(sender.clone(), *seq).unwrap_or(0);
            assert_eq!(*seq, prev + 1, "{path}: {sender}");
        }
        let s = &outcome.summary;
        assert_eq!(s.messages, lines.len() as u64);
        let sha = outcome.transcript.with_file_name("transcript.jsonl");
        let bytes = std::fs::read(sha).unwrap();
        use sha2::Digest;
        let digest: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(s.transcript_sha256, digest);
    }
}

#[test]
fn relay_publishes_tokens_times_hops() {
    for mode in ["lockstep", "free"] {
        let text = format!(
            "[scenario]\nname = \"r\"\nmode = \"{mode}\"\nticks = 100\n\
             [[agents]]\nid = \"r\"\ncount = 4\nbehaviour = \"relay\"\nparams = {{ tokens = 6, hops = 9 }}\n"
        );
        let Run {
            outcome, lines, _dir, ..
        } = run(&text, &[]);
        let s = &outcome.summary;
        assert_eq!(s.messages, 6 * 9, "{mode}");
        assert_eq!(s.deliveries, 6 * 9 * 4, "{mode}: every group reads every message");
        assert_eq!(s.stop_reason, "quiescent");
        let mut hops: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let token_hop = |l: &Value| {
            let words: Vec<u64> = l["content"]
                .as_str()
                .unwrap()
                .split(' ')
                .filter_map(|w| w.parse().ok())
                .collect();
            (words[0], words[1])
        };
        for l in &lines {
            let (token, hop) = token_hop(l);
            hops.entry(token).or_default().push(hop);
            // Each hop goes to the next agent in the ring.
            let from: u64 = l["sender_id"].as_str().unwrap()[2..].parse().unwrap();
            let to: u64 = l["to"].as_str().unwrap()[2..].parse().unwrap();
            assert_eq!(to, from % 4 + 1);
        }
        for (token, mut h) in hops {
            h.sort();
            assert_eq!(h, (1..=9).collect::<Vec<_>>(), "{mode}: token {token}");
        }
        // Token k starts at relay agent k mod N.
        let first: Vec<&str> = lines
            .iter()
            .filter(|l| token_hop(l).1 == 1)
            .map(|l| l["sender_id"].as_str().unwrap())
            .collect();
        let mut first_sorted = first.clone();
        first_sorted.sort();
        assert_eq!(first_sorted, ["r_1", "r_1", "r_2", "r_2", "r_3", "r_4"]);
    }
}

#[test]
fn gossip_never_informs_more_agents_than_exist() {
    for seed in 0..8 {
        let text = format!(
            "[scenario]\nname = \"g\"\nseed = {seed}\nticks = 40\n\
             [[agents]]\nid = \"g\"\ncount = 25\nbehaviour = \"gossip\"\nparams = {{ fanout = 3, seeds = 2 }}\n"
        );
        let Run {
            outcome, lines, _dir, ..
        } = run(&text, &[]);
        let informed = &outcome.summary.metrics["informed"];
        assert!(
            informed.total <= 25 && informed.total >= 2,
            "seed {seed}: {informed:?}"
        );
        assert!(informed.cumulative.windows(2).all(|w| w[0] <= w[1]));
        // Every agent tells at most once, to at most `fanout` distinct peers, never itself.
        let mut told: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut ticks: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
        for l in &lines {
            let (from, to) = (l["sender_id"].as_str().unwrap(), l["to"].as_str().unwrap());
            assert_ne!(from, to);
            assert!(told.entry(from).or_default().insert(to), "{from} told {to} twice");
            ticks.entry(from).or_default().insert(l["tick"].as_u64().unwrap());
        }
        assert!(told.values().all(|t| t.len() <= 3));
        assert!(ticks.values().all(|t| t.len() == 1), "each agent forwards once");
        // With p_forward = 1, everyone informed forwards: tellers = informed agents.
        assert_eq!(told.len() as i64, informed.total, "seed {seed}");
    }
}

#[test]
fn gossip_with_no_forwarding_stops_at_the_seeds() {
    let text = "[scenario]\nname = \"g\"\nticks = 10\n\
        [[agents]]\nid = \"g\"\ncount = 10\nbehaviour = \"gossip\"\nparams = { fanout = 2, p_forward = 0.0 }\n";
    let Run {
        outcome, lines, _dir, ..
    } = run(text, &[]);
    assert_eq!(lines.len(), 2, "only the seed tells");
    assert_eq!(outcome.summary.metrics["informed"].total, 3);
    assert_eq!(outcome.summary.stop_reason, "quiescent");
}

#[test]
fn opinions_stay_in_the_unit_interval_and_agree_when_all_are_near() {
    let Run { lines, _dir, .. } = run("scenarios/opinion.toml", &["agents.0.count=60"]);
    for l in &lines {
        let x = l["data"]["opinion"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&x), "{x}");
    }
    // With epsilon = 1 every agent hears every other: the spread shrinks tick by tick.
    let Run { lines, _dir, .. } = run(
        "scenarios/opinion.toml",
        &["agents.0.count=30", "agents.0.params.epsilon=1.0"],
    );
    let spread = |tick: u64| {
        let xs: Vec<f64> = lines
            .iter()
            .filter(|l| l["tick"] == tick)
            .map(|l| l["data"]["opinion"].as_f64().unwrap())
            .collect();
        assert_eq!(xs.len(), 30);
        xs.iter().cloned().fold(f64::MIN, f64::max) - xs.iter().cloned().fold(f64::MAX, f64::min)
    };
    assert!(spread(5) < spread(0) / 4.0, "{} then {}", spread(0), spread(5));
    assert!(spread(20) < 1e-3);
}

#[test]
fn discussion_posts_once_a_tick_and_the_addressee_speaks_next() {
    for policy in ["random", "round_robin", "echo"] {
        let Run { lines, _dir, .. } = run(
            "scenarios/discussion.toml",
            &[
                &format!("agents.0.params.policy={policy}"),
                &format!("agents.1.params.policy={policy}"),
            ],
        );
        assert_eq!(lines.len(), 25, "{policy}: one post per tick, ticks 0 to 24");
        for (tick, l) in lines.iter().enumerate() {
            assert_eq!(l["tick"], tick as u64);
            assert_ne!(l["to"], l["sender_id"], "nobody addresses themself");
        }
        for pair in lines.windows(2) {
            assert_eq!(pair[1]["sender_id"], pair[0]["to"], "{policy}");
            assert_eq!(pair[1]["data"]["replying_to"], pair[0]["sender_id"]);
        }
        assert_eq!(lines[0]["sender_id"], "moderator", "the first agent opens");
    }
    let Run { lines, _dir, .. } = run(
        "scenarios/discussion.toml",
        &[
            "agents.0.params.policy=round_robin",
            "agents.1.params.policy=round_robin",
        ],
    );
    let speakers: Vec<&str> = lines
        .iter()
        .take(8)
        .map(|l| l["sender_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        speakers,
        [
            "moderator",
            "member_1",
            "member_2",
            "member_3",
            "member_4",
            "member_5",
            "member_6",
            "moderator"
        ]
    );
}

/// A behaviour that reads the cache every way it can, to test the runtime's fetching.
struct Reader;

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

impl Behaviour for Reader {
    type State = u64;

    fn init(&self, _ctx: &mut Context<'_>) -> Result<u64, BehaviourError> {
        Ok(0)
    }

    fn on_start(&self, _state: &mut u64, ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        Ok(Effects::new()
            .remember(json!(format!("{} starts", ctx.agent())))
            .publish(Outgoing::broadcast("start")))
    }

    fn on_message(
        &self,
        heard: &mut u64,
        _msg: &Message,
        _ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        *heard += 1;
        Ok(Effects::none())
    }

    fn on_tick(&self, heard: &mut u64, ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        let own = ctx.own_last(2)?;
        let last = ctx.last(3)?;
        let sample = ctx.sample(2)?;
        let show = |entries: &[agora::backend::CacheEntry]| {
            entries
                .iter()
                .map(|e| format!("{}#{}", e.agent, e.n))
                .collect::<Vec<_>>()
                .join(",")
        };
        let text = format!(
            "heard {heard}; own {}; last {}; sample {}",
            show(&own),
            show(&last),
            show(&sample)
        );
        Ok(Effects::new()
            .remember(json!(text.clone()))
            .publish(Outgoing::broadcast(text)))
    }
}

fn reader_registry() -> Registry {
    let mut registry = Registry::builtin();
    registry.register("reader", "reads the cache", &[], |_: NoParams, _: &Setup<'_>| {
        Ok(Reader)
    });
    registry
}

const READERS: &str = "[scenario]\nname = \"readers\"\nseed = 11\nticks = 6\n\
    [[agents]]\nid = \"r\"\ncount = 5\nbehaviour = \"reader\"\n";

#[test]
fn cache_reads_see_the_previous_tick_and_replays_change_nothing() {
    let registry = reader_registry();
    let dir = tempfile::tempdir().unwrap();
    let scenario = load(READERS, &[], dir.path(), &registry);
    let options = RunOptions::default();
    let keys = Keys::for_stream("readers");
    let direct = common::block_on(runtime::run_on(
        MemoryBackend::new(keys.clone()),
        &scenario,
        &options,
        std::future::pending(),
        Arc::new(runtime::Unobserved),
    ))
    .unwrap();
    let direct_lines = std::fs::read_to_string(&direct.transcript).unwrap();
    let fetched = common::block_on(runtime::run_on(
        RemoteCache(MemoryBackend::new(keys)),
        &scenario,
        &options,
        std::future::pending(),
        Arc::new(runtime::Unobserved),
    ))
    .unwrap();
    let fetched_lines = std::fs::read_to_string(&fetched.transcript).unwrap();
    assert_eq!(
        direct_lines, fetched_lines,
        "fetch-and-replay must not change the transcript"
    );

    let lines: Vec<Value> = direct_lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Tick 1 reads what tick 0 wrote: each agent's own start entry, the last 3 of 5 starts.
    let r1 = lines
        .iter()
        .find(|l| l["tick"] == 1 && l["sender_id"] == "r_1")
        .unwrap();
    assert_eq!(
        r1["content"],
        "heard 4; own r_1#1; last r_3#1,r_4#1,r_5#1; sample r_2#1,r_1#1"
    );
    // Tick 2 sees tick 1's writes, never its own tick's (other than its own).
    let r3 = lines
        .iter()
        .find(|l| l["tick"] == 2 && l["sender_id"] == "r_3")
        .unwrap();
    let content = r3["content"].as_str().unwrap();
    assert!(
        content.starts_with("heard 8; own r_3#1,r_3#2; last r_3#2,r_4#2,r_5#2"),
        "{content}"
    );
}

/// Panics on one message, for one agent: f_2 on f_3's, in the middle of its batch.
struct Fragile;

impl Behaviour for Fragile {
    type State = Vec<String>;

    fn init(&self, _ctx: &mut Context<'_>) -> Result<Vec<String>, BehaviourError> {
        Ok(Vec::new())
    }

    fn on_start(&self, _state: &mut Vec<String>, ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        let said = if ctx.peer_index() == 2 {
            "poison".to_string()
        } else {
            format!("hello from {}", ctx.agent())
        };
        Ok(Effects::new().publish(Outgoing::broadcast(said)))
    }

    fn on_message(
        &self,
        heard: &mut Vec<String>,
        msg: &Message,
        ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        heard.push(msg.content.clone());
        if msg.content == "poison" && ctx.agent() == "f_2" {
            panic!("cannot digest {}", msg.content);
        }
        Ok(Effects::new().remember(json!(msg.content)))
    }
}

/// Four agents of `behaviour` (f_3 says poison) for 3 ticks, with 2 retries.
fn run_fragile<B: Behaviour>(behaviour: fn() -> B) -> Run {
    let mut registry = Registry::builtin();
    registry.register(
        "fragile",
        "panics on poison",
        &[],
        move |_: NoParams, _: &Setup<'_>| Ok(behaviour()),
    );
    let text = "[scenario]\nname = \"fragile\"\nticks = 3\nmax_retries = 2\n\
        [[agents]]\nid = \"f\"\ncount = 4\nbehaviour = \"fragile\"\n";
    run_with(text, &[], &registry)
}

#[test]
fn a_panicking_behaviour_dead_letters_the_message_and_the_rest_goes_on() {
    let Run {
        outcome, lines, _dir, ..
    } = run_fragile(|| Fragile);
    let s = &outcome.summary;
    assert_eq!(s.dead_letters, 1);
    assert_eq!(s.behaviour_failures, 1);
    assert_eq!(lines.len(), 4);
    // Each agent hears the 3 others; f_2 handles all but the poison.
    assert_eq!(s.handled, 4 * 3 - 1);
    assert_eq!(s.deliveries, 16);
    let dead = std::fs::read_to_string(outcome.dead_letters_path.unwrap()).unwrap();
    let dead: Value = serde_json::from_str(dead.trim()).unwrap();
    assert_eq!(dead["agent"], "f_2");
    assert_eq!(dead["content"], "poison");
    assert!(
        dead["reason"]
            .as_str()
            .unwrap()
            .contains("failed 3 times: panicked: cannot digest poison"),
        "{dead}"
    );
}

/// `Fragile` taking its messages as batches: a poison message fails the whole batch.
struct FragileBatches;

impl Behaviour for FragileBatches {
    type State = Vec<String>;
    const HANDLES_BATCHES: bool = true;

    fn init(&self, ctx: &mut Context<'_>) -> Result<Vec<String>, BehaviourError> {
        Fragile.init(ctx)
    }

    fn on_start(&self, state: &mut Vec<String>, ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        Fragile.on_start(state, ctx)
    }

    fn on_message(
        &self,
        heard: &mut Vec<String>,
        msg: &Message,
        ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        Fragile.on_message(heard, msg, ctx)
    }
}

#[test]
fn a_batch_that_keeps_failing_dead_letters_all_its_messages_and_the_rest_goes_on() {
    let Run {
        outcome, lines, _dir, ..
    } = run_fragile(|| FragileBatches);
    let s = &outcome.summary;
    // f_2's batch of 3 (f_3's poison among them) failed 3 times: all 3 given up on.
    assert_eq!(s.dead_letters, 3);
    assert_eq!(s.behaviour_failures, 3);
    assert_eq!(lines.len(), 4);
    assert_eq!(s.handled, 4 * 3 - 3);
    assert_eq!(s.deliveries, 16);
    let dead = std::fs::read_to_string(outcome.dead_letters_path.unwrap()).unwrap();
    let dead: Vec<Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut contents: Vec<&str> = dead.iter().map(|d| d["content"].as_str().unwrap()).collect();
    contents.sort_unstable();
    assert_eq!(contents, ["hello from f_1", "hello from f_4", "poison"]);
    for d in &dead {
        assert_eq!(d["agent"], "f_2");
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.contains("failed 3 times: panicked: cannot digest poison"),
            "{reason}"
        );
    }
}

/// Counts every message it hears under the name of a metric every run records itself.
struct Shadowing;

impl Behaviour for Shadowing {
    type State = ();

    fn init(&self, _ctx: &mut Context<'_>) -> Result<(), BehaviourError> {
        Ok(())
    }

    fn on_start(&self, _state: &mut (), ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        Ok(Effects::new().publish(Outgoing::broadcast(format!("hello from {}", ctx.agent()))))
    }

    fn on_message(
        &self,
        _state: &mut (),
        _msg: &Message,
        _ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        Ok(Effects::new().count("deliveries", 1))
    }
}

#[test]
fn a_metric_named_like_the_runs_own_fails_the_message_instead_of_doubling_its_row() {
    let Run { outcome, _dir, .. } = run_fragile(|| Shadowing);
    let s = &outcome.summary;
    // Every message (3 heard by each of 4 agents) fails 3 times and is given up on.
    assert_eq!(s.dead_letters, 12);
    let dead = std::fs::read_to_string(outcome.dead_letters_path.unwrap()).unwrap();
    assert!(
        dead.lines()
            .all(|l| l.contains("a metric named \\\"deliveries\\\", which every run records itself")),
        "{dead}"
    );
    // metrics.csv has the run's own row once a tick, and no other.
    let metrics = std::fs::read_to_string(outcome.run_dir.join("metrics.csv")).unwrap();
    assert_eq!(
        metrics.lines().filter(|l| l.starts_with("1,deliveries,")).count(),
        1,
        "{metrics}"
    );

    // A model reporter of such a name is left out; the others are kept.
    let Run { outcome, _dir, .. } = run_fragile(|| ShadowingReporter);
    let metrics = std::fs::read_to_string(outcome.run_dir.join("metrics.csv")).unwrap();
    assert_eq!(
        metrics.lines().filter(|l| l.starts_with("1,seconds,")).count(),
        1,
        "{metrics}"
    );
    assert!(metrics.contains("1,agents_reporting,4\n"), "{metrics}");
}

/// Each agent reports a value every tick; the table's model reporters name one `seconds`.
struct ShadowingReporter;

impl Behaviour for ShadowingReporter {
    type State = ();

    fn init(&self, _ctx: &mut Context<'_>) -> Result<(), BehaviourError> {
        Ok(())
    }

    fn on_tick(&self, _state: &mut (), _ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        // Publishing keeps the lockstep run going.
        Ok(Effects::new()
            .report("x", 1.0)
            .publish(Outgoing::broadcast("tick")))
    }

    fn on_start(&self, state: &mut (), ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        self.on_tick(state, ctx)
    }

    fn on_message(
        &self,
        _state: &mut (),
        _msg: &Message,
        _ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        Ok(Effects::none())
    }

    fn model_reporters(&self, values: &BTreeMap<String, Vec<f64>>) -> Vec<(String, f64)> {
        let reporting = values.get("x").map_or(0, Vec::len) as f64;
        vec![("seconds".into(), 99.0), ("agents_reporting".into(), reporting)]
    }
}

#[test]
fn budgets_stop_runs() {
    let Run {
        outcome, lines, _dir, ..
    } = run("scenarios/opinion.toml", &["scenario.max_messages=500"]);
    assert_eq!(outcome.summary.stop_reason, "budget");
    // 200 agents publish every tick: the budget is reached at the end of tick 2.
    assert_eq!(lines.len(), 600);
    let Run { outcome, _dir, .. } = run(
        "scenarios/w1.toml",
        &["scenario.max_messages=1000", "agents.0.params.hops=100000"],
    );
    assert_eq!(outcome.summary.stop_reason, "budget");
    assert!(outcome.summary.messages >= 1000);
}

#[test]
fn free_mode_stops_at_its_duration() {
    let Run { outcome, _dir, .. } = run(
        "scenarios/w1.toml",
        &[
            "scenario.duration=300ms",
            "agents.0.params.hops=100000000",
            "scenario.max_messages=100000000000",
        ],
    );
    let s = &outcome.summary;
    assert_eq!(s.stop_reason, "duration");
    assert!(s.elapsed_s >= 0.3, "{}", s.elapsed_s);
    assert!(s.messages > 0);
    assert_eq!(s.ticks, None);
}

/// Free mode on the embedded backend reads for each thread's agents on that thread: however
/// many threads, every token makes every hop, every agent reads every message, and the run
/// ends quiescent with nothing lost.
#[test]
fn free_mode_agents_on_several_threads_relay_every_token() {
    let on = |threads: usize| {
        let options = RunOptions {
            agent_threads: Some(threads),
            ..RunOptions::default()
        };
        let sets = [
            "agents.0.count=7",
            "agents.0.params.tokens=30",
            "agents.0.params.hops=40",
        ];
        run_with_options("scenarios/w1.toml", &sets, &Registry::builtin(), &options)
    };
    // Who sent what to whom; the senders' counters depend on the order steps ran in.
    let sent = |run: &Run| -> Vec<(String, String, String)> {
        let mut sent: Vec<_> = run
            .lines
            .iter()
            .map(|l| {
                let field = |k: &str| l[k].as_str().unwrap_or_default().to_string();
                (field("sender_id"), field("to"), field("content"))
            })
            .collect();
        sent.sort();
        sent
    };
    let one = on(1);
    for threads in [2, 3] {
        let many = on(threads);
        let s = &many.outcome.summary;
        assert_eq!(s.stop_reason, "quiescent", "{threads} threads");
        assert!(
            many.outcome.error.is_none(),
            "{threads} threads: {:?}",
            many.outcome.error
        );
        assert_eq!(s.messages, 30 * 40, "{threads} threads");
        assert_eq!(s.deliveries, 30 * 40 * 7, "{threads} threads");
        assert_eq!(sent(&many), sent(&one), "{threads} threads");
    }
    assert_eq!(one.outcome.summary.messages, 30 * 40);
}

/// Remembers who each message came from as its own type, and says what its own cache holds.
struct Noting {
    /// Remembers something serde_json cannot write for messages from this agent.
    refuse_from: Option<&'static str>,
}

#[derive(Serialize)]
struct Note {
    from: String,
}

impl Behaviour for Noting {
    type State = ();

    fn init(&self, _ctx: &mut Context<'_>) -> Result<(), BehaviourError> {
        Ok(())
    }

    fn on_start(&self, _state: &mut (), ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        Ok(Effects::new().publish(Outgoing::broadcast(format!("hello from {}", ctx.agent()))))
    }

    fn on_message(
        &self,
        _state: &mut (),
        msg: &Message,
        ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        if self.refuse_from == Some(&*msg.sender_id) {
            let keyed_by_lists = BTreeMap::from([(vec![1u8], 1u8)]);
            return Ok(Effects::new().remember_as(&keyed_by_lists));
        }
        // A read in the same step sees the entries written before it, typed ones too.
        let before = ctx.own_last(1)?;
        let note = Note {
            from: msg.sender_id.to_string(),
        };
        let effects = Effects::new().remember_as(&note);
        match before.first() {
            Some(e) => Ok(effects.publish(Outgoing::broadcast(format!("read {}", e.value)))),
            None => Ok(effects),
        }
    }
}

#[test]
fn values_remembered_as_a_behaviours_own_type_are_read_and_kept_as_json() {
    let Run {
        outcome, lines, _dir, ..
    } = run_fragile(|| Noting { refuse_from: None });
    assert_eq!(outcome.summary.dead_letters, 0);
    let cache = std::fs::read_to_string(outcome.run_dir.join("cache.jsonl")).unwrap();
    let values: Vec<Value> = cache
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["value"].clone())
        .collect();
    assert!(!values.is_empty());
    assert!(
        values
            .iter()
            .all(|v| v["from"].as_str().is_some_and(|f| f.starts_with("f_"))),
        "{cache}"
    );
    assert!(cache.contains(r#""value":{"from":"f_"#), "{cache}");
    // Each agent's second and third message of the first tick read back the note it wrote
    // for the one before (in the same step), as JSON; later ones read committed notes.
    let reads: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["content"].as_str())
        .filter(|c| c.starts_with("read "))
        .collect();
    assert!(reads.len() >= 4 * 2, "{lines:?}");
    assert!(
        reads.iter().all(|c| c.starts_with(r#"read {"from":"f_"#)),
        "{reads:?}"
    );
}

#[test]
fn a_value_that_cannot_be_written_as_json_fails_the_message_with_serde_jsons_words() {
    let Run { outcome, _dir, .. } = run_fragile(|| Noting {
        refuse_from: Some("f_2"),
    });
    assert!(outcome.summary.dead_letters >= 3, "{:?}", outcome.summary);
    let dead = std::fs::read_to_string(outcome.dead_letters_path.unwrap()).unwrap();
    for line in dead.lines() {
        let d: Value = serde_json::from_str(line).unwrap();
        assert_eq!(d["sender_id"], "f_2", "{line}");
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.contains("cannot be written as JSON: key must be a string"),
            "{reason}"
        );
    }
}
