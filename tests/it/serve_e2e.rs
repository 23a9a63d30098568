//! End to end: `prescale serve --config` against a real Prometheus, read over HTTPS by
//! a real client presenting a front-proxy client certificate (as the kube-apiserver's
//! aggregation layer does), through an outage of Prometheus and its recovery.

use crate::support::pki;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::prometheus::{free_addr, http_status, usable, Prometheus};
use crate::support::{labels, Killed};
use prescale::clock::{Clock, SystemClock};
use prescale::forecast::ModelSpec;
use prescale::plan::{ServePolicy, Tracker, TrackerSettings};
use prescale::series::{LabeledSeries, Labels, Series};

const METRIC: &str = "prescale_e2e_requests";
const STEP_MS: i64 = 1_000;
const HISTORY_STEPS: usize = 600;

/// A bundled 1-second request-rate trace around now (15 minutes back, 45 ahead), as
/// two series; Prometheus serves future samples once their time has come.
fn fixture() -> (Series, Series) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/azure_llm_conv_requests_per_sec.csv");
    let trace = prescale::series::load_file(&path, &Default::default())
        .unwrap()
        .remove(0)
        .0
        .series;
    let now = SystemClock.now_ms();
    let start_ms = now - now.rem_euclid(STEP_MS) - 900_000;
    let n = 3_600;
    let values: Vec<f64> = (0..n)
        .map(|i| {
            let v = trace.values[i % trace.values.len()];
            if v.is_finite() {
                v
            } else {
                0.0
            }
        })
        .collect();
    let a = Series {
        start_ms,
        step_ms: STEP_MS,
        values: values.clone(),
    };
    let b = Series {
        start_ms,
        step_ms: STEP_MS,
        values: values.iter().map(|v| 3.0 * v + 5.0).collect(),
    };
    (a, b)
}

fn tracker_settings() -> TrackerSettings {
    TrackerSettings {
        spec: ModelSpec::by_name("seasonal-naive").unwrap(),
        step_ms: STEP_MS,
        policy: ServePolicy {
            lead_steps: 5,
            lead_ms: 0,
            // The config leaves `hpa_tolerance` at its default, the HPA's 0.1.
            tolerance: 0.1,
            quantile: 0.9,
            reactive_floor: true,
        },
        history_steps: HISTORY_STEPS,
        refit_every_steps: 1,
        min_history_steps: 60,
        fit_steps: 1,
        spread_refits: false,
    }
}

/// What the engine serves for `series` at grid time `ts_ms`: with a refit every step,
/// it depends only on the history window ending there.
fn expected(series: &Series, ts_ms: i64) -> f64 {
    let end = series.index_of(ts_ms).unwrap();
    let mut t = Tracker::new(tracker_settings());
    t.observe(&series.values[end + 1 - HISTORY_STEPS..=end]);
    t.decide(ts_ms).value.unwrap()
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let resp = client
        .get(url)
        .header("X-Remote-User", "system:kube-controller-manager")
        .header("X-Remote-Group", "system:authenticated")
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(serde_json::Value::Null))
}

fn items(body: &serde_json::Value) -> Vec<(Labels, f64, i64)> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let labels: Labels = serde_json::from_value(i["metricLabels"].clone()).unwrap();
            let value = prescale::quantity::parse_f64(i["value"].as_str().unwrap()).unwrap();
            let ts = chrono::DateTime::parse_from_rfc3339(i["timestamp"].as_str().unwrap())
                .unwrap()
                .timestamp_millis();
            (labels, value, ts)
        })
        .collect()
}

fn check_values(body: &serde_json::Value, a: &Series, b: &Series) {
    let got = items(body);
    assert_eq!(got.len(), 2, "{body}");
    for (labels, value, ts) in got {
        let series = if labels == labels_of("a") { a } else { b };
        let want = expected(series, ts);
        assert!(
            (value - want).abs() <= 1e-3 + want.abs() * 1e-9,
            "{labels:?} at {ts}: served {value}, engine's forecast {want}"
        );
    }
}

fn labels_of(instance: &str) -> Labels {
    labels(&[("instance", instance)])
}

async fn wait_for_code(
    client: &reqwest::Client,
    url: &str,
    code: u16,
    within: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let (c, body) = get(client, url).await;
        if c == code {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "no {code} within {within:?}; last {c}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn serve_against_prometheus_over_https_with_front_proxy_auth() {
    if !usable() {
        return;
    }
    let (a, b) = fixture();
    let mut prom = Prometheus::start(&[
        LabeledSeries {
            labels: labels(&[("__name__", METRIC), ("instance", "a")]),
            series: a.clone(),
        },
        LabeledSeries {
            labels: labels(&[("__name__", METRIC), ("instance", "b")]),
            series: b.clone(),
        },
    ]);
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::new("front-proxy-ca");
    let client = ca.client("front-proxy-client");
    std::fs::write(dir.path().join("front-proxy-ca.crt"), &ca.cert_pem).unwrap();
    let (https, plain) = (free_addr(), free_addr());
    let cert_dir = dir.path().join("certs");
    let config = format!(
        "prometheus:\n  url: {url}\n  timeout: 1s\n\
         signals:\n  - name: requests\n    query: {METRIC}\n    step: 1s\n    history: 10m\n    lead_time: 5s\n\
         \x20   quantile: 0.9\n    model: seasonal-naive\n    max_staleness: 3s\n    refit_interval: 1s\n    min_history: 1m\n\
         server:\n  https_address: {https}\n  http_address: {plain}\n  tls:\n    cert_dir: {certs}\n\
         \x20 auth:\n    mode: requestheader\n    requestheader_client_ca_file: {ca}\n    requestheader_allowed_names: [front-proxy-client]\n",
        url = prom.url(),
        certs = cert_dir.display(),
        ca = dir.path().join("front-proxy-ca.crt").display(),
    );
    let config_path = dir.path().join("prescale.yaml");
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let serve = Killed(
        Command::new(env!("CARGO_BIN_EXE_prescale"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_status(plain, "/readyz") != Some(200) {
        assert!(Instant::now() < deadline, "serve not ready:\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let server_ca = std::fs::read(cert_dir.join("apiserver.crt")).unwrap();
    let base = || {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&server_ca).unwrap())
            .timeout(Duration::from_secs(5))
    };
    let identity = format!("{}{}", client.cert_pem, client.key_pem);
    let front_proxy = base()
        .identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap())
        .build()
        .unwrap();
    let anonymous = base().build().unwrap();
    let url =
        format!("https://{https}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/requests");

    // The served values are the engine's forecasts for the same history.
    let body = wait_for_code(&front_proxy, &url, 200, Duration::from_secs(10)).await;
    assert_eq!(body["kind"], "ExternalMetricValueList");
    check_values(&body, &a, &b);

    // Selectors filter.
    let (code, body) = get(&front_proxy, &format!("{url}?labelSelector=instance%3Da")).await;
    assert_eq!(code, 200);
    assert_eq!(
        items(&body).iter().map(|i| i.0.clone()).collect::<Vec<_>>(),
        vec![labels_of("a")]
    );
    let (code, body) = get(
        &front_proxy,
        &format!("{url}?labelSelector=instance+notin+%28a%29"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        items(&body).iter().map(|i| i.0.clone()).collect::<Vec<_>>(),
        vec![labels_of("b")]
    );
    let (code, _) = get(
        &front_proxy,
        &format!("{url}?labelSelector=instance+in+%28"),
    )
    .await;
    assert_eq!(code, 400);

    // Neither a client certificate nor a token: 401.
    let resp = anonymous.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // Prometheus goes away: after max_staleness the metric answers 503 (the HPA holds).
    prom.stop();
    let body = wait_for_code(&front_proxy, &url, 503, Duration::from_secs(15)).await;
    assert_eq!(body["kind"], "Status", "{body}");

    // Prometheus is back: 200 again, with the engine's forecast for the backfilled history.
    prom.restart();
    let body = wait_for_code(&front_proxy, &url, 200, Duration::from_secs(15)).await;
    check_values(&body, &a, &b);

    // Graceful shutdown on SIGTERM.
    let mut serve = serve;
    let pid = serve.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = serve.0.try_wait().unwrap() {
            assert!(status.success(), "serve exited with {status}:\n{}", log());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop on SIGTERM:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
