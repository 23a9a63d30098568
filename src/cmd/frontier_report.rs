//! The frontier on a terminal and as a plot.
//!
//! The plot's labels are drawn with a system font (DejaVu Sans from Debian's
//! `fonts-dejavu-core`, or the TrueType file `PRESCALE_FONT` names): the binary
//! ships none, and an unlabelled frontier says nothing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context};
use plotters::prelude::*;
use plotters::style::FontStyle;

use prescale::backtest::frontier::{Summary, TraceFrontier};
use prescale::backtest::Strategy;

/// Where a sans-serif TrueType font is looked for when `PRESCALE_FONT` is unset.
const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Every variant's mean cost and shortfall, one line each, envelope points marked.
pub fn table(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "frontier over {} trace(s), each weighing the same: cost relative to the default reactive HPA (no headroom, tolerance 0.1), shortfall against capacity",
        s.traces
    );
    let _ = writeln!(
        out,
        "  {:<30} {:>10} {:>16} {:>12} {:>16} {:>12}",
        "variant", "cost %", "short % demand", "under min", "sum under rep-min", "sum rep-h"
    );
    for p in &s.overall {
        let _ = writeln!(
            out,
            "  {:<30} {:>10.1} {:>16.4} {:>12.1} {:>16.1} {:>12.1}{}",
            p.label,
            p.mean_relative_cost_pct,
            p.mean_shortfall_pct_of_demand,
            p.mean_under_minutes,
            p.sum.under_provisioned_replica_minutes,
            p.sum.replica_hours,
            if p.on_envelope { "  *" } else { "" }
        );
    }
    out.push_str("  (* on the strategy's envelope: no cheaper variant falls short less)\n");
    out
}

/// The matched-cost comparison: the headline, then one line per trace.
pub fn matched(s: &Summary, traces: &[TraceFrontier]) -> String {
    let m = &s.matched_cost;
    let mut out = String::new();
    let reference = s.reference.map(|v| v.label()).unwrap_or_default();
    let _ = writeln!(
        out,
        "matched cost: at the replica-hours of {reference}, the best reactive tuning of the same cost (any headroom, tolerance 0.1 or 0) falls short by"
    );
    let _ = writeln!(
        out,
        "  {:+.1}% more under-provisioned replica-minutes than predictive, per trace on average ({:+.1}% on the sums)",
        m.shortfall_reduction_pct, m.sum_shortfall_reduction_pct
    );
    for t in traces {
        let x = &t.matched;
        let _ =
            writeln!(
            out,
            "  {:<48} {:>10.1} rep-h  reactive {:>10.2}  predictive {:>10.2} rep-min  {:+7.1}%{}",
            t.name,
            x.replica_hours,
            x.reactive_shortfall,
            x.predictive_shortfall,
            x.shortfall_reduction_pct,
            if x.covered { "" } else { "  (outside the reactive sweep)" }
        );
    }
    if let Some((name, pct)) = &m.worst_trace {
        let _ = writeln!(out, "  worst trace: {name} ({pct:+.1}%)");
    }
    out
}

/// A font for the plot's labels, registered once as `sans-serif`.
fn font() -> anyhow::Result<()> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let candidates: Vec<PathBuf> = match std::env::var_os("PRESCALE_FONT") {
            Some(p) => vec![PathBuf::from(p)],
            None => FONT_PATHS.iter().map(PathBuf::from).collect(),
        };
        let path = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
            format!(
                "no font for the plot's labels: looked for {}; install Debian's fonts-dejavu-core or set PRESCALE_FONT to a TrueType file",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a TrueType/OpenType font", path.display()))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// Draws the frontier to `out` (.svg or .png).
///
/// # Errors
/// A bad extension, no font, or the file cannot be written.
pub fn write_plot(out: &Path, s: &Summary) -> anyhow::Result<()> {
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    font()?;
    let size = (1100, 750);
    match ext.as_str() {
        "svg" => {
            let root = SVGBackend::new(out, size).into_drawing_area();
            draw(&root, s)?;
            root.present()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("writing {}", out.display()))?;
        }
        "png" => {
            let root = BitMapBackend::new(out, size).into_drawing_area();
            draw(&root, s)?;
            root.present()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("writing {}", out.display()))?;
        }
        _ => bail!(
            "--frontier-plot must end in .svg or .png, got {}",
            out.display()
        ),
    }
    Ok(())
}

/// The lines drawn: a strategy with a tolerance and headroom, in cost order.
struct Line {
    label: String,
    colour: RGBColor,
    points: Vec<(f64, f64)>,
}

fn lines(s: &Summary) -> Vec<Line> {
    let mut out: Vec<Line> = Vec::new();
    for p in &s.overall {
        let v = p.variant;
        let (label, colour) = match v.strategy {
            Strategy::Reactive => (
                format!("reactive, tolerance {}", v.tolerance.unwrap_or_default()),
                if v.tolerance.unwrap_or_default() > 0.0 {
                    RGBColor(214, 39, 40)
                } else {
                    RGBColor(255, 127, 14)
                },
            ),
            Strategy::Predictive => (
                format!("predictive, headroom {:.0}%", v.headroom * 100.0),
                if v.headroom <= 0.0 {
                    RGBColor(31, 119, 180)
                } else {
                    RGBColor(23, 190, 207)
                },
            ),
            Strategy::Oracle => ("oracle".to_string(), RGBColor(44, 160, 44)),
        };
        let xy = (p.mean_relative_cost_pct, p.mean_shortfall_pct_of_demand);
        match out.iter_mut().find(|l| l.label == label) {
            Some(l) => l.points.push(xy),
            None => out.push(Line {
                label,
                colour,
                points: vec![xy],
            }),
        }
    }
    for l in &mut out {
        l.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    s: &Summary,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("drawing the frontier: {e}");
    root.fill(&WHITE).map_err(err)?;
    let lines = lines(s);
    let pts = || lines.iter().flat_map(|l| l.points.iter());
    let x_min = pts().map(|p| p.0).fold(f64::INFINITY, f64::min).min(100.0) * 0.97;
    let x_max = pts()
        .map(|p| p.0)
        .fold(f64::NEG_INFINITY, f64::max)
        .max(101.0)
        * 1.02;
    let y_max = pts().map(|p| p.1).fold(0.0f64, f64::max).max(1e-6) * 1.08;
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!(
                "Cost vs shortfall over {} trace(s), each weighing the same",
                s.traces
            ),
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x_min..x_max, 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("replica-hours, % of the default reactive HPA (no headroom, tolerance 0.1)")
        .y_desc("under-provisioned replica-minutes, % of demand")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(err)?;
    for l in &lines {
        let colour = l.colour;
        let series = chart
            .draw_series(LineSeries::new(l.points.clone(), colour.stroke_width(2)))
            .map_err(err)?;
        series.label(l.label.clone()).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
        });
        chart
            .draw_series(l.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(err)?;
    }
    // The two points the matched-cost comparison starts from.
    let reference = s
        .overall
        .iter()
        .find(|p| Some(p.variant) == s.reference)
        .map(|p| (p.mean_relative_cost_pct, p.mean_shortfall_pct_of_demand));
    if let Some(r) = reference {
        chart
            .draw_series(std::iter::once(Circle::new(r, 7, BLACK.stroke_width(2))))
            .map_err(err)?
            .label("predictive as served")
            .legend(|(x, y)| Circle::new((x + 10, y), 5, BLACK.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}
