//! The Prometheus source and the engine against a real Prometheus, backfilled with a
//! bundled trace. The engine runs on a simulated clock inside the trace, so every
//! expected value is known exactly.

use std::sync::Arc;

use crate::support::labels;
use crate::support::prometheus::{bundled_trace, usable, Prometheus};
use prescale::clock::SimClock;
use prescale::config::{Duration, PrometheusConfig};
use prescale::engine::{Engine, Metrics, SignalSettings};
use prescale::forecast::ModelSpec;
use prescale::plan::{ServePolicy, Tracker, TrackerSettings};
use prescale::series::{LabeledSeries, Series};
use prescale::snapshot::{Shared, Status};
use prescale::source::prometheus::PrometheusSource;
use prescale::source::{Range, Source};

const STEP: i64 = 300_000;
const HISTORY_STEPS: usize = 864; // three days of 5-minute steps
const METRIC: &str = "prescale_test_cpu";

/// The fixture: a bundled CPU trace (gaps carried forward, so Prometheus' lookback
/// cannot make it differ) on a 5-minute grid ending a day ago, as two series.
struct Fixture {
    a: Series,
    b: Series,
}

impl Fixture {
    fn new() -> Self {
        let trace = bundled_trace("nab_ec2_cpu_utilization_5f5533.csv");
        assert_eq!(trace.step_ms, STEP);
        let mut last = trace
            .values
            .iter()
            .copied()
            .find(|v| v.is_finite())
            .unwrap();
        let values: Vec<f64> = trace
            .values
            .iter()
            .map(|&v| {
                if v.is_finite() {
                    last = v;
                }
                last
            })
            .collect();
        let now = prescale::clock::Clock::now_ms(&prescale::clock::SystemClock);
        let end = now - now.rem_euclid(STEP) - 86_400_000;
        let start_ms = end - (values.len() as i64 - 1) * STEP;
        let a = Series {
            start_ms,
            step_ms: STEP,
            values: values.clone(),
        };
        let b = Series {
            start_ms,
            step_ms: STEP,
            values: values.iter().map(|v| 2.0 * v + 1.0).collect(),
        };
        Self { a, b }
    }

    fn labeled(&self) -> Vec<LabeledSeries> {
        [("a", &self.a), ("b", &self.b)]
            .into_iter()
            .map(|(instance, s)| LabeledSeries {
                labels: labels(&[("__name__", METRIC), ("instance", instance)]),
                series: s.clone(),
            })
            .collect()
    }

    /// A time well inside the trace with more than a history window before it.
    fn t0(&self) -> i64 {
        self.a.start_ms + (HISTORY_STEPS as i64 + 500) * STEP
    }

    fn values(s: &Series, range: Range) -> Vec<f64> {
        (0..range.len())
            .map(|i| s.values[s.index_of(range.start_ms + i as i64 * STEP).unwrap()])
            .collect()
    }
}

fn source(p: &Prometheus, max_points: usize) -> PrometheusSource {
    let config = PrometheusConfig {
        url: p.url(),
        timeout: Duration::try_new("2s").unwrap(),
        bearer_token_file: None,
        ca_file: None,
        insecure_skip_verify: false,
        headers: Default::default(),
        freshness_query: String::new(),
        query_offset: None,
    };
    PrometheusSource::new(&config)
        .unwrap()
        .with_max_points(max_points)
}

fn signal() -> SignalSettings {
    SignalSettings {
        shadow: None,
        name: "cpu".to_string(),
        query: METRIC.to_string(),
        history_ms: HISTORY_STEPS as i64 * STEP,
        max_staleness_ms: 3 * STEP,
        namespaces: None,
        custom: None,
        tracker: TrackerSettings {
            spec: ModelSpec::by_name("seasonal-naive").unwrap(),
            step_ms: STEP,
            policy: ServePolicy {
                lead_steps: 3,
                lead_ms: 0,
                tolerance: 0.0,
                quantile: 0.9,
                reactive_floor: true,
            },
            history_steps: HISTORY_STEPS,
            refit_every_steps: 12,
            min_history_steps: 288,
            fit_steps: 1,
            spread_refits: false,
        },
    }
}

macro_rules! require_prometheus {
    () => {
        if !usable() {
            return;
        }
    };
}

#[tokio::test]
async fn source_backfills_in_chunks_then_fetches_new_steps() {
    require_prometheus!();
    let fx = Fixture::new();
    let prom = Prometheus::start(&fx.labeled());
    // 864 points in chunks of 100: nine range queries stitched together.
    let src = source(&prom, 100);
    let t0 = fx.t0();
    let backfill = Range::try_new(t0 - (HISTORY_STEPS as i64 - 1) * STEP, t0, STEP).unwrap();
    let got = src.fetch(METRIC, backfill).await.unwrap();
    assert_eq!(got.len(), 2);
    for (got, want) in got.iter().zip([&fx.a, &fx.b]) {
        assert_eq!(got.series.start_ms, backfill.start_ms);
        assert_eq!(got.series.step_ms, STEP);
        assert_eq!(got.series.values, Fixture::values(want, backfill));
    }
    assert_eq!(
        got[0].labels,
        labels(&[("__name__", METRIC), ("instance", "a")])
    );
    // The next step alone.
    let next = Range::try_new(t0 + STEP, t0 + STEP, STEP).unwrap();
    let got = src.fetch(METRIC, next).await.unwrap();
    assert_eq!(
        got[0].series.values,
        vec![fx.a.values[fx.a.index_of(t0 + STEP).unwrap()]]
    );
    // A query Prometheus rejects is an error, not an empty answer.
    assert!(src.fetch("sum(", next).await.is_err());
}

/// Feeds a reference tracker exactly what the engine's series saw.
fn reference_step(t: &mut Tracker, s: &Series, range: Range, now: i64) -> f64 {
    t.observe(&Fixture::values(s, range));
    t.decide(now).value.unwrap()
}

#[tokio::test]
async fn engine_serves_what_the_tracker_decides_and_survives_an_outage() {
    require_prometheus!();
    let fx = Fixture::new();
    let mut prom = Prometheus::start(&fx.labeled());
    let t0 = fx.t0();
    let clock = Arc::new(SimClock::new(t0 + 1_234));
    let shared = Shared::new();
    let mut engine = Engine::new(
        vec![signal()],
        Arc::new(source(&prom, 250)),
        shared.clone(),
        clock.clone(),
        Metrics::unregistered(),
    );
    let mut ref_a = Tracker::new(signal().tracker);
    let mut ref_b = Tracker::new(signal().tracker);
    let entry = |instance: &str| {
        let snap = shared.load();
        snap.metrics["cpu"]
            .series
            .iter()
            .find(|e| e.labels.get("instance").map(String::as_str) == Some(instance))
            .cloned()
            .unwrap()
    };

    // Backfill, then five increments: the served value is the tracker's, exactly.
    engine.step().await.unwrap();
    let mut range = Range::try_new(t0 - (HISTORY_STEPS as i64 - 1) * STEP, t0, STEP).unwrap();
    let mut now = prescale::clock::Clock::now_ms(clock.as_ref());
    for k in 0..6 {
        if k > 0 {
            clock.advance(STEP);
            now = prescale::clock::Clock::now_ms(clock.as_ref());
            engine.step().await.unwrap();
            range = Range::try_new(range.end_ms + STEP, range.end_ms + STEP, STEP).unwrap();
        }
        let a = entry("a");
        assert_eq!(a.status, Status::Ok, "step {k}: {a:?}");
        assert_eq!(
            a.value,
            reference_step(&mut ref_a, &fx.a, range, now),
            "step {k}"
        );
        assert_eq!(
            entry("b").value,
            reference_step(&mut ref_b, &fx.b, range, now)
        );
        assert_eq!(a.timestamp_ms, range.end_ms);
        assert!(!a.labels.contains_key("__name__"));
    }
    let served = entry("a");

    // Prometheus goes away: stale (last value kept), then failed after max_staleness.
    prom.stop();
    let outage_from = range.end_ms + STEP;
    clock.advance(STEP);
    engine.step().await.unwrap();
    let a = entry("a");
    assert_eq!(a.status, Status::Stale);
    assert_eq!(
        (a.value, a.timestamp_ms),
        (served.value, served.timestamp_ms)
    );
    assert!(a.detail.reason.is_some());
    clock.advance(3 * STEP);
    engine.step().await.unwrap();
    assert_eq!(entry("a").status, Status::Failed);
    assert_eq!(entry("b").status, Status::Failed);

    // Back: the outage is backfilled and the value is again the tracker's.
    prom.restart();
    clock.advance(STEP);
    now = prescale::clock::Clock::now_ms(clock.as_ref());
    engine.step().await.unwrap();
    let end = now - now.rem_euclid(STEP);
    let outage = Range::try_new(outage_from, end, STEP).unwrap();
    assert_eq!(outage.len(), 5);
    let a = entry("a");
    assert_eq!(a.status, Status::Ok);
    assert_eq!(a.value, reference_step(&mut ref_a, &fx.a, outage, now));
    assert_eq!(a.timestamp_ms, end);
}
