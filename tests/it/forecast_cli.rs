//! The `forecast` and `eval` commands, run as a user runs them.

use crate::support;

use std::process::Command;

fn prescale(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn forecast_on_the_bundled_trace_prints_a_table_with_the_model() {
    let (ok, stdout, stderr) = prescale(&["forecast"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("model: "), "{stdout}");
    assert!(stdout.contains("backtest over"), "{stdout}");
    // One hour of 5-minute steps.
    let rows = stdout.lines().filter(|l| l.starts_with("20")).count();
    assert_eq!(rows, 12, "{stdout}");
}

#[test]
fn forecast_json_has_monotone_quantiles() {
    let (ok, stdout, stderr) = prescale(&[
        "forecast",
        "--horizon",
        "30m",
        "--quantiles",
        "0.1,0.5,0.9",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 6);
    for p in points {
        let qs: Vec<f64> = p["quantiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q[1].as_f64().unwrap())
            .collect();
        assert!(qs.windows(2).all(|w| w[0] <= w[1]), "{p}");
    }
    assert!(v["report"]["model"].as_str().is_some());
    let bad = support::json::non_snake_keys(&v);
    assert!(bad.is_empty(), "not snake_case: {bad:?}");
}

#[test]
fn forecast_rejects_bad_arguments_with_a_message() {
    let (ok, _, stderr) = prescale(&["forecast", "--quantiles", "1.5"]);
    assert!(!ok);
    assert!(stderr.contains("quantile"), "{stderr}");
    let (ok, _, stderr) = prescale(&["forecast", "--model", "nope"]);
    assert!(!ok);
    assert!(stderr.contains("unknown model"), "{stderr}");
}

#[test]
fn eval_on_m4_format_files_ends_with_a_json_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (mut train, mut test) = (String::from("\"V1\""), String::from("\"V1\""));
    for i in 0..300 {
        train.push_str(&format!(",\"V{}\"", i + 2));
    }
    for i in 0..48 {
        test.push_str(&format!(",\"V{}\"", i + 2));
    }
    train.push('\n');
    test.push('\n');
    for s in 0..3 {
        let y = |t: usize| {
            100.0 + 10.0 * s as f64 + 20.0 * (t as f64 * std::f64::consts::TAU / 24.0).sin()
        };
        train.push_str(&format!("\"H{s}\""));
        // The last series is shorter: its row is padded with empty cells.
        let len = if s == 2 { 250 } else { 300 };
        for t in 0..300 {
            if t < len {
                train.push_str(&format!(",\"{}\"", y(t)));
            } else {
                train.push(',');
            }
        }
        train.push('\n');
        test.push_str(&format!("\"H{s}\""));
        for t in 0..48 {
            test.push_str(&format!(",\"{}\"", y(len + t)));
        }
        test.push('\n');
    }
    let (tr, te) = (dir.path().join("train.csv"), dir.path().join("test.csv"));
    std::fs::write(&tr, train).unwrap();
    std::fs::write(&te, test).unwrap();
    let (ok, stdout, stderr) = prescale(&[
        "eval",
        "--m4-train",
        tr.to_str().unwrap(),
        "--m4-test",
        te.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let last = stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["series"], 3);
    for key in ["smape", "mase", "coverage_p90", "fit_predict_seconds"] {
        assert!(v[key].as_f64().is_some(), "{key} in {last}");
    }
    // A clean sine is forecast far better than by chance.
    assert!(v["smape"].as_f64().unwrap() < 5.0, "{last}");
}

#[test]
fn eval_names_the_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let tr = dir.path().join("train.csv");
    std::fs::write(&tr, "\"V1\",\"V2\"\n\"H1\",\"abc\"\n").unwrap();
    let (ok, _, stderr) = prescale(&[
        "eval",
        "--m4-train",
        tr.to_str().unwrap(),
        "--m4-test",
        tr.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("train.csv:2"), "{stderr}");
}

/// `prescale forecast | head -2`: the reader closes the pipe after two lines and
/// the command ends quietly (status 0, no panic) instead of panicking in `println!`.
#[test]
fn a_closed_pipe_ends_the_report_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_prescale"))
        // 30 days of rows: far more than a pipe buffer holds (64 KiB), so the
        // writes after the reader is gone really fail.
        .args(["forecast", "--horizon", "30d"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(!first.is_empty());
    drop(reader);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// Values above a million stay separate columns (they used to run together:
/// `5887946.02406116958.4599`).
#[test]
fn large_values_keep_their_columns_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.csv");
    let mut text = String::from("timestamp,value\n");
    for i in 0..300 {
        text.push_str(&format!(
            "{},{}\n",
            1_700_000_000 + i * 300,
            5_887_946.024 + 1000.0 * (i % 12) as f64
        ));
    }
    std::fs::write(&path, text).unwrap();
    let (ok, stdout, stderr) = prescale(&[
        "forecast",
        "--input",
        path.to_str().unwrap(),
        "--horizon",
        "1h",
        "--quantiles",
        "0.1,0.5,0.9",
    ]);
    assert!(ok, "{stderr}");
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("20")).collect();
    assert_eq!(rows.len(), 12, "{stdout}");
    for row in rows {
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(fields.len(), 5, "time, mean and three quantiles: {row}");
        for f in &fields[1..] {
            let v: f64 = f.parse().unwrap_or_else(|_| panic!("{f} in {row}"));
            assert!(v > 5_000_000.0, "{row}");
        }
    }
}

/// An empty recording says so, and `eval` on traces too short for any forecast
/// origin says why instead of "no series to evaluate".
#[test]
fn empty_and_short_inputs_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "timestamp,value\n").unwrap();
    let (ok, _, stderr) = prescale(&["forecast", "--input", empty.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("empty: no samples"), "{stderr}");

    let traces = dir.path().join("traces");
    std::fs::create_dir(&traces).unwrap();
    let mut text = String::from("timestamp,value\n");
    for i in 0..199 {
        text.push_str(&format!("{},{}\n", 1_700_000_000 + i * 60, 100 + i % 7));
    }
    std::fs::write(traces.join("short.csv"), text).unwrap();
    let (ok, _, stderr) = prescale(&["eval", "--traces", traces.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("no trace is long enough") && stderr.contains("short: 199 points"),
        "{stderr}"
    );
}

/// `--help` names every bundled model: a user of the binary has no models/ folder.
#[test]
fn help_lists_every_bundled_model() {
    for cmd in ["forecast", "eval", "backtest"] {
        let (ok, stdout, stderr) = prescale(&[cmd, "--help"]);
        assert!(ok, "{stderr}");
        for name in prescale::forecast::ModelSpec::names() {
            assert!(
                stdout.contains(name),
                "`prescale {cmd} --help` does not name {name}:\n{stdout}"
            );
        }
    }
}

/// Shell completions and the manual page name every subcommand.
#[test]
fn completions_and_the_man_page_cover_every_subcommand() {
    let subcommands = [
        "forecast",
        "eval",
        "check-config",
        "record",
        "serve",
        "backtest",
    ];
    for shell in ["bash", "zsh", "fish"] {
        let (ok, stdout, stderr) = prescale(&["completions", shell]);
        assert!(ok, "{shell}: {stderr}");
        for s in subcommands {
            assert!(stdout.contains(s), "{shell} completion lacks {s}");
        }
    }
    let (ok, _, stderr) = prescale(&["completions", "tcsh"]);
    assert!(!ok && stderr.contains("tcsh"), "{stderr}");
    let (ok, man, stderr) = prescale(&["man"]);
    assert!(ok, "{stderr}");
    assert!(man.contains(".TH prescale 1"), "{man}");
    for s in subcommands {
        assert!(
            man.contains(&s.replace('-', "\\-")),
            "the man page lacks {s}"
        );
    }
}
