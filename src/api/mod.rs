//! The HTTPS API the kube-apiserver's aggregation layer calls on behalf of HPAs
//! (`external.metrics.k8s.io`, and `custom.metrics.k8s.io` in [`custom`]), and the
//! plain-HTTP port for probes, self-metrics and `/debug/signals`.
//!
//! Handlers only read the current [`Shared`] snapshot: a request never waits on
//! Prometheus or a model. Errors become Kubernetes `Status` objects in one place
//! ([`status`]); `Accept` negotiation and JSON answers are in [`media`].
//! Besides the values, the server answers what the kube-aggregator asks every
//! APIService backend: discovery, aggregated too ([`discovery`]), and the
//! OpenAPI documents ([`openapi`]). Authentication and authorization are in
//! [`auth`], TLS in [`tls`], and the connection loop (hyper over tokio-rustls, so
//! that each request carries the verified client certificate of its connection)
//! in [`server`].
//!
//! Entry points: [`run`] (or [`Server::bind`] then [`Server::run`] to learn the
//! bound addresses first), and [`router`] / [`plain_router`] for in-memory tests.

pub mod auth;
pub mod custom;
pub mod discovery;
pub mod external;
pub mod media;
pub mod metrics;
pub mod openapi;
pub mod plain;
pub mod pods;
pub mod selector;
pub mod server;
pub mod serving;
pub mod status;
pub mod tls;
pub mod upstream;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

pub use auth::AuthMode;
pub use tls::TlsSource;

use crate::clock::Clock;
use crate::snapshot::Shared;
use metrics::Endpoint;

/// Why the servers could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] tls::Error),
    /// A listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// `--auth=none` with an address other hosts can reach.
    #[error(
        "authentication is disabled, so the HTTPS API may only bind a loopback address, not {0}"
    )]
    NotLoopback(SocketAddr),
}

/// Result with this module's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Protection against large and slow clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (HTTP/1 buffer, HTTP/2 header list), bytes; at least 8 KiB.
    pub max_header_bytes: usize,
    /// Largest declared request body, bytes (only `GET` is served, so small).
    pub max_body_bytes: u64,
    /// Time a client has to complete the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time a client has to send a complete request head; also the time a new
    /// connection has to start its first request (HTTP/1 or HTTP/2).
    pub header_read_timeout: Duration,
    /// A connection with no request for this long is closed (gracefully), so idle
    /// HTTP/2 connections that answer pings cannot hold connection slots forever.
    pub idle_timeout: Duration,
    /// Concurrent connections per port; beyond it, accepting waits.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub http2_max_streams: u32,
    /// Time open connections get to finish after shutdown is requested.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // Front-proxy headers carry the user's groups and extras: 64 KiB is
            // generous for that and small enough not to matter per connection.
            max_header_bytes: 64 * 1024,
            max_body_bytes: 64 * 1024,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            // The kube-apiserver reconnects at once when it needs to: cheap to close.
            idle_timeout: Duration::from_secs(300),
            max_connections: 4096,
            // The kube-apiserver multiplexes every HPA's requests over few connections.
            http2_max_streams: 250,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Everything [`run`] needs besides the snapshot.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address of the HTTPS API (`127.0.0.1:6443` locally, `0.0.0.0:6443` in-cluster).
    pub https_addr: SocketAddr,
    /// Address of the plain-HTTP port (health, `/metrics`, `/debug/signals`).
    pub plain_addr: SocketAddr,
    /// Where the serving certificate comes from.
    pub tls: TlsSource,
    /// Authentication and authorization.
    pub auth: AuthMode,
    /// Size and time limits.
    pub limits: Limits,
}

impl Settings {
    /// Settings with default [`Limits`].
    pub fn new(
        https_addr: SocketAddr,
        plain_addr: SocketAddr,
        tls: TlsSource,
        auth: AuthMode,
    ) -> Self {
        Self {
            https_addr,
            plain_addr,
            tls,
            auth,
            limits: Limits::default(),
        }
    }
}

/// What every handler can read.
#[derive(Clone)]
pub struct AppState {
    /// The current snapshot.
    pub shared: Shared,
    /// Authentication and authorization.
    pub auth: Arc<auth::Auth>,
    /// The API's self-metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Other metrics rendered on `/metrics` (the engine's).
    pub registry: Arc<Registry>,
    /// Size and time limits.
    pub limits: Limits,
    /// The clock served values' expiry is checked against.
    pub clock: Arc<dyn Clock>,
    /// The pods an HPA's selector picks, for Pods metrics.
    pub pods: Arc<dyn pods::PodLookup>,
    /// The adapters that answer the metrics prescale does not serve.
    pub upstreams: upstream::Upstreams,
    /// Besides the first snapshot, what `/readyz` waits for (the watched cluster
    /// state's first lists): the reason while not ready.
    pub not_ready: Option<Arc<dyn Fn() -> Option<String> + Send + Sync>>,
}

impl AppState {
    /// State for serving `shared` with `auth`; authorization decisions are cached
    /// on `clock`; `registry` is rendered on `/metrics` beside the API's metrics.
    pub fn new(
        shared: Shared,
        auth: AuthMode,
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            metrics: Arc::new(metrics::Metrics::new(shared.clone(), Arc::clone(&clock))),
            shared,
            auth: Arc::new(auth::Auth::new(auth, Arc::clone(&clock))),
            registry,
            limits: Limits::default(),
            clock,
            pods: Arc::new(pods::NoPods),
            upstreams: upstream::Upstreams::default(),
            not_ready: None,
        }
    }

    /// Makes `/readyz` wait for `not_ready` to say nothing (besides the first snapshot).
    pub fn with_readiness(
        mut self,
        not_ready: Option<Arc<dyn Fn() -> Option<String> + Send + Sync>>,
    ) -> Self {
        self.not_ready = not_ready;
        self
    }

    /// Forwards requests for metrics prescale does not serve to `upstreams`.
    pub fn with_upstreams(mut self, upstreams: upstream::Upstreams) -> Self {
        self.upstreams = upstreams;
        self
    }

    /// Lists pods for Pods metrics with `pods` (the default, [`pods::NoPods`],
    /// answers them with 503).
    pub fn with_pods(mut self, pods: Arc<dyn pods::PodLookup>) -> Self {
        self.pods = pods;
        self
    }

    /// Replaces the default limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// Path of the external metric values, for routing.
const EXTERNAL_VALUE_PATH: &str =
    "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}";
const VALUE_PREFIX: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/";

/// Whether `path` is a discovery document of the custom metrics group.
fn is_custom_discovery(path: &str) -> bool {
    match path.strip_prefix(custom::PREFIX) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix('/')
            .is_some_and(|v| custom::Version::parse(v).is_some()),
        None => false,
    }
}

/// Whether `path` is one of the OpenAPI documents (`/openapi/v2`, `/openapi/v3`
/// and below it).
fn is_openapi(path: &str) -> bool {
    path == "/openapi/v2" || path == "/openapi/v3" || path.starts_with("/openapi/v3/")
}

/// What a request path is, parsed once per request (the `route` middleware puts
/// it in the request's extensions): the metrics middleware reads its endpoint
/// kind, authorization its attributes, and the value handlers their parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/healthz`, `/livez`, `/readyz`.
    Health,
    /// `/metrics`.
    Metrics,
    /// The OpenAPI documents.
    OpenApi,
    /// `/apis`, a group or a group-version.
    Discovery,
    /// `/debug/...`.
    Debug,
    /// An external metric value; both parts percent-decoded.
    External {
        /// The namespace asked about.
        namespace: String,
        /// The metric.
        metric: String,
    },
    /// A custom metric value.
    Custom(custom::ValuePath),
    /// Anything else (404 or 405).
    Other,
}

impl Route {
    /// The route of `path`.
    pub fn parse(path: &str) -> Self {
        match path {
            "/healthz" | "/livez" | "/readyz" => Route::Health,
            "/metrics" => Route::Metrics,
            p if is_openapi(p) => Route::OpenApi,
            "/apis" | "/apis/external.metrics.k8s.io" | "/apis/external.metrics.k8s.io/v1beta1" => {
                Route::Discovery
            }
            p if is_custom_discovery(p) => Route::Discovery,
            p if p.starts_with(custom::PREFIX) => {
                custom::parse_path(p).map_or(Route::Other, Route::Custom)
            }
            p if p.starts_with("/debug/") => Route::Debug,
            p => match p
                .strip_prefix(VALUE_PREFIX)
                .and_then(|rest| rest.split_once('/'))
            {
                Some((namespace, metric))
                    if !namespace.is_empty() && !metric.is_empty() && !metric.contains('/') =>
                {
                    Route::External {
                        namespace: percent_decode(namespace),
                        metric: percent_decode(metric),
                    }
                }
                _ => Route::Other,
            },
        }
    }

    /// The endpoint kind, for the request metrics.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            Route::Health => Endpoint::Health,
            Route::Metrics => Endpoint::Metrics,
            Route::OpenApi => Endpoint::OpenApi,
            Route::Discovery => Endpoint::Discovery,
            Route::Debug => Endpoint::Debug,
            Route::External { .. } => Endpoint::External,
            Route::Custom(_) => Endpoint::Custom,
            Route::Other => Endpoint::Other,
        }
    }

    /// What authorization asks about a request for `path` on this route
    /// (`None`: always allowed). Discovery and OpenAPI are non-resource paths,
    /// asked about as k8s.io/apiserver asks (path and verb `get`); RBAC's
    /// `system:discovery` role grants them to every authenticated user.
    pub fn target(&self, path: &str) -> Option<auth::Target> {
        let non_resource = || auth::Target::NonResource {
            path: path.to_string(),
        };
        match self {
            Route::Health => None,
            Route::External { namespace, metric } => Some(auth::Target::Resource {
                group: external::GROUP.to_string(),
                version: external::VERSION.to_string(),
                resource: metric.clone(),
                subresource: None,
                name: None,
                namespace: namespace.clone(),
            }),
            Route::Custom(value) => Some(value.target()),
            Route::Metrics | Route::OpenApi | Route::Discovery | Route::Debug | Route::Other => {
                Some(non_resource())
            }
        }
    }
}

/// Parses the path once and keeps the [`Route`] with the request.
async fn route(mut request: Request, next: Next) -> Response {
    let route = Route::parse(request.uri().path());
    request.extensions_mut().insert(route);
    next.run(request).await
}

/// The request's route, as the `route` middleware parsed it (parsed here when a
/// router was built without it).
fn route_of(request: &Request) -> Route {
    request
        .extensions()
        .get::<Route>()
        .cloned()
        .unwrap_or_else(|| Route::parse(request.uri().path()))
}

/// Records the request's endpoint kind, code and latency.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let endpoint = route_of(&request).endpoint();
    let response = next.run(request).await;
    let endpoint = match response.extensions().get::<upstream::Forwarded>() {
        Some(_) => Endpoint::Upstream,
        None => endpoint,
    };
    state.metrics.observe(
        endpoint,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

/// Rejects requests that declare a body larger than the limit (only `GET` is
/// served, so bodies are never read; this stops clients from streaming one).
async fn limit_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.limits.max_body_bytes) {
        return status::Error::TooLarge(format!(
            "request bodies are limited to {} bytes",
            state.limits.max_body_bytes
        ))
        .into_response();
    }
    next.run(request).await
}

/// Authenticates and authorizes every request but the health probes.
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Percent-encoded path segments are authorized as decoded, as the handlers
    // read them.
    if let Some(target) = route_of(&request).target(request.uri().path()) {
        let peer = request.extensions().get::<auth::PeerCert>();
        match state.auth.check(request.headers(), peer, target).await {
            Ok(()) => {}
            Err(auth::Denial::Unauthenticated(why)) => {
                return status::Error::Unauthorized(format!("Unauthorized: {why}")).into_response()
            }
            Err(auth::Denial::Forbidden(why)) => {
                return status::Error::Forbidden(why).into_response()
            }
        }
    }
    next.run(request).await
}

pub(crate) use wire::percent_decode;

async fn not_found(request: Request) -> Response {
    status::Error::NotFound(format!(
        "the server could not find the requested resource {:?}",
        request.uri().path()
    ))
    .into_response()
}

async fn method_not_allowed(method: Method) -> Response {
    status::Error::MethodNotAllowed(format!(
        "method {method} is not supported: this API is read-only (GET)"
    ))
    .into_response()
}

/// The HTTPS API: discovery, OpenAPI, external and custom metric values and
/// health, behind authentication and authorization.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(plain::healthz))
        .route("/livez", get(plain::healthz))
        .route("/readyz", get(plain::readyz))
        .route("/openapi/v2", get(openapi::get_v2))
        .route("/openapi/v3", get(openapi::get_v3_root))
        .route("/openapi/v3/{*rest}", get(openapi::get_v3))
        .route("/apis", get(discovery::group_list))
        .route("/apis/external.metrics.k8s.io", get(discovery::group))
        .route(
            "/apis/external.metrics.k8s.io/v1beta1",
            get(discovery::resource_list),
        )
        .route(EXTERNAL_VALUE_PATH, get(external::get))
        .route(custom::PREFIX, get(custom::group))
        .route(
            "/apis/custom.metrics.k8s.io/{version}",
            get(custom::resource_list),
        )
        .route(
            "/apis/custom.metrics.k8s.io/{version}/{*rest}",
            get(custom::get),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), limit_body))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(route))
        .with_state(state)
}

/// The plain-HTTP port: health probes, `/metrics` and `/debug/signals`, without
/// authentication (bind it where only the cluster's network can reach it).
pub fn plain_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(plain::healthz))
        .route("/livez", get(plain::healthz))
        .route("/readyz", get(plain::readyz))
        .route("/metrics", get(plain::metrics))
        .route("/debug/signals", get(plain::signals))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), limit_body))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(route))
        .with_state(state)
}

/// Both servers, bound and ready to run.
pub struct Server {
    https: tokio::net::TcpListener,
    plain: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: AppState,
}

impl Server {
    /// Builds the TLS configuration and binds both addresses. With
    /// [`AuthMode::None`] the HTTPS address must be loopback, and a warning is
    /// logged.
    ///
    /// # Errors
    /// [`Error::NotLoopback`], [`Error::Tls`] or [`Error::Bind`].
    pub async fn bind(
        settings: Settings,
        shared: Shared,
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let client_ca = match &settings.auth {
            AuthMode::None => {
                if !settings.https_addr.ip().is_loopback() {
                    return Err(Error::NotLoopback(settings.https_addr));
                }
                tracing::warn!(
                    addr = %settings.https_addr,
                    "authentication and authorization are DISABLED (--auth=none): anyone who can reach this loopback address can read every metric"
                );
                None
            }
            AuthMode::Delegated { front_proxy, .. } => {
                front_proxy.as_ref().map(|f| f.client_ca_pem.clone())
            }
        };
        let tls = Arc::new(tls::server_config(&settings.tls, client_ca.as_deref())?);
        let bind = |addr: SocketAddr| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })
        };
        let https = bind(settings.https_addr).await?;
        let plain = bind(settings.plain_addr).await?;
        let state =
            AppState::new(shared, settings.auth, registry, clock).with_limits(settings.limits);
        Ok(Self {
            https,
            plain,
            tls,
            state,
        })
    }

    /// Lists pods for Pods metrics with `pods` (by default they answer 503).
    pub fn with_pod_lookup(mut self, pods: Arc<dyn pods::PodLookup>) -> Self {
        self.state = self.state.with_pods(pods);
        self
    }

    /// Forwards requests for metrics prescale does not serve to `upstreams`.
    pub fn with_upstreams(mut self, upstreams: upstream::Upstreams) -> Self {
        self.state = self.state.with_upstreams(upstreams);
        self
    }

    /// Makes `/readyz` wait for `not_ready` to say nothing (besides the first snapshot).
    pub fn with_readiness(
        mut self,
        not_ready: Option<Arc<dyn Fn() -> Option<String> + Send + Sync>>,
    ) -> Self {
        self.state = self.state.with_readiness(not_ready);
        self
    }

    /// The bound HTTPS address (useful after binding port 0).
    pub fn https_addr(&self) -> SocketAddr {
        self.https
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The bound plain-HTTP address.
    pub fn plain_addr(&self) -> SocketAddr {
        self.plain
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves both ports until `shutdown` completes, then lets open connections
    /// finish for up to [`Limits::drain_timeout`].
    ///
    /// # Errors
    /// None at present: accept errors are logged and retried so that a burst of
    /// connections (file descriptor exhaustion) cannot stop the server.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let limits = self.state.limits.clone();
        tracing::info!(https = %self.https_addr(), plain = %self.plain_addr(), "serving");
        let https = tokio::spawn(server::serve(
            self.https,
            Some(tokio_rustls::TlsAcceptor::from(self.tls)),
            router(self.state.clone()),
            limits.clone(),
            stop_rx.clone(),
        ));
        let plain = tokio::spawn(server::serve(
            self.plain,
            None,
            plain_router(self.state),
            limits,
            stop_rx,
        ));
        shutdown.await;
        tracing::info!("shutting down the API servers");
        let _ = stop_tx.send(true);
        for task in [https, plain] {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "API server task ended abnormally");
            }
        }
        Ok(())
    }
}

/// Binds and serves the HTTPS API and the plain-HTTP port until `shutdown`
/// completes. `registry` (the engine's metrics) is rendered on `/metrics` beside
/// the API's own; authorization decisions are cached on `clock`.
///
/// # Errors
/// As [`Server::bind`].
pub async fn run(
    settings: Settings,
    shared: Shared,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    Server::bind(settings, shared, registry, clock)
        .await?
        .run(shutdown)
        .await
}

#[cfg(test)]
mod tests;
