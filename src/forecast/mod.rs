//! Forecasting: models behind one trait family, pure and synchronous.
//!
//! A model spec ([`Fit`]) turns history into a fitted model ([`Predict`]); only a
//! fitted model can forecast, so an unfitted model cannot be asked for one. Fitted
//! models take new points with [`Predict::update`] without a full refit, which is
//! what the serving loop does between scheduled refits.
//!
//! History is a slice of values on a regular grid; `NAN` marks a gap.
//!
//! NOTE(scaffold): the façade below (`ModelSpec`, [`fit`], [`Forecast`]) is the API
//! the engine and the backtester build on. The seasonal-naive model here is the
//! first real model; the others arrive behind the same API.

use serde::{Deserialize, Serialize};

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

/// A model specification that can be fitted to history.
pub trait Fit {
    /// The fitted model.
    type Fitted: Predict;

    /// Fits the model to `history` (regular grid, `NAN` for gaps).
    ///
    /// # Errors
    /// When the history is too short or degenerate for this model.
    fn fit(&self, history: &[f64]) -> Result<Self::Fitted>;
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
}

/// A named model spec, as configs and the CLI refer to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// The model's name (`auto`, `seasonal-naive`, ...).
    pub name: String,
}

impl ModelSpec {
    /// Looks a model up by name.
    ///
    /// # Errors
    /// [`Error::UnknownModel`] for a name that is not known.
    pub fn by_name(name: &str) -> Result<Self> {
        match name {
            "auto" | "seasonal-naive" => Ok(Self {
                name: name.to_string(),
            }),
            _ => Err(Error::UnknownModel {
                name: name.to_string(),
                known: "auto, seasonal-naive".to_string(),
            }),
        }
    }
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

/// Fits the model named by `spec` to `history` on a grid of `step_ms`.
///
/// # Errors
/// When the history is too short for any model.
pub fn fit(spec: &ModelSpec, history: &[f64], step_ms: i64) -> Result<Box<dyn Predict>> {
    let _ = spec;
    let period = candidate_periods(step_ms).first().copied().unwrap_or(1);
    let fitted = SeasonalNaive { period }.fit(history)?;
    Ok(Box::new(fitted))
}

/// Seasonal naive: tomorrow looks like today.
#[derive(Debug, Clone, Copy)]
pub struct SeasonalNaive {
    /// The season length in steps.
    pub period: usize,
}

/// A fitted [`SeasonalNaive`].
#[derive(Debug, Clone)]
pub struct FittedSeasonalNaive {
    period: usize,
    /// The last `period` values (gaps filled with the last observed value).
    tail: Vec<f64>,
    /// Sorted absolute-free residuals `y[t] - y[t - period]` seen in the history.
    residuals: Vec<f64>,
}

impl Fit for SeasonalNaive {
    type Fitted = FittedSeasonalNaive;

    fn fit(&self, history: &[f64]) -> Result<FittedSeasonalNaive> {
        let period = self.period.max(1);
        let filled = fill_gaps(history);
        let got = history.iter().filter(|v| v.is_finite()).count();
        if filled.len() < period || got == 0 {
            return Err(Error::TooShort {
                needed: period,
                got,
            });
        }
        let mut residuals: Vec<f64> = (period..filled.len())
            .map(|t| filled[t] - filled[t - period])
            .collect();
        residuals.sort_by(f64::total_cmp);
        Ok(FittedSeasonalNaive {
            period,
            tail: filled[filled.len() - period..].to_vec(),
            residuals,
        })
    }
}

impl Predict for FittedSeasonalNaive {
    fn name(&self) -> String {
        format!("seasonal-naive({})", self.period)
    }

    fn update(&mut self, new_points: &[f64]) {
        for &v in new_points {
            let last = self.tail.last().copied().unwrap_or(0.0);
            let v = if v.is_finite() { v } else { last };
            self.tail.remove(0);
            self.tail.push(v);
        }
    }

    fn predict(&self, horizon: usize, quantiles: &[f64]) -> Result<Forecast> {
        for &q in quantiles {
            if !(q > 0.0 && q < 1.0) {
                return Err(Error::BadQuantile(q));
            }
        }
        let mean: Vec<f64> = (0..horizon).map(|h| self.tail[h % self.period]).collect();
        let mut qs: Vec<f64> = quantiles.to_vec();
        qs.sort_by(f64::total_cmp);
        let quantiles = qs
            .into_iter()
            .map(|q| {
                let offset = empirical_quantile(&self.residuals, q);
                QuantilePath {
                    q,
                    values: mean.iter().map(|m| m + offset).collect(),
                }
            })
            .collect();
        Ok(Forecast { mean, quantiles })
    }
}

/// Replaces gaps with the last observed value (the first observed value before it).
fn fill_gaps(history: &[f64]) -> Vec<f64> {
    let first = history
        .iter()
        .copied()
        .find(|v| v.is_finite())
        .unwrap_or(0.0);
    let mut last = first;
    history
        .iter()
        .map(|&v| {
            if v.is_finite() {
                last = v;
            }
            last
        })
        .collect()
}

/// The `q` quantile of sorted values (linear interpolation); 0 for no values.
fn empirical_quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let w = pos - lo as f64;
    sorted[lo] * (1.0 - w) + sorted[hi] * w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seasonal_naive_repeats_the_last_season() {
        let y: Vec<f64> = (0..48).map(|i| (i % 24) as f64).collect();
        let f = SeasonalNaive { period: 24 }.fit(&y).unwrap();
        let fc = f.predict(30, &[0.5, 0.9]).unwrap();
        assert_eq!(fc.mean[0], 0.0);
        assert_eq!(fc.mean[25], 1.0);
        assert_eq!(fc.quantile(0.9).unwrap().len(), 30);
    }

    #[test]
    fn periods_follow_the_step() {
        assert_eq!(candidate_periods(300_000), vec![288, 2016]);
        assert_eq!(candidate_periods(3_600_000), vec![24, 168]);
    }
}
