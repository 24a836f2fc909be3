//! `sweep.csv`: one row per run, in plan order, with the run's varied values, what its
//! `summary.json` says, and the last value of every model-level metric: a counter's total, a
//! level's last value.
//!
//! Columns: `run`, `seed`, one per varied key, `stop_reason`, `ticks`, `messages`,
//! `deliveries`, `elapsed_s`, `transcript_sha256`, one per metric (sorted by name), then
//! `dir` (the run's folder, relative to the sweep's) and `error` (why a run failed; empty
//! when it did not).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::plan::PlannedRun;

/// A run of the sweep, done or failed.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub planned: PlannedRun,
    /// The run's folder, relative to the sweep's (`run-001/opinion-3`).
    pub dir: String,
    /// Its `summary.json`, when it wrote one.
    pub summary: Option<Value>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

impl RunResult {
    /// The last value of each model-level metric: counters' totals, levels' last values.
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let Some(s) = &self.summary else { return Vec::new() };
        let counters = s["metrics"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(name, series)| series["total"].as_f64().map(|v| (name.clone(), v)));
        let levels = s["levels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(name, series)| series["last"].as_f64().map(|v| (name.clone(), v)));
        counters.chain(levels).collect()
    }
}

/// The summary's keys `sweep.csv` has a column for, after the varied keys, in order.
const SUMMARY_COLUMNS: [&str; 6] = [
    "stop_reason",
    "ticks",
    "messages",
    "deliveries",
    "elapsed_s",
    "transcript_sha256",
];

/// Whether `summary` is that of a completed run of the scenario whose fingerprint is
/// `fingerprint`.
pub fn completed(summary: &Value, fingerprint: &str) -> bool {
    summary["fingerprint"] == fingerprint
        && summary["stop_reason"]
            .as_str()
            .is_some_and(crate::report::StopReason::names_an_end)
}

/// Writes `sweep.csv` (to a `.partial` file first, then renamed: a reader never sees half).
///
/// # Errors
///
/// A file that cannot be written.
pub fn write(path: &Path, keys: &[String], results: &[RunResult]) -> std::io::Result<()> {
    let metrics: BTreeSet<String> = results.iter().flat_map(|r| r.metrics()).map(|(n, _)| n).collect();
    let partial = path.with_extension("csv.partial");
    {
        let mut w = csv::Writer::from_path(&partial)?;
        let mut header: Vec<&str> = vec!["run", "seed"];
        header.extend(keys.iter().map(String::as_str));
        header.extend(SUMMARY_COLUMNS);
        header.extend(metrics.iter().map(String::as_str));
        header.extend(["dir", "error"]);
        w.write_record(&header)?;
        for r in results {
            let field = |key: &str| -> String {
                match r.summary.as_ref().map(|s| &s[key]) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                }
            };
            let mut row = vec![r.planned.number.to_string(), r.planned.seed.to_string()];
            row.extend(
                r.planned
                    .values
                    .iter()
                    .map(|(_, v)| v.trim_matches('"').to_string()),
            );
            for key in SUMMARY_COLUMNS {
                row.push(field(key));
            }
            let values = r.metrics();
            for name in &metrics {
                row.push(
                    values
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.to_string())
                        .unwrap_or_default(),
                );
            }
            row.push(r.dir.clone());
            row.push(r.error.clone().unwrap_or_default());
            w.write_record(&row)?;
        }
        w.flush()?;
    }
    std::fs::rename(&partial, path)
}

/// `sweep.csv` read back into the sweep's results, each with its run's `summary.json` (read
/// from beside the file) where there is one: for drawing a sweep's plots again.
///
/// # Errors
///
/// The file cannot be read, or is not a `sweep.csv` agora wrote: in words for the user.
pub fn read(path: &Path) -> Result<Vec<RunResult>, String> {
    let sweep_dir = path.parent().unwrap_or(Path::new(""));
    let not_ours = |why: String| format!("{} is not a sweep.csv agora wrote: {why}", path.display());
    let mut reader =
        csv::Reader::from_path(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| not_ours(e.to_string()))?
        .iter()
        .map(str::to_string)
        .collect();
    let at = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| not_ours(format!("it has no column {name:?}")))
    };
    let (values_end, dir, error) = (at(SUMMARY_COLUMNS[0])?, at("dir")?, at("error")?);
    if header.get(..2) != Some(&["run".to_string(), "seed".to_string()][..]) {
        return Err(not_ours("its first columns are not run and seed".into()));
    }
    let mut results = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| not_ours(e.to_string()))?;
        let field = |i: usize| record.get(i).unwrap_or_default().to_string();
        let number = |i: usize| {
            field(i)
                .parse::<u64>()
                .map_err(|_| not_ours(format!("row {}: {:?} is not a number", line + 1, field(i))))
        };
        let run_dir = field(dir);
        let summary = std::fs::read_to_string(sweep_dir.join(&run_dir).join("summary.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        results.push(RunResult {
            planned: PlannedRun {
                number: number(0)? as usize,
                values: (2..values_end).map(|i| (header[i].clone(), field(i))).collect(),
                seed: number(1)?,
            },
            dir: run_dir,
            summary,
            error: Some(field(error)).filter(|e| !e.is_empty()),
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_carry_the_values_the_summary_and_the_last_metrics() {
        let run = |number, seed, summary: Option<Value>, error: Option<&str>| RunResult {
            planned: PlannedRun {
                number,
                values: vec![("agents.0.params.epsilon".into(), "0.1".into())],
                seed,
            },
            dir: format!("run-00{number}/opinion-{seed}"),
            summary,
            error: error.map(str::to_string),
        };
        let summary = serde_json::json!({
            "stop_reason": "ticks", "ticks": 20, "messages": 10, "deliveries": 90,
            "elapsed_s": 0.5, "transcript_sha256": "ab",
            "metrics": { "informed": { "total": 7 } }, "levels": { "clusters": { "last": 2.0 } }
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.csv");
        let results = [
            run(1, 3, Some(summary), None),
            run(2, 4, None, Some("exit 2: bad, really")),
        ];
        write(&path, &["agents.0.params.epsilon".into()], &results).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "run,seed,agents.0.params.epsilon,stop_reason,ticks,messages,deliveries,elapsed_s,transcript_sha256,clusters,informed,dir,error"
        );
        assert_eq!(lines[1], "1,3,0.1,ticks,20,10,90,0.5,ab,2,7,run-001/opinion-3,");
        assert_eq!(
            lines[2],
            "2,4,0.1,,,,,,,,,run-002/opinion-4,\"exit 2: bad, really\""
        );
        // Read back (for `agora plot`): the plan, the folders, the errors; each summary from
        // its run's folder, which the first run has.
        std::fs::create_dir_all(dir.path().join("run-001/opinion-3")).unwrap();
        std::fs::write(
            dir.path().join("run-001/opinion-3/summary.json"),
            results[0].summary.as_ref().unwrap().to_string(),
        )
        .unwrap();
        let read = read(&path).unwrap();
        assert_eq!(read.len(), 2);
        for (read, written) in read.iter().zip(&results) {
            assert_eq!(read.planned, written.planned);
            assert_eq!((&read.dir, &read.error), (&written.dir, &written.error));
            assert_eq!(read.summary, written.summary);
        }
        std::fs::write(&path, "a,b\n1,2\n").unwrap();
        assert!(
            super::read(&path)
                .unwrap_err()
                .contains("is not a sweep.csv agora wrote")
        );
    }

    #[test]
    fn only_finished_runs_of_the_same_scenario_are_complete() {
        let s = serde_json::json!({ "fingerprint": "f", "stop_reason": "ticks" });
        assert!(completed(&s, "f"));
        assert!(!completed(&s, "g"));
        assert!(!completed(
            &serde_json::json!({ "fingerprint": "f", "stop_reason": "interrupted" }),
            "f"
        ));
    }
}
