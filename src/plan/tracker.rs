//! One series' forecasting state, shared by the serving engine and the backtester.
//!
//! A [`Tracker`] keeps a bounded history on the series' grid, a fitted model that it
//! refits on schedule and updates in between, and turns the latest forecast into the
//! value an HPA should see. It is synchronous and takes time as an argument, so the
//! engine drives it on the wall clock and the backtester on a simulated one: the
//! backtest therefore measures the code that serves production.
//!
//! At scale (tens of thousands of series) two settings keep it cheap:
//! [`TrackerSettings::fit_steps`] fits on means of several grid points, packed
//! 16 bits a point (a week of 1-minute points is 80 KiB as `f64`, 4.3 KiB as
//! packed 5-minute means, see [`super::packed`]), and [`Tracker::with_grid`] places refits on the absolute grid with a
//! per-series offset, so a refit interval's fits are spread over its steps instead
//! of all landing in one cycle, and replicas refit at the same grid times.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::forecast::select::{Refit, Selection};
use crate::forecast::{Calibrated, Forecast, ModelSpec, Predict};

use super::packed::{Packed, BLOCK};

/// How a tracker's refits went (see [`ModelSpec::refit`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefitCounts {
    /// Every candidate scored and a choice made.
    pub selected: u64,
    /// The previous choice refitted alone.
    pub reused: u64,
    /// Selected again because the reused choice's error drifted.
    pub drifted: u64,
}

use super::peak::PeakCalibration;
use super::{served_value, ServePolicy};

/// How a [`Tracker`] fits, refits and serves.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerSettings {
    /// The model to fit.
    pub spec: ModelSpec,
    /// The series' grid step in milliseconds.
    pub step_ms: i64,
    /// How the forecast becomes the served value.
    pub policy: ServePolicy,
    /// How many grid points of history to keep (the history window / step).
    pub history_steps: usize,
    /// Refit after this many new grid points; updates only in between.
    pub refit_every_steps: usize,
    /// Fewer observed points than this: warming, serve the latest observation.
    pub min_history_steps: usize,
    /// Grid points averaged into one fitted point; 1 fits the grid as is. Above 1 the
    /// history is kept as packed means (16 bits a point, [`super::packed`]), the model fits and forecasts on the coarser
    /// grid (its forecast paths are in fitted points), and the reactive floor still
    /// takes the newest grid point.
    pub fit_steps: usize,
    /// Place refits on the absolute grid at a per-series offset (the engine passes a
    /// hash of the labels to [`Tracker::with_grid`]): the refits of many series spread
    /// over the refit interval, and replicas refit at the same grid times. Off: refit
    /// `refit_every_steps` after the previous fit.
    pub spread_refits: bool,
}

/// The forecast interval reported beside the served quantile: the 10% and 90%
/// quantiles (a central 80% band). Fixed rather than mirrored around the served
/// quantile, so that the band means the same for every signal on a dashboard.
pub const INTERVAL: (f64, f64) = (0.1, 0.9);

/// What a [`Tracker`] decided at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The value to serve; `None` only when nothing has been observed at all.
    pub value: Option<f64>,
    /// True while there is not enough history (or no model could be fitted).
    pub warming: bool,
    /// Name of the fitted model, or `last-value` while warming.
    pub model: String,
    /// The forecast over the lead time, when there is a model (on the fitted grid):
    /// the mean, the served quantile and the [`INTERVAL`] quantiles.
    pub forecast: Option<Forecast>,
    /// The latest observed value.
    pub latest: Option<f64>,
    /// When the model was last fitted (the `now_ms` of that decision).
    pub last_fit_ms: Option<i64>,
    /// Why the last fit failed, if it did.
    pub fit_error: Option<String>,
    /// Where the forecast's steps start: step `h` (1-based) of the forecast starts
    /// at `origin_ms + h × step_ms` ([`super::steps_due`] counts what is due when).
    pub origin_ms: i64,
    /// The forecast grid's step (the fitted grid's), in milliseconds.
    pub step_ms: i64,
    /// How `value` came about (`None` while warming: [`Decision::floor`] × the factor).
    pub served: Option<super::Served>,
    /// How the served quantile's band was calibrated (`None` while warming).
    pub calibration: Option<super::Calibration>,
    /// On a grid finer than the HPA's sync period, the observed points of the last
    /// [`HPA_SYNC_MS`], sorted: the reactive floor is their quantile (see
    /// [`Decision::floor`]). Empty on coarser grids, where the floor is `latest`.
    pub since_sync: Vec<f64>,
}

impl Decision {
    /// What to serve at `now_ms` from this decision with `policy` (another
    /// quantile than the decision's own, say): the forecast steps that are due by
    /// then ([`super::steps_due`]), and while there is no forecast the floor at the
    /// policy's quantile times its tolerance factor (what warming serves).
    pub fn served_at(&self, policy: &ServePolicy, now_ms: i64) -> Option<f64> {
        match &self.forecast {
            Some(_) => self.explain_at(policy, now_ms).map(|s| s.value),
            None => self.floor(policy.quantile).map(|f| f * policy.factor()),
        }
    }

    /// [`Decision::served_at`] with its parts; `None` without a forecast.
    pub fn explain_at(&self, policy: &ServePolicy, now_ms: i64) -> Option<super::Served> {
        let fc = self.forecast.as_ref()?;
        let due = super::steps_due(policy, self.step_ms, now_ms - self.origin_ms);
        let mut served = super::serve(fc, policy, self.floor(policy.quantile), due)?;
        served.floor_points = self.since_sync.len().max(1);
        Some(served)
    }

    /// What the reactive floor stands on when serving quantile `q`: the latest
    /// observation, or on a grid finer than the HPA's sync period the `q` quantile
    /// of the points observed in the last sync period ([`floor_of`]).
    pub fn floor(&self, q: f64) -> Option<f64> {
        floor_of(&self.since_sync, q).or(self.latest)
    }
}

/// The `q` quantile of `sorted` (ascending): the smallest point that at least a
/// share `q` of them do not exceed; `None` for fewer than two points, where the
/// floor is the latest observation.
fn floor_of(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.len() < 2 {
        return None;
    }
    let n = sorted.len();
    let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

/// The fitted history: exact on the grid, or compact means of several grid points.
#[derive(Debug)]
enum History {
    /// `fit_steps == 1`: the grid points as observed.
    Exact(VecDeque<f64>),
    /// `fit_steps > 1`: means of `fit_steps` grid points (`NAN` when all were
    /// gaps), packed 16 bits a point ([`Packed`]).
    Compact(Packed),
}

impl History {
    fn len(&self) -> usize {
        match self {
            Self::Exact(h) => h.len(),
            Self::Compact(h) => h.len(),
        }
    }

    /// Appends a point, dropping the oldest beyond `cap`; returns whether the
    /// dropped point was finite.
    fn push(&mut self, v: f64, cap: usize) -> bool {
        match self {
            Self::Exact(h) => {
                let dropped = if h.len() >= cap { h.pop_front() } else { None };
                h.push_back(v);
                dropped.is_some_and(f64::is_finite)
            }
            Self::Compact(h) => h.push(v, cap),
        }
    }

    /// The newest `n` points, oldest first.
    fn newest(&self, n: usize) -> Vec<f64> {
        match self {
            Self::Exact(h) => h.iter().skip(h.len().saturating_sub(n)).copied().collect(),
            Self::Compact(h) => h.newest(n),
        }
    }

    fn to_vec(&self) -> Vec<f64> {
        match self {
            Self::Exact(h) => h.iter().copied().collect(),
            Self::Compact(h) => h.to_vec(),
        }
    }
}

/// Where refits fall on the absolute grid (see [`Tracker::with_grid`]).
#[derive(Debug, Clone, Copy)]
struct Grid {
    /// Grid index (time / step) of the newest observed point.
    last_index: i64,
    /// Refits happen when a point with `index ≡ offset (mod refit_every_steps)` arrives.
    offset: i64,
}

/// One series' forecasting state.
pub struct Tracker {
    /// Shared by all of a signal's series: the model spec inside holds heap data
    /// (`auto`'s candidates), which a copy per series would repeat 100,000 times.
    settings: Arc<TrackerSettings>,
    history: History,
    /// Finite points in `history`.
    finite: usize,
    /// The partial fitted point: sum and count of its finite grid points, grid points in it.
    bucket: (f64, usize, usize),
    /// The newest finite grid point and how many grid points came after it.
    latest: Option<(f64, usize)>,
    model: Option<Calibrated>,
    /// What the last full `auto` selection chose, reused by refits until the
    /// evidence says otherwise ([`ModelSpec::refit`]).
    selection: Option<Selection>,
    /// Refits so far: (every candidate scored, a selection reused, selected again
    /// because the reused one's error drifted).
    refits: RefitCounts,
    steps_since_fit: usize,
    last_fit_ms: Option<i64>,
    fit_error: Option<String>,
    grid: Option<Grid>,
    /// The served value's calibration on this series' own outcomes.
    peaks: PeakCalibration,
    /// On a sub-minute grid, the last minute of grid points: the calibration's
    /// outcomes are their median, so that one second's spike is not a peak to plan for.
    outcome_window: VecDeque<f64>,
    /// Grid points observed in all; and how many there were at the last forecast
    /// registered with `peaks` (one per new grid point, however often it decides).
    points: (u64, u64),
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("history_len", &self.history.len())
            .field("model", &self.model.as_ref().map(|m| m.name()))
            .field("steps_since_fit", &self.steps_since_fit)
            .finish()
    }
}

impl Tracker {
    /// A tracker with no history yet. Pass an `Arc` to share one set of settings
    /// among many trackers (the engine's series of one signal).
    pub fn new(settings: impl Into<Arc<TrackerSettings>>) -> Self {
        let settings = settings.into();
        let cap = Self::reserved(&settings);
        let history = if settings.fit_steps > 1 {
            History::Compact(Packed::with_capacity(cap))
        } else {
            History::Exact(VecDeque::with_capacity(cap))
        };
        Self {
            history,
            peaks: PeakCalibration::new(settings.policy.lead_steps),
            outcome_window: VecDeque::new(),
            points: (0, 0),
            settings,
            finite: 0,
            bucket: (0.0, 0, 0),
            latest: None,
            model: None,
            selection: None,
            refits: RefitCounts::default(),
            steps_since_fit: 0,
            last_fit_ms: None,
            fit_error: None,
            grid: None,
        }
    }

    /// Places the tracker on the absolute grid: `first_index` is the grid index
    /// (time / step) of the first point it will observe, and refits fall on grid
    /// indices `≡ offset` modulo the refit interval (a per-series offset spreads the
    /// refits of many series over the interval). Fitted points then also start on
    /// multiples of `fit_steps`, so two trackers fed the same points from different
    /// moments fit the same history at the same grid times.
    pub fn with_grid(mut self, first_index: i64, offset: u64) -> Self {
        let every = self.settings.refit_every_steps.max(1) as u64;
        self.grid = Some(Grid {
            last_index: first_index - 1,
            offset: i64::try_from(offset % every).unwrap_or(0),
        });
        // The first fitted point covers only the rest of its aligned span.
        let k = self.fit_steps() as i64;
        self.bucket.2 = usize::try_from(first_index.rem_euclid(k)).unwrap_or(0);
        // And the packed history's blocks fall on the fitted grid too.
        if let History::Compact(h) = &mut self.history {
            if h.is_empty() {
                let phase = first_index.div_euclid(k).rem_euclid(BLOCK as i64);
                let cap = Self::reserved(&self.settings);
                *h = Packed::aligned(cap, usize::try_from(phase).unwrap_or(0));
            }
        }
        self
    }

    /// Fitted points kept: the history window in units of `fit_steps`.
    fn capacity(settings: &TrackerSettings) -> usize {
        settings
            .history_steps
            .max(1)
            .div_ceil(settings.fit_steps.max(1))
    }

    /// Fitted points the history allocates up front: [`Tracker::capacity`], at
    /// most 2^20.
    fn reserved(settings: &TrackerSettings) -> usize {
        Self::capacity(settings).min(1 << 20)
    }

    fn fit_steps(&self) -> usize {
        self.settings.fit_steps.max(1)
    }

    /// How its refits went so far.
    pub fn refit_counts(&self) -> RefitCounts {
        self.refits
    }

    /// The settings this tracker runs with.
    pub fn settings(&self) -> &TrackerSettings {
        &self.settings
    }

    /// Appends new grid points (`NAN` for a missing step) that follow the history.
    ///
    /// The fitted model, if any, takes them as an update without a refit.
    pub fn observe(&mut self, values: &[f64]) {
        let cap = Self::capacity(&self.settings);
        let k = self.fit_steps();
        let mut fitted = Vec::new();
        let window = usize::try_from(RECENT_MS / self.settings.step_ms.max(1)).unwrap_or(1);
        for &v in values {
            if window > 1 {
                if self.outcome_window.len() >= window {
                    self.outcome_window.pop_front();
                } else if self.outcome_window.capacity() == 0 {
                    // Exactly the window (60 on a 1-second grid, not 64).
                    self.outcome_window.reserve_exact(window);
                }
                self.outcome_window.push_back(v);
                let mut w: Vec<f64> = self
                    .outcome_window
                    .iter()
                    .copied()
                    .filter(|x| x.is_finite())
                    .collect();
                self.peaks
                    .observe(median_in_place(&mut w).unwrap_or(f64::NAN));
            } else {
                self.peaks.observe(v);
            }
            self.points.0 += 1;
            self.latest = if v.is_finite() {
                Some((v, 0))
            } else {
                self.latest.map(|(l, age)| (l, age + 1))
            };
            let point = if k == 1 {
                Some(v)
            } else {
                if v.is_finite() {
                    self.bucket.0 += v;
                    self.bucket.1 += 1;
                }
                self.bucket.2 += 1;
                (self.bucket.2 >= k).then(|| {
                    let (sum, n, _) = std::mem::take(&mut self.bucket);
                    if n == 0 {
                        f64::NAN
                    } else {
                        sum / n as f64
                    }
                })
            };
            if let Some(p) = point {
                if self.history.push(p, cap) {
                    self.finite -= 1;
                }
                if p.is_finite() {
                    self.finite += 1;
                }
                fitted.push(p);
            }
        }
        if let Some(model) = self.model.as_mut() {
            if !fitted.is_empty() {
                model.update(&fitted);
            }
        }
        self.steps_since_fit += values.len();
        if let Some(g) = self.grid.as_mut() {
            g.last_index += i64::try_from(values.len()).unwrap_or(0);
        }
    }

    /// The latest observed (finite) value within the history window.
    pub fn latest(&self) -> Option<f64> {
        self.latest
            .filter(|&(_, age)| age < self.settings.history_steps.max(1))
            .map(|(v, _)| v)
    }

    /// Where demand is now, for the band to stand on: the median of the fitted
    /// points of the last [`RECENT_MS`] (at least the newest one). On a grid of a
    /// minute or more that is the newest point; on a sub-minute grid a single
    /// second's spike does not lift the band, a level held for a minute does.
    fn recent_level(&self) -> Option<f64> {
        let fitted_ms = self
            .settings
            .step_ms
            .max(1)
            .saturating_mul(self.fit_steps() as i64);
        let n = usize::try_from(RECENT_MS / fitted_ms).unwrap_or(1).max(1);
        let mut recent: Vec<f64> = self
            .history
            .newest(n)
            .into_iter()
            .filter(|v| v.is_finite())
            .collect();
        median_in_place(&mut recent).or_else(|| self.latest())
    }

    /// On a grid finer than [`HPA_SYNC_MS`], the finite points of the last sync
    /// period, sorted (the newest of the one-minute window kept for the
    /// calibration's outcomes); empty on coarser grids.
    fn since_sync(&self) -> Vec<f64> {
        let n = usize::try_from(HPA_SYNC_MS / self.settings.step_ms.max(1)).unwrap_or(1);
        if n < 2 {
            return Vec::new();
        }
        let mut points: Vec<f64> = self
            .outcome_window
            .iter()
            .rev()
            .take(n)
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        points.sort_by(f64::total_cmp);
        points
    }

    /// Whether a refit is due: on schedule, or (without a grid) after
    /// `refit_every_steps` new points.
    fn refit_due(&self) -> bool {
        let every = self.settings.refit_every_steps.max(1);
        match self.grid {
            None => self.steps_since_fit >= every,
            Some(g) => {
                // Did a point with index ≡ offset arrive since the last fit?
                let every = every as i64;
                let since = i64::try_from(self.steps_since_fit).unwrap_or(i64::MAX);
                since >= every || (g.last_index - g.offset).rem_euclid(every) < since
            }
        }
    }

    /// Refits when due and returns what to serve at `now_ms`.
    pub fn decide(&mut self, now_ms: i64) -> Decision {
        self.decide_with(now_ms, &[])
    }

    /// As [`Tracker::decide`], with the forecast also carrying the quantiles in
    /// `extra` (the backtest's frontier serves several quantiles from one forecast).
    pub fn decide_with(&mut self, now_ms: i64, extra: &[f64]) -> Decision {
        let latest = self.latest();
        let k = self.fit_steps();
        let observed = self.finite.saturating_mul(k);
        if observed < self.settings.min_history_steps.max(1) {
            return self.warming(latest);
        }
        if self.model.is_none() || self.refit_due() {
            let mut history = self.history.to_vec();
            let fit_step_ms = self.settings.step_ms.saturating_mul(k as i64);
            clip_bursts(&mut history, &season_points(fit_step_ms));
            // A selection is reused with the model it fitted last.
            let previous = self.selection.take().zip(self.model.as_ref());
            let refitted =
                self.settings
                    .spec
                    .refit(&history, fit_step_ms, previous, self.steps_since_fit);
            match refitted {
                Ok((model, selection, how)) => {
                    self.selection = selection;
                    match how {
                        Refit::Selected => self.refits.selected += 1,
                        Refit::Reused => self.refits.reused += 1,
                        Refit::Drifted => self.refits.drifted += 1,
                    }
                    let (sum, n) = history
                        .iter()
                        .filter(|v| v.is_finite())
                        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
                    if n > 0 {
                        self.peaks.set_level(sum / n as f64);
                    }
                    self.model = Some(model);
                    self.steps_since_fit = 0;
                    self.last_fit_ms = Some(now_ms);
                    self.fit_error = None;
                }
                // Keep the previous model, if any: a failed refit must not stop serving.
                Err(e) => self.fit_error = Some(e.to_string()),
            }
        }
        let Some(model) = self.model.as_ref() else {
            return self.warming(latest);
        };
        // The forecast starts after the last whole fitted point; the lead time counts
        // from the newest grid point, which may be inside the next one.
        let lead_grid = self.settings.policy.lead_steps.max(1) + self.bucket.2;
        let policy = ServePolicy {
            lead_steps: lead_grid.div_ceil(k).max(1),
            ..self.settings.policy
        };
        let q = policy.quantile;
        let mut levels = vec![INTERVAL.0, q, INTERVAL.1];
        levels.extend(extra.iter().copied().filter(|v| *v > 0.0 && *v < 1.0));
        levels.sort_by(f64::total_cmp);
        levels.dedup();
        let (predicted, name) = (model.predict(policy.lead_steps, &levels), model.name());
        match predicted {
            Ok(fc) => {
                let floor = if policy.reactive_floor {
                    self.recent_level()
                } else {
                    None
                };
                let (fc, calibration) = self.calibrate(fc, policy.lead_steps, floor);
                let (origin_ms, step_ms) = self.origin(now_ms);
                let mut d = Decision {
                    value: None,
                    warming: false,
                    model: name,
                    forecast: Some(fc),
                    latest,
                    last_fit_ms: self.last_fit_ms,
                    fit_error: self.fit_error.clone(),
                    origin_ms,
                    step_ms,
                    served: None,
                    calibration,
                    since_sync: self.since_sync(),
                };
                d.served = d.explain_at(&policy, now_ms);
                d.value = d.served.map(|s| s.value);
                d
            }
            Err(e) => {
                self.fit_error = Some(e.to_string());
                self.warming(latest)
            }
        }
    }

    /// Replaces the quantile paths by the mean plus offsets calibrated on this
    /// series' recent peak errors ([`super::peak`]), and registers the forecast so
    /// that its own error is recorded once the lead time has passed.
    fn calibrate(
        &mut self,
        mut fc: Forecast,
        lead: usize,
        floor: Option<f64>,
    ) -> (Forecast, Option<super::Calibration>) {
        let lead = lead.max(1).min(fc.mean.len());
        let peak = |v: &[f64]| {
            v[..lead]
                .iter()
                .copied()
                .filter(|x| x.is_finite())
                .fold(f64::NAN, f64::max)
        };
        let model_peak = peak(&fc.mean);
        if !model_peak.is_finite() {
            return (fc, None);
        }
        // With the reactive floor on, what is served is never below the latest
        // observation, so the band is calibrated on top of the floored mean.
        let floor = floor.filter(|f| f.is_finite());
        let peak_mean = floor.map_or(model_peak, |f| model_peak.max(f));
        if self.points.0 > self.points.1 {
            self.points.1 = self.points.0;
            self.peaks.forecast(peak_mean);
        }
        let levels: Vec<f64> = fc.quantiles.iter().map(|p| p.q).collect();
        let prior: Vec<f64> = fc
            .quantiles
            .iter()
            .map(|p| {
                let v = peak(&p.values) - model_peak;
                if v.is_finite() {
                    v
                } else {
                    0.0
                }
            })
            .collect();
        let offsets = self.peaks.offsets(&levels, peak_mean, &prior);
        let q = self.settings.policy.quantile;
        let calibration = super::Calibration {
            outcomes: self.peaks.len(),
            model_peak,
            recent_level: floor,
            base: peak_mean,
            offset: levels
                .iter()
                .zip(&offsets)
                .find(|(l, _)| (**l - q).abs() < 1e-12)
                .map_or(f64::NAN, |(_, o)| *o),
        };
        let base = |m: f64| floor.map_or(m, |f| m.max(f));
        for (path, off) in fc.quantiles.iter_mut().zip(offsets) {
            for (v, m) in path.values.iter_mut().zip(&fc.mean) {
                // Non-negative series stay non-negative (the model floors them).
                let floor = if *v >= 0.0 { 0.0 } else { f64::NEG_INFINITY };
                *v = (base(*m) + off).max(floor);
            }
        }
        (fc, Some(calibration))
    }

    /// The value to plan with `steps` steps ahead (node pools look further ahead
    /// than the signal's lead time): the same rule as the served value — the largest
    /// forecast of the served quantile over the next `steps`, floored by the latest
    /// observation (the floor, [`Decision::floor`]) when the policy says so — from
    /// the current model, without refitting. While there is no model: the floor.
    pub fn value_ahead(&self, steps: usize) -> Option<f64> {
        let floor = floor_of(&self.since_sync(), self.settings.policy.quantile).or(self.latest());
        // In fitted points, counted as in `decide`.
        let policy = ServePolicy {
            lead_steps: (steps.max(1) + self.bucket.2)
                .div_ceil(self.fit_steps())
                .max(1),
            ..self.settings.policy
        };
        match self
            .model
            .as_ref()
            .map(|m| m.predict(policy.lead_steps, &[policy.quantile]))
        {
            Some(Ok(fc)) => served_value(&fc, &policy, floor),
            // No model yet, or it cannot predict that far: what warming serves, the
            // floor times the tolerance factor ([`Tracker::warming`]).
            _ => floor.map(|f| f * policy.factor()),
        }
    }

    /// While there is no forecast: the floor (the latest observation; on a grid
    /// finer than the HPA's sync period, the served quantile of that period's
    /// points), times the HPA tolerance factor as every served value (the HPA adds
    /// replicas for it exactly when it needs them, not only 10 % later).
    fn warming(&self, latest: Option<f64>) -> Decision {
        let policy = &self.settings.policy;
        let since_sync = self.since_sync();
        let floor = floor_of(&since_sync, policy.quantile).or(latest);
        Decision {
            value: floor.map(|f| f * policy.factor()),
            warming: true,
            model: "last-value".to_string(),
            forecast: None,
            latest,
            last_fit_ms: self.last_fit_ms,
            fit_error: self.fit_error.clone(),
            origin_ms: 0,
            step_ms: self.settings.step_ms,
            served: None,
            calibration: None,
            since_sync,
        }
    }

    /// The forecast's origin and step at `now_ms`: the newest grid point's time
    /// (from the absolute grid when placed on one, else `now_ms`, the backtest's
    /// moment of arrival), moved back to the last whole fitted point.
    fn origin(&self, now_ms: i64) -> (i64, i64) {
        let step = self.settings.step_ms.max(1);
        let newest = self
            .grid
            .map_or(now_ms, |g| g.last_index.saturating_mul(step));
        let k = self.fit_steps() as i64;
        let partial = i64::try_from(self.bucket.2).unwrap_or(0);
        // Fitted step h covers grid points from (newest − partial) + 1 + (h − 1) k.
        let origin = newest - partial * step + step - k * step;
        (origin, k * step)
    }
}

/// How far back the level the served band stands on looks (see
/// [`Tracker::recent_level`]).
const RECENT_MS: i64 = 60_000;

/// The HPA controller's sync period (Kubernetes' default): a reactive HPA reads
/// one point in this long. On a finer grid the reactive floor is the served
/// quantile of all the points of the last period, not the one newest point, so
/// that the replicas do not follow one second's sampling noise (an HPA keeps the
/// highest reading for its five-minute scale-down window).
pub const HPA_SYNC_MS: i64 = 15_000;

/// Points on each side of a point that its local level is the median of.
const BURST_HALF_WIDTH: usize = 6;

/// How many robust deviations from its local level a point may be before it is a
/// burst.
const BURST_DEVIATIONS: f64 = 6.0;

/// The median of `values` (the upper one of an even count), reordering them in
/// place (the middle selected, not the whole slice sorted); `None` when there
/// are none. Callers pass finite values.
fn median_in_place(values: &mut [f64]) -> Option<f64> {
    let mid = values.len() / 2;
    (!values.is_empty()).then(|| *values.select_nth_unstable_by(mid, f64::total_cmp).1)
}

/// For each point, [`median_in_place`] of the finite points within `w` of it
/// (`NAN` where there are none): a sorted window slides along, one point in and
/// one out per step, instead of sorting every window anew.
fn rolling_medians(history: &[f64], w: usize) -> Vec<f64> {
    let n = history.len();
    let mut window: Vec<f64> = Vec::with_capacity(2 * w + 1);
    // Where `v` sits in the sorted window (gaps never enter it).
    let place = |window: &[f64], v: f64| window.partition_point(|x| x.total_cmp(&v).is_lt());
    for &v in history[..w.min(n)].iter().filter(|v| v.is_finite()) {
        window.insert(place(&window, v), v);
    }
    (0..n)
        .map(|t| {
            if let Some(&v) = history.get(t + w).filter(|v| v.is_finite()) {
                window.insert(place(&window, v), v);
            }
            let leaving = t.checked_sub(w + 1).and_then(|i| history.get(i));
            if let Some(&v) = leaving.filter(|v| v.is_finite()) {
                window.remove(place(&window, v));
            }
            window.get(window.len() / 2).copied().unwrap_or(f64::NAN)
        })
        .collect()
}

/// Clips short bursts (and dips) in a history before a model is fitted to it.
///
/// A point further than [`BURST_DEVIATIONS`] robust deviations from the median of
/// the [`BURST_HALF_WIDTH`] points on each side of it is set to that bound: a
/// burst of up to that many points does not move the median, while a level
/// shift does within half the window. Fitted as is, one burst lifts a smoothing
/// model's level, and the served value with it, for hours after demand is back
/// (measured on a synthetic burst of 30× the level: 85 minutes at more than twice
/// the replicas needed). What happens during a burst is the reactive floor's job.
/// The newest points, whose window is still open, are left alone: a new level
/// must not be taken for a burst. Nor is a point that recurs: one within the
/// bound of the point one of `periods` (in points: a day, a week) before or after
/// it is part of the season — a daily peak of three hours is what a seasonal
/// model is there to forecast, not a burst to forget.
fn clip_bursts(history: &mut [f64], periods: &[usize]) {
    let n = history.len();
    let w = BURST_HALF_WIDTH;
    if n < 4 * w {
        return;
    }
    let local = rolling_medians(history, w);
    let mut dev: Vec<f64> = history
        .iter()
        .zip(&local)
        .map(|(y, m)| (y - m).abs())
        .filter(|d| d.is_finite())
        .collect();
    let Some(mad) = median_in_place(&mut dev) else {
        return;
    };
    let mean_abs = {
        let (s, c) = history
            .iter()
            .filter(|v| v.is_finite())
            .fold((0.0, 0usize), |(s, c), v| (s + v.abs(), c + 1));
        s / c.max(1) as f64
    };
    // 1.4826 × MAD estimates a normal standard deviation; a mostly flat or idle
    // series has a MAD of zero, so the scale never falls below a tenth of the level.
    let scale = (1.4826 * mad).max(0.1 * mean_abs);
    if scale.is_nan() || scale <= 0.0 {
        return;
    }
    let bound = BURST_DEVIATIONS * scale;
    let original = history.to_vec();
    let recurs = |t: usize| {
        let y = original[t];
        periods.iter().filter(|p| **p > w).any(|&p| {
            let near = |u: usize| original[u].is_finite() && (original[u] - y).abs() <= bound;
            (t >= p && near(t - p)) || (t + p < n && near(t + p))
        })
    };
    for (t, (y, m)) in history[..n - w].iter_mut().zip(&local).enumerate() {
        if y.is_finite() && m.is_finite() && (*y - m).abs() > bound && !recurs(t) {
            *y = y.clamp(m - bound, m + bound);
        }
    }
}

/// The seasons, in fitted points of `step_ms`, that a burst must not be mistaken
/// for: a day and a week, where the step divides them.
fn season_points(step_ms: i64) -> Vec<usize> {
    const DAY_MS: i64 = 86_400_000;
    [DAY_MS, 7 * DAY_MS]
        .into_iter()
        .filter(|d| step_ms > 0 && d % step_ms == 0)
        .filter_map(|d| usize::try_from(d / step_ms).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_are_clipped_and_level_shifts_kept() {
        let mut h: Vec<f64> = (0..200).map(|i| 100.0 + (i % 7) as f64).collect();
        h[50] = 3000.0;
        h[51] = 2500.0;
        h[120] = -2000.0;
        for v in &mut h[150..] {
            *v += 500.0;
        }
        h[198] = 5000.0;
        clip_bursts(&mut h, &[24]);
        assert!(h[50] < 300.0 && h[51] < 300.0, "{} {}", h[50], h[51]);
        assert!(h[120] > -100.0, "a dip is clipped too: {}", h[120]);
        assert!(h[160..].iter().all(|v| *v >= 600.0), "the new level stays");
        assert_eq!(h[198], 5000.0, "the newest points are left alone");
        assert_eq!(h[10], 103.0);
    }

    /// A noisy flat series that jumps to 300 at its newest point, replayed one
    /// point at a time on a grid of `step_ms`; the value served after the jump.
    fn served_after_a_jump(step_ms: i64) -> f64 {
        let mut s = settings();
        s.step_ms = step_ms;
        s.spec = ModelSpec::by_name("holt-winters-damped").unwrap();
        s.policy.lead_steps = 1;
        let mut t = Tracker::new(s);
        for i in 0..400usize {
            t.observe(&[100.0 + ((i * 7) % 11) as f64]);
            t.decide(0);
        }
        t.observe(&[300.0]);
        t.decide(0).value.unwrap()
    }

    #[test]
    fn the_band_stands_on_the_floor_and_a_second_spike_does_not_lift_it() {
        // Hourly: the jump is where demand is now, and the band of the coming
        // hour's peak stands above it, not level with it.
        let hourly = served_after_a_jump(3_600_000);
        assert!(
            hourly > 303.0,
            "served {hourly}: the band ends at the floor"
        );
        // Every second: one second's spike is neither the band's base nor the
        // floor (the q0.9 of the last 15 s of points is the noisy level's top).
        let secondly = served_after_a_jump(1_000);
        assert!(
            (100.0..200.0).contains(&secondly),
            "served {secondly}: a one-second spike lifted the band or the floor"
        );
    }

    /// A tracker on a grid of `step_ms` (tolerance 0.1, q0.9, warming for 600
    /// points) fed `values`, and its decision.
    fn secondly_after(values: &[f64], step_ms: i64) -> Decision {
        let mut s = settings();
        s.step_ms = step_ms;
        s.policy.tolerance = 0.1;
        s.min_history_steps = 600;
        let mut t = Tracker::new(s);
        t.observe(values);
        t.decide(0)
    }

    fn assert_serves(d: &Decision, want: f64) {
        let v = d.value.unwrap_or(f64::NAN);
        assert!((v - want).abs() < 1e-9, "served {v}, expected {want}");
    }

    #[test]
    fn below_the_hpa_sync_period_the_floor_is_the_quantile_of_its_points() {
        // While warming, every second: 100 for a minute, then one second at 1000.
        let mut spike = vec![100.0; 60];
        spike.push(1000.0);
        let d = secondly_after(&spike, 1_000);
        assert!(d.warming);
        assert_eq!(d.latest, Some(1000.0));
        assert_eq!(d.since_sync.len(), 15);
        // q0.9 of the last 15 points (the 14th smallest) is 100: the one-second
        // spike is not what the HPA sizes for (it was 1.1 × 1000).
        assert_serves(&d, 110.0);
        // Held for two seconds of the 15, a new level is the floor.
        let mut v = vec![100.0; 60];
        v.extend([300.0, 300.0]);
        let d = secondly_after(&v, 1_000);
        assert_serves(&d, 1.1 * 300.0);
        // Another quantile from the same decision (the backtest's frontier): its
        // own quantile of the points, the median here.
        let p = ServePolicy {
            quantile: 0.5,
            ..settings().policy
        };
        assert_eq!(d.served_at(&p, 0), Some(100.0));
        // On a grid as coarse as the sync period, one point per read: the latest.
        let d = secondly_after(&v, 15_000);
        assert!(d.since_sync.is_empty());
        assert_serves(&d, 1.1 * 300.0);
        let d = secondly_after(&spike, 15_000);
        assert_serves(&d, 1.1 * 1000.0);
    }

    #[test]
    fn after_warming_the_fine_grid_floor_is_the_quantile_too() {
        // Every second, a noisy level of 100-110 and a spike to 300 at the newest
        // point: the forecast is served, floored by the q0.9 of the last 15 points.
        let mut s = settings();
        s.step_ms = 1_000;
        s.spec = ModelSpec::by_name("holt-winters-damped").unwrap();
        s.policy.lead_steps = 1;
        s.min_history_steps = 120;
        let mut t = Tracker::new(s);
        for i in 0..300usize {
            t.observe(&[100.0 + ((i * 7) % 11) as f64]);
        }
        t.observe(&[300.0]);
        let d = t.decide(0);
        assert!(!d.warming);
        let served = d.served.unwrap();
        assert_eq!(served.floor_points, 15);
        assert!(served.latest.unwrap() <= 110.0, "{served:?}");
        assert!(d.value.unwrap() < 200.0, "{:?}", d.value);
        assert!(
            served.describe(0.9).contains("q0.9 of the last 15 points"),
            "{}",
            served.describe(0.9)
        );
        // value_ahead (node pools) stands on the same floor.
        assert!(t.value_ahead(1).unwrap() < 200.0);
    }

    #[test]
    fn one_second_spikes_are_not_peaks_to_plan_for() {
        // Every second: 100, with a one-second spike to 1000 every 30 s. The lead
        // time (a minute) always holds two spikes, but they are too short to need
        // replicas started ahead of them: the band stays near the level. (Against
        // raw points the calibrated peak error would be ~900.)
        let mut s = settings();
        s.step_ms = 1_000;
        s.spec = ModelSpec::by_name("holt-winters-damped").unwrap();
        s.policy.lead_steps = 60;
        s.history_steps = 3_600;
        s.min_history_steps = 600;
        s.refit_every_steps = 600;
        let mut t = Tracker::new(s);
        let mut served = 0.0;
        for i in 0..2_000usize {
            t.observe(&[if i % 30 == 0 { 1000.0 } else { 100.0 }]);
            served = t.decide(0).value.unwrap();
        }
        assert!(
            served < 200.0,
            "served {served}: the band plans for one-second spikes"
        );
    }

    #[test]
    fn a_daily_peak_is_a_season_not_a_burst() {
        // Hourly: 1000, and 3350 from 10:00 to 13:00 every day, one stray burst.
        let mut h: Vec<f64> = (0..200)
            .map(|i| {
                if (10..13).contains(&(i % 24)) {
                    3350.0
                } else {
                    1000.0
                }
            })
            .collect();
        h[100] = 9000.0;
        let before = h.clone();
        clip_bursts(&mut h, &season_points(3_600_000));
        for t in (0..190).filter(|t| (10..13).contains(&(t % 24))) {
            assert_eq!(h[t], 3350.0, "the daily peak at {t} was clipped");
        }
        assert!(h[100] < 9000.0, "the stray burst stays a burst");
        // Without the season, the same peaks are clipped: the test can fail.
        let mut bare = before;
        clip_bursts(&mut bare, &[]);
        assert!(bare[34] < 3350.0);
    }

    fn settings() -> TrackerSettings {
        TrackerSettings {
            spec: ModelSpec::by_name("seasonal-naive").unwrap(),
            step_ms: 3_600_000,
            policy: ServePolicy {
                lead_steps: 3,
                lead_ms: 0,
                tolerance: 0.0,
                quantile: 0.9,
                reactive_floor: true,
            },
            history_steps: 24 * 14,
            refit_every_steps: 24,
            min_history_steps: 48,
            fit_steps: 1,
            spread_refits: false,
        }
    }

    fn daily(i: usize) -> f64 {
        100.0 + 50.0 * ((i % 24) as f64 / 24.0 * std::f64::consts::TAU).sin()
    }

    #[test]
    fn warms_up_on_the_latest_value_then_forecasts() {
        let mut t = Tracker::new(settings());
        assert_eq!(t.decide(0).value, None);
        let first: Vec<f64> = (0..10).map(daily).collect();
        t.observe(&first);
        let d = t.decide(0);
        assert!(d.warming);
        assert_eq!(d.value, Some(daily(9)));
        let more: Vec<f64> = (10..24 * 7).map(daily).collect();
        t.observe(&more);
        let d = t.decide(1);
        assert!(!d.warming);
        assert_eq!(d.last_fit_ms, Some(1));
        // A perfectly periodic series: the served value is the peak of the next 3 hours.
        let peak = (24 * 7..24 * 7 + 3).map(daily).fold(f64::MIN, f64::max);
        let v = d.value.unwrap();
        assert!(v >= peak - 1e-9, "served {v} below the coming peak {peak}");
        assert!(
            v >= daily(24 * 7 - 1),
            "served value below the reactive floor"
        );
    }

    #[test]
    fn warming_serves_the_latest_through_the_hpa_tolerance_as_every_value() {
        let mut s = settings();
        s.policy.tolerance = 0.1;
        let mut t = Tracker::new(s);
        t.observe(&[100.0, 120.0]);
        let d = t.decide(0);
        assert!(d.warming);
        // 132 against replicas × target: the HPA (tolerance 0.1) adds a replica as
        // soon as the latest 120 exceeds what the replicas carry, not 10 % later.
        assert!((d.value.unwrap() - 132.0).abs() < 1e-9, "{:?}", d.value);
        assert_eq!(d.latest, Some(120.0));
    }

    #[test]
    fn forecasts_the_interval_beside_the_served_quantile() {
        let mut t = Tracker::new(settings());
        // A noisy daily pattern, so the interval has some width.
        let h: Vec<f64> = (0..24 * 10)
            .map(|i| daily(i) + ((i * 7919) % 13) as f64 - 6.0)
            .collect();
        t.observe(&h);
        let fc = t.decide(0).forecast.unwrap();
        let lower = fc.quantile(INTERVAL.0).unwrap();
        let served = fc.quantile(0.9).unwrap();
        let upper = fc.quantile(INTERVAL.1).unwrap();
        assert_eq!(lower.len(), 3);
        for h in 0..3 {
            assert!(lower[h] <= served[h] && served[h] <= upper[h] + 1e-9);
            assert!(lower[h] < upper[h], "an empty band at step {h}");
        }
    }

    #[test]
    fn refits_only_when_due() {
        let mut t = Tracker::new(settings());
        let h: Vec<f64> = (0..24 * 7).map(daily).collect();
        t.observe(&h);
        assert_eq!(t.decide(5).last_fit_ms, Some(5));
        t.observe(&[daily(24 * 7)]);
        assert_eq!(t.decide(6).last_fit_ms, Some(5));
        let next: Vec<f64> = (24 * 7 + 1..24 * 8 + 1).map(daily).collect();
        t.observe(&next);
        assert_eq!(t.decide(7).last_fit_ms, Some(7));
    }

    #[test]
    fn while_warming_value_ahead_is_what_is_served() {
        let mut s = settings();
        s.policy.tolerance = 0.1;
        let mut t = Tracker::new(s);
        t.observe(&[7.0, 9.0]);
        let d = t.decide(1);
        assert!(d.warming);
        // Node pools are sized for the pods the HPA asks for: the served value, with
        // the tolerance factor, not the bare latest observation.
        assert_eq!(t.value_ahead(5), d.value);
        assert!((t.value_ahead(5).unwrap() - 9.9).abs() < 1e-9);
    }

    #[test]
    fn value_ahead_is_the_served_rule_over_a_longer_horizon() {
        let mut t = Tracker::new(settings());
        assert_eq!(t.value_ahead(5), None);
        t.observe(&[7.0]);
        assert_eq!(t.value_ahead(5), Some(7.0), "no model: the latest value");
        let h: Vec<f64> = (0..24 * 7).map(daily).collect();
        t.observe(&h);
        let d = t.decide(1);
        // Over the lead time it is exactly the served value.
        assert_eq!(t.value_ahead(3), d.value);
        // Seasonal naive repeats yesterday: the peak of the next 8 hours.
        let peak = (24 * 7..24 * 7 + 8).map(daily).fold(f64::MIN, f64::max);
        let v = t.value_ahead(8).unwrap();
        assert!(v >= peak - 1e-9, "{v} < {peak}");
        assert!(v >= t.value_ahead(3).unwrap());
    }

    #[test]
    fn history_is_bounded() {
        let mut s = settings();
        s.history_steps = 50;
        let mut t = Tracker::new(s);
        let h: Vec<f64> = (0..500).map(daily).collect();
        t.observe(&h);
        assert_eq!(t.history.len(), 50);
    }

    #[test]
    fn compact_history_fits_on_means_of_grid_points() {
        let mut s = settings();
        s.fit_steps = 4;
        s.history_steps = 24 * 10 * 4;
        s.min_history_steps = 24 * 2 * 4;
        let mut t = Tracker::new(s);
        // Each hourly value held for four grid points, and a gap: means are exact.
        let mut fine = Vec::new();
        for i in 0..24 * 12 {
            fine.extend([daily(i), f64::NAN, daily(i), daily(i)]);
        }
        t.observe(&fine);
        assert_eq!(
            t.history.len(),
            24 * 10,
            "bounded to the window in fitted points"
        );
        let History::Compact(h) = &t.history else {
            panic!("fit_steps > 1 keeps packed means");
        };
        assert!((h.newest(1)[0] - daily(24 * 12 - 1)).abs() < 1e-3);
        t.observe(&[123.0, f64::NAN]);
        let d = t.decide(0);
        assert!(!d.warming);
        // The floor is the newest grid point, not a mean.
        assert_eq!(d.latest, Some(123.0));
        // Lead 3 grid points + 2 already in the next fitted point: two fitted steps.
        assert_eq!(d.forecast.unwrap().horizon(), 2);
        assert!(d.value.unwrap() >= 123.0);
    }

    #[test]
    fn spread_refits_fall_on_the_grid_offset() {
        let mut s = settings();
        s.refit_every_steps = 10;
        s.spread_refits = true;
        let h: Vec<f64> = (0..24 * 7).map(daily).collect();
        // First point at grid index 1000; refits on indices ≡ 3 (mod 10).
        let mut t = Tracker::new(s).with_grid(1_000, 13);
        t.observe(&h);
        assert_eq!(t.decide(1).last_fit_ms, Some(1), "first fit at once");
        let mut fits = Vec::new();
        for i in 0..30 {
            t.observe(&[daily(24 * 7 + i)]);
            let index = 1_000 + 24 * 7 + i as i64;
            if t.decide(index).last_fit_ms == Some(index) {
                fits.push(index);
            }
        }
        assert!(!fits.is_empty());
        assert!(fits.iter().all(|i| i % 10 == 3), "{fits:?}");
        assert!(fits.windows(2).all(|w| w[1] - w[0] == 10), "{fits:?}");
    }

    #[test]
    fn trackers_started_apart_agree_after_a_scheduled_refit() {
        let mut s = settings();
        s.refit_every_steps = 12;
        s.spread_refits = true;
        s.fit_steps = 2;
        s.history_steps = 24 * 7;
        let all: Vec<f64> = (0..24 * 30).map(|i| daily(i) + (i % 5) as f64).collect();
        // `a` has seen everything from index 0, `b` starts 37 points later.
        let mut a = Tracker::new(s.clone()).with_grid(0, 5);
        let mut b = Tracker::new(s).with_grid(37, 5);
        a.observe(&all[..24 * 8]);
        b.observe(&all[37..24 * 8]);
        a.decide(0);
        b.decide(0);
        let mut checked = 0;
        for i in 24 * 8..24 * 30 {
            a.observe(&all[i..=i]);
            b.observe(&all[i..=i]);
            let (da, db) = (a.decide(i as i64), b.decide(i as i64));
            // Once b's window is full too (a week after it started) both hold the
            // same aligned means, and from the next scheduled refit on the same
            // model; the served value's calibration agrees once the errors of that
            // model's forecasts fill its window (and their lead time has passed).
            if i >= 37 + 24 * 7 + 12 + crate::plan::peak::WINDOW + 3 {
                checked += 1;
                assert_eq!(da.value, db.value, "at {i}");
                assert_eq!(da.forecast, db.forecast, "at {i}");
            }
        }
        assert!(checked > 100, "{checked}");
    }

    #[test]
    fn the_sliding_median_is_each_window_sorted() {
        let mut h: Vec<f64> = (0..300)
            .map(|i| ((i * 7919) % 101) as f64 - 50.0 + if i % 17 == 0 { 1e3 } else { 0.0 })
            .collect();
        h[3] = f64::NAN;
        h[40..60].iter_mut().for_each(|v| *v = f64::NAN);
        h[100] = -0.0;
        h[101] = 0.0;
        for w in [0, 1, 6, 20] {
            let want: Vec<f64> = (0..h.len())
                .map(|t| {
                    let (lo, hi) = (t.saturating_sub(w), (t + w).min(h.len() - 1));
                    let mut win: Vec<f64> = h[lo..=hi]
                        .iter()
                        .copied()
                        .filter(|v| v.is_finite())
                        .collect();
                    median_in_place(&mut win).unwrap_or(f64::NAN)
                })
                .collect();
            let got = rolling_medians(&h, w);
            assert_eq!(got.len(), want.len());
            for (t, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!(g.to_bits() == e.to_bits(), "w {w}, t {t}: {g} vs {e}");
            }
        }
        let mut v = vec![3.0, -1.0, 7.0, 7.0, 2.0];
        let mut sorted = v.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(median_in_place(&mut v), Some(sorted[sorted.len() / 2]));
        assert_eq!(median_in_place(&mut []), None);
    }
}
