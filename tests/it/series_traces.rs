//! Every recorded dev trace loads and resamples, with the step and gaps its
//! README describes: the 10 bundled copies in tests/data always, and all 12 in
//! /work/shared/data/traces when that directory exists.

use std::path::{Path, PathBuf};

use prescale::series::{read_file, ResampleOptions, ResampleReport, Series};

/// What resampling one trace with the default options must give.
struct Expect {
    file: &'static str,
    step_ms: i64,
    grid_points: usize,
    /// (runs, points) interpolated.
    filled: (usize, usize),
    /// (runs, points) kept as gaps.
    kept: (usize, usize),
    /// Unix seconds of grid points that must be gaps.
    gaps_at: &'static [i64],
    /// Unix seconds and exact values of grid points that must hold a sample.
    values_at: &'static [(i64, f64)],
}

const MIN: i64 = 60_000;

/// The figures follow the trace README: e.g. ac20cd has a 900 s and a 1200 s
/// step (2 + 3 missing samples), elb 8 single missing samples, NASA two
/// multi-day outages, Bitbrains 24 h gaps where its monthly files meet.
const EXPECTED: &[Expect] = &[
    Expect {
        file: "azure_llm_conv_requests_per_sec.csv",
        step_ms: 1000,
        grid_points: 3503,
        filled: (0, 0),
        kept: (0, 0),
        gaps_at: &[],
        values_at: &[(1_700_158_546, 1.0)],
    },
    Expect {
        file: "google2019_cell_avg_cpu_5min.csv",
        step_ms: 5 * MIN,
        grid_points: 8064,
        filled: (0, 0),
        kept: (0, 0),
        gaps_at: &[],
        values_at: &[],
    },
    Expect {
        file: "nab_cpu_utilization_asg_misconfiguration.csv",
        step_ms: 5 * MIN,
        grid_points: 18050,
        filled: (0, 0),
        kept: (0, 0),
        gaps_at: &[],
        values_at: &[],
    },
    Expect {
        file: "nab_ec2_cpu_utilization_5f5533.csv",
        step_ms: 5 * MIN,
        grid_points: 4032,
        filled: (0, 0),
        kept: (0, 0),
        gaps_at: &[],
        values_at: &[],
    },
    Expect {
        file: "nab_ec2_cpu_utilization_ac20cd.csv",
        step_ms: 5 * MIN,
        grid_points: 4037,
        filled: (2, 5),
        kept: (0, 0),
        gaps_at: &[],
        values_at: &[],
    },
    Expect {
        file: "nab_ec2_network_in_257a54.csv",
        step_ms: 5 * MIN,
        grid_points: 4034,
        filled: (2, 2),
        kept: (0, 0),
        gaps_at: &[],
        values_at: &[],
    },
    Expect {
        file: "nab_ec2_request_latency_system_failure.csv",
        step_ms: 5 * MIN,
        grid_points: 4033,
        filled: (1, 1),
        kept: (0, 0),
        gaps_at: &[],
        values_at: &[],
    },
    Expect {
        file: "nab_elb_request_count_8c0756.csv",
        step_ms: 5 * MIN,
        grid_points: 4040,
        filled: (8, 8),
        kept: (0, 0),
        gaps_at: &[],
        values_at: &[],
    },
    Expect {
        file: "nab_rds_cpu_utilization_cc0c53.csv",
        step_ms: 5 * MIN,
        grid_points: 4033,
        filled: (1, 1),
        kept: (0, 0),
        gaps_at: &[],
        values_at: &[],
    },
    Expect {
        file: "snowflake_region1_vm_demand_hourly.csv",
        step_ms: 60 * MIN,
        grid_points: 26280,
        filled: (0, 0),
        kept: (0, 0),
        gaps_at: &[],
        values_at: &[],
    },
    // Not bundled (licences): read by path only.
    Expect {
        file: "nasa_http_requests_per_min.csv",
        step_ms: MIN,
        grid_points: 89280,
        filled: (0, 0),
        // 1995-07-28 17:31 → 08-01 04:00 and 08-01 18:51 → 08-03 08:37, in minutes.
        kept: (2, 4948 + 2265),
        gaps_at: &[807_062_400, 807_364_800],
        // The STS-70 launch peak, 1995-07-13 13:49 UTC.
        values_at: &[(805_643_340, 405.0)],
    },
    Expect {
        file: "bitbrains_rnd_vm411_cpu_mhz.csv",
        step_ms: 5 * MIN,
        grid_points: 26208,
        filled: (5, 7),
        kept: (5, 596),
        // Where the July/August and August/September files meet.
        gaps_at: &[1_375_264_800, 1_377_943_200],
        values_at: &[],
    },
];

/// Loads and resamples one trace and checks the gap rule on every pair of
/// neighbouring samples: up to `max_gap_steps` empty grid points between them
/// are interpolated within their values, more stay gaps.
fn load_and_check(path: &Path) -> (Series, ResampleReport) {
    let raw = read_file(path).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    assert_eq!(raw.len(), 1, "{}: one series per CSV", path.display());
    let options = ResampleOptions::default();
    let (labeled, report) = raw[0]
        .resample(&options)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let series = labeled.series;
    let step = series.step_ms;
    for w in raw[0].samples.windows(2) {
        let (a, b) = (w[0].ts_ms.div_euclid(step), w[1].ts_ms.div_euclid(step));
        let missing = (b - a - 1) as usize;
        if missing == 0 {
            continue;
        }
        let first = (a * step - series.start_ms) / step + 1;
        let between = &series.values[first as usize..first as usize + missing];
        let (lo, hi) = (w[0].value.min(w[1].value), w[0].value.max(w[1].value));
        if missing <= options.max_gap_steps {
            assert!(
                between.iter().all(|v| (lo..=hi).contains(v)),
                "{}: {missing} missing after {} should be interpolated: {between:?}",
                path.display(),
                w[0].ts_ms
            );
        } else {
            assert!(
                between.iter().all(|v| v.is_nan()),
                "{}: {missing} missing after {} should stay a gap",
                path.display(),
                w[0].ts_ms
            );
        }
    }
    let finite: Vec<f64> = series
        .values
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .collect();
    assert!(
        finite.iter().all(|v| v.is_finite() && *v >= 0.0),
        "{}",
        path.display()
    );
    (series, report)
}

fn check_expected(path: &Path, e: &Expect) {
    let (series, report) = load_and_check(path);
    let name = path.display();
    assert_eq!(series.step_ms, e.step_ms, "{name}: step");
    assert!(report.step_inferred);
    assert_eq!(
        series.len(),
        e.grid_points,
        "{name}: grid points ({report})"
    );
    assert_eq!(
        (report.gaps_filled, report.points_filled),
        e.filled,
        "{name}: filled ({report})"
    );
    assert_eq!(
        (report.gaps_kept, report.points_kept),
        e.kept,
        "{name}: kept ({report})"
    );
    assert_eq!(series.gap_points(), e.kept.1, "{name}");
    assert_eq!(report.read.duplicates, 0, "{name}");
    assert!(!report.read.was_unsorted(), "{name}");
    for &secs in e.gaps_at {
        let i = series
            .index_of(secs * 1000)
            .unwrap_or_else(|| panic!("{name}: {secs} off grid"));
        assert!(series.values[i].is_nan(), "{name}: {secs} should be a gap");
    }
    for &(secs, value) in e.values_at {
        let i = series
            .index_of(secs * 1000)
            .unwrap_or_else(|| panic!("{name}: {secs} off grid"));
        assert_eq!(series.values[i], value, "{name}: value at {secs}");
    }
}

fn csv_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    files
}

#[test]
fn bundled_traces_load_with_expected_steps_and_gaps() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let files = csv_files(&dir);
    assert_eq!(files.len(), 10, "bundled traces: {files:?}");
    for path in files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let e = EXPECTED
            .iter()
            .find(|e| e.file == name)
            .unwrap_or_else(|| panic!("no expectation for bundled {name}"));
        check_expected(&path, e);
    }
}

#[test]
fn shared_traces_load_with_expected_steps_and_gaps() {
    // The shared data set sits beside the repository (relative paths only).
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/traces"
    ));
    let found = dir.is_dir().then_some(dir);
    let Some(dir) = found else {
        println!("skipping: the shared traces (../shared/data/traces) are not present");
        return;
    };
    let files = csv_files(dir);
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        match EXPECTED.iter().find(|e| e.file == name) {
            Some(e) => check_expected(path, e),
            // A trace added later still has to load and obey the gap rule.
            None => drop(load_and_check(path)),
        }
    }
    for e in EXPECTED {
        assert!(
            files.iter().any(|p| p.ends_with(e.file)),
            "{} missing from {}",
            e.file,
            dir.display()
        );
    }
}
