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

/// That `run_dir` is a run's folder, or what the user gave instead.
fn check_run_folder(run_dir: &Path) -> Result<(), String> {
    if run_dir.is_file() {
        let folder = run_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        return Err(format!(
            "{} is a file: give the run's folder, such as {}",
            run_dir.display(),
            folder.display()
        ));
    }
    if !run_dir.is_dir() {
        return Err(format!(
            "{} does not exist (give a run's folder, such as runs/opinion-7)",
            run_dir.display()
        ));
    }
    if !run_dir.join(METRICS_FILE).is_file() {
        return Err(format!(
            "{} is not a run's folder (it has no {METRICS_FILE}): give one such as runs/opinion-7",
            run_dir.display()
        ));
    }
    Ok(())
}

/// Reads what `run_dir` recorded.
///
/// # Errors
///
/// No `metrics.csv` (not a run folder, or a run from before agora wrote one), or a file that
/// is not agora's CSV.
pub fn read(run_dir: &Path) -> Result<RunData, String> {
    check_run_folder(run_dir)?;
    let metrics_path = run_dir.join(METRICS_FILE);
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
    for (line, record) in rows(&metrics_path, &["tick", "name", "value"])? {
        let at = |what: String| format!("{}:{line}: {what}", metrics_path.display());
        let (tick, value) = (
            parse_tick(&record[0]).map_err(at)?,
            parse_value(&record[2]).map_err(at)?,
        );
        if !value.is_finite() {
            continue;
        }
        data.last_tick = data.last_tick.max(tick);
        data.model
            .entry(record[1].clone())
            .or_default()
            .push((tick, value));
    }
    let agents_path = run_dir.join(AGENTS_FILE);
    if agents_path.is_file() {
        let mut index: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (line, record) in rows(&agents_path, &["tick", "agent", "name", "value"])? {
            let at = |what: String| format!("{}:{line}: {what}", agents_path.display());
            let (tick, value) = (
                parse_tick(&record[0]).map_err(at)?,
                parse_value(&record[3]).map_err(at)?,
            );
            if !value.is_finite() {
                continue;
            }
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
    let mut shown = shown;
    if let Some(network) = parameters["network"].as_object() {
        // `watts_strogatz k=10 p=0.1`: the graph decides as much as the params do.
        let mut text = network["kind"].as_str().unwrap_or("network").to_string();
        for key in ["k", "p", "m"] {
            if let Some(v) = network.get(key) {
                text.push_str(&format!(" {key}={v}"));
            }
        }
        shown.push(text);
    }
    let mut text = shown.join("; ");
    if text.chars().count() > 90 {
        text = text.chars().take(87).collect::<String>() + "...";
    }
    text
}

/// The rows of an agora CSV with this `header`, each with its line number.
fn rows(path: &Path, header: &[&str]) -> Result<Vec<(u64, Vec<String>)>, String> {
    let shown = path.display();
    let mut reader = csv::Reader::from_path(path).map_err(|e| format!("{shown}: {e}"))?;
    let found = reader.headers().map_err(|e| format!("{shown}: {e}"))?.clone();
    if found.iter().ne(header.iter().copied()) {
        return Err(format!(
            "{shown}: not agora's CSV: its header is {:?}, not {:?}",
            found.iter().collect::<Vec<_>>().join(","),
            header.join(",")
        ));
    }
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("{shown}: {e}"))?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != header.len() {
            return Err(format!(
                "{shown}:{line}: a row of {} fields, not {}",
                record.len(),
                header.len()
            ));
        }
        out.push((line, record.iter().map(str::to_string).collect()));
    }
    Ok(out)
}

fn parse_tick(text: &str) -> Result<u64, String> {
    text.parse().map_err(|_| format!("{text:?} is not a tick"))
}

fn parse_value(text: &str) -> Result<f64, String> {
    text.parse().map_err(|_| format!("{text:?} is not a number"))
}
