//! Named model specs: the YAML files in `models/`, embedded in the binary so a
//! name resolves the same everywhere.

use serde::{Deserialize, Serialize};

use super::{Error, Result};

/// The bundled model specs, by name. Each file states its measured M4 score.
const BUNDLED: &[(&str, &str)] = &[
    ("auto", include_str!("../../models/auto.yaml")),
    (
        "seasonal-naive",
        include_str!("../../models/seasonal-naive.yaml"),
    ),
    (
        "seasonal-naive-weekly",
        include_str!("../../models/seasonal-naive-weekly.yaml"),
    ),
    (
        "holt-winters-damped",
        include_str!("../../models/holt-winters-damped.yaml"),
    ),
    (
        "mstl-daily-weekly",
        include_str!("../../models/mstl-daily-weekly.yaml"),
    ),
    ("linear-lags", include_str!("../../models/linear-lags.yaml")),
];

/// Default number of rolling-origin windows a backtest uses.
const fn default_windows() -> usize {
    3
}

const fn default_seasons() -> usize {
    1
}

const fn yes() -> bool {
    true
}

/// A named model spec, as configs and the CLI refer to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The model's name (`auto`, `seasonal-naive`, ...).
    pub name: String,
    /// Horizon, in steps, the quantiles are calibrated for; by default two hours of
    /// steps. Forecasts beyond it widen their intervals like a random walk.
    #[serde(default)]
    pub horizon_steps: Option<usize>,
    /// Rolling-origin windows (each `horizon_steps` long) used to score and calibrate.
    #[serde(default = "default_windows")]
    pub backtest_windows: usize,
    /// The model family and its settings.
    pub model: ModelKind,
}

/// A model family and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ModelKind {
    /// Repeat the last season(s).
    SeasonalNaive {
        /// How many past seasons are averaged (1 = the classic seasonal naive).
        #[serde(default = "default_seasons")]
        seasons: usize,
        /// Use the weekly season when confirmed, else the daily one.
        #[serde(default)]
        weekly: bool,
    },
    /// Additive Holt-Winters on the daily season.
    HoltWinters {
        /// Damped trend (recommended: an undamped trend extrapolates too far).
        #[serde(default = "yes")]
        damped: bool,
    },
    /// Multi-seasonal STL decomposition with a damped trend model.
    Mstl {
        /// Also decompose the weekly season when confirmed.
        #[serde(default = "yes")]
        weekly: bool,
    },
    /// Ridge regression on lags and Fourier terms, forecast recursively.
    LinearLags {
        /// Consecutive lags `1..=lags` (in steps).
        lags: usize,
        /// Fourier pairs per confirmed season.
        fourier: usize,
        /// Ridge penalty, relative to the number of rows.
        ridge: f64,
        /// Fit on log values when every value is positive.
        #[serde(default = "yes")]
        log: bool,
    },
    /// Per-series choice or combination of named models by backtest.
    Auto {
        /// Names of the candidate model specs.
        candidates: Vec<String>,
        /// How the scored candidates become one forecast.
        combine: Combine,
    },
}

/// How `auto` turns scored candidates into one forecast.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Combine {
    /// The candidate with the lowest backtest error.
    Best,
    /// The mean of the `top` best candidates.
    Mean {
        /// How many candidates are averaged.
        top: usize,
    },
    /// The median of the `top` best candidates.
    Median {
        /// How many candidates are combined.
        top: usize,
    },
    /// The best candidate or the mean of the `top` best, whichever backtests better.
    BestOrMean {
        /// How many candidates the mean takes.
        top: usize,
    },
}

impl ModelSpec {
    /// Looks a bundled model spec up by name.
    ///
    /// # Errors
    /// [`Error::UnknownModel`] for a name that is not known.
    pub fn by_name(name: &str) -> Result<Self> {
        let Some((_, text)) = BUNDLED.iter().find(|(n, _)| *n == name) else {
            return Err(Error::UnknownModel {
                name: name.to_string(),
                known: Self::names().join(", "),
            });
        };
        let spec = Self::from_yaml(text)?;
        if spec.name != name {
            return Err(Error::BadSpec {
                name: name.to_string(),
                message: format!("name: file is registered as {name:?}, says {:?}", spec.name),
            });
        }
        Ok(spec)
    }

    /// The names of the bundled model specs.
    pub fn names() -> Vec<&'static str> {
        BUNDLED.iter().map(|(n, _)| *n).collect()
    }

    /// Parses and validates a spec from YAML.
    ///
    /// # Errors
    /// [`Error::BadSpec`] naming the field that is wrong.
    pub fn from_yaml(text: &str) -> Result<Self> {
        let spec: Self = serde_yaml::from_str(text).map_err(|e| Error::BadSpec {
            name: "<yaml>".to_string(),
            message: e.to_string(),
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// The same spec with quantiles calibrated for `horizon_steps`.
    pub fn with_horizon(mut self, horizon_steps: usize) -> Self {
        self.horizon_steps = Some(horizon_steps.max(1));
        self
    }

    /// Checks the settings, naming the bad field.
    ///
    /// # Errors
    /// [`Error::BadSpec`] for a setting out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| {
            Err(Error::BadSpec {
                name: self.name.clone(),
                message,
            })
        };
        if self.backtest_windows > 50 {
            return bad(format!(
                "backtest_windows: must be at most 50, got {}",
                self.backtest_windows
            ));
        }
        if self.horizon_steps == Some(0) {
            return bad("horizon_steps: must be positive".to_string());
        }
        match &self.model {
            ModelKind::SeasonalNaive { seasons, .. } if *seasons == 0 || *seasons > 20 => {
                bad(format!("model.seasons: must be in 1..=20, got {seasons}"))
            }
            ModelKind::LinearLags { lags, .. } if *lags == 0 || *lags > 400 => {
                bad(format!("model.lags: must be in 1..=400, got {lags}"))
            }
            ModelKind::LinearLags { fourier, .. } if *fourier > 20 => {
                bad(format!("model.fourier: must be at most 20, got {fourier}"))
            }
            ModelKind::LinearLags { ridge, .. } if !(ridge.is_finite() && *ridge >= 0.0) => {
                bad(format!("model.ridge: must be finite and >= 0, got {ridge}"))
            }
            ModelKind::Auto { candidates, .. } if candidates.is_empty() => {
                bad("model.candidates: must name at least one model".to_string())
            }
            ModelKind::Auto { candidates, .. } if candidates.iter().any(|c| c == "auto") => {
                bad("model.candidates: `auto` cannot be its own candidate".to_string())
            }
            ModelKind::Auto {
                combine:
                    Combine::Mean { top } | Combine::Median { top } | Combine::BestOrMean { top },
                ..
            } if *top == 0 => bad("model.combine.top: must be positive".to_string()),
            _ => Ok(()),
        }
    }
}
