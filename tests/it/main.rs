//! The integration tests, one binary: each module was a test file of its own, and
//! `support` holds what they share (Prometheus and promtool, the peers cache,
//! certificates, a fault-injecting proxy, the expander over gRPC, JSON helpers, child processes killed on drop).
//!
//! Every module links the same dependency tree once instead of once per file. Run one
//! module with `cargo test --test it <module>::`, e.g. `cargo test --test it e2e::
//! -- --nocapture` for the end-to-end tier.
//!
//! Tests that need a tool (prometheus, promtool, etcd, rabbitmq-server, kubectl, the
//! e2e peers) skip with the reason outside CI and fail with `CI=true`.

mod support;

mod api_hostile;
mod api_tls;
mod backtest_cli;
mod cli_serve_record;
mod custom_metrics_prometheus;
mod deploy;
mod e2e;
mod engine_prometheus;
mod expander_faults;
mod expander_grpc;
mod faults_prometheus;
mod forecast_cli;
mod freshness_prometheus;
mod image;
mod keda_grpc;
mod nodepool_balloon;
mod nodepool_engine;
mod rabbitmq;
mod replicas;
mod series_promtool;
mod series_traces;
mod serve_custom;
mod serve_e2e;
mod serve_expander;
mod serve_lifecycle;
mod serve_upstream;
