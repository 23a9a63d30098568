//! `prescale backtest`: replay recorded traces through the HPA, pod start-up and
//! node-provisioning model with the reactive, predictive and oracle strategies.
//!
//! This is the I/O edge of `backtest`: it reads files, runs traces in parallel
//! (rayon), shows progress on a terminal and prints tables, JSON and plots.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

use prescale::backtest::frontier::{self, Sweep, TraceFrontier};
use prescale::backtest::{
    self, plot, report, Aggregate, Behavior, CapacitySpec, ForecastPlan, NodePool, Scenario, Tape,
    TraceResult,
};

use super::frontier_report;
use prescale::config::Config;
use prescale::engine::SignalSettings;
use prescale::forecast::ModelSpec;
use prescale::plan::TrackerSettings;
use prescale::series::{self, RawSeries, ResampleOptions, Series, DEFAULT_MAX_GAP_STEPS};

/// The traces bundled with the source, replayed when no input is given.
const BUNDLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

/// File names replayed from a directory: the formats `series::read_file` reads.
const TRACE_EXTENSIONS: [&str; 4] = ["csv", "json", "txt", "prom"];

/// Arguments of `prescale backtest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A recorded trace (CSV `timestamp,value`, Prometheus range-query JSON or
    /// OpenMetrics text) or a directory of them; the bundled traces when omitted.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// What one replica can carry before it breaks its SLO, in the trace's unit:
    /// shortfall is measured against it (`--target-per-replica` is its old name).
    #[arg(long, alias = "target-per-replica", conflicts_with = "target_auto")]
    pub capacity_per_replica: Option<f64>,
    /// Pick a capacity per trace so that its median needs about 10 replicas (the
    /// default when no capacity is given).
    #[arg(long)]
    pub target_auto: bool,
    /// Headroom of the HPAs below capacity: their target is capacity × (1 − headroom).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub headroom: f64,
    /// Print the whole cost-vs-shortfall frontier (reactive over headroom and
    /// tolerance, predictive over quantile and headroom, oracle); its matched-cost
    /// summary is printed without it too.
    #[arg(long)]
    pub frontier: bool,
    /// Draw the frontier over all traces (.svg, or .png with labels from a system font).
    #[arg(long)]
    pub frontier_plot: Option<PathBuf>,
    /// How far ahead capacity is planned (e.g. 30s, 3m, 1h).
    #[arg(long, default_value = "3m", value_parser = parse_duration_ms)]
    pub lead_time: i64,
    /// The forecast quantile served to the HPA, in (0, 1).
    #[arg(long, default_value_t = 0.9)]
    pub quantile: f64,
    /// The forecasting model: one of the bundled specs (auto, seasonal-naive, seasonal-naive-weekly, holt-winters-damped, mstl-daily-weekly, linear-lags).
    #[arg(long, default_value = "auto")]
    pub model: String,
    /// Serve the forecast even below the latest observation.
    #[arg(long)]
    pub no_floor: bool,
    /// History kept for fitting.
    #[arg(long, default_value = "7d", value_parser = parse_duration_ms)]
    pub history: i64,
    /// Refit the model after this much new data (updates in between).
    #[arg(long, default_value = "6h", value_parser = parse_duration_ms)]
    pub refit_every: i64,
    /// From a pod being placed to it being ready.
    #[arg(long, default_value = "30s", value_parser = parse_duration_ms)]
    pub pod_startup: i64,
    /// Pods of the workload per node; enables the node-pool model.
    #[arg(long)]
    pub pods_per_node: Option<u32>,
    /// From ordering a node to it being ready (with --pods-per-node).
    #[arg(long, default_value = "3m", value_parser = parse_duration_ms)]
    pub node_provisioning: i64,
    /// How long a node must be unneeded before it is removed (with --pods-per-node).
    #[arg(long, default_value = "10m", value_parser = parse_duration_ms)]
    pub node_unneeded: i64,
    /// The HPA's minReplicas.
    #[arg(long, default_value_t = 1)]
    pub min_replicas: u32,
    /// The HPA's maxReplicas.
    #[arg(long, default_value_t = 10_000)]
    pub max_replicas: u32,
    /// The HPA controller's sync period.
    #[arg(long, default_value = "15s", value_parser = parse_duration_ms)]
    pub sync_period: i64,
    /// YAML of an HPA's `spec.behavior` (or a whole HPA manifest).
    #[arg(long)]
    pub behavior: Option<PathBuf>,
    /// Replay a serve configuration exactly: the signal's step, history, lead time,
    /// quantile, model, floor, refit interval and warm-up drive the predictive run
    /// (the trace is resampled to the signal's step).
    #[arg(
        long,
        conflicts_with_all = ["lead_time", "quantile", "model", "no_floor", "refit_every", "history"]
    )]
    pub config: Option<PathBuf>,
    /// The signal of --config to replay; the first one when omitted.
    #[arg(long, requires = "config")]
    pub signal: Option<String>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write a plot of demand vs ready capacity (.svg labelled, .png unlabelled);
    /// with several traces, one file per trace named OUT-<trace>.<ext>.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write each trace's replay step by step as CSV into this directory
    /// (`<trace>.csv`: step, demand and each strategy's ready replicas), for analysis
    /// beyond the summary.
    #[arg(long)]
    pub steps: Option<PathBuf>,
}

/// Parses a command-line duration (`30s`, `3m`, `1h30m`, `7d`, `2w`; zero allowed)
/// into milliseconds, with the config file's grammar.
///
/// # Errors
/// A message saying what was expected.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    prescale::config::parse_duration_ms(text).map(|ms| i64::try_from(ms).unwrap_or(i64::MAX))
}

/// A replayed trace, its frontier and the unit scale its values were multiplied by.
type Outcome = Result<(TraceResult, TraceFrontier, f64), backtest::Error>;

/// Replays one trace: the forecasts once, then every strategy and variant.
fn replay_trace(p: &Prepared, sweep: &Sweep) -> Outcome {
    let tape = Tape::record(&p.series, &p.scenario, &sweep.levels(&p.scenario))?;
    let result = backtest::backtest_with(&p.name, &p.series, &p.scenario, &tape)?;
    let front = frontier::trace(&p.name, &p.series, &p.scenario, sweep, &tape)?;
    Ok((result, front, p.unit_scale))
}

fn sweep_json(s: &Sweep) -> serde_json::Value {
    serde_json::json!({
        "reactive_headrooms": s.reactive_headrooms,
        "reactive_tolerances": s.reactive_tolerances,
        "quantiles": s.quantiles,
        "predictive_headrooms": s.predictive_headrooms,
        "predictive_tolerances": s.predictive_tolerances,
        "shortfall_floor_share_of_demand": frontier::SHORTFALL_FLOOR,
    })
}

/// A serve configuration's signal, as the engine would run it.
struct Replay {
    /// The signal's name.
    name: String,
    /// The tracker settings the engine derives from the signal.
    tracker: TrackerSettings,
    /// The signal's lead time in milliseconds.
    lead_time_ms: i64,
}

/// One trace ready to replay.
struct Prepared {
    name: String,
    series: Series,
    scenario: Scenario,
    unit_scale: f64,
}

/// Runs `prescale backtest`.
///
/// # Errors
/// When an input cannot be read or replayed, or an argument is out of range.
pub fn run(args: Args) -> anyhow::Result<()> {
    let input = args.input.clone().unwrap_or_else(|| PathBuf::from(BUNDLED));
    let files = input_files(&input)?;
    let behavior = match &args.behavior {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --behavior {}", path.display()))?;
            Behavior::from_yaml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Behavior::default(),
    };
    let spec = ModelSpec::by_name(&args.model).context("--model")?;
    let replay = match &args.config {
        Some(path) => Some(replay_settings(path, args.signal.as_deref())?),
        None => None,
    };
    if let Some(t) = args.capacity_per_replica {
        if !(t.is_finite() && t >= 0.001) {
            bail!("--capacity-per-replica (--target-per-replica) must be a number of at least 0.001, got {t}");
        }
    }
    if !(args.headroom.is_finite() && (-1.0..1.0).contains(&args.headroom)) {
        bail!("--headroom must be in [-1, 1), got {}", args.headroom);
    }
    if args.pods_per_node == Some(0) {
        bail!("--pods-per-node must be at least 1");
    }

    let mut failures = Vec::new();
    let mut prepared = Vec::new();
    for file in &files {
        match prepare(file, &args, &behavior, &spec, replay.as_ref()) {
            Ok(p) => prepared.extend(p),
            Err(e) if files.len() > 1 => failures.push(format!("{}: {e:#}", file.display())),
            Err(e) => return Err(e),
        }
    }

    let sweep = Sweep::default();
    let bar = progress_bar(prepared.len() as u64, files.len() > 1);
    let outcomes: Vec<(String, Outcome)> = prepared
        .par_iter()
        .map(|p| {
            bar.set_message(p.name.clone());
            let out = replay_trace(p, &sweep);
            bar.inc(1);
            (p.name.clone(), out)
        })
        .collect();
    bar.finish_and_clear();

    let mut results = Vec::new();
    let mut frontiers = Vec::new();
    for (name, out) in outcomes {
        match out {
            Ok((r, f, unit)) => {
                results.push((r, unit));
                frontiers.push(f);
            }
            Err(e) if files.len() > 1 => failures.push(format!("{name}: {e}")),
            Err(e) => return Err(e).with_context(|| format!("replaying {}", input.display())),
        }
    }
    let summary = frontier::summarize(&frontiers);
    let traces: Vec<TraceResult> = results.iter().map(|(r, _)| r.clone()).collect();
    let aggregate = Aggregate::new(&traces);
    let nodes = args.pods_per_node.is_some();

    if args.json {
        let mut doc = report::json(
            &traces,
            &aggregate,
            settings_json(&args, replay.as_ref(), &results),
        );
        if let Some(obj) = doc.as_object_mut() {
            obj.insert(
                "matched_cost".into(),
                serde_json::to_value(&summary.matched_cost)?,
            );
            obj.insert(
                "frontier".into(),
                serde_json::json!({
                    "sweep": sweep_json(&sweep),
                    "overall": summary.overall,
                    "traces": frontiers,
                }),
            );
        }
        outln!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        if let Some(r) = &replay {
            outln!(
                "replaying signal {} of {}: step {}, lead time {}, q{}, model {}\n",
                r.name,
                args.config
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string()),
                report::human_ms(r.tracker.step_ms),
                report::human_ms(r.lead_time_ms),
                r.tracker.policy.quantile,
                r.tracker.spec.name()
            );
        }
        for (r, unit) in &results {
            out!("{}", report::trace_table(r, nodes));
            if *unit != 1.0 {
                outln!("  (values ×{unit} so the HPA's milli-units do not round them away)");
            }
            outln!();
        }
        out!("{}", report::aggregate_table(&aggregate, nodes));
        outln!();
        if args.frontier {
            out!("{}", frontier_report::table(&summary));
            outln!();
        }
        out!("{}", frontier_report::matched(&summary, &frontiers));
    }
    if let Some(out) = &args.frontier_plot {
        frontier_report::write_plot(out, &summary)?;
    }
    if let Some(out) = &args.plot {
        write_plots(out, &traces)?;
    }
    if let Some(dir) = &args.steps {
        write_steps(dir, &traces)?;
    }
    for f in &failures {
        eprintln!("skipped {f}");
    }
    if traces.is_empty() {
        bail!("no trace could be replayed ({} failed)", failures.len());
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} trace(s) could not be replayed",
            failures.len(),
            files.len()
        );
    }
    Ok(())
}

fn input_files(input: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let meta =
        std::fs::metadata(input).with_context(|| format!("reading --input {}", input.display()))?;
    if !meta.is_dir() {
        return Ok(vec![input.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)
        .with_context(|| format!("listing {}", input.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|x| TRACE_EXTENSIONS.iter().any(|e| x == *e))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "{} holds no traces (files ending in .{})",
            input.display(),
            TRACE_EXTENSIONS.join(", .")
        );
    }
    Ok(files)
}

/// Reads a file (CSV, Prometheus range-query JSON or OpenMetrics text; each series
/// on its own inferred grid) into traces ready to replay.
fn prepare(
    file: &Path,
    args: &Args,
    behavior: &Behavior,
    spec: &ModelSpec,
    replay: Option<&Replay>,
) -> anyhow::Result<Vec<Prepared>> {
    let raw = series::read_file(file)?;
    if raw.iter().all(|r| r.samples.is_empty()) {
        bail!(
            "{}: the trace is empty: expected at least two samples",
            file.display()
        );
    }
    let loaded = raw
        .iter()
        .map(|r| match r.samples.len() {
            1 => Err(anyhow::Error::new(backtest::Error::TooFewPoints { got: 1 })),
            _ => r
                .resample(&resample_options(r, replay)?)
                .map_err(anyhow::Error::new),
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .with_context(|| format!("in {}", file.display()))?;
    let stem = file.file_stem().map_or_else(
        || file.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let several = loaded.len() > 1;
    loaded
        .into_iter()
        .map(|(labeled, _report)| {
            let name = if several {
                format!("{stem}{}", labeled.labels)
            } else {
                stem.clone()
            };
            prepare_series(name, labeled.series, args, behavior, spec, replay)
                .with_context(|| format!("in {}", file.display()))
        })
        .collect()
}

fn prepare_series(
    name: String,
    mut series: Series,
    args: &Args,
    behavior: &Behavior,
    spec: &ModelSpec,
    replay: Option<&Replay>,
) -> anyhow::Result<Prepared> {
    let (capacity, unit_scale) = match args.capacity_per_replica {
        Some(t) => (t, 1.0),
        None => {
            let auto = backtest::auto_target(&series.values)?;
            (auto.capacity_per_replica, auto.unit_scale)
        }
    };
    if unit_scale != 1.0 {
        for v in &mut series.values {
            *v *= unit_scale;
        }
    }
    let mut plan = ForecastPlan::new(spec.clone(), args.quantile);
    plan.reactive_floor = !args.no_floor;
    plan.refit_every_ms = args.refit_every;
    plan.history_ms = args.history;
    let lead_time_ms = replay.map_or(args.lead_time, |r| r.lead_time_ms);
    let mut scenario = Scenario::new(capacity, lead_time_ms, plan);
    scenario.headroom = args.headroom;
    scenario.tracker = replay.map(|r| r.tracker.clone());
    scenario.min_replicas = args.min_replicas;
    scenario.max_replicas = args.max_replicas;
    scenario.sync_period_ms = args.sync_period;
    scenario.behavior = behavior.clone();
    scenario.capacity = CapacitySpec {
        pod_startup_ms: args.pod_startup,
        pool: args.pods_per_node.map(|pods_per_node| NodePool {
            pods_per_node,
            provisioning_ms: args.node_provisioning,
            unneeded_ms: args.node_unneeded,
        }),
    };
    scenario.validate()?;
    Ok(Prepared {
        name,
        series,
        scenario,
        unit_scale,
    })
}

/// The tracker settings of one signal of a serve configuration, derived exactly as
/// the engine derives them.
fn replay_settings(path: &Path, signal: Option<&str>) -> anyhow::Result<Replay> {
    let config = Config::from_file(path)?;
    let chosen = match signal {
        Some(name) => super::signal_named(&config, path, name)?,
        None => config
            .signals
            .first()
            .ok_or_else(|| anyhow::anyhow!("{} configures no signals", path.display()))?,
    };
    let settings = SignalSettings::from_config(chosen)?;
    Ok(Replay {
        name: chosen.name.to_string(),
        tracker: settings.tracker,
        lead_time_ms: chosen.lead_time.as_ms(),
    })
}

/// Resampling for one series: its own inferred step, or the replayed signal's step
/// with gaps of up to a few of the trace's own steps interpolated (a 5 min trace
/// on a 1 min grid has 4 empty points between samples).
fn resample_options(raw: &RawSeries, replay: Option<&Replay>) -> anyhow::Result<ResampleOptions> {
    let Some(r) = replay else {
        return Ok(ResampleOptions::default());
    };
    let step = r.tracker.step_ms.max(1);
    let native = series::infer_step_ms(&raw.samples)?;
    let per_sample = usize::try_from((native + step - 1) / step)
        .unwrap_or(1)
        .max(1);
    Ok(ResampleOptions::default()
        .with_step_ms(step)
        .with_max_gap_steps(DEFAULT_MAX_GAP_STEPS * per_sample))
}

fn progress_bar(len: u64, wanted: bool) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} traces {elapsed} {msg}") {
        bar.set_style(style);
    }
    bar
}

fn settings_json(
    args: &Args,
    replay: Option<&Replay>,
    results: &[(TraceResult, f64)],
) -> serde_json::Value {
    if let Some(r) = replay {
        let t = &r.tracker;
        return serde_json::json!({
            "config": args.config.as_ref().map(|p| p.display().to_string()),
            "signal": r.name,
            "step_s": t.step_ms as f64 / 1000.0,
            "lead_time_s": r.lead_time_ms as f64 / 1000.0,
            "lead_steps": t.policy.lead_steps,
            "quantile": t.policy.quantile,
            "model": t.spec.name(),
            "reactive_floor": t.policy.reactive_floor,
            "history_steps": t.history_steps,
            "refit_every_steps": t.refit_every_steps,
            "min_history_steps": t.min_history_steps,
            "pod_startup_s": args.pod_startup as f64 / 1000.0,
            "pods_per_node": args.pods_per_node,
            "node_provisioning_s": args.pods_per_node.map(|_| args.node_provisioning as f64 / 1000.0),
            "sync_period_s": args.sync_period as f64 / 1000.0,
        });
    }
    serde_json::json!({
        "headroom": args.headroom,
        "capacity_per_replica": match args.capacity_per_replica {
            Some(t) => serde_json::json!(t),
            None => serde_json::json!("auto"),
        },
        "lead_time_s": args.lead_time as f64 / 1000.0,
        "quantile": args.quantile,
        "model": args.model,
        "reactive_floor": !args.no_floor,
        "history_s": args.history as f64 / 1000.0,
        "refit_every_s": args.refit_every as f64 / 1000.0,
        "pod_startup_s": args.pod_startup as f64 / 1000.0,
        "pods_per_node": args.pods_per_node,
        "node_provisioning_s": args.pods_per_node.map(|_| args.node_provisioning as f64 / 1000.0),
        "sync_period_s": args.sync_period as f64 / 1000.0,
        "min_replicas": args.min_replicas,
        "max_replicas": args.max_replicas,
        "unit_scale": results.iter().map(|(r, u)| (r.name.clone(), *u)).collect::<std::collections::BTreeMap<_, _>>(),
    })
}

/// A trace name as a file name: letters, digits and `-_.` kept, the rest `_`.
fn file_name(name: &str) -> String {
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

fn write_steps(dir: &Path, traces: &[TraceResult]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("--steps: creating {}", dir.display()))?;
    for r in traces {
        let path = dir.join(format!("{}.csv", file_name(&r.name)));
        let mut text = String::from("step,t_s,demand");
        for run in &r.runs {
            text.push_str(&format!(",{}_ready", run.strategy.as_str()));
        }
        text.push('\n');
        for (i, d) in r.demand.iter().enumerate() {
            text.push_str(&format!("{i},{},{d}", i as i64 * r.step_ms / 1_000));
            for run in &r.runs {
                match run.ready_per_step.get(i) {
                    Some(v) => text.push_str(&format!(",{v}")),
                    None => text.push(','),
                }
            }
            text.push('\n');
        }
        std::fs::write(&path, text)
            .with_context(|| format!("--steps: writing {}", path.display()))?;
    }
    Ok(())
}

fn write_plots(out: &Path, traces: &[TraceResult]) -> anyhow::Result<()> {
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if ext != "svg" && ext != "png" {
        bail!("--plot must end in .svg or .png, got {}", out.display());
    }
    for r in traces {
        let path = if traces.len() == 1 {
            out.to_path_buf()
        } else {
            let stem = out
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name: String = r
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            out.with_file_name(format!("{stem}-{name}.{ext}"))
        };
        if ext == "svg" {
            let svg = plot::svg(r)?;
            std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        } else {
            use plotters::prelude::{BitMapBackend, IntoDrawingArea};
            let root = BitMapBackend::new(&path, (plot::WIDTH, plot::HEIGHT)).into_drawing_area();
            plot::draw(&root, r).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}
