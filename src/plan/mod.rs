//! From forecasts to decisions: what an HPA should see.
//!
//! Pure and synchronous; the engine and the backtester call the same functions.

pub mod choice;
pub mod nodepool;
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
    let latest = latest.filter(|v| v.is_finite());
    if due == 0 && latest.is_some() {
        return latest.map(|l| l * (1.0 + policy.tolerance.max(0.0)));
    }
    let path = forecast
        .quantile(policy.quantile)
        .unwrap_or(forecast.mean.as_slice());
    let lead = due.max(1).min(path.len());
    let peak = path[..lead]
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(None, |acc: Option<f64>, v| {
            Some(acc.map_or(v, |a| a.max(v)))
        });
    let f = 1.0 + policy.tolerance.max(0.0);
    match (peak, latest) {
        (Some(p), Some(l)) if policy.reactive_floor => Some(p.max(l) * f),
        (Some(p), _) => Some(p * f),
        (None, l) => l.map(|l| l * f),
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
