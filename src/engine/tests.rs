use super::*;
use crate::clock::SimClock;
use crate::forecast::ModelSpec;
use crate::series::Series;
use crate::source::file::FileSource;

const STEP: i64 = 3_600_000;

fn settings(name: &str) -> SignalSettings {
    SignalSettings {
        shadow: None,
        name: name.to_string(),
        query: format!("q_{name}"),
        history_ms: 200 * STEP,
        max_staleness_ms: 5 * STEP,
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
            history_steps: 200,
            refit_every_steps: 10,
            min_history_steps: 20,
            fit_steps: 1,
            spread_refits: false,
        },
    }
}

fn wave(ts_ms: i64) -> f64 {
    let i = ts_ms / STEP;
    50.0 + 10.0 * ((i % 7) as f64) + (i % 3) as f64
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn fetched(range: Range, l: &Labels) -> FetchResult {
    let mut s = range.empty_series();
    for (i, v) in s.values.iter_mut().enumerate() {
        *v = wave(range.start_ms + i as i64 * range.step_ms);
    }
    Ok(vec![LabeledSeries {
        labels: l.clone(),
        series: s,
    }])
}

#[test]
fn first_fetch_is_the_window_then_only_new_steps() {
    let s = SignalState::new(settings("a"));
    let now = 1_000 * STEP + 1_234;
    let r = s.due(now).unwrap();
    assert_eq!(r.end_ms, 1_000 * STEP);
    assert_eq!(r.len(), 200);
    let mut s = s;
    let m = Metrics::unregistered();
    let l = labels(&[("queue", "a")]);
    s.apply(now, r, fetched(r, &l), &m);
    assert_eq!(s.due(now + 5_000), None, "no new grid point yet");
    let r2 = s.due(now + 3 * STEP).unwrap();
    assert_eq!((r2.start_ms, r2.end_ms), (1_001 * STEP, 1_003 * STEP));
    // A failed fetch is retried with a growing range, capped at the window.
    s.apply(now + 3 * STEP, r2, Err("down".into()), &m);
    let r3 = s.due(now + 4 * STEP).unwrap();
    assert_eq!((r3.start_ms, r3.end_ms), (1_001 * STEP, 1_004 * STEP));
    let r4 = s.due(now + 1_000 * STEP).unwrap();
    assert_eq!(r4.len(), 200);
}

#[test]
fn served_value_equals_a_tracker_fed_the_same_history() {
    let m = Metrics::unregistered();
    let mut s = SignalState::new(settings("a"));
    let l = labels(&[("queue", "a")]);
    let mut reference = Tracker::new(settings("a").tracker);
    let mut now = 500 * STEP;
    let mut explained = 0;
    for k in 0..30 {
        let r = s.due(now).unwrap();
        let f = fetched(r, &l);
        reference.observe(&f.as_ref().unwrap()[0].series.values);
        s.apply(now, r, f, &m);
        let want = reference.decide(now);
        let e = &s.entry().series[0];
        assert_eq!(e.value, want.value.unwrap(), "step {k}");
        assert_eq!(e.status, Status::Ok);
        assert_eq!(e.labels, l);
        assert_eq!(e.timestamp_ms, r.end_ms);
        assert_eq!(e.window_s, 3_600);
        assert_eq!(e.detail.model, want.model);
        // The explanation is of the value served, in words and parts.
        if let Some(why) = &e.detail.why {
            explained += 1;
            assert!(
                why.text.ends_with(&format!("= {}", e.value)),
                "{}",
                why.text
            );
            let base = if why.floor_applied {
                why.latest.unwrap()
            } else {
                why.forecast_peak.unwrap()
            };
            assert!(
                (base * why.tolerance_factor - e.value).abs() < 1e-9,
                "{why:?}"
            );
        } else {
            assert!(want.warming, "only a warming series has no explanation");
        }
        if k >= 3 {
            let score = e.detail.backtest_mase.unwrap();
            assert!(score.is_finite() && score >= 0.0, "{score}");
        }
        now += STEP;
    }
    assert!(explained > 0, "no decision was explained");
}

#[test]
fn warming_then_ok() {
    let m = Metrics::unregistered();
    let mut s = SignalState::new(settings("a"));
    let l = labels(&[]);
    // Only 5 points exist: the source returns gaps before them.
    let now = 100 * STEP;
    let r = s.due(now).unwrap();
    let mut f = fetched(r, &l).unwrap();
    let n = f[0].series.values.len();
    for v in &mut f[0].series.values[..n - 5] {
        *v = f64::NAN;
    }
    let t = s.apply(now, r, Ok(f), &m);
    assert_eq!(t[0].to, Some(Status::Warming));
    let e = &s.entry().series[0];
    assert_eq!(e.status, Status::Warming);
    assert_eq!(e.value, wave(now));
    assert_eq!(e.detail.model, "last-value");
    let mut now = now;
    let mut last = Status::Warming;
    for _ in 0..60 {
        now += STEP;
        let r = s.due(now).unwrap();
        s.apply(now, r, fetched(r, &l), &m);
        last = s.entry().series[0].status;
    }
    assert_eq!(last, Status::Ok);
}

#[test]
fn source_failure_goes_stale_then_failed_then_recovers() {
    let m = Metrics::unregistered();
    let mut s = SignalState::new(settings("a"));
    let l = labels(&[("queue", "a")]);
    let mut now = 500 * STEP;
    let r = s.due(now).unwrap();
    s.apply(now, r, fetched(r, &l), &m);
    let served = s.entry().series[0].clone();
    assert_eq!(served.status, Status::Ok);
    let mut seen = Vec::new();
    for _ in 0..7 {
        now += STEP;
        let r = s.due(now).unwrap();
        let t = s.apply(now, r, Err("connection refused".into()), &m);
        seen.extend(t.into_iter().map(|t| t.to));
        let e = &s.entry().series[0];
        assert_eq!(e.value, served.value, "the last value is kept");
        assert_eq!(e.timestamp_ms, served.timestamp_ms);
    }
    assert_eq!(seen, vec![Some(Status::Stale), Some(Status::Failed)]);
    assert_eq!(
        s.entry().series[0].detail.reason.as_deref(),
        Some("connection refused")
    );
    now += STEP;
    let r = s.due(now).unwrap();
    assert_eq!(r.start_ms, 501 * STEP, "the outage is backfilled");
    let t = s.apply(now, r, fetched(r, &l), &m);
    assert_eq!(t[0].to, Some(Status::Ok));
    assert_eq!(s.entry().series[0].timestamp_ms, r.end_ms);
    // The same observations and decisions, in the same order, as the engine made.
    let mut reference = Tracker::new(settings("a").tracker);
    let first = Range::try_new(301 * STEP, 500 * STEP, STEP).unwrap();
    reference.observe(&fetched(first, &l).unwrap()[0].series.values);
    reference.decide(500 * STEP);
    reference.observe(&fetched(r, &l).unwrap()[0].series.values);
    assert_eq!(
        s.entry().series[0].value,
        reference.decide(now).value.unwrap()
    );
}

#[test]
fn served_values_expire_max_staleness_after_their_last_refresh() {
    let m = Metrics::unregistered();
    let mut s = SignalState::new(settings("a"));
    let l = labels(&[("queue", "a")]);
    let now = 500 * STEP + 7;
    let r = s.due(now).unwrap();
    s.apply(now, r, fetched(r, &l), &m);
    let e = s.entry().series[0].clone();
    assert_eq!(e.expires_ms, now + 5 * STEP);
    assert_eq!(e.status_at(now + 5 * STEP), Status::Ok);
    assert_eq!(e.status_at(now + 5 * STEP + 1), Status::Failed);
    // Failing refreshes do not extend it.
    let later = now + 2 * STEP;
    let r = s.due(later).unwrap();
    s.apply(later, r, Err("timeout".into()), &m);
    let e = &s.entry().series[0];
    assert_eq!((e.status, e.expires_ms), (Status::Stale, now + 5 * STEP));
}

#[test]
fn a_source_failing_from_the_start_is_a_signal_error() {
    let m = Metrics::unregistered();
    let mut s = SignalState::new(settings("a"));
    let now = 500 * STEP;
    let r = s.due(now).unwrap();
    s.apply(now, r, Err("connection refused".into()), &m);
    let e = s.entry();
    assert!(e.series.is_empty());
    assert_eq!(e.error.as_deref(), Some("connection refused"));
    // The first successful refresh clears it.
    let r = s.due(now + STEP).unwrap();
    s.apply(now + STEP, r, fetched(r, &labels(&[])), &m);
    let e = s.entry();
    assert_eq!((e.series.len(), e.error), (1, None));
}

#[test]
fn an_outage_longer_than_the_window_keeps_the_series_failed() {
    let m = Metrics::unregistered();
    let mut s = SignalState::new(settings("a"));
    let now = 500 * STEP;
    let r = s.due(now).unwrap();
    s.apply(now, r, fetched(r, &labels(&[])), &m);
    let later = now + 300 * STEP;
    let r = s.due(later).unwrap();
    let t = s.apply(later, r, Err("connection refused".into()), &m);
    assert_eq!(t[0].to, Some(Status::Failed));
    assert_eq!(
        s.entry().series.len(),
        1,
        "not forgotten while the source fails"
    );
}

#[test]
fn series_come_and_go() {
    let m = Metrics::unregistered();
    let mut s = SignalState::new(settings("a"));
    let a = labels(&[("queue", "a")]);
    let b = labels(&[("queue", "b")]);
    let mut now = 500 * STEP;
    let r = s.due(now).unwrap();
    s.apply(now, r, fetched(r, &a), &m);
    // b appears, a disappears.
    for _ in 0..6 {
        now += STEP;
        let r = s.due(now).unwrap();
        s.apply(now, r, fetched(r, &b), &m);
    }
    let e = s.entry();
    let by: BTreeMap<_, _> = e
        .series
        .iter()
        .map(|x| (x.labels.clone(), x.status))
        .collect();
    assert_eq!(by[&a], Status::Failed);
    // b was backfilled with the whole window when it appeared, so it did not warm up.
    assert_eq!(by[&b], Status::Ok);
    // After a whole history window without a, it is forgotten.
    now += 200 * STEP;
    let r = s.due(now).unwrap();
    let t = s.apply(now, r, fetched(r, &b), &m);
    assert!(t.iter().any(|t| t.labels == a && t.to.is_none()));
    assert_eq!(s.entry().series.len(), 1);
    assert_eq!(s.entry().series[0].labels, b);
}

#[test]
fn a_new_series_is_backfilled_with_its_history() {
    let m = Metrics::unregistered();
    let mut s = SignalState::new(settings("a"));
    let a = labels(&[("queue", "a")]);
    let b = labels(&[("queue", "b")]);
    let both = |range: Range| -> FetchResult {
        let mut v = fetched(range, &a).unwrap();
        v.extend(fetched(range, &b).unwrap());
        Ok(v)
    };
    let mut reference = Tracker::new(settings("a").tracker);
    let mut now = 500 * STEP;
    let r = s.due(now).unwrap();
    s.apply(now, r, fetched(r, &a), &m);
    reference.observe(&fetched(r, &a).unwrap()[0].series.values);
    reference.decide(now);
    now += STEP;
    let r = s.due(now).unwrap();
    assert_eq!(r.len(), 1);
    s.apply(now, r, both(r), &m);
    reference.observe(&fetched(r, &a).unwrap()[0].series.values);
    reference.decide(now);
    assert_eq!(s.entry().series.len(), 1, "b waits for its history");
    let r = s.due(now).unwrap();
    assert_eq!(r.len(), 200, "the whole window again, at the same time");
    s.apply(now, r, both(r), &m);
    let e = s.entry();
    assert_eq!(e.series.len(), 2);
    assert!(e.series.iter().all(|x| x.status == Status::Ok));
    // a was not fed twice: it still equals a tracker fed each point once.
    let va = e.series.iter().find(|x| x.labels == a).unwrap().value;
    assert_eq!(va, reference.decide(now).value.unwrap());
    assert_eq!(s.due(now), None);
}

#[test]
fn metrics_count_statuses_and_errors() {
    let mut registry = Registry::default();
    let m = Metrics::new(&mut registry);
    let mut core = Core::new(vec![settings("a")], m);
    let mut now = 500 * STEP;
    let l = labels(&[]);
    for _ in 0..5 {
        let p = core.plan(now, None);
        let f = fetched(p[0].range, &l);
        core.apply(
            now,
            vec![(p[0].clone(), f, std::time::Duration::from_millis(3))],
        );
        now += STEP;
    }
    let p = core.plan(now, None);
    core.apply(
        now,
        vec![(
            p[0].clone(),
            Err("x".into()),
            std::time::Duration::from_millis(3),
        )],
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("prescale_series_by_signal{signal=\"a\",status=\"stale\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("prescale_source_errors_total{signal=\"a\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("prescale_refresh_duration_seconds_count{signal=\"a\"} 6"),
        "{text}"
    );
    assert!(
        text.contains("prescale_forecast_mase{signal=\"a\"} "),
        "{text}"
    );
    assert!(
        text.contains("prescale_series_transitions_total{signal=\"a\",from=\"ok\",to=\"stale\"} 1"),
        "{text}"
    );
}

#[test]
fn grid_points_after_the_source_frontier_wait_for_it() {
    let mut registry = Registry::default();
    let m = Metrics::new(&mut registry);
    let mut core = Core::new(vec![settings("a")], m);
    let l = labels(&[]);
    let now = 500 * STEP + 1_234;
    // Prometheus holds samples up to three steps ago (a stall): read up to there.
    let p = core.plan(now, Some(497 * STEP + 10));
    assert_eq!(p[0].range.end_ms, 497 * STEP);
    let f = fetched(p[0].range, &l);
    core.apply(now, vec![(p[0].clone(), f, std::time::Duration::ZERO)]);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(&format!(
            "prescale_source_lag_seconds {}",
            (3 * STEP + 1_224) as f64 / 1e3
        )),
        "{text}"
    );
    // Nothing new while it stays behind; once it catches up, the points in between.
    assert!(core.plan(now + STEP, Some(497 * STEP + 10)).is_empty());
    let p = core.plan(now + STEP, Some(now + STEP - 300));
    assert_eq!(
        (p[0].range.start_ms, p[0].range.end_ms),
        (498 * STEP, 501 * STEP)
    );
    // A frontier ahead of the clock (skew) does not read the future.
    let mut fresh = Core::new(vec![settings("b")], Metrics::unregistered());
    assert_eq!(
        fresh.plan(now, Some(now + 10 * STEP))[0].range.end_ms,
        500 * STEP
    );
}

#[tokio::test]
async fn engine_publishes_snapshots_from_a_file_source() {
    let anchor = 1_000 * STEP;
    let rec = LabeledSeries {
        labels: labels(&[("trace", "wave")]),
        series: Series {
            start_ms: 0,
            step_ms: STEP,
            values: (0..400).map(|i| wave(i * STEP)).collect(),
        },
    };
    let source = FileSource::new(anchor).with_recording("q_a", vec![rec]);
    let clock = Arc::new(SimClock::new(anchor));
    let shared = Shared::new();
    let mut engine = Engine::new(
        vec![settings("a")],
        Arc::new(source),
        shared.clone(),
        clock.clone(),
        Metrics::unregistered(),
    );
    assert!(!shared.is_ready());
    engine.step().await.unwrap();
    assert!(shared.is_ready());
    let snap = shared.load();
    let e = &snap.metrics["a"].series[0];
    assert_eq!(e.status, Status::Ok);
    assert_eq!(e.detail.latest, Some(wave(399 * STEP)));
    clock.advance(STEP);
    engine.step().await.unwrap();
    let snap = shared.load();
    assert_eq!(snap.published_ms, anchor + STEP);
    // After the anchor the recording starts over from its first point.
    assert_eq!(snap.metrics["a"].series[0].detail.latest, Some(wave(0)));
}

// The loop tests run on tokio's paused clock: a sleep or the engine's tick advances
// virtual time as soon as every task is idle, so they neither wait on nor race the
// wall clock of a busy machine.
#[tokio::test(start_paused = true)]
async fn run_stops_on_shutdown() {
    let source = FileSource::new(0).with_recording("q_a", vec![]);
    let shared = Shared::new();
    let engine = Engine::new(
        vec![settings("a")],
        Arc::new(source),
        shared.clone(),
        Arc::new(SimClock::new(STEP * 10)),
        Metrics::unregistered(),
    )
    .with_tick(std::time::Duration::from_millis(5));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(async move {
        let _ = rx.await;
    }));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(shared.is_ready());
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}

/// A source that never answers (a Prometheus that accepted the connection and hung).
struct Hanging;

impl Source for Hanging {
    fn fetch<'a>(
        &'a self,
        _query: &'a str,
        _range: Range,
    ) -> crate::source::BoxFuture<'a, crate::source::Result<Vec<LabeledSeries>>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(start_paused = true)]
async fn run_stops_on_shutdown_even_in_a_hung_refresh() {
    let engine = Engine::new(
        vec![settings("a")],
        Arc::new(Hanging),
        Shared::new(),
        Arc::new(SimClock::new(STEP * 10)),
        Metrics::unregistered(),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(async move {
        let _ = rx.await;
    }));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(2), task)
        .await
        .expect("the engine waited for a refresh that never ends")
        .unwrap()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn reloads_arrive_between_steps_and_publish_at_once() {
    let source = FileSource::new(0)
        .with_recording("q_a", vec![])
        .with_recording("q_b", vec![]);
    let shared = Shared::new();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let engine = Engine::new(
        vec![settings("a")],
        Arc::new(source),
        shared.clone(),
        Arc::new(SimClock::new(STEP * 10)),
        Metrics::unregistered(),
    )
    .with_tick(std::time::Duration::from_millis(5))
    .with_reloads(reload_rx);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(async move {
        let _ = rx.await;
    }));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(shared.load().metrics.keys().collect::<Vec<_>>(), vec!["a"]);
    reload_tx
        .send(Reload {
            signals: vec![settings("b")],
            source: None,
        })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(shared.load().metrics.keys().collect::<Vec<_>>(), vec!["b"]);
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}

proptest::proptest! {
    /// Whatever the sequence of successes and failures: after a success the series
    /// is ok (or warming); after a failure it keeps the last value and is stale
    /// within `max_staleness` of the last success and failed beyond; and the served
    /// value always equals a tracker fed the same points in the same order.
    #[test]
    fn status_follows_the_last_success(outcomes in proptest::collection::vec(
        (proptest::bool::ANY, 1i64..4), 1..30)
    ) {
        let m = Metrics::unregistered();
        let mut s = SignalState::new(settings("a"));
        let l = labels(&[("queue", "a")]);
        let mut reference = Tracker::new(settings("a").tracker);
        let mut now = 500 * STEP;
        let r = s.due(now).unwrap();
        s.apply(now, r, fetched(r, &l), &m);
        reference.observe(&fetched(r, &l).unwrap()[0].series.values);
        reference.decide(now);
        let mut last_ok = now;
        let mut served = s.entry().series[0].value;
        for (ok, steps) in outcomes {
            now += steps * STEP;
            let r = s.due(now).unwrap();
            if ok {
                s.apply(now, r, fetched(r, &l), &m);
                reference.observe(&fetched(r, &l).unwrap()[0].series.values);
                let want = reference.decide(now).value.unwrap();
                let e = &s.entry().series[0];
                proptest::prop_assert_eq!(e.status, Status::Ok);
                proptest::prop_assert_eq!(e.value, want);
                served = e.value;
                last_ok = now;
            } else {
                s.apply(now, r, Err("down".into()), &m);
                let e = &s.entry().series[0];
                let want = if now - last_ok <= 5 * STEP { Status::Stale } else { Status::Failed };
                proptest::prop_assert_eq!(e.status, want);
                proptest::prop_assert_eq!(e.value, served);
            }
        }
    }
}

#[test]
fn an_outage_is_logged_when_it_starts_once_a_minute_and_when_it_ends() {
    let mut o = super::Outage::default();
    assert_eq!(o.recover(0), None, "no outage, nothing to report");
    // A failed refresh every 5 s for 3 minutes: logged at 0, 60, 120 and 180 s.
    let logged: Vec<i64> = (0..=36)
        .map(|i| i * 5_000)
        .filter(|&t| o.fail(1_000_000 + t))
        .collect();
    assert_eq!(logged, vec![0, 60_000, 120_000, 180_000]);
    assert_eq!(o.recover(1_200_000), Some((37, 200_000)));
    // The next outage starts afresh.
    assert!(o.fail(2_000_000));
    assert_eq!(o.failures, 1);
}

#[test]
fn shadow_mode_serves_the_latest_and_counts_what_the_forecast_would_change() {
    let mut registry = prometheus_client::registry::Registry::default();
    let m = Metrics::new(&mut registry);
    let mut shadow = settings("a");
    shadow.shadow = Some(Shadow {
        hpa_target: Some(1.0),
    });
    let mut s = SignalState::new(shadow);
    let l = labels(&[("queue", "a")]);
    let mut reference = Tracker::new(settings("a").tracker);
    let mut now = 500 * STEP;
    let mut differed = 0;
    for _ in 0..30 {
        let r = s.due(now).unwrap();
        let f = fetched(r, &l);
        let values = f.as_ref().unwrap()[0].series.values.clone();
        reference.observe(&values);
        s.apply(now, r, f, &m);
        let want = reference.decide(now);
        let e = &s.entry().series[0];
        let latest = values
            .iter()
            .rev()
            .find(|v| v.is_finite())
            .copied()
            .unwrap();
        assert_eq!(e.value, latest, "shadow serves the latest observation");
        assert_eq!(e.detail.predicted, want.value, "and reports the forecast's");
        assert!(e.detail.shadow);
        if let Some(why) = &e.detail.why {
            assert!(
                why.text.starts_with("shadow: serving the latest"),
                "{}",
                why.text
            );
        }
        if want.value.is_some_and(|p| p.ceil() != latest.ceil()) {
            differed += 1;
        }
        now += STEP;
    }
    assert!(
        differed > 0,
        "the forecast never differed: the counter is untested"
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("prescale_shadow_replica_seconds_total{signal=\"a\",change=\"more\"}"),
        "{text}"
    );
}

#[test]
fn shadow_mode_comes_from_the_config() {
    let text = "prometheus:\n  url: http://127.0.0.1:9090\nsignals:\n  - name: a\n    query: up\n    mode: shadow\n    hpa_target: 2\n  - name: b\n    query: up\n";
    let c = crate::config::Config::from_yaml(text).unwrap();
    let a = SignalSettings::from_config(&c.signals[0]).unwrap();
    let b = SignalSettings::from_config(&c.signals[1]).unwrap();
    assert_eq!(
        a.shadow,
        Some(Shadow {
            hpa_target: Some(2.0)
        })
    );
    assert_eq!(b.shadow, None, "predictive by default");
}

/// A source of one series per query that records, for each fetch, how many fetches
/// were running and how many signals the engine had applied when it started.
struct Counting {
    running: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    progress: std::sync::Mutex<Option<Arc<Progress>>>,
    answered_at_start: std::sync::Mutex<Vec<usize>>,
}

impl Counting {
    fn new() -> Self {
        Self {
            running: 0.into(),
            most: 0.into(),
            progress: std::sync::Mutex::new(None),
            answered_at_start: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl Source for Counting {
    fn fetch<'a>(
        &'a self,
        query: &'a str,
        range: Range,
    ) -> crate::source::BoxFuture<'a, crate::source::Result<Vec<LabeledSeries>>> {
        use std::sync::atomic::Ordering;
        Box::pin(async move {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            if let Some(p) = self.progress.lock().unwrap().as_ref() {
                self.answered_at_start
                    .lock()
                    .unwrap()
                    .push(p.get().signals_answered);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            Ok(fetched(range, &labels(&[("q", query)])).unwrap())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_are_bounded_and_applied_as_they_arrive() {
    let source = Arc::new(Counting::new());
    let names: Vec<String> = (0..7).map(|i| format!("s{i}")).collect();
    let shared = Shared::new();
    let mut engine = Engine::new(
        names.iter().map(|n| settings(n)).collect(),
        source.clone(),
        shared.clone(),
        Arc::new(SimClock::new(1_000 * STEP)),
        Metrics::unregistered(),
    )
    .with_max_fetches(2);
    let progress = engine.progress();
    assert_eq!(
        progress
            .not_ready()
            .as_deref()
            .map(|s| s.starts_with("loading: 0 series from 0 of 7 signals")),
        Some(true),
        "nothing loaded before the first step"
    );
    engine.step().await.unwrap();
    assert!(source.most.load(std::sync::atomic::Ordering::SeqCst) <= 2);
    assert!(source.most.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let snap = shared.load();
    assert_eq!(snap.metrics.len(), 7);
    assert!(snap.metrics.values().all(|m| m.series.len() == 1));
    assert_eq!(progress.not_ready(), None, "ready once published");
    assert_eq!(
        progress.get(),
        Loaded {
            signals_answered: 7,
            signals_total: 7,
            series: 7
        }
    );
}

#[tokio::test]
async fn one_fetch_at_a_time_applies_each_before_the_next_starts() {
    let source = Arc::new(Counting::new());
    let shared = Shared::new();
    let mut engine = Engine::new(
        (0..4).map(|i| settings(&format!("s{i}"))).collect(),
        source.clone(),
        shared.clone(),
        Arc::new(SimClock::new(1_000 * STEP)),
        Metrics::unregistered(),
    )
    .with_max_fetches(1);
    *source.progress.lock().unwrap() = Some(engine.progress());
    engine.step().await.unwrap();
    // The permit is held until the result is applied: fetch k starts with k applied.
    assert_eq!(*source.answered_at_start.lock().unwrap(), vec![0, 1, 2, 3]);
    assert_eq!(source.most.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(shared.load().metrics.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_backfills_take_several_slots() {
    let source = Arc::new(Counting::new());
    let long = |i: usize| {
        let mut s = settings(&format!("s{i}"));
        s.tracker.history_steps = 2 * BACKFILL_SLOT_POINTS;
        s.history_ms = s.tracker.history_steps as i64 * STEP;
        s
    };
    let shared = Shared::new();
    let mut engine = Engine::new(
        (0..6).map(long).collect(),
        source.clone(),
        shared.clone(),
        Arc::new(SimClock::new(20_000 * STEP)),
        Metrics::unregistered(),
    )
    .with_max_fetches(4);
    engine.step().await.unwrap();
    // Each window takes 2 of the 4 slots.
    assert!(source.most.load(std::sync::atomic::Ordering::SeqCst) <= 2);
    assert_eq!(shared.load().metrics.len(), 6);
    assert!(shared.load().metrics.values().all(|m| m.series.len() == 1));
}

#[test]
fn the_rolling_mase_is_over_the_last_block_aligned_window() {
    let mut sums = ErrorSums::default();
    assert_eq!(sums.mase(), None, "no errors");
    sums.push(1.0, 2.0);
    assert_eq!(sums.mase(), None, "fewer than 2 errors");
    sums.push(1.0, 2.0);
    assert_eq!(sums.mase(), Some(0.5));
    // Errors i = 0.. of (i, 1): the window holds the newest `len` of them.
    let mut sums = ErrorSums::default();
    for n in 1..=1_000usize {
        sums.push(n as f32, 1.0);
        let len = sums.len();
        let full = (n - 1) / ERROR_BLOCK;
        let want_len = full.min(ERROR_BLOCKS - 1) * ERROR_BLOCK + (n - 1) % ERROR_BLOCK + 1;
        assert_eq!(len, want_len, "after {n}");
        assert!(
            n < ERROR_WINDOW || len > ERROR_WINDOW - ERROR_BLOCK,
            "{len}"
        );
        assert!(len <= ERROR_WINDOW);
        if len >= 2 {
            let want = ((n + 1 - len)..=n).map(|i| i as f64).sum::<f64>() / len as f64;
            let got = sums.mase().unwrap();
            assert!(
                (got - want).abs() <= 1e-6 * want,
                "after {n}: {got} vs {want}"
            );
        }
    }
    // A last value that never erred gives no ratio.
    let mut sums = ErrorSums::default();
    sums.push(1.0, 0.0);
    sums.push(1.0, 0.0);
    assert_eq!(sums.mase(), None);
}

#[test]
fn snapshots_share_an_unchanged_entry_instead_of_copying_it() {
    let m = Metrics::unregistered();
    let mut s = SignalState::new(settings("a"));
    let l = labels(&[("queue", "a")]);
    let mut now = 500 * STEP;
    let r = s.due(now).unwrap();
    s.apply(now, r, fetched(r, &l), &m);
    let (one, two) = (s.entry(), s.entry());
    assert!(
        Arc::ptr_eq(&one.series[0], &two.series[0]),
        "no step between"
    );
    // Going stale changes the entry (a copy, the old snapshot keeps its own) ...
    now += STEP;
    let r = s.due(now).unwrap();
    s.apply(now, r, Err("down".into()), &m);
    let stale = s.entry();
    assert!(!Arc::ptr_eq(&one.series[0], &stale.series[0]));
    assert_eq!(one.series[0].status, Status::Ok);
    assert_eq!(stale.series[0].status, Status::Stale);
    assert_eq!(stale.series[0].value, one.series[0].value);
    // ... staying stale for the same reason does not.
    now += STEP;
    let r = s.due(now).unwrap();
    s.apply(now, r, Err("down".into()), &m);
    assert!(Arc::ptr_eq(&stale.series[0], &s.entry().series[0]));
}

/// What each series costs inline, pinned so it cannot grow back unnoticed: at
/// issue 16's 100,000 series every 100 bytes here is 10 MB. The map holds a
/// pointer per series (its B-tree nodes, often half full, cost a few times the
/// value: 1304 bytes inline in them before, ~2.4 KiB of node per series); the
/// box holds the state with its Tracker (history, model and served entry are
/// on the heap). The bounds are where it stands (on 64-bit targets); the
/// Tracker's largest parts are the fitted model and `auto`'s selection
/// (`src/forecast/`), so a bigger model type shows here too (the selection's
/// pooled drift evidence added 24 bytes, the packed history's block state 24:
/// its points take 3.6 KiB less on the heap).
#[cfg(target_pointer_width = "64")]
#[test]
fn a_series_costs_a_pointer_in_the_map_and_a_small_box() {
    use std::mem::size_of;
    let value = size_of::<Box<SeriesState>>();
    assert_eq!(value, 8, "the map's value");
    let (state, tracker) = (size_of::<SeriesState>(), size_of::<Tracker>());
    assert!(state <= 784, "SeriesState grew to {state} bytes");
    assert!(tracker <= 672, "Tracker grew to {tracker} bytes");
    assert!(size_of::<ErrorSums>() <= 72, "the MASE's sums");
}
