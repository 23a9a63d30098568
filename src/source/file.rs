//! Recorded series replayed on the clock, so that `prescale serve` runs without
//! Prometheus (the built-in default) and tests can drive the engine with known data.
//!
//! A recording is placed on the time axis so that its last point falls on an anchor
//! time (usually the moment the server starts); before the anchor it is the history,
//! after it the recording starts over from its first point, so the replay never
//! runs out. A query grid point takes the latest recorded point at or before it, as
//! Prometheus' lookback does; gaps in the recording stay gaps.

use std::collections::BTreeMap;

use super::{BoxFuture, Error, Range, Result, Source};
use crate::series::LabeledSeries;

/// A [`Source`] over recorded series, keyed by the query string that selects them.
#[derive(Debug, Clone, Default)]
pub struct FileSource {
    recordings: BTreeMap<String, Vec<LabeledSeries>>,
    anchor_ms: i64,
}

impl FileSource {
    /// An empty source whose recordings end at `anchor_ms` (then repeat).
    pub fn new(anchor_ms: i64) -> Self {
        Self {
            recordings: BTreeMap::new(),
            anchor_ms,
        }
    }

    /// Adds the series a `query` returns.
    pub fn with_recording(mut self, query: impl Into<String>, series: Vec<LabeledSeries>) -> Self {
        self.recordings
            .entry(query.into())
            .or_default()
            .extend(series);
        self
    }

    /// The replayed value of `recording` at `ts_ms`, `NAN` for a gap.
    pub fn value_at(&self, recording: &crate::series::Series, ts_ms: i64) -> f64 {
        let n = recording.values.len() as i64;
        if n == 0 || recording.step_ms <= 0 {
            return f64::NAN;
        }
        let k = (ts_ms - self.anchor_ms).div_euclid(recording.step_ms);
        let idx = (n - 1 + k).rem_euclid(n);
        usize::try_from(idx)
            .ok()
            .and_then(|i| recording.values.get(i).copied())
            .unwrap_or(f64::NAN)
    }

    fn replay(&self, query: &str, range: Range) -> Result<Vec<LabeledSeries>> {
        let recordings = self
            .recordings
            .get(query)
            .ok_or_else(|| Error::UnknownQuery(query.to_string()))?;
        Ok(recordings
            .iter()
            .map(|rec| {
                let mut series = range.empty_series();
                for (i, v) in series.values.iter_mut().enumerate() {
                    let ts = range.start_ms + i as i64 * range.step_ms;
                    *v = self.value_at(&rec.series, ts);
                }
                LabeledSeries {
                    labels: rec.labels.clone(),
                    series,
                }
            })
            .collect())
    }
}

impl Source for FileSource {
    fn fetch<'a>(
        &'a self,
        query: &'a str,
        range: Range,
    ) -> BoxFuture<'a, Result<Vec<LabeledSeries>>> {
        let result = self.replay(query, range);
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::Series;

    fn rec() -> LabeledSeries {
        LabeledSeries {
            labels: [("trace".to_string(), "t".to_string())].into(),
            series: Series {
                start_ms: 0,
                step_ms: 10,
                values: vec![1.0, 2.0, f64::NAN, 4.0],
            },
        }
    }

    #[tokio::test]
    async fn replays_ending_at_the_anchor_then_wraps() {
        let src = FileSource::new(1_000).with_recording("q", vec![rec()]);
        let range = Range::try_new(960, 1_020, 10).unwrap();
        let got = src.fetch("q", range).await.unwrap();
        assert_eq!(got.len(), 1);
        let v = &got[0].series.values;
        // 960..=1000 are the recording's 5 last points (wrapping once), then it restarts.
        assert_eq!(v[0], 4.0);
        assert_eq!(v[1], 1.0);
        assert_eq!(v[2], 2.0);
        assert!(v[3].is_nan());
        assert_eq!(v[4], 4.0);
        assert_eq!(v[5], 1.0);
        assert_eq!(v[6], 2.0);
        assert!(src.fetch("other", range).await.is_err());
    }

    #[tokio::test]
    async fn coarser_query_grid_takes_the_latest_point() {
        let src = FileSource::new(1_000).with_recording("q", vec![rec()]);
        let got = src
            .fetch("q", Range::try_new(985, 1_005, 5).unwrap())
            .await
            .unwrap();
        // 985 takes the point at 980 (2.0); 990 and 995 the gap at 990; 1000 the last point.
        let v = &got[0].series.values;
        assert_eq!(v.len(), 5);
        assert_eq!(v[0], 2.0);
        assert!(v[1].is_nan() && v[2].is_nan());
        assert_eq!(v[3], 4.0);
        assert_eq!(v[4], 4.0);
    }
}
