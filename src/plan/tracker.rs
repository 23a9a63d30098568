//! One series' forecasting state, shared by the serving engine and the backtester.
//!
//! A [`Tracker`] keeps a bounded history on the series' grid, a fitted model that it
//! refits on schedule and updates in between, and turns the latest forecast into the
//! value an HPA should see. It is synchronous and takes time as an argument, so the
//! engine drives it on the wall clock and the backtester on a simulated one: the
//! backtest therefore measures the code that serves production.

use std::collections::VecDeque;

use crate::forecast::{self, Forecast, ModelSpec, Predict};

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
    /// The forecast over the lead time, when there is a model: the mean, the served
    /// quantile and the [`INTERVAL`] quantiles.
    pub forecast: Option<Forecast>,
    /// The latest observed value.
    pub latest: Option<f64>,
    /// When the model was last fitted (the `now_ms` of that decision).
    pub last_fit_ms: Option<i64>,
    /// Why the last fit failed, if it did.
    pub fit_error: Option<String>,
}

/// One series' forecasting state.
pub struct Tracker {
    settings: TrackerSettings,
    history: VecDeque<f64>,
    model: Option<Box<dyn Predict>>,
    steps_since_fit: usize,
    last_fit_ms: Option<i64>,
    fit_error: Option<String>,
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
    /// A tracker with no history yet.
    pub fn new(settings: TrackerSettings) -> Self {
        Self {
            history: VecDeque::with_capacity(settings.history_steps.min(1 << 20)),
            settings,
            model: None,
            steps_since_fit: 0,
            last_fit_ms: None,
            fit_error: None,
        }
    }

    /// The settings this tracker runs with.
    pub fn settings(&self) -> &TrackerSettings {
        &self.settings
    }

    /// Appends new grid points (`NAN` for a missing step) that follow the history.
    ///
    /// The fitted model, if any, takes them as an update without a refit.
    pub fn observe(&mut self, values: &[f64]) {
        for &v in values {
            if self.history.len() == self.settings.history_steps.max(1) {
                self.history.pop_front();
            }
            self.history.push_back(v);
        }
        if let Some(model) = self.model.as_mut() {
            model.update(values);
        }
        self.steps_since_fit += values.len();
    }

    /// The latest observed (finite) value.
    pub fn latest(&self) -> Option<f64> {
        self.history.iter().rev().copied().find(|v| v.is_finite())
    }

    /// Refits when due and returns what to serve at `now_ms`.
    pub fn decide(&mut self, now_ms: i64) -> Decision {
        let latest = self.latest();
        let observed = self.history.iter().filter(|v| v.is_finite()).count();
        if observed < self.settings.min_history_steps.max(1) {
            return self.warming(latest);
        }
        let due = self.model.is_none() || self.steps_since_fit >= self.settings.refit_every_steps;
        if due {
            let history: Vec<f64> = self.history.iter().copied().collect();
            match forecast::fit(&self.settings.spec, &history, self.settings.step_ms) {
                Ok(model) => {
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
        let lead = self.settings.policy.lead_steps.max(1);
        let q = self.settings.policy.quantile;
        match model.predict(lead, &[INTERVAL.0, q, INTERVAL.1]) {
            Ok(fc) => Decision {
                value: served_value(&fc, &self.settings.policy, latest),
                warming: false,
                model: model.name(),
                forecast: Some(fc),
                latest,
                last_fit_ms: self.last_fit_ms,
                fit_error: self.fit_error.clone(),
            },
            Err(e) => {
                self.fit_error = Some(e.to_string());
                self.warming(latest)
            }
        }
    }

    /// The value to plan with `steps` steps ahead (node pools look further ahead
    /// than the signal's lead time): the same rule as the served value — the largest
    /// forecast of the served quantile over the next `steps`, floored by the latest
    /// observation when the policy says so — from the current model, without
    /// refitting. While there is no model: the latest observation.
    pub fn value_ahead(&self, steps: usize) -> Option<f64> {
        let latest = self.latest();
        let policy = ServePolicy {
            lead_steps: steps.max(1),
            ..self.settings.policy
        };
        match self
            .model
            .as_ref()
            .map(|m| m.predict(policy.lead_steps, &[policy.quantile]))
        {
            Some(Ok(fc)) => served_value(&fc, &policy, latest),
            // No model yet, or it cannot predict that far: what warming serves.
            _ => latest,
        }
    }

    fn warming(&self, latest: Option<f64>) -> Decision {
        Decision {
            value: latest,
            warming: true,
            model: "last-value".to_string(),
            forecast: None,
            latest,
            last_fit_ms: self.last_fit_ms,
            fit_error: self.fit_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TrackerSettings {
        TrackerSettings {
            spec: ModelSpec::by_name("seasonal-naive").unwrap(),
            step_ms: 3_600_000,
            policy: ServePolicy {
                lead_steps: 3,
                quantile: 0.9,
                reactive_floor: true,
            },
            history_steps: 24 * 14,
            refit_every_steps: 24,
            min_history_steps: 48,
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
}
