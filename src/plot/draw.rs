//! Line charts, drawn twice from one description: as SVG (for papers: vector, editable) and
//! as PNG (for slides and notebooks), both [`WIDTH`] x [`HEIGHT`] pixels.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::PlotError;
use super::font::{self, FAMILY};

/// The size of every plot, in pixels (the SVG's `width` and `height`).
pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 750;

/// One line of a chart.
pub struct Line {
    pub points: Vec<(f64, f64)>,
    pub color: RGBAColor,
    pub width: u32,
    /// Shown in the legend when set.
    pub label: Option<String>,
}

/// A vertical interval at `x`, from `low` to `high` (a confidence interval).
pub struct Interval {
    pub x: f64,
    pub low: f64,
    pub high: f64,
}

/// A chart: titles, axes, lines and intervals.
pub struct Chart {
    pub title: String,
    pub subtitle: String,
    pub x_label: String,
    pub y_label: String,
    pub lines: Vec<Line>,
    pub intervals: Vec<Interval>,
}

/// Anything a plot shows, painted on a drawing area of either backend.
pub trait Picture {
    fn paint<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>
    where
        DB::ErrorType: 'static;
}

/// Writes `picture` as `{stem}.svg` and `{stem}.png`; returns their paths.
///
/// # Errors
///
/// No font to draw text with, or a file that cannot be written.
pub fn write(picture: &impl Picture, stem: &Path) -> Result<Vec<PathBuf>, PlotError> {
    font::ensure().map_err(PlotError::NoFont)?;
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    {
        let area = SVGBackend::new(&svg, (WIDTH, HEIGHT)).into_drawing_area();
        let failed = |e: String| PlotError::Draw(format!("{}: {e}", svg.display()));
        picture.paint(&area).map_err(failed)?;
        area.present().map_err(|e| failed(e.to_string()))?;
    }
    {
        let area = BitMapBackend::new(&png, (WIDTH, HEIGHT)).into_drawing_area();
        let failed = |e: String| PlotError::Draw(format!("{}: {e}", png.display()));
        picture.paint(&area).map_err(failed)?;
        area.present().map_err(|e| failed(e.to_string()))?;
    }
    Ok(vec![svg, png])
}

impl Chart {
    /// Writes `{stem}.svg` and `{stem}.png`; returns their paths.
    ///
    /// # Errors
    ///
    /// No font to draw text with, or a file that cannot be written.
    pub fn write(&self, stem: &Path) -> Result<Vec<PathBuf>, PlotError> {
        write(self, stem)
    }
}

impl Picture for Chart {
    fn paint<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let (x_range, y_range) = self.ranges();
        let root = root
            .titled(&self.title, (FAMILY, 30).into_font().color(&BLACK))
            .map_err(e)?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .margin(20)
            .margin_top(8)
            .x_label_area_size(60)
            .y_label_area_size(90);
        if !self.subtitle.is_empty() {
            builder.caption(
                &self.subtitle,
                (FAMILY, 20).into_font().color(&RGBColor(80, 80, 80)),
            );
        }
        let mut chart = builder.build_cartesian_2d(x_range, y_range).map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .axis_desc_style((FAMILY, 22))
            .label_style((FAMILY, 18))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(215, 215, 215))
            .x_label_formatter(&|x| trim(*x))
            .y_label_formatter(&|y| trim(*y))
            .draw()
            .map_err(e)?;
        let mut labelled = false;
        for line in &self.lines {
            let style = ShapeStyle::from(line.color).stroke_width(line.width);
            // A line of one point draws nothing: a run of less than a second in free mode,
            // or of one tick, would get an empty frame. A dot shows the value.
            if let [only] = line.points.as_slice() {
                chart
                    .draw_series(std::iter::once(Circle::new(*only, 6, style.filled())))
                    .map_err(e)?;
            }
            let series = chart
                .draw_series(LineSeries::new(line.points.iter().copied(), style))
                .map_err(e)?;
            if let Some(label) = &line.label {
                labelled = true;
                let color = line.color;
                series
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
            }
        }
        for i in &self.intervals {
            let style = ShapeStyle::from(RGBColor(40, 40, 40)).stroke_width(2);
            chart
                .draw_series(std::iter::once(ErrorBar::new_vertical(
                    i.x,
                    i.low,
                    (i.low + i.high) / 2.0,
                    i.high,
                    style,
                    10,
                )))
                .map_err(e)?;
        }
        if labelled {
            chart
                .configure_series_labels()
                .label_font((FAMILY, 18))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(e)?;
        }
        Ok(())
    }
}

impl Chart {
    /// The axes' ranges: every point and interval, with a little room.
    fn ranges(&self) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
        let xs = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.0))
            .chain(self.intervals.iter().map(|i| i.x));
        let ys = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .chain(self.intervals.iter().flat_map(|i| [i.low, i.high]));
        // Intervals (a sweep's points) need room at the ends; time series start at tick 0.
        let x_pad = if self.intervals.is_empty() { 0.0 } else { 0.04 };
        (padded(xs, x_pad), padded(ys, 0.05))
    }
}

/// `min..max` of `values` (finite ones), widened by `pad` of the span; a point gets a unit.
fn padded(values: impl Iterator<Item = f64>, pad: f64) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5)..(hi + 0.5);
    }
    let room = (hi - lo) * pad;
    (lo - room)..(hi + room)
}

/// A tick label: no trailing zeros, at most four decimals.
fn trim(x: f64) -> String {
    let text = format!("{x:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".into() } else { text.into() }
}

/// A colour for position `t` in `[0, 1]` along a perceptually even scale from dark blue
/// through teal and green to yellow (anchor colours of the viridis map, interpolated).
pub fn scale_color(t: f64) -> RGBColor {
    const ANCHORS: [(u8, u8, u8); 5] = [
        (68, 1, 84),
        (59, 82, 139),
        (33, 145, 140),
        (94, 201, 98),
        (253, 231, 37),
    ];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let scaled = t * (ANCHORS.len() - 1) as f64;
    let i = (scaled.floor() as usize).min(ANCHORS.len() - 2);
    let f = scaled - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (ANCHORS[i], ANCHORS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Distinct colours for a handful of labelled lines.
pub fn palette(i: usize) -> RGBColor {
    const COLORS: [(u8, u8, u8); 6] = [
        (31, 119, 180),
        (214, 39, 40),
        (44, 160, 44),
        (255, 127, 14),
        (148, 103, 189),
        (23, 190, 207),
    ];
    let (r, g, b) = COLORS[i % COLORS.len()];
    RGBColor(r, g, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_labels() {
        assert_eq!(padded([2.0, 2.0].into_iter(), 0.1), 1.5..2.5);
        assert_eq!(padded(std::iter::empty(), 0.1), 0.0..1.0);
        assert_eq!(trim(0.5), "0.5");
        assert_eq!(trim(3.0), "3");
        assert_eq!(trim(-0.00001), "0");
        assert_eq!(scale_color(0.0), RGBColor(68, 1, 84));
        assert_eq!(scale_color(1.0), RGBColor(253, 231, 37));
    }

    #[test]
    fn a_line_of_one_point_is_drawn_as_a_dot() {
        let chart = |points: Vec<(f64, f64)>| Chart {
            title: "t".into(),
            subtitle: String::new(),
            x_label: "x".into(),
            y_label: "y".into(),
            lines: vec![Line {
                points,
                color: RGBColor(0, 0, 0).to_rgba(),
                width: 2,
                label: None,
            }],
            intervals: Vec::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let circles = |points, name: &str| {
            let written = chart(points).write(&dir.path().join(name)).unwrap();
            let svg = written
                .iter()
                .find(|p| p.extension().is_some_and(|e| e == "svg"))
                .unwrap();
            std::fs::read_to_string(svg).unwrap().matches("<circle").count()
        };
        assert_eq!(circles(vec![(0.0, 100_000.0)], "one"), 1);
        assert_eq!(circles(vec![(0.0, 1.0), (1.0, 2.0)], "two"), 0);
    }
}
