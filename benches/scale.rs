//! Scale bench: N synthetic series through the real engine core.
//!
//! Every series is one of the bundled traces (tests/data) put on a 1-minute grid,
//! shifted by its own phase and multiplied by its own noise, served by an
//! in-memory [`Source`] that computes each value on demand (so the source holds
//! no per-series data and what grows with N is the engine's state alone). The
//! bench drives [`Core`] the way [`prescale::engine::Engine::step`] does: plan,
//! fetch, apply, snapshot, one signal at a time.
//!
//! It reports, per N:
//! - `backfill`: the first cycle (fetch the whole history window, first fit of every series);
//! - `update`: a steady-state cycle (one new point per series; p50 and max);
//! - `refit`: a cycle in which the refit schedule comes due for every series;
//! - resident memory (VmRSS) per series after the run, and the peak (VmHWM).
//!
//! Parameters (environment):
//! - `PRESCALE_SCALE_N`: comma-separated series counts (default `1000`); each N runs
//!   in a fresh process so memory figures do not mix;
//! - `PRESCALE_SCALE_MODEL`: model spec name (default `seasonal-naive`);
//! - `PRESCALE_SCALE_PER_SIGNAL`: series per signal (default 1000);
//! - `PRESCALE_SCALE_HISTORY_DAYS`: history window (default 7);
//! - `PRESCALE_SCALE_REFIT_STEPS`: refit interval in steps (default 60); the run
//!   lasts one interval, so (without spreading) its last cycle is a refit;
//! - `PRESCALE_SCALE_FIT_STEPS`: grid points per fitted point (default 1, see
//!   `TrackerSettings::fit_steps`);
//! - `PRESCALE_SCALE_SPREAD`: 1 spreads refits over the interval (default 0).
//!
//! `cargo bench --bench scale` (add `PRESCALE_SCALE_N=1000,10000,100000` for the curve).

use std::time::{Duration, Instant};

use prescale::engine::{Core, Metrics, Planned, SignalSettings};
use prescale::forecast::ModelSpec;
use prescale::plan::{ServePolicy, TrackerSettings};
use prescale::series::{read_csv, LabeledSeries, Labels, ResampleOptions};
use prescale::source::{BoxFuture, Range, Source};
use tokio::runtime::Runtime;

const STEP_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;
/// An arbitrary, fixed start (2026-01-01T00:00:00Z), on the step grid.
const START_MS: i64 = 1_767_225_600_000;

const TRACES: &[&str] = &[
    include_str!("../tests/data/google2019_cell_avg_cpu_5min.csv"),
    include_str!("../tests/data/nab_cpu_utilization_asg_misconfiguration.csv"),
    include_str!("../tests/data/nab_ec2_cpu_utilization_5f5533.csv"),
    include_str!("../tests/data/nab_ec2_cpu_utilization_ac20cd.csv"),
    include_str!("../tests/data/nab_ec2_network_in_257a54.csv"),
    include_str!("../tests/data/nab_ec2_request_latency_system_failure.csv"),
    include_str!("../tests/data/nab_elb_request_count_8c0756.csv"),
    include_str!("../tests/data/nab_rds_cpu_utilization_cc0c53.csv"),
    include_str!("../tests/data/snowflake_region1_vm_demand_hourly.csv"),
];

/// The traces on the 1-minute grid (linear between recorded points), gaps filled.
fn base_traces() -> Vec<Vec<f64>> {
    TRACES
        .iter()
        .map(|text| {
            let raw = read_csv(text).expect("bundled trace parses");
            let options = ResampleOptions::default()
                .with_step_ms(STEP_MS)
                .with_max_gap_steps(240);
            let (s, _) = raw.resample(&options).expect("bundled trace resamples");
            prescale::series::forward_fill(&s.series.values)
        })
        .collect()
}

/// SplitMix64: a stateless hash, so a value depends only on (series, time).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Series values computed on demand: series `i` is trace `i % traces`, shifted by a
/// per-series phase, times (1 + 5 % uniform noise).
struct Synthetic {
    traces: Vec<Vec<f64>>,
    per_signal: usize,
    total: usize,
}

impl Synthetic {
    fn value(&self, i: usize, ts_ms: i64) -> f64 {
        let trace = &self.traces[i % self.traces.len()];
        let phase = (mix(i as u64) % trace.len() as u64) as i64;
        let t = ts_ms.div_euclid(STEP_MS) + phase;
        let base = trace[t.rem_euclid(trace.len() as i64) as usize];
        let u = (mix(mix(i as u64) ^ t as u64) >> 11) as f64 / (1u64 << 53) as f64;
        base * (1.0 + 0.1 * (u - 0.5))
    }
}

impl Source for Synthetic {
    fn fetch<'a>(
        &'a self,
        query: &'a str,
        range: Range,
    ) -> BoxFuture<'a, prescale::source::Result<Vec<LabeledSeries>>> {
        let signal: usize = query
            .strip_prefix("scale_")
            .and_then(|k| k.parse().ok())
            .unwrap_or(usize::MAX);
        let first = signal.saturating_mul(self.per_signal).min(self.total);
        let last = (first + self.per_signal).min(self.total);
        let out = (first..last)
            .map(|i| {
                let mut series = range.empty_series();
                for (k, v) in series.values.iter_mut().enumerate() {
                    *v = self.value(i, range.start_ms + k as i64 * range.step_ms);
                }
                let labels: Labels = [("series".to_string(), format!("s{i:06}"))].into();
                LabeledSeries { labels, series }
            })
            .collect();
        Box::pin(async move { Ok(out) })
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Resident and peak memory of this process, in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One engine cycle at `now_ms`, a signal at a time (as `Engine::step` would, minus
/// the concurrency of the fetches): returns how long it took.
fn cycle(core: &mut Core, source: &Synthetic, rt: &Runtime, now_ms: i64) -> Duration {
    let started = Instant::now();
    let planned: Vec<Planned> = core.plan(now_ms, None);
    for p in planned {
        let t = Instant::now();
        let result = rt
            .block_on(source.fetch(&p.query, p.range))
            .map_err(Into::into);
        let took = t.elapsed();
        core.apply(now_ms, vec![(p, result, took)]);
    }
    let snapshot = core.snapshot(now_ms);
    std::hint::black_box(&snapshot);
    started.elapsed()
}

fn run_one(n: usize) {
    let model = std::env::var("PRESCALE_SCALE_MODEL").unwrap_or_else(|_| "seasonal-naive".into());
    let per_signal = env_usize("PRESCALE_SCALE_PER_SIGNAL", 1000).max(1);
    let days = env_usize("PRESCALE_SCALE_HISTORY_DAYS", 7).max(1);
    let refit = env_usize("PRESCALE_SCALE_REFIT_STEPS", 60).max(2);
    let fit_steps = env_usize("PRESCALE_SCALE_FIT_STEPS", 1).max(1);
    let spread = env_usize("PRESCALE_SCALE_SPREAD", 0) != 0;
    let history_ms = days as i64 * DAY_MS;
    let spec = ModelSpec::by_name(&model).unwrap_or_else(|e| panic!("model {model}: {e}"));

    let source = Synthetic {
        traces: base_traces(),
        per_signal,
        total: n,
    };
    let (rss0, _) = memory_kib();
    let signals = n.div_ceil(per_signal);
    let settings: Vec<SignalSettings> = (0..signals)
        .map(|k| SignalSettings {
            shadow: None,
            name: format!("scale_{k}"),
            query: format!("scale_{k}"),
            history_ms,
            max_staleness_ms: 5 * STEP_MS,
            namespaces: None,
            custom: None,
            tracker: TrackerSettings {
                spec: spec.clone(),
                step_ms: STEP_MS,
                policy: ServePolicy {
                    lead_steps: 3,
                    lead_ms: 0,
                    tolerance: 0.0,
                    quantile: 0.9,
                    reactive_floor: true,
                },
                history_steps: (history_ms / STEP_MS) as usize,
                refit_every_steps: refit,
                min_history_steps: 60,
                fit_steps,
                spread_refits: spread,
            },
        })
        .collect();
    // The synthetic source's futures are ready at once: a current-thread runtime polls them.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let mut core = Core::new(settings, Metrics::unregistered());
    let mut now = START_MS + 7 * DAY_MS + 1_000;
    let backfill = cycle(&mut core, &source, &rt, now);
    let (rss_fill, _) = memory_kib();
    let mut updates = Vec::new();
    // Steps 1..refit-1 only update; step `refit` refits every series.
    let mut trace = Vec::new();
    for i in 1..refit {
        now += STEP_MS;
        updates.push(cycle(&mut core, &source, &rt, now));
        if i % (refit / 6).max(1) == 0 {
            trace.push(format!(
                "{i}:{:.1}",
                memory_kib().0.saturating_sub(rss0) as f64 / n as f64
            ));
        }
    }
    now += STEP_MS;
    let refit_took = cycle(&mut core, &source, &rt, now);
    let (rss, hwm) = memory_kib();
    let served: usize = core
        .snapshot(now)
        .metrics
        .values()
        .map(|m| m.series.len())
        .sum();
    assert_eq!(served, n, "every series is served");
    updates.sort();
    let p50 = updates[updates.len() / 2];
    let max = updates[updates.len() - 1];
    let per = |kib: u64| (kib.saturating_sub(rss0)) as f64 / n as f64;
    println!(
        "scale n={n} model={model} fit_steps={fit_steps} spread={spread} step=60s history={days}d threads={} backfill={:.2}s update_p50={:.3}s update_max={:.3}s refit={:.2}s rss_per_series={:.1}KiB (after backfill {:.1}KiB) rss={}MiB peak={}MiB",
        rayon::current_num_threads(),
        backfill.as_secs_f64(),
        p50.as_secs_f64(),
        max.as_secs_f64(),
        refit_took.as_secs_f64(),
        per(rss),
        per(rss_fill),
        rss / 1024,
        hwm / 1024,
    );
    println!("  KiB per series after cycle: {}", trace.join(" "));
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments are ignored.
    let ns: Vec<usize> = std::env::var("PRESCALE_SCALE_N")
        .unwrap_or_else(|_| "1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    if let [n] = ns[..] {
        run_one(n);
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    for n in ns {
        let status = std::process::Command::new(&exe)
            .env("PRESCALE_SCALE_N", n.to_string())
            .status()
            .expect("run the bench for one N");
        assert!(status.success(), "n={n} failed");
    }
}
