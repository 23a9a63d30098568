//! From forecasts to decisions: what an HPA should see.
//!
//! Pure and synchronous; the engine and the backtester call the same functions.

pub mod choice;
pub mod nodepool;
pub mod packed;
pub mod peak;
pub mod tracker;

pub use tracker::{Decision, Tracker, TrackerSettings};

use crate::forecast::Forecast;

/// How a signal's forecast becomes the value served to an HPA.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServePolicy {
    /// How many steps ahead new capacity must be planned for (lead time / step,
    /// rounded up), at least 1: the horizon forecast.
    pub lead_steps: usize,
    /// The lead time in milliseconds; 0 means exactly `lead_steps` steps. A step of
    /// the forecast is served once it starts within the lead time from now, so a
    /// lead time shorter than the step brings the next step forward only in the
    /// last `lead_ms` before it (see [`steps_due`]).
    pub lead_ms: i64,
    /// The HPA's scale-up tolerance (0.1 by default, `behavior.scaleUp.tolerance`)
    /// that the served value makes up for: an HPA leaves its replicas alone while
    /// `value / (replicas × target)` is within `1 ± tolerance`, so a value up to 10 %
    /// above what the replicas carry changes nothing and that demand goes unserved.
    /// Serving `(1 + tolerance) × value` makes the HPA add replicas exactly when the
    /// value exceeds what the current ones carry. 0 serves the value as it is.
    pub tolerance: f64,
    /// Which forecast quantile to serve, in (0, 1).
    pub quantile: f64,
    /// Never serve less than the latest observation (predictive scaling only brings
    /// capacity forward; it never scales below what a reactive HPA would do).
    pub reactive_floor: bool,
}

impl ServePolicy {
    /// The factor every served value is multiplied by: `1 + tolerance` (see
    /// [`ServePolicy::tolerance`]).
    pub fn factor(&self) -> f64 {
        1.0 + self.tolerance.max(0.0)
    }
}

/// How many forecast steps are due at `elapsed_ms` after the forecast's origin
/// (the end of its last observed step) on a grid of `step_ms`: step `h` (1-based)
/// starts at `h × step`, and it is due once that is within the lead time, i.e.
/// `h × step ≤ elapsed + lead`. Never more than `lead_steps`; 0 when the lead time
/// ends before the next step starts (a lead time shorter than the step).
pub fn steps_due(policy: &ServePolicy, step_ms: i64, elapsed_ms: i64) -> usize {
    let lead_steps = policy.lead_steps.max(1);
    if policy.lead_ms <= 0 || step_ms <= 0 {
        return lead_steps;
    }
    let due = (elapsed_ms.max(0).saturating_add(policy.lead_ms)) / step_ms;
    usize::try_from(due).unwrap_or(0).min(lead_steps)
}

/// The value an HPA should see: the largest `quantile` forecast over the next
/// `lead_steps` steps, and not below `latest` when the floor is on.
///
/// Falls back to the mean path when the quantile was not forecast, and to `latest`
/// when the forecast is empty. Non-finite forecast values are ignored. Returns
/// `None` only when there is neither a usable forecast nor a latest observation.
pub fn served_value(forecast: &Forecast, policy: &ServePolicy, latest: Option<f64>) -> Option<f64> {
    served_value_due(forecast, policy, latest, policy.lead_steps)
}

/// [`served_value`] over the first `due` steps only (see [`steps_due`]); with none
/// due, the latest observation.
pub fn served_value_due(
    forecast: &Forecast,
    policy: &ServePolicy,
    latest: Option<f64>,
    due: usize,
) -> Option<f64> {
    serve(forecast, policy, latest, due).map(|s| s.value)
}

/// How a served value came about: the parts of [`served_value_due`]'s rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Served {
    /// The value served.
    pub value: f64,
    /// Forecast steps due within the lead time (0: none yet, the latest is served).
    pub due: usize,
    /// The largest forecast of the served quantile over those steps.
    pub peak: Option<f64>,
    /// Which step (1-based) that largest forecast is at.
    pub peak_step: Option<usize>,
    /// The reactive floor: the latest observation, or on a grid finer than the
    /// HPA's sync period the served quantile of that period's points
    /// (`floor_points` of them; see [`tracker::Decision::floor`]).
    pub latest: Option<f64>,
    /// Whether the reactive floor set the value.
    pub floor_applied: bool,
    /// The factor for the HPA's tolerance band, `1 + tolerance`.
    pub factor: f64,
    /// How many observed points the floor was taken from (1: the latest).
    pub floor_points: usize,
}

/// How the band of the served quantile was set ([`peak`]): it stands on the
/// largest mean forecast over the lead time, or on the recent level when that is
/// higher (with the reactive floor), and reaches up by the quantile of this series'
/// own recent peak errors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Past peak forecasts whose outcome is known and that set the offset (0: the
    /// model's own quantile, as no outcome is known yet).
    pub outcomes: usize,
    /// The model's largest mean forecast over the lead time.
    pub model_peak: f64,
    /// The recent level the band stands on at least (with the reactive floor).
    pub recent_level: Option<f64>,
    /// Where the band stands: the larger of the two.
    pub base: f64,
    /// The served quantile's offset above `base` (`NAN` when not among the levels).
    pub offset: f64,
}

impl Served {
    /// The rule in words, e.g. `1.1 × max(q0.9 forecast 128.25 at step 1 of 1,
    /// latest 18) = 141.08`.
    pub fn describe(&self, quantile: f64) -> String {
        let latest = match self.latest {
            None => "none".to_string(),
            Some(l) if self.floor_points > 1 => {
                format!("q{quantile} of the last {} points {l}", self.floor_points)
            }
            Some(l) => format!("{l}"),
        };
        let core = match (self.peak, self.peak_step) {
            (Some(p), Some(h)) if self.due > 0 => {
                let fc = format!("q{quantile} forecast {p} at step {h} of {}", self.due);
                if self.floor_applied {
                    format!("max({fc}, latest {latest}): the latest is higher (reactive floor)")
                } else {
                    format!("max({fc}, latest {latest})")
                }
            }
            _ => format!("latest {latest} (no forecast step due within the lead time)"),
        };
        format!("{} × {core} = {}", self.factor, self.value)
    }
}

/// The rule behind [`served_value_due`], with its parts.
pub fn serve(
    forecast: &Forecast,
    policy: &ServePolicy,
    latest: Option<f64>,
    due: usize,
) -> Option<Served> {
    let latest = latest.filter(|v| v.is_finite());
    let factor = policy.factor();
    let only_latest = |l: f64| Served {
        value: l * factor,
        due: 0,
        peak: None,
        peak_step: None,
        latest: Some(l),
        floor_applied: true,
        factor,
        floor_points: 1,
    };
    if due == 0 {
        if let Some(l) = latest {
            return Some(only_latest(l));
        }
    }
    let path = forecast
        .quantile(policy.quantile)
        .unwrap_or(forecast.mean.as_slice());
    let lead = due.max(1).min(path.len());
    let peak = path[..lead]
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .fold(None, |acc: Option<(usize, f64)>, (i, v)| match acc {
            Some((_, a)) if a >= v => acc,
            _ => Some((i, v)),
        });
    match (peak, latest) {
        (Some((i, p)), l) => {
            let floor_applied = policy.reactive_floor && l.is_some_and(|l| l > p);
            let base = if floor_applied { l.unwrap_or(p) } else { p };
            Some(Served {
                value: base * factor,
                due: lead,
                peak: Some(p),
                peak_step: Some(i + 1),
                latest: l,
                floor_applied,
                factor,
                floor_points: 1,
            })
        }
        (None, l) => l.map(only_latest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::QuantilePath;

    fn fc(mean: &[f64], q90: &[f64]) -> Forecast {
        Forecast {
            mean: mean.to_vec(),
            quantiles: vec![QuantilePath {
                q: 0.9,
                values: q90.to_vec(),
            }],
        }
    }

    fn policy(lead_steps: usize, reactive_floor: bool) -> ServePolicy {
        ServePolicy {
            lead_steps,
            lead_ms: 0,
            tolerance: 0.0,
            quantile: 0.9,
            reactive_floor,
        }
    }

    #[test]
    fn serves_the_peak_quantile_within_the_lead_time() {
        let f = fc(&[1.0, 2.0, 3.0, 9.0], &[2.0, 5.0, 4.0, 50.0]);
        assert_eq!(served_value(&f, &policy(3, true), Some(1.0)), Some(5.0));
    }

    #[test]
    fn the_explanation_names_the_step_and_the_floor() {
        let f = fc(&[1.0, 2.0, 3.0], &[2.0, 5.0, 4.0]);
        let mut p = policy(3, true);
        p.tolerance = 0.1;
        let s = serve(&f, &p, Some(1.0), 3).unwrap();
        assert_eq!(
            (s.peak, s.peak_step, s.floor_applied),
            (Some(5.0), Some(2), false)
        );
        assert!((s.value - 5.5).abs() < 1e-12);
        assert_eq!(
            s.describe(0.9),
            format!(
                "1.1 × max(q0.9 forecast 5 at step 2 of 3, latest 1) = {}",
                s.value
            )
        );
        let s = serve(&f, &p, Some(10.0), 3).unwrap();
        assert!(s.floor_applied && (s.value - 11.0).abs() < 1e-12);
        assert!(
            s.describe(0.9).contains("reactive floor"),
            "{}",
            s.describe(0.9)
        );
        let s = serve(&f, &p, Some(10.0), 0).unwrap();
        assert_eq!((s.due, s.peak), (0, None));
        assert!(s.describe(0.9).contains("no forecast step due"));
    }

    #[test]
    fn floor_keeps_the_latest_observation() {
        let f = fc(&[1.0, 2.0], &[2.0, 3.0]);
        assert_eq!(served_value(&f, &policy(2, true), Some(10.0)), Some(10.0));
        assert_eq!(served_value(&f, &policy(2, false), Some(10.0)), Some(3.0));
    }

    #[test]
    fn falls_back_to_mean_then_latest() {
        let f = Forecast {
            mean: vec![4.0, 6.0],
            quantiles: vec![],
        };
        assert_eq!(served_value(&f, &policy(5, false), None), Some(6.0));
        let empty = Forecast {
            mean: vec![],
            quantiles: vec![],
        };
        assert_eq!(served_value(&empty, &policy(5, true), Some(2.0)), Some(2.0));
        assert_eq!(served_value(&empty, &policy(5, true), None), None);
    }
}
