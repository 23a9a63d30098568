//! Where samples come from: the engine asks a [`Source`] for a signal's query over a
//! range of grid points and gets one series per label set back.
//!
//! The trait is owned by its consumer (the engine) and is deliberately small, so the
//! engine can be driven by Prometheus ([`prometheus::PrometheusSource`]), by recorded
//! files replayed on the clock ([`file::FileSource`]), or by a test double.

pub mod file;
pub mod prometheus;

use std::future::Future;
use std::pin::Pin;

use crate::series::{LabeledSeries, Series};

/// Errors from fetching samples.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The range is empty, reversed or off its grid.
    #[error("bad range: start {start_ms} ms, end {end_ms} ms, step {step_ms} ms (need start <= end, step > 0, both on the step grid)")]
    BadRange {
        /// First grid point asked for.
        start_ms: i64,
        /// Last grid point asked for.
        end_ms: i64,
        /// Grid step.
        step_ms: i64,
    },
    /// The Prometheus HTTP API answered with an error or could not be reached.
    #[error("Prometheus query {query:?} over [{start_s}, {end_s}] s failed")]
    Prometheus {
        /// The PromQL.
        query: String,
        /// Start of the failing chunk, unix seconds.
        start_s: i64,
        /// End of the failing chunk, unix seconds.
        end_s: i64,
        /// What went wrong.
        #[source]
        source: prometheus_http_query::Error,
    },
    /// Prometheus answered with a result type other than a matrix.
    #[error("Prometheus query {query:?} returned a {kind}, expected a range vector (matrix)")]
    NotAMatrix {
        /// The PromQL.
        query: String,
        /// What came back.
        kind: &'static str,
    },
    /// A file named in the source settings could not be read.
    #[error("cannot read {path}")]
    ReadFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built from the settings (bad CA, header, token).
    #[error("invalid Prometheus client setting: {0}")]
    ClientSetting(String),
    /// The file source has no recording for this query.
    #[error("no recording for query {0:?}")]
    UnknownQuery(String),
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed future, so that [`Source`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Grid points `start_ms, start_ms + step_ms, ..., end_ms` (both ends included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First grid point, unix milliseconds; a multiple of `step_ms`.
    pub start_ms: i64,
    /// Last grid point, unix milliseconds; a multiple of `step_ms`, not before `start_ms`.
    pub end_ms: i64,
    /// Grid step in milliseconds; positive.
    pub step_ms: i64,
}

impl Range {
    /// A checked range.
    ///
    /// # Errors
    /// [`Error::BadRange`] unless `0 < step_ms`, `start_ms <= end_ms`, both on the grid.
    pub fn try_new(start_ms: i64, end_ms: i64, step_ms: i64) -> Result<Self> {
        let ok = step_ms > 0
            && start_ms <= end_ms
            && start_ms.rem_euclid(step_ms) == 0
            && end_ms.rem_euclid(step_ms) == 0;
        if ok {
            Ok(Self {
                start_ms,
                end_ms,
                step_ms,
            })
        } else {
            Err(Error::BadRange {
                start_ms,
                end_ms,
                step_ms,
            })
        }
    }

    /// Number of grid points.
    pub fn len(&self) -> usize {
        usize::try_from((self.end_ms - self.start_ms) / self.step_ms.max(1) + 1).unwrap_or(0)
    }

    /// Whether the range has no points (never true for a checked range).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Splits the range into consecutive ranges of at most `max_points` points.
    pub fn chunks(&self, max_points: usize) -> Vec<Range> {
        let span = self.step_ms * (max_points.max(1) as i64 - 1);
        let mut out = Vec::new();
        let mut start = self.start_ms;
        while start <= self.end_ms {
            let end = (start + span).min(self.end_ms);
            out.push(Range {
                start_ms: start,
                end_ms: end,
                step_ms: self.step_ms,
            });
            start = end + self.step_ms;
        }
        out
    }

    /// An empty grid of this range (all gaps).
    pub fn empty_series(&self) -> Series {
        Series {
            start_ms: self.start_ms,
            step_ms: self.step_ms,
            values: vec![f64::NAN; self.len()],
        }
    }

    /// The index of grid time `ts_ms`, when it is a grid point of this range.
    pub fn index_of(&self, ts_ms: i64) -> Option<usize> {
        if ts_ms < self.start_ms
            || ts_ms > self.end_ms
            || (ts_ms - self.start_ms) % self.step_ms != 0
        {
            return None;
        }
        usize::try_from((ts_ms - self.start_ms) / self.step_ms).ok()
    }
}

/// Rounds `ts_ms` down to a multiple of `step_ms`.
pub fn align_down(ts_ms: i64, step_ms: i64) -> i64 {
    ts_ms - ts_ms.rem_euclid(step_ms.max(1))
}

/// Where samples come from.
pub trait Source: Send + Sync {
    /// The values of `query` at every grid point of `range`: one series per label set,
    /// each on exactly `range`'s grid (`start_ms`, `step_ms`, `range.len()` values),
    /// `NAN` where there is no sample. Series that have no sample in the range may be
    /// left out.
    fn fetch<'a>(
        &'a self,
        query: &'a str,
        range: Range,
    ) -> BoxFuture<'a, Result<Vec<LabeledSeries>>>;

    /// The newest time (ms) at `now_ms` whose data the source holds in full: grid
    /// points after it are not read yet, because a query there would only repeat an
    /// older sample (PromQL's lookback) or miss one still being ingested. `None`
    /// when the source cannot tell, and then every point up to `now_ms` is read.
    fn frontier(&self, now_ms: i64) -> BoxFuture<'_, Option<i64>> {
        let _ = now_ms;
        Box::pin(async { None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_and_chunked() {
        assert!(Range::try_new(0, 10, 0).is_err());
        assert!(Range::try_new(10, 0, 5).is_err());
        assert!(Range::try_new(1, 10, 5).is_err());
        let r = Range::try_new(0, 99_000, 1_000).unwrap();
        assert_eq!(r.len(), 100);
        let chunks = r.chunks(30);
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks.iter().map(Range::len).sum::<usize>(), 100);
        assert_eq!(chunks[1].start_ms, chunks[0].end_ms + 1_000);
        assert_eq!(chunks[3].end_ms, 99_000);
        assert_eq!(r.index_of(5_000), Some(5));
        assert_eq!(r.index_of(5_500), None);
        assert_eq!(align_down(-1, 10), -10);
        assert_eq!(align_down(1_234, 1_000), 1_000);
    }
}
