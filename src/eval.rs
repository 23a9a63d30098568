//! Evaluating forecast models over data sets: the M4 competition files and
//! recorded traces. This module reads files; the models themselves stay pure.
//!
//! Each series is fitted and forecast independently on a rayon pool; the reported
//! `fit_predict_seconds` is the wall time of that parallel section only (files are
//! read and parsed before it starts).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::forecast::{accuracy, Fit, ModelSpec, Predict};

/// Errors from loading and evaluating data sets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line of a data file is malformed.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was expected.
        message: String,
    },
    /// The train and test files do not describe the same series.
    #[error("train and test files disagree: {0}")]
    Mismatch(String),
    /// A data set with nothing to evaluate.
    #[error("no series to evaluate in {0}")]
    Empty(String),
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One M4 series: its id and values in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct M4Series {
    /// The series id (`H1`, ...).
    pub id: String,
    /// The observed values (trailing padding removed).
    pub values: Vec<f64>,
}

/// Parses an M4 wide CSV: a header row, then one row per series: a quoted id and
/// its values, rows padded with empty cells after the last value.
///
/// # Errors
/// [`Error::Parse`] naming the line for a bad number, an empty cell before the
/// last value, or a row without values.
pub fn parse_m4(text: &str, path: &Path) -> Result<Vec<M4Series>> {
    let bad = |line: usize, message: String| Error::Parse {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate().skip(1) {
        let line = i + 1;
        let raw = raw.trim_end_matches('\r');
        if raw.trim().is_empty() {
            continue;
        }
        let mut cells = raw.split(',').map(|c| c.trim().trim_matches('"'));
        let id = cells.next().unwrap_or_default().to_string();
        if id.is_empty() {
            return Err(bad(line, "expected a series id in the first column".into()));
        }
        let cells: Vec<&str> = cells.collect();
        let len = cells
            .iter()
            .rposition(|c| !c.is_empty())
            .map_or(0, |p| p + 1);
        if len == 0 {
            return Err(bad(line, format!("series {id} has no values")));
        }
        let mut values = Vec::with_capacity(len);
        for (j, c) in cells[..len].iter().enumerate() {
            let v: f64 = c.parse().map_err(|_| {
                bad(
                    line,
                    format!("column {}: expected a number, got {c:?}", j + 2),
                )
            })?;
            if !v.is_finite() {
                return Err(bad(line, format!("column {}: value must be finite", j + 2)));
            }
            values.push(v);
        }
        out.push(M4Series { id, values });
    }
    Ok(out)
}

/// Reads an M4 wide CSV file (see [`parse_m4`]).
///
/// # Errors
/// [`Error::Io`] or [`Error::Parse`].
pub fn read_m4(path: &Path) -> Result<Vec<M4Series>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_m4(&text, path)
}

/// The score of one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesScore {
    /// The series id or file name.
    pub id: String,
    /// The fitted model (or the error, when fitting failed).
    pub model: String,
    /// sMAPE of the mean forecast, percent.
    pub smape: f64,
    /// MASE of the mean forecast.
    pub mase: f64,
    /// MASE of the seasonal naive forecast on the same window.
    pub mase_seasonal_naive: f64,
    /// Share of actuals at or below the P90 forecast.
    pub coverage_p90: f64,
    /// Mean pinball loss of the P90 forecast, scaled like MASE.
    pub pinball_p90_scaled: f64,
}

/// Averages over a data set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The model spec evaluated.
    pub model: String,
    /// Series evaluated.
    pub series: usize,
    /// Mean sMAPE over series.
    pub smape: f64,
    /// Mean MASE over series.
    pub mase: f64,
    /// Mean MASE of the seasonal naive forecast over the same series and windows.
    pub mase_seasonal_naive: f64,
    /// Share of all actuals at or below their P90 forecast.
    pub coverage_p90: f64,
    /// Wall time of fitting and predicting every series (parallel), seconds.
    pub fit_predict_seconds: f64,
    /// Series whose fit failed (scored with the seasonal naive forecast instead).
    pub failures: usize,
    /// How often each model (or combination) was chosen.
    pub chosen: BTreeMap<String, usize>,
}

/// One forecasting task: history to fit, actuals to score, season for MASE.
#[derive(Debug, Clone)]
pub struct Task {
    /// The series id.
    pub id: String,
    /// History to fit on (`NAN` for gaps).
    pub history: Vec<f64>,
    /// The actuals that follow (`NAN` for gaps; those steps are not scored).
    pub actual: Vec<f64>,
    /// Grid step in milliseconds.
    pub step_ms: i64,
    /// Seasonal period for MASE and the seasonal naive reference.
    pub m: usize,
}

/// Pairs M4 train and test series into tasks (hourly: step one hour, `m` = 24).
///
/// # Errors
/// [`Error::Mismatch`] when the files' ids differ row by row.
pub fn m4_tasks(train: Vec<M4Series>, test: Vec<M4Series>, m: usize) -> Result<Vec<Task>> {
    if train.len() != test.len() {
        return Err(Error::Mismatch(format!(
            "{} train series, {} test series",
            train.len(),
            test.len()
        )));
    }
    train
        .into_iter()
        .zip(test)
        .map(|(tr, te)| {
            if tr.id != te.id {
                return Err(Error::Mismatch(format!(
                    "train row {} vs test row {}",
                    tr.id, te.id
                )));
            }
            Ok(Task {
                id: tr.id,
                history: tr.values,
                actual: te.values,
                step_ms: 3_600_000,
                m,
            })
        })
        .collect()
}

/// The seasonal naive forecast with period `m` from gap-filled history.
fn seasonal_naive(history: &[f64], m: usize, horizon: usize) -> Vec<f64> {
    let filled = crate::series::forward_fill(history);
    let m = m.clamp(1, filled.len().max(1));
    let n = filled.len();
    (0..horizon)
        .map(|h| filled.get(n - m + h % m).copied().unwrap_or(0.0))
        .collect()
}

/// Scores a forecast against finite actuals only.
fn score(task: &Task, model: String, mean: &[f64], p90: &[f64]) -> SeriesScore {
    let keep: Vec<usize> = (0..task.actual.len().min(mean.len()))
        .filter(|&i| task.actual[i].is_finite())
        .collect();
    let pick = |v: &[f64]| keep.iter().map(|&i| v[i]).collect::<Vec<f64>>();
    let (a, f, u) = (pick(&task.actual), pick(mean), pick(p90));
    let naive = pick(&seasonal_naive(&task.history, task.m, task.actual.len()));
    let insample = crate::series::forward_fill(&task.history);
    let scale = accuracy::mase_scale(&insample, task.m);
    SeriesScore {
        id: task.id.clone(),
        model,
        smape: accuracy::smape(&a, &f),
        mase: accuracy::mae(&a, &f) / scale,
        mase_seasonal_naive: accuracy::mae(&a, &naive) / scale,
        coverage_p90: accuracy::coverage_below(&a, &u),
        pinball_p90_scaled: accuracy::pinball(&a, &u, 0.9) / scale,
    }
}

/// Fits `spec` to every task in parallel, forecasts its actuals and scores them.
/// A series whose fit fails is scored with the seasonal naive forecast and counted
/// in `failures`.
pub fn evaluate(spec: &ModelSpec, tasks: &[Task]) -> (Summary, Vec<SeriesScore>) {
    evaluate_fit_steps(spec, tasks, 1)
}

/// Means of `k` consecutive points, aligned to the end (the last mean ends at the
/// last point; a shorter first block is dropped), packed and read back like a
/// tracker's compact history ([`crate::plan::packed::Packed`]); `NAN` where a
/// block has no finite point.
pub fn block_means(history: &[f64], k: usize) -> Vec<f64> {
    let k = k.max(1);
    if k == 1 {
        return history.to_vec();
    }
    let skip = history.len() % k;
    let means: Vec<f64> = history[skip..]
        .chunks(k)
        .map(|c| {
            let (s, n) = c
                .iter()
                .filter(|v| v.is_finite())
                .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
            if n == 0 {
                f64::NAN
            } else {
                s / n as f64
            }
        })
        .collect();
    crate::plan::packed::Packed::round_trip(&means)
}

/// Each value repeated `k` times, cut to `h`: a forecast on the fitted grid read
/// on the original one.
fn repeat_each(path: &[f64], k: usize, h: usize) -> Vec<f64> {
    path.iter()
        .flat_map(|&v| std::iter::repeat_n(v, k.max(1)))
        .take(h)
        .collect()
}

/// As [`evaluate`], with the model fitted on means of `fit_steps` grid points (as
/// a signal's `fit_step` does): it forecasts on that coarser grid, and each
/// forecast value stands for the `fit_steps` grid points it covers, scored
/// against the original actuals.
pub fn evaluate_fit_steps(
    spec: &ModelSpec,
    tasks: &[Task],
    fit_steps: usize,
) -> (Summary, Vec<SeriesScore>) {
    let k = fit_steps.max(1);
    let watch = Stopwatch::start();
    let forecasts: Vec<(String, Vec<f64>, Vec<f64>, bool)> = tasks
        .par_iter()
        .map(|t| {
            let h = t.actual.len();
            let hc = h.div_ceil(k);
            let spec = spec.clone().with_horizon(hc.max(1));
            let history = block_means(&t.history, k);
            match spec
                .fit(&history, t.step_ms.saturating_mul(k as i64))
                .and_then(|m| m.predict(hc, &[0.9]).map(|f| (m.name(), f)))
            {
                Ok((name, f)) => {
                    let p90 = f.quantile(0.9).map(<[f64]>::to_vec).unwrap_or_default();
                    (
                        name,
                        repeat_each(&f.mean, k, h),
                        repeat_each(&p90, k, h),
                        false,
                    )
                }
                Err(e) => {
                    let naive = seasonal_naive(&t.history, t.m, h);
                    (format!("failed: {e}"), naive.clone(), naive, true)
                }
            }
        })
        .collect();
    let seconds = watch.seconds();
    let scores: Vec<SeriesScore> = tasks
        .iter()
        .zip(&forecasts)
        .map(|(t, (name, mean, p90, _))| score(t, name.clone(), mean, p90))
        .collect();
    let mean_of = |f: fn(&SeriesScore) -> f64| {
        let v: Vec<f64> = scores.iter().map(f).filter(|v| v.is_finite()).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let (below, total) = tasks
        .iter()
        .zip(&forecasts)
        .flat_map(|(t, (_, _, p90, _))| t.actual.iter().zip(p90.iter()))
        .filter(|(a, _)| a.is_finite())
        .fold((0usize, 0usize), |(b, c), (a, u)| {
            (b + usize::from(a <= u), c + 1)
        });
    let mut chosen = BTreeMap::new();
    for (name, _, _, failed) in &forecasts {
        // Group by model family: strip parameters in parentheses.
        let key = if *failed {
            "failed".to_string()
        } else {
            family(name)
        };
        *chosen.entry(key).or_insert(0) += 1;
    }
    let summary = Summary {
        model: spec.name().to_string(),
        series: scores.len(),
        smape: mean_of(|s| s.smape),
        mase: mean_of(|s| s.mase),
        mase_seasonal_naive: mean_of(|s| s.mase_seasonal_naive),
        coverage_p90: below as f64 / total.max(1) as f64,
        fit_predict_seconds: seconds,
        failures: forecasts.iter().filter(|f| f.3).count(),
        chosen,
    };
    (summary, scores)
}

/// A model name without its parameters, members kept: `mean(mstl, linear-lags)`.
fn family(name: &str) -> String {
    for prefix in ["mean", "median"] {
        if let Some(inner) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('('))
            .and_then(|r| r.strip_suffix(')'))
        {
            let mut members = Vec::new();
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in inner.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth = depth.saturating_sub(1),
                    ',' if depth == 0 => {
                        members.push(inner[start..i].trim());
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            members.push(inner[start..].trim());
            // Parameters are dropped, except where two members would then read
            // alike (seasonal-naive over a day and over a week).
            let bare: Vec<String> = members.iter().map(|m| strip_parens(m)).collect();
            let mut named: Vec<String> = members
                .iter()
                .zip(&bare)
                .map(|(m, b)| {
                    if bare.iter().filter(|o| *o == b).count() > 1 {
                        (*m).to_string()
                    } else {
                        b.clone()
                    }
                })
                .collect();
            named.sort();
            return format!("{prefix}({})", named.join(", "));
        }
    }
    strip_parens(name)
}

/// Removes every parenthesised group.
fn strip_parens(s: &str) -> String {
    let mut depth = 0usize;
    s.chars()
        .filter(|&c| match c {
            '(' => {
                depth += 1;
                false
            }
            ')' => {
                depth = depth.saturating_sub(1);
                false
            }
            _ => depth == 0,
        })
        .collect()
}

/// Measures the wall time of the parallel section. Elapsed time of our own work is
/// not "now": it never enters a model, so it does not go through `clock`.
struct Stopwatch(std::time::Instant);

impl Stopwatch {
    fn start() -> Self {
        Self(std::time::Instant::now())
    }

    fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared data set sits beside the repository (`../shared`); the absolute
    /// path is where the team's machines mount it.
    fn m4_dir() -> Option<std::path::PathBuf> {
        [
            concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/m4"),
            "/work/shared/data/m4",
        ]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_dir())
    }

    #[test]
    fn parses_padded_rows_and_rejects_bad_cells() {
        let text = "\"V1\",\"V2\",\"V3\",\"V4\"\n\"H1\",\"1\",\"2\",\"3\"\n\"H2\",\"4\",\"5\",\n";
        let s = parse_m4(text, Path::new("t.csv")).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].values, vec![4.0, 5.0]);
        let err = parse_m4("h\n\"H1\",\"1\",\"x\"\n", Path::new("t.csv"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.csv:2") && err.contains("column 3"), "{err}");
        assert!(parse_m4("h\n\"H1\",,\n", Path::new("t.csv")).is_err());
    }

    #[test]
    fn block_means_end_on_the_last_point_and_skip_gaps() {
        let h = [9.0, 1.0, 2.0, 3.0, f64::NAN, f64::NAN, f64::NAN];
        let m = block_means(&h, 2);
        assert_eq!(m.len(), 3, "the shorter first block is dropped");
        assert_eq!((m[0], m[1]), (1.5, 3.0));
        assert!(m[2].is_nan(), "a block of gaps is a gap");
        assert_eq!(block_means(&h[1..4], 1), vec![1.0, 2.0, 3.0]);
        assert_eq!(
            repeat_each(&[1.0, 2.0], 3, 5),
            vec![1.0, 1.0, 1.0, 2.0, 2.0]
        );
    }

    /// A daily shape with deterministic noise, so no forecast is exact.
    fn wobbly(k: usize, i: usize) -> f64 {
        10.0 + k as f64 + ((i % 24) as f64 / 4.0).sin() + ((i * 7919) % 13) as f64 * 0.05
    }

    #[test]
    fn fit_steps_one_is_the_plain_evaluation() {
        let tasks: Vec<Task> = (0..3)
            .map(|k| Task {
                id: format!("t{k}"),
                history: (0..24 * 14).map(|i| wobbly(k, i)).collect(),
                actual: (24 * 14..24 * 14 + 12).map(|i| wobbly(k, i)).collect(),
                step_ms: 3_600_000,
                m: 24,
            })
            .collect();
        let spec = ModelSpec::by_name("seasonal-naive").unwrap();
        let (a, _) = evaluate(&spec, &tasks);
        let (b, _) = evaluate_fit_steps(&spec, &tasks, 1);
        assert!(a.mase.is_finite() && a.mase > 0.0, "{}", a.mase);
        assert_eq!((a.mase, a.smape), (b.mase, b.smape));
        // On 2-hour means each forecast value stands for two hours: another score.
        let (c, _) = evaluate_fit_steps(&spec, &tasks, 2);
        assert!(
            c.mase.is_finite() && c.mase != b.mase,
            "{} vs {}",
            c.mase,
            b.mase
        );
        assert_eq!(c.failures, 0);
    }

    #[test]
    fn family_strips_parameters() {
        assert_eq!(family("mstl(24,168)"), "mstl");
        assert_eq!(
            family("mean(mstl(24,168), linear-lags(25 lags, 6 fourier))"),
            "mean(linear-lags, mstl)"
        );
        // Two members of one family keep what tells them apart.
        assert_eq!(
            family("mean(mstl(24), seasonal-naive(24), seasonal-naive(168))"),
            "mean(mstl, seasonal-naive(168), seasonal-naive(24))"
        );
    }

    /// The scorer reproduces the official M4 Hourly seasonal-naive figures.
    #[test]
    fn m4_hourly_seasonal_naive_matches_the_official_scores() {
        let Some(dir) = m4_dir().filter(|d| d.join("Hourly-train.csv").exists()) else {
            eprintln!("skipping: the M4 data set (../shared/data/m4) is not present");
            return;
        };
        let train = read_m4(&dir.join("Hourly-train.csv")).unwrap();
        let test = read_m4(&dir.join("Hourly-test.csv")).unwrap();
        let tasks = m4_tasks(train, test, 24).unwrap();
        assert_eq!(tasks.len(), 414);
        let scores: Vec<SeriesScore> = tasks
            .iter()
            .map(|t| {
                let f = seasonal_naive(&t.history, 24, 48);
                score(t, "snaive".into(), &f, &f)
            })
            .collect();
        let smape = scores.iter().map(|s| s.smape).sum::<f64>() / 414.0;
        let mase = scores.iter().map(|s| s.mase).sum::<f64>() / 414.0;
        assert!((smape - 13.912).abs() < 5e-4, "sMAPE {smape}");
        assert!((mase - 1.193).abs() < 5e-4, "MASE {mase}");
    }
}
