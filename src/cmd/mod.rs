//! One module per subcommand: its arguments and its `run`.
//!
//! The report commands print through [`outln!`] and [`out!`], not `println!`:
//! `prescale backtest | head -1` closes the pipe early, and `println!` panics on
//! that. A closed stdout ends the command quietly with status 0 (the reader has
//! what it wanted); any other write error is reported and ends it with status 1.

/// Writes to stdout; on a closed pipe the process ends quietly (see the module).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cmd::write_out(format_args!($($arg)*))
    };
}

/// [`out!`] with a newline.
macro_rules! outln {
    () => {
        $crate::cmd::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cmd::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// What [`out!`] and [`outln!`] do.
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// The signal named `name` in `config` (read from `path`), or an error listing
/// the signals there are.
pub(crate) fn signal_named<'a>(
    config: &'a prescale::config::Config,
    path: &std::path::Path,
    name: &str,
) -> anyhow::Result<&'a prescale::config::SignalConfig> {
    config
        .signals
        .iter()
        .find(|s| s.name.as_str() == name)
        .ok_or_else(|| {
            let known: Vec<&str> = config.signals.iter().map(|s| s.name.as_str()).collect();
            anyhow::anyhow!(
                "--signal {name:?} is not in {}: must be one of {}",
                path.display(),
                known.join(", ")
            )
        })
}

pub mod backtest;
pub mod check_config;
pub mod eval;
pub mod explain;
pub mod forecast;
mod frontier_report;
pub mod nodepools;
pub mod record;
pub mod serve;
mod traces;
