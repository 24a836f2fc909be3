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
/// values are not numbers (there is no axis to put them on) or no run finished.
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
    // metric -> group (the other varied values) -> x -> final values over seeds.
    let mut by: BTreeMap<String, BTreeMap<String, ByX>> = BTreeMap::new();
    for r in results {
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
            subtitle: format!("mean over {seeds} seeds, with 95% intervals (Student's t)"),
            x_label: x_key.clone(),
            y_label: name.clone(),
            lines,
            intervals,
        };
        written.extend(chart.write(&dir.join(file_stem(name)))?);
    }
    Ok(written)
}
