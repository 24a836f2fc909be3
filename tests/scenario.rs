//! Loading and validating scenarios: the layering of file, environment and overrides, and
//! the error for each kind of bad input (which must name the file, line and key).

use std::path::Path;

use agora::Registry;
use agora::scenario::{self, Mode, Overrides, Scenario, ScenarioError};

const BASE: &str = r#"
[scenario]
name = "t"
seed = 5
ticks = 3

[[agents]]
id = "a"
count = 2
behaviour = "relay"
params = { tokens = 2 }
"#;

fn load_with(text: &str, env: &[(&str, &str)], sets: &[&str]) -> Result<Scenario, ScenarioError> {
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut overrides = Overrides::new();
    for s in sets {
        overrides.set(s)?;
    }
    scenario::load_str(
        Path::new("s.toml"),
        text.to_string(),
        &env,
        &overrides,
        &Registry::builtin(),
    )
}

fn load(text: &str) -> Result<Scenario, ScenarioError> {
    load_with(text, &[], &[])
}

/// The one-line error for `text`, checked to be one line.
fn error(text: &str) -> String {
    let e = load(text)
        .expect_err("the scenario should be refused")
        .to_string();
    assert!(!e.contains('\n'), "errors are one line: {e:?}");
    e
}

#[test]
fn a_valid_scenario_has_its_defaults() {
    let s = load(BASE).unwrap();
    assert_eq!(
        (s.name.as_str(), s.seed, s.mode, s.ticks),
        ("t", 5, Mode::Lockstep, Some(3))
    );
    assert_eq!(s.max_messages, 1_000_000);
    assert_eq!(s.max_retries, 3);
    let names: Vec<&str> = s.agents.iter().map(|a| &*a.name).collect();
    assert_eq!(names, ["a_1", "a_2"]);
    let keys = &s.backend.keys;
    assert_eq!(
        (keys.stream.as_str(), keys.group_prefix.as_str()),
        ("t", "group_")
    );
    assert_eq!(keys.cache_prefix, "t:cache:");
    assert_eq!(s.backend.url.expose(), "redis://127.0.0.1:6379/0");
    assert_eq!(s.run_dir(), Path::new("runs/t-5"));
}

#[test]
fn agents_are_named_in_declaration_order() {
    let s = load(&format!(
        "{BASE}\n[[agents]]\nid = \"solo\"\nbehaviour = \"relay\"\n"
    ))
    .unwrap();
    let spec: Vec<(&str, usize, usize)> = s
        .agents
        .iter()
        .map(|a| (&*a.name, a.index, a.peer_index))
        .collect();
    assert_eq!(spec, [("a_1", 0, 0), ("a_2", 1, 1), ("solo", 2, 2)]);
}

#[test]
fn environment_then_set_then_flags() {
    let env_only = load_with(BASE, &[("AGORA_SCENARIO__SEED", "7")], &[]).unwrap();
    assert_eq!(env_only.seed, 7);
    let set_wins = load_with(BASE, &[("AGORA_SCENARIO__SEED", "7")], &["scenario.seed=9"]).unwrap();
    assert_eq!(set_wins.seed, 9);
    let agents = load_with(BASE, &[], &["agents.0.count=4", "agents.0.params.hops=5"]).unwrap();
    assert_eq!(agents.agents.len(), 4);
    assert_eq!(
        agents.tables[0].behaviour.resolved_params()["hops"].as_integer(),
        Some(5)
    );
    let url = load_with(BASE, &[("AGORA_BACKEND__URL", "redis://h:1/2")], &[]).unwrap();
    assert_eq!(url.backend.url.expose(), "redis://h:1/2");
    // Plain words are strings.
    let kind = load_with(BASE, &[], &["backend.kind=redis", "scenario.mode=free"]).unwrap();
    assert_eq!(kind.backend.kind.as_str(), "redis");
    assert_eq!(kind.mode, Mode::Free);
    // Other AGORA_ variables are none of our business.
    assert!(load_with(BASE, &[("AGORA_LOG", "x"), ("PATH", "/bin")], &[]).is_ok());
}

#[test]
fn syntax_errors_name_the_line() {
    let e = error("[scenario]\nname = \"t\"\nticks = = 3\n");
    assert!(e.starts_with("s.toml:3:"), "{e}");
}

#[test]
fn unknown_keys_are_named() {
    let e = error(&BASE.replace("seed = 5", "sede = 5"));
    assert!(
        e.starts_with("s.toml:4: scenario.sede: unknown field `sede`"),
        "{e}"
    );
    let e = error(&format!("{BASE}\n[output]\ndir = \"x\"\nformat = \"csv\"\n"));
    assert!(e.contains("output.format") && e.contains("unknown field"), "{e}");
    let e = error(&format!("{BASE}\n[extras]\nx = 1\n"));
    assert!(e.contains("unknown field `extras`"), "{e}");
}

#[test]
fn wrong_types_are_named() {
    let e = error(&BASE.replace("ticks = 3", "ticks = \"three\""));
    assert!(
        e.starts_with("s.toml:5: scenario.ticks:") && e.contains("expected an integer"),
        "{e}"
    );
    let e = error(
        &BASE
            .replace("mode", "x")
            .replace("seed = 5", "mode = \"sideways\""),
    );
    assert!(
        e.contains("scenario.mode") && e.contains("`lockstep` or `free`"),
        "{e}"
    );
    let e = error(&BASE.replace("seed = 5", "seed = -5"));
    assert!(e.contains("scenario.seed"), "{e}");
}

#[test]
fn counts_must_be_positive() {
    for count in ["0", "-3"] {
        let e = error(&BASE.replace("count = 2", &format!("count = {count}")));
        assert_eq!(
            e,
            format!("s.toml:9: agents[0].count: must be at least 1, got {count}")
        );
    }
}

#[test]
fn agent_names_must_be_unique() {
    let text = format!("{BASE}\n[[agents]]\nid = \"a_2\"\nbehaviour = \"relay\"\n");
    let e = error(&text);
    assert!(
        e.contains("agents[1].id") && e.contains("\"a_2\" is already used"),
        "{e}"
    );
    let e = error(&BASE.replace("id = \"a\"", "id = \"bad name\""));
    assert!(e.contains("agents[0].id") && e.contains("not a valid id"), "{e}");
    let e = error(&BASE.replace("id = \"a\"\ncount = 2", "id = \"timestamps\"\ncount = 1"));
    assert!(e.contains("timestamps"), "{e}");
}

#[test]
fn unknown_behaviours_list_the_known_ones() {
    let err = load(&BASE.replace("\"relay\"", "\"rely\"")).unwrap_err();
    assert!(
        err.to_string()
            .contains("agents[0].behaviour: unknown behaviour \"rely\""),
        "{err}"
    );
    assert_eq!(
        err.hint.as_deref(),
        Some(
            "known behaviours: discussion, gossip, llm, opinion, relay; a behaviour of your own is a program declared under [behaviours.NAME] (README, \"Writing a behaviour in Python\"), or Rust registered in a program of your own (README, \"Writing a behaviour\")"
        )
    );
}

#[test]
fn behaviour_parameters_are_checked() {
    let e = error(&BASE.replace("tokens = 2", "tokns = 2"));
    assert!(
        e.starts_with("s.toml:11: agents[0].params.tokns: unknown field `tokns`"),
        "{e}"
    );
    let e = error(&BASE.replace("tokens = 2", "tokens = \"many\""));
    assert!(
        e.contains("agents[0].params.tokens") && e.contains("invalid type"),
        "{e}"
    );
    let e = error(
        &BASE
            .replace("\"relay\"", "\"gossip\"")
            .replace("tokens = 2", "p_forward = 1.5"),
    );
    assert!(
        e.contains("agents[0].params") && e.contains("between 0 and 1"),
        "{e}"
    );
    let e = error(
        &BASE
            .replace("\"relay\"", "\"gossip\"")
            .replace("tokens = 2", "p_forward = nan"),
    );
    assert!(e.contains("between 0 and 1, got NaN"), "{e}");
    let e = error(
        &BASE
            .replace("\"relay\"", "\"gossip\"")
            .replace("tokens = 2", "seeds = 3"),
    );
    assert!(e.contains("only 2 gossip agents"), "{e}");
}

#[test]
fn lockstep_needs_ticks() {
    let e = error(&BASE.replace("ticks = 3", ""));
    assert!(e.contains("scenario: lockstep mode needs `ticks`"), "{e}");
    let e = error(&BASE.replace("ticks = 3", "ticks = 0"));
    assert!(e.contains("scenario.ticks: must be between 1 and"), "{e}");
    assert!(load(&BASE.replace("ticks = 3", "mode = \"free\"")).is_ok());
}

#[test]
fn other_limits() {
    let e = error("[scenario]\nname = \"t\"\nticks = 2\n");
    assert!(e.contains("agents: the scenario has no agents"), "{e}");
    let e = error(&BASE.replace("name = \"t\"", &format!("name = \"{}\"", "n".repeat(65))));
    assert!(e.contains("scenario.name"), "{e}");
    let e = error(&BASE.replace("count = 2", "count = 100001"));
    assert!(e.contains("the limit is 100000"), "{e}");
    let e = error(&format!("{BASE}\n[backend]\nurl = \"http://x\"\n"));
    assert!(e.contains("backend.url") && e.contains("redis://"), "{e}");
    let e = error(&BASE.replace("ticks = 3", "mode = \"free\"\nduration = \"soon\""));
    assert!(e.contains("scenario.duration"), "{e}");
    let e = error(&format!("{BASE}\n[backend]\ncache_prefix = \"t\"\n"));
    assert!(e.contains("backend.cache_prefix"), "{e}");
}

#[test]
fn override_errors_name_the_override() {
    let e = load_with(BASE, &[], &["scenario.seed=abc"])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--set scenario.seed=abc: scenario.seed:"), "{e}");
    let e = load_with(BASE, &[], &["agents.5.count=2"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 [[agents]] table"), "{e}");
    let e = load_with(BASE, &[("AGORA_SCENARIO__TICKS", "x")], &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("environment variable AGORA_SCENARIO__TICKS:"),
        "{e}"
    );
    let e = load_with(BASE, &[("AGORA_SCENARIO_SEED", "1")], &[]).unwrap_err();
    assert_eq!(e.hint.as_deref(), Some("write AGORA_SCENARIO__SEED"));
    // A value set from the command line is blamed on the command line, not the file.
    let e = load_with(BASE, &[], &["agents.0.count=0"])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--set agents.0.count=0: agents[0].count"), "{e}");
    assert!(load_with(BASE, &[], &["novalue"]).is_err());
}

#[test]
fn passwords_never_show() {
    let text = format!("{BASE}\n[backend]\nurl = \"redis://u:hunter2@h:1/0\"\n");
    let s = load(&text).unwrap();
    assert!(!s.to_toml().contains("hunter2"));
    assert!(!format!("{s:?}").contains("hunter2"));
    let e = load_with(&text, &[], &["backend.url=redis://u:hunter2@h:notaport"])
        .map(|_| ())
        .unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn check_output_is_a_scenario_again() {
    let s = load(BASE).unwrap();
    let again = load(&s.to_toml()).unwrap();
    assert_eq!(again.to_toml(), s.to_toml());
    assert_eq!(again.fingerprint(), s.fingerprint());
    let other = load_with(BASE, &[], &["scenario.seed=6"]).unwrap();
    assert_ne!(other.fingerprint(), s.fingerprint());
}

#[test]
fn seeds_take_the_whole_u64_range_from_every_source() {
    const MAX: u64 = u64::MAX;
    let as_string = BASE.replace("seed = 5", "seed = \"18446744073709551615\"");
    assert_eq!(load(&as_string).unwrap().seed, MAX);
    let from_env = load_with(BASE, &[("AGORA_SCENARIO__SEED", "18446744073709551615")], &[]).unwrap();
    assert_eq!(from_env.seed, MAX);
    let from_set = load_with(BASE, &[], &["scenario.seed=18446744073709551615"]).unwrap();
    assert_eq!(from_set.seed, MAX);
    // `agora check` prints it so that it loads again.
    let again = load(&from_set.to_toml()).unwrap();
    assert_eq!((again.seed, again.fingerprint()), (MAX, from_set.fingerprint()));
    // Small seeds stay plain integers.
    assert!(load(BASE).unwrap().to_toml().contains("seed = 5\n"));

    // Unquoted, a seed past TOML's integers is refused, at its line, with the way out.
    let e = load(&BASE.replace("seed = 5", "seed = 9223372036854775808")).unwrap_err();
    assert!(e.to_string().starts_with("s.toml:4:"), "{e}");
    assert!(
        e.hint.as_deref().unwrap_or_default().contains("as a string"),
        "{e:?}"
    );
    for bad in ["seed = -1", "seed = \"12x\"", "seed = \"\"", "seed = 1.5"] {
        let e = error(&BASE.replace("seed = 5", bad));
        assert!(
            e.contains("scenario.seed") && e.contains("a whole number"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn environment_values_read_like_set_values() {
    let quoted = load_with(BASE, &[("AGORA_BACKEND__KIND", "\"redis\"")], &[]).unwrap();
    assert_eq!(quoted.backend.kind.as_str(), "redis");
    let word = load_with(BASE, &[("AGORA_SCENARIO__MODE", "free")], &[]).unwrap();
    assert_eq!(word.mode, Mode::Free);
    let e = load_with(BASE, &[("AGORA_BOGUS__X", "1")], &[]).unwrap_err();
    assert!(
        e.to_string().contains("AGORA_BOGUS__X") && e.to_string().contains("no section"),
        "{e}"
    );
    // Variables that do not look like AGORA_<SECTION>__<KEY> are left alone.
    assert!(
        load_with(
            BASE,
            &[("AGORA_SEED_PYTHON", "x"), ("AGORA_FAULT_SEED", "1")],
            &[]
        )
        .is_ok()
    );
}

#[test]
fn wrong_choices_read_the_same_from_every_source() {
    let expected = "backend.kind: unknown variant `mongo`, expected `memory` or `redis`";
    let from_file = error(&format!("{BASE}\n[backend]\nkind = \"mongo\"\n"));
    let from_set = load_with(BASE, &[], &["backend.kind=mongo"])
        .unwrap_err()
        .to_string();
    let from_env = load_with(BASE, &[("AGORA_BACKEND__KIND", "mongo")], &[])
        .unwrap_err()
        .to_string();
    for e in [&from_file, &from_set, &from_env] {
        assert!(e.contains(expected), "{e}");
    }
    let e = load_with(BASE, &[], &["scenario.mode=sideways"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected `lockstep` or `free`"), "{e}");
    // Keys in errors read as dotted paths, whatever layer they come from.
    let e = load_with(BASE, &[], &["agents.0.params=5"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("agents[0].params: invalid type"), "{e}");
}

#[test]
fn every_source_reads_values_the_same_strict_way() {
    // A count written as a string is refused from the file, and so from --set.
    let from_file = error(&BASE.replace("count = 2", "count = \"2\""));
    assert!(from_file.contains("agents[0].count"), "{from_file}");
    let from_set = load_with(BASE, &[], &["agents.0.count=\"200\""])
        .unwrap_err()
        .to_string();
    assert!(
        from_set.starts_with("--set agents.0.count=\"200\": agents[0].count: invalid type: string"),
        "{from_set}"
    );
    // A seed past TOML's integers, in any notation, is refused at its line and key.
    let e = load(&BASE.replace("seed = 5", "seed = 0xbeef_face_dead_cafe")).unwrap_err();
    assert!(e.to_string().starts_with("s.toml:4: scenario.seed:"), "{e}");
    assert!(
        e.hint.as_deref().unwrap_or_default().contains("as a string"),
        "{e:?}"
    );
}

#[test]
fn a_single_bracket_agents_table_gets_a_hint() {
    let e = load(&BASE.replace("[[agents]]", "[agents]")).unwrap_err();
    assert!(e.to_string().contains("agents"), "{e}");
    assert!(
        e.hint.as_deref().unwrap_or_default().contains("[[agents]]"),
        "{e:?}"
    );
}
