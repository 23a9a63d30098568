//! prescale: a predictive autoscaler for Kubernetes.
//!
//! It pulls metric history from Prometheus, forecasts every series and serves the
//! forecasts where Kubernetes already looks for scaling input. The module map is in
//! the README; `forecast`, `plan`, `backtest` and `series` are pure and synchronous,
//! all I/O lives at the edges.

pub mod api;
pub mod backtest;
pub mod clock;
pub mod config;
pub mod custom;
pub mod engine;
pub mod eval;
pub mod expander;
pub mod forecast;
pub mod keda;
pub mod kube;
pub mod names;
pub mod plan;
pub mod quantity;
pub mod series;
pub mod snapshot;
pub mod source;
