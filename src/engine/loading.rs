//! How far the engine's first load (the cold start) has come, for `/readyz` and
//! the log.
//!
//! At start every signal fetches its whole history window; with 100k series that
//! is minutes of fetching and first fits. The engine fetches a bounded number of
//! signals at once and applies them in batches ([`super::Engine::step`]); after
//! each batch it records here how many signals have answered and how many series
//! they brought. Until the first snapshot is published, `/readyz` says so.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Progress of the first load; shared between the engine and the readiness probe.
#[derive(Debug, Default)]
pub struct Progress {
    signals_total: AtomicUsize,
    signals_answered: AtomicUsize,
    series_loaded: AtomicUsize,
    done: AtomicBool,
}

/// A reading of [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Signals whose first fetch has been applied (with series or with an error).
    pub signals_answered: usize,
    /// Signals configured.
    pub signals_total: usize,
    /// Series held after the batches applied so far.
    pub series: usize,
}

impl Loaded {
    /// The readiness detail, e.g. `loading: 12000 series from 12 of 100 signals`.
    pub fn describe(&self) -> String {
        format!(
            "loading: {} series from {} of {} signals (a signal's series are counted once its query has answered)",
            self.series, self.signals_answered, self.signals_total
        )
    }
}

impl Progress {
    /// Records the state after a batch.
    pub fn set(&self, loaded: Loaded) {
        self.signals_total
            .store(loaded.signals_total, Ordering::Relaxed);
        self.signals_answered
            .store(loaded.signals_answered, Ordering::Relaxed);
        self.series_loaded.store(loaded.series, Ordering::Relaxed);
    }

    /// The last state recorded.
    pub fn get(&self) -> Loaded {
        Loaded {
            signals_total: self.signals_total.load(Ordering::Relaxed),
            signals_answered: self.signals_answered.load(Ordering::Relaxed),
            series: self.series_loaded.load(Ordering::Relaxed),
        }
    }

    /// The first snapshot is published: the load is over.
    pub fn finish(&self) {
        self.done.store(true, Ordering::Release);
    }

    /// While the first load runs, what it has done so far (the `/readyz` detail);
    /// `None` once it is over.
    pub fn not_ready(&self) -> Option<String> {
        (!self.done.load(Ordering::Acquire)).then(|| self.get().describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reports_until_finished() {
        let p = Progress::default();
        p.set(Loaded {
            signals_answered: 3,
            signals_total: 10,
            series: 2_500,
        });
        let why = p.not_ready().unwrap();
        assert!(
            why.starts_with("loading: 2500 series from 3 of 10 signals"),
            "{why}"
        );
        p.finish();
        assert_eq!(p.not_ready(), None);
        assert_eq!(p.get().series, 2_500);
    }
}
