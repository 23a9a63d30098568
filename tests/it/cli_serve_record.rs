//! The binary's `serve` with no configuration (bundled traces, from any directory),
//! `explain` against that server and offline, and `record` against a real Prometheus.

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::prometheus::{free_addr, http_status, usable, Prometheus};
use crate::support::Killed;
use prescale::clock::{Clock, SystemClock};
use prescale::series::{LabeledSeries, Labels, Series};

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
    // The first step fits every bundled trace (a debug build, maybe beside other
    // tests): wait for readiness rather than for a fixed few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while http_status(plain, "/readyz") != Some(200) {
        assert!(
            std::time::Instant::now() < deadline,
            "serve not ready after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = client.get(&url).send().await.unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["kind"], "ExternalMetricValueList", "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(items[0]["metricLabels"]["trace"].is_string());
    let value = prescale::quantity::parse_f64(items[0]["value"].as_str().unwrap()).unwrap();
    assert!(value.is_finite() && value >= 0.0);

    // `explain` reads the same server's /debug/signals and says how the value came about.
    let metric = items[0]["metricName"].as_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["explain", "--server", &format!("http://{plain}")])
        .args(["--signal", metric])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with(&format!("{metric}{{trace=")), "{text}");
    assert!(
        text.contains(": ok, serving ") && text.contains("\n  rule: 1.1 × max(q0.9 forecast "),
        "{text}"
    );
    assert!(text.contains("\n  band: stands on "), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args([
            "explain",
            "--server",
            &format!("http://{plain}"),
            "--signal",
            "nope",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("404") && err.contains(metric), "{err}");
}

#[test]
fn explain_offline_runs_a_configured_signal_over_a_recording() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prescale.yaml");
    std::fs::write(
        &config,
        "prometheus:\n  url: http://127.0.0.1:9090\nsignals:\n  - name: cpu\n    query: cpu\n    step: 5m\n    history: 7d\n    lead_time: 15m\n  - name: other\n    query: other\n",
    )
    .unwrap();
    let trace = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/nab_ec2_cpu_utilization_5f5533.csv"
    );
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_prescale"))
            .args(["explain", "--config"])
            .arg(&config)
            .args(["--input", trace])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--signal", "cpu"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The last point of the trace (2014-02-28 14:20, 37.718) is "now".
    assert!(text.starts_with("cpu{}: ok, serving "), "{text}");
    assert!(
        text.contains("observed 37.718 at 2014-02-28T14:20:00Z (0 s ago)"),
        "{text}"
    );
    assert!(text.contains("rule: 1.1 × max(q0.9 forecast "), "{text}");
    // Started before the end, as a running server: the band has peak outcomes.
    assert!(
        text.contains(" past peak forecasts of this series"),
        "{text}"
    );
    assert!(
        text.contains("forecast over the lead time (3 step(s), every 300 s): "),
        "{text}"
    );

    let out = run(&["--signal", "cpu", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bad = support::json::non_snake_keys(&doc);
    assert!(bad.is_empty(), "not snake_case: {bad:?}");
    let s = &doc["metrics"][0]["series"][0];
    let why = &s["why"];
    assert_eq!(why["quantile"], 0.9);
    assert_eq!(why["steps_due"], 3);
    assert!(
        why["calibration"]["outcomes"].as_u64().unwrap() > 0,
        "{why}"
    );
    let served = s["served_value"].as_f64().unwrap();
    let peak = why["forecast_peak"].as_f64().unwrap().max(37.718);
    assert!(
        (served - 1.1 * peak).abs() < 1e-9,
        "{served} vs 1.1 × {peak}"
    );

    // Two signals and none named: which one is asked for.
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("name one with --signal"),
        "{err}"
    );
    let out = run(&["--signal", "nope"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must be one of cpu, other"), "{err}");
}

#[test]
fn record_saves_each_series_as_csv_with_a_labels_sidecar() {
    if !usable() {
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
