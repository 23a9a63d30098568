//! Tests of the HPA model against hand-computed cases, and of the replay.

use proptest::prelude::*;

use super::behavior::{Behavior, Policy, PolicyKind, ScalingRules, SelectPolicy};
use super::hpa::{metric_replicas, to_milli, Hpa, HpaSpec};
use super::sim::Strategy;
use super::*;
use crate::forecast::ModelSpec;
use crate::series::Series;

const S: i64 = 1000;

fn hpa(min: u32, max: u32, target: f64, behavior: Behavior) -> Hpa {
    Hpa::new(HpaSpec {
        min_replicas: min,
        max_replicas: max,
        target_milli: to_milli(target),
        behavior,
    })
}

/// Behavior with no stabilization, to look at policies alone.
fn no_windows() -> Behavior {
    let mut b = Behavior::default();
    b.scale_down.stabilization_window_s = 0;
    b
}

/// Runs syncs every 15 s from t = 0 with the given values; returns the counts.
fn run(h: &mut Hpa, start: u32, values: &[f64]) -> Vec<u32> {
    let mut current = start;
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            current = h.reconcile(i as i64 * 15 * S, current, Some(v));
            current
        })
        .collect()
}

#[test]
fn milli_values_round_up_like_quantities() {
    assert_eq!(to_milli(0.3), 300);
    assert_eq!(to_milli(0.1 * 3.0), 300);
    assert_eq!(to_milli(0.0001), 1);
    assert_eq!(to_milli(2.5), 2500);
}

#[test]
fn tolerance_band_keeps_the_current_count() {
    // 10 replicas, target 100 per replica: ratio value / 1000.
    assert_eq!(metric_replicas(1_050_000, 100_000, 10, 0.1, 0.1), 10);
    assert_eq!(
        metric_replicas(1_100_000, 100_000, 10, 0.1, 0.1),
        10,
        "1.1 is inside"
    );
    assert_eq!(
        metric_replicas(1_101_000, 100_000, 10, 0.1, 0.1),
        12,
        "ceil(11.01)"
    );
    assert_eq!(
        metric_replicas(900_000, 100_000, 10, 0.1, 0.1),
        10,
        "0.9 is inside"
    );
    assert_eq!(
        metric_replicas(899_000, 100_000, 10, 0.1, 0.1),
        9,
        "ceil(8.99)"
    );
    // Per-direction tolerances: scale up at +2 %, down only at -50 %.
    assert_eq!(metric_replicas(1_030_000, 100_000, 10, 0.02, 0.5), 11);
    assert_eq!(metric_replicas(600_000, 100_000, 10, 0.02, 0.5), 10);
    assert_eq!(metric_replicas(400_000, 100_000, 10, 0.02, 0.5), 4);
    // The docs' doubling example: 200m per pod against a 100m target doubles.
    assert_eq!(metric_replicas(200 * 4, 100, 4, 0.1, 0.1), 8);
}

#[test]
fn tolerance_band_in_a_whole_reconcile() {
    let mut h = hpa(1, 100, 100.0, Behavior::default());
    assert_eq!(h.reconcile(0, 10, Some(1_080.0)), 10);
    assert_eq!(h.reconcile(15 * S, 10, Some(1_120.0)), 12);
}

#[test]
fn scale_down_stabilization_holds_the_highest_recommendation() {
    let mut h = hpa(1, 100, 1.0, Behavior::default());
    // Recommendations 10 at t=0 (and the seeded current 10), then 8 at 15 s,
    // 6 at 30 s, then 4 from 45 s on.
    let mut values = vec![10.0, 8.0, 6.0];
    values.extend(std::iter::repeat_n(4.0, 40));
    let counts = run(&mut h, 10, &values);
    // The window is 300 s and strict: a recommendation made at t counts while
    // now - 300 s < t. The 10s of t = 0 hold until 285 s, the 8 until 300 s, the 6
    // until 315 s; at 330 s only 4s remain.
    for (i, &c) in counts.iter().enumerate() {
        let t = i as i64 * 15;
        let expected = match t {
            0..=285 => 10,
            300 => 8,
            315 => 6,
            _ => 4,
        };
        assert_eq!(c, expected, "at {t} s");
    }
}

#[test]
fn scale_up_stabilization_takes_the_lowest_recommendation() {
    let mut b = Behavior::default();
    b.scale_up.stabilization_window_s = 60;
    let mut h = hpa(1, 100, 1.0, b);
    // The seeded 5 at t = 0 keeps the scale-up bound at 5 until it leaves the window.
    let counts = run(&mut h, 5, &[5.0, 9.0, 9.0, 9.0, 9.0, 9.0]);
    assert_eq!(counts, vec![5, 5, 5, 5, 9, 9]);
}

#[test]
fn default_scale_up_is_the_larger_of_100_percent_and_4_pods_per_15_s() {
    let mut h = hpa(1, 1000, 1.0, Behavior::default());
    let counts = run(&mut h, 1, &[100.0; 7]);
    // 1 -> max(2, 5) = 5 -> max(10, 9) = 10 -> 20 -> 40 -> 80 -> 100.
    assert_eq!(counts, vec![5, 10, 20, 40, 80, 100, 100]);
}

fn docs_scale_down(select: SelectPolicy) -> Behavior {
    // The scale-down example of the Kubernetes HPA docs: 4 pods or 10 % per minute.
    let mut b = no_windows();
    b.scale_down = ScalingRules {
        stabilization_window_s: 0,
        select_policy: select,
        policies: vec![
            Policy {
                kind: PolicyKind::Pods,
                value: 4,
                period_s: 60,
            },
            Policy {
                kind: PolicyKind::Percent,
                value: 10,
                period_s: 60,
            },
        ],
        tolerance: 0.1,
    };
    b
}

#[test]
fn policy_max_picks_the_largest_change() {
    let mut h = hpa(1, 100, 1.0, docs_scale_down(SelectPolicy::Max));
    let counts = run(&mut h, 80, &[10.0; 9]);
    // 80 -> 72 (10 % beats 4 pods); nothing more within the minute, since the period
    // started at 80; at 60 s 72 -> int(64.8) = 64 (the docs' "7.2 rounded up to 8").
    assert_eq!(counts, vec![72, 72, 72, 72, 64, 64, 64, 64, 57]);
}

#[test]
fn policy_min_picks_the_smallest_change() {
    let mut h = hpa(1, 100, 1.0, docs_scale_down(SelectPolicy::Min));
    let counts = run(&mut h, 80, &[10.0; 5]);
    // 80 -> max(76, 72) = 76; at 60 s 76 -> max(72, 68) = 72.
    assert_eq!(counts, vec![76, 76, 76, 76, 72]);
}

#[test]
fn policy_disabled_stops_that_direction() {
    let mut h = hpa(1, 100, 1.0, docs_scale_down(SelectPolicy::Disabled));
    assert_eq!(run(&mut h, 80, &[10.0; 4]), vec![80; 4]);
    let mut b = Behavior::default();
    b.scale_up.select_policy = SelectPolicy::Disabled;
    let mut h = hpa(1, 100, 1.0, b);
    assert_eq!(run(&mut h, 5, &[50.0; 3]), vec![5; 3]);
}

#[test]
fn scale_up_pods_policy_counts_changes_within_its_period() {
    let mut b = Behavior::default();
    b.scale_up.policies = vec![Policy {
        kind: PolicyKind::Pods,
        value: 3,
        period_s: 60,
    }];
    let mut h = hpa(1, 100, 1.0, b);
    // 3 pods per minute: 10 -> 13, held for the minute, then 16.
    assert_eq!(run(&mut h, 10, &[30.0; 5]), vec![13, 13, 13, 13, 16]);
}

#[test]
fn scale_events_are_kept_as_the_controller_keeps_them() {
    // Scale-down: 1 pod per 15 s, no window; scale-up: 1 pod per 60 s, which
    // counts the scale-downs of its minute in its starting count. The controller
    // (storeScaleEvent) marks a scale-down older than 15 s outdated and lets the
    // next scale-down overwrite it, so at 60 s only the downs of 30 s and 45 s are
    // still stored: the minute started at 6 + 2 = 8, the limit is 9 (counting all
    // three downs within the minute would allow 10).
    let mut b = no_windows();
    b.scale_down.policies = vec![Policy {
        kind: PolicyKind::Pods,
        value: 1,
        period_s: 15,
    }];
    b.scale_up.policies = vec![Policy {
        kind: PolicyKind::Pods,
        value: 1,
        period_s: 60,
    }];
    let mut h = hpa(1, 100, 1.0, b);
    assert_eq!(
        run(&mut h, 10, &[5.0, 5.0, 5.0, 5.0, 10.0]),
        vec![9, 8, 7, 6, 9]
    );
}

#[test]
fn min_and_max_replicas_clamp() {
    let mut h = hpa(3, 15, 1.0, no_windows());
    assert_eq!(h.reconcile(0, 10, Some(50.0)), 15, "max replicas");
    let mut h = hpa(3, 15, 1.0, no_windows());
    assert_eq!(h.reconcile(0, 10, Some(0.0)), 3, "min replicas");
    let mut h = hpa(3, 15, 1.0, no_windows());
    assert_eq!(
        h.reconcile(0, 20, Some(20.0)),
        15,
        "above max is brought to max"
    );
    let mut h = hpa(3, 15, 1.0, no_windows());
    assert_eq!(
        h.reconcile(0, 1, Some(1.0)),
        3,
        "below min is brought to min"
    );
}

#[test]
fn a_missing_metric_holds_the_count() {
    let mut h = hpa(1, 100, 1.0, no_windows());
    assert_eq!(h.reconcile(0, 7, None), 7);
    assert_eq!(h.reconcile(15 * S, 7, Some(f64::NAN)), 7);
}

// ---- the replay ----

fn series(step_s: i64, values: Vec<f64>) -> Series {
    Series {
        start_ms: 1_700_000_000_000,
        step_ms: step_s * S,
        values,
    }
}

fn scenario(lead_s: i64) -> Scenario {
    let plan = ForecastPlan::new(ModelSpec::by_name("auto").unwrap(), 0.9);
    Scenario::new(1.0, lead_s * S, plan)
}

#[test]
fn a_step_up_costs_reactive_one_pod_start_and_oracle_nothing() {
    let mut v = vec![10.0; 30];
    v.extend(vec![20.0; 30]);
    let s = series(60, v);
    let r = backtest("step", &s, &scenario(180)).unwrap();
    let reactive = r.run(Strategy::Reactive).unwrap().measures;
    // The jump at 30 min is read at once (a sync falls on the grid point); the 10
    // new pods are ready 30 s later: 10 replicas × 0.5 min.
    assert!(
        (reactive.under_provisioned_replica_minutes - 5.0).abs() < 1e-9,
        "{reactive:?}"
    );
    assert!((reactive.under_provisioned_minutes - 0.5).abs() < 1e-9);
    assert!((reactive.peak_shortfall_replicas - 10.0).abs() < 1e-9);
    assert_eq!(reactive.scale_events, 1);
    // 10 pods for 30 min, 20 placed for the last 30 min.
    assert!((reactive.replica_hours - 15.0).abs() < 1e-9);
    let oracle = r.run(Strategy::Oracle).unwrap().measures;
    assert_eq!(oracle.under_provisioned_replica_minutes, 0.0);
    // It scaled 3 minutes early: 10 pods × 3 min more.
    assert!((oracle.replica_hours - 15.5).abs() < 1e-9, "{oracle:?}");
}

#[test]
fn nodes_delay_the_reactive_run_by_their_provisioning_time() {
    let mut v = vec![8.0; 30];
    v.extend(vec![16.0; 30]);
    let s = series(60, v);
    let mut sc = scenario(240);
    sc.capacity.pool = Some(NodePool {
        pods_per_node: 4,
        provisioning_ms: 180 * S,
        unneeded_ms: 600 * S,
    });
    let r = backtest("nodes", &s, &sc).unwrap();
    let reactive = r.run(Strategy::Reactive).unwrap().measures;
    // 8 replicas short for 3 min (nodes) + 30 s (start-up).
    assert!(
        (reactive.under_provisioned_replica_minutes - 28.0).abs() < 1e-9,
        "{reactive:?}"
    );
    // 2 nodes for 30 min, then 4 (2 of them ordered at the jump).
    assert!((reactive.node_hours - 3.0).abs() < 1e-9, "{reactive:?}");
    let oracle = r.run(Strategy::Oracle).unwrap().measures;
    assert_eq!(oracle.under_provisioned_replica_minutes, 0.0, "{oracle:?}");
}

#[test]
fn inside_the_tolerance_band_demand_goes_unserved() {
    let mut v = vec![10.0; 30];
    v.extend(vec![10.8; 30]);
    let r = simulate(&series(60, v), &scenario(180), Strategy::Reactive).unwrap();
    // Ratio 1.08 is within 0.1: 0.8 replicas short for 30 min.
    assert!((r.measures.under_provisioned_replica_minutes - 24.0).abs() < 1e-6);
    assert_eq!(r.measures.scale_events, 0);
}

#[test]
fn gaps_cost_capacity_but_are_not_scored_as_shortfalls() {
    let mut v = vec![10.0; 30];
    v.extend(vec![f64::NAN; 10]);
    v.extend(vec![10.8; 20]);
    let r = simulate(&series(60, v), &scenario(180), Strategy::Reactive).unwrap();
    // Only the 20 observed minutes at 10.8 count: 0.8 × 20.
    assert!((r.measures.under_provisioned_replica_minutes - 16.0).abs() < 1e-6);
    assert!((r.measures.replica_hours - 10.0).abs() < 1e-9);
}

#[test]
fn predictive_sees_a_daily_peak_coming() {
    // Hourly trace, a sharp daily peak: seasonal models see it a step ahead.
    let v: Vec<f64> = (0..24 * 8)
        .map(|i| if i % 24 == 12 { 40.0 } else { 10.0 })
        .collect();
    let r = backtest("daily", &series(3600, v), &scenario(180)).unwrap();
    let reactive = r.run(Strategy::Reactive).unwrap();
    let predictive = r.run(Strategy::Predictive).unwrap();
    assert!(reactive.measures.under_provisioned_replica_minutes > 0.0);
    assert!(
        predictive.measures.under_provisioned_replica_minutes
            < reactive.measures.under_provisioned_replica_minutes,
        "{:?} vs {:?}",
        predictive.measures,
        reactive.measures
    );
    let acc = predictive.forecast.as_ref().unwrap();
    assert!(acc.scored > 0, "{acc:?}");
}

#[test]
fn bad_traces_and_targets_are_clear_errors() {
    let sc = scenario(180);
    assert!(matches!(
        backtest("e", &series(60, vec![]), &sc),
        Err(Error::Empty)
    ));
    assert!(matches!(
        backtest("one", &series(60, vec![5.0]), &sc),
        Err(Error::TooFewPoints { got: 1 })
    ));
    assert!(matches!(
        backtest("gaps", &series(60, vec![f64::NAN, 5.0, f64::NAN]), &sc),
        Err(Error::TooFewPoints { got: 1 })
    ));
    assert!(matches!(
        backtest("short", &series(60, vec![1.0, 2.0]), &sc),
        Err(Error::ShorterThanLeadTime {
            span_s: 120,
            lead_s: 180
        })
    ));
    for t in [0.0, -1.0, f64::NAN, 0.0001] {
        let mut sc = scenario(180);
        sc.capacity_per_replica = t;
        let e = backtest("t", &series(60, vec![1.0; 10]), &sc).unwrap_err();
        assert!(matches!(e, Error::BadTarget(_)), "{e}");
    }
    assert!(matches!(auto_target(&[0.0, 0.0]), Err(Error::NoAutoTarget)));
    let a = auto_target(&[1.0, 50.0, 100.0]).unwrap();
    assert_eq!((a.capacity_per_replica, a.unit_scale), (500.0, 100.0));
    let a = auto_target(&[0.0, 0.0, 0.0, 0.4416, 0.52]).unwrap();
    assert_eq!(
        a.unit_scale, 1e4,
        "median 0, mean 0.19232 / 10 -> 0.019232, scaled to 192.32"
    );
    assert_eq!(a.capacity_per_replica, 192.0);
}

#[test]
fn plots_are_drawn_with_labels_in_svg() {
    let v: Vec<f64> = (0..120).map(|i| 10.0 + (i % 20) as f64).collect();
    let r = backtest("saw", &series(60, v), &scenario(180)).unwrap();
    let svg = plot::svg(&r).unwrap();
    assert!(svg.starts_with("<svg") || svg.contains("<svg"));
    assert!(svg.contains(">ready (predictive)</text>"));
    assert!(svg.trim_end().ends_with("</svg>"));
}

/// The `<text>` elements of an SVG: (x, y, anchor, size, rotated, content).
fn svg_labels(svg: &str) -> Vec<(f64, f64, String, u32, bool, String)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        Some(tag[at..].split('"').next()?.to_string())
    };
    svg.split("<text")
        .skip(1)
        .filter_map(|rest| {
            let (tag, after) = rest.split_once('>')?;
            let content = after.split("</text>").next()?.to_string();
            Some((
                attr(tag, "x")?.parse().ok()?,
                attr(tag, "y")?.parse().ok()?,
                attr(tag, "text-anchor")?,
                attr(tag, "font-size")?.parse().ok()?,
                tag.contains("rotate("),
                content,
            ))
        })
        .collect()
}

#[test]
fn plot_labels_stay_inside_the_picture_and_ticks_are_distinct() {
    for (len, step_s, level) in [(120, 60, 2.2), (600, 300, 13.0), (2000, 60, 1234.0)] {
        let v: Vec<f64> = (0..len)
            .map(|i| level * (1.0 + (i % 20) as f64 / 20.0))
            .collect();
        let r = backtest("t", &series(step_s, v), &scenario(180)).unwrap();
        let svg = plot::svg(&r).unwrap();
        let labels = svg_labels(&svg);
        assert!(labels.len() > 20, "{svg}");
        for (x, y, anchor, size, rotated, s) in &labels {
            let w = 0.6 * f64::from(*size) * s.chars().count() as f64;
            if *rotated {
                // Runs upwards: its length is vertical, centred on y.
                assert!(*x - f64::from(*size) >= 0.0, "{s} at {x}");
                assert!(
                    *y - w / 2.0 >= 0.0 && *y + w / 2.0 <= f64::from(plot::HEIGHT),
                    "{s}"
                );
                continue;
            }
            let (left, right) = match anchor.as_str() {
                "start" => (*x, x + w),
                "end" => (x - w, *x),
                _ => (x - w / 2.0, x + w / 2.0),
            };
            assert!(
                left >= 0.0 && right <= f64::from(plot::WIDTH),
                "{s:?} spans {left:.0}..{right:.0} (level {level})"
            );
        }
        // Tick labels of one panel (same y) are all different numbers.
        let mut by_row: std::collections::BTreeMap<i64, Vec<&str>> = Default::default();
        for (_, y, anchor, _, rotated, s) in &labels {
            if anchor == "end" && !rotated {
                by_row.entry(0).or_default();
                let _ = y;
            }
            if anchor == "middle" && !rotated && s.ends_with(" h") {
                by_row.entry(*y as i64).or_default().push(s);
            }
        }
        for row in by_row.values() {
            let set: std::collections::BTreeSet<&&str> = row.iter().collect();
            assert_eq!(set.len(), row.len(), "x ticks repeat: {row:?}");
        }
        let y_ticks: Vec<&str> = labels
            .iter()
            .filter(|l| l.2 == "end" && !l.4)
            .map(|l| l.5.as_str())
            .collect();
        let first_panel = &y_ticks[..y_ticks.len() / 3];
        let set: std::collections::BTreeSet<&&str> = first_panel.iter().collect();
        assert_eq!(
            set.len(),
            first_panel.len(),
            "y ticks repeat: {first_panel:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// The predictive run's decisions up to grid point k depend only on points
    /// 0..=k: changing everything after k changes nothing before k + 1.
    #[test]
    fn predictive_decisions_do_not_look_ahead(
        head in proptest::collection::vec(0.0f64..100.0, 60),
        tail in proptest::collection::vec(0.0f64..100.0, 20),
        k in 30usize..59,
    ) {
        let mut other = head.clone();
        for (i, v) in tail.iter().enumerate() {
            if k + 1 + i < other.len() {
                other[k + 1 + i] = *v;
            }
        }
        let mut sc = scenario(7200);
        sc.keep_ticks = true;
        let a = simulate(&series(3600, head), &sc, Strategy::Predictive).unwrap();
        let b = simulate(&series(3600, other), &sc, Strategy::Predictive).unwrap();
        let cut = 1_700_000_000_000 + (k as i64 + 1) * 3600 * S;
        let before = |r: &Run| r.ticks.iter().filter(|t| t.t_ms < cut).copied().collect::<Vec<_>>();
        prop_assert!(!before(&a).is_empty());
        prop_assert_eq!(before(&a), before(&b));
    }

    /// The same on a 1-second grid, finer than the HPA's sync period, where the
    /// floor is a quantile of the last 15 s of points: warming for the first 30
    /// points, forecasting after them.
    #[test]
    fn predictive_decisions_do_not_look_ahead_below_the_sync_period(
        head in proptest::collection::vec(0.0f64..100.0, 120),
        tail in proptest::collection::vec(0.0f64..100.0, 30),
        k in 20usize..110,
    ) {
        let mut other = head.clone();
        for (i, v) in tail.iter().enumerate() {
            if k + 1 + i < other.len() {
                other[k + 1 + i] = *v;
            }
        }
        let mut sc = scenario(30);
        sc.forecast.min_history_ms = 30 * S;
        sc.keep_ticks = true;
        let a = simulate(&series(1, head), &sc, Strategy::Predictive).unwrap();
        let b = simulate(&series(1, other), &sc, Strategy::Predictive).unwrap();
        let cut = 1_700_000_000_000 + (k as i64 + 1) * S;
        let before = |r: &Run| r.ticks.iter().filter(|t| t.t_ms < cut).copied().collect::<Vec<_>>();
        prop_assert!(!before(&a).is_empty());
        prop_assert_eq!(before(&a), before(&b));
    }
}

#[test]
fn the_aggregate_sums_traces_and_averages_their_changes() {
    let mut step = vec![10.0; 30];
    step.extend(vec![20.0; 30]);
    let daily: Vec<f64> = (0..24 * 4)
        .map(|i| if i % 24 == 12 { 40.0 } else { 10.0 })
        .collect();
    let a = backtest("step", &series(60, step), &scenario(180)).unwrap();
    let b = backtest("daily", &series(3600, daily), &scenario(180)).unwrap();
    let agg = Aggregate::new(&[a.clone(), b.clone()]);
    let m = |t: &TraceResult, s| t.run(s).unwrap().measures;
    let sum = m(&a, Strategy::Reactive).replica_hours + m(&b, Strategy::Reactive).replica_hours;
    assert!((agg.reactive.replica_hours - sum).abs() < 1e-9);
    assert_eq!(agg.traces, 2);
    let change = |t: &TraceResult| {
        let (r, p) = (m(t, Strategy::Reactive), m(t, Strategy::Predictive));
        (p.replica_hours - r.replica_hours) / r.replica_hours * 100.0
    };
    let expected = (change(&a) + change(&b)) / 2.0;
    let got = agg.mean_trace_replica_hours_change_pct.unwrap();
    assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
}

// ---- capacity, headroom and what lies beyond maxReplicas ----

#[test]
fn shortfall_is_against_capacity_and_headroom_costs_replicas() {
    // Capacity 100 per replica; demand 1000 for 30 min then 1500 for 30 min.
    let mut v = vec![1000.0; 30];
    v.extend(vec![1500.0; 30]);
    let s = series(60, v);
    let mut sc = scenario(180);
    sc.capacity_per_replica = 100.0;
    // Without headroom: 10 replicas, then 15 ready 30 s after the jump is read.
    let r = simulate(&s, &sc, Strategy::Reactive).unwrap().measures;
    assert!(
        (r.under_provisioned_replica_minutes - 5.0 * 0.5).abs() < 1e-9,
        "{r:?}"
    );
    assert!(
        (r.replica_hours - (10.0 * 0.5 + 15.0 * 0.5)).abs() < 1e-9,
        "{r:?}"
    );
    assert!((r.demand_replica_minutes - (10.0 * 30.0 + 15.0 * 30.0)).abs() < 1e-9);
    // Headroom 20 %: target 80, so ceil(1000/80) = 13 replicas, then ceil(1500/80) = 19.
    // The 13 ready replicas carry 1300 < 1500: 2 replicas short for the 30 s start-up.
    sc.headroom = 0.2;
    let h = simulate(&s, &sc, Strategy::Reactive).unwrap().measures;
    assert!(
        (h.under_provisioned_replica_minutes - 2.0 * 0.5).abs() < 1e-9,
        "{h:?}"
    );
    assert!((h.under_provisioned_minutes - 0.5).abs() < 1e-9, "{h:?}");
    assert!(
        (h.replica_hours - (13.0 * 0.5 + 19.0 * 0.5)).abs() < 1e-9,
        "{h:?}"
    );
    // Headroom 40 %: target 60 -> 17 replicas carry 1700: never short.
    sc.headroom = 0.4;
    let h = simulate(&s, &sc, Strategy::Reactive).unwrap().measures;
    assert_eq!(h.under_provisioned_replica_minutes, 0.0, "{h:?}");
    // The oracle plans on capacity, not on the target: headroom costs it nothing.
    let o = simulate(&s, &sc, Strategy::Oracle).unwrap().measures;
    assert_eq!(o.under_provisioned_replica_minutes, 0.0);
    assert!(
        (o.replica_hours - (10.0 * 27.0 + 15.0 * 33.0) / 60.0).abs() < 1e-9,
        "{o:?}"
    );
}

#[test]
fn demand_beyond_max_replicas_is_counted_apart() {
    // Capacity 1 per replica, maxReplicas 12; demand 10, then 20 for 30 min.
    let mut v = vec![10.0; 30];
    v.extend(vec![20.0; 30]);
    let mut sc = scenario(180);
    sc.max_replicas = 12;
    let r = simulate(&series(60, v), &sc, Strategy::Reactive)
        .unwrap()
        .measures;
    // 8 replicas of demand above the maximum for 30 min; the shortfall is only the
    // 2 replicas up to 12 during the 30 s start-up.
    assert!(
        (r.beyond_max_replica_minutes - 8.0 * 30.0).abs() < 1e-9,
        "{r:?}"
    );
    assert!((r.beyond_max_minutes - 30.0).abs() < 1e-9, "{r:?}");
    assert!(
        (r.under_provisioned_replica_minutes - 2.0 * 0.5).abs() < 1e-9,
        "{r:?}"
    );
    let o = simulate(&series(60, vec![10.0; 10]), &sc, Strategy::Oracle)
        .unwrap()
        .measures;
    assert_eq!(o.beyond_max_replica_minutes, 0.0);
}

#[test]
fn headroom_out_of_range_is_a_clear_error() {
    for h in [1.0, 1.5, -1.5, f64::NAN] {
        let mut sc = scenario(180);
        sc.headroom = h;
        let e = simulate(&series(60, vec![1.0; 10]), &sc, Strategy::Reactive).unwrap_err();
        assert!(e.to_string().contains("headroom"), "{e}");
    }
}

// ---- the serving rule on the simulated clock ----

#[test]
fn a_lead_time_shorter_than_the_step_brings_the_next_step_in_late() {
    // A 5-minute grid, lead time 2 min, a daily-periodic step pattern the
    // seasonal naive model knows: the predictive run must scale for each coming
    // rise only in the last 2 minutes before it, not for the whole step.
    let day = 288;
    let v: Vec<f64> = (0..day * 9)
        .map(|i| if (i / 6) % 2 == 0 { 10.0 } else { 20.0 })
        .collect();
    let mut sc = scenario(120);
    sc.forecast.spec = ModelSpec::by_name("seasonal-naive").unwrap();
    sc.keep_ticks = true;
    let s = series(300, v);
    let r = simulate(&s, &sc, Strategy::Predictive).unwrap();
    // Look at the last day: each rise happens at a grid point i with i/6 odd.
    let t0 = s.start_ms;
    let mut checked = 0;
    for i in (day * 8..day * 9 - 1).filter(|i| i % 6 == 0 && (i / 6) % 2 == 1) {
        let rise = t0 + i as i64 * 300 * S;
        let metric_at = |t: i64| {
            r.ticks
                .iter()
                .rev()
                .find(|k| k.t_ms <= t)
                .and_then(|k| k.metric)
                .unwrap()
        };
        // Three minutes before the rise the 10 still holds; from two minutes
        // before it the forecast of the rise is served.
        assert!(metric_at(rise - 180 * S) < 15.0, "at {i}");
        assert!(metric_at(rise - 105 * S) >= 19.9, "at {i}");
        checked += 1;
    }
    assert!(checked > 10);
    // Whole-step planning serves each rise for the 5 minutes before it: dearer.
    let mut whole = sc.clone();
    whole.lead_time_ms = 300 * S;
    let w = simulate(&s, &whole, Strategy::Predictive).unwrap().measures;
    assert!(
        r.measures.replica_hours < w.replica_hours - 1.0,
        "{:?} vs {w:?}",
        r.measures
    );
}

#[test]
fn an_isolated_burst_leaves_no_long_plateau() {
    // Five days of noisy 5-minute traffic around 100 (10 replicas), one burst of
    // 30 times the level for 10 minutes on the last day, then the same traffic.
    let mut x = 3u64;
    let mut noise = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as f64 / (1u64 << 31) as f64 - 0.5
    };
    let n = 288 * 5;
    let burst_at = 288 * 4;
    let v: Vec<f64> = (0..n)
        .map(|i| {
            let base = 100.0 + 20.0 * noise();
            if (burst_at..burst_at + 2).contains(&i) {
                3000.0
            } else {
                base
            }
        })
        .collect();
    let mut sc = scenario(180);
    sc.capacity_per_replica = 10.0;
    let r = simulate(&series(300, v.clone()), &sc, Strategy::Predictive).unwrap();
    // Minutes of the day after the burst during which the predictive run keeps
    // more than twice the replicas demand needs (the burst itself is not in the
    // history a refit calibrates on until the next refit, hours later: count
    // them all).
    let over = r.ready_per_step[burst_at + 2..]
        .iter()
        .zip(&v[burst_at + 2..])
        .filter(|(ready, d)| f64::from(**ready) > 2.0 * (**d / 10.0).ceil())
        .count();
    assert!(
        over * 5 <= 30,
        "{} minutes at more than twice the need after the burst",
        over * 5
    );
}
