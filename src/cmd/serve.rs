//! `prescale serve`: the engine loop and the API, until SIGTERM or Ctrl-C.
//!
//! With `--config FILE` it forecasts the configured Prometheus queries. Without, it
//! serves the bundled recorded traces (embedded in the binary, so it runs from any
//! directory) through the file source replayed on the wall clock: no Prometheus and
//! no cluster needed, which makes it the first command to try.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use prescale::clock::{Clock, SystemClock};
use prescale::config::{Config, Duration, MetricName, Quantile, SignalConfig};
use prescale::engine::{Engine, Metrics, SignalSettings};
use prescale::series::{read_csv, LabeledSeries, ResampleOptions};
use prescale::snapshot::Shared;
use prescale::source::file::FileSource;
use prescale::source::prometheus::PrometheusSource;
use prescale::source::Source;

/// Arguments of `prescale serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file; without it the bundled traces are served locally.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The bundled traces: (metric name, CSV text).
const BUNDLED: &[(&str, &str)] = &[
    (
        "azure_llm_conv_requests_per_sec",
        include_str!("../../tests/data/azure_llm_conv_requests_per_sec.csv"),
    ),
    (
        "google2019_cell_avg_cpu_5min",
        include_str!("../../tests/data/google2019_cell_avg_cpu_5min.csv"),
    ),
    (
        "nab_cpu_utilization_asg_misconfiguration",
        include_str!("../../tests/data/nab_cpu_utilization_asg_misconfiguration.csv"),
    ),
    (
        "nab_ec2_cpu_utilization_5f5533",
        include_str!("../../tests/data/nab_ec2_cpu_utilization_5f5533.csv"),
    ),
    (
        "nab_ec2_cpu_utilization_ac20cd",
        include_str!("../../tests/data/nab_ec2_cpu_utilization_ac20cd.csv"),
    ),
    (
        "nab_ec2_network_in_257a54",
        include_str!("../../tests/data/nab_ec2_network_in_257a54.csv"),
    ),
    (
        "nab_ec2_request_latency_system_failure",
        include_str!("../../tests/data/nab_ec2_request_latency_system_failure.csv"),
    ),
    (
        "nab_elb_request_count_8c0756",
        include_str!("../../tests/data/nab_elb_request_count_8c0756.csv"),
    ),
    (
        "nab_rds_cpu_utilization_cc0c53",
        include_str!("../../tests/data/nab_rds_cpu_utilization_cc0c53.csv"),
    ),
    (
        "snowflake_region1_vm_demand_hourly",
        include_str!("../../tests/data/snowflake_region1_vm_demand_hourly.csv"),
    ),
];

/// Most history kept per bundled trace: two weeks, and never more than 20k points.
const BUNDLED_HISTORY_MS: i64 = 14 * 86_400_000;
const BUNDLED_MAX_STEPS: i64 = 20_000;

/// Runs `prescale serve`.
///
/// # Errors
/// On a bad configuration, a source that cannot be set up, or a server that cannot bind.
pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (signals, source): (Vec<SignalConfig>, Arc<dyn Source>) = match &args.config {
        Some(path) => {
            let config = Config::from_file(path)
                .with_context(|| format!("{} is not a valid configuration", path.display()))?;
            let source = PrometheusSource::new(&config.prometheus)
                .context("cannot set up the Prometheus client")?;
            (config.signals, Arc::new(source))
        }
        None => {
            let (signals, source) = bundled(clock.now_ms())?;
            (signals, Arc::new(source))
        }
    };
    let settings = signals
        .iter()
        .map(SignalSettings::from_config)
        .collect::<Result<Vec<_>, _>>()?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::new(&mut registry);
    let shared = Shared::new();
    let engine = Engine::new(
        settings,
        source,
        shared.clone(),
        Arc::clone(&clock),
        metrics,
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let engine_task = tokio::spawn(engine.run(stopped(stop_rx.clone())));
    tracing::info!(signals = signals.len(), "engine started");

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    engine_task.await.context("engine task")??;
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// The bundled traces as signals and a file source whose recordings end at `now_ms`.
fn bundled(now_ms: i64) -> anyhow::Result<(Vec<SignalConfig>, FileSource)> {
    let mut source = FileSource::new(now_ms);
    let mut signals = Vec::new();
    for (name, text) in BUNDLED {
        let raw = read_csv(text).with_context(|| format!("bundled trace {name}"))?;
        let (series, _) = raw
            .resample(&ResampleOptions::default())
            .with_context(|| format!("bundled trace {name}"))?;
        let step_ms = series.series.step_ms;
        // Whole seconds, as Prometheus steps are.
        let step_ms = (step_ms.max(1_000) / 1_000) * 1_000;
        let points = i64::try_from(series.series.len()).unwrap_or(i64::MAX);
        let history_ms =
            (points.min(BUNDLED_MAX_STEPS) * step_ms).min(BUNDLED_HISTORY_MS.max(2 * step_ms));
        let ms = |v: i64| {
            Duration::try_from_ms(u64::try_from(v.max(1)).unwrap_or(1)).map_err(anyhow::Error::msg)
        };
        let signal = SignalConfig {
            name: MetricName::try_new(name).map_err(anyhow::Error::msg)?,
            query: (*name).to_string(),
            step: ms(step_ms)?,
            history: ms(history_ms)?,
            lead_time: ms(step_ms.max(180_000))?,
            quantile: Quantile::try_new(0.9).map_err(anyhow::Error::msg)?,
            model: "auto".to_string(),
            reactive_floor: true,
            namespaces: None,
            max_staleness: ms((3 * step_ms).max(300_000))?,
            refit_interval: ms(step_ms.max(3_600_000))?,
            min_history: ms((history_ms / 2).min(86_400_000))?,
        };
        let labels = [("trace".to_string(), (*name).to_string())].into();
        source = source.with_recording(
            *name,
            vec![LabeledSeries {
                labels,
                series: series.series,
            }],
        );
        signals.push(signal);
    }
    Ok((signals, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_traces_make_valid_signals() {
        let (signals, _) = bundled(1_700_000_000_000).unwrap();
        assert_eq!(signals.len(), BUNDLED.len());
        let config = Config {
            prometheus: prescale::config::PrometheusConfig {
                url: "http://127.0.0.1:9090".to_string(),
                timeout: Duration::try_new("1s").unwrap(),
                bearer_token_file: None,
                ca_file: None,
                insecure_skip_verify: false,
                headers: Default::default(),
            },
            signals,
            server: Default::default(),
        };
        config.validate().unwrap();
        for s in &config.signals {
            SignalSettings::from_config(s).unwrap();
        }
    }
}
