//! custom.metrics.k8s.io end to end against a real Prometheus: a Pods signal
//! (per-pod packet rates, with a pod replaced half-way, summed per Deployment)
//! and an Object signal (a StatefulSet's p99 latency), configured in YAML the way
//! a user writes them, forecast by the engine on a simulated clock inside the
//! backfilled traces, and read over HTTPS in both API versions with pods from
//! the in-memory lookup.
//!
//! Asserts: the workload's history includes the pod that is gone; the served
//! workload and object values are the forecasts a tracker makes from what
//! Prometheus returns; the per-pod values sum to the workload forecast; the
//! object value equals its forecast.

use std::sync::Arc;
use std::time::Duration;

use crate::support::labels;
use crate::support::prometheus::{bundled_trace, usable, Prometheus};
use prescale::api::auth::AuthMode;
use prescale::api::pods::{Phase, StaticPod, StaticPods};
use prescale::api::{Server, Settings, TlsSource};
use prescale::clock::{Clock, SimClock};
use prescale::config::Config;
use prescale::engine::{Engine, Metrics, SignalSettings};
use prescale::plan::Tracker;
use prescale::quantity;
use prescale::series::{LabeledSeries, Labels, Series};
use prescale::snapshot::{Shared, Status};
use prescale::source::prometheus::PrometheusSource;
use prescale::source::{Range, Source};
use serde_json::Value;

const STEP: i64 = 300_000;
const HISTORY_STEPS: i64 = 864; // 3d of 5-minute steps
const PODS_METRIC: &str = "packets-per-second";
const OBJECT_METRIC: &str = "qdrant_search_latency";

/// A bundled trace, gaps carried forward, scaled, on a grid ending a day ago.
fn trace(file: &str, scale: f64) -> Series {
    let t = bundled_trace(file);
    assert_eq!(t.step_ms, STEP);
    let mut last = t.values.iter().copied().find(|v| v.is_finite()).unwrap();
    let values: Vec<f64> = t
        .values
        .iter()
        .map(|&v| {
            if v.is_finite() {
                last = v;
            }
            last * scale
        })
        .collect();
    let now = Clock::now_ms(&prescale::clock::SystemClock);
    let end = now - now.rem_euclid(STEP) - 86_400_000;
    Series {
        start_ms: end - (values.len() as i64 - 1) * STEP,
        step_ms: STEP,
        values,
    }
}

/// A part of `s`: `values[from..to]`, with `f` applied.
fn part(s: &Series, from: usize, to: usize, f: impl Fn(f64) -> f64) -> Series {
    Series {
        start_ms: s.start_ms + from as i64 * STEP,
        step_ms: STEP,
        values: s.values[from..to].iter().map(|&v| f(v)).collect(),
    }
}

struct Fixture {
    packets: Series,
    latency: Series,
    /// Index where pod `ccccc` is replaced by pod `ddddd`.
    churn: usize,
    series: Vec<LabeledSeries>,
}

impl Fixture {
    fn new() -> Self {
        // Network-in bytes / 1000 as the Deployment's packet rate; latency ms → s.
        let packets = trace("nab_ec2_network_in_257a54.csv", 1e-3);
        let mut latency = trace("nab_ec2_request_latency_system_failure.csv", 1e-3);
        latency.start_ms = packets.start_ms;
        let n = packets.values.len().min(latency.values.len());
        let churn = (HISTORY_STEPS as usize) + 200; // inside the engine's history window
        let pod = |name: &str, s: Series| LabeledSeries {
            labels: labels(&[
                ("__name__", "conexus_pod_packets_per_second"),
                ("namespace", "conexus"),
                ("pod", name),
            ]),
            series: s,
        };
        let mut series = vec![
            pod(
                "conexus-server-6b7c8d-aaaaa",
                part(&packets, 0, n, |v| 0.40 * v),
            ),
            pod(
                "conexus-server-6b7c8d-bbbbb",
                part(&packets, 0, n, |v| 0.35 * v),
            ),
            // Replaced half-way: the workload's history must not lose its share.
            pod(
                "conexus-server-6b7c8d-ccccc",
                part(&packets, 0, churn, |v| 0.25 * v),
            ),
            pod(
                "conexus-server-7f8e9a-ddddd",
                part(&packets, churn, n, |v| 0.25 * v),
            ),
            // Same Deployment name in another namespace: not ours.
            LabeledSeries {
                labels: labels(&[
                    ("__name__", "conexus_pod_packets_per_second"),
                    ("namespace", "staging"),
                    ("pod", "conexus-server-1a2b3c-zzzzz"),
                ]),
                series: part(&packets, 0, n, |v| 7.0 * v),
            },
        ];
        for (sts, f) in [("conexus-qdrant", 1.0), ("other-qdrant", 3.0)] {
            series.push(LabeledSeries {
                labels: labels(&[
                    ("__name__", "qdrant_p99_latency_seconds"),
                    ("namespace", "conexus"),
                    ("statefulset", sts),
                ]),
                series: part(&latency, 0, n, |v| f * v),
            });
        }
        Self {
            packets,
            latency,
            churn,
            series,
        }
    }

    /// A time with a full history window before it, after the churn.
    fn t0(&self) -> i64 {
        self.packets.start_ms + (self.churn as i64 + 300) * STEP
    }
}

fn config(url: &str) -> Config {
    Config::from_yaml(&format!(
        r#"
prometheus:
  url: {url}
  timeout: 5s
signals:
  - name: {PODS_METRIC}
    query: >-
      sum by (namespace, deployment) (
        label_replace(conexus_pod_packets_per_second,
          "deployment", "$1", "pod", "(.+)-[a-z0-9]+-[a-z0-9]+"))
    step: 5m
    history: 3d
    lead_time: 15m
    quantile: 0.9
    model: seasonal-naive
    max_staleness: 15m
    min_history: 1d
    custom:
      type: Pods
      resources:
        overrides:
          namespace: {{resource: namespace}}
          deployment: {{group: apps, resource: deployment}}
  - name: {OBJECT_METRIC}
    query: max by (namespace, statefulset) (qdrant_p99_latency_seconds)
    step: 5m
    history: 3d
    lead_time: 15m
    quantile: 0.9
    model: seasonal-naive
    max_staleness: 15m
    min_history: 1d
    custom:
      type: Object
      resources:
        overrides:
          namespace: {{resource: namespace}}
          statefulset: {{group: apps, resource: statefulset}}
server:
  auth: {{mode: none}}
  https_address: 127.0.0.1:0
  http_address: 127.0.0.1:0
"#
    ))
    .unwrap()
}

/// The current pods of conexus-server: three running (none of them in the
/// history's pod names but `aaaaa`), one finished.
fn pods() -> StaticPods {
    let app = labels(&[("app", "conexus-server"), ("pod-template-hash", "7f8e9a")]);
    let rs = Some(("ReplicaSet", "conexus-server-7f8e9a"));
    let mut pods = StaticPods::new();
    for name in ["aaaaa", "ddddd", "eeeee"] {
        pods = pods.with_pod(StaticPod::new(
            "conexus",
            &format!("conexus-server-7f8e9a-{name}"),
            app.clone(),
            rs,
        ));
    }
    pods.with_pod(
        StaticPod::new("conexus", "conexus-server-7f8e9a-fffff", app, rs).with_phase(Phase::Failed),
    )
}

/// The value a tracker with `settings` decides at `now` from what Prometheus
/// returns for `query` over `range`, for the series with `want` labels.
async fn reference(
    source: &PrometheusSource,
    settings: &SignalSettings,
    range: Range,
    want: &Labels,
    now: i64,
) -> (f64, Vec<f64>) {
    let got = source.fetch(&settings.query, range).await.unwrap();
    let series = got
        .iter()
        .find(|s| want.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| {
            panic!(
                "no series {want:?} in {:?}",
                got.iter().map(|s| &s.labels).collect::<Vec<_>>()
            )
        });
    let mut tracker = Tracker::new(settings.tracker.clone());
    tracker.observe(&series.series.values);
    (
        tracker.decide(now).value.unwrap(),
        series.series.values.clone(),
    )
}

fn value(item: &Value) -> f64 {
    quantity::parse_f64(item["value"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn pods_and_object_metrics_serve_the_forecasts() {
    if !usable() {
        return;
    }
    let fx = Fixture::new();
    let prom = Prometheus::start(&fx.series);
    let config = config(&prom.url());
    let settings: Vec<SignalSettings> = config
        .signals
        .iter()
        .map(|s| SignalSettings::from_config(s).unwrap())
        .collect();
    let source = PrometheusSource::new(&config.prometheus).unwrap();
    let t0 = fx.t0();
    let clock = Arc::new(SimClock::new(t0 + 1_234));
    let now = clock.now_ms();
    let shared = Shared::new();
    let mut engine = Engine::new(
        settings.clone(),
        Arc::new(PrometheusSource::new(&config.prometheus).unwrap()),
        shared.clone(),
        clock.clone(),
        Metrics::unregistered(),
    );
    engine.step().await.unwrap();

    // What the engine should serve, from what Prometheus returns.
    let range = Range::try_new(t0 - (HISTORY_STEPS - 1) * STEP, t0, STEP).unwrap();
    let workload = labels(&[("namespace", "conexus"), ("deployment", "conexus-server")]);
    let (workload_forecast, sums) = reference(&source, &settings[0], range, &workload, now).await;
    let qdrant = labels(&[("namespace", "conexus"), ("statefulset", "conexus-qdrant")]);
    let (object_forecast, _) = reference(&source, &settings[1], range, &qdrant, now).await;

    // The workload's history is the sum over its pods, the replaced one included
    // (the step where one pod ends and the next begins is left out: Prometheus'
    // lookback may count both there).
    let first = usize::try_from((range.start_ms - fx.packets.start_ms) / STEP).unwrap();
    assert!(
        first < fx.churn && fx.churn < first + sums.len(),
        "the churn is inside the history"
    );
    for (i, got) in sums.iter().enumerate() {
        let k = first + i;
        if k == fx.churn {
            continue;
        }
        let want = fx.packets.values[k];
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "step {k}: {got} != {want}"
        );
    }

    let snapshot = shared.load();
    let served = |metric: &str, want: &Labels| {
        snapshot.metrics[metric]
            .series
            .iter()
            .find(|s| want.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .cloned()
            .unwrap()
    };
    let w = served(PODS_METRIC, &workload);
    assert_eq!(w.status, Status::Ok, "{w:?}");
    // Equal up to float summation order (fits may reduce in parallel).
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    assert!(
        close(w.value, workload_forecast),
        "the served workload value is the forecast: {} vs {workload_forecast}",
        w.value
    );
    let o = served(OBJECT_METRIC, &qdrant);
    assert_eq!(o.status, Status::Ok, "{o:?}");
    assert!(
        close(o.value, object_forecast),
        "{} vs {object_forecast}",
        o.value
    );
    assert!(fx.latency.values.iter().all(|v| v.is_finite()));

    // Serve it over HTTPS.
    let dir = tempfile::tempdir().unwrap();
    let api = Server::bind(
        Settings::new(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            TlsSource::SelfSigned {
                dir: dir.path().to_path_buf(),
                dns_names: vec![],
            },
            AuthMode::None,
        ),
        shared.clone(),
        Arc::new(prometheus_client::registry::Registry::default()),
        clock.clone(),
    )
    .await
    .unwrap()
    .with_pod_lookup(pods().shared());
    let https = api.https_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(api.run(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let get = |path: String| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("https://{https}/apis/custom.metrics.k8s.io/{path}"))
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            assert_eq!(code, 200, "{path}: {body}");
            body
        }
    };

    for version in ["v1beta2", "v1beta1"] {
        let discovery = get(version.to_string()).await;
        let names: Vec<&str> = discovery["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "pods/packets-per-second",
                "statefulsets.apps/qdrant_search_latency"
            ]
        );

        // Pods: every current pod answered, the shares sum to the workload forecast.
        let body = get(format!(
            "{version}/namespaces/conexus/pods/*/{PODS_METRIC}?labelSelector=app%3Dconexus-server"
        ))
        .await;
        assert_eq!(
            body["apiVersion"],
            format!("custom.metrics.k8s.io/{version}")
        );
        let items = body["items"].as_array().unwrap();
        let names: Vec<&str> = items
            .iter()
            .map(|i| i["describedObject"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "conexus-server-7f8e9a-aaaaa",
                "conexus-server-7f8e9a-ddddd",
                "conexus-server-7f8e9a-eeeee"
            ]
        );
        let total: f64 = items.iter().map(value).sum();
        eprintln!(
            "{version}: workload forecast {workload_forecast}, per-pod {:?}, sum {total}; object forecast {object_forecast}",
            items.iter().map(|i| i["value"].as_str().unwrap_or("")).collect::<Vec<_>>()
        );
        // Each share is written to the milli-unit.
        assert!(
            (total - workload_forecast).abs() <= 0.0005 * items.len() as f64,
            "{version}: shares sum to {total}, forecast {workload_forecast}"
        );
        for item in items {
            assert!((value(item) - workload_forecast / 3.0).abs() <= 0.0005);
            assert_eq!(item["describedObject"]["kind"], "Pod");
        }

        // Object: the StatefulSet's forecast, exactly one item.
        let body = get(format!(
            "{version}/namespaces/conexus/statefulsets.apps/conexus-qdrant/{OBJECT_METRIC}"
        ))
        .await;
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["describedObject"]["kind"], "StatefulSet");
        assert_eq!(items[0]["describedObject"]["apiVersion"], "apps/v1");
        assert!(
            (value(&items[0]) - object_forecast).abs() <= 0.0005,
            "{version}: {} != {object_forecast}",
            items[0]["value"]
        );
    }

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
