//! `prescale eval`: score a model over a data set (M4 files or recorded traces).

use std::path::PathBuf;

use anyhow::Context as _;
use prescale::eval::{self, SeriesScore, Summary};
use prescale::forecast::ModelSpec;

/// Arguments of `prescale eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// M4 training file (wide CSV: id, then values); needs --m4-test.
    #[arg(long, requires = "m4_test", conflicts_with = "traces")]
    pub m4_train: Option<PathBuf>,
    /// M4 test file with the actuals that follow each training series.
    #[arg(long, requires = "m4_train")]
    pub m4_test: Option<PathBuf>,
    /// Seasonal period used by MASE for the M4 files (24 for hourly).
    #[arg(long, default_value_t = 24)]
    pub m4_season: usize,
    /// Directory of recorded traces (CSV `timestamp,value`).
    #[arg(long)]
    pub traces: Option<PathBuf>,
    /// Steps forecast per window for traces.
    #[arg(long, default_value_t = 12)]
    pub horizon: usize,
    /// The model: one of the bundled specs (auto, seasonal-naive, seasonal-naive-weekly, holt-winters-damped, mstl-daily-weekly, linear-lags), or a path to a spec YAML file.
    #[arg(long, default_value = "auto")]
    pub model: String,
    /// Fit on means of this many grid points, as a signal's `fit_step` does
    /// (forecasts on the coarser grid, scored on the original one); 1 fits as is.
    #[arg(long, default_value_t = 1)]
    pub fit_steps: usize,
    /// Print per-series scores too.
    #[arg(long)]
    pub per_series: bool,
    /// End with one JSON object (the summary) on the last line.
    #[arg(long)]
    pub json: bool,
}

/// Runs `prescale eval`.
///
/// # Errors
/// When the files cannot be read or the model name is unknown.
pub fn run(args: Args) -> anyhow::Result<()> {
    let spec = if args.model.ends_with(".yaml") || args.model.ends_with(".yml") {
        let text = std::fs::read_to_string(&args.model)
            .with_context(|| format!("reading model spec {}", args.model))?;
        ModelSpec::from_yaml(&text).with_context(|| format!("in {}", args.model))?
    } else {
        ModelSpec::by_name(&args.model)?
    };
    let tasks = if let (Some(train), Some(test)) = (&args.m4_train, &args.m4_test) {
        let train = eval::read_m4(train)?;
        let test = eval::read_m4(test)?;
        eval::m4_tasks(train, test, args.m4_season)?
    } else if let Some(dir) = &args.traces {
        crate::cmd::traces::tasks(dir, args.horizon)
            .with_context(|| format!("loading traces from {}", dir.display()))?
    } else {
        anyhow::bail!("give --m4-train and --m4-test, or --traces DIR");
    };
    if tasks.is_empty() {
        return Err(eval::Error::Empty("the input".to_string()).into());
    }
    let (summary, scores) = eval::evaluate_fit_steps(&spec, &tasks, args.fit_steps);
    if args.traces.is_some() {
        print_per_trace(&scores);
    }
    print_report(&summary, &scores, args.per_series);
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

/// Per trace (tasks are named `file#origin`): mean MASE of the model and of the
/// seasonal naive forecast over the trace's origins.
fn print_per_trace(scores: &[SeriesScore]) {
    let mut by_trace: std::collections::BTreeMap<&str, Vec<&SeriesScore>> = Default::default();
    for s in scores {
        let trace = s.id.split('#').next().unwrap_or(&s.id);
        by_trace.entry(trace).or_default().push(s);
    }
    outln!(
        "{:<44} {:>7} {:>9} {:>9} {:>7} {:>7}",
        "trace",
        "origins",
        "MASE",
        "MASE-sn",
        "ratio",
        "P90cov"
    );
    let mut ratios = Vec::new();
    for (trace, ss) in by_trace {
        let mean = |f: fn(&SeriesScore) -> f64| {
            let v: Vec<f64> = ss.iter().map(|s| f(s)).filter(|v| v.is_finite()).collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        let (model, naive) = (mean(|s| s.mase), mean(|s| s.mase_seasonal_naive));
        let ratio = model / naive;
        if ratio.is_finite() {
            ratios.push(ratio);
        }
        outln!(
            "{:<44} {:>7} {:>9.3} {:>9.3} {:>7.3} {:>7.3}",
            trace,
            ss.len(),
            model,
            naive,
            ratio,
            mean(|s| s.coverage_p90)
        );
    }
    let mean_ratio = ratios.iter().sum::<f64>() / ratios.len().max(1) as f64;
    outln!("mean MASE ratio (model / seasonal naive) over traces: {mean_ratio:.3}");
}

fn print_report(summary: &Summary, scores: &[SeriesScore], per_series: bool) {
    if per_series {
        outln!(
            "{:<48} {:>9} {:>9} {:>9} {:>7}  model",
            "series",
            "sMAPE",
            "MASE",
            "MASE-sn",
            "P90cov"
        );
        for s in scores {
            outln!(
                "{:<48} {:>9.3} {:>9.3} {:>9.3} {:>7.3}  {}",
                s.id,
                s.smape,
                s.mase,
                s.mase_seasonal_naive,
                s.coverage_p90,
                s.model
            );
        }
    }
    outln!(
        "model {}: {} series, sMAPE {:.3}, MASE {:.3} (seasonal naive {:.3}), P90 coverage {:.3}, fit+predict {:.2} s, failures {}",
        summary.model,
        summary.series,
        summary.smape,
        summary.mase,
        summary.mase_seasonal_naive,
        summary.coverage_p90,
        summary.fit_predict_seconds,
        summary.failures
    );
    for (model, count) in &summary.chosen {
        outln!("  chosen {count:>4} x {model}");
    }
}
