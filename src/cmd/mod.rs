//! One module per subcommand: its arguments and its `run`.

pub mod backtest;
pub mod check_config;
pub mod eval;
pub mod forecast;
mod frontier_report;
pub mod nodepools;
pub mod record;
pub mod serve;
mod traces;
