//! Plots of demand against ready capacity, one panel per strategy.
//!
//! plotters draws the lines; text needs a font, and this crate ships none, so
//! plotters draws no text at all. The SVG gets its labels (title, panel names,
//! axis ticks, legend) as plain `<text>` elements added here, which any viewer
//! renders with its own fonts. The PNG has the same lines and legend swatches but no
//! text: SVG is the labelled format. Colours: demand black, reactive red,
//! predictive blue, oracle green.
//!
//! Long traces are reduced to about one point per pixel column, each the mean of
//! its column (a peak of demand and a low of ready capacity from different moments
//! of one column would show shortfalls that never happened).

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::human_ms;
use super::sim::{Strategy, TraceResult};
use super::{Error, Result};

/// Plot width in pixels.
pub const WIDTH: u32 = 1200;
/// Plot height in pixels.
pub const HEIGHT: u32 = 900;

const MARGIN_LEFT: u32 = 70;
const MARGIN_RIGHT: u32 = 20;
const MARGIN_TOP: u32 = 40;
const MARGIN_BOTTOM: u32 = 40;
/// Where the legend starts, counted from the right edge.
const LEGEND_FROM_RIGHT: i32 = 300;

/// Round tick positions from 0 to at most `max`: a step of 1, 2 or 5 times a power
/// of ten giving 3 to 6 ticks, and how many decimals its labels need.
fn ticks(max: f64) -> (Vec<f64>, usize) {
    if !(max.is_finite() && max > 0.0) {
        return (vec![0.0], 0);
    }
    let raw = max / 4.0;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power);
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    let n = (max / step + 1e-9).floor() as usize;
    ((0..=n).map(|k| k as f64 * step).collect(), decimals)
}

/// Width in pixels a label of `chars` characters takes at `size` (sans-serif
/// averages about 0.6 em per character).
fn text_width(chars: usize, size: u32) -> f64 {
    0.6 * f64::from(size) * chars as f64
}

fn colour(s: Strategy) -> RGBColor {
    match s {
        Strategy::Reactive => RGBColor(214, 39, 40),
        Strategy::Predictive => RGBColor(31, 119, 180),
        Strategy::Oracle => RGBColor(44, 160, 44),
    }
}

/// The data of one plot, reduced to at most one point per pixel column.
struct Reduced {
    /// Hours since the trace's start, per point.
    x: Vec<f64>,
    demand: Vec<f64>,
    ready: Vec<(Strategy, Vec<f64>)>,
    x_max: f64,
    y_max: f64,
}

fn reduce(r: &TraceResult) -> Reduced {
    let n = r.demand.len().max(1);
    let columns = (WIDTH - MARGIN_LEFT - MARGIN_RIGHT) as usize;
    let per = n.div_ceil(columns).max(1);
    let hours = r.step_ms as f64 / 3_600_000.0;
    let x: Vec<f64> = (0..n).step_by(per).map(|i| i as f64 * hours).collect();
    let bucket_mean = |v: &[f32]| -> Vec<f64> {
        v.chunks(per)
            .map(|c| c.iter().map(|&x| f64::from(x)).sum::<f64>() / c.len() as f64)
            .collect()
    };
    let demand = bucket_mean(&r.demand);
    let ready: Vec<(Strategy, Vec<f64>)> = r
        .runs
        .iter()
        .map(|run| (run.strategy, bucket_mean(&run.ready_per_step)))
        .collect();
    let y_max = demand
        .iter()
        .chain(ready.iter().flat_map(|(_, v)| v.iter()))
        .copied()
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 1.05;
    Reduced {
        x_max: (n as f64 * hours).max(1e-9),
        x,
        demand,
        ready,
        y_max,
    }
}

/// Draws the panels on any plotters backend (no text).
///
/// # Errors
/// [`Error::Plot`] when the backend fails.
pub fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, result: &TraceResult) -> Result<()> {
    draw_inner(root, &reduce(result)).map_err(|e| Error::Plot(e.to_string()))
}

fn draw_inner<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    d: &Reduced,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let panels = root.split_evenly((d.ready.len().max(1), 1));
    for (panel, (strategy, ready)) in panels.iter().zip(&d.ready) {
        let mut chart = ChartBuilder::on(panel)
            .margin_left(MARGIN_LEFT)
            .margin_right(MARGIN_RIGHT)
            .margin_top(MARGIN_TOP)
            .margin_bottom(MARGIN_BOTTOM)
            .build_cartesian_2d(0.0..d.x_max, 0.0..d.y_max)?;
        let grey = RGBColor(220, 220, 220);
        for y in ticks(d.y_max).0 {
            chart.draw_series(LineSeries::new([(0.0, y), (d.x_max, y)], grey))?;
        }
        chart.draw_series(LineSeries::new(
            d.x.iter().copied().zip(d.demand.iter().copied()),
            BLACK.stroke_width(1),
        ))?;
        chart.draw_series(LineSeries::new(
            d.x.iter().copied().zip(ready.iter().copied()),
            colour(*strategy).stroke_width(2),
        ))?;
        // Legend swatches, top right of each panel: demand, then this strategy.
        let (w, _) = panel.dim_in_pixel();
        let x0 = w as i32 - LEGEND_FROM_RIGHT;
        panel.draw(&PathElement::new(
            vec![(x0, 14), (x0 + 30, 14)],
            BLACK.stroke_width(2),
        ))?;
        panel.draw(&PathElement::new(
            vec![(x0 + 110, 14), (x0 + 140, 14)],
            colour(*strategy).stroke_width(3),
        ))?;
    }
    root.present()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The plot as a labelled SVG document.
///
/// # Errors
/// [`Error::Plot`] when drawing fails.
pub fn svg(result: &TraceResult) -> Result<String> {
    let d = reduce(result);
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        draw_inner(&root, &d).map_err(|e| Error::Plot(e.to_string()))?;
    }
    let panels = d.ready.len().max(1) as u32;
    let panel_h = HEIGHT / panels;
    let plot_w = f64::from(WIDTH - MARGIN_LEFT - MARGIN_RIGHT);
    let plot_h = f64::from(panel_h - MARGIN_TOP - MARGIN_BOTTOM);
    let mut text = String::new();
    let mut label = |x: f64, y: f64, anchor: &str, size: u32, s: &str| {
        text.push_str(&format!(
            "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\" font-family=\"sans-serif\" font-size=\"{size}\">{}</text>\n",
            escape(s)
        ));
    };
    let mut axis_names = String::new();
    let (y_ticks, y_decimals) = ticks(d.y_max);
    let (x_ticks, x_decimals) = ticks(d.x_max);
    for (i, (strategy, _)) in d.ready.iter().enumerate() {
        let top = f64::from(i as u32 * panel_h);
        let measures = result
            .run(*strategy)
            .map(|r| r.measures)
            .unwrap_or_default();
        label(
            f64::from(MARGIN_LEFT),
            top + 16.0,
            "start",
            14,
            &format!("{} — {}", result.name, strategy.as_str()),
        );
        label(
            f64::from(MARGIN_LEFT),
            top + 32.0,
            "start",
            11,
            &format!(
                "under-provisioned {:.1} replica-min, {:.1} replica-h; step {}, means per pixel column",
                measures.under_provisioned_replica_minutes,
                measures.replica_hours,
                human_ms(result.step_ms)
            ),
        );
        let lx = f64::from(WIDTH) - f64::from(LEGEND_FROM_RIGHT);
        label(lx + 35.0, top + 18.0, "start", 12, "demand");
        label(
            lx + 145.0,
            top + 18.0,
            "start",
            12,
            &format!("ready ({})", strategy.as_str()),
        );
        for &v in &y_ticks {
            let y = top + f64::from(MARGIN_TOP) + plot_h * (1.0 - v / d.y_max);
            label(
                f64::from(MARGIN_LEFT) - 6.0,
                y + 4.0,
                "end",
                11,
                &format!("{v:.y_decimals$}"),
            );
        }
        for &v in &x_ticks {
            let s = format!("{v:.x_decimals$} h");
            // Centred under its tick, but never past the picture's edges.
            let half = text_width(s.chars().count(), 11) / 2.0;
            let x = (f64::from(MARGIN_LEFT) + plot_w * v / d.x_max)
                .clamp(half, f64::from(WIDTH) - half);
            label(
                x,
                top + f64::from(panel_h - MARGIN_BOTTOM) + 16.0,
                "middle",
                11,
                &s,
            );
        }
        // The axis name runs upwards along the axis, clear of the tick labels.
        let (ax, ay) = (14.0, top + f64::from(MARGIN_TOP) + plot_h / 2.0);
        axis_names.push_str(&format!(
            "<text x=\"{ax:.1}\" y=\"{ay:.1}\" transform=\"rotate(-90 {ax:.1} {ay:.1})\" text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"11\">replicas</text>\n"
        ));
    }
    text.push_str(&axis_names);
    match buf.rfind("</svg>") {
        Some(end) => buf.insert_str(end, &text),
        None => return Err(Error::Plot("the SVG backend wrote no document".to_string())),
    }
    Ok(buf)
}
