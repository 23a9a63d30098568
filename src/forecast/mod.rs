//! Forecasting: models behind one trait family, pure and synchronous.
//!
//! A resolved model spec ([`ModelSpec`], read once from `models/` or a file)
//! implements [`Fit`]: it turns history into a fitted model ([`Predict`]); only a
//! fitted model can forecast, so an unfitted model cannot be asked for one. Fitted
//! models take new points with [`Predict::update`] without a full refit, which is
//! what the serving loop does between scheduled refits. There is one fit: the
//! serving [`crate::plan::Tracker`], the backtest, `eval` and the tests all call
//! [`Fit::fit`] on a [`ModelSpec`].
//!
//! History is a slice of values on a regular grid; `NAN` marks a gap.
//!
//! Every model produces a point path; its quantiles come from its own
//! out-of-sample errors at each horizon step, measured by a rolling-origin
//! backtest on the history it was fitted to ([`calibrate`]). The fit ([`select`])
//! runs that backtest for each candidate (one for a single model, several for
//! `auto`) and picks or combines them per series.

pub mod accuracy;
pub mod calibrate;
pub mod ets;
pub mod linear;
pub mod mstl;
pub mod seasonal_naive;
pub mod seasonality;
pub mod select;
mod spec;

use serde::{Deserialize, Serialize};

pub use calibrate::Calibrated;
pub use spec::{Combine, Family, Member, ModelKind, ModelSpec};

/// Errors from fitting and forecasting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The history has too few finite points for the model.
    #[error("need at least {needed} observed points, got {got}")]
    TooShort {
        /// Points the model needs.
        needed: usize,
        /// Finite points given.
        got: usize,
    },
    /// A quantile outside (0, 1).
    #[error("quantile must be in (0, 1), got {0}")]
    BadQuantile(f64),
    /// A model name that is not known.
    #[error("unknown model {name:?}: must be one of {known}")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The names that exist, comma-separated.
        known: String,
    },
    /// A model spec (YAML) that does not parse or does not make sense.
    #[error("model spec {name:?}: {message}")]
    BadSpec {
        /// The spec's name or file.
        name: String,
        /// What is wrong, naming the field.
        message: String,
    },
    /// The linear solver failed (a degenerate design matrix).
    #[error("linear model could not be solved: {0}")]
    Solve(String),
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One quantile's forecast path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantilePath {
    /// The quantile level, in (0, 1).
    pub q: f64,
    /// One value per horizon step.
    pub values: Vec<f64>,
}

/// A forecast over a horizon: the mean path and one path per requested quantile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Point forecast, one value per horizon step (step 1 is one step after the last point).
    pub mean: Vec<f64>,
    /// Quantile paths, sorted by `q`; at every step, values are non-decreasing in `q`.
    pub quantiles: Vec<QuantilePath>,
}

impl Forecast {
    /// The path of quantile `q`, if it was requested.
    pub fn quantile(&self, q: f64) -> Option<&[f64]> {
        self.quantiles
            .iter()
            .find(|p| (p.q - q).abs() < 1e-9)
            .map(|p| p.values.as_slice())
    }

    /// Number of steps forecast.
    pub fn horizon(&self) -> usize {
        self.mean.len()
    }
}

/// The backtest score of one model on one series: mean absolute error of its
/// rolling-origin forecasts, and the same scaled by the seasonal-naive error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// The model's name.
    pub model: String,
    /// Mean absolute error over all backtest windows and steps.
    pub mae: f64,
    /// `mae` divided by the in-sample seasonal-naive MAE (like MASE); `NAN` when undefined.
    pub scaled: f64,
}

/// What a fitted model is and why it was chosen, for reports and `/debug` pages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    /// The fitted model's name (for `auto`, the chosen model or combination).
    pub model: String,
    /// Backtest scores of every model tried (one entry for a single model).
    pub scores: Vec<Score>,
    /// Seasonal periods (in steps) confirmed on the data.
    pub periods: Vec<usize>,
    /// Why candidate periods were not used, one line each.
    pub season_notes: Vec<String>,
    /// Number of rolling-origin windows the backtest used.
    pub backtest_windows: usize,
    /// True when the history was too short for seasonal models and a simple model was used.
    pub fell_back_to_simple: bool,
}

/// A model specification that can be fitted to history.
pub trait Fit {
    /// The fitted model.
    type Fitted: Predict;

    /// Fits the model to `history` on a regular grid of `step_ms` (`NAN` for gaps).
    ///
    /// Seasonal periods come from the step ([`candidate_periods`]) and are
    /// confirmed on the data; the quantiles are calibrated for the spec's horizon
    /// (by default two hours of steps) and extended beyond it.
    ///
    /// # Errors
    /// When the history is too short or degenerate for any model the spec allows.
    fn fit(&self, history: &[f64], step_ms: i64) -> Result<Self::Fitted>;
}

/// A fitted model: it alone can forecast.
pub trait Predict: Send + Sync {
    /// A short name of the model, for reports (`seasonal-naive(288)`).
    fn name(&self) -> String;

    /// Takes new points that follow the history without a full refit.
    fn update(&mut self, new_points: &[f64]);

    /// Forecasts `horizon` steps ahead with the given quantile levels.
    ///
    /// # Errors
    /// When a quantile is outside (0, 1).
    fn predict(&self, horizon: usize, quantiles: &[f64]) -> Result<Forecast>;

    /// What the model is and how it scored in its backtest.
    fn report(&self) -> ModelReport {
        ModelReport {
            model: self.name(),
            scores: Vec::new(),
            periods: Vec::new(),
            season_notes: Vec::new(),
            backtest_windows: 0,
            fell_back_to_simple: false,
        }
    }
}

/// A fitted point-forecast model: the part each model family implements. The
/// quantiles are added by [`Calibrated`].
pub trait PointModel: Send + Sync {
    /// A short name for reports.
    fn name(&self) -> String;
    /// Takes new points (finite: gaps are filled by the caller).
    fn update(&mut self, new_points: &[f64]);
    /// The point forecast for steps `1..=horizon`.
    fn point(&self, horizon: usize) -> Vec<f64>;
    /// Where a refit of member `member` of this model (a single model is its own
    /// member 0) may start its parameter search; `None` for models without one.
    fn warm(&self, member: usize) -> Option<Warm> {
        let _ = member;
        None
    }
}

/// A fitted model's parameters as a refit's starting point (see
/// [`PointModel::warm`]): Holt-Winters' smoothing parameters, also MSTL's trend's,
/// in the search's unbounded coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warm(pub(crate) [f64; 4]);

/// A point-model spec: fits gap-free history into a [`PointModel`].
pub trait PointFit: Send + Sync {
    /// The fitted model.
    type Model: PointModel + 'static;
    /// Fewest points the model fits on.
    fn min_len(&self) -> usize;
    /// Fits the model to gap-free `history`.
    ///
    /// # Errors
    /// When the history is shorter than [`PointFit::min_len`] or degenerate.
    fn fit_point(&self, history: &[f64]) -> Result<Self::Model>;
}

/// Seasonal periods, in steps, worth trying for a grid of `step_ms`: a day and a
/// week, when they fit in a sane number of steps.
pub fn candidate_periods(step_ms: i64) -> Vec<usize> {
    const DAY_MS: i64 = 86_400_000;
    let step_ms = step_ms.max(1);
    [DAY_MS, 7 * DAY_MS]
        .into_iter()
        .filter(|p| p % step_ms == 0 && p / step_ms >= 2 && p / step_ms <= 20_160)
        .map(|p| (p / step_ms) as usize)
        .collect()
}

/// Checks that every quantile is in (0, 1) and returns them sorted.
pub(crate) fn checked_quantiles(quantiles: &[f64]) -> Result<Vec<f64>> {
    for &q in quantiles {
        if !(q > 0.0 && q < 1.0) {
            return Err(Error::BadQuantile(q));
        }
    }
    let mut qs = quantiles.to_vec();
    qs.sort_by(f64::total_cmp);
    qs.dedup_by(|a, b| (*a - *b).abs() < 1e-12);
    Ok(qs)
}

/// A gap at least this many steps long separates a stray stub of history from
/// the series that follows it (see [`usable_start`]).
const LONG_GAP: usize = 12;

/// Where the history worth fitting starts: after leading gaps, and after any stub
/// of fewer than `horizon` (at least [`LONG_GAP`]) observed points that a gap of
/// [`LONG_GAP`] or more steps separates from the rest. A young series, or one
/// with a stray early sample, would otherwise be fitted on a long stretch that
/// interpolation made up and be calibrated from origins inside it, which shifts
/// its band away from the data.
pub(crate) fn usable_start(history: &[f64], horizon: usize) -> usize {
    let stub_max = horizon.max(LONG_GAP);
    let mut start = history.iter().position(|v| v.is_finite()).unwrap_or(0);
    loop {
        // The first long gap after `start`, and the observed points before it.
        let mut seen = 0usize;
        let mut run = 0usize;
        let mut cut = None;
        for (i, v) in history.iter().enumerate().skip(start) {
            if v.is_finite() {
                if run >= LONG_GAP {
                    cut = Some(i);
                    break;
                }
                run = 0;
                seen += 1;
                if seen >= stub_max {
                    break;
                }
            } else {
                run += 1;
            }
        }
        match cut {
            Some(i) if seen < stub_max => start = i,
            _ => return start,
        }
    }
}

/// Fills gaps (`NAN`, infinities) by linear interpolation between the observed
/// neighbours; leading gaps take the first observed value, trailing gaps the last.
/// All-gap input becomes zeros.
pub(crate) fn fill_gaps(history: &[f64]) -> Vec<f64> {
    let mut out = history.to_vec();
    let mut last: Option<usize> = None;
    for i in 0..out.len() {
        if !out[i].is_finite() {
            continue;
        }
        match last {
            Some(j) if i > j + 1 => {
                let (a, b) = (out[j], out[i]);
                for (k, slot) in out.iter_mut().enumerate().take(i).skip(j + 1) {
                    let w = (k - j) as f64 / (i - j) as f64;
                    *slot = a + (b - a) * w;
                }
            }
            None if i > 0 => {
                let v = out[i];
                out[..i].iter_mut().for_each(|s| *s = v);
            }
            _ => {}
        }
        last = Some(i);
    }
    match last {
        Some(j) => {
            let v = out[j];
            out[j + 1..].iter_mut().for_each(|s| *s = v);
        }
        None => out.iter_mut().for_each(|s| *s = 0.0),
    }
    out
}

/// The `q` quantile of sorted values (linear interpolation); 0 for no values.
pub(crate) fn empirical_quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let w = pos - lo as f64;
    sorted[lo] * (1.0 - w) + sorted[hi] * w
}

#[cfg(test)]
mod tests;
