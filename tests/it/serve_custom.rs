//! `prescale serve --config` with custom signals and no cluster, against a real
//! Prometheus: the Object metric is served on custom.metrics.k8s.io, and the Pods
//! metric answers 503 with the reason (no Kubernetes API to list pods from)
//! instead of failing to start or guessing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::prometheus::{free_addr, usable, Prometheus};
use crate::support::{labels, Killed};
use prescale::clock::{Clock, SystemClock};
use prescale::series::{LabeledSeries, Series};

/// A constant series at 1-second steps from 15 minutes ago to 45 minutes ahead.
fn constant(value: f64) -> Series {
    let now = SystemClock.now_ms();
    Series {
        start_ms: now - now.rem_euclid(1_000) - 900_000,
        step_ms: 1_000,
        values: vec![value; 3_600],
    }
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let resp = client.get(url).send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn custom_signals_serve_without_a_cluster() {
    if !usable() {
        return;
    }
    let sts = |name: &str, v: f64| LabeledSeries {
        labels: labels(&[
            ("__name__", "qdrant_p99_latency_seconds"),
            ("namespace", "conexus"),
            ("statefulset", name),
        ]),
        series: constant(v),
    };
    let prom = Prometheus::start(&[
        sts("conexus-qdrant", 0.05),
        sts("other", 0.5),
        LabeledSeries {
            labels: labels(&[
                ("__name__", "conexus_packets"),
                ("namespace", "conexus"),
                ("deployment", "conexus-server"),
            ]),
            series: constant(3000.0),
        },
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (https, plain) = (free_addr(), free_addr());
    let common = "step: 1s\n    history: 10m\n    lead_time: 5s\n    model: seasonal-naive\n    max_staleness: 30s\n    refit_interval: 1m\n    min_history: 1m";
    let config = format!(
        r#"prometheus:
  url: {url}
  timeout: 2s
signals:
  - name: qdrant_search_latency
    query: qdrant_p99_latency_seconds
    {common}
    custom:
      type: Object
      resources:
        overrides:
          namespace: {{resource: namespace}}
          statefulset: {{group: apps, resource: statefulset}}
  - name: packets-per-second
    query: conexus_packets
    {common}
    custom:
      type: Pods
      resources:
        overrides:
          namespace: {{resource: namespace}}
          deployment: {{group: apps, resource: deployment}}
server:
  https_address: {https}
  http_address: {plain}
  tls:
    cert_dir: {certs}
  auth:
    mode: none
"#,
        url = prom.url(),
        certs = dir.path().join("certs").display(),
    );
    let config_path = dir.path().join("prescale.yaml");
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    // No cluster: neither in-cluster settings nor a kubeconfig.
    let _serve = Killed(
        Command::new(env!("CARGO_BIN_EXE_prescale"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
            .env("HOME", dir.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let base = format!("https://{https}/apis/custom.metrics.k8s.io/v1beta2");
    let object =
        format!("{base}/namespaces/conexus/statefulsets.apps/conexus-qdrant/qdrant_search_latency");
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        if let Ok(resp) = client.get(&object).send().await {
            if resp.status() == 200 {
                break resp.json::<serde_json::Value>().await.unwrap();
            }
        }
        let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "no object metric within 60 s; log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{body}");
    // A constant 0.05, times 1.1 for the HPA's tolerance band (`hpa_tolerance`).
    assert_eq!(items[0]["value"], "55m", "a constant forecast: {body}");
    assert_eq!(items[0]["metric"]["name"], "qdrant_search_latency");

    let (code, discovery) = get(&client, &base).await;
    assert_eq!(code, 200);
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

    let (code, status) = get(
        &client,
        &format!("{base}/namespaces/conexus/pods/*/packets-per-second?labelSelector=app%3Dconexus-server"),
    )
    .await;
    assert_eq!(code, 503, "{status}");
    let message = status["message"].as_str().unwrap();
    assert!(message.contains("no Kubernetes API"), "{message}");
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert!(
        log.contains("Pods metrics are configured but no Kubernetes client can be built"),
        "the missing lookup is logged:\n{log}"
    );
}
