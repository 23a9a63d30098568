//! Swapping the engine's signals while it runs (a config reload).
//!
//! A reload keeps what it can: a signal whose name and model settings are
//! unchanged keeps its series, trackers and fitted models (only its serving
//! settings — namespaces, `max_staleness`, the custom-metric mapping — are
//! updated in place), a removed one
//! is dropped with its self-metrics, a new or changed one starts from nothing
//! and backfills its history window on the next step. The source can be replaced
//! too (a new Prometheus URL or timeout).

use std::sync::Arc;

use super::{Core, SignalLabel, SignalSettings, SignalState, StatusLabel};
use crate::source::Source;

/// A new set of signals (and optionally a new source) for a running engine.
#[derive(Clone)]
pub struct Reload {
    /// The signals after the reload, in the new config's order.
    pub signals: Vec<SignalSettings>,
    /// The source to read from after the reload; `None` keeps the current one.
    pub source: Option<Arc<dyn Source>>,
}

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reload")
            .field("signals", &self.signals.len())
            .field("new_source", &self.source.is_some())
            .finish()
    }
}

/// What a reload did, by signal name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Signals that kept their state (possibly with new serving settings).
    pub kept: Vec<String>,
    /// Signals that are new, or whose query or model settings changed (state reset).
    pub started: Vec<String>,
    /// Signals that are gone.
    pub removed: Vec<String>,
}

/// Whether `new` can take over `old`'s series: everything that shapes what was
/// fetched and fitted is the same.
fn compatible(old: &SignalSettings, new: &SignalSettings) -> bool {
    old.name == new.name
        && old.query == new.query
        && old.history_ms == new.history_ms
        && old.tracker == new.tracker
}

impl Core {
    /// Replaces the signals by `signals`, keeping the state of unchanged ones.
    pub fn reconfigure(&mut self, signals: Vec<SignalSettings>) -> Summary {
        let mut summary = Summary::default();
        let mut old: Vec<Option<SignalState>> = std::mem::take(&mut self.signals)
            .into_iter()
            .map(Some)
            .collect();
        for settings in signals {
            let reuse = old.iter_mut().find_map(|slot| {
                if slot
                    .as_ref()
                    .is_some_and(|s| compatible(&s.settings, &settings))
                {
                    slot.take()
                } else {
                    None
                }
            });
            match reuse {
                Some(mut state) => {
                    summary.kept.push(settings.name.clone());
                    // Its trackers keep their shared settings: `compatible` says equal.
                    debug_assert_eq!(*state.tracker_settings, settings.tracker);
                    state.settings = settings;
                    state.restamp();
                    self.signals.push(state);
                }
                None => {
                    summary.started.push(settings.name.clone());
                    self.signals.push(SignalState::new(settings));
                }
            }
        }
        for state in old.into_iter().flatten() {
            let name = state.settings.name;
            let still_there = self.signals.iter().any(|s| s.settings.name == name);
            if !still_there {
                self.forget_metrics(&name);
                summary.removed.push(name);
            }
        }
        summary
    }

    /// Drops a removed signal's labelled self-metrics, so dashboards stop showing it.
    fn forget_metrics(&self, signal: &str) {
        for status in ["warming", "ok", "stale", "failed"] {
            self.metrics.series.remove(&StatusLabel {
                signal: signal.to_string(),
                status: status.to_string(),
            });
        }
        let label = SignalLabel {
            signal: signal.to_string(),
        };
        self.metrics.source_errors.remove(&label);
        self.metrics.refresh_seconds.remove(&label);
        self.metrics.forecast_error.remove(&label);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{FetchResult, Metrics};
    use crate::forecast::ModelSpec;
    use crate::plan::{ServePolicy, TrackerSettings};
    use crate::series::{LabeledSeries, Labels};
    use crate::source::Range;

    const STEP: i64 = 60_000;

    fn settings(name: &str, query: &str) -> SignalSettings {
        SignalSettings {
            shadow: None,
            name: name.to_string(),
            query: query.to_string(),
            history_ms: 100 * STEP,
            max_staleness_ms: 5 * STEP,
            namespaces: None,
            custom: None,
            tracker: TrackerSettings {
                spec: ModelSpec::by_name("seasonal-naive").unwrap(),
                step_ms: STEP,
                policy: ServePolicy {
                    lead_steps: 3,
                    lead_ms: 0,
                    tolerance: 0.0,
                    quantile: 0.9,
                    reactive_floor: true,
                },
                history_steps: 100,
                refit_every_steps: 10,
                min_history_steps: 20,
                fit_steps: 1,
                spread_refits: false,
            },
        }
    }

    fn fetched(range: Range) -> FetchResult {
        let mut s = range.empty_series();
        for (i, v) in s.values.iter_mut().enumerate() {
            *v = 10.0 + (i % 5) as f64;
        }
        Ok(vec![LabeledSeries {
            labels: Labels::new(),
            series: s,
        }])
    }

    /// A core with both signals fed once at `now`.
    fn fed(signals: Vec<SignalSettings>, now: i64) -> Core {
        let mut core = Core::new(signals, Metrics::unregistered());
        let results = core
            .plan(now, None)
            .into_iter()
            .map(|p| {
                let r = fetched(p.range);
                (p, r, std::time::Duration::ZERO)
            })
            .collect();
        core.apply(now, results);
        core
    }

    #[test]
    fn unchanged_signals_keep_their_state_changed_and_new_ones_start_over() {
        let now = 1_000 * STEP;
        let mut core = fed(
            vec![
                settings("a", "qa"),
                settings("b", "qb"),
                settings("c", "qc"),
            ],
            now,
        );
        let served_a = core.snapshot(now).metrics["a"].clone();
        assert_eq!(served_a.series.len(), 1);

        let mut a = settings("a", "qa");
        a.namespaces = Some(vec!["shop".into()]);
        a.max_staleness_ms = 7 * STEP;
        let summary = core.reconfigure(vec![settings("d", "qd"), a, settings("b", "qb2")]);
        assert_eq!(
            summary,
            Summary {
                kept: vec!["a".into()],
                started: vec!["d".into(), "b".into()],
                removed: vec!["c".into()],
            }
        );
        let snap = core.snapshot(now);
        assert_eq!(
            snap.metrics.keys().collect::<Vec<_>>(),
            vec!["a", "b", "d"],
            "c is gone"
        );
        // a kept its series and value, with the new serving settings.
        let a = &snap.metrics["a"];
        assert_eq!(a.series[0].value, served_a.series[0].value);
        assert_eq!(a.namespaces, Some(vec!["shop".to_string()]));
        assert_eq!(a.series[0].expires_ms, now + 7 * STEP);
        // b's query changed: it starts over and backfills; d is new.
        assert!(snap.metrics["b"].series.is_empty());
        assert!(snap.metrics["d"].series.is_empty());
        let due: Vec<String> = core.plan(now, None).into_iter().map(|p| p.query).collect();
        assert_eq!(due, vec!["qd", "qb2"], "a has nothing due");
    }
}
