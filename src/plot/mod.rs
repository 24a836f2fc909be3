//! The plots a run leaves in `plots/` (CONTRACT.md, "Metrics, plots and sweeps"): each
//! model-level metric over time, and each agent-level value as one line per agent (for
//! `opinion`, the classic bounded-confidence trajectories), as SVG and PNG, drawn with
//! plotters from the run's CSVs, so `agora plot RUN_DIR` redraws them from the folder alone.
//!
//! - [`data`]: a run folder's numbers, read back.
//! - [`draw`]: a line chart, written as SVG and PNG.
//! - [`font`]: the TrueType font the text is drawn with.
//! - [`graph`]: the network (`network.csv`), drawn as a circle of agents.

pub mod data;
pub mod draw;
pub mod font;
pub mod graph;
pub mod sweep;

use std::path::{Path, PathBuf};

use plotters::style::Color;

pub use draw::{Chart, HEIGHT, Interval, Line, WIDTH};

/// The folder of a run's plots.
pub const PLOTS_DIR: &str = "plots";

/// Beyond this many agents, the agent-level plots draw every k-th agent's line: a few
/// thousand lines are already a density, and each costs drawing time and file size.
pub const MAX_AGENT_LINES: usize = 2000;

/// Why plots were not drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlotError {
    /// Not a run's folder, or CSVs that are not what agora writes: bad input.
    Data(String),
    /// No TrueType font to draw the text with.
    NoFont(String),
    /// A plot that could not be drawn or written.
    Draw(String),
}

impl std::fmt::Display for PlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlotError::Data(m) | PlotError::NoFont(m) | PlotError::Draw(m) => f.write_str(m),
        }
    }
}

/// Draws every plot of the run in `run_dir` into `run_dir/plots/`; returns the files.
///
/// # Errors
///
/// Not a run folder, no font for the text, or a file that cannot be written.
pub fn draw_run(run_dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let data = data::read(run_dir).map_err(PlotError::Data)?;
    let dir = run_dir.join(PLOTS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| PlotError::Draw(format!("{}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for (name, series) in &data.model {
        written.extend(model_chart(&data, name, series).write(&dir.join(file_stem(name)))?);
    }
    for (name, agents) in &data.agents {
        let chart = agents_chart(&data, name, agents);
        written.extend(chart.write(&dir.join(format!("agents-{}", file_stem(name))))?);
    }
    written.extend(graph::draw(run_dir, &data, &dir)?);
    Ok(written)
}

fn x_label(data: &data::RunData) -> &'static str {
    if data.free {
        "seconds since the start"
    } else {
        "tick"
    }
}

/// A model-level metric over time; a counter as its running total.
fn model_chart(data: &data::RunData, name: &str, series: &data::Series) -> Chart {
    let counter = data.counters.contains(name);
    let mut running = 0.0;
    let points: Vec<(f64, f64)> = series
        .iter()
        .map(|&(t, v)| {
            running += v;
            (t as f64, if counter { running } else { v })
        })
        .collect();
    Chart {
        title: format!("{}: {name}", data.title),
        subtitle: data.params.clone(),
        x_label: x_label(data).into(),
        y_label: if counter {
            format!("{name} (running total)")
        } else {
            name.to_string()
        },
        lines: vec![Line {
            points,
            color: draw::palette(0).to_rgba(),
            width: 3,
            label: None,
        }],
        intervals: Vec::new(),
    }
}

/// One line per agent (every k-th beyond [`MAX_AGENT_LINES`]), coloured by its first value.
fn agents_chart(data: &data::RunData, name: &str, agents: &[(String, data::Series)]) -> Chart {
    let every = agents.len().div_ceil(MAX_AGENT_LINES).max(1);
    let shown: Vec<&(String, data::Series)> = agents.iter().step_by(every).collect();
    let firsts: Vec<f64> = shown.iter().filter_map(|(_, s)| s.first().map(|p| p.1)).collect();
    let (lo, hi) = firsts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let alpha = if shown.len() > 200 { 0.35 } else { 0.8 };
    let lines = shown
        .iter()
        .map(|(_, series)| {
            let first = series.first().map_or(0.0, |p| p.1);
            let t = if hi > lo { (first - lo) / (hi - lo) } else { 0.5 };
            Line {
                points: filled(series, data.last_tick),
                color: draw::scale_color(t).mix(alpha),
                width: 1,
                label: None,
            }
        })
        .collect();
    let who = if every > 1 {
        format!("every {every}th of {} agents", agents.len())
    } else {
        format!("{} agents", agents.len())
    };
    let subtitle = [data.params.as_str(), &who]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("; ");
    Chart {
        title: format!("{}: each agent's {name}", data.title),
        subtitle,
        x_label: x_label(data).into(),
        y_label: name.to_string(),
        lines,
        intervals: Vec::new(),
    }
}

/// An agent's values as a line to `last_tick`: straight between ticks when it reported every
/// tick to the end (a trajectory), in steps when it reported only changes (a flag), held to
/// the end.
fn filled(series: &[(u64, f64)], last_tick: u64) -> Vec<(f64, f64)> {
    let dense =
        series.windows(2).all(|w| w[1].0 == w[0].0 + 1) && series.last().is_some_and(|p| p.0 == last_tick);
    let mut points = Vec::with_capacity(series.len() * 2 + 1);
    for (i, &(t, v)) in series.iter().enumerate() {
        if !dense && i > 0 {
            points.push((t as f64, series[i - 1].1));
        }
        points.push((t as f64, v));
    }
    if let Some(&(t, v)) = series.last()
        && t < last_tick
    {
        points.push((last_tick as f64, v));
    }
    points
}

/// A metric's name as a file name: letters, digits, `-`, `_` and `.`; the rest `_`.
pub fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_step_and_trajectories_run_straight() {
        assert_eq!(
            filled(&[(0, 0.0), (3, 1.0)], 5),
            vec![(0.0, 0.0), (3.0, 0.0), (3.0, 1.0), (5.0, 1.0)]
        );
        assert_eq!(filled(&[(0, 0.2), (1, 0.3)], 1), vec![(0.0, 0.2), (1.0, 0.3)]);
        // A flag set at tick 1 of a longer run steps too.
        assert_eq!(
            filled(&[(0, 0.0), (1, 1.0)], 3),
            vec![(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (3.0, 1.0)]
        );
        assert_eq!(file_stem("a b/c"), "a_b_c");
    }
}
