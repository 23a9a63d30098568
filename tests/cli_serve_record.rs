//! The binary's `serve` with no configuration (bundled traces, from any directory)
//! and `record` against a real Prometheus.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::prometheus::{available, free_addr, Prometheus};
use prescale::clock::{Clock, SystemClock};
use prescale::series::{LabeledSeries, Labels, Series};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_without_arguments_serves_the_bundled_traces() {
    let (https, plain) = (free_addr(), free_addr());
    let elsewhere = tempfile::tempdir().unwrap();
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_prescale"))
            .args(["serve", "--https-address", &https.to_string()])
            .args(["--http-address", &plain.to_string()])
            .current_dir(elsewhere.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = BufReader::new(stdout).lines().next().unwrap().unwrap();
    assert!(line.starts_with("curl -sk https://"), "{line}");
    let url = line.split_whitespace().last().unwrap().to_string();
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut body = serde_json::Value::Null;
    for _ in 0..50 {
        let resp = client.get(&url).send().await.unwrap();
        if resp.status() == 200 {
            body = resp.json().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(body["kind"], "ExternalMetricValueList", "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(items[0]["metricLabels"]["trace"].is_string());
    let value = prescale::api::quantity::parse(items[0]["value"].as_str().unwrap()).unwrap();
    assert!(value.is_finite() && value >= 0.0);
}

#[test]
fn record_saves_each_series_as_csv_with_a_labels_sidecar() {
    if !available() {
        eprintln!("skipped: prometheus/promtool not installed (tests/ci.sh installs them)");
        return;
    }
    const STEP: i64 = 300_000;
    let now = SystemClock.now_ms();
    let start_ms = now - now.rem_euclid(STEP) - 2 * 86_400_000;
    let series = |instance: &str, scale: f64| LabeledSeries {
        labels: [("__name__", "prescale_rec"), ("instance", instance)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        series: Series {
            start_ms,
            step_ms: STEP,
            values: (0..400).map(|i| scale * (i as f64 % 37.0) + 0.5).collect(),
        },
    };
    let (a, b) = (series("a", 1.0), series("b", 3.0));
    let prom = Prometheus::start(&[a.clone(), b.clone()]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rec.csv");
    // 400 points in one call: more than one chunk would need > 10,000 points, so
    // the chunking itself is covered by the engine_prometheus tests.
    let (from_s, to_s) = (start_ms / 1000, (start_ms + 399 * STEP) / 1000);
    let status = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args([
            "record",
            "--prometheus",
            &prom.url(),
            "--query",
            "prescale_rec",
        ])
        .args(["--start", &from_s.to_string(), "--end", &to_s.to_string()])
        .args(["--step", "5m", "--out"])
        .arg(&out)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    for (i, want) in [(1, &a), (2, &b)] {
        let csv = dir.path().join(format!("rec-{i}.csv"));
        let loaded = prescale::series::load_file(&csv, &Default::default()).unwrap();
        assert_eq!(loaded[0].0.series.values, want.series.values);
        assert_eq!(loaded[0].0.series.start_ms, want.series.start_ms);
        let sidecar =
            std::fs::read_to_string(dir.path().join(format!("rec-{i}.labels.json"))).unwrap();
        let labels: Labels = serde_json::from_str(&sidecar).unwrap();
        assert_eq!(labels, want.labels);
    }
    // A query Prometheus rejects fails the command with a message.
    let out = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["record", "--prometheus", &prom.url(), "--query", "sum("])
        .args(["--start", &from_s.to_string(), "--end", &to_s.to_string()])
        .args(["--out", "/nonexistent/x.csv"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
