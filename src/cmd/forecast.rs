//! `prescale forecast`: fit a model to a recorded series and print the forecast.

use std::path::PathBuf;

use anyhow::Context as _;
use prescale::forecast::{Fit, Forecast, ModelReport, ModelSpec, Predict};
use prescale::series::{self, LabeledSeries, ResampleOptions};
use serde::Serialize;

use crate::cmd::backtest::parse_duration_ms;

/// The built-in trace: CPU of an AWS auto-scaling group (NAB, MIT licence; see
/// tests/data/README.md), 5-minute samples over two months.
const BUNDLED_NAME: &str = "nab_cpu_utilization_asg_misconfiguration.csv";
const BUNDLED: &str = include_str!("../../tests/data/nab_cpu_utilization_asg_misconfiguration.csv");

/// Arguments of `prescale forecast`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Recorded series (CSV `timestamp,value`, Prometheus range-query JSON or
    /// OpenMetrics); the bundled NAB CPU trace when omitted.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Grid step (`5m`, `1h`); inferred from the samples when omitted.
    #[arg(long, value_parser = parse_duration_ms)]
    pub step: Option<i64>,
    /// How far ahead to forecast (`1h`, `2d`).
    #[arg(long, default_value = "1h", value_parser = parse_duration_ms)]
    pub horizon: i64,
    /// The model: one of the bundled specs (auto, seasonal-naive, seasonal-naive-weekly, holt-winters-damped, mstl-daily-weekly, linear-lags).
    #[arg(long, default_value = "auto")]
    pub model: String,
    /// Quantile levels to print, comma-separated, each in (0, 1).
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.9")]
    pub quantiles: Vec<f64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One series' forecast, as printed with `--json`.
#[derive(Debug, Serialize)]
struct Output {
    series: String,
    step_ms: i64,
    history_points: usize,
    report: ModelReport,
    points: Vec<Point>,
}

#[derive(Debug, Serialize)]
struct Point {
    time_ms: i64,
    time: String,
    mean: f64,
    quantiles: Vec<(f64, f64)>,
}

/// Runs `prescale forecast`.
///
/// # Errors
/// When the input cannot be read, the model is unknown or no model fits it.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut options = ResampleOptions::default();
    if let Some(step) = args.step {
        anyhow::ensure!(step > 0, "--step: must be positive");
        options = options.with_step_ms(step);
    }
    anyhow::ensure!(args.horizon > 0, "--horizon: must be positive");
    let (source, loaded): (String, Vec<LabeledSeries>) = match &args.input {
        Some(path) => (
            path.display().to_string(),
            series::load_file(path, &options)?
                .into_iter()
                .map(|(s, _)| s)
                .collect(),
        ),
        None => {
            let raw = series::read_csv(BUNDLED).context("the bundled trace")?;
            let (s, _) = raw.resample(&options).context("the bundled trace")?;
            (format!("bundled {BUNDLED_NAME}"), vec![s])
        }
    };
    anyhow::ensure!(!loaded.is_empty(), "{source}: no series in the input");
    let spec = ModelSpec::by_name(&args.model).context("--model")?;
    for labeled in loaded {
        let s = &labeled.series;
        let steps = usize::try_from((args.horizon + s.step_ms - 1) / s.step_ms)
            .unwrap_or(1)
            .max(1);
        let fitted = spec
            .clone()
            .with_horizon(steps)
            .fit(&s.values, s.step_ms)
            .with_context(|| format!("{source}: fitting {}", args.model))?;
        let fc = fitted
            .predict(steps, &args.quantiles)
            .context("--quantiles")?;
        let name = if labeled.labels.is_empty() {
            source.clone()
        } else {
            labeled.labels.to_string()
        };
        let out = output(name, &labeled, fitted.report(), &fc);
        if args.json {
            outln!("{}", serde_json::to_string(&out)?);
        } else {
            print_table(&out);
        }
    }
    Ok(())
}

fn output(name: String, labeled: &LabeledSeries, report: ModelReport, fc: &Forecast) -> Output {
    let s = &labeled.series;
    let points = (0..fc.horizon())
        .map(|h| {
            let time_ms = s.time_at(s.len() + h);
            Point {
                time_ms,
                time: chrono::DateTime::from_timestamp_millis(time_ms)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                mean: fc.mean[h],
                quantiles: fc.quantiles.iter().map(|q| (q.q, q.values[h])).collect(),
            }
        })
        .collect();
    Output {
        series: name,
        step_ms: s.step_ms,
        history_points: s.len(),
        report,
        points,
    }
}

fn print_table(out: &Output) {
    let r = &out.report;
    outln!(
        "{}: {} points, step {} s",
        out.series,
        out.history_points,
        out.step_ms / 1000
    );
    outln!("model: {}", r.model);
    if r.fell_back_to_simple {
        outln!("  history shorter than two seasons: simple models only");
    }
    outln!(
        "  seasons: {:?}{}",
        r.periods,
        if r.season_notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.season_notes.join("; "))
        }
    );
    outln!(
        "  backtest over {} window(s), MAE (scaled by seasonal-naive in-sample MAE):",
        r.backtest_windows
    );
    for s in &r.scores {
        outln!("    {:<24} {:>12.4} ({:.3})", s.model, s.mae, s.scaled);
    }
    let qs: Vec<String> = out
        .points
        .first()
        .map(|p| p.quantiles.iter().map(|(q, _)| format!("q{q}")).collect())
        .unwrap_or_default();
    // Columns as wide as the widest value (at least 12), one space apart: values
    // above a million must not run into each other.
    let cells: Vec<Vec<String>> = out
        .points
        .iter()
        .map(|p| {
            std::iter::once(p.mean)
                .chain(p.quantiles.iter().map(|(_, v)| *v))
                .map(|v| format!("{v:.4}"))
                .collect()
        })
        .collect();
    let width = cells
        .iter()
        .flatten()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max(12);
    let header: Vec<String> = std::iter::once("mean".to_string()).chain(qs).collect();
    let row = |time: &str, cols: &[String]| {
        let cols: Vec<String> = cols.iter().map(|c| format!("{c:>width$}")).collect();
        format!("{time:<26} {}", cols.join(" "))
    };
    outln!("{}", row("time", &header));
    for (p, c) in out.points.iter().zip(&cells) {
        outln!("{}", row(&p.time, c));
    }
}
