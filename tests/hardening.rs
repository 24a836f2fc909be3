//! Bad input at its limits: every case is refused with one clear `error:` line and exit code
//! 2 (or runs within a documented limit), never a panic or a hang. A property test feeds the
//! loader random documents.

mod common;

use common::agora;

use std::path::Path;

use agora::Registry;
use agora::scenario::{self, Overrides};
use proptest::prelude::*;

const BASE: &str =
    "[scenario]\nname = \"x\"\nticks = 3\n\n[[agents]]\nid = \"a\"\ncount = 3\nbehaviour = \"gossip\"\n";

/// Runs `agora run` on `scenario` (bytes) with `args`; checks the refusal; returns stderr.
fn refused(scenario: &[u8], args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(&path, scenario).unwrap();
    let output = agora()
        .arg("run")
        .arg(&path)
        .args(["--quiet", "--out"])
        .arg(dir.path())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines[0].starts_with("error: ") && lines.len() <= 2, "{stderr}");
    assert!(lines.len() == 1 || lines[1].starts_with("hint: "), "{stderr}");
    assert!(lines[0].len() < 400, "error lines stay short: {}", lines[0].len());
    assert!(!stderr.contains("panicked"));
    stderr
}

#[test]
fn limits_and_extremes_are_refused_clearly() {
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (
            BASE.replace("count = 3", "count = 100000000000"),
            vec![],
            "the limit is 100000",
        ),
        (
            BASE.replace("ticks = 3", "ticks = 0"),
            vec![],
            "scenario.ticks: must be between 1 and",
        ),
        (
            BASE.replace("ticks = 3", "ticks = 100000000001"),
            vec![],
            "scenario.ticks: must be between 1 and",
        ),
        (
            BASE.replace("ticks = 3", "ticks = 3\nmax_messages = 0"),
            vec![],
            "scenario.max_messages",
        ),
        (
            BASE.replace("ticks = 3", "ticks = 3\nmax_retries = 1000"),
            vec![],
            "scenario.max_retries",
        ),
        (
            format!("{BASE}params = {{ p_forward = nan }}\n"),
            vec![],
            "got NaN",
        ),
        (
            format!("{BASE}params = {{ p_forward = inf }}\n"),
            vec![],
            "got inf",
        ),
        (
            format!("{BASE}params = {{ fanout = -1 }}\n"),
            vec![],
            "agents[0].params.fanout",
        ),
        (
            BASE.replace("\"gossip\"", "\"opinion\"") + "params = { epsilon = -inf }\n",
            vec![],
            "`epsilon` must be a finite number",
        ),
        (
            format!("{BASE}params = {{ rumor = \"{}\" }}\n", "r".repeat(100_000)),
            vec![],
            "limited to 64 KiB",
        ),
        (
            BASE.to_string(),
            vec!["--set", "scenario.ticks=1e400"],
            "scenario.ticks",
        ),
        (
            BASE.to_string(),
            vec!["--set", "scenario.seed=-1"],
            "scenario.seed",
        ),
        (
            BASE.to_string(),
            vec![
                "--set",
                &*Box::leak(format!("scenario.name={}", "n".repeat(100_000)).into_boxed_str()),
            ],
            "is not a valid name",
        ),
        (
            BASE.replace("ticks = 3", "ticks = 3\nseed = 99999999999999999999"),
            vec![],
            "scenario.seed",
        ),
        (
            format!("{BASE}[backend]\nstream = \"other:dead\"\n"),
            vec![],
            "backend.stream",
        ),
        (
            format!("{BASE}[backend]\nstream = \"x:cache:y\"\n"),
            vec![],
            "backend.stream",
        ),
        (
            format!("{BASE}[backend]\nstream = \"has space\"\n"),
            vec![],
            "backend.stream",
        ),
        (
            format!("{BASE}[backend]\nclaim_idle = \"-5s\"\n"),
            vec![],
            "backend.claim_idle",
        ),
        (
            format!("{BASE}[backend]\nreconnect_timeout = \"1000000h\"\n"),
            vec![],
            "backend.reconnect_timeout",
        ),
        (
            BASE.replace("ticks = 3", "mode = \"free\"\nduration = \"0s\""),
            vec![],
            "scenario.duration",
        ),
    ];
    for (scenario, args, expected) in cases {
        let stderr = refused(scenario.as_bytes(), &args);
        assert!(stderr.contains(expected), "expected {expected:?} in {stderr}");
    }
}

#[test]
fn deep_nesting_and_strange_bytes_are_refused() {
    let deep_arrays = format!(
        "{BASE}params = {{ x = {}{} }}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert!(refused(deep_arrays.as_bytes(), &[]).contains("recursion"));
    let deep_tables = format!(
        "{BASE}params = {{ x = {}1{} }}\n",
        "{a=".repeat(3000),
        "}".repeat(3000)
    );
    assert!(refused(deep_tables.as_bytes(), &[]).contains("recursion"));
    let mut binary = BASE.as_bytes().to_vec();
    binary.extend_from_slice(&[0xff, 0xfe, 0x00, 0x80]);
    assert!(refused(&binary, &[]).contains("not valid UTF-8"));
    assert!(refused(b"", &[]).contains("missing field `scenario`"));
    let huge = vec![b'#'; 2 << 20];
    assert!(refused(&huge, &[]).contains("limited to 1048576 bytes"));
    assert!(refused(b"\0\0\0", &[]).contains("s.toml:1"));
}

#[test]
fn a_stream_name_that_is_someone_elses_key_is_refused() {
    let server = common::redis_server::RedisServer::start();
    server.command(&["SET", "x", "someone else's"]);
    server.command(&["HSET", "x:cache:a_1", "f", "v"]);
    let stderr = refused(
        BASE.as_bytes(),
        &["--backend", "redis", "--redis-url", &server.url()],
    );
    assert!(stderr.contains("key \"x\" already holds a string"), "{stderr}");
    assert!(stderr.contains("backend.stream"), "{stderr}");
    assert_eq!(
        server.command(&["GET", "x"]).lines().nth(1),
        Some("someone else's")
    );
    server.command(&["DEL", "x"]);
    let stderr = refused(
        BASE.as_bytes(),
        &["--backend", "redis", "--redis-url", &server.url()],
    );
    assert!(
        stderr.contains("x:cache:a_1") && stderr.contains("hash"),
        "{stderr}"
    );
}

/// Keys and values a scenario document is made of, to build random ones from.
fn document() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        Just("[scenario]"),
        Just("[backend]"),
        Just("[[agents]]"),
        Just("[output]"),
        Just("[agents]"),
        Just("[scenario.x]"),
        Just("[[scenario]]"),
    ];
    let key = prop_oneof![
        Just("name".to_string()),
        Just("seed".to_string()),
        Just("mode".to_string()),
        Just("ticks".to_string()),
        Just("duration".to_string()),
        Just("max_messages".to_string()),
        Just("max_retries".to_string()),
        Just("kind".to_string()),
        Just("url".to_string()),
        Just("stream".to_string()),
        Just("cleanup".to_string()),
        Just("maxlen".to_string()),
        Just("id".to_string()),
        Just("count".to_string()),
        Just("behaviour".to_string()),
        Just("params".to_string()),
        Just("dir".to_string()),
        Just("fanout".to_string()),
        "[a-z_]{1,8}",
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        Just("true".to_string()),
        Just("\"relay\"".to_string()),
        Just("\"gossip\"".to_string()),
        Just("\"lockstep\"".to_string()),
        Just("\"free\"".to_string()),
        Just("\"redis\"".to_string()),
        Just("\"10s\"".to_string()),
        Just("{ fanout = 2, p_forward = 0.5 }".to_string()),
        Just("[1, 2, [3]]".to_string()),
        "\"[ -~]{0,20}\"",
        "[ -~]{0,12}",
    ];
    let line = prop_oneof![
        section.prop_map(str::to_string),
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        "[ -~]{0,30}",
    ];
    prop::collection::vec(line, 0..25).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_loader_never_panics(doc in document(), sets in prop::collection::vec("[a-z_.0-9]{1,20}=[ -~]{0,10}", 0..3)) {
        let mut overrides = Overrides::new();
        let registry = Registry::builtin();
        let mut ok = true;
        for s in &sets {
            ok &= overrides.set(s).is_ok();
        }
        if ok {
            let loaded = scenario::load_str(Path::new("p.toml"), doc, &[], &overrides, &registry);
            if let Err(e) = loaded {
                let shown = e.to_string();
                prop_assert!(!shown.contains('\n'));
                prop_assert!(shown.starts_with("p.toml") || shown.starts_with("--set"), "{}", shown);
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(doc in "\\PC{0,300}") {
        let _ = scenario::load_str(Path::new("p.toml"), doc, &[], &Overrides::new(), &Registry::builtin());
    }
}

/// A password in a Redis URL never shows in what agora prints of it: the URL's own display,
/// its debug form, its address, or the error for a URL it refuses. Tried as users paste
/// passwords, raw (reserved characters and all) and percent-encoded.
mod url_passwords {
    use agora::backend::url::RedisUrl;
    use proptest::prelude::*;

    fn encode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect()
    }

    proptest! {
        #[test]
        fn passwords_never_show(tail in "\\PC{1,24}", user in "[a-z]{0,6}", db in 0u32..16) {
            // A prefix that no other part of the URL holds, so that finding it means the password.
            let password = format!("Zq{tail}");
            let raw = format!("redis://{user}:{password}@127.0.0.1:6379/{db}");
            let encoded = format!("redis://{user}:{}@127.0.0.1:6379/{db}", encode(&password));
            for text in [raw, encoded] {
                match RedisUrl::parse(&text) {
                    Ok(url) => {
                        prop_assert!(!url.to_string().contains(&password), "{}", url);
                        let debug = format!("{:?}", url);
                        prop_assert!(!debug.contains(&password));
                        prop_assert!(!url.address().contains(&password));
                    }
                    Err(e) => {
                        prop_assert!(!e.message.contains(&password), "{}", e.message);
                        prop_assert!(!e.hint.contains(&password));
                    }
                }
            }
        }
    }
}

/// The transcript's lines and the cache's entries are written field by field, by hand: they
/// must be the very bytes serde_json writes for the same values (transcript hashes depend on
/// them), whatever the text holds.
mod hand_written_json {
    use std::sync::Arc;

    use agora::backend::CacheEntry;
    use agora::message::{DecodedData, Message};
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    fn text() -> impl Strategy<Value = String> {
        // Quotes, backslashes, control characters, non-ASCII and astral characters.
        prop_oneof!["[ -~]{0,20}", "\\PC{0,12}", "[\"\\\\\u{0}-\u{1f}\u{7f}é😀]{0,8}"]
    }

    fn data() -> impl Strategy<Value = Option<Map<String, Value>>> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON numbers are finite", |f| f.is_finite())
                .prop_map(Value::from),
            text().prop_map(Value::from),
        ];
        prop::option::of(
            prop::collection::btree_map(text(), leaf, 0..4).prop_map(|m| m.into_iter().collect()),
        )
    }

    proptest! {
        #[test]
        fn messages_are_written_as_serde_writes_them(
            tick in prop::option::of(any::<u64>()),
            sender in text(),
            seq in prop::option::of(any::<u64>()),
            to in prop::option::of(text()),
            content in text(),
            data in data(),
        ) {
            let message = Message {
                tick,
                sender_id: Arc::from(sender),
                seq,
                to: to.map(Arc::from),
                content,
                data,
                decoded: DecodedData::default(),
            };
            prop_assert_eq!(message.transcript_line(), serde_json::to_string(&message).unwrap());
        }

        #[test]
        fn cache_entries_are_written_as_serde_writes_them(
            agent in text(),
            n in any::<u64>(),
            tick in prop::option::of(any::<u64>()),
            value in data(),
        ) {
            let entry = CacheEntry {
                agent,
                n,
                tick,
                value: value.map_or(Value::Null, Value::Object),
            };
            prop_assert_eq!(entry.encode(), serde_json::to_string(&entry).unwrap());
        }
    }
}
