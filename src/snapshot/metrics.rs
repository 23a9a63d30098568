//! Per-series gauges for dashboards, read from the current snapshot at scrape time.
//!
//! For each exported series (labels `signal` and `series`, the series' label set
//! formatted as `k=v,k2=v2`: [`series_label`]): the latest observation, the mean forecast at the
//! lead time, the forecast interval at the lead time (the 10% and 90% quantiles,
//! [`crate::plan::tracker::INTERVAL`]), the value served, the status, the staleness
//! and the rolling forecast error. Everything is read from the snapshot the API
//! serves when `/metrics` is scraped, so the gauges always agree with what HPAs
//! read, and a series that left the snapshot leaves `/metrics` with it: there is
//! nothing to clean up.
//!
//! Cardinality is bounded by a limit on exported series
//! (`server.metrics.series_limit`), shared fairly between signals: each signal
//! gets an equal share, and what a small signal does not use goes to the others.
//! Within a signal the first series in label order are exported, so the exported
//! set does not churn from scrape to scrape. `prescale_series_not_exported` says
//! how many series the limit left out.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::clock::Clock;
use crate::series::Labels;

use super::{SeriesEntry, Shared, Snapshot, Status};

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// A label value escaped for the text exposition: prometheus-client writes label
/// values verbatim, and a series' label values may carry quotes, backslashes or
/// newlines from the source.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Escaped(String);

impl EncodeLabelValue for Escaped {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeriesLabels {
    signal: Escaped,
    series: Escaped,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    signal: Escaped,
    series: Escaped,
    status: &'static str,
}

/// The per-series gauges: a collector over the shared snapshot.
pub struct SeriesMetrics {
    shared: Shared,
    clock: Arc<dyn Clock>,
    limit: usize,
}

impl std::fmt::Debug for SeriesMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesMetrics")
            .field("limit", &self.limit)
            .finish()
    }
}

impl SeriesMetrics {
    /// Gauges for at most `limit` series of the snapshots published to `shared`;
    /// staleness is measured on `clock`.
    pub fn new(shared: Shared, clock: Arc<dyn Clock>, limit: usize) -> Self {
        Self {
            shared,
            clock,
            limit,
        }
    }

    /// Registers the gauges on `registry` under the `prescale` prefix.
    pub fn register(self, registry: &mut Registry) {
        registry
            .sub_registry_with_prefix("prescale")
            .register_collector(Box::new(self));
    }
}

/// How many series of each signal to export: at most `limit` in all, an equal
/// share per signal, with what a signal does not need handed on to the others.
/// `counts` are the signals' series counts; the result is in the same order.
pub fn fair_shares(counts: &[usize], limit: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..counts.len()).collect();
    // Smallest first: each takes min(its count, an equal share of what is left).
    order.sort_by_key(|&i| counts[i]);
    let mut shares = vec![0; counts.len()];
    let mut left = limit;
    for (k, &i) in order.iter().enumerate() {
        let share = left / (counts.len() - k);
        shares[i] = counts[i].min(share);
        left -= shares[i];
    }
    // Integer division can leave a remainder while larger signals still have
    // series: give it out one by one in signal order.
    for (i, &count) in counts.iter().enumerate() {
        if left == 0 {
            break;
        }
        let more = (count - shares[i]).min(left);
        shares[i] += more;
        left -= more;
    }
    shares
}

/// The gauges' values for one scrape.
#[derive(Default)]
struct Gauges {
    observed: Family<SeriesLabels, FloatGauge>,
    forecast: Family<SeriesLabels, FloatGauge>,
    lower: Family<SeriesLabels, FloatGauge>,
    upper: Family<SeriesLabels, FloatGauge>,
    served: Family<SeriesLabels, FloatGauge>,
    predicted: Family<SeriesLabels, FloatGauge>,
    status: Family<StatusLabels, Gauge>,
    staleness: Family<SeriesLabels, FloatGauge>,
    mase: Family<SeriesLabels, FloatGauge>,
    not_exported: Gauge,
}

impl Gauges {
    fn from_snapshot(snapshot: &Snapshot, now_ms: i64, limit: usize) -> Self {
        let g = Gauges::default();
        let counts: Vec<usize> = snapshot.metrics.values().map(|m| m.series.len()).collect();
        let shares = fair_shares(&counts, limit);
        let total: usize = counts.iter().sum();
        let exported: usize = shares.iter().sum();
        g.not_exported
            .set(i64::try_from(total - exported).unwrap_or(i64::MAX));
        for ((signal, entry), share) in snapshot.metrics.iter().zip(shares) {
            for s in entry.series.iter().take(share) {
                g.record(signal, s, now_ms);
            }
        }
        g
    }

    fn record(&self, signal: &str, s: &SeriesEntry, now_ms: i64) {
        let labels = SeriesLabels {
            signal: Escaped(signal.to_string()),
            series: Escaped(series_label(&s.labels)),
        };
        let set = |family: &Family<SeriesLabels, FloatGauge>, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                family.get_or_create(&labels).set(v);
            }
        };
        let d = &s.detail;
        set(&self.observed, d.latest);
        // The paths run over the lead time: their last point is the forecast at it.
        set(&self.forecast, d.forecast_mean.last().copied());
        set(&self.lower, d.forecast_lower.last().copied());
        set(&self.upper, d.forecast_upper.last().copied());
        set(&self.served, Some(s.value));
        set(&self.predicted, d.predicted);
        set(
            &self.staleness,
            Some((now_ms.saturating_sub(s.timestamp_ms)).max(0) as f64 / 1000.0),
        );
        set(&self.mase, d.backtest_mase);
        self.status
            .get_or_create(&StatusLabels {
                signal: labels.signal.clone(),
                series: labels.series.clone(),
                // As the API answers now: an expired value is failed even when the
                // engine has not published since.
                status: status_name(s.status_at(now_ms)),
            })
            .set(1);
    }
}

/// The `series` label value: the series' labels as `k=v` pairs in name order,
/// comma-separated (`queue=tasks,vhost=/`), `{}` for none. No quotes: Grafana puts
/// the value of a dashboard variable inside a quoted PromQL matcher unescaped.
pub fn series_label(labels: &Labels) -> String {
    if labels.is_empty() {
        return "{}".to_string();
    }
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Warming => "warming",
        Status::Ok => "ok",
        Status::Stale => "stale",
        Status::Failed => "failed",
    }
}

fn encode<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &M,
) -> Result<(), std::fmt::Error> {
    // As the registry does: a family without samples is left out entirely.
    if metric.is_empty() {
        return Ok(());
    }
    let m = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(m)
}

impl Collector for SeriesMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.shared.load();
        let g = Gauges::from_snapshot(&snapshot, self.clock.now_ms(), self.limit);
        let e = &mut encoder;
        encode(
            e,
            "series_observed",
            "Latest observed value of the series.",
            &g.observed,
        )?;
        encode(
            e,
            "series_forecast",
            "Mean forecast at the lead time (made now, for now + lead time).",
            &g.forecast,
        )?;
        encode(
            e,
            "series_forecast_lower",
            "Lower edge of the forecast interval at the lead time: the 10% quantile.",
            &g.lower,
        )?;
        encode(
            e,
            "series_forecast_upper",
            "Upper edge of the forecast interval at the lead time: the 90% quantile.",
            &g.upper,
        )?;
        encode(
            e,
            "series_served",
            "Value served to HPAs: the largest served-quantile forecast over the lead time, floored at the latest observation (in shadow mode: the latest observation).",
            &g.served,
        )?;
        encode(
            e,
            "series_predicted",
            "What the predictive rule gives: equal to series_served, except in shadow mode, where it is what would have been served.",
            &g.predicted,
        )?;
        encode(
            e,
            "series_status",
            "1 for the series' current status (warming, ok, stale, failed).",
            &g.status,
        )?;
        encode(
            e,
            "series_staleness_seconds",
            "Age of the newest observation the served value is based on.",
            &g.staleness,
        )?;
        encode(
            e,
            "series_forecast_mase",
            "Rolling one-step-ahead MASE of the series over the last 253 to 288 steps (below 1 beats a last-value forecast).",
            &g.mase,
        )?;
        encode(
            e,
            "series_not_exported",
            "Series left out of the per-series gauges by server.metrics.series_limit.",
            &g.not_exported,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::clock::SimClock;
    use crate::snapshot::{MetricEntry, SeriesDetail};

    fn entry(queue: &str, status: Status, value: f64, timestamp_ms: i64) -> SeriesEntry {
        SeriesEntry {
            labels: Labels::from([("queue".to_string(), queue.to_string())]),
            status,
            value,
            timestamp_ms,
            expires_ms: i64::MAX,
            window_s: 60,
            detail: SeriesDetail {
                model: "ets".into(),
                latest: Some(value - 1.0),
                forecast_mean: vec![value - 0.5, value + 0.5],
                forecast_quantile: vec![value, value + 1.0],
                forecast_lower: vec![value - 2.0, value - 3.0],
                forecast_upper: vec![value + 2.0, value + 3.0],
                backtest_mase: Some(0.75),
                ..SeriesDetail::default()
            },
        }
    }

    fn snapshot(signals: &[(&str, Vec<SeriesEntry>)]) -> Snapshot {
        Snapshot {
            published_ms: 0,
            metrics: signals
                .iter()
                .map(|(name, series)| {
                    (
                        (*name).to_string(),
                        MetricEntry {
                            series: series.iter().cloned().map(Arc::new).collect(),
                            ..MetricEntry::default()
                        },
                    )
                })
                .collect(),
            plan: None,
        }
    }

    /// Samples of the scrape: `name{labels}` to value.
    fn scrape(registry: &Registry) -> BTreeMap<String, f64> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').unwrap();
                (k.to_string(), v.parse().unwrap())
            })
            .collect()
    }

    fn setup(limit: usize) -> (Shared, Arc<SimClock>, Registry) {
        let shared = Shared::new();
        let clock = Arc::new(SimClock::new(100_000));
        let mut registry = Registry::default();
        SeriesMetrics::new(shared.clone(), clock.clone(), limit).register(&mut registry);
        (shared, clock, registry)
    }

    #[test]
    fn gauges_show_the_current_snapshot() {
        let (shared, _clock, registry) = setup(100);
        shared.publish(snapshot(&[(
            "rabbitmq",
            vec![entry("tasks", Status::Ok, 10.0, 40_000)],
        )]));
        let s = scrape(&registry);
        let key =
            |name: &str| format!("prescale_{name}{{signal=\"rabbitmq\",series=\"queue=tasks\"}}");
        assert_eq!(s[&key("series_observed")], 9.0);
        assert_eq!(s[&key("series_forecast")], 10.5);
        assert_eq!(s[&key("series_forecast_lower")], 7.0);
        assert_eq!(s[&key("series_forecast_upper")], 13.0);
        assert_eq!(s[&key("series_served")], 10.0);
        assert_eq!(s[&key("series_staleness_seconds")], 60.0);
        assert_eq!(s[&key("series_forecast_mase")], 0.75);
        assert_eq!(
            s["prescale_series_status{signal=\"rabbitmq\",series=\"queue=tasks\",status=\"ok\"}"],
            1.0
        );
        assert_eq!(s["prescale_series_not_exported"], 0.0);
    }

    #[test]
    fn label_values_are_escaped() {
        let (shared, _clock, registry) = setup(100);
        let mut e = entry("x", Status::Ok, 1.0, 0);
        e.labels = Labels::from([("path".to_string(), "a\\b\"c\nd".to_string())]);
        shared.publish(snapshot(&[("odd", vec![e])]));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let want = r#"prescale_series_served{signal="odd",series="path=a\\b\"c\nd"} 1.0"#;
        assert!(text.contains(want), "{text}");
        assert_eq!(
            text.lines()
                .filter(|l| l.contains("signal=\"odd\""))
                .count(),
            8
        );
    }

    #[test]
    fn series_labels_read_as_pairs() {
        assert_eq!(series_label(&Labels::new()), "{}");
        let l = Labels::from([
            ("vhost".to_string(), "/".to_string()),
            ("queue".to_string(), "tasks".to_string()),
        ]);
        assert_eq!(series_label(&l), "queue=tasks,vhost=/");
    }

    #[test]
    fn warming_series_have_no_forecast_and_staleness_follows_the_clock() {
        let (shared, clock, registry) = setup(100);
        let mut warming = entry("tasks", Status::Warming, 3.0, 100_000);
        warming.detail.forecast_mean.clear();
        warming.detail.forecast_lower.clear();
        warming.detail.forecast_upper.clear();
        warming.detail.backtest_mase = None;
        shared.publish(snapshot(&[("rabbitmq", vec![warming])]));
        clock.advance(2_500);
        let s = scrape(&registry);
        assert!(!s.keys().any(|k| k.starts_with("prescale_series_forecast")));
        assert!(s.keys().any(|k| k.contains("status=\"warming\"")));
        let stale = s
            .iter()
            .find(|(k, _)| k.starts_with("prescale_series_staleness_seconds"))
            .unwrap();
        assert_eq!(*stale.1, 2.5);

        // Past its expiry the series reads failed, as the API would answer it,
        // even though the engine has not published since.
        let mut expiring = entry("tasks", Status::Ok, 3.0, 100_000);
        expiring.expires_ms = 103_000;
        shared.publish(snapshot(&[("rabbitmq", vec![expiring])]));
        assert!(scrape(&registry)
            .keys()
            .any(|k| k.contains("status=\"ok\"")));
        clock.advance(1_000);
        let s = scrape(&registry);
        assert!(s.keys().any(|k| k.contains("status=\"failed\"")), "{s:?}");
        assert!(!s.keys().any(|k| k.contains("status=\"ok\"")));
    }

    #[test]
    fn series_that_leave_the_snapshot_leave_the_gauges() {
        let (shared, _clock, registry) = setup(100);
        shared.publish(snapshot(&[(
            "rabbitmq",
            vec![
                entry("a", Status::Ok, 1.0, 0),
                entry("b", Status::Stale, 2.0, 0),
            ],
        )]));
        let before = scrape(&registry);
        assert_eq!(before.keys().filter(|k| k.contains("queue=b")).count(), 8);
        shared.publish(snapshot(&[(
            "rabbitmq",
            vec![entry("a", Status::Failed, 1.0, 0)],
        )]));
        let after = scrape(&registry);
        assert!(!after.keys().any(|k| k.contains("queue=b")), "{after:?}");
        // The status changed: only the new one is present.
        let statuses: Vec<&String> = after
            .keys()
            .filter(|k| k.starts_with("prescale_series_status"))
            .collect();
        assert_eq!(statuses.len(), 1);
        assert!(statuses[0].contains("failed"));
    }

    #[test]
    fn the_limit_is_respected_and_shared_between_signals() {
        let (shared, _clock, registry) = setup(5);
        let many: Vec<SeriesEntry> = (0..100)
            .map(|i| entry(&format!("q{i:03}"), Status::Ok, 1.0, 0))
            .collect();
        shared.publish(snapshot(&[
            ("big", many),
            ("small", vec![entry("only", Status::Ok, 1.0, 0)]),
        ]));
        let s = scrape(&registry);
        let served: Vec<&String> = s
            .keys()
            .filter(|k| k.starts_with("prescale_series_served{"))
            .collect();
        assert_eq!(served.len(), 5);
        assert_eq!(
            served
                .iter()
                .filter(|k| k.contains("signal=\"small\""))
                .count(),
            1
        );
        // The big signal's first series in label order: a stable set.
        assert!(served.iter().any(|k| k.contains("q000")));
        assert!(served.iter().any(|k| k.contains("q003")));
        assert_eq!(s["prescale_series_not_exported"], 96.0);

        let (shared, _clock, registry) = setup(0);
        shared.publish(snapshot(&[(
            "small",
            vec![entry("only", Status::Ok, 1.0, 0)],
        )]));
        let s = scrape(&registry);
        assert!(!s.keys().any(|k| k.starts_with("prescale_series_served")));
        assert_eq!(s["prescale_series_not_exported"], 1.0);
    }

    #[test]
    fn a_hundred_thousand_series_export_at_most_the_limit() {
        let (shared, _clock, registry) = setup(1_000);
        let signals: Vec<(String, Vec<SeriesEntry>)> = (0..10)
            .map(|s| {
                let series = (0..10_000)
                    .map(|i| entry(&format!("q{i:05}"), Status::Ok, 1.0, 0))
                    .collect();
                (format!("signal_{s}"), series)
            })
            .collect();
        let refs: Vec<(&str, Vec<SeriesEntry>)> = signals
            .iter()
            .map(|(n, s)| (n.as_str(), s.clone()))
            .collect();
        shared.publish(snapshot(&refs));
        let s = scrape(&registry);
        // 1000 series x 8 gauges, plus the count of those left out.
        assert_eq!(s.len(), 8 * 1_000 + 1);
        assert_eq!(s["prescale_series_not_exported"], 99_000.0);
        for n in 0..10 {
            let per_signal = s
                .keys()
                .filter(|k| k.starts_with("prescale_series_served{"))
                .filter(|k| k.contains(&format!("signal=\"signal_{n}\"")))
                .count();
            assert_eq!(per_signal, 100);
        }
    }

    #[test]
    fn fair_shares_hand_on_what_small_signals_leave() {
        assert_eq!(fair_shares(&[100, 1, 100], 10), vec![4, 1, 5]);
        assert_eq!(fair_shares(&[3, 3], 100), vec![3, 3]);
        assert_eq!(fair_shares(&[], 10), Vec::<usize>::new());
        assert_eq!(fair_shares(&[7, 7, 7], 0), vec![0, 0, 0]);
        for (counts, limit) in [(vec![5, 9, 2, 40], 17), (vec![1, 1, 1], 2), (vec![10], 3)] {
            let shares = fair_shares(&counts, limit);
            let total: usize = counts.iter().sum();
            assert_eq!(shares.iter().sum::<usize>(), limit.min(total));
            assert!(shares.iter().zip(&counts).all(|(s, c)| s <= c));
        }
    }
}
