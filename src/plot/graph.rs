//! The network a run had (`network.csv`): its degree distributions (`degrees`), and for up to
//! [`MAX_AGENTS`] agents the graph itself (`network`), drawn as a circle of agents in declaration order
//! with a line per follow: a ring lattice is the circle's rim, rewired edges cut across it,
//! hubs gather lines. Agents are coloured by the last value of the run's first agent-level
//! series (opinion, informed, ...) when there is one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::PlotError;
use super::data::RunData;
use super::draw::{self, Chart, Line, Picture, palette, scale_color};
use super::font::FAMILY;

/// The most agents drawn: past this, a circle of dots and lines is only ink.
pub const MAX_AGENTS: usize = 500;

/// Who follows whom, from `network.csv`: agents in first-seen order, follows as positions.
struct Graph {
    agents: Vec<String>,
    follows: Vec<(usize, usize)>,
}

fn read(path: &Path) -> Result<Graph, String> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut graph = Graph {
        agents: Vec::new(),
        follows: Vec::new(),
    };
    let mut position = |name: &str, graph: &mut Graph| -> usize {
        *index.entry(name.to_string()).or_insert_with(|| {
            graph.agents.push(name.to_string());
            graph.agents.len() - 1
        })
    };
    for record in reader.records() {
        let record = record.map_err(|e| format!("{}: {e}", path.display()))?;
        let (Some(a), Some(b)) = (record.get(0), record.get(1)) else {
            return Err(format!("{}: a line without two names", path.display()));
        };
        let a = position(a, &mut graph);
        let b = position(b, &mut graph);
        graph.follows.push((a, b));
    }
    graph.follows.sort_unstable();
    Ok(graph)
}

/// Draws `plots/network.svg` and `.png` when the run has a `network.csv` of at most
/// [`MAX_AGENTS`] agents; returns what it wrote (nothing otherwise).
///
/// # Errors
///
/// An unreadable `network.csv`, no font, or a file that cannot be written.
pub fn draw(run_dir: &Path, data: &RunData, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let path = run_dir.join(crate::network::NETWORK_FILE);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let mut graph = read(&path).map_err(PlotError::Data)?;
    // Agents that follow no one and have no followers are in agents.csv only.
    if let Some((_, series)) = data.agents.iter().next() {
        for (agent, _) in series {
            if !graph.agents.contains(agent) {
                graph.agents.push(agent.clone());
            }
        }
    }
    let mut written = degree_chart(&graph, data).write(&dir.join("degrees"))?;
    if graph.agents.len() > MAX_AGENTS {
        tracing::info!(
            "the network has {} agents: its picture is drawn only up to {MAX_AGENTS}",
            graph.agents.len()
        );
        return Ok(written);
    }
    let (colors, scale) = colors(&graph, data);
    let coloured = scale
        .as_ref()
        .map_or(String::new(), |s| format!(", coloured by last {}", s.name));
    let title = format!(
        "{}: network ({} agents, {} follows{coloured})",
        data.title,
        graph.agents.len(),
        graph.follows.len()
    );
    let picture = NetworkPicture {
        graph: &graph,
        colors: &colors,
        scale: scale.as_ref(),
        title: &title,
    };
    written.extend(draw::write(&picture, &dir.join("network"))?);
    Ok(written)
}

/// The graph as a circle of coloured agents, titled, with the colours' scale beside it.
struct NetworkPicture<'a> {
    graph: &'a Graph,
    colors: &'a [RGBColor],
    scale: Option<&'a ColorScale>,
    title: &'a str,
}

/// What the agents' colours mean: `name`'s last values, from `low` (dark) to `high` (bright).
struct ColorScale {
    name: String,
    low: f64,
    high: f64,
}

/// The degree distributions: how many agents follow `d` others, and how many have `d`
/// followers.
fn degree_chart(graph: &Graph, data: &RunData) -> Chart {
    let n = graph.agents.len();
    let (mut out, mut into) = (vec![0usize; n], vec![0usize; n]);
    for &(a, b) in &graph.follows {
        out[a] += 1;
        into[b] += 1;
    }
    let counts = |degrees: &[usize]| -> Vec<(f64, f64)> {
        let mut by_degree: BTreeMap<usize, usize> = BTreeMap::new();
        for &d in degrees {
            *by_degree.entry(d).or_default() += 1;
        }
        by_degree.into_iter().map(|(d, c)| (d as f64, c as f64)).collect()
    };
    // The first line wider, so that where they coincide (a graph of mutual follows) both
    // show.
    let line = |points, color, width, label: &str| Line {
        points,
        color,
        width,
        label: Some(label.to_string()),
    };
    Chart {
        title: format!("{}: degree distribution", data.title),
        subtitle: format!("{n} agents, {} follows", graph.follows.len()),
        x_label: "degree".into(),
        y_label: "agents".into(),
        lines: vec![
            line(counts(&out), palette(0).to_rgba(), 7, "following (out-degree)"),
            line(counts(&into), palette(1).to_rgba(), 2, "followers (in-degree)"),
        ],
        intervals: Vec::new(),
    }
}

/// Each agent's colour: its last value of the first agent-level series, scaled between the
/// series' least and greatest; grey without one (and then no scale).
fn colors(graph: &Graph, data: &RunData) -> (Vec<RGBColor>, Option<ColorScale>) {
    let grey = RGBColor(90, 90, 90);
    let Some((name, series)) = data.agents.iter().next() else {
        return (vec![grey; graph.agents.len()], None);
    };
    let last: BTreeMap<&str, f64> = series
        .iter()
        .filter_map(|(agent, points)| points.last().map(|&(_, v)| (agent.as_str(), v)))
        .collect();
    let (low, high) = last
        .values()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let span = if high > low { high - low } else { 1.0 };
    let colors = graph
        .agents
        .iter()
        .map(|a| {
            last.get(a.as_str())
                .map_or(grey, |v| scale_color((v - low) / span))
        })
        .collect();
    let scale = (low <= high).then(|| ColorScale {
        name: name.clone(),
        low,
        high,
    });
    (colors, scale)
}

/// The colour scale as a bar at the right of `area`: `high` at the top, `low` at the foot,
/// the series' name above. Returns the width it took.
fn draw_scale<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, scale: &ColorScale) -> Result<u32, String>
where
    DB::ErrorType: 'static,
{
    const BAR: i32 = 24;
    const STEPS: i32 = 100;
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let (width, height) = area.dim_in_pixel();
    let (width, height) = (width as i32, height as i32);
    let (top, foot) = (60, height - 40);
    let left = width - 90;
    let font = (FAMILY, 18).into_font().color(&BLACK);
    for step in 0..STEPS {
        let y0 = top + (foot - top) * step / STEPS;
        let y1 = top + (foot - top) * (step + 1) / STEPS;
        let t = 1.0 - f64::from(step) / f64::from(STEPS - 1);
        area.draw(&Rectangle::new(
            [(left, y0), (left + BAR, y1)],
            scale_color(t).filled(),
        ))
        .map_err(e)?;
    }
    area.draw(&Rectangle::new(
        [(left, top), (left + BAR, foot)],
        BLACK.stroke_width(1),
    ))
    .map_err(e)?;
    let label = |v: f64| format!("{v:.3}");
    area.draw(&Text::new(
        label(scale.high),
        (left + BAR + 6, top - 6),
        font.clone(),
    ))
    .map_err(e)?;
    area.draw(&Text::new(
        label(scale.low),
        (left + BAR + 6, foot - 12),
        font.clone(),
    ))
    .map_err(e)?;
    area.draw(&Text::new(scale.name.clone(), (left - 10, top - 36), font))
        .map_err(e)?;
    Ok(110)
}

impl Picture for NetworkPicture<'_> {
    fn paint<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        let (graph, colors, title) = (self.graph, self.colors, self.title);
        let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let root = root
            .titled(title, (FAMILY, 30).into_font().color(&BLACK))
            .map_err(e)?;
        let legend = match self.scale {
            Some(scale) => draw_scale(&root, scale)?,
            None => 0,
        };
        let (width, height) = root.dim_in_pixel();
        let width = width.saturating_sub(legend);
        let (cx, cy) = (f64::from(width) / 2.0, f64::from(height) / 2.0);
        let radius = cx.min(cy) - 30.0;
        let n = graph.agents.len().max(1) as f64;
        let at = |i: usize| -> (i32, i32) {
            let angle = std::f64::consts::TAU * i as f64 / n - std::f64::consts::FRAC_PI_2;
            (
                (cx + radius * angle.cos()) as i32,
                (cy + radius * angle.sin()) as i32,
            )
        };
        let edge = RGBColor(120, 120, 120).mix(0.25);
        for &(a, b) in &graph.follows {
            // A follow both ways is one line.
            if a > b && graph.follows.binary_search(&(b, a)).is_ok() {
                continue;
            }
            root.draw(&PathElement::new(vec![at(a), at(b)], edge.stroke_width(1)))
                .map_err(e)?;
        }
        let dot = if n > 200.0 { 3 } else { 5 };
        for (i, color) in colors.iter().enumerate() {
            root.draw(&Circle::new(at(i), dot, color.filled())).map_err(e)?;
        }
        Ok(())
    }
}
