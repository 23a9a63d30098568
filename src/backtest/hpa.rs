//! A model of the Kubernetes HorizontalPodAutoscaler controller for one External
//! metric with an `AverageValue` target.
//!
//! It follows the controller's reconcile step by step: the metric and target are
//! read in milli-units (`Quantity::MilliValue`, which rounds up), the usage ratio is
//! `value / (target × currentReplicas)`, ratios inside the tolerance band keep the
//! current count and others ask for `ceil(value / target)`; the recommendation is
//! then stabilized over the behavior's windows (the lowest recommendation of the
//! scale-up window, the highest of the scale-down window) and limited by the
//! policies' rates, counted from the scale events of each policy's period, and by
//! min/max replicas. Scale events are kept the way the controller keeps them
//! (`storeScaleEvent`): an event older than the longest period of its own direction
//! is marked outdated and its slot is reused by the next event of that direction,
//! so a policy of the other direction with a longer period counts only the events
//! that are still stored.

use std::collections::VecDeque;

use super::behavior::{Behavior, PolicyKind, ScalingRules, SelectPolicy};

/// What the HPA is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaSpec {
    /// `minReplicas`; at least 1 (0 would disable the HPA).
    pub min_replicas: u32,
    /// `maxReplicas`; at least `min_replicas`.
    pub max_replicas: u32,
    /// The `AverageValue` target in milli-units; positive.
    pub target_milli: i64,
    /// `spec.behavior`.
    pub behavior: Behavior,
}

/// Reads a value the way the HPA reads a `Quantity`: milli-units, rounded up.
///
/// A tiny allowance absorbs float noise (`0.1 * 3` is `300m`, not `301m`), as the
/// adapter writes the value as a decimal quantity.
pub fn to_milli(value: f64) -> i64 {
    let m = value * 1000.0;
    let m = if (m - m.round()).abs() < 1e-6 {
        m.round()
    } else {
        m.ceil()
    };
    m.clamp(i64::MIN as f64, i64::MAX as f64) as i64
}

/// The replica count the metric alone asks for (before behavior and limits).
///
/// `currentReplicas` is the number of pods of the scale target; the band is
/// `[1 - down_tolerance, 1 + up_tolerance]` around a usage ratio of 1.
pub fn metric_replicas(
    value_milli: i64,
    target_milli: i64,
    current: u32,
    up_tolerance: f64,
    down_tolerance: f64,
) -> u32 {
    let usage = value_milli.max(0) as f64;
    let target = target_milli.max(1) as f64;
    let ratio = usage / (target * f64::from(current.max(1)));
    if (1.0 - down_tolerance) <= ratio && ratio <= (1.0 + up_tolerance) {
        return current;
    }
    (usage / target).ceil().min(f64::from(u32::MAX)) as u32
}

#[derive(Debug, Clone, Copy)]
struct Stamped {
    t_ms: i64,
    replicas: u32,
}

/// A scale event as the controller stores it (`timestampedScaleEvent`).
#[derive(Debug, Clone, Copy)]
struct ScaleEvent {
    t_ms: i64,
    change: u32,
    /// Older than the longest policy period of its direction when last checked:
    /// its slot is reused by the next event of that direction.
    outdated: bool,
}

/// The HPA controller's state for one HPA.
#[derive(Debug, Clone)]
pub struct Hpa {
    spec: HpaSpec,
    recommendations: VecDeque<Stamped>,
    scale_up_events: Vec<ScaleEvent>,
    scale_down_events: Vec<ScaleEvent>,
    initialized: bool,
}

impl Hpa {
    /// A controller that has not reconciled yet.
    pub fn new(spec: HpaSpec) -> Self {
        Self {
            spec,
            recommendations: VecDeque::new(),
            scale_up_events: Vec::new(),
            scale_down_events: Vec::new(),
            initialized: false,
        }
    }

    /// The spec this controller runs.
    pub fn spec(&self) -> &HpaSpec {
        &self.spec
    }

    /// One reconcile at `now_ms`: the replica count to set, given the current count
    /// and the metric value (`None` when the metric cannot be read: the HPA then
    /// keeps the current count, as the controller does on metric errors).
    pub fn reconcile(&mut self, now_ms: i64, current: u32, value: Option<f64>) -> u32 {
        if !self.initialized {
            // The controller seeds the scale-down window with the current count so a
            // restart does not scale down at once.
            self.recommendations.push_back(Stamped {
                t_ms: now_ms,
                replicas: current,
            });
            self.initialized = true;
        }
        let desired = if current == 0 {
            // Scaled to zero by hand: autoscaling is disabled.
            0
        } else if current > self.spec.max_replicas {
            self.spec.max_replicas
        } else if current < self.spec.min_replicas {
            self.spec.min_replicas
        } else {
            let Some(value) = value.filter(|v| v.is_finite()) else {
                return current;
            };
            let b = &self.spec.behavior;
            let wanted = metric_replicas(
                to_milli(value),
                self.spec.target_milli,
                current,
                b.scale_up.tolerance,
                b.scale_down.tolerance,
            );
            let stabilized = self.stabilize(now_ms, current, wanted);
            self.limit_rate(now_ms, current, stabilized)
        };
        if desired != current {
            self.store_event(now_ms, current, desired);
        }
        desired
    }

    /// `stabilizeRecommendationWithBehaviors`: the scale-up bound is the lowest
    /// recommendation in the scale-up window, the scale-down bound the highest in
    /// the scale-down window; the current count is moved just inside the bounds.
    fn stabilize(&mut self, now_ms: i64, current: u32, wanted: u32) -> u32 {
        let up_cutoff =
            now_ms - i64::from(self.spec.behavior.scale_up.stabilization_window_s) * 1000;
        let down_cutoff =
            now_ms - i64::from(self.spec.behavior.scale_down.stabilization_window_s) * 1000;
        let mut up = wanted;
        let mut down = wanted;
        for r in &self.recommendations {
            if r.t_ms > up_cutoff {
                up = up.min(r.replicas);
            }
            if r.t_ms > down_cutoff {
                down = down.max(r.replicas);
            }
        }
        let oldest_needed = up_cutoff.min(down_cutoff);
        while self
            .recommendations
            .front()
            .is_some_and(|r| r.t_ms <= oldest_needed)
        {
            self.recommendations.pop_front();
        }
        self.recommendations.push_back(Stamped {
            t_ms: now_ms,
            replicas: wanted,
        });
        current.max(up).min(down)
    }

    /// `convertDesiredReplicasWithBehaviorRate`: policies and min/max replicas.
    fn limit_rate(&mut self, now_ms: i64, current: u32, desired: u32) -> u32 {
        let b = &self.spec.behavior;
        if desired > current {
            let limit = scale_up_limit(
                current,
                &self.scale_up_events,
                &self.scale_down_events,
                &b.scale_up,
                now_ms,
            )
            .max(i64::from(current));
            let allowed = limit.min(i64::from(self.spec.max_replicas));
            (i64::from(desired).min(allowed)) as u32
        } else if desired < current {
            let limit = scale_down_limit(
                current,
                &self.scale_up_events,
                &self.scale_down_events,
                &b.scale_down,
                now_ms,
            )
            .min(i64::from(current));
            let allowed = limit.max(i64::from(self.spec.min_replicas));
            (i64::from(desired).max(allowed)) as u32
        } else {
            desired
        }
    }

    /// `storeScaleEvent`: events older than the longest policy period of their
    /// direction are marked outdated, and the last outdated slot is overwritten by
    /// the new event (appended when there is none).
    fn store_event(&mut self, now_ms: i64, from: u32, to: u32) {
        let (events, change, longest_s) = if to > from {
            (
                &mut self.scale_up_events,
                to - from,
                self.spec.behavior.scale_up.longest_period_s(),
            )
        } else {
            (
                &mut self.scale_down_events,
                from - to,
                self.spec.behavior.scale_down.longest_period_s(),
            )
        };
        let cutoff = now_ms - i64::from(longest_s) * 1000;
        for e in events.iter_mut() {
            if e.t_ms < cutoff {
                e.outdated = true;
            }
        }
        let event = ScaleEvent {
            t_ms: now_ms,
            change,
            outdated: false,
        };
        match events.iter().rposition(|e| e.outdated) {
            Some(i) => events[i] = event,
            None => events.push(event),
        }
    }
}

/// `getReplicasChangePerPeriod`: the sum of the stored changes recorded strictly
/// after `now - period` (outdated ones too, until their slot is reused).
fn change_in_period(events: &[ScaleEvent], period_s: u32, now_ms: i64) -> i64 {
    let cutoff = now_ms - i64::from(period_s) * 1000;
    events
        .iter()
        .filter(|e| e.t_ms > cutoff)
        .map(|e| i64::from(e.change))
        .sum()
}

fn period_start(
    current: u32,
    ups: &[ScaleEvent],
    downs: &[ScaleEvent],
    period_s: u32,
    now_ms: i64,
) -> i64 {
    i64::from(current) - change_in_period(ups, period_s, now_ms)
        + change_in_period(downs, period_s, now_ms)
}

/// `calculateScaleUpLimitWithScalingRules`.
fn scale_up_limit(
    current: u32,
    ups: &[ScaleEvent],
    downs: &[ScaleEvent],
    rules: &ScalingRules,
    now_ms: i64,
) -> i64 {
    let pick: fn(i64, i64) -> i64 = match rules.select_policy {
        SelectPolicy::Disabled => return i64::from(current),
        SelectPolicy::Min => i64::min,
        SelectPolicy::Max => i64::max,
    };
    let mut result: Option<i64> = None;
    for p in &rules.policies {
        let start = period_start(current, ups, downs, p.period_s, now_ms);
        let proposed = match p.kind {
            PolicyKind::Pods => start + i64::from(p.value),
            PolicyKind::Percent => {
                (start as f64 * (1.0 + f64::from(p.value) / 100.0)).ceil() as i64
            }
        };
        result = Some(result.map_or(proposed, |r| pick(r, proposed)));
    }
    result.unwrap_or(i64::from(current))
}

/// `calculateScaleDownLimitWithBehaviors`: the `Min` policy (smallest change)
/// yields the largest count.
fn scale_down_limit(
    current: u32,
    ups: &[ScaleEvent],
    downs: &[ScaleEvent],
    rules: &ScalingRules,
    now_ms: i64,
) -> i64 {
    let pick: fn(i64, i64) -> i64 = match rules.select_policy {
        SelectPolicy::Disabled => return i64::from(current),
        SelectPolicy::Min => i64::max,
        SelectPolicy::Max => i64::min,
    };
    let mut result: Option<i64> = None;
    for p in &rules.policies {
        let start = period_start(current, ups, downs, p.period_s, now_ms);
        let proposed = match p.kind {
            PolicyKind::Pods => start - i64::from(p.value),
            // The controller truncates toward zero here.
            PolicyKind::Percent => (start as f64 * (1.0 - f64::from(p.value) / 100.0)) as i64,
        };
        result = Some(result.map_or(proposed, |r| pick(r, proposed)));
    }
    result.unwrap_or(i64::from(current))
}
