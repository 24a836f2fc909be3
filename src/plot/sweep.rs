//! A sweep's plots: each model-level metric's final value against the first varied key, the
//! mean over seeds with its 95% interval, one line per combination of the other varied keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::style::Color;

use super::draw::{self, Chart, Interval, Line};
use super::{PlotError, file_stem};
use crate::sweep::RunResult;
use crate::sweep::stats;

/// Final values over seeds, by the x value's bits (the x value itself beside them).
type ByX = BTreeMap<u64, (f64, Vec<f64>)>;

/// Draws the sweep's plots into `dir`; returns the files. Nothing when the first varied key's
/// values are not numbers (there is no axis to put them on) or no run finished. Failed runs
/// are left out (their last values are where they stopped, not results), and each plot's
/// subtitle says how many.
///
/// # Errors
///
/// No font, or a file that cannot be written.
pub fn draw_sweep(dir: &Path, title: &str, results: &[RunResult]) -> Result<Vec<PathBuf>, PlotError> {
    let Some(first) = results.first().and_then(|r| r.planned.values.first()) else {
        return Ok(Vec::new());
    };
    let x_key = first.0.clone();
    let x_of = |r: &RunResult| r.planned.values[0].1.trim_matches('"').parse::<f64>().ok();
    if results.iter().any(|r| x_of(r).is_none()) {
        return Ok(Vec::new());
    }
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    // metric -> group (the other varied values) -> x -> final values over seeds.
    let mut by: BTreeMap<String, BTreeMap<String, ByX>> = BTreeMap::new();
    for r in results.iter().filter(|r| r.error.is_none()) {
        let x = x_of(r).unwrap_or_default();
        let group = r.planned.values[1..]
            .iter()
            .map(|(k, v)| format!("{}={v}", k.rsplit('.').next().unwrap_or(k)))
            .collect::<Vec<_>>()
            .join(", ");
        for (name, value) in r.metrics() {
            by.entry(name)
                .or_default()
                .entry(group.clone())
                .or_default()
                .entry(x.to_bits())
                .or_insert_with(|| (x, Vec::new()))
                .1
                .push(value);
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| PlotError::Draw(format!("{}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for (name, groups) in &by {
        let mut lines = Vec::new();
        let mut intervals = Vec::new();
        let mut seeds = 0;
        for (i, (group, points)) in groups.iter().enumerate() {
            let mut estimates: Vec<(f64, stats::Estimate)> = points
                .values()
                .filter_map(|(x, values)| stats::estimate(values).map(|e| (*x, e)))
                .collect();
            estimates.sort_by(|a, b| a.0.total_cmp(&b.0));
            seeds = seeds.max(estimates.iter().map(|(_, e)| e.n).max().unwrap_or(0));
            intervals.extend(estimates.iter().map(|(x, e)| Interval {
                x: *x,
                low: e.mean - e.half_width,
                high: e.mean + e.half_width,
            }));
            lines.push(Line {
                points: estimates.iter().map(|(x, e)| (*x, e.mean)).collect(),
                color: draw::palette(i).to_rgba(),
                width: 3,
                label: (!group.is_empty()).then(|| group.clone()),
            });
        }
        let chart = Chart {
            title: format!("{title}: final {name}"),
            subtitle: match failed {
                0 => format!("mean over {seeds} seeds, with 95% intervals (Student's t)"),
                _ => format!(
                    "mean over up to {seeds} seeds, with 95% intervals (Student's t); {failed} failed runs left out"
                ),
            },
            x_label: x_key.clone(),
            y_label: name.clone(),
            lines,
            intervals,
        };
        written.extend(chart.write(&dir.join(file_stem(name)))?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::PlannedRun;

    fn run(number: usize, epsilon: &str, clusters: f64, error: Option<&str>) -> RunResult {
        RunResult {
            planned: PlannedRun {
                number,
                values: vec![("agents.0.params.epsilon".into(), epsilon.into())],
                seed: number as u64,
            },
            dir: format!("run-00{number}/opinion-{number}"),
            summary: Some(serde_json::json!({ "levels": { "clusters": { "last": clusters } } })),
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn failed_runs_are_left_out_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let results = [
            run(1, "0.1", 4.0, None),
            run(2, "0.1", 6.0, None),
            // Stopped at its second tick: its last value is no result.
            run(3, "0.1", 9999.0, Some("exit 1: the behaviour failed")),
            run(4, "0.2", 2.0, None),
        ];
        let svg_of = |results: &[RunResult]| {
            let written = draw_sweep(dir.path(), "opinion", results).unwrap();
            let svg = written
                .iter()
                .find(|p| p.extension().is_some_and(|e| e == "svg"))
                .unwrap();
            std::fs::read_to_string(svg).unwrap()
        };
        let svg = svg_of(&results);
        assert!(svg.contains("1 failed runs left out"), "{svg}");
        // The y axis spans the good runs' values (2 to 6), not the failed run's 9999, which
        // put its labels at thousands.
        assert!(!svg.lines().any(|l| l.trim() == "5000"), "{svg}");

        let svg = svg_of(&results[..2]);
        assert!(
            svg.contains("mean over 2 seeds") && !svg.contains("left out"),
            "{svg}"
        );
    }
}
