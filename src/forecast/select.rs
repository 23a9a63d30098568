//! From a resolved spec to a fitted, calibrated model, in four steps: the
//! candidates (the spec's members resolved against the series' seasons), their
//! scores (a rolling-origin backtest on the series' own recent history), the
//! choice (the best, or a combination of the best), and the calibration of the
//! chosen forecast's quantiles on its backtest errors.

use super::calibrate::{errors, mean_abs, naive_scale, origins, Calibration};
use super::ets::HoltWinters;
use super::linear::LinearLags;
use super::mstl::Mstl;
use super::seasonal_naive::SeasonalNaive;
use super::seasonality::{self, Seasons};
use super::{
    candidate_periods, fill_gaps, Calibrated, Combine, Error, Family, Fit, Member, ModelKind,
    ModelReport, ModelSpec, PointFit, PointModel, Result, Score, Warm,
};

/// Candidates whose mean backtest error estimates the chosen model's true error.
const WINNERS_CURSE_POOL: usize = 3;

/// Largest widening of the intervals for the winner's curse. Measured on M4
/// Hourly: P90 coverage 0.868 without it, 0.894 with 1.15, 0.905 with 1.3.
const WINNERS_CURSE_MAX: f64 = 1.25;

/// A model family with its periods resolved for one series.
#[derive(Debug, Clone, PartialEq)]
pub enum Candidate {
    /// Seasonal naive (period 1: naive).
    SeasonalNaive(SeasonalNaive),
    /// Holt-Winters (period below 2: damped Holt).
    HoltWinters(HoltWinters),
    /// MSTL.
    Mstl(Mstl),
    /// Linear lags.
    Linear(LinearLags),
}

impl Candidate {
    /// Fits as [`PointFit::fit_point`], a model with a parameter search starting
    /// from `warm` (a previous fit of the same candidate).
    fn fit_warm(&self, history: &[f64], warm: Option<Warm>) -> Result<Box<dyn PointModel>> {
        Ok(match self {
            Self::HoltWinters(s) => Box::new(s.fit_from(history, warm)?),
            Self::Mstl(s) => Box::new(s.fit_from(history, warm)?),
            _ => self.fit_point(history)?,
        })
    }
}

/// Backtest forecasts of `candidate` from each origin (`None` where the fit
/// failed), and where the newest fit's parameter search ended. The origins are
/// nested (newest first): the oldest is fitted first, and each newer fit's search
/// starts where the older one's ended ([`Candidate::fit_warm`]), as the fit on the
/// whole history then starts from the newest.
fn backtest(
    candidate: &Candidate,
    filled: &[f64],
    origins: &[usize],
    horizon: usize,
) -> (Vec<Option<Vec<f64>>>, Option<Warm>) {
    let mut warm = None;
    let mut runs: Vec<Option<Vec<f64>>> = origins
        .iter()
        .rev()
        .map(|&o| {
            let fitted = candidate.fit_warm(&filled[..o], warm).ok()?;
            warm = fitted.warm(0).or(warm);
            Some(fitted.point(horizon.min(filled.len() - o)))
        })
        .collect();
    runs.reverse();
    (runs, warm)
}

impl PointFit for Candidate {
    type Model = Box<dyn PointModel>;

    fn min_len(&self) -> usize {
        match self {
            Self::SeasonalNaive(s) => s.min_len(),
            Self::HoltWinters(s) => s.min_len(),
            Self::Mstl(s) => s.min_len(),
            Self::Linear(s) => s.min_len(),
        }
    }

    fn fit_point(&self, history: &[f64]) -> Result<Box<dyn PointModel>> {
        Ok(match self {
            Self::SeasonalNaive(s) => Box::new(s.fit_point(history)?),
            Self::HoltWinters(s) => Box::new(s.fit_point(history)?),
            Self::Mstl(s) => Box::new(s.fit_point(history)?),
            Self::Linear(s) => Box::new(s.fit_point(history)?),
        })
    }
}

/// The simple models used when the history is shorter than two seasons.
fn simple_candidates() -> Vec<Candidate> {
    vec![
        Candidate::SeasonalNaive(SeasonalNaive {
            period: 1,
            seasons: 1,
        }),
        Candidate::HoltWinters(HoltWinters {
            period: 0,
            damped: true,
        }),
    ]
}

/// Resolves a model family against the confirmed seasons. `None` when the family
/// adds nothing here (a weekly naive without a weekly season, inside `auto`).
fn candidate_for(family: Family, seasons: &Seasons, strict: bool) -> Option<Candidate> {
    let daily = seasons.periods.first().copied();
    let longest = seasons.periods.last().copied();
    Some(match family {
        Family::SeasonalNaive { seasons: k, weekly } => {
            let period = if weekly {
                match (daily, longest) {
                    (Some(d), Some(l)) if l > d => l,
                    _ if strict => return None,
                    _ => daily.unwrap_or(1),
                }
            } else {
                daily.unwrap_or(1)
            };
            Candidate::SeasonalNaive(SeasonalNaive { period, seasons: k })
        }
        Family::HoltWinters { damped } => Candidate::HoltWinters(HoltWinters {
            period: daily.unwrap_or(0),
            damped,
        }),
        Family::Mstl { weekly } => Candidate::Mstl(Mstl {
            periods: if weekly {
                seasons.periods.clone()
            } else {
                daily.into_iter().collect()
            },
        }),
        Family::LinearLags {
            lags,
            fourier,
            ridge,
            log,
        } => Candidate::Linear(LinearLags {
            lags,
            periods: seasons.periods.clone(),
            fourier,
            ridge,
            log,
        }),
    })
}

/// Calibration horizon when the spec sets none: two hours of steps, at least 6.
fn default_horizon(step_ms: i64) -> usize {
    (7_200_000 / step_ms.max(1)).clamp(6, 288) as usize
}

/// Several fitted models averaged (or their median) step by step.
struct Combination {
    members: Vec<Box<dyn PointModel>>,
    median: bool,
}

fn combine_paths(paths: &[Vec<f64>], median: bool) -> Vec<f64> {
    let h = paths.iter().map(Vec::len).min().unwrap_or(0);
    let mut col = Vec::with_capacity(paths.len());
    (0..h)
        .map(|i| {
            col.clear();
            col.extend(paths.iter().map(|p| p[i]));
            if median {
                col.sort_by(f64::total_cmp);
                let k = col.len();
                if k % 2 == 1 {
                    col[k / 2]
                } else {
                    0.5 * (col[k / 2 - 1] + col[k / 2])
                }
            } else {
                col.iter().sum::<f64>() / col.len() as f64
            }
        })
        .collect()
}

impl PointModel for Combination {
    fn name(&self) -> String {
        let names: Vec<String> = self.members.iter().map(|m| m.name()).collect();
        format!(
            "{}({})",
            if self.median { "median" } else { "mean" },
            names.join(", ")
        )
    }

    fn update(&mut self, new_points: &[f64]) {
        for m in &mut self.members {
            m.update(new_points);
        }
    }

    fn point(&self, horizon: usize) -> Vec<f64> {
        let paths: Vec<Vec<f64>> = self.members.iter().map(|m| m.point(horizon)).collect();
        combine_paths(&paths, self.median)
    }

    fn warm(&self, member: usize) -> Option<Warm> {
        self.members.get(member)?.warm(0)
    }
}

/// One scored candidate.
struct Scored {
    name: String,
    candidate: Candidate,
    /// Its backtest forecast from each window start.
    forecasts: Vec<Vec<f64>>,
    /// Where its newest backtest fit's parameter search ended.
    warm: Option<Warm>,
    mae: f64,
}

/// The candidates scored on the same backtest windows, best first.
struct Scores {
    /// Window starts (newest first); empty when the history is too short to backtest.
    starts: Vec<usize>,
    /// Candidates by backtest error; ties keep the spec's order.
    ranked: Vec<Scored>,
}

/// The fitted model `combine` chose from the ranking.
struct Chosen {
    model: Box<dyn PointModel>,
    /// The members' places in the ranking.
    members: Vec<usize>,
    /// Step-wise median (else mean) of several members.
    median: bool,
}

/// The history a fit works on: gaps filled, seasons confirmed.
struct Prepared<'a> {
    /// The usable history, gaps as `NAN` (errors are measured against it).
    history: &'a [f64],
    /// The same with gaps filled (models fit on it).
    filled: Vec<f64>,
    seasons: Seasons,
    /// Steps the quantiles are calibrated for.
    horizon: usize,
}

/// A resolved spec fits like this: the candidates it names are resolved against
/// the series' seasons, scored by a rolling-origin backtest, chosen or combined,
/// refitted on the whole history, and given quantiles from the chosen forecast's
/// own backtest errors. A single model is `auto` with one candidate. This is the
/// fit the [`crate::plan::Tracker`] serves with.
impl Fit for ModelSpec {
    type Fitted = Calibrated;

    fn fit(&self, history: &[f64], step_ms: i64) -> Result<Calibrated> {
        self.select(history, step_ms).map(|(fitted, _)| fitted)
    }
}

/// Refits that reuse a selection before `auto` selects again from every candidate
/// regardless of the evidence (at hourly refits, six hours). On the dev traces'
/// backtest 24 lost 1.8 points of the matched-cost shortfall reduction (54.2 % to
/// 52.4 %); 6 keeps it (54.1 %).
pub const RESELECT_AFTER: u32 = 6;

/// A reused selection whose forecasts since it was made (two or more, pooled)
/// erred by more than this multiple of the error its backtest had at the same
/// steps is evidence that the series changed: `auto` selects again (see also
/// [`RESELECT_JUMP`]).
pub const RESELECT_DRIFT: f64 = 1.5;

/// A reused selection whose first forecast since selection erred by more than
/// this multiple of what its backtest expected is selected again at once; from the
/// second on, the errors of all its forecasts since selection are pooled and
/// judged against [`RESELECT_DRIFT`]. One forecast's error is mostly one level
/// offset: on a series that did not change it exceeds 1.5× its expectation about
/// one time in four (a half-normal draw above 1.5× its mean), which re-selected a
/// quarter of all series at every refit; above 3× it does so about one time in 60.
pub const RESELECT_JUMP: f64 = 3.0;

/// Fitted points since the last fit needed to judge drift; with fewer the
/// selection is reused as it is.
const MIN_EVIDENCE: usize = 6;

/// What a full `auto` selection chose, kept between refits
/// ([`ModelSpec::refit`]): the chosen members, the seasons they were resolved
/// against, and what their forecast was expected to err.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// The chosen members, best first, with their report names.
    members: Vec<(String, Candidate)>,
    /// Step-wise median (else mean) of several members.
    median: bool,
    /// Confirmed periods at selection (shortest first).
    periods: Vec<usize>,
    /// Mean absolute backtest error of the chosen forecast at steps `1..`, at selection.
    expected: Vec<f32>,
    /// The chosen forecast's mean path from the last fit (selection or reuse).
    path: Vec<f32>,
    /// Refits that reused it since.
    refits: u32,
    /// The evidence pooled since selection: the summed absolute errors of its
    /// forecasts against what arrived, the summed errors its backtest expected at
    /// the same steps, and the forecasts judged.
    pooled: (f64, f64, u32),
}

impl Selection {
    /// How many refits have reused this selection.
    pub fn refits(&self) -> u32 {
        self.refits
    }

    /// The evidence of the last fit's forecast: its summed absolute error against
    /// the newest `since` points of `history` (the points that arrived since that
    /// fit) and the summed error the backtest expected at the same steps; `None`
    /// with fewer than [`MIN_EVIDENCE`] observed points or no expected error.
    fn evidence(&self, history: &[f64], since: usize) -> Option<(f64, f64)> {
        let k = since
            .min(self.path.len())
            .min(self.expected.len())
            .min(history.len());
        if k < MIN_EVIDENCE {
            return None;
        }
        let new = &history[history.len() - since.min(history.len())..];
        let (err, expected, n) = new
            .iter()
            .zip(&self.path)
            .zip(&self.expected)
            .take(k)
            .filter(|((y, _), e)| y.is_finite() && e.is_finite())
            .fold((0.0, 0.0, 0usize), |(s, x, n), ((y, f), e)| {
                (s + (y - f64::from(*f)).abs(), x + f64::from(*e), n + 1)
            });
        (n >= MIN_EVIDENCE && expected > 0.0).then_some((err, expected))
    }

    /// The last fit's forecast error over the error its backtest expected (see
    /// [`Selection::evidence`]); `None` without enough evidence.
    #[cfg(test)]
    fn drift(&self, history: &[f64], since: usize) -> Option<f64> {
        self.evidence(history, since).map(|(e, x)| e / x)
    }

    /// Adds the last fit's evidence to what was pooled since selection and says
    /// whether the selection drifted: its first forecast judged erred by more than
    /// [`RESELECT_JUMP`] times what was expected, or the forecasts judged so far
    /// (two or more), pooled, by more than [`RESELECT_DRIFT`] times.
    fn pool(&mut self, history: &[f64], since: usize) -> bool {
        if let Some((e, x)) = self.evidence(history, since) {
            self.pooled.0 += e;
            self.pooled.1 += x;
            self.pooled.2 += 1;
        }
        let (e, x, judged) = self.pooled;
        let ratio = if x > 0.0 { e / x } else { 0.0 };
        match judged {
            0 => false,
            1 => ratio > RESELECT_JUMP,
            _ => ratio > RESELECT_DRIFT,
        }
    }
}

/// What [`ModelSpec::refit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refit {
    /// Every candidate scored and a choice made (no selection yet, a single
    /// model, or the reuse limit reached).
    Selected,
    /// The previous choice refitted: only its members fitted, once each.
    Reused,
    /// The previous choice's error drifted past [`RESELECT_DRIFT`]: selected again.
    Drifted,
}

/// The mean path of `model` over `horizon` steps, as `f32`.
fn path_of(model: &dyn PointModel, horizon: usize) -> Vec<f32> {
    model.point(horizon).into_iter().map(|v| v as f32).collect()
}

impl ModelSpec {
    /// The full fit ([`Fit::fit`]) and, for `auto`, what it chose, for
    /// [`ModelSpec::refit`] to reuse.
    ///
    /// # Errors
    /// As [`Fit::fit`].
    pub fn select(&self, history: &[f64], step_ms: i64) -> Result<(Calibrated, Option<Selection>)> {
        let p = prepare(self, history, step_ms)?;
        let cands = candidates(self, &p.seasons, p.filled.len())?;
        let scores = score(cands, &p, self.backtest_windows)?;
        let chosen = choose(&scores, self.combine(), &p)?;
        let calibration = calibrate(&scores, &chosen, &p);
        let scale = naive_scale(&p.filled, p.seasons.periods.first().copied().unwrap_or(1));
        let selection = (matches!(self.model, ModelKind::Auto { .. })
            && !p.seasons.too_short
            && !scores.starts.is_empty())
        .then(|| {
            let fc = combined_forecasts(&scores, &chosen.members, chosen.median);
            let errs = errors(p.history, &scores.starts, &fc);
            let expected = (0..p.horizon)
                .map(|h| {
                    let (s, n) = errs
                        .iter()
                        .filter_map(|w| w.get(h))
                        .filter(|e| e.is_finite())
                        .fold((0.0, 0usize), |(s, n), e| (s + e.abs(), n + 1));
                    if n == 0 {
                        f32::NAN
                    } else {
                        (s / n as f64) as f32
                    }
                })
                .collect();
            Selection {
                members: chosen
                    .members
                    .iter()
                    .map(|&i| {
                        (
                            scores.ranked[i].name.clone(),
                            scores.ranked[i].candidate.clone(),
                        )
                    })
                    .collect(),
                median: chosen.median,
                periods: p.seasons.periods.clone(),
                expected,
                path: path_of(chosen.model.as_ref(), p.horizon),
                refits: 0,
                pooled: (0.0, 0.0, 0),
            }
        });
        let fitted = finish(&p, &scores, chosen, calibration, scale);
        Ok((fitted, selection))
    }

    /// A refit that reuses `previous`, the last selection with the model fitted
    /// last, when the evidence allows: only the selection's members are fitted, once
    /// each on the whole history and on the seasons confirmed at selection (a
    /// parameter search starting from the member's last fit), and the quantile
    /// calibration of the last fit is kept. `since` is the number of fitted points
    /// that arrived since that fit: the evidence is how far the last fit's forecast
    /// was from them. `auto` selects again from every candidate (as
    /// [`ModelSpec::select`]) when there is no selection, after [`RESELECT_AFTER`]
    /// reuses, or when the errors exceed what the selection's backtest had at the
    /// same steps: the first forecast judged by [`RESELECT_JUMP`] times, the
    /// forecasts since selection pooled by [`RESELECT_DRIFT`] times. Returns the
    /// fitted model, the selection to keep, and which it was.
    ///
    /// # Errors
    /// As [`Fit::fit`].
    pub fn refit(
        &self,
        history: &[f64],
        step_ms: i64,
        previous: Option<(Selection, &Calibrated)>,
        since: usize,
    ) -> Result<(Calibrated, Option<Selection>, Refit)> {
        let Some((mut sel, last)) = previous.filter(|(s, _)| s.refits < RESELECT_AFTER) else {
            let (fitted, sel) = self.select(history, step_ms)?;
            return Ok((fitted, sel, Refit::Selected));
        };
        if sel.pool(history, since) {
            let (fitted, sel) = self.select(history, step_ms)?;
            return Ok((fitted, sel, Refit::Drifted));
        }
        match self.reuse(history, step_ms, &mut sel, last) {
            Some(fitted) => {
                sel.refits += 1;
                Ok((fitted, Some(sel), Refit::Reused))
            }
            // The members cannot be fitted here any more: select again.
            None => {
                let (fitted, sel) = self.select(history, step_ms)?;
                Ok((fitted, sel, Refit::Selected))
            }
        }
    }

    /// `sel`'s members fitted once each on the whole history, with `last`'s
    /// calibration; `None` when one cannot be fitted here any more. Updates the
    /// selection's forecast path.
    fn reuse(
        &self,
        history: &[f64],
        step_ms: i64,
        sel: &mut Selection,
        last: &Calibrated,
    ) -> Option<Calibrated> {
        // The seasons are the selection's: not confirmed again.
        let seasons = Seasons {
            periods: sel.periods.clone(),
            notes: vec!["seasons and members as selected before; refitted".to_string()],
            too_short: false,
        };
        let p = prepare_with(self, history, step_ms, |_| seasons).ok()?;
        // Each member's parameter search starts where its last fit ended.
        let previous = last.point_model();
        let mut models: Vec<Box<dyn PointModel>> = Vec::with_capacity(sel.members.len());
        for (i, (_, c)) in sel.members.iter().enumerate() {
            if c.min_len() > p.filled.len() {
                return None;
            }
            models.push(c.fit_warm(&p.filled, previous.warm(i)).ok()?);
        }
        let model: Box<dyn PointModel> = if models.len() == 1 {
            models.swap_remove(0)
        } else {
            Box::new(Combination {
                members: models,
                median: sel.median,
            })
        };
        sel.path = path_of(model.as_ref(), p.horizon);
        let before = last.report_ref();
        let report = ModelReport {
            model: model.name(),
            scores: before.scores.clone(),
            periods: p.seasons.periods.clone(),
            season_notes: p.seasons.notes.clone(),
            backtest_windows: before.backtest_windows,
            fell_back_to_simple: false,
        };
        let non_negative = p
            .history
            .iter()
            .filter(|v| v.is_finite())
            .all(|&v| v >= 0.0);
        Some(Calibrated::new(
            model,
            last.calibration().clone(),
            report,
            non_negative,
        ))
    }
}

/// The fitted model with its report.
fn finish(
    p: &Prepared,
    scores: &Scores,
    chosen: Chosen,
    calibration: Calibration,
    scale: f64,
) -> Calibrated {
    let report = ModelReport {
        model: chosen.model.name(),
        scores: scores
            .ranked
            .iter()
            .map(|s| Score {
                model: s.name.clone(),
                mae: s.mae,
                scaled: s.mae / scale,
            })
            .collect(),
        periods: p.seasons.periods.clone(),
        season_notes: p.seasons.notes.clone(),
        backtest_windows: scores.starts.len(),
        fell_back_to_simple: p.seasons.too_short,
    };
    let non_negative = p
        .history
        .iter()
        .filter(|v| v.is_finite())
        .all(|&v| v >= 0.0);
    Calibrated::new(chosen.model, calibration, report, non_negative)
}

impl ModelSpec {
    /// The members scored: a single model is its own one candidate.
    fn members(&self) -> Vec<Member> {
        match &self.model {
            ModelKind::Single(family) => vec![Member {
                name: self.name.clone(),
                family: *family,
            }],
            ModelKind::Auto { candidates, .. } => candidates.clone(),
        }
    }

    /// How the scored candidates become one forecast.
    fn combine(&self) -> Combine {
        match &self.model {
            ModelKind::Single(_) => Combine::Best,
            ModelKind::Auto { combine, .. } => *combine,
        }
    }
}

/// Cuts the history to its usable part, fills its gaps and confirms its seasons.
///
/// # Errors
/// When fewer than two points are observed.
fn prepare<'a>(spec: &ModelSpec, history: &'a [f64], step_ms: i64) -> Result<Prepared<'a>> {
    prepare_with(spec, history, step_ms, |filled| {
        seasonality::confirm(filled, &candidate_periods(step_ms))
    })
}

/// As [`prepare`], with the seasons from `seasons` (given the filled history).
fn prepare_with<'a>(
    spec: &ModelSpec,
    history: &'a [f64],
    step_ms: i64,
    seasons: impl FnOnce(&[f64]) -> Seasons,
) -> Result<Prepared<'a>> {
    let horizon = spec
        .horizon_steps
        .unwrap_or_else(|| default_horizon(step_ms));
    let history = &history[super::usable_start(history, horizon)..];
    let got = history.iter().filter(|v| v.is_finite()).count();
    if got < 2 {
        return Err(Error::TooShort { needed: 2, got });
    }
    let filled = fill_gaps(history);
    let seasons = seasons(&filled);
    Ok(Prepared {
        history,
        filled,
        seasons,
        horizon,
    })
}

/// The candidates worth scoring on `n` points with these seasons, with their
/// report names: the spec's members resolved against the seasons (duplicates
/// dropped), or the simple models when the history is shorter than two seasons.
///
/// # Errors
/// When not even a simple model fits on `n` points.
fn candidates(spec: &ModelSpec, seasons: &Seasons, n: usize) -> Result<Vec<(String, Candidate)>> {
    let auto = matches!(spec.model, ModelKind::Auto { .. });
    let members = spec.members();
    let mut cands: Vec<(String, Candidate)> = Vec::new();
    if seasons.too_short {
        for c in simple_candidates() {
            cands.push((c.fit_point_name(), c));
        }
        if !auto {
            // A single model keeps its own family when it can run without a season.
            if let Some(m) = members.first() {
                if let Some(c @ (Candidate::HoltWinters(_) | Candidate::Linear(_))) =
                    candidate_for(m.family, seasons, false)
                {
                    if c.min_len() <= n {
                        cands = vec![(m.name.clone(), c)];
                    }
                }
            }
            cands.truncate(1);
        }
    } else {
        for m in members {
            if let Some(c) = candidate_for(m.family, seasons, auto) {
                if !cands.iter().any(|(_, o)| *o == c) {
                    cands.push((m.name, c));
                }
            }
        }
    }
    cands.retain(|(_, c)| c.min_len() <= n);
    if cands.is_empty() {
        cands = simple_candidates()
            .into_iter()
            .filter(|c| c.min_len() <= n)
            .map(|c| (c.fit_point_name(), c))
            .collect();
    }
    if cands.is_empty() {
        return Err(Error::TooShort { needed: 3, got: n });
    }
    Ok(cands)
}

/// Scores every candidate by its backtest error over up to `windows` windows.
///
/// All candidates are scored on the same windows: as many as the best-placed
/// candidate can use, dropping those that cannot use them all. An origin whose
/// last point interpolation made up would score a fit on invented data: only
/// origins right after an observed point count.
///
/// # Errors
/// When no candidate could be fitted at every window.
fn score(cands: Vec<(String, Candidate)>, p: &Prepared, windows: usize) -> Result<Scores> {
    let mut cands = cands;
    let all: Vec<usize> = origins(p.filled.len(), p.horizon, windows, 1)
        .into_iter()
        .filter(|&o| p.history[o - 1].is_finite())
        .collect();
    let usable = |c: &Candidate| all.iter().take_while(|&&o| o >= c.min_len()).count();
    let w = cands.iter().map(|(_, c)| usable(c)).max().unwrap_or(0);
    let starts: Vec<usize> = all[..w].to_vec();
    if w > 0 {
        cands.retain(|(_, c)| usable(c) >= w);
    }
    let mut ranked: Vec<Scored> = cands
        .into_iter()
        .filter_map(|(name, candidate)| {
            let (runs, warm) = backtest(&candidate, &p.filled, &starts, p.horizon);
            let forecasts: Option<Vec<Vec<f64>>> = runs.into_iter().collect();
            let forecasts = forecasts?;
            let mae = mean_abs(&errors(p.history, &starts, &forecasts));
            Some(Scored {
                name,
                candidate,
                forecasts,
                warm,
                mae: if w == 0 { f64::INFINITY } else { mae },
            })
        })
        .collect();
    if ranked.is_empty() {
        return Err(Error::Solve(
            "no candidate model could be fitted to the backtest windows".to_string(),
        ));
    }
    // Stable sort: ties keep the spec's order, so the simplest listed model wins.
    ranked.sort_by(|a, b| a.mae.total_cmp(&b.mae));
    Ok(Scores { starts, ranked })
}

/// The step-wise combination of the ranked members' backtest forecasts, per window.
fn combined_forecasts(scores: &Scores, members: &[usize], median: bool) -> Vec<Vec<f64>> {
    (0..scores.starts.len())
        .map(|i| {
            let paths: Vec<Vec<f64>> = members
                .iter()
                .map(|&j| scores.ranked[j].forecasts[i].clone())
                .collect();
            combine_paths(&paths, median)
        })
        .collect()
}

/// Picks the best candidate or a combination of the best, as `combine` says, and
/// fits the members on the whole history; a member that fails is left out, and
/// when all fail the next candidate down the ranking that fits is used alone.
///
/// # Errors
/// When no candidate can be fitted on the whole history.
fn choose(scores: &Scores, combine: Combine, p: &Prepared) -> Result<Chosen> {
    let ranked = &scores.ranked;
    let w = scores.starts.len();
    let top = |k: usize| k.clamp(1, ranked.len());
    let (chosen, median): (usize, bool) = match combine {
        Combine::Best => (1, false),
        Combine::Mean { top: k } => (top(k), false),
        Combine::Median { top: k } => (top(k), true),
        Combine::BestOrMean { top: k } => {
            let k = top(k);
            if k > 1 && w > 0 {
                let best: Vec<usize> = (0..k).collect();
                let mean_fc = combined_forecasts(scores, &best, false);
                let mae = mean_abs(&errors(p.history, &scores.starts, &mean_fc));
                if mae < ranked[0].mae {
                    (k, false)
                } else {
                    (1, false)
                }
            } else {
                (1, false)
            }
        }
    };

    let mut models: Vec<Box<dyn PointModel>> = Vec::with_capacity(chosen);
    let mut members = Vec::with_capacity(chosen);
    for (i, s) in ranked.iter().enumerate().take(chosen) {
        if let Ok(m) = s.candidate.fit_warm(&p.filled, s.warm) {
            models.push(m);
            members.push(i);
        }
    }
    if models.is_empty() {
        // Fall back down the ranking.
        for (i, s) in ranked.iter().enumerate().skip(chosen) {
            if let Ok(m) = s.candidate.fit_warm(&p.filled, s.warm) {
                models.push(m);
                members.push(i);
                break;
            }
        }
    }
    if models.is_empty() {
        return Err(Error::Solve(
            "no candidate model could be fitted".to_string(),
        ));
    }
    let model: Box<dyn PointModel> = if models.len() == 1 {
        models.swap_remove(0)
    } else {
        Box::new(Combination {
            members: models,
            median,
        })
    };
    Ok(Chosen {
        model,
        members,
        median,
    })
}

/// The quantile calibration of the chosen model, from its own backtest errors.
///
/// Winner's curse: the chosen model's backtest error is the smallest of several
/// noisy estimates, so it understates the error to come. The errors are widened
/// by how much the best few candidates' typical error exceeds it, within a bound.
fn calibrate(scores: &Scores, chosen: &Chosen, p: &Prepared) -> Calibration {
    let combined_fc = combined_forecasts(scores, &chosen.members, chosen.median);
    let mut errs = errors(p.history, &scores.starts, &combined_fc);
    let ranked = &scores.ranked;
    if !scores.starts.is_empty() && ranked.len() > 1 {
        let k = ranked.len().min(WINNERS_CURSE_POOL);
        let pool = ranked[..k].iter().map(|s| s.mae).sum::<f64>() / k as f64;
        let own = mean_abs(&errs);
        if own > 0.0 && pool.is_finite() {
            let factor = (pool / own).clamp(1.0, WINNERS_CURSE_MAX);
            errs.iter_mut().flatten().for_each(|e| *e *= factor);
        }
    }
    Calibration::from_errors(&errs, p.horizon, naive_scale(&p.filled, 1))
}

impl Candidate {
    /// A report name for the built-in simple models.
    fn fit_point_name(&self) -> String {
        match self {
            Self::SeasonalNaive(s) if s.period == 1 => "naive".to_string(),
            Self::SeasonalNaive(_) => "seasonal-naive".to_string(),
            Self::HoltWinters(h) if h.period < 2 => "holt-damped".to_string(),
            Self::HoltWinters(_) => "holt-winters-damped".to_string(),
            Self::Mstl(_) => "mstl".to_string(),
            Self::Linear(_) => "linear-lags".to_string(),
        }
    }
}

#[cfg(test)]
mod reuse_tests {
    use super::*;
    use crate::forecast::Predict;

    const HOUR: i64 = 3_600_000;

    /// An hourly series with a daily shape and a little deterministic noise.
    fn daily(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let phase = (i % 24) as f64 / 24.0 * std::f64::consts::TAU;
                let noise = ((i * 7919) % 13) as f64 / 13.0 - 0.5;
                100.0 + 30.0 * phase.sin() + 2.0 * noise
            })
            .collect()
    }

    #[test]
    fn auto_reuses_its_selection_until_the_limit() {
        let spec = ModelSpec::by_name("auto").unwrap();
        let h = daily(21 * 24);
        let (first, sel, how) = spec.refit(&h, HOUR, None, 0).unwrap();
        assert_eq!(how, Refit::Selected);
        let sel = sel.expect("auto keeps its selection");
        assert_eq!(sel.refits(), 0);
        assert_eq!(sel.path.len(), sel.expected.len());
        let longer = daily(21 * 24 + 8);
        let (again, sel2, how) = spec
            .refit(&longer, HOUR, Some((sel.clone(), &first)), 8)
            .unwrap();
        assert_eq!(how, Refit::Reused);
        let sel2 = sel2.unwrap();
        assert_eq!(sel2.refits(), 1);
        assert_eq!(sel2.members, sel.members, "the same members, refitted");
        assert_ne!(sel2.path, sel.path, "the path is the new fit's");
        assert_eq!(again.name(), first.name());
        // The new fit forecasts from the new end: its path follows the shape on.
        let want = daily(21 * 24 + 8 + 6);
        let got = again.predict(6, &[0.5]).unwrap().mean;
        for (g, w) in got.iter().zip(&want[21 * 24 + 8..]) {
            assert!((g - w).abs() < 5.0, "{g} vs {w}");
        }
        // At the limit every candidate is scored again.
        let mut old = sel2;
        old.refits = RESELECT_AFTER;
        let (_, fresh, how) = spec.refit(&longer, HOUR, Some((old, &again)), 8).unwrap();
        assert_eq!(how, Refit::Selected);
        assert_eq!(fresh.unwrap().refits(), 0);
    }

    #[test]
    fn auto_selects_again_when_the_error_drifts() {
        let spec = ModelSpec::by_name("auto").unwrap();
        let h = daily(21 * 24);
        let (first, sel, _) = spec.refit(&h, HOUR, None, 0).unwrap();
        let sel = sel.unwrap();
        // Points as forecast are no evidence of drift; too few points are none at all.
        let calm = daily(21 * 24 + 8);
        assert!(sel.drift(&calm, 8).unwrap() < RESELECT_DRIFT);
        let (_, _, how) = spec
            .refit(&calm, HOUR, Some((sel.clone(), &first)), 8)
            .unwrap();
        assert_eq!(how, Refit::Reused);
        // The 8 points since the fit jump away from what it forecast.
        let mut jump = calm.clone();
        let n = jump.len();
        jump[n - 8..].iter_mut().for_each(|v| *v += 80.0);
        assert!(sel.drift(&jump, 8).unwrap() > RESELECT_JUMP);
        assert_eq!(sel.drift(&jump, MIN_EVIDENCE - 1), None);
        let (_, fresh, how) = spec.refit(&jump, HOUR, Some((sel, &first)), 8).unwrap();
        assert_eq!(how, Refit::Drifted);
        assert_eq!(fresh.unwrap().refits(), 0);
    }

    #[test]
    fn a_moderate_excess_is_judged_on_the_pooled_forecasts() {
        let spec = ModelSpec::by_name("auto").unwrap();
        let h = daily(21 * 24);
        let (first, sel, _) = spec.refit(&h, HOUR, None, 0).unwrap();
        let sel = sel.unwrap();
        // An offset that puts one forecast's error between the two thresholds.
        let shifted = |by: f64| {
            let mut v = daily(21 * 24 + 8);
            let n = v.len();
            v[n - 8..].iter_mut().for_each(|x| *x += by);
            v
        };
        let by = (1..400)
            .map(|i| f64::from(i) * 0.05)
            .find(|&by| {
                let r = sel.drift(&shifted(by), 8).unwrap();
                r > RESELECT_DRIFT * 1.2 && r < RESELECT_JUMP * 0.8
            })
            .expect("an offset between the thresholds");
        let moved = shifted(by);
        // The first forecast judged: one offset is no proof, the selection is reused.
        let (again, kept, how) = spec
            .refit(&moved, HOUR, Some((sel.clone(), &first)), 8)
            .unwrap();
        assert_eq!(how, Refit::Reused);
        let kept = kept.unwrap();
        assert_eq!(kept.pooled.2, 1);
        // A second forecast as far off: pooled, the two are drift.
        let mut second = moved.clone();
        second.extend(
            daily(21 * 24 + 16)[21 * 24 + 8..]
                .iter()
                .map(|v| v + 2.0 * by),
        );
        let (_, fresh, how) = spec.refit(&second, HOUR, Some((kept, &again)), 8).unwrap();
        assert_eq!(how, Refit::Drifted);
        assert_eq!(fresh.unwrap().pooled, (0.0, 0.0, 0));
    }

    #[test]
    fn a_single_model_has_no_selection_to_reuse() {
        let spec = ModelSpec::by_name("holt-winters-damped").unwrap();
        let h = daily(21 * 24);
        let (fitted, sel, how) = spec.refit(&h, HOUR, None, 0).unwrap();
        assert_eq!((sel, how), (None, Refit::Selected));
        // The same fit as `Fit::fit`.
        let plain = spec.fit(&h, HOUR).unwrap();
        assert_eq!(
            fitted.predict(6, &[0.9]).unwrap(),
            plain.predict(6, &[0.9]).unwrap()
        );
    }
}
