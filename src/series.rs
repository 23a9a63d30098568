//! Regular time series with explicit gaps, and the readers and writers for the
//! formats recorded metrics come in.
//!
//! Timestamps are unix milliseconds throughout. A [`Series`] sits on a regular grid
//! of `step_ms`; a missing step is stored as `f64::NAN` so models can see where the
//! gaps are. Input values are always finite: NaN only ever means "no sample".

use std::collections::BTreeMap;

/// Label names to values, ordered so that equal label sets compare and hash equal.
pub type Labels = BTreeMap<String, String>;

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
}

/// A series together with the labels that identify it.
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledSeries {
    /// The series' labels (`__name__` included when known).
    pub labels: Labels,
    /// The values.
    pub series: Series,
}
