//! `prescale backtest` end to end: the real binary on small traces.

use crate::support;

use std::path::Path;
use std::process::{Command, Output};

fn prescale(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prescale"))
        .arg("backtest")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn write_trace(dir: &Path, name: &str, values: &[f64]) -> String {
    let mut text = String::from("timestamp,value\n");
    for (i, v) in values.iter().enumerate() {
        text.push_str(&format!("{},{v}\n", 1_700_000_000 + 60 * i as i64));
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// Two hours of per-minute load with a ramp in the middle.
fn ramp() -> Vec<f64> {
    (0..120)
        .map(|i| match i {
            0..=39 => 100.0,
            40..=59 => 100.0 + 10.0 * (i - 39) as f64,
            _ => 300.0,
        })
        .collect()
}

fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.to_lowercase().contains(&needle.to_lowercase()),
        "expected {needle:?} in: {stderr}"
    );
}

#[test]
fn steps_are_written_as_csv_per_trace() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_trace(dir.path(), "ramp.csv", &ramp());
    let out_dir = dir.path().join("steps");
    let out = prescale(&[
        "--input",
        &f,
        "--target-per-replica",
        "10",
        "--steps",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(out_dir.join("ramp.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("step,t_s,demand,reactive_ready,predictive_ready,oracle_ready")
    );
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse::<f64>().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), ramp().len());
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.len(), 6);
        assert_eq!(r[0], i as f64);
        assert!(
            r[2] >= 0.0 && r[3] >= 0.0 && r[4] >= 0.0 && r[5] >= 0.0,
            "{r:?}"
        );
    }
}

#[test]
fn replays_a_trace_and_ends_with_one_json_object() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_trace(dir.path(), "ramp.csv", &ramp());
    let out = prescale(&["--input", &f, "--target-per-replica", "10", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bad = support::json::non_snake_keys(&doc);
    assert!(bad.is_empty(), "not snake_case: {bad:?}");
    for s in ["reactive", "predictive", "oracle"] {
        let m = &doc["aggregate"][s];
        for k in [
            "under_provisioned_replica_minutes",
            "replica_hours",
            "node_hours",
            "scale_events",
        ] {
            assert!(m[k].is_number(), "{s}.{k} missing in {m}");
        }
    }
    // 10 replicas for 40 min, then more: at least 20 replica-hours for reactive.
    let rh = doc["aggregate"]["reactive"]["replica_hours"]
        .as_f64()
        .unwrap();
    assert!(rh > 20.0, "{rh}");
    assert_eq!(doc["traces"][0]["name"], "ramp");
    assert_eq!(
        doc["aggregate"]["oracle"]["under_provisioned_replica_minutes"],
        0.0
    );
}

#[test]
fn a_directory_gives_a_table_per_trace_and_an_aggregate_and_plots() {
    let _heavy = crate::support::heavy();
    let dir = tempfile::tempdir().unwrap();
    write_trace(dir.path(), "a.csv", &ramp());
    write_trace(
        dir.path(),
        "b.csv",
        &ramp().iter().map(|v| v * 2.0).collect::<Vec<_>>(),
    );
    let svg = dir.path().join("plot.svg");
    let out = prescale(&[
        "--input",
        dir.path().to_str().unwrap(),
        "--target-auto",
        "--pods-per-node",
        "4",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("aggregate over 2 trace(s)"), "{stdout}");
    assert!(
        stdout.contains("\na — ") || stdout.starts_with("a — "),
        "{stdout}"
    );
    for name in ["plot-a.svg", "plot-b.svg"] {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(text.contains("<svg") && text.contains("reactive"), "{name}");
    }
    let png = dir.path().join("one.png");
    let f = dir.path().join("a.csv");
    let out = prescale(&[
        "--input",
        f.to_str().unwrap(),
        "--plot",
        png.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
}

#[test]
fn an_empty_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("empty.csv");
    std::fs::write(&f, "").unwrap();
    assert_clean_failure(&prescale(&["--input", f.to_str().unwrap()]), "empty");
}

#[test]
fn a_single_point_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_trace(dir.path(), "one.csv", &[5.0]);
    assert_clean_failure(&prescale(&["--input", &f]), "1 observed point");
}

#[test]
fn a_trace_shorter_than_the_lead_time_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_trace(dir.path(), "short.csv", &[5.0, 6.0]);
    assert_clean_failure(
        &prescale(&["--input", &f, "--lead-time", "3m"]),
        "shorter than the lead time",
    );
}

#[test]
fn zero_or_negative_targets_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_trace(dir.path(), "ramp.csv", &ramp());
    for t in ["--target-per-replica=-1", "--target-per-replica=0"] {
        assert_clean_failure(&prescale(&["--input", &f, t]), "target-per-replica");
    }
}

#[test]
fn bad_arguments_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_trace(dir.path(), "ramp.csv", &ramp());
    assert_clean_failure(
        &prescale(&["--input", &f, "--lead-time", "3 parsecs"]),
        "duration",
    );
    assert_clean_failure(&prescale(&["--input", &f, "--quantile", "1.5"]), "quantile");
    let b = dir.path().join("behavior.yaml");
    std::fs::write(&b, "scaleDown:\n  selectPolicy: Sometimes\n").unwrap();
    assert_clean_failure(
        &prescale(&["--input", &f, "--behavior", b.to_str().unwrap()]),
        "scaleDown.selectPolicy",
    );
    let missing = dir.path().join("nope.csv");
    assert_clean_failure(
        &prescale(&["--input", missing.to_str().unwrap()]),
        "nope.csv",
    );
}

#[test]
fn a_serve_configuration_is_replayed_with_its_own_settings() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_trace(dir.path(), "ramp.csv", &ramp());
    let cfg = dir.path().join("prescale.yaml");
    std::fs::write(
        &cfg,
        "prometheus:\n  url: http://127.0.0.1:9090\nsignals:\n  - name: other\n    query: up\n  - name: rps\n    query: sum(rate(x[1m]))\n    step: 2m\n    lead_time: 6m\n    quantile: 0.8\n    reactive_floor: false\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let out = prescale(&["--input", &f, "--config", cfg, "--signal", "rps", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &doc["settings"];
    assert_eq!(s["signal"], "rps");
    assert_eq!(s["step_s"], 120.0);
    assert_eq!(s["lead_steps"], 3);
    assert_eq!(s["quantile"], 0.8);
    assert_eq!(s["reactive_floor"], false);
    // The 1 min trace was resampled onto the signal's 2 min grid.
    assert_eq!(doc["traces"][0]["step_s"], 120.0);
    assert_clean_failure(
        &prescale(&["--input", &f, "--config", cfg, "--signal", "nope"]),
        "must be one of other, rps",
    );
    assert_clean_failure(
        &prescale(&["--input", &f, "--config", cfg, "--quantile", "0.5"]),
        "cannot be used with",
    );
}

#[test]
fn with_no_arguments_it_replays_the_bundled_traces_and_prints_the_frontier_summary() {
    let _heavy = crate::support::heavy();
    let out = prescale(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("aggregate over 10 trace(s)"), "{stdout}");
    assert!(
        stdout.contains("matched cost: at the replica-hours of predictive q0.9 h0% tol0.1"),
        "{stdout}"
    );
    assert!(stdout.contains("worst trace:"), "{stdout}");
}

#[test]
fn the_frontier_is_in_the_json_with_the_matched_cost_per_trace_and_drawn_with_labels() {
    let _heavy = crate::support::heavy();
    let dir = tempfile::tempdir().unwrap();
    let a = write_trace(dir.path(), "ramp.csv", &ramp());
    let wave: Vec<f64> = (0..600)
        .map(|i| 200.0 + 100.0 * (i as f64 / 60.0 * std::f64::consts::TAU).sin())
        .collect();
    write_trace(dir.path(), "wave.csv", &wave);
    let _ = a;
    let svg = dir.path().join("frontier.svg");
    let png = dir.path().join("frontier.png");
    let input = dir.path().to_string_lossy().into_owned();
    let out = prescale(&[
        "--input",
        &input,
        "--frontier",
        "--json",
        "--frontier-plot",
        &svg.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &doc["matched_cost"];
    assert!(m["shortfall_reduction_pct"].is_f64(), "{m}");
    assert!(m["sum_shortfall_reduction_pct"].is_f64(), "{m}");
    for t in ["ramp", "wave"] {
        assert!(m["per_trace"][t].is_f64(), "{m}");
    }
    // The equal-weight figure is the mean of the per-trace ones.
    let mean =
        (m["per_trace"]["ramp"].as_f64().unwrap() + m["per_trace"]["wave"].as_f64().unwrap()) / 2.0;
    assert!((m["shortfall_reduction_pct"].as_f64().unwrap() - mean).abs() < 1e-9);
    let traces = doc["frontier"]["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 2);
    let points = traces[0]["points"].as_array().unwrap();
    // 13 headrooms x 2 tolerances reactive, 7 quantiles x 2 headrooms predictive, the oracle.
    assert_eq!(points.len(), 26 + 14 + 1, "{}", points.len());
    for p in points {
        assert!(p["measures"]["replica_hours"].as_f64().unwrap() > 0.0);
        assert!(p["measures"]["beyond_max_replica_minutes"].is_f64());
    }
    assert!(!doc["frontier"]["overall"].as_array().unwrap().is_empty());
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg"));
    assert!(
        text.contains("replica-hours"),
        "the SVG has its axis labels"
    );
    assert!(text.contains("predictive as served"));
    // The PNG carries the same labels drawn with a system font.
    let out = prescale(&["--input", &input, "--frontier-plot", &png.to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
}
