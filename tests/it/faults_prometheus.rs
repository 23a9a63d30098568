//! The engine and the HTTPS API against a real Prometheus that misbehaves: down
//! at start, slow past the timeout, answering 503, cutting responses mid-body,
//! refusing a bad query, and coming back over a fresh TSDB that holds only part of
//! the series. A TCP proxy on 127.0.0.1 (tests/it/support/proxy.rs) makes the faults.
//!
//! The engine runs on a simulated clock (the API checks expiry on the same
//! clock), so every status is exact. Every 200 the API gives is checked: no
//! value older than `max_staleness` (plus the step the grid lags) is ever served.

use crate::support::proxy;

use std::sync::Arc;
use std::time::Duration;

use crate::support::labels;
use crate::support::prometheus::{bundled_trace, usable, Prometheus};
use prescale::api::{AuthMode, Settings, TlsSource};
use prescale::clock::{Clock, SimClock};
use prescale::config::PrometheusConfig;
use prescale::engine::{Engine, Metrics, SignalSettings, Transition};
use prescale::forecast::ModelSpec;
use prescale::plan::{ServePolicy, TrackerSettings};
use prescale::series::{LabeledSeries, Series};
use prescale::snapshot::{Shared, Status};
use prescale::source::prometheus::PrometheusSource;
use proxy::{Mode, Proxy};

const STEP: i64 = 60_000;
const HISTORY_STEPS: usize = 120;
/// Grid points in the fixture: the window, a few before it, and room after t0.
const POINTS: usize = HISTORY_STEPS + 40;
const MAX_STALENESS: i64 = 3 * STEP;
const METRIC: &str = "prescale_faults_cpu";

/// A bundled CPU trace (gaps carried forward) on a 1-minute grid ending a day ago;
/// short, so that promtool writes few blocks and Prometheus starts fast.
fn trace() -> Series {
    let t = bundled_trace("nab_ec2_cpu_utilization_5f5533.csv");
    let mut last = t.values.iter().copied().find(|v| v.is_finite()).unwrap();
    let values: Vec<f64> = t.values[..POINTS]
        .iter()
        .map(|&v| {
            if v.is_finite() {
                last = v;
            }
            last
        })
        .collect();
    let now = prescale::clock::SystemClock.now_ms();
    let end = now - now.rem_euclid(STEP) - 86_400_000;
    Series {
        start_ms: end - (values.len() as i64 - 1) * STEP,
        step_ms: STEP,
        values,
    }
}

fn labeled(instance: &str, s: &Series) -> LabeledSeries {
    LabeledSeries {
        labels: labels(&[("__name__", METRIC), ("instance", instance)]),
        series: s.clone(),
    }
}

/// The part of `s` between grid times `from` and `to`.
fn slice(s: &Series, from: i64, to: i64) -> Series {
    let (i, j) = (s.index_of(from).unwrap(), s.index_of(to).unwrap());
    Series {
        start_ms: from,
        step_ms: s.step_ms,
        values: s.values[i..=j].to_vec(),
    }
}

fn signal(name: &str, query: &str) -> SignalSettings {
    SignalSettings {
        shadow: None,
        name: name.to_string(),
        query: query.to_string(),
        history_ms: HISTORY_STEPS as i64 * STEP,
        max_staleness_ms: MAX_STALENESS,
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
            min_history_steps: 60,
            fit_steps: 1,
            spread_refits: false,
        },
    }
}

struct Api {
    client: reqwest::Client,
    base: String,
    clock: Arc<SimClock>,
}

impl Api {
    /// GETs a value URL; on 200 checks that no served value is older than
    /// `max_staleness` plus one step (the grid the value sits on lags the clock by
    /// less than a step).
    async fn get(&self, metric: &str, selector: Option<&str>) -> (u16, serde_json::Value) {
        let mut url = format!(
            "{}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/{metric}",
            self.base
        );
        if let Some(s) = selector {
            url.push_str(&format!("?labelSelector={s}"));
        }
        let resp = self.client.get(&url).send().await.unwrap();
        let code = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap();
        if code == 200 {
            let now = self.clock.now_ms();
            for item in body["items"].as_array().unwrap() {
                let ts = chrono::DateTime::parse_from_rfc3339(item["timestamp"].as_str().unwrap())
                    .unwrap()
                    .timestamp_millis();
                assert!(
                    now - ts <= MAX_STALENESS + STEP,
                    "served a value from {ts}, {} ms old at {now}: {body}",
                    now - ts
                );
            }
        }
        (code, body)
    }
}

fn message(body: &serde_json::Value) -> String {
    assert_eq!(body["kind"], "Status", "{body}");
    body["message"].as_str().unwrap().to_string()
}

fn timestamps(body: &serde_json::Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["timestamp"].as_str().unwrap().to_string())
        .collect()
}

/// The statuses series `instance=a` went through, in order.
fn path_of_a(transitions: &[Transition]) -> Vec<Option<Status>> {
    transitions
        .iter()
        .filter(|t| t.signal == "cpu" && t.labels.get("instance").map(String::as_str) == Some("a"))
        .map(|t| t.to)
        .collect()
}

#[tokio::test]
async fn a_misbehaving_prometheus_walks_ok_stale_failed_ok_and_never_serves_old_values() {
    let _heavy = crate::support::heavy();
    if !usable() {
        return;
    }
    let a = trace();
    let b = Series {
        values: a.values.iter().map(|v| 2.0 * v + 1.0).collect(),
        ..a.clone()
    };
    let mut prom = Prometheus::start(&[labeled("a", &a), labeled("b", &b)]);
    let proxy = Proxy::start(prom.addr(), Mode::Refuse).await;
    let t0 = a.start_ms + (HISTORY_STEPS as i64 + 10) * STEP;
    let clock = Arc::new(SimClock::new(t0 + 1_234));
    let source = PrometheusSource::new(&PrometheusConfig {
        url: proxy.url(),
        timeout: prescale::config::Duration::try_new("500ms").unwrap(),
        bearer_token_file: None,
        ca_file: None,
        insecure_skip_verify: false,
        headers: Default::default(),
        freshness_query: String::new(),
        query_offset: None,
    })
    .unwrap();
    let shared = Shared::new();
    let mut engine = Engine::new(
        vec![signal("cpu", METRIC), signal("broken", "sum(")],
        Arc::new(source),
        shared.clone(),
        clock.clone(),
        Metrics::unregistered(),
    );
    let certs = tempfile::tempdir().unwrap();
    let server = prescale::api::Server::bind(
        Settings::new(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            TlsSource::SelfSigned {
                dir: certs.path().to_path_buf(),
                dns_names: vec![],
            },
            AuthMode::None,
        ),
        shared.clone(),
        Arc::new(Default::default()),
        clock.clone(),
    )
    .await
    .unwrap();
    let https = server.https_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let api_task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let ca = std::fs::read(certs.path().join("apiserver.crt")).unwrap();
    let api = Api {
        client: reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
        base: format!("https://{https}"),
        clock: clock.clone(),
    };
    let mut transitions = Vec::new();

    // Down at start: no series yet, yet the metric is 503 "source failing", not 404.
    transitions.extend(engine.step().await.unwrap());
    let (code, body) = api.get("cpu", None).await;
    assert_eq!(code, 503, "{body}");
    assert!(message(&body).contains("source failing"), "{body}");

    // Up: ok, and both series served. A query Prometheus refuses is a 503 with its reason.
    proxy.set(Mode::Pass);
    transitions.extend(engine.step().await.unwrap());
    let (code, fresh) = api.get("cpu", None).await;
    assert_eq!(code, 200, "{fresh}");
    assert_eq!(timestamps(&fresh).len(), 2);
    let (code, body) = api.get("broken", None).await;
    assert_eq!(code, 503, "{body}");
    assert!(message(&body).contains("parse error"), "{body}");

    // Slow past the timeout, then 503s, then responses cut mid-body: stale, and
    // the last good values keep being served with their own timestamps.
    for mode in [
        Mode::Delay(Duration::from_secs(3)),
        Mode::Unavailable,
        Mode::Cut,
    ] {
        // Switching closes the client's pooled connection: the source retries once
        // on a new connection, so each fault is met as itself.
        proxy.set(mode);
        clock.advance(STEP);
        let started = std::time::Instant::now();
        transitions.extend(engine.step().await.unwrap());
        let took = started.elapsed();
        let snap = shared.load();
        let entry = &snap.metrics["cpu"];
        assert!(
            entry.series.iter().all(|s| s.status == Status::Stale),
            "{mode:?}: {entry:?}"
        );
        let error = entry.error.clone().unwrap_or_default();
        eprintln!("{mode:?}: {took:?}: {error}");
        match mode {
            Mode::Delay(_) => {
                assert!(
                    took >= Duration::from_millis(500) && took < Duration::from_millis(2_500),
                    "the fetch was not cut off by the 500 ms timeout: {took:?}"
                );
                assert!(error.contains("timed out"), "{error}");
            }
            Mode::Unavailable => assert!(error.contains("503"), "{error}"),
            Mode::Cut => assert!(error.contains("body"), "{error}"),
            _ => unreachable!(),
        }
        let (code, body) = api.get("cpu", None).await;
        assert_eq!(code, 200, "{mode:?}: {body}");
        assert_eq!(timestamps(&body), timestamps(&fresh), "{mode:?}");
        assert_eq!(body["items"], fresh["items"], "{mode:?}");
    }

    // Exactly max_staleness after the last good refresh, one millisecond more and
    // the value is refused even though the engine has not stepped (a hung engine
    // cannot keep serving it).
    clock.advance(1);
    let (code, body) = api.get("cpu", None).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        message(&body).contains("older than the allowed staleness"),
        "{body}"
    );
    transitions.extend(engine.step().await.unwrap());
    let (code, body) = api.get("cpu", Some("instance%3Da")).await;
    assert_eq!(code, 503, "{body}");

    // Prometheus comes back over a fresh TSDB that only has series a, and only
    // recent history: a recovers, b stays failed (partial data), so a request that
    // selects b (or all) is 503 and one for a is 200 with a fresh timestamp.
    let now = clock.now_ms();
    let end = now - now.rem_euclid(STEP);
    prom.restart_fresh(&[labeled("a", &slice(&a, end - 20 * STEP, end + 20 * STEP))]);
    proxy.set(Mode::Pass);
    clock.advance(STEP);
    transitions.extend(engine.step().await.unwrap());
    let (code, body) = api.get("cpu", Some("instance%3Da")).await;
    assert_eq!(code, 200, "{body}");
    let ts = timestamps(&body);
    assert_eq!(
        ts,
        vec![prescale::api::wire::rfc3339(end + STEP)],
        "the value rests on the newest point"
    );
    let (code, body) = api.get("cpu", None).await;
    assert_eq!(code, 503, "{body}");
    assert!(message(&body).contains("instance=\"b\""), "{body}");

    assert_eq!(
        path_of_a(&transitions),
        vec![
            Some(Status::Ok),
            Some(Status::Stale),
            Some(Status::Failed),
            Some(Status::Ok)
        ]
    );
    let _ = stop.send(());
    api_task.await.unwrap().unwrap();
}
