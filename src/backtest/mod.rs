//! Backtesting: replays a recorded series through a model of the HPA controller,
//! pod start-up and node provisioning, once per strategy, and measures what each
//! strategy would have cost and how often demand exceeded ready capacity.
//!
//! The predictive strategy drives [`crate::plan::Tracker`], the serving engine's
//! own forecasting state, on a simulated clock: the result is a statement about
//! the code that serves production. Everything here is pure and synchronous;
//! reading files and printing happen in `cmd::backtest`.
//!
//! # What is assumed
//! - The value recorded at a grid point is the demand from that point until the
//!   next one, and it is available from its own timestamp on: the reactive HPA
//!   reads it at its next sync without any metric pipeline delay (favourable to
//!   reactive scaling, so the comparison errs on the conservative side).
//! - Demand in replicas is `value / target`; under-provisioning is demand above
//!   *ready* pods. Replica-hours count placed pods (starting or ready), node-hours
//!   count nodes from the moment they are ordered.
//! - `reactive` and `predictive` go through the same [`hpa::Hpa`] (tolerance,
//!   stabilization, policies); `oracle` sets exactly the replicas the true peak of
//!   the coming lead time needs, so it is the limit of what planning ahead can do
//!   with the same pod start-up and node provisioning.
//! - Gaps the resampler left in the trace count for cost, not for shortfall.
pub mod behavior;
pub mod capacity;
pub mod frontier;
pub mod hpa;
pub mod measure;
pub mod plot;
pub mod report;
pub mod sim;

#[cfg(test)]
mod tests;

pub use behavior::Behavior;
pub use capacity::{CapacitySpec, Cluster, NodePool};
pub use hpa::{Hpa, HpaSpec};
pub use measure::{ForecastAccuracy, Measures};
pub use report::Aggregate;
pub use sim::{
    auto_target, backtest, backtest_with, simulate, simulate_with, AutoTarget, ForecastPlan, Run,
    Scenario, Strategy, Tape, TraceResult,
};

/// Errors from setting up or running a backtest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The trace has no points at all.
    #[error("the trace is empty: expected at least two points")]
    Empty,
    /// The trace has fewer observed points than a replay needs.
    #[error("the trace has {got} observed point(s): expected at least two")]
    TooFewPoints {
        /// Finite points in the trace.
        got: usize,
    },
    /// The trace is shorter than the lead time, so nothing can be planned ahead.
    #[error("the trace spans {span_s} s, shorter than the lead time of {lead_s} s")]
    ShorterThanLeadTime {
        /// Duration covered by the trace, in seconds.
        span_s: i64,
        /// The lead time, in seconds.
        lead_s: i64,
    },
    /// A target per replica that is not a positive number the HPA can read.
    #[error("target per replica must be a finite number of at least 0.001 (the HPA reads milli-units), got {0}")]
    BadTarget(f64),
    /// No target can be derived from a trace that is zero throughout.
    #[error("cannot pick a target automatically: the trace has no positive values")]
    NoAutoTarget,
    /// A scenario setting out of range.
    #[error("{field}: {reason}")]
    Setting {
        /// The setting's name.
        field: &'static str,
        /// What was expected.
        reason: String,
    },
    /// An invalid HPA behavior.
    #[error("behavior {field}: {reason}")]
    Behavior {
        /// Path of the bad field (`scaleUp.policies[0].periodSeconds`).
        field: String,
        /// What was expected.
        reason: String,
    },
    /// The plot could not be drawn or written.
    #[error("plot: {0}")]
    Plot(String),
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
