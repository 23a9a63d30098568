//! From raw samples to a regular grid: step inference, bucketing, gap filling.

use std::fmt;

use super::{normalize, Error, ReadReport, Result, Sample, Series};

/// Default for [`ResampleOptions::max_gap_steps`]: a run of up to three missing
/// steps (a scrape or two lost) is bridged; longer outages stay visible as gaps.
pub const DEFAULT_MAX_GAP_STEPS: usize = 3;

/// Most grid points [`resample`] will allocate (160 MB of `f64`): a larger grid
/// almost always means a wrong step or a stray timestamp years away.
pub const MAX_GRID_POINTS: usize = 20_000_000;

/// How to put samples on a grid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResampleOptions {
    /// Grid step in milliseconds; `None` infers it from the samples with
    /// [`infer_step_ms`].
    pub step_ms: Option<i64>,
    /// Longest run of empty grid points that is filled by linear interpolation;
    /// longer runs stay `NAN`. Counted in steps of the output grid.
    pub max_gap_steps: usize,
}

impl Default for ResampleOptions {
    fn default() -> Self {
        Self {
            step_ms: None,
            max_gap_steps: DEFAULT_MAX_GAP_STEPS,
        }
    }
}

impl ResampleOptions {
    /// Uses this step instead of inferring one.
    pub fn with_step_ms(mut self, step_ms: i64) -> Self {
        self.step_ms = Some(step_ms);
        self
    }

    /// Sets the longest gap, in steps, that is interpolated.
    pub fn with_max_gap_steps(mut self, max_gap_steps: usize) -> Self {
        self.max_gap_steps = max_gap_steps;
        self
    }
}

/// What [`resample`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResampleReport {
    /// Cleaning of the input: points in, duplicates, unsorted.
    pub read: ReadReport,
    /// The grid step used, in milliseconds.
    pub step_ms: i64,
    /// Whether the step was inferred from the data rather than given.
    pub step_inferred: bool,
    /// Grid points in the output, gaps included.
    pub points_out: usize,
    /// Grid points whose value is the mean of more than one sample.
    pub points_averaged: usize,
    /// Runs of empty grid points that were filled by interpolation.
    pub gaps_filled: usize,
    /// Grid points filled by interpolation.
    pub points_filled: usize,
    /// Runs of empty grid points longer than the limit, kept as `NAN`.
    pub gaps_kept: usize,
    /// Grid points left as `NAN`.
    pub points_kept: usize,
}

impl fmt::Display for ResampleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; step {} ms ({}); {} grid points, {} averaged from several samples; \
             {} short gaps interpolated ({} points); {} long gaps kept ({} points)",
            self.read,
            self.step_ms,
            if self.step_inferred {
                "inferred"
            } else {
                "given"
            },
            self.points_out,
            self.points_averaged,
            self.gaps_filled,
            self.points_filled,
            self.gaps_kept,
            self.points_kept,
        )
    }
}

/// Infers the sampling step of samples in any order: the median of the positive
/// differences between consecutive distinct timestamps, rounded to a whole second
/// when it is at least one second. The median ignores jitter (299/300/301 s) and
/// the few large differences that gaps produce.
///
/// # Errors
/// [`Error::TooFewSamples`] with fewer than two distinct timestamps.
pub fn infer_step_ms(samples: &[Sample]) -> Result<i64> {
    let mut ts: Vec<i64> = samples.iter().map(|s| s.ts_ms).collect();
    ts.sort_unstable();
    ts.dedup();
    if ts.len() < 2 {
        return Err(Error::TooFewSamples {
            what: "inferring the step",
            needed: 2,
            got: ts.len(),
        });
    }
    let mut diffs: Vec<i64> = ts.windows(2).map(|w| w[1].saturating_sub(w[0])).collect();
    let mid = diffs.len() / 2;
    let (_, &mut median, _) = diffs.select_nth_unstable(mid);
    Ok(if median >= 1000 {
        // Round half up to a whole second; saturating because the difference of
        // two arbitrary i64 may be near i64::MAX.
        median.saturating_add(500) / 1000 * 1000
    } else {
        median
    })
}

/// Puts samples (in any order) on a regular grid.
///
/// The grid is aligned to multiples of the step (unix time 0 is a grid point), so
/// series resampled to the same step line up. Grid point `t` holds the mean of
/// the samples in `[t, t + step)`. The grid runs from the first sample's point to
/// the last one's. Runs of up to `max_gap_steps` empty points are filled by
/// linear interpolation between their neighbours; longer runs stay `NAN`.
/// Duplicate timestamps keep the last sample. No output value lies outside the
/// range of the input values.
///
/// # Errors
/// [`Error::TooFewSamples`] with no samples (or one sample and no step given),
/// [`Error::InvalidOption`] for a step that is not positive,
/// [`Error::GridTooLarge`] when the grid would exceed [`MAX_GRID_POINTS`].
pub fn resample(samples: &[Sample], options: &ResampleOptions) -> Result<(Series, ResampleReport)> {
    let (clean, read) = normalize(samples.to_vec());
    let (Some(first), Some(last)) = (clean.first(), clean.last()) else {
        return Err(Error::TooFewSamples {
            what: "resampling",
            needed: 1,
            got: 0,
        });
    };
    let (step_ms, step_inferred) = match options.step_ms {
        Some(step) if step <= 0 => {
            return Err(Error::InvalidOption {
                name: "step_ms",
                message: format!("expected a positive step, got {step}"),
            })
        }
        Some(step) => (step, false),
        None => (infer_step_ms(&clean)?, true),
    };
    let first_bucket = first.ts_ms.div_euclid(step_ms);
    let last_bucket = last.ts_ms.div_euclid(step_ms);
    let points = (i128::from(last_bucket) - i128::from(first_bucket) + 1) as u128;
    let too_large = Error::GridTooLarge {
        points,
        limit: MAX_GRID_POINTS,
    };
    let n = match usize::try_from(points) {
        Ok(n) if n <= MAX_GRID_POINTS => n,
        _ => return Err(too_large),
    };
    let start_ms = first_bucket.checked_mul(step_ms).ok_or(too_large)?;

    let mut values = vec![f64::NAN; n];
    let mut points_averaged = 0;
    // `clean` is sorted, so each bucket's samples are one contiguous run.
    for run in clean.chunk_by(|a, b| a.ts_ms.div_euclid(step_ms) == b.ts_ms.div_euclid(step_ms)) {
        let idx = (run[0].ts_ms.div_euclid(step_ms) - first_bucket) as usize;
        values[idx] = mean(run.iter().map(|s| s.value));
        if run.len() > 1 {
            points_averaged += 1;
        }
    }

    let (gaps_filled, points_filled, gaps_kept, points_kept) =
        fill_gaps(&mut values, options.max_gap_steps);
    let report = ResampleReport {
        read,
        step_ms,
        step_inferred,
        points_out: n,
        points_averaged,
        gaps_filled,
        points_filled,
        gaps_kept,
        points_kept,
    };
    Ok((
        Series {
            start_ms,
            step_ms,
            values,
        },
        report,
    ))
}

/// Mean of finite values, kept within their min and max: rounding can otherwise
/// push the mean of equal values one ulp outside them.
fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (mut m, mut lo, mut hi, mut k) = (0.0_f64, f64::INFINITY, f64::NEG_INFINITY, 0.0_f64);
    for v in values {
        k += 1.0;
        // Incremental form: no overflow from summing many large values.
        m += (v - m) / k;
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if m.is_nan() {
        // Only possible when `v - m` overflowed (values of both signs near f64::MAX).
        return lo / 2.0 + hi / 2.0;
    }
    m.clamp(lo, hi)
}

/// Interpolates runs of at most `max_gap` NaNs between finite neighbours and
/// counts runs and points filled and kept. Leading or trailing runs (none when
/// the grid comes from [`resample`]) are kept.
fn fill_gaps(values: &mut [f64], max_gap: usize) -> (usize, usize, usize, usize) {
    let (mut gaps_filled, mut points_filled, mut gaps_kept, mut points_kept) = (0, 0, 0, 0);
    let mut i = 0;
    while i < values.len() {
        if !values[i].is_nan() {
            i += 1;
            continue;
        }
        let start = i;
        while i < values.len() && values[i].is_nan() {
            i += 1;
        }
        let len = i - start;
        let bounded = start > 0 && i < values.len();
        if bounded && len <= max_gap {
            let (a, b) = (values[start - 1], values[i]);
            let (lo, hi) = (a.min(b), a.max(b));
            for j in 0..len {
                let f = (j + 1) as f64 / (len + 1) as f64;
                values[start + j] = (a + (b - a) * f).clamp(lo, hi);
            }
            gaps_filled += 1;
            points_filled += len;
        } else {
            gaps_kept += 1;
            points_kept += len;
        }
    }
    (gaps_filled, points_filled, gaps_kept, points_kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(ts_ms: i64, value: f64) -> Sample {
        Sample { ts_ms, value }
    }

    /// Equality that treats NaN (a gap) as equal to NaN.
    fn same(a: &Series, b: &Series) -> bool {
        a.start_ms == b.start_ms
            && a.step_ms == b.step_ms
            && a.values.len() == b.values.len()
            && a.values
                .iter()
                .zip(&b.values)
                .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
    }

    #[test]
    fn step_inference_ignores_jitter_and_gaps() {
        let mut t = 1_000_000_000;
        let mut samples = Vec::new();
        for (i, d) in [299, 300, 301, 300, 300, 3600, 301, 299, 300, 600, 300]
            .iter()
            .enumerate()
        {
            samples.push(s(t, i as f64));
            t += d * 1000;
        }
        assert_eq!(infer_step_ms(&samples).unwrap(), 300_000);
        // Sub-second data keeps millisecond precision.
        let fast: Vec<Sample> = (0..10).map(|i| s(i * 250, 1.0)).collect();
        assert_eq!(infer_step_ms(&fast).unwrap(), 250);
        assert!(matches!(
            infer_step_ms(&[s(5, 1.0), s(5, 2.0)]),
            Err(Error::TooFewSamples { got: 1, .. })
        ));
    }

    #[test]
    fn buckets_average_and_align_to_multiples_of_the_step() {
        let samples = [
            s(61_000, 1.0),
            s(119_000, 3.0),
            s(125_000, 10.0),
            s(250_000, 7.0),
        ];
        let (series, report) =
            resample(&samples, &ResampleOptions::default().with_step_ms(60_000)).unwrap();
        assert_eq!(series.start_ms, 60_000);
        // 180 s has no sample: interpolated between 120 s and 240 s.
        assert_eq!(series.values, vec![2.0, 10.0, 8.5, 7.0]);
        assert_eq!(report.points_averaged, 1);
        assert_eq!(report.gaps_filled, 1);
        assert!(!report.step_inferred);
        // Negative times floor towards minus infinity too.
        let (neg, _) = resample(
            &[s(-1, 1.0), s(1, 2.0)],
            &ResampleOptions::default().with_step_ms(10),
        )
        .unwrap();
        assert_eq!(neg.start_ms, -10);
        assert_eq!(neg.values, vec![1.0, 2.0]);
    }

    #[test]
    fn short_gaps_are_interpolated_long_gaps_kept() {
        // Step 10: one missing point at 20, three at 50..70, four at 100..130.
        let samples = [
            s(0, 0.0),
            s(10, 1.0),
            s(30, 3.0),
            s(40, 4.0),
            s(80, 0.0),
            s(90, 9.0),
            s(140, 1.0),
        ];
        let opts = ResampleOptions::default().with_step_ms(10);
        let (series, report) = resample(&samples, &opts).unwrap();
        assert_eq!(series.values[2], 2.0);
        assert_eq!(&series.values[5..8], &[3.0, 2.0, 1.0]);
        assert!(series.values[10..14].iter().all(|v| v.is_nan()));
        assert_eq!(series.values[14], 1.0);
        assert_eq!((report.gaps_filled, report.points_filled), (2, 4));
        assert_eq!((report.gaps_kept, report.points_kept), (1, 4));
        assert_eq!(series.gap_points(), 4);

        let (none_filled, r) = resample(&samples, &opts.clone().with_max_gap_steps(0)).unwrap();
        assert_eq!((r.gaps_filled, r.gaps_kept), (0, 3));
        assert!(none_filled.values[2].is_nan());
    }

    #[test]
    fn report_counts_duplicates_and_unsorted() {
        let (series, report) = resample(
            &[s(20, 2.0), s(0, 1.0), s(20, 5.0), s(10, 3.0)],
            &ResampleOptions::default(),
        )
        .unwrap();
        assert_eq!(series.values, vec![1.0, 3.0, 5.0]);
        assert_eq!(report.read.points_in, 4);
        assert_eq!(report.read.duplicates, 1);
        assert!(report.read.was_unsorted());
        assert!(report.step_inferred);
        assert_eq!(report.step_ms, 10);
        assert!(report.to_string().contains("1 duplicate"), "{report}");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let opts = ResampleOptions::default();
        assert!(matches!(
            resample(&[], &opts),
            Err(Error::TooFewSamples {
                needed: 1,
                got: 0,
                ..
            })
        ));
        assert!(matches!(
            resample(&[], &opts.clone().with_step_ms(10)),
            Err(Error::TooFewSamples { .. })
        ));
        assert!(matches!(
            resample(&[s(1, 1.0)], &opts),
            Err(Error::TooFewSamples { .. })
        ));
        let one = resample(&[s(7, 1.0)], &opts.clone().with_step_ms(5))
            .unwrap()
            .0;
        assert_eq!((one.start_ms, one.values.clone()), (5, vec![1.0]));
        assert!(matches!(
            resample(&[s(1, 1.0)], &opts.clone().with_step_ms(0)),
            Err(Error::InvalidOption { .. })
        ));
        assert!(matches!(
            resample(
                &[s(i64::MIN, 1.0), s(i64::MAX, 1.0)],
                &opts.clone().with_step_ms(1)
            ),
            Err(Error::GridTooLarge { .. })
        ));
        assert!(resample(&[s(i64::MIN, 1.0), s(i64::MAX, 1.0)], &opts).is_err());
        // Extreme values of both signs still give a value within their range.
        let (x, _) = resample(&[s(0, f64::MAX), s(1, -f64::MAX)], &opts.with_step_ms(10)).unwrap();
        assert!(x.values[0].is_finite());
    }

    /// A regular series aligned to its step, with only finite values.
    fn regular_series() -> impl Strategy<Value = Series> {
        (
            prop::sample::select(vec![1_000_i64, 60_000, 300_000, 3_600_000]),
            -1_000_000_i64..1_000_000,
            prop::collection::vec(-1e9_f64..1e9, 2..200),
        )
            .prop_map(|(step_ms, k, values)| Series {
                start_ms: k * step_ms,
                step_ms,
                values,
            })
    }

    /// Samples at arbitrary times, with duplicates and in any order.
    fn messy_samples() -> impl Strategy<Value = Vec<Sample>> {
        prop::collection::vec(
            (
                -10_000_000_i64..10_000_000,
                prop_oneof![Just(0.0), -1e9_f64..1e9],
            ),
            1..150,
        )
        .prop_map(|v| v.into_iter().map(|(t, x)| s(t, x)).collect())
    }

    proptest! {
        #[test]
        fn resampling_a_regular_series_to_its_step_is_the_identity(series in regular_series()) {
            let explicit = ResampleOptions::default().with_step_ms(series.step_ms);
            let (out, report) = resample(&series.to_samples(), &explicit).unwrap();
            prop_assert!(same(&out, &series), "{out:?} != {series:?}");
            prop_assert_eq!(report.points_filled + report.points_kept + report.points_averaged, 0);
            let (inferred, _) = resample(&series.to_samples(), &ResampleOptions::default()).unwrap();
            prop_assert!(same(&inferred, &series));
        }

        #[test]
        fn long_gaps_survive_the_identity(series in regular_series(), at in 0.0_f64..1.0, len in 4_usize..20) {
            // Punch a gap longer than the default limit into the interior.
            let mut series = series;
            let i = 1 + ((series.len() - 2) as f64 * at) as usize;
            let end = (i + len).min(series.len() - 1);
            for v in &mut series.values[i..end] {
                *v = f64::NAN;
            }
            let opts = ResampleOptions::default().with_step_ms(series.step_ms).with_max_gap_steps(3);
            let (out, _) = resample(&series.to_samples(), &opts).unwrap();
            if end - i > 3 {
                prop_assert!(same(&out, &series));
            }
        }

        #[test]
        fn resampling_is_idempotent(samples in messy_samples(), step in prop::option::of(1_i64..100_000), max_gap in 0_usize..6) {
            let opts = ResampleOptions { step_ms: step, max_gap_steps: max_gap };
            let Ok((once, _)) = resample(&samples, &opts) else {
                // Only a single sample with an inferred step is refused.
                prop_assert!(step.is_none());
                return Ok(());
            };
            let again_opts = ResampleOptions::default().with_step_ms(once.step_ms).with_max_gap_steps(max_gap);
            let (twice, _) = resample(&once.to_samples(), &again_opts).unwrap();
            prop_assert!(same(&once, &twice), "{once:?} != {twice:?}");
        }

        #[test]
        fn values_stay_within_the_input_range(samples in messy_samples(), step in prop::option::of(1_i64..100_000)) {
            let opts = ResampleOptions { step_ms: step, max_gap_steps: 5 };
            if let Ok((out, _)) = resample(&samples, &opts) {
                let (clean, _) = normalize(samples.clone());
                let lo = clean.iter().map(|s| s.value).fold(f64::INFINITY, f64::min);
                let hi = clean.iter().map(|s| s.value).fold(f64::NEG_INFINITY, f64::max);
                for v in out.values.iter().filter(|v| !v.is_nan()) {
                    prop_assert!(*v >= lo && *v <= hi, "{v} outside [{lo}, {hi}]");
                }
            }
        }
    }
}
