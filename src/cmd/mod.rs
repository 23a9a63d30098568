//! One module per subcommand: its arguments and its `run`.

pub mod eval;
pub mod forecast;
mod traces;
