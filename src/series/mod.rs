//! Regular time series with explicit gaps, and the readers and writers for the
//! formats recorded metrics come in.
//!
//! Timestamps are unix milliseconds throughout. A [`Series`] sits on a regular grid
//! of `step_ms`; a missing step is stored as `f64::NAN` so models can see where the
//! gaps are. Input values are always finite: NaN only ever means "no sample".
//!
//! The path from a file to a model is: a reader ([`read_csv`], [`read_prom_json`],
//! [`read_openmetrics`], or [`read_file`] which picks one) yields [`RawSeries`]:
//! samples sorted by time with duplicate timestamps resolved, plus a [`ReadReport`].
//! [`resample`] (or [`RawSeries::resample`]) then puts them on a regular grid and
//! says what it had to do in a [`ResampleReport`].

mod csv;
mod openmetrics;
mod prom_json;
mod resample;

pub use csv::{read_csv, write_csv};
pub use openmetrics::{read_openmetrics, write_openmetrics};
pub use prom_json::read_prom_json;
pub use resample::{
    infer_step_ms, resample, ResampleOptions, ResampleReport, DEFAULT_MAX_GAP_STEPS,
    MAX_GRID_POINTS,
};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A series' label set: names to values, ordered so that equal label sets compare
/// and hash equal. Reads as the map it holds; writes (`Display`) as Prometheus prints
/// a series: `name{a="x", b="y"}`.
///
/// Copies share one map (a write copies it first): the engine keys its series by
/// their labels and every served entry carries them, so at 100,000 series one map
/// each (a B-tree node, ~0.5 KiB even for one label) instead of two, and no copy
/// per step.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(std::sync::Arc<BTreeMap<String, String>>);

impl Labels {
    /// No labels.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of label `name`, if set.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The map itself (a copy when it is shared).
    pub fn into_inner(self) -> BTreeMap<String, String> {
        std::sync::Arc::try_unwrap(self.0).unwrap_or_else(|shared| (*shared).clone())
    }
}

impl std::ops::Deref for Labels {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Labels {
    fn deref_mut(&mut self) -> &mut Self::Target {
        std::sync::Arc::make_mut(&mut self.0)
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(std::sync::Arc::new(map))
    }
}

impl<const N: usize> From<[(String, String); N]> for Labels {
    fn from(pairs: [(String, String); N]) -> Self {
        Self::from(BTreeMap::from(pairs))
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self::from(iter.into_iter().collect::<BTreeMap<_, _>>())
    }
}

impl IntoIterator for Labels {
    type Item = (String, String);
    type IntoIter = std::collections::btree_map::IntoIter<String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.into_inner().into_iter()
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl serde::Serialize for Labels {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        BTreeMap::deserialize(deserializer).map(Self::from)
    }
}

/// Prometheus' form: `name{a="x", b="y"}`; `name` alone without other labels, `{}`
/// for none.
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.value("__name__").unwrap_or("");
        let mut rest = self
            .0
            .iter()
            .filter(|(k, _)| k.as_str() != "__name__")
            .peekable();
        if rest.peek().is_none() && !name.is_empty() {
            return f.write_str(name);
        }
        write!(f, "{name}{{")?;
        for (i, (k, v)) in rest.enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={v:?}")?;
        }
        f.write_str("}")
    }
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong reading, resampling or writing series.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A line of a text input (CSV, OpenMetrics) is malformed; `line` is 1-based.
    #[error("line {line}: {message}")]
    Line {
        /// 1-based line number in the input.
        line: usize,
        /// What was found and what was expected instead.
        message: String,
    },
    /// An entry of a Prometheus JSON response is malformed or holds a non-finite value.
    #[error("{location}: {message}")]
    Json {
        /// Where in the response, e.g. `result[1] up{job="api"} values[4] (t=1700000300)`.
        location: String,
        /// What was found and what was expected instead.
        message: String,
    },
    /// The input is not valid JSON at all.
    #[error(
        "line {line}, column {column}: invalid JSON, expected a Prometheus range-query response"
    )]
    JsonSyntax {
        /// 1-based line of the syntax error.
        line: usize,
        /// 1-based column of the syntax error.
        column: usize,
        /// The parser's own description.
        #[source]
        source: serde_json::Error,
    },
    /// Prometheus answered the query with `"status": "error"`.
    #[error("Prometheus returned an error ({error_type}): {error}")]
    Prometheus {
        /// Prometheus' `errorType`, e.g. `bad_data` or `timeout`.
        error_type: String,
        /// Prometheus' `error` message.
        error: String,
    },
    /// The file holds no samples at all (empty, or a header only).
    #[error("empty: no samples (a CSV needs `timestamp,value` rows after its header)")]
    NoSamples,
    /// There are not enough samples for what was asked.
    #[error("too few samples: {what} needs at least {needed}, got {got}")]
    TooFewSamples {
        /// The operation that needed them.
        what: &'static str,
        /// How many it needs.
        needed: usize,
        /// How many there were.
        got: usize,
    },
    /// An option is out of range.
    #[error("{name}: {message}")]
    InvalidOption {
        /// The option's name, e.g. `step_ms`.
        name: &'static str,
        /// What was expected and what was given.
        message: String,
    },
    /// Resampling would create more grid points than [`MAX_GRID_POINTS`].
    #[error("the grid would have {points} points (more than {limit}): use a larger step or a shorter range")]
    GridTooLarge {
        /// Grid points needed to cover the samples.
        points: u128,
        /// The limit.
        limit: usize,
    },
    /// A series cannot be written in the requested format.
    #[error("cannot write series {series}: {message}")]
    Unwritable {
        /// The series, in Prometheus notation.
        series: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// Reading an input file failed.
    #[error("reading {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file was read but its content failed to parse; `source` names the line.
    #[error("in {}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: Box<Error>,
    },
    /// Writing output failed.
    #[error("writing {what}")]
    Write {
        /// What was being written (`CSV`, `OpenMetrics`).
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// One raw observation as read from a file or an API, before resampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Unix time in milliseconds.
    pub ts_ms: i64,
    /// The observed value; always finite.
    pub value: f64,
}

/// A series on a regular grid: `values[i]` is the value at `start_ms + i * step_ms`,
/// `NAN` where there is no sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Unix time of the first grid point, in milliseconds.
    pub start_ms: i64,
    /// Distance between grid points, in milliseconds; always positive.
    pub step_ms: i64,
    /// One value per grid point; `NAN` marks a gap.
    pub values: Vec<f64>,
}

impl Series {
    /// Unix time in milliseconds of grid point `i`.
    pub fn time_at(&self, i: usize) -> i64 {
        self.start_ms + self.step_ms * i as i64
    }

    /// Number of grid points, gaps included.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the series has no grid points.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Index of the grid point at unix time `ts_ms`, if `ts_ms` is exactly on the
    /// grid and within the series.
    pub fn index_of(&self, ts_ms: i64) -> Option<usize> {
        let offset = ts_ms.checked_sub(self.start_ms)?;
        if offset < 0 || offset % self.step_ms != 0 {
            return None;
        }
        let i = usize::try_from(offset / self.step_ms).ok()?;
        (i < self.values.len()).then_some(i)
    }

    /// The grid points that hold a value, as samples (gaps are left out).
    pub fn to_samples(&self) -> Vec<Sample> {
        self.values
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_nan())
            .map(|(i, &value)| Sample {
                ts_ms: self.time_at(i),
                value,
            })
            .collect()
    }

    /// Number of grid points that are gaps (`NAN`).
    pub fn gap_points(&self) -> usize {
        self.values.iter().filter(|v| v.is_nan()).count()
    }
}

/// Replaces each gap (a non-finite value) with the last observed value before it;
/// leading gaps take the first observed value, and an all-gap input becomes zeros.
///
/// This is what a reader of the latest sample keeps seeing through a gap.
pub fn forward_fill(values: &[f64]) -> Vec<f64> {
    let mut last = values
        .iter()
        .copied()
        .find(|v| v.is_finite())
        .unwrap_or(0.0);
    values
        .iter()
        .map(|&v| {
            if v.is_finite() {
                last = v;
            }
            last
        })
        .collect()
}

/// A series together with the labels that identify it.
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledSeries {
    /// The series' labels (`__name__` included when known).
    pub labels: Labels,
    /// The values.
    pub series: Series,
}

/// What a reader saw and did while cleaning one series' samples.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// Samples read from the input, duplicates included.
    pub points_in: usize,
    /// Samples dropped because a later one had the same timestamp (last wins).
    pub duplicates: usize,
    /// Samples whose timestamp was earlier than the one before them; when nonzero
    /// the input was not sorted and has been sorted.
    pub out_of_order: usize,
}

impl ReadReport {
    /// Whether the input had to be sorted.
    pub fn was_unsorted(&self) -> bool {
        self.out_of_order > 0
    }
}

impl fmt::Display for ReadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} points read, {} duplicate timestamps (last kept), {}",
            self.points_in,
            self.duplicates,
            if self.was_unsorted() {
                format!("unsorted ({} out of order, sorted)", self.out_of_order)
            } else {
                "sorted".to_string()
            }
        )
    }
}

/// Samples of one series as read, sorted by time with duplicates resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSeries {
    /// The series' labels (`__name__` included when known; empty for CSV).
    pub labels: Labels,
    /// Samples in strictly increasing time order, all values finite.
    pub samples: Vec<Sample>,
    /// What cleaning the samples did.
    pub report: ReadReport,
}

impl RawSeries {
    /// Builds a raw series from samples in any order: sorts them and keeps the last
    /// sample of each timestamp, reporting both.
    pub fn new(labels: Labels, samples: Vec<Sample>) -> Self {
        let (samples, report) = normalize(samples);
        Self {
            labels,
            samples,
            report,
        }
    }

    /// Puts the samples on a regular grid (see [`resample`]); the report carries
    /// this series' read report.
    ///
    /// # Errors
    /// As [`resample`].
    pub fn resample(&self, options: &ResampleOptions) -> Result<(LabeledSeries, ResampleReport)> {
        let (series, mut report) = resample(&self.samples, options)?;
        // The samples were cleaned when read; anything resample found on top
        // (only if they were edited since) adds to what the reader saw.
        report.read = ReadReport {
            points_in: self.report.points_in,
            duplicates: self.report.duplicates + report.read.duplicates,
            out_of_order: self.report.out_of_order + report.read.out_of_order,
        };
        Ok((
            LabeledSeries {
                labels: self.labels.clone(),
                series,
            },
            report,
        ))
    }
}

/// Sorts samples by time (stable, so input order decides among equal timestamps)
/// and keeps the last sample of each timestamp.
pub fn normalize(mut samples: Vec<Sample>) -> (Vec<Sample>, ReadReport) {
    let points_in = samples.len();
    let out_of_order = samples
        .windows(2)
        .filter(|w| w[1].ts_ms < w[0].ts_ms)
        .count();
    if out_of_order > 0 {
        samples.sort_by_key(|s| s.ts_ms);
    }
    // Last wins: walk the runs of equal timestamps and keep each run's last sample.
    let mut out: Vec<Sample> = Vec::with_capacity(samples.len());
    for s in samples {
        match out.last_mut() {
            Some(last) if last.ts_ms == s.ts_ms => *last = s,
            _ => out.push(s),
        }
    }
    let duplicates = points_in - out.len();
    (
        out,
        ReadReport {
            points_in,
            duplicates,
            out_of_order,
        },
    )
}

/// Reads a file of recorded samples, choosing the format from the extension
/// (`.csv`; `.json`; `.om`, `.prom`, `.openmetrics`) or, failing that,
/// from the content (`{` starts JSON, `#` or a `name{` / `name value ts` line starts
/// OpenMetrics, anything else is CSV).
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, [`Error::InFile`] wrapping the
/// reader's error (which names the line) when it does not parse.
pub fn read_file(path: &Path) -> Result<Vec<RawSeries>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let format = match ext.as_deref() {
        Some("csv") => Format::Csv,
        Some("json") => Format::PromJson,
        Some("om" | "prom" | "openmetrics") => Format::OpenMetrics,
        _ => sniff(&text),
    };
    let parsed = match format {
        Format::Csv => read_csv(&text).map(|s| vec![s]),
        Format::PromJson => read_prom_json(&text),
        Format::OpenMetrics => read_openmetrics(&text),
    };
    parsed.map_err(|e| Error::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// Reads a file with [`read_file`] and resamples every series in it.
///
/// # Errors
/// As [`read_file`]; resampling errors are wrapped in [`Error::InFile`] too, so
/// the message names the file.
pub fn load_file(
    path: &Path,
    options: &ResampleOptions,
) -> Result<Vec<(LabeledSeries, ResampleReport)>> {
    let raws = read_file(path)?;
    if raws.iter().all(|r| r.samples.is_empty()) {
        return Err(Error::InFile {
            path: path.to_path_buf(),
            source: Box::new(Error::NoSamples),
        });
    }
    raws.iter()
        .map(|raw| {
            raw.resample(options).map_err(|e| Error::InFile {
                path: path.to_path_buf(),
                source: Box::new(e),
            })
        })
        .collect()
}

/// The input formats [`read_file`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    PromJson,
    OpenMetrics,
}

/// Guesses the format from the first non-blank line.
fn sniff(text: &str) -> Format {
    let first = text
        .trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if first.starts_with('{') || first.starts_with('[') {
        return Format::PromJson;
    }
    if first.starts_with('#') || first.contains('{') {
        return Format::OpenMetrics;
    }
    // `name value ts` has a metric name first and no comma.
    let starts_with_name = first
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if starts_with_name && !first.contains(',') {
        Format::OpenMetrics
    } else {
        Format::Csv
    }
}

/// Largest magnitude accepted for a unix time in seconds (about the year 5138).
/// Anything larger is almost surely milliseconds or nanoseconds given as seconds.
const MAX_ABS_UNIX_SECONDS: f64 = 1e11;

/// Parses a finite value, with messages that say what was expected.
fn parse_value(s: &str) -> Result<f64, String> {
    if s.is_empty() {
        return Err("missing value: expected a finite decimal number".to_string());
    }
    let v: f64 = s
        .parse()
        .map_err(|_| format!("bad number {s:?}: expected a finite decimal number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!(
            "non-finite value {s:?}: expected a finite number (NaN and Inf are rejected)"
        ))
    }
}

/// Converts unix seconds (possibly fractional) to milliseconds, rounding to the
/// nearest millisecond.
fn seconds_to_ms(secs: f64, shown: &str) -> Result<i64, String> {
    if !secs.is_finite() {
        return Err(format!(
            "bad timestamp {shown:?}: expected finite unix seconds"
        ));
    }
    if secs.abs() > MAX_ABS_UNIX_SECONDS {
        return Err(format!(
            "timestamp {shown:?} is out of range for unix seconds (milliseconds given as seconds?)"
        ));
    }
    // In range, so the product fits an i64 with room to spare.
    Ok((secs * 1000.0).round() as i64)
}

/// Parses a timestamp given as unix seconds (integer or fractional) or as an
/// RFC 3339 time with an offset (`2024-05-01T12:00:00Z`, `…+02:00`).
fn parse_timestamp(s: &str) -> Result<i64, String> {
    if s.is_empty() {
        return Err("missing timestamp: expected unix seconds or an RFC 3339 time".to_string());
    }
    // `YYYY-` or a ':' can only be a date/time; `1e-3` and `-5` are numbers.
    if s.as_bytes().get(4) == Some(&b'-') || s.contains(':') {
        return chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .map_err(|e| {
                format!(
                    "bad timestamp {s:?}: expected an RFC 3339 time with offset like 2024-05-01T12:00:00Z ({e})"
                )
            });
    }
    let secs: f64 = s.parse().map_err(|_| {
        format!(
            "bad timestamp {s:?}: expected unix seconds or an RFC 3339 time like 2024-05-01T12:00:00Z"
        )
    })?;
    seconds_to_ms(secs, s)
}

/// Formats unix milliseconds as unix seconds with at most three decimals.
fn format_seconds(ts_ms: i64) -> String {
    let sign = if ts_ms < 0 { "-" } else { "" };
    let abs = ts_ms.unsigned_abs();
    let (secs, ms) = (abs / 1000, abs % 1000);
    if ms == 0 {
        format!("{sign}{secs}")
    } else {
        let frac = format!("{ms:03}");
        format!("{sign}{secs}.{}", frac.trim_end_matches('0'))
    }
}

/// Formats a finite value so that it parses back to the same `f64`, in plain
/// decimal for ordinary magnitudes and in exponent form for extreme ones.
fn format_value(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || (1e-6..1e16).contains(&a) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_labels_share_one_map_until_one_is_written() {
        let a: Labels = [("queue".to_string(), "jobs".to_string())].into();
        let mut b = a.clone();
        assert!(std::sync::Arc::ptr_eq(&a.0, &b.0), "a copy shares the map");
        b.insert("zone".to_string(), "b".to_string());
        assert!(!std::sync::Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a.len(), 1, "the original is untouched");
        assert_eq!(b.value("zone"), Some("b"));
        assert_eq!(a.clone().into_inner(), a.into_inner());
    }

    #[test]
    fn normalize_sorts_and_keeps_last_duplicate() {
        let s = |ts_ms, value| Sample { ts_ms, value };
        let (out, report) = normalize(vec![s(3, 1.0), s(1, 2.0), s(3, 5.0), s(2, 0.0)]);
        assert_eq!(out, vec![s(1, 2.0), s(2, 0.0), s(3, 5.0)]);
        assert_eq!(report.points_in, 4);
        assert_eq!(report.duplicates, 1);
        assert!(report.was_unsorted());
    }

    #[test]
    fn seconds_format_round_trips() {
        for ms in [0, 1, 999, 1000, 1500, 1_700_000_000_123, -1, -500, -1500] {
            let s = format_seconds(ms);
            assert_eq!(parse_timestamp(&s), Ok(ms), "{s}");
        }
        assert_eq!(format_seconds(1_700_000_000_500), "1700000000.5");
        assert_eq!(format_seconds(-500), "-0.5");
    }

    #[test]
    fn values_format_round_trips() {
        for v in [
            0.0,
            -0.0,
            1.0,
            0.1,
            44.038000000000004,
            1e9,
            2.45e8,
            1e300,
            1e-300,
            -3.5,
        ] {
            assert_eq!(parse_value(&format_value(v)), Ok(v));
        }
    }

    #[test]
    fn timestamps_in_both_notations() {
        assert_eq!(parse_timestamp("1700000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_timestamp("1700000000.25"), Ok(1_700_000_000_250));
        assert_eq!(
            parse_timestamp("2023-11-14T22:13:20Z"),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_timestamp("2023-11-15T00:13:20.5+02:00"),
            Ok(1_700_000_000_500)
        );
        assert!(parse_timestamp("1700000000000").is_err(), "milliseconds");
        assert!(parse_timestamp("2023-11-14T22:13:20").is_err(), "no offset");
        assert!(parse_timestamp("yesterday").is_err());
        assert_eq!(parse_timestamp("1.7e9"), Ok(1_700_000_000_000));
        assert_eq!(parse_timestamp("-1.5"), Ok(-1500));
        assert!(parse_timestamp("2023-13-01T00:00:00Z").is_err(), "month 13");
    }

    #[test]
    fn read_file_picks_the_format_and_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let csv = write("a.csv", "timestamp,value\n1,2\n");
        assert_eq!(
            read_file(&csv).unwrap()[0].samples,
            vec![Sample {
                ts_ms: 1000,
                value: 2.0
            }]
        );
        let json = write(
            "r.json",
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"b"},"values":[[1,"2"]]}]}}"#,
        );
        assert_eq!(read_file(&json).unwrap()[0].labels["a"], "b");
        let om = write("m.om", "x{a=\"b\"} 2 1\n# EOF\n");
        assert_eq!(read_file(&om).unwrap()[0].samples[0].ts_ms, 1000);
        // No extension: sniffed from the content.
        let sniffed = write("noext", "x 2 1000\n");
        assert_eq!(read_file(&sniffed).unwrap()[0].samples[0].ts_ms, 1000);

        let bad = write("bad.csv", "timestamp,value\n1,2\n2,NaN\n");
        let err = read_file(&bad).unwrap_err();
        let Error::InFile { path, source } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(path, &bad);
        assert!(
            matches!(**source, Error::Line { line: 3, .. }),
            "{source:?}"
        );
        let loaded = load_file(&csv, &ResampleOptions::default().with_step_ms(1000)).unwrap();
        assert_eq!(loaded[0].0.series.values, vec![2.0]);
        assert_eq!(loaded[0].1.read.points_in, 1);
        let one = write("one.csv", "1,2\n");
        assert!(matches!(
            load_file(&one, &ResampleOptions::default()),
            Err(Error::InFile { .. })
        ));
        assert!(matches!(
            read_file(&dir.path().join("missing.csv")),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn labels_print_like_prometheus() {
        let mut l = Labels::new();
        assert_eq!(l.to_string(), "{}");
        l.insert("__name__".into(), "up".into());
        assert_eq!(l.to_string(), "up");
        l.insert("job".into(), "a\"b".into());
        assert_eq!(l.to_string(), "up{job=\"a\\\"b\"}");
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff("timestamp,value\n1,2\n"), Format::Csv);
        assert_eq!(sniff("1,2\n"), Format::Csv);
        assert_eq!(sniff("{\"status\":\"success\"}"), Format::PromJson);
        assert_eq!(sniff("# TYPE x gauge\nx 1 2\n"), Format::OpenMetrics);
        assert_eq!(sniff("up{job=\"a\"} 1 2\n"), Format::OpenMetrics);
        assert_eq!(sniff("up 1 1700000000000\n"), Format::OpenMetrics);
    }
}
