//! Scale bench: N synthetic series through the real engine.
//!
//! Every series is one of the bundled traces (tests/data) put on a 1-minute grid,
//! shifted by its own phase and multiplied by its own noise, served by an
//! in-memory [`Source`] that computes each value on demand (so the source holds
//! no per-series data and what grows with N is the engine's state alone). The
//! bench drives [`Engine::step`] on a simulated clock: bounded concurrent fetches,
//! results applied in batches, snapshot published, as `prescale serve` does.
//!
//! It reports, per N:
//! - `cold start`: the first step (fetch every signal's whole window, first fit of
//!   every series, for `auto` a full selection), its wall time and the peak RSS
//!   (VmHWM) during it, against the steady-state RSS at the end;
//! - `update`: the steady-state cycles (one new point per series; p50, p99, max);
//! - `refit`: the cycle in which the refit schedule comes due for every series
//!   (without spreading; for `auto` the selection made at the cold start is reused
//!   unless its error drifted);
//! - resident memory (VmRSS) per series after the run, read after a pause of
//!   `PRESCALE_SCALE_SETTLE_S` (12 s): `prescale serve` steps once per grid step (a
//!   minute here) and jemalloc returns freed pages after its 10 s decay, so that is
//!   what a running server holds; the live heap (jemalloc's allocated bytes) per
//!   series beside it.
//!
//! The bench runs on the binary's allocator (jemalloc, with background purging).
//!
//! Parameters (environment):
//! - `PRESCALE_SCALE_N`: comma-separated series counts (default `1000`); each N runs
//!   in a fresh process so memory figures do not mix, and a table of all of them
//!   is printed at the end;
//! - `PRESCALE_SCALE_MODEL`: model spec name (default `seasonal-naive`; `auto`);
//! - `PRESCALE_SCALE_PER_SIGNAL`: series per signal (default 1000);
//! - `PRESCALE_SCALE_HISTORY_DAYS`: history window (default 7);
//! - `PRESCALE_SCALE_REFIT_STEPS`: refit interval in steps (default 60); the run
//!   lasts one interval, so (without spreading) its last cycle is a refit;
//! - `PRESCALE_SCALE_FIT_STEPS`: grid points per fitted point (default 1, see
//!   `TrackerSettings::fit_steps`);
//! - `PRESCALE_SCALE_SPREAD`: 1 spreads refits over the interval (default 0);
//! - `PRESCALE_SCALE_MAX_FETCHES`: fetches in flight (default the engine's,
//!   `engine::DEFAULT_MAX_FETCHES`; 0: every signal at once, as before bounding).
//!
//! `cargo bench --bench scale` (add `PRESCALE_SCALE_N=10000,100000` for the curve).

use std::sync::Arc;
use std::time::{Duration, Instant};

use prescale::clock::SimClock;
use prescale::engine::{Engine, Metrics, SignalSettings};
use prescale::forecast::ModelSpec;
use prescale::plan::{ServePolicy, TrackerSettings};
use prescale::series::{read_csv, LabeledSeries, Labels, ResampleOptions};
use prescale::snapshot::Shared;
use prescale::source::{BoxFuture, Range, Source};

/// The binary's allocator (`src/main.rs`), so that memory figures are the server's.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Live heap bytes (jemalloc's `stats.allocated`), 0 when unknown.
fn live_bytes() -> u64 {
    #[cfg(not(target_env = "msvc"))]
    {
        if tikv_jemalloc_ctl::epoch::advance().is_ok() {
            return tikv_jemalloc_ctl::stats::allocated::read().map_or(0, |b| b as u64);
        }
    }
    0
}

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

/// CPU time (user + system) of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with `)`.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (11 and 12 after the state field).
    (ticks(11) + ticks(12)) / 100.0
}

/// Resets the peak (VmHWM) to the current RSS, so a later peak is that phase's.
fn reset_peak() {
    // Linux >= 4.0; if it fails the peak stays the process' and says so by its size.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The figures of one N, printed as one `key=value` line for the table.
struct Figures {
    n: usize,
    cold_s: f64,
    cold_peak_kib: u64,
    steady_kib: u64,
    steady_peak_kib: u64,
    rss0_kib: u64,
    /// RSS right after the refit cycle, before the settle pause.
    after_refit_kib: u64,
    /// Live heap at the end and before the first step, KiB.
    live_kib: u64,
    live0_kib: u64,
    update_p50_s: f64,
    update_p99_s: f64,
    update_max_s: f64,
    refit_s: f64,
    /// CPU seconds the refit cycle took on all threads.
    refit_cpu_s: f64,
    refits: (u64, u64, u64),
}

impl Figures {
    fn line(&self) -> String {
        format!(
            "RESULT n={} cold_s={:.2} cold_peak_kib={} steady_kib={} steady_peak_kib={} rss0_kib={} after_refit_kib={} live_kib={} live0_kib={} update_p50_s={:.4} update_p99_s={:.4} update_max_s={:.4} refit_s={:.3} refit_cpu_s={:.2} selected={} reused={} drifted={}",
            self.n,
            self.cold_s,
            self.cold_peak_kib,
            self.steady_kib,
            self.steady_peak_kib,
            self.rss0_kib,
            self.after_refit_kib,
            self.live_kib,
            self.live0_kib,
            self.update_p50_s,
            self.update_p99_s,
            self.update_max_s,
            self.refit_s,
            self.refit_cpu_s,
            self.refits.0,
            self.refits.1,
            self.refits.2,
        )
    }
}

fn run_one(n: usize) -> Figures {
    let model = std::env::var("PRESCALE_SCALE_MODEL").unwrap_or_else(|_| "seasonal-naive".into());
    let per_signal = env_usize("PRESCALE_SCALE_PER_SIGNAL", 1000).max(1);
    let days = env_usize("PRESCALE_SCALE_HISTORY_DAYS", 7).max(1);
    let refit = env_usize("PRESCALE_SCALE_REFIT_STEPS", 60).max(2);
    let fit_steps = env_usize("PRESCALE_SCALE_FIT_STEPS", 1).max(1);
    let spread = env_usize("PRESCALE_SCALE_SPREAD", 0) != 0;
    let max_fetches = env_usize(
        "PRESCALE_SCALE_MAX_FETCHES",
        prescale::engine::DEFAULT_MAX_FETCHES,
    );
    let history_ms = days as i64 * DAY_MS;
    let spec = ModelSpec::by_name(&model).unwrap_or_else(|e| panic!("model {model}: {e}"));

    let source = Arc::new(Synthetic {
        traces: base_traces(),
        per_signal,
        total: n,
    });
    let (rss0, _) = memory_kib();
    let live0 = live_bytes() / 1024;
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
    // The synthetic source's futures are ready at once; fits run on the blocking
    // pool and rayon, as in `prescale serve`.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let clock = Arc::new(SimClock::new(START_MS + 7 * DAY_MS + 1_000));
    let shared = Shared::new();
    let engine = Engine::new(
        settings,
        source as Arc<dyn Source>,
        shared.clone(),
        clock.clone(),
        Metrics::unregistered(),
    );
    let mut engine = engine.with_max_fetches(if max_fetches == 0 {
        usize::MAX >> 4
    } else {
        max_fetches
    });
    let step = |engine: &mut Engine| -> Duration {
        let started = Instant::now();
        rt.block_on(engine.step()).expect("engine step");
        started.elapsed()
    };
    reset_peak();
    let cold = step(&mut engine);
    let (_, cold_peak) = memory_kib();
    reset_peak();
    let mut updates = Vec::new();
    // Steps 1..refit-1 only update; step `refit` refits every series.
    let mut trace = Vec::new();
    for i in 1..refit {
        clock.advance(STEP_MS);
        updates.push(step(&mut engine));
        if i % (refit / 6).max(1) == 0 {
            trace.push(format!(
                "{i}:{:.1}",
                memory_kib().0.saturating_sub(rss0) as f64 / n as f64
            ));
        }
    }
    clock.advance(STEP_MS);
    let cpu_before = cpu_seconds();
    let refit_took = step(&mut engine);
    let refit_cpu = cpu_seconds() - cpu_before;
    let (after_refit, _) = memory_kib();
    std::thread::sleep(Duration::from_secs(
        env_usize("PRESCALE_SCALE_SETTLE_S", 12) as u64,
    ));
    let (rss, hwm) = memory_kib();
    let live = live_bytes() / 1024;
    let served: usize = shared.load().metrics.values().map(|m| m.series.len()).sum();
    assert_eq!(served, n, "every series is served");
    let refits = engine.core().map_or((0, 0, 0), |c| {
        let r = c.refit_counts();
        (r.selected, r.reused, r.drifted)
    });
    updates.sort();
    let at = |q: f64| updates[((updates.len() - 1) as f64 * q).round() as usize];
    let per = |kib: u64| (kib.saturating_sub(rss0)) as f64 / n as f64;
    println!(
        "scale n={n} model={model} fit_steps={fit_steps} spread={spread} max_fetches={max_fetches} step=60s history={days}d threads={} cold_start={:.2}s update_p50={:.3}s update_p99={:.3}s refit={:.2}s ({:.2} CPU s) rss_per_series={:.1}KiB (right after the refit {:.1}) live_per_series={:.1}KiB rss={}MiB cold_peak={}MiB steady_peak={}MiB refits(selected/reused/drifted)={}/{}/{}",
        rayon::current_num_threads(),
        cold.as_secs_f64(),
        at(0.5).as_secs_f64(),
        at(0.99).as_secs_f64(),
        refit_took.as_secs_f64(),
        refit_cpu,
        per(rss),
        per(after_refit),
        live.saturating_sub(live0) as f64 / n as f64,
        rss / 1024,
        cold_peak / 1024,
        hwm / 1024,
        refits.0,
        refits.1,
        refits.2,
    );
    println!("  KiB per series after cycle: {}", trace.join(" "));
    Figures {
        n,
        cold_s: cold.as_secs_f64(),
        cold_peak_kib: cold_peak,
        steady_kib: rss,
        steady_peak_kib: hwm,
        rss0_kib: rss0,
        after_refit_kib: after_refit,
        live_kib: live,
        live0_kib: live0,
        update_p50_s: at(0.5).as_secs_f64(),
        update_p99_s: at(0.99).as_secs_f64(),
        update_max_s: updates[updates.len() - 1].as_secs_f64(),
        refit_s: refit_took.as_secs_f64(),
        refit_cpu_s: refit_cpu,
        refits,
    }
}

/// The value of `key=` in a `RESULT` line.
fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments are ignored.
    let ns: Vec<usize> = std::env::var("PRESCALE_SCALE_N")
        .unwrap_or_else(|_| "1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    if let [n] = ns[..] {
        println!("{}", run_one(n).line());
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let mut rows = Vec::new();
    for n in ns {
        let out = std::process::Command::new(&exe)
            .env("PRESCALE_SCALE_N", n.to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run the bench for one N");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        print!("{text}");
        assert!(out.status.success(), "n={n} failed");
        if let Some(line) = text.lines().find(|l| l.starts_with("RESULT ")) {
            rows.push(line.to_string());
        }
    }
    println!();
    println!("| series | cold start s | refit s (CPU s) | update p50 / p99 s | KiB per series: resident (right after the refit) / live | cold-start peak / steady RSS | refits selected / reused / drifted |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        let n = field(r, "n");
        let per = |key: &str, base: &str| (field(r, key) - field(r, base)) / n;
        println!(
            "| {} | {:.1} | {:.2} ({:.1}) | {:.3} / {:.3} | {:.1} ({:.1}) / {:.1} | {:.0} / {:.0} MiB = {:.2}x | {} / {} / {} |",
            n,
            field(r, "cold_s"),
            field(r, "refit_s"),
            field(r, "refit_cpu_s"),
            field(r, "update_p50_s"),
            field(r, "update_p99_s"),
            per("steady_kib", "rss0_kib"),
            per("after_refit_kib", "rss0_kib"),
            per("live_kib", "live0_kib"),
            field(r, "cold_peak_kib") / 1024.0,
            field(r, "steady_kib") / 1024.0,
            field(r, "cold_peak_kib") / field(r, "steady_kib"),
            field(r, "selected"),
            field(r, "reused"),
            field(r, "drifted"),
        );
    }
}
