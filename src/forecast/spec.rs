//! Model specs: the YAML files in `models/` (embedded in the binary, so a name
//! resolves the same everywhere) or a file of the same form, parsed, checked and
//! resolved once into a [`ModelSpec`]: `auto`'s candidates become their model
//! families, so fitting neither parses nor looks a name up again.

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

/// A model spec resolved for fitting: what configs, the CLI and the backtest
/// hold. Built only by [`ModelSpec::by_name`] and [`ModelSpec::from_yaml`], so its
/// settings are in range and `auto`'s candidates are known single models.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The spec's name (`auto`, `seasonal-naive`, ...).
    pub(super) name: String,
    /// Horizon, in steps, the quantiles are calibrated for; `None`: two hours of
    /// steps. Forecasts beyond it widen their intervals like a random walk.
    pub(super) horizon_steps: Option<usize>,
    /// Rolling-origin windows (each `horizon_steps` long) used to score and calibrate.
    pub(super) backtest_windows: usize,
    /// What is fitted.
    pub(super) model: ModelKind,
}

/// What a [`ModelSpec`] fits.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelKind {
    /// One model family, reported under the spec's name.
    Single(Family),
    /// Per-series choice or combination of candidates by backtest.
    Auto {
        /// The candidates, in the spec's order (ties go to the earlier one).
        candidates: Vec<Member>,
        /// How the scored candidates become one forecast.
        combine: Combine,
    },
}

/// One of `auto`'s candidates: a bundled single-model spec, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The candidate spec's name, as reports show it.
    pub name: String,
    /// Its model family and settings.
    pub family: Family,
}

/// A model family and its settings; the seasonal periods are found per series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Family {
    /// Repeat the last season(s).
    SeasonalNaive {
        /// How many past seasons are averaged (1 = the classic seasonal naive).
        seasons: usize,
        /// Use the weekly season when confirmed, else the daily one.
        weekly: bool,
    },
    /// Additive Holt-Winters on the daily season.
    HoltWinters {
        /// Damped trend (recommended: an undamped trend extrapolates too far).
        damped: bool,
    },
    /// Multi-seasonal STL decomposition with a damped trend model.
    Mstl {
        /// Also decompose the weekly season when confirmed.
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
        log: bool,
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

/// A spec file as written: `auto` names its candidates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    #[serde(default)]
    horizon_steps: Option<usize>,
    #[serde(default = "default_windows")]
    backtest_windows: usize,
    model: FileModel,
}

/// The `model` section of a spec file (see [`Family`] for the settings).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum FileModel {
    SeasonalNaive {
        #[serde(default = "default_seasons")]
        seasons: usize,
        #[serde(default)]
        weekly: bool,
    },
    HoltWinters {
        #[serde(default = "yes")]
        damped: bool,
    },
    Mstl {
        #[serde(default = "yes")]
        weekly: bool,
    },
    LinearLags {
        lags: usize,
        fourier: usize,
        ridge: f64,
        #[serde(default = "yes")]
        log: bool,
    },
    Auto {
        candidates: Vec<String>,
        combine: Combine,
    },
}

impl File {
    /// Parses a spec file (not yet checked).
    fn parse(text: &str) -> Result<Self> {
        serde_yaml::from_str(text).map_err(|e| Error::BadSpec {
            name: "<yaml>".to_string(),
            message: e.to_string(),
        })
    }

    /// The bundled file registered as `name`, parsed and checked.
    fn bundled(name: &str) -> Result<Self> {
        let Some((_, text)) = BUNDLED.iter().find(|(n, _)| *n == name) else {
            return Err(Error::UnknownModel {
                name: name.to_string(),
                known: ModelSpec::names().join(", "),
            });
        };
        let file = Self::parse(text)?;
        file.check()?;
        if file.name != name {
            return Err(Error::BadSpec {
                name: name.to_string(),
                message: format!("name: file is registered as {name:?}, says {:?}", file.name),
            });
        }
        Ok(file)
    }

    /// Checks the settings, naming the bad field.
    fn check(&self) -> Result<()> {
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
            FileModel::SeasonalNaive { seasons, .. } if *seasons == 0 || *seasons > 20 => {
                bad(format!("model.seasons: must be in 1..=20, got {seasons}"))
            }
            FileModel::LinearLags { lags, .. } if *lags == 0 || *lags > 400 => {
                bad(format!("model.lags: must be in 1..=400, got {lags}"))
            }
            FileModel::LinearLags { fourier, .. } if *fourier > 20 => {
                bad(format!("model.fourier: must be at most 20, got {fourier}"))
            }
            FileModel::LinearLags { ridge, .. } if !(ridge.is_finite() && *ridge >= 0.0) => {
                bad(format!("model.ridge: must be finite and >= 0, got {ridge}"))
            }
            FileModel::Auto { candidates, .. } if candidates.is_empty() => {
                bad("model.candidates: must name at least one model".to_string())
            }
            FileModel::Auto { candidates, .. } if candidates.iter().any(|c| c == "auto") => {
                bad("model.candidates: `auto` cannot be its own candidate".to_string())
            }
            FileModel::Auto {
                combine:
                    Combine::Mean { top } | Combine::Median { top } | Combine::BestOrMean { top },
                ..
            } if *top == 0 => bad("model.combine.top: must be positive".to_string()),
            _ => Ok(()),
        }
    }

    /// The checked file as a spec, with `auto`'s candidates looked up among the
    /// bundled specs.
    fn resolve(self) -> Result<ModelSpec> {
        let File {
            name,
            horizon_steps,
            backtest_windows,
            model,
        } = self;
        let model = match model.split() {
            Split::Single(family) => ModelKind::Single(family),
            Split::Auto(names, combine) => {
                let candidates = names
                    .into_iter()
                    .map(|c| match Self::bundled(&c)?.model.split() {
                        Split::Single(family) => Ok(Member { name: c, family }),
                        Split::Auto(..) => Err(Error::BadSpec {
                            name: name.clone(),
                            message: format!("model.candidates: {c:?} is itself an auto model"),
                        }),
                    })
                    .collect::<Result<_>>()?;
                ModelKind::Auto {
                    candidates,
                    combine,
                }
            }
        };
        Ok(ModelSpec {
            name,
            horizon_steps,
            backtest_windows,
            model,
        })
    }
}

/// A spec file's model: one family, or `auto`'s candidate names.
enum Split {
    Single(Family),
    Auto(Vec<String>, Combine),
}

impl FileModel {
    fn split(self) -> Split {
        Split::Single(match self {
            Self::SeasonalNaive { seasons, weekly } => Family::SeasonalNaive { seasons, weekly },
            Self::HoltWinters { damped } => Family::HoltWinters { damped },
            Self::Mstl { weekly } => Family::Mstl { weekly },
            Self::LinearLags {
                lags,
                fourier,
                ridge,
                log,
            } => Family::LinearLags {
                lags,
                fourier,
                ridge,
                log,
            },
            Self::Auto {
                candidates,
                combine,
            } => return Split::Auto(candidates, combine),
        })
    }
}

impl ModelSpec {
    /// Looks a bundled model spec up by name and resolves it.
    ///
    /// # Errors
    /// [`Error::UnknownModel`] for a name that is not known; [`Error::BadSpec`]
    /// when the bundled file (or a candidate it names) is wrong.
    pub fn by_name(name: &str) -> Result<Self> {
        File::bundled(name)?.resolve()
    }

    /// The names of the bundled model specs.
    pub fn names() -> Vec<&'static str> {
        BUNDLED.iter().map(|(n, _)| *n).collect()
    }

    /// Parses, checks and resolves a spec from YAML; `auto`'s candidates name
    /// bundled specs.
    ///
    /// # Errors
    /// [`Error::BadSpec`] naming the field that is wrong; [`Error::UnknownModel`]
    /// for an unknown candidate.
    pub fn from_yaml(text: &str) -> Result<Self> {
        let file = File::parse(text)?;
        file.check()?;
        file.resolve()
    }

    /// The same spec with quantiles calibrated for `horizon_steps` (at least 1).
    pub fn with_horizon(mut self, horizon_steps: usize) -> Self {
        self.horizon_steps = Some(horizon_steps.max(1));
        self
    }

    /// The spec's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The horizon, in steps, the quantiles are calibrated for, if set.
    pub fn horizon_steps(&self) -> Option<usize> {
        self.horizon_steps
    }

    /// Rolling-origin windows used to score and calibrate.
    pub fn backtest_windows(&self) -> usize {
        self.backtest_windows
    }

    /// What is fitted.
    pub fn model(&self) -> &ModelKind {
        &self.model
    }
}
