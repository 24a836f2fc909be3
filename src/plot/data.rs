//! A run folder's numbers, read back for plotting: `metrics.csv`, `agents.csv` and, when the
//! run finished, `summary.json` (for the title and to tell counters from levels).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::report::tidy::{AGENTS_FILE, METRICS_FILE};

/// `(tick, value)` points, in tick order.
pub type Series = Vec<(u64, f64)>;

/// What the plots of one run show.
#[derive(Debug, Default)]
pub struct RunData {
    /// `opinion, seed 7`.
    pub title: String,
    /// The tables' params, `epsilon=0.2, mu=0.5`.
    pub params: String,
    /// Whether `tick` is seconds (free mode).
    pub free: bool,
    /// Counters: drawn as running totals.
    pub counters: BTreeSet<String>,
    /// Model-level series by name, `(tick, value)` in tick order.
    pub model: BTreeMap<String, Series>,
    /// Agent-level series by name, then by agent (first seen first), `(tick, value)`.
    pub agents: BTreeMap<String, Vec<(String, Series)>>,
    /// The last tick of any row.
    pub last_tick: u64,
}

/// Reads what `run_dir` recorded.
///
/// # Errors
///
/// No `metrics.csv` (not a run folder, or a run from before agora wrote one), or a file that
/// is not agora's CSV.
pub fn read(run_dir: &Path) -> Result<RunData, String> {
    let metrics_path = run_dir.join(METRICS_FILE);
    if !metrics_path.is_file() {
        return Err(format!(
            "{} has no {METRICS_FILE}: give the folder of a run (such as runs/gossip-42)",
            run_dir.display()
        ));
    }
    let mut data = RunData {
        title: run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ..RunData::default()
    };
    if let Ok(text) = std::fs::read_to_string(run_dir.join("summary.json"))
        && let Ok(summary) = serde_json::from_str::<serde_json::Value>(&text)
    {
        data.title = format!(
            "{}, seed {}",
            summary["scenario"].as_str().unwrap_or("?"),
            summary["seed"]
        );
        data.free = summary["mode"] == "free";
        if let Some(metrics) = summary["metrics"].as_object() {
            data.counters = metrics.keys().cloned().collect();
        }
        data.params = params_of(&summary["parameters"]);
    }
    for record in rows(&metrics_path, 3)? {
        let (tick, value) = (
            parse_tick(&record[0], &metrics_path)?,
            parse_value(&record[2], &metrics_path)?,
        );
        data.last_tick = data.last_tick.max(tick);
        data.model
            .entry(record[1].clone())
            .or_default()
            .push((tick, value));
    }
    let agents_path = run_dir.join(AGENTS_FILE);
    if agents_path.is_file() {
        let mut index: BTreeMap<(String, String), usize> = BTreeMap::new();
        for record in rows(&agents_path, 4)? {
            let (tick, value) = (
                parse_tick(&record[0], &agents_path)?,
                parse_value(&record[3], &agents_path)?,
            );
            data.last_tick = data.last_tick.max(tick);
            let lines = data.agents.entry(record[2].clone()).or_default();
            let at = *index
                .entry((record[2].clone(), record[1].clone()))
                .or_insert_with(|| {
                    lines.push((record[1].clone(), Vec::new()));
                    lines.len() - 1
                });
            lines[at].1.push((tick, value));
        }
    }
    Ok(data)
}

/// `key=value` for each table's params, tables joined by `; `.
fn params_of(parameters: &serde_json::Value) -> String {
    let tables = parameters["agents"].as_array().cloned().unwrap_or_default();
    let shown: Vec<String> = tables
        .iter()
        .filter_map(|t| t["params"].as_object())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.iter()
                .filter(|(_, v)| v.is_number() || v.is_boolean() || v.as_str().is_some_and(|s| s.len() <= 24))
                .map(|(k, v)| match v.as_str() {
                    Some(s) => format!("{k}={s}"),
                    None => format!("{k}={v}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|s| !s.is_empty())
        .collect();
    let mut text = shown.join("; ");
    if text.chars().count() > 90 {
        text = text.chars().take(87).collect::<String>() + "...";
    }
    text
}

fn rows(path: &Path, width: usize) -> Result<Vec<Vec<String>>, String> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("{}: {e}", path.display()))?;
        if record.len() != width {
            return Err(format!(
                "{}: a row of {} fields, not {width}",
                path.display(),
                record.len()
            ));
        }
        out.push(record.iter().map(str::to_string).collect());
    }
    Ok(out)
}

fn parse_tick(text: &str, path: &Path) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("{}: {text:?} is not a tick", path.display()))
}

fn parse_value(text: &str, path: &Path) -> Result<f64, String> {
    text.parse()
        .map_err(|_| format!("{}: {text:?} is not a number", path.display()))
}
