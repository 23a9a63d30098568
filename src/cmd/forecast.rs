//! `prescale forecast`: fit a model to a recorded series and print the forecast.

/// Arguments of `prescale forecast`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Recorded series (CSV `timestamp,value`); the bundled trace when omitted.
    #[arg(long)]
    pub input: Option<std::path::PathBuf>,
}

/// Runs `prescale forecast`.
///
/// # Errors
/// When the input cannot be read or no model fits it.
pub fn run(args: Args) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("prescale forecast: not built yet")
}
