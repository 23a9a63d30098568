//! The `prescale` command line: wires the library's parts together.

use clap::{CommandFactory, Parser, Subcommand};

mod cmd;

/// jemalloc, with background threads returning freed pages to the system
/// ([`purge_in_background`]). Fits allocate and free a week of history per series
/// on worker threads; glibc's malloc kept most of it: with 2,000 `auto` series the
/// scale bench measured 183 KiB resident per series under glibc against ~30 KiB of
/// live heap, and 36 KiB under jemalloc (README, "Benchmarks").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Lets jemalloc purge freed pages on its own threads after its decay time (10 s),
/// not only when an allocating thread happens to pass by.
fn purge_in_background() {
    #[cfg(not(target_env = "msvc"))]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::debug!(error = %e, "jemalloc background threads not enabled");
    }
}

/// Predictive autoscaler for Kubernetes: forecasts Prometheus metrics and serves
/// them to HorizontalPodAutoscalers and the cluster-autoscaler.
#[derive(Debug, Parser)]
#[command(name = "prescale", version, about)]
struct Cli {
    /// Log lines as plain text or as one JSON object per line (for log collectors).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "PRESCALE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines; coloured only when stderr is a terminal.
    Text,
    /// One JSON object per line: timestamp, level, target, message and fields.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fit a model to a recorded series and print its forecast with intervals.
    Forecast(cmd::forecast::Args),
    /// Score a forecast model over a data set (M4 files or recorded traces).
    Eval(cmd::eval::Args),
    /// Validate a configuration file without starting anything.
    CheckConfig(cmd::check_config::Args),
    /// Save a range of a PromQL query as CSV, one file per series, for replay.
    Record(cmd::record::Args),
    /// Forecast and serve external metrics (the bundled traces when no --config).
    Serve(cmd::serve::Args),
    /// Replay recorded traces through the HPA and node-provisioning model: reactive vs
    /// predictive vs oracle.
    Backtest(cmd::backtest::Args),
    /// Explain how each served value came about, from a running server
    /// (`--server`) or offline over a recording (`--config` + `--input`).
    Explain(cmd::explain::Args),
    /// Print a shell completion script (e.g. `prescale completions bash >
    /// /etc/bash_completion.d/prescale`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; `prescale man | man -l -`).
    Man,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        // What `kubectl logs` shows is a file, not a terminal: no colour codes there.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
    purge_in_background();
    match cli.command {
        Command::Forecast(args) => cmd::forecast::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::CheckConfig(args) => cmd::check_config::run(args),
        Command::Record(args) => cmd::record::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Backtest(args) => cmd::backtest::run(args),
        Command::Explain(args) => cmd::explain::run(args),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "prescale", &mut out);
            cmd::write_out(format_args!("{}", String::from_utf8_lossy(&out)));
            Ok(())
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            cmd::write_out(format_args!("{}", String::from_utf8_lossy(&out)));
            Ok(())
        }
    }
}
