//! Config reload for `prescale serve --config FILE`: on SIGHUP, and when the
//! file's content changes (checked every `--config-check-interval`, 10 s by
//! default, which is how a mounted ConfigMap's update is noticed).
//!
//! The file is read and validated in full before anything changes: an invalid
//! file (bad YAML, a bad field, an unknown model, an unreadable token file) is
//! rejected with its reason logged and counted, and the running config keeps
//! serving. A valid one goes to the engine, which keeps the state of unchanged
//! signals, drops removed ones and starts new ones ([`prescale::engine::reload`]).
//! Server settings (addresses, TLS, auth, limits, the KEDA scaler) and the node-pool sections are
//! bound at start: a change to them is logged as needing a restart and otherwise
//! ignored.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use prescale::config::Config;
use prescale::engine::{Reload, SignalSettings};
use prescale::source::prometheus::PrometheusSource;
use prescale::source::Source;

/// Label of the reload counter: `success` or `failure`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Reloads `path` into the engine on SIGHUP and when it changes.
pub struct Reloader {
    path: PathBuf,
    current: Config,
    engine: tokio::sync::mpsc::Sender<Reload>,
    reloads: Family<ResultLabel, Counter>,
    catalog: Option<prescale::keda::SharedCatalog>,
}

impl Reloader {
    /// A reloader for the config at `path`, now running as `current`; counts
    /// reloads as `prescale_config_reloads_total{result}` on `registry`.
    pub fn new(
        path: PathBuf,
        current: Config,
        engine: tokio::sync::mpsc::Sender<Reload>,
        registry: &mut Registry,
    ) -> Self {
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.sub_registry_with_prefix("prescale").register(
            "config_reloads",
            "Config reloads (SIGHUP), by result: failure means the file was rejected and the previous config kept serving",
            reloads.clone(),
        );
        for result in ["success", "failure"] {
            // Both series exist from the start, so a rate() over them never sees a gap.
            let _ = reloads.get_or_create(&ResultLabel { result });
        }
        Self {
            path,
            current,
            engine,
            reloads,
            catalog: None,
        }
    }

    /// Also replaces the KEDA scaler's catalog of signals on every reload.
    pub fn with_catalog(mut self, catalog: prescale::keda::SharedCatalog) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// Reloads on SIGHUP, and whenever the file's content changes (checked every
    /// `check_every`, if given), until the engine goes away.
    pub async fn run(mut self, check_every: Option<std::time::Duration>) {
        let mut hangups =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGHUP");
                    None
                }
            };
        // The content last looked at (accepted or not): a rejected file is reported
        // once, not at every check.
        let mut seen = std::fs::read(&self.path).ok();
        let mut ticks = check_every.map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let hangup = async {
                match hangups.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            let tick = async {
                match ticks.as_mut() {
                    Some(t) => t.tick().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                got = hangup => {
                    if got.is_none() {
                        hangups = None;
                        continue;
                    }
                    tracing::info!(path = %self.path.display(), "SIGHUP: reloading the config");
                    seen = std::fs::read(&self.path).ok();
                }
                _ = tick => {
                    // Kubernetes updates a mounted ConfigMap by swapping a symlink:
                    // compare contents, not modification times.
                    let now = std::fs::read(&self.path).ok();
                    if now.is_none() || now == seen {
                        continue;
                    }
                    tracing::info!(path = %self.path.display(), "config file changed: reloading");
                    seen = now;
                }
            }
            match self.prepare() {
                Ok((config, reload)) => {
                    if self.engine.send(reload).await.is_err() {
                        return; // the engine stopped: so are we
                    }
                    self.reloads
                        .get_or_create(&ResultLabel { result: "success" })
                        .inc();
                    if let Some(catalog) = &self.catalog {
                        catalog.store(Arc::new(prescale::keda::Catalog::from_signals(
                            &config.signals,
                        )));
                    }
                    tracing::info!(signals = config.signals.len(), "config reloaded");
                    self.current = config;
                }
                Err(e) => {
                    self.reloads
                        .get_or_create(&ResultLabel { result: "failure" })
                        .inc();
                    tracing::error!(
                        path = %self.path.display(),
                        error = format!("{e:#}"),
                        "config reload rejected; the previous config keeps serving"
                    );
                }
            }
        }
    }

    /// Reads and checks the file and builds what the engine needs; nothing is
    /// changed when this fails.
    fn prepare(&self) -> anyhow::Result<(Config, Reload)> {
        let config = Config::from_file(&self.path)
            .with_context(|| format!("{} is not a valid configuration", self.path.display()))?;
        let signals = config
            .signals
            .iter()
            .map(SignalSettings::from_config)
            .collect::<Result<Vec<_>, _>>()?;
        let source = if config.prometheus == self.current.prometheus {
            None
        } else {
            let s = PrometheusSource::new(&config.prometheus)
                .context("cannot set up the Prometheus client")?;
            Some(Arc::new(s) as Arc<dyn Source>)
        };
        if config.server != self.current.server {
            tracing::warn!(
                "server settings (addresses, TLS, auth, limits, shutdown_grace, keda_scaler, upstream) changed: they take effect on restart; the running ones are kept"
            );
        }
        let nodepools = |c: &Config| {
            (
                c.nodepools.clone(),
                c.workloads.clone(),
                c.capacity_buffers.clone(),
                c.expander.clone(),
            )
        };
        if nodepools(&config) != nodepools(&self.current) {
            tracing::warn!(
                "node-pool settings (nodepools, workloads, capacity_buffers, expander) changed: they take effect on restart; the running ones are kept"
            );
        }
        Ok((config, Reload { signals, source }))
    }
}
