//! `[network]` and the tables' `follows`, checked and drawn into a [`Network`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::file::{NetworkKind, NetworkSection, ScenarioFile};
use super::locate::KeyPath;
use super::spec::AgentSpec;
use super::{ScenarioError, Source};
use crate::network::{Network, edges, generate};
use crate::random::network_rng;

/// The most follows a network may have: a complete graph restricted by `follows` is
/// materialised, and past this it would exhaust memory.
const MAX_FOLLOWS: usize = 50_000_000;

fn key(k: &str) -> KeyPath {
    KeyPath::default().key("network").key(k)
}

/// `[network]` as the run uses it (an edge list by its absolute path, so that worker
/// processes, which read the resolved scenario from a file elsewhere, find it too), and the
/// network, `None` when every agent hears every other (no `[network]`, or a complete one that
/// no table restricts): then agents read the broadcast stream.
pub(super) fn validate(
    file: &ScenarioFile,
    agents: &[AgentSpec],
    seed: u64,
    source: &Source,
    at: &dyn Fn(KeyPath, String) -> ScenarioError,
) -> Result<(Option<NetworkSection>, Option<Arc<Network>>), ScenarioError> {
    let restricted = check_follows(file, at)?;
    warn_about_feeds(file);
    let Some(section) = &file.network else {
        if let Some(t) = restricted {
            return Err(at(
                KeyPath::default().key("agents").index(t).key("follows"),
                "`follows` needs a [network] section".to_string(),
            )
            .with_hint("add [network] with kind = \"complete\" to let tables follow only some tables"));
        }
        return Ok((None, None));
    };
    let mut section = section.clone();
    // Without `file`, draw's check of the parameters says what is missing.
    if section.kind == NetworkKind::File && section.file.is_some() {
        let path = edge_list_path(&section, source).map_err(|tried| {
            at(key("file"), format!("no such file: {tried}"))
                .with_hint("give a path relative to the scenario file's folder, or an absolute one")
        })?;
        section.file = Some(path.display().to_string());
    }
    let network = draw(&section, file, agents, seed, restricted.is_some(), at)?;
    Ok((Some(section), network))
}

/// The network `section` (checked here) says, over `agents`; `restricted` when some table
/// says whom it follows.
fn draw(
    section: &NetworkSection,
    file: &ScenarioFile,
    agents: &[AgentSpec],
    seed: u64,
    restricted: bool,
    at: &dyn Fn(KeyPath, String) -> ScenarioError,
) -> Result<Option<Arc<Network>>, ScenarioError> {
    let n = agents.len();
    check_params(section, n, at)?;
    check_size(section, n, at)?;
    let names: Vec<Arc<str>> = agents.iter().map(|a| a.name.clone()).collect();
    let mut rng = network_rng(seed);
    let follows: Vec<(u32, u32)> = match section.kind {
        NetworkKind::Complete if !restricted => return Ok(None),
        NetworkKind::Complete => complete_follows(file, agents, at)?,
        NetworkKind::File => {
            let path = PathBuf::from(section.file.as_deref().unwrap_or_default());
            let index: HashMap<&str, u32> = names.iter().enumerate().map(|(i, a)| (&**a, i as u32)).collect();
            let list = edges::read(&path, |name| index.get(name).copied()).map_err(|e| {
                let place = match e.line {
                    Some(line) => format!("{}:{line}", path.display()),
                    None => path.display().to_string(),
                };
                at(key("file"), format!("{place}: {}", e.message))
            })?;
            warn_dropped(&path, &list.dropped);
            list.follows
        }
        kind => {
            let n = n as u32;
            let k = section.k.unwrap_or(0) as u32;
            let p = section.p.unwrap_or(0.0);
            let m = section.m.unwrap_or(0) as u32;
            let edges = match kind {
                NetworkKind::Ring => generate::ring(n, k),
                NetworkKind::WattsStrogatz => generate::watts_strogatz(n, k, p, &mut rng).edges,
                NetworkKind::BarabasiAlbert => generate::barabasi_albert(n, m, &mut rng),
                _ => generate::erdos_renyi(n, p, &mut rng),
            };
            edges.iter().flat_map(|&(a, b)| [(a, b), (b, a)]).collect()
        }
    };
    let follows = if restricted {
        restrict(file, agents, follows)
    } else {
        follows
    };
    let network = Network::new(names, follows);
    if network.edges() == 0 {
        tracing::warn!("the network has no follows: agents hear only what is addressed to them");
    }
    Ok(Some(Arc::new(network)))
}

/// Warns of the lines of an edge list that were left out, each with its place (the first
/// few: a generated file with a systematic mistake could repeat thousands).
fn warn_dropped(path: &std::path::Path, dropped: &[edges::Dropped]) {
    const SHOWN: usize = 5;
    for d in dropped.iter().take(SHOWN) {
        tracing::warn!(
            "network.file: {}:{}: {}; left out",
            path.display(),
            d.line,
            d.reason
        );
    }
    if dropped.len() > SHOWN {
        tracing::warn!(
            "network.file: {} more lines of {} left out, as these were",
            dropped.len() - SHOWN,
            path.display()
        );
    }
}

/// Refuses, before drawing it, a network too large to hold: [`MAX_FOLLOWS`] follows.
fn check_size(
    section: &NetworkSection,
    n: usize,
    at: &dyn Fn(KeyPath, String) -> ScenarioError,
) -> Result<(), ScenarioError> {
    let n = n as f64;
    let expected = match section.kind {
        NetworkKind::Ring | NetworkKind::WattsStrogatz => n * section.k.unwrap_or(0) as f64,
        NetworkKind::BarabasiAlbert => {
            let m = section.m.unwrap_or(0) as f64;
            2.0 * m * (n - m)
        }
        NetworkKind::ErdosRenyi => section.p.unwrap_or(0.0) * n * (n - 1.0),
        // A file is as large as it is; a complete one is counted exactly when restricted.
        NetworkKind::File | NetworkKind::Complete => 0.0,
    };
    if expected > MAX_FOLLOWS as f64 {
        return Err(at(
            key("kind"),
            format!("this network would have about {expected:.0} follows; the limit is {MAX_FOLLOWS}"),
        )
        .with_hint("lower k, m or p, or the number of agents"));
    }
    Ok(())
}

/// Warns about `llm` feed settings that do nothing: a network feed without a network, and
/// recommendations (other than the defaults) without a `mix` feed.
fn warn_about_feeds(file: &ScenarioFile) {
    for (t, table) in file.agents.iter().enumerate() {
        if table.behaviour != "llm" {
            continue;
        }
        let from = table
            .params
            .get("feed_from")
            .and_then(|v| v.as_str())
            .unwrap_or("everyone");
        if from != "everyone" && file.network.is_none() {
            tracing::warn!(
                "agents[{t}].params.feed_from = {from:?} needs a [network]; without one the feed is everyone's"
            );
        }
        // `agora check` prints every parameter with its default: those read back say nothing.
        let defaults =
            toml::Table::try_from(crate::behaviour::builtin::llm::LlmParams::default()).unwrap_or_default();
        let set_apart = |key: &str| {
            table
                .params
                .get(key)
                .is_some_and(|v| defaults.get(key) != Some(v))
        };
        if from != "mix" && (set_apart("recommended") || set_apart("recommend_by")) {
            tracing::warn!(
                "agents[{t}].params: `recommended` and `recommend_by` apply to feed_from = \"mix\" only"
            );
        }
    }
}

/// Each parameter the kind needs, in range (one it does not use is ignored, with a warning).
fn check_params(
    section: &NetworkSection,
    n: usize,
    at: &dyn Fn(KeyPath, String) -> ScenarioError,
) -> Result<(), ScenarioError> {
    let kind = section.kind;
    let uses = |param: &str| -> bool {
        matches!(
            (kind, param),
            (NetworkKind::Ring | NetworkKind::WattsStrogatz, "k")
                | (NetworkKind::WattsStrogatz | NetworkKind::ErdosRenyi, "p")
                | (NetworkKind::BarabasiAlbert, "m")
                | (NetworkKind::File, "file")
        )
    };
    let given = [
        ("k", section.k.is_some()),
        ("p", section.p.is_some()),
        ("m", section.m.is_some()),
        ("file", section.file.is_some()),
    ];
    for (param, is_given) in given {
        if is_given && !uses(param) {
            // Not an error, so that a sweep may vary the kind under one set of parameters.
            tracing::warn!(
                "network.{param} does not apply to kind = {:?}; it is ignored",
                kind.as_str()
            );
        }
        if !is_given && uses(param) {
            return Err(
                at(key("kind"), format!("kind = {:?} needs `{param}`", kind.as_str())).with_hint(PARAMS_HINT),
            );
        }
    }
    if let Some(k) = section.k.filter(|_| uses("k"))
        && (k < 2 || k % 2 != 0 || k as u64 >= n as u64)
    {
        return Err(at(
            key("k"),
            format!("must be even, at least 2 and below the number of agents ({n}), got {k}"),
        ));
    }
    if let Some(p) = section.p.filter(|_| uses("p"))
        && !(0.0..=1.0).contains(&p)
    {
        return Err(at(
            key("p"),
            format!("must be a probability, from 0 to 1, got {p}"),
        ));
    }
    if let Some(m) = section.m.filter(|_| uses("m"))
        && (m < 1 || m as u64 >= n as u64)
    {
        return Err(at(
            key("m"),
            format!("must be at least 1 and below the number of agents ({n}), got {m}"),
        ));
    }
    Ok(())
}

const PARAMS_HINT: &str = "ring: k; watts_strogatz: k and p; barabasi_albert: m; erdos_renyi: p; \
                           file: file; complete: nothing";

/// The tables' `follows` name tables that exist; the first table that has one, if any.
fn check_follows(
    file: &ScenarioFile,
    at: &dyn Fn(KeyPath, String) -> ScenarioError,
) -> Result<Option<usize>, ScenarioError> {
    let mut restricted = None;
    for (t, table) in file.agents.iter().enumerate() {
        let Some(follows) = &table.follows else { continue };
        restricted.get_or_insert(t);
        for (i, id) in follows.iter().enumerate() {
            if !file.agents.iter().any(|other| &other.id == id) {
                let ids: Vec<&str> = file.agents.iter().map(|a| a.id.as_str()).collect();
                return Err(at(
                    KeyPath::default().key("agents").index(t).key("follows").index(i),
                    format!("no [[agents]] table has id {id:?}"),
                )
                .with_hint(format!("the tables are: {}", ids.join(", "))));
            }
        }
    }
    Ok(restricted)
}

/// Whether an agent of table `follower` may follow one of table `followee`.
fn allowed(file: &ScenarioFile, follower: usize, followee: usize) -> bool {
    match &file.agents[follower].follows {
        Some(ids) => ids.contains(&file.agents[followee].id),
        None => true,
    }
}

/// Every follow the tables' `follows` allow, in a complete network.
fn complete_follows(
    file: &ScenarioFile,
    agents: &[AgentSpec],
    at: &dyn Fn(KeyPath, String) -> ScenarioError,
) -> Result<Vec<(u32, u32)>, ScenarioError> {
    let mut per_table = vec![0usize; file.agents.len()];
    for a in agents {
        per_table[a.table] += 1;
    }
    let total: usize = agents
        .iter()
        .map(|a| {
            (0..file.agents.len())
                .filter(|&t| allowed(file, a.table, t))
                .map(|t| per_table[t])
                .sum::<usize>()
        })
        .sum();
    if total > MAX_FOLLOWS {
        return Err(at(
            key("kind"),
            format!("this complete network would have {total} follows; the limit is {MAX_FOLLOWS}"),
        )
        .with_hint("use a sparse kind (watts_strogatz, barabasi_albert, ...) for this many agents"));
    }
    // Agents are numbered table by table: each table is one range of indices.
    let mut ranges = Vec::with_capacity(file.agents.len());
    let mut start = 0u32;
    for &count in &per_table {
        ranges.push(start..start + count as u32);
        start += count as u32;
    }
    let mut follows = Vec::with_capacity(total);
    for a in agents {
        let me = a.index as u32;
        for (t, range) in ranges.iter().enumerate() {
            if allowed(file, a.table, t) {
                follows.extend(range.clone().filter(|&b| b != me).map(|b| (me, b)));
            }
        }
    }
    Ok(follows)
}

fn restrict(file: &ScenarioFile, agents: &[AgentSpec], mut follows: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    follows.retain(|&(a, b)| allowed(file, agents[a as usize].table, agents[b as usize].table));
    follows
}

/// The edge list, as an absolute path: relative to the scenario file's folder, or else to
/// the working directory (worker processes read the scenario from elsewhere, so the path they
/// are given must not depend on where it is). Fails with the places tried.
fn edge_list_path(section: &NetworkSection, source: &Source) -> Result<PathBuf, String> {
    let given = PathBuf::from(section.file.as_deref().unwrap_or_default());
    let mut candidates: Vec<PathBuf> = vec![given.clone()];
    if !given.is_absolute() {
        let beside = source.path.parent().unwrap_or(Path::new("")).join(&given);
        if beside != given {
            candidates.insert(0, beside);
        }
    }
    match candidates.iter().find(|c| c.exists()) {
        Some(found) => Ok(std::path::absolute(found).unwrap_or_else(|_| found.clone())),
        None => Err(candidates
            .iter()
            .map(|c| {
                std::path::absolute(c)
                    .unwrap_or_else(|_| c.clone())
                    .display()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join(", nor ")),
    }
}
