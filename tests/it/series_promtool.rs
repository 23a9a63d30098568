//! The OpenMetrics writer against the real consumer: `promtool tsdb
//! create-blocks-from openmetrics` must backfill what we write, and `promtool tsdb
//! dump` must give back exactly our samples. Also writer → reader round trips.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use prescale::series::{
    read_csv, read_openmetrics, resample, write_csv, write_openmetrics, LabeledSeries, Labels,
    ResampleOptions, Sample, Series,
};

fn labeled(name: &str, extra: &[(&str, &str)], series: Series) -> LabeledSeries {
    let mut labels: Labels = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.insert("__name__".to_string(), name.to_string());
    LabeledSeries { labels, series }
}

/// Three hours of 30 s data (more than one 2 h TSDB block) starting on a
/// fractional second, with a long gap, in two families; one label value needs
/// escaping.
fn fixture() -> Vec<LabeledSeries> {
    let n = 360;
    let start_ms = 1_700_000_000_500;
    let wave = |i: usize, scale: f64| scale * (1.0 + (i as f64 / 20.0).sin()) + 0.25;
    let mut cpu_a: Vec<f64> = (0..n).map(|i| wave(i, 2.0)).collect();
    for v in &mut cpu_a[100..120] {
        *v = f64::NAN;
    }
    let cpu_b: Vec<f64> = (0..n).map(|i| wave(i, 0.5)).collect();
    let bytes: Vec<f64> = (0..n).map(|i| (wave(i, 4e8)).round()).collect();
    let series = |values| Series {
        start_ms,
        step_ms: 30_000,
        values,
    };
    vec![
        labeled("cpu_usage", &[("pod", "api-0")], series(cpu_a)),
        labeled("network_bytes", &[("iface", "eth0")], series(bytes)),
        labeled(
            "cpu_usage",
            &[("pod", "api-1"), ("note", "say \"hi\"\\n")],
            series(cpu_b),
        ),
    ]
}

fn promtool_available() -> bool {
    Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn promtool_backfills_what_the_writer_writes() {
    if !promtool_available() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and promtool is not on PATH (tests/ci.sh installs the prometheus package)"
        );
        println!("skipping: promtool not found on PATH (install the prometheus package)");
        return;
    }
    let all = fixture();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("series.om");
    let blocks = dir.path().join("blocks");
    let mut file = std::fs::File::create(&input).unwrap();
    write_openmetrics(&all, &mut file).unwrap();
    drop(file);

    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(&blocks)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Read the blocks back; `dump` insists on a WAL directory.
    std::fs::create_dir_all(blocks.join("wal")).unwrap();
    let dumped = dump(&blocks);
    let mut want: Vec<Vec<Sample>> = all.iter().map(|s| s.series.to_samples()).collect();
    let mut got: Vec<Vec<Sample>> = dumped.into_values().collect();
    want.sort_by(|a, b| a[0].value.total_cmp(&b[0].value));
    got.sort_by(|a, b| a[0].value.total_cmp(&b[0].value));
    assert_eq!(got.len(), 3, "series in the TSDB");
    assert_eq!(got, want);
}

/// Runs `promtool tsdb dump` and groups the samples by the series text.
fn dump(dir: &Path) -> BTreeMap<String, Vec<Sample>> {
    let out = Command::new("promtool")
        .args(["tsdb", "dump"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool tsdb dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut series: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        // `{__name__="x", l="v"} <value> <unix ms>`
        let (labels, rest) = line.rsplit_once("} ").unwrap();
        let (value, ts) = rest.split_once(' ').unwrap();
        series.entry(labels.to_string()).or_default().push(Sample {
            ts_ms: ts.parse().unwrap(),
            value: value.parse().unwrap(),
        });
    }
    for samples in series.values_mut() {
        samples.sort_by_key(|s| s.ts_ms);
    }
    series
}

#[test]
fn openmetrics_round_trip_writer_to_reader() {
    let all = fixture();
    let mut buf = Vec::new();
    write_openmetrics(&all, &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(text.ends_with("# EOF\n"));
    let back = read_openmetrics(&text).unwrap();
    assert_eq!(back.len(), all.len());
    for original in &all {
        let raw = back
            .iter()
            .find(|r| r.labels == original.labels)
            .unwrap_or_else(|| panic!("{:?} not read back", original.labels));
        assert_eq!(raw.samples, original.series.to_samples());
        assert_eq!(raw.report.duplicates + raw.report.out_of_order, 0);
        // Back on the grid, the 20-step gap stays a gap and nothing else changes.
        let (series, _) = raw.resample(&ResampleOptions::default()).unwrap();
        // The grid snaps to multiples of the step; each sample keeps its own point.
        let step = original.series.step_ms;
        assert_eq!(series.series.step_ms, step);
        assert_eq!(
            series.series.start_ms,
            original.series.start_ms.div_euclid(step) * step
        );
        assert_eq!(series.series.len(), original.series.len());
        assert_eq!(series.series.gap_points(), original.series.gap_points());
    }
}

#[test]
fn csv_round_trip_writer_to_reader() {
    let original = Series {
        start_ms: 1_700_000_100_000,
        step_ms: 60_000,
        values: (0..500)
            .map(|i| {
                if (200..210).contains(&i) {
                    f64::NAN
                } else {
                    (i as f64).sqrt() * 1e7
                }
            })
            .collect(),
    };
    let mut buf = Vec::new();
    write_csv(&original, &mut buf).unwrap();
    let raw = read_csv(std::str::from_utf8(&buf).unwrap()).unwrap();
    let (series, report) = resample(&raw.samples, &ResampleOptions::default()).unwrap();
    assert_eq!(series.start_ms, original.start_ms);
    assert_eq!(series.step_ms, original.step_ms);
    assert_eq!(report.gaps_kept, 1);
    assert_eq!(report.points_kept, 10);
    for (a, b) in series.values.iter().zip(&original.values) {
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "{a} != {b}"
        );
    }
}
