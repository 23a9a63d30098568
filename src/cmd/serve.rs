//! `prescale serve`: the engine loop and the API, until SIGTERM or Ctrl-C.
//!
//! With `--config FILE` it forecasts the configured Prometheus queries. Without, it
//! serves the bundled recorded traces (embedded in the binary, so it runs from any
//! directory) through the file source replayed on the wall clock: no Prometheus and
//! no cluster needed, which makes it the first command to try.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use prescale::api::auth::{FrontProxy, StaticAuthorizer};
use prescale::api::pods::{NoPods, PodLookup};
use prescale::api::{AuthMode, Limits, TlsSource};

use prescale::clock::{Clock, SystemClock};
use prescale::config::custom::MetricTypeConfig;
use prescale::config::{self, Config, Duration, MetricName, Quantile, ServerConfig, SignalConfig};
use prescale::engine::{Engine, Metrics, SignalSettings};
use prescale::forecast::ModelSpec;
use prescale::kube::watch::Watched;
use prescale::series::{read_csv, LabeledSeries, ResampleOptions};
use prescale::snapshot::metrics::SeriesMetrics;
use prescale::snapshot::Shared;
use prescale::source::file::FileSource;
use prescale::source::prometheus::PrometheusSource;
use prescale::source::Source;

mod keda;
#[cfg(unix)]
mod reload;
mod upstream;

/// Arguments of `prescale serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file; without it the bundled traces are served locally on
    /// loopback with a self-signed certificate and no authentication.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Overrides the HTTPS address (default 127.0.0.1:6443 without a config).
    #[arg(long)]
    pub https_address: Option<SocketAddr>,
    /// Overrides the plain-HTTP address (default 127.0.0.1:8080 without a config).
    #[arg(long)]
    pub http_address: Option<SocketAddr>,
    /// Overrides the authentication mode: `kubernetes`, `requestheader` or `none`
    /// (local use only: refuses non-loopback addresses).
    #[arg(long, value_parser = parse_auth)]
    pub auth: Option<config::AuthMode>,
    /// How often the config file is checked for changes (a changed file is
    /// reloaded as on SIGHUP); `off` to reload on SIGHUP only.
    #[arg(long, default_value = "10s", value_parser = parse_check_interval)]
    pub config_check_interval: CheckInterval,
}

/// How often `--config` is checked for changes; `None` is never.
#[derive(Debug, Clone, Copy)]
pub struct CheckInterval(Option<std::time::Duration>);

fn parse_check_interval(s: &str) -> Result<CheckInterval, String> {
    if s == "off" {
        return Ok(CheckInterval(None));
    }
    let ms = config::parse_duration_ms(s)?;
    if ms == 0 {
        return Err("must be positive or `off`".to_string());
    }
    Ok(CheckInterval(Some(std::time::Duration::from_millis(ms))))
}

fn parse_auth(s: &str) -> Result<config::AuthMode, String> {
    match s {
        "kubernetes" => Ok(config::AuthMode::Kubernetes),
        "requestheader" => Ok(config::AuthMode::Requestheader),
        "none" => Ok(config::AuthMode::None),
        _ => Err(format!(
            "must be one of kubernetes, requestheader, none; got {s:?}"
        )),
    }
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
    let result = runtime.block_on(serve(args));
    // A model fit still running on a blocking thread must not hold the exit: the
    // shutdown grace is already spent.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config = match &args.config {
        Some(path) => Some(
            Config::from_file(path)
                .with_context(|| format!("{} is not a valid configuration", path.display()))?,
        ),
        None => None,
    };
    let (signals, source, mut server): (Vec<SignalConfig>, Arc<dyn Source>, ServerConfig) =
        match &config {
            Some(config) => {
                let source = PrometheusSource::new(&config.prometheus)
                    .context("cannot set up the Prometheus client")?;
                (
                    config.signals.clone(),
                    Arc::new(source),
                    config.server.clone(),
                )
            }
            None => {
                let (signals, source) = bundled(clock.now_ms())?;
                (signals, Arc::new(source), local_server())
            }
        };
    if let Some(addr) = args.https_address {
        server.https_address = addr;
    }
    if let Some(addr) = args.http_address {
        server.http_address = addr;
    }
    if let Some(mode) = args.auth {
        server.auth.mode = mode;
    }
    let settings = signals
        .iter()
        .map(SignalSettings::from_config)
        .collect::<Result<Vec<_>, _>>()?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::new(&mut registry);
    let shared = Shared::new();
    // The KEDA scaler's view of the signals; a config reload replaces it.
    let catalog: prescale::keda::SharedCatalog = Arc::new(arc_swap::ArcSwap::from_pointee(
        prescale::keda::Catalog::from_signals(&signals),
    ));
    // Pods and nodes, watched into memory: requests and engine steps read them.
    let watched = watched(&signals, config.as_ref()).await;
    let mut node_parts =
        super::nodepools::setup(config.as_ref(), watched.clone(), shared.clone()).await?;
    if let Some(w) = &watched {
        registry
            .sub_registry_with_prefix("prescale")
            .register_collector(w.collector());
    }
    SeriesMetrics::new(
        shared.clone(),
        Arc::clone(&clock),
        server.metrics.series_limit,
    )
    .register(&mut registry);
    // Registered now so that /metrics lists the expander's families from the start;
    // the handle goes to the expander (`Expander::with_metrics`) where it is started.
    let expander_metrics = prescale::expander::Metrics::new(&mut registry);
    let mut engine = Engine::new(
        settings,
        source,
        shared.clone(),
        Arc::clone(&clock),
        metrics,
    );
    if let Some(np) = node_parts.nodepools.take() {
        engine = engine.with_nodepools(np);
    }
    let progress = engine.progress();
    // Config reload on SIGHUP and file change; the bundled traces have no file.
    // The reloader ends with the runtime.
    #[cfg(unix)]
    if let (Some(path), Some(config)) = (&args.config, &config) {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        engine = engine.with_reloads(rx);
        let reloader = reload::Reloader::new(path.clone(), config.clone(), tx, &mut registry)
            .with_catalog(Arc::clone(&catalog));
        tokio::spawn(reloader.run(args.config_check_interval.0));
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut api_settings = prescale::api::Settings::new(
        server.https_address,
        server.http_address,
        tls_source(&server),
        auth_mode(&server).await?,
    );
    api_settings.limits = limits(&server);
    let grace = server.shutdown_grace.as_std();
    let upstreams = upstream::start(&server, &signals, stop_rx.clone()).await?;
    registry
        .sub_registry_with_prefix("prescale")
        .register_collector(upstreams.collector());
    let api = prescale::api::Server::bind(
        api_settings,
        shared.clone(),
        Arc::new(registry),
        Arc::clone(&clock),
    )
    .await
    .context("cannot start the API")?
    .with_pod_lookup(match &watched {
        Some(w) if w.pods.is_some() => Arc::clone(w) as Arc<dyn PodLookup>,
        _ => Arc::new(NoPods),
    })
    .with_readiness(Some(Arc::new(move || {
        // The first load's progress, then the watched cluster state's lists.
        let why: Vec<String> = progress
            .not_ready()
            .into_iter()
            .chain(watched.as_ref().and_then(|w| w.not_ready()))
            .collect();
        (!why.is_empty()).then(|| why.join("; "))
    })
        as Arc<dyn Fn() -> Option<String> + Send + Sync>))
    .with_upstreams(upstreams);
    let https = api.https_addr();
    // After the API: the expander may serve the certificate the API generated.
    let expander = node_parts
        .expander(
            &server,
            Arc::clone(&clock),
            expander_metrics,
            stopped(stop_rx.clone()),
        )
        .await?;
    let keda = keda::start(
        &server,
        shared,
        Arc::clone(&clock),
        catalog,
        stopped(stop_rx.clone()),
    )
    .await?;
    // The CapacityBuffer writer stops at the shutdown signal and ends with the
    // runtime.
    if let Some(buffers) = node_parts.buffers(Arc::clone(&clock), stopped(stop_rx.clone())) {
        tokio::spawn(buffers);
    }
    let mut engine_task = tokio::spawn(engine.run(stopped(stop_rx.clone())));
    let mut api_task = tokio::spawn(api.run(stopped(stop_rx.clone())));
    // Without an expander this task just waits for the shutdown.
    let expander_rx = stop_rx.clone();
    let mut expander_task = tokio::spawn(async move {
        match expander {
            Some(run) => run.await,
            None => {
                stopped(expander_rx).await;
                Ok(())
            }
        }
    });
    // Without a KEDA scaler this task just waits for the shutdown.
    let keda_rx = stop_rx.clone();
    let mut keda_task = tokio::spawn(async move {
        match keda {
            Some(run) => run.await,
            None => {
                stopped(keda_rx).await;
                Ok(())
            }
        }
    });
    tracing::info!(signals = signals.len(), %https, "serving");
    if let Some(hint) = curl_hint(&server, https, &signals) {
        // Not `println!`: a closed stdout must not stop the server.
        let _ = std::io::Write::write_fmt(&mut std::io::stdout(), format_args!("{hint}\n"));
    }

    // Any part ending early (an error) stops the others: never serve without a
    // live engine, nor refresh for nobody, nor choose node groups from a plan
    // nobody updates.
    let (engine_result, api_result, expander_result, keda_result) = tokio::select! {
        () = shutdown_signal() => {
            tracing::info!(grace = ?grace, "shutting down: no new connections, open ones get the grace");
            let _ = stop_tx.send(true);
            exit_after(grace);
            (engine_task.await, api_task.await, expander_task.await, keda_task.await)
        }
        r = &mut engine_task => {
            tracing::error!("engine stopped; stopping the API");
            let _ = stop_tx.send(true);
            (r, api_task.await, expander_task.await, keda_task.await)
        }
        r = &mut api_task => {
            tracing::error!("API stopped; stopping the engine");
            let _ = stop_tx.send(true);
            (engine_task.await, r, expander_task.await, keda_task.await)
        }
        r = &mut expander_task => {
            tracing::error!("gRPC expander stopped; stopping the engine and the API");
            let _ = stop_tx.send(true);
            (engine_task.await, api_task.await, r, keda_task.await)
        }
        r = &mut keda_task => {
            tracing::error!("KEDA external scaler stopped; stopping the engine and the API");
            let _ = stop_tx.send(true);
            (engine_task.await, api_task.await, expander_task.await, r)
        }
    };
    engine_result.context("engine task")?.context("engine")?;
    api_result.context("API task")?.context("API")?;
    expander_result.context("expander task")??;
    keda_result.context("KEDA scaler task")??;
    Ok(())
}

/// Without a configuration: loopback only, generated certificate, no authentication.
/// A `curl` line that fetches the first external metric as an HPA would; only
/// with authentication off, since it sends no credentials (with auth on it would
/// only ever get a 401).
fn curl_hint(server: &ServerConfig, https: SocketAddr, signals: &[SignalConfig]) -> Option<String> {
    if server.auth.mode != config::AuthMode::None {
        return None;
    }
    let first = signals.iter().find(|s| s.custom.is_none())?;
    let insecure = if server.tls.cert_file.is_none() {
        "k"
    } else {
        ""
    };
    Some(format!(
        "curl -s{insecure} https://{https}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/{}",
        first.name
    ))
}

fn local_server() -> ServerConfig {
    let mut server = ServerConfig {
        https_address: SocketAddr::from(([127, 0, 0, 1], 6443)),
        http_address: SocketAddr::from(([127, 0, 0, 1], 8080)),
        ..ServerConfig::default()
    };
    server.tls.cert_dir = std::env::temp_dir().join("prescale-serving-cert");
    server.auth.mode = config::AuthMode::None;
    server
}

/// The API's limits from the config; the shutdown grace is how long connections drain.
fn limits(server: &ServerConfig) -> Limits {
    let l = &server.limits;
    Limits {
        max_header_bytes: l.max_header_bytes,
        max_body_bytes: l.max_body_bytes,
        tls_handshake_timeout: l.tls_handshake_timeout.as_std(),
        header_read_timeout: l.header_read_timeout.as_std(),
        idle_timeout: l.idle_timeout.as_std(),
        max_connections: l.max_connections,
        http2_max_streams: l.http2_max_streams,
        drain_timeout: server.shutdown_grace.as_std(),
    }
}

fn tls_source(server: &ServerConfig) -> TlsSource {
    match (&server.tls.cert_file, &server.tls.key_file) {
        (Some(cert), Some(key)) => TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => TlsSource::SelfSigned {
            dir: server.tls.cert_dir.clone(),
            dns_names: server.tls.dns_names.clone(),
        },
    }
}

/// The front-proxy settings from the configured files.
fn front_proxy_from_files(
    auth: &config::AuthConfig,
    ca_file: &std::path::Path,
) -> anyhow::Result<FrontProxy> {
    let pem = std::fs::read_to_string(ca_file).with_context(|| {
        format!(
            "cannot read requestheader_client_ca_file {}",
            ca_file.display()
        )
    })?;
    Ok(FrontProxy {
        client_ca_pem: pem,
        allowed_names: auth.requestheader_allowed_names.clone(),
        username_headers: auth.requestheader_username_headers.clone(),
        group_headers: auth.requestheader_group_headers.clone(),
        extra_headers_prefix: auth.requestheader_extra_headers_prefix.clone(),
    })
}

async fn auth_mode(server: &ServerConfig) -> anyhow::Result<AuthMode> {
    let auth = &server.auth;
    match auth.mode {
        config::AuthMode::None => {
            for addr in [server.https_address, server.http_address] {
                anyhow::ensure!(
                    addr.ip().is_loopback(),
                    "--auth=none only binds loopback addresses, got {addr}"
                );
            }
            Ok(AuthMode::None)
        }
        config::AuthMode::Requestheader => {
            let ca = auth
                .requestheader_client_ca_file
                .as_deref()
                .context("auth mode requestheader needs requestheader_client_ca_file")?;
            Ok(AuthMode::Delegated {
                front_proxy: Some(front_proxy_from_files(auth, ca)?),
                tokens: None,
                // Whoever the kube-apiserver vouches for may read: it has already
                // authorized the request against its own RBAC.
                authorizer: Arc::new(StaticAuthorizer::allow_all()),
            })
        }
        config::AuthMode::Kubernetes => {
            let client = ::kube::Client::try_default()
                .await
                .context("cannot reach the Kubernetes API (in-cluster config or kubeconfig)")?;
            let front_proxy = match &auth.requestheader_client_ca_file {
                Some(ca) => Some(front_proxy_from_files(auth, ca)?),
                None => None,
            };
            prescale::kube::delegated_auth(client, front_proxy)
                .await
                .context("cannot read the front-proxy settings")
        }
    }
}

/// Bounds the shutdown: the API gives open connections `grace` and the engine
/// stops at once, so a process still here a second after that (or that gets a
/// second SIGTERM or Ctrl-C: someone is waiting) exits anyway, with an error.
fn exit_after(grace: std::time::Duration) {
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(grace + std::time::Duration::from_secs(1)) => {
                tracing::error!(grace = ?grace, "did not stop within server.shutdown_grace and a second; exiting anyway");
            }
            () = shutdown_signal() => {
                tracing::error!("second shutdown signal: exiting without waiting for open connections");
            }
        }
        std::process::exit(1);
    });
}

/// The watched pods and nodes: pods when a Pods metric or a node-pool workload
/// is configured, nodes when node pools are; `None` when nothing needs them or no
/// Kubernetes client can be built (Pods metrics then answer 503 saying why, and
/// node pools are planned without current nodes).
async fn watched(signals: &[SignalConfig], config: Option<&Config>) -> Option<Arc<Watched>> {
    let pods_metrics = signals
        .iter()
        .filter(|s| {
            s.custom
                .as_ref()
                .is_some_and(|c| c.metric_type == MetricTypeConfig::Pods)
        })
        .count();
    let pools = config.is_some_and(|c| !c.nodepools.is_empty());
    let workloads = pools && config.is_some_and(|c| !c.workloads.is_empty());
    if pods_metrics == 0 && !pools {
        return None;
    }
    match ::kube::Client::try_default().await {
        Ok(client) => Some(Watched::start(
            &client,
            pods_metrics > 0 || workloads,
            pools,
        )),
        Err(e) => {
            if pods_metrics > 0 {
                tracing::warn!(
                    error = %e,
                    pods_metrics,
                    "Pods metrics are configured but no Kubernetes client can be built: they will answer 503"
                );
            }
            None
        }
    }
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
    let auto = ModelSpec::by_name("auto")?;
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
            model: auto.clone(),
            reactive_floor: true,
            hpa_tolerance: 0.1,
            mode: config::SignalMode::Predictive,
            hpa_target: None,
            namespaces: None,
            custom: None,
            max_staleness: ms((3 * step_ms).max(300_000))?,
            refit_interval: ms(step_ms.max(3_600_000))?,
            min_history: ms((history_ms / 2).min(86_400_000))?,
            fit_step: None,
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
                freshness_query: String::new(),
                query_offset: None,
            },
            signals,
            server: Default::default(),
            nodepools: Vec::new(),
            workloads: Vec::new(),
            capacity_buffers: Default::default(),
            expander: None,
            planning: Default::default(),
        };
        config.validate().unwrap();
        for s in &config.signals {
            SignalSettings::from_config(s).unwrap();
        }
    }
    #[test]
    fn curl_hint_only_when_it_works_without_credentials() {
        let (signals, _) = bundled(1_700_000_000_000).unwrap();
        let https: SocketAddr = "127.0.0.1:6443".parse().unwrap();
        let mut server = local_server();
        let hint = curl_hint(&server, https, &signals).unwrap();
        assert!(
            hint.starts_with("curl -sk https://127.0.0.1:6443/apis/external.metrics.k8s.io/v1beta1/namespaces/default/"),
            "{hint}"
        );
        for mode in [
            config::AuthMode::Kubernetes,
            config::AuthMode::Requestheader,
        ] {
            server.auth.mode = mode;
            assert_eq!(curl_hint(&server, https, &signals), None, "{mode:?}");
        }
    }
}
