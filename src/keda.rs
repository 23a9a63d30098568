//! prescale as a KEDA external scaler: KEDA's `externalscaler.ExternalScaler`
//! gRPC service (`proto/externalscaler.proto`), served over TLS on its own port,
//! optionally requiring client certificates.
//!
//! A ScaledObject trigger of type `external` passes its `metadata` as
//! `scalerMetadata`; prescale reads:
//! - `signal` (required): the prescale signal, an external metric;
//! - `series`: a label selector (`queue=jobs`, `k=v,k2 in (a,b)`) that must select
//!   exactly one series of it; absent, the signal must have one series;
//! - `target`: the per-replica target `GetMetricSpec` gives KEDA's HPA; absent, the
//!   signal's `hpa_target`, else the call is refused;
//! - `activationThreshold` (default 0): `IsActive` is true while the value is above it.
//!
//! Every other key (KEDA's own `scalerAddress`, `enableTLS`, ...) is ignored; a key
//! written `<key>FromEnv` (KEDA resolves those from the workload's environment)
//! stands for `<key>` when `<key>` itself is absent.
//!
//! `GetMetrics` answers with exactly the value `external.metrics.k8s.io` serves
//! for that series, read from the same snapshot by the same code
//! ([`crate::api::external::select`] and [`crate::api::external::serve`]): the
//! forecast, maximised over the lead time. Where the API refuses, the scaler
//! refuses with the matching gRPC code, which KEDA counts as a scaler failure (its
//! `fallback` applies): a failed or expired series, a failing source or no
//! snapshot yet are `Unavailable`, no matching series is `NotFound`, a namespace
//! outside the signal's allow-list (the ScaledObject's namespace is checked, as
//! the API checks the HPA's) is `PermissionDenied`. Bad metadata is
//! `InvalidArgument` naming the key.
//!
//! `IsActive` is that same value above `activationThreshold`: a forecast, so a
//! ScaledObject scales from zero when the load is predicted within the lead time,
//! before it is observed. `StreamIsActive` sends the current answer when it opens
//! and a new one whenever it changes (re-evaluated at every snapshot publication
//! and when the series' value expires); it ends with the error status when the
//! value can no longer be served, and ends cleanly when the client goes away or
//! the server shuts down.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::api::selector::{self, Selector};
use crate::api::status::Error as ApiError;
use crate::api::{external, wire};
use crate::clock::Clock;
use crate::config::SignalConfig;
use crate::quantity;
use crate::snapshot::Shared;

/// Code generated from `proto/externalscaler.proto` (package `externalscaler`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("externalscaler");
}

/// Metadata key: the signal to scale on.
pub const SIGNAL: &str = "signal";
/// Metadata key: the label selector picking one series of the signal.
pub const SERIES: &str = "series";
/// Metadata key: the per-replica target.
pub const TARGET: &str = "target";
/// Metadata key: the value above which the trigger is active.
pub const ACTIVATION_THRESHOLD: &str = "activationThreshold";
const KEYS: [&str; 4] = [SIGNAL, SERIES, TARGET, ACTIVATION_THRESHOLD];

/// Longest wait of a `StreamIsActive` between two evaluations when nothing is
/// published (a clock jump, a value that never expires).
const MAX_STREAM_WAIT: Duration = Duration::from_secs(60);

/// What can go wrong at the scaler's edge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A metadata key is missing or malformed (`InvalidArgument`).
    #[error("scalerMetadata.{key}: {message}")]
    Metadata {
        /// The key, as KEDA passes it.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The request itself is malformed (`InvalidArgument`).
    #[error("{0}")]
    Request(String),
    /// The value cannot be served, for the reason `external.metrics.k8s.io` gives.
    #[error("{0}")]
    Refused(#[from] ApiError),
    /// The server's TLS settings cannot be used.
    #[error("KEDA scaler TLS configuration")]
    Tls(#[source] tonic::transport::Error),
    /// The gRPC server failed.
    #[error("KEDA scaler gRPC server")]
    Serve(#[source] tonic::transport::Error),
}

impl Error {
    fn metadata(key: &str, message: impl Into<String>) -> Self {
        Self::Metadata {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

impl From<Error> for Status {
    /// The one place scaler errors become gRPC statuses; KEDA treats any of them as
    /// a failure of the scaler (its `fallback` applies).
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Metadata { .. } | Error::Request(_) => Status::invalid_argument(message),
            Error::Refused(refusal) => match refusal {
                ApiError::NotFound(_) => Status::not_found(message),
                ApiError::Forbidden(_) => Status::permission_denied(message),
                ApiError::ServiceUnavailable(_) => Status::unavailable(message),
                ApiError::BadRequest(_) => Status::invalid_argument(message),
                _ => Status::internal(message),
            },
            Error::Tls(_) | Error::Serve(_) => Status::internal(message),
        }
    }
}

/// What the scaler knows of a configured signal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignalInfo {
    /// The signal's `hpa_target`: the default `target`.
    pub hpa_target: Option<f64>,
    /// Whether it is an external metric (`custom` signals are not served here).
    pub external: bool,
}

/// The configured signals by name (swapped whole on a config reload).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    signals: BTreeMap<String, SignalInfo>,
}

impl Catalog {
    /// The catalog of `signals`.
    pub fn from_signals(signals: &[SignalConfig]) -> Self {
        Self {
            signals: signals
                .iter()
                .map(|s| {
                    (
                        s.name.to_string(),
                        SignalInfo {
                            hpa_target: s.hpa_target,
                            external: s.custom.is_none(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// A signal's entry.
    pub fn get(&self, name: &str) -> Option<SignalInfo> {
        self.signals.get(name).copied()
    }
}

/// The catalog the scaler reads and a config reload replaces.
pub type SharedCatalog = Arc<ArcSwap<Catalog>>;

/// A trigger's metadata, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// The signal.
    pub signal: String,
    /// The series selector.
    pub series: Selector,
    /// The selector as written.
    pub series_text: String,
    /// The target given in the metadata.
    pub target: Option<f64>,
    /// The activation threshold (0 when not given).
    pub activation_threshold: f64,
}

/// Reads a trigger's metadata.
///
/// # Errors
/// [`Error::Metadata`] naming the key: `signal` missing or empty, `series` not a
/// label selector, `target` not a positive number, `activationThreshold` not a
/// number, or a key that is one of these spelled otherwise (`Signal`,
/// `activationthreshold`), which would else be ignored in silence.
pub fn parse_trigger(metadata: &HashMap<String, String>) -> Result<Trigger, Error> {
    for key in metadata.keys() {
        let base = key.strip_suffix("FromEnv").unwrap_or(key);
        if let Some(known) = KEYS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(base) && **k != base)
        {
            return Err(Error::metadata(
                key,
                format!("unknown key; did you mean {known:?}? (keys are case-sensitive)"),
            ));
        }
    }
    let get = |key: &str| {
        metadata
            .get(key)
            .or_else(|| metadata.get(&format!("{key}FromEnv")))
            .map(|v| v.trim())
    };
    let signal = match get(SIGNAL) {
        Some(s) if !s.is_empty() => s.to_string(),
        Some(_) => return Err(Error::metadata(SIGNAL, "must not be empty")),
        None => {
            return Err(Error::metadata(
                SIGNAL,
                "required: the prescale signal (external metric) to scale on",
            ))
        }
    };
    let series_text = get(SERIES).unwrap_or_default().to_string();
    let series = selector::parse(&series_text).map_err(|e| {
        Error::metadata(
            SERIES,
            format!("{series_text:?} is not a label selector: {e}"),
        )
    })?;
    let number = |key: &str, text: &str| {
        quantity::parse_f64(text)
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| {
                Error::metadata(
                    key,
                    format!("{text:?} is not a number (or Kubernetes quantity such as \"500m\")"),
                )
            })
    };
    let target = match get(TARGET) {
        Some(text) => {
            let v = number(TARGET, text)?;
            if v <= 0.0 {
                return Err(Error::metadata(
                    TARGET,
                    format!("must be greater than 0, got {text:?}"),
                ));
            }
            Some(v)
        }
        None => None,
    };
    let activation_threshold = match get(ACTIVATION_THRESHOLD) {
        Some(text) => number(ACTIVATION_THRESHOLD, text)?,
        None => 0.0,
    };
    Ok(Trigger {
        signal,
        series,
        series_text,
        target,
        activation_threshold,
    })
}

/// The value a trigger's series is served with, and until when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Served {
    /// The value, as `external.metrics.k8s.io` serves it.
    pub value: f64,
    /// Unix milliseconds after which it must not be served.
    pub expires_ms: i64,
}

/// The scaler service.
#[derive(Clone)]
pub struct Scaler {
    shared: Shared,
    clock: Arc<dyn Clock>,
    catalog: SharedCatalog,
    stop: Option<watch::Receiver<bool>>,
}

impl std::fmt::Debug for Scaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scaler")
            .field("ready", &self.shared.is_ready())
            .field("signals", &self.catalog.load().signals.len())
            .finish()
    }
}

impl Scaler {
    /// A scaler answering from `shared` at `clock`'s time, with the signals of `catalog`.
    pub fn new(shared: Shared, clock: Arc<dyn Clock>, catalog: SharedCatalog) -> Self {
        Self {
            shared,
            clock,
            catalog,
            stop: None,
        }
    }

    /// Checks that the trigger's signal is one the scaler serves: a configured
    /// external signal, or an external metric of the current snapshot (the
    /// node-pool metrics).
    fn check_signal(&self, trigger: &Trigger) -> Result<Option<SignalInfo>, Error> {
        let name = trigger.signal.as_str();
        match self.catalog.load().get(name) {
            Some(info) if info.external => Ok(Some(info)),
            Some(_) => Err(Error::metadata(
                SIGNAL,
                format!("{name:?} is a custom metric (custom.metrics.k8s.io); the KEDA scaler serves external signals only"),
            )),
            None => {
                let snapshot = self.shared.load();
                match snapshot.metrics.get(name) {
                    Some(e) if e.custom.is_none() => Ok(None),
                    _ => Err(Error::metadata(
                        SIGNAL,
                        format!("{name:?} is not a signal prescale serves"),
                    )),
                }
            }
        }
    }

    /// The `GetMetricSpec` answer: the signal's name and the target.
    ///
    /// # Errors
    /// Bad metadata, an unknown signal, or no target (neither `target` nor the
    /// signal's `hpa_target`).
    pub fn metric_spec(&self, r: &pb::ScaledObjectRef) -> Result<pb::GetMetricSpecResponse, Error> {
        let trigger = parse_trigger(&r.scaler_metadata)?;
        let info = self.check_signal(&trigger)?;
        let target = trigger
            .target
            .or(info.and_then(|i| i.hpa_target))
            .ok_or_else(|| {
                Error::metadata(
                    TARGET,
                    format!(
                        "required: signal {:?} has no hpa_target to default to",
                        trigger.signal
                    ),
                )
            })?;
        Ok(pb::GetMetricSpecResponse {
            metric_specs: vec![pb::MetricSpec {
                metric_name: trigger.signal,
                // Read only by KEDA versions without targetSizeFloat: never 0.
                target_size: (target.round() as i64).max(1),
                target_size_float: target,
            }],
        })
    }

    /// The value of the trigger's one series for a ScaledObject in `namespace`.
    ///
    /// # Errors
    /// Bad metadata, a selector matching several series (`InvalidArgument`), or
    /// what `external.metrics.k8s.io` would refuse with.
    pub fn served(&self, trigger: &Trigger, namespace: &str) -> Result<Served, Error> {
        self.check_signal(trigger)?;
        if !self.shared.is_ready() {
            return Err(external::not_ready().into());
        }
        let snapshot = self.shared.load();
        let signal = trigger.signal.as_str();
        let selected = external::select(
            &snapshot,
            signal,
            namespace,
            &trigger.series,
            &trigger.series_text,
        )
        .map_err(ApiError::from)?;
        if selected.len() > 1 {
            let some: Vec<String> = selected
                .iter()
                .take(3)
                .map(|s| wire::describe(&s.labels))
                .collect();
            return Err(Error::metadata(
                SERIES,
                format!(
                    "{:?} selects {} series of signal {signal:?} ({}{}); it must select exactly one",
                    trigger.series_text,
                    selected.len(),
                    some.join(", "),
                    if selected.len() > 3 { ", ..." } else { "" }
                ),
            ));
        }
        let served =
            external::serve(signal, &selected, self.clock.now_ms()).map_err(ApiError::from)?;
        let one = served
            .first()
            .ok_or_else(|| Error::Refused(ApiError::Internal("no series selected".into())))?;
        Ok(Served {
            value: one.value,
            expires_ms: one.series.expires_ms,
        })
    }

    /// The `GetMetrics` answer.
    ///
    /// # Errors
    /// See [`Scaler::served`]; a request without `scaledObjectRef`.
    pub fn metrics(
        &self,
        request: &pb::GetMetricsRequest,
    ) -> Result<pb::GetMetricsResponse, Error> {
        let r = request
            .scaled_object_ref
            .as_ref()
            .ok_or_else(|| Error::Request("scaledObjectRef: required".into()))?;
        let trigger = parse_trigger(&r.scaler_metadata)?;
        let served = self.served(&trigger, &r.namespace)?;
        let metric_name = if request.metric_name.is_empty() {
            trigger.signal
        } else {
            request.metric_name.clone()
        };
        Ok(pb::GetMetricsResponse {
            metric_values: vec![pb::MetricValue {
                metric_name,
                // Read only when metricValueFloat is not positive; rounded up
                // (saturating) so that an old KEDA never under-scales.
                metric_value: served.value.ceil() as i64,
                metric_value_float: served.value,
            }],
        })
    }

    /// The `IsActive` answer: the served value above the activation threshold.
    ///
    /// # Errors
    /// See [`Scaler::served`].
    pub fn is_active(&self, r: &pb::ScaledObjectRef) -> Result<bool, Error> {
        let trigger = parse_trigger(&r.scaler_metadata)?;
        Ok(self.activity(&trigger, &r.namespace)?.0)
    }

    fn activity(&self, trigger: &Trigger, namespace: &str) -> Result<(bool, Served), Error> {
        let served = self.served(trigger, namespace)?;
        Ok((served.value > trigger.activation_threshold, served))
    }

    /// Sends the activity of `trigger` on `tx`: `first`, then every change, until
    /// the client goes away, the server stops, or the value can no longer be
    /// served (the error is the stream's last item).
    async fn watch_activity(
        self,
        trigger: Trigger,
        namespace: String,
        mut published: watch::Receiver<u64>,
        first: (bool, Served),
        tx: mpsc::Sender<Result<pb::IsActiveResponse, Status>>,
    ) {
        let (mut active, mut served) = first;
        if tx
            .send(Ok(pb::IsActiveResponse { result: active }))
            .await
            .is_err()
        {
            return;
        }
        let mut stop = self.stop.clone();
        loop {
            // Wake when the value expires too: a hung engine publishes nothing.
            let until_expiry = served
                .expires_ms
                .saturating_sub(self.clock.now_ms())
                .saturating_add(1);
            let wait = u64::try_from(until_expiry)
                .map(Duration::from_millis)
                .unwrap_or(Duration::ZERO)
                .min(MAX_STREAM_WAIT);
            tokio::select! {
                () = tx.closed() => return,
                () = stopped(&mut stop) => return,
                changed = published.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
            match self.activity(&trigger, &namespace) {
                Ok((now_active, now_served)) => {
                    served = now_served;
                    if now_active != active {
                        active = now_active;
                        tracing::debug!(signal = %trigger.signal, active, "StreamIsActive: changed");
                        if tx
                            .send(Ok(pb::IsActiveResponse { result: active }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
        }
    }
}

/// Completes when `stop` says so or its sender is gone; never without one.
async fn stopped(stop: &mut Option<watch::Receiver<bool>>) {
    match stop {
        Some(rx) => {
            let _ = rx.wait_for(|s| *s).await;
        }
        None => std::future::pending().await,
    }
}

#[tonic::async_trait]
impl pb::external_scaler_server::ExternalScaler for Scaler {
    async fn is_active(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::IsActiveResponse>, Status> {
        let result = Scaler::is_active(self, request.get_ref())?;
        Ok(Response::new(pb::IsActiveResponse { result }))
    }

    type StreamIsActiveStream = ReceiverStream<Result<pb::IsActiveResponse, Status>>;

    async fn stream_is_active(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let r = request.into_inner();
        let trigger = parse_trigger(&r.scaler_metadata)?;
        // Subscribed before the first answer: no publication falls in between.
        let published = self.shared.subscribe();
        let first = self.activity(&trigger, &r.namespace)?;
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(
            self.clone()
                .watch_activity(trigger, r.namespace, published, first, tx),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_metric_spec(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::GetMetricSpecResponse>, Status> {
        Ok(Response::new(self.metric_spec(request.get_ref())?))
    }

    async fn get_metrics(
        &self,
        request: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        Ok(Response::new(self.metrics(request.get_ref())?))
    }
}

/// The scaler's TLS: its identity and, to require client certificates, their CA.
#[derive(Debug, Clone)]
pub struct Tls {
    /// Certificate and key; the certificate names the host KEDA dials.
    pub identity: Identity,
    /// CA of the client certificates; `None` serves clients without one.
    pub client_ca: Option<Certificate>,
}

/// Serves `scaler` over TLS on `listener` until `shutdown` completes; open
/// `StreamIsActive` streams then end cleanly (KEDA reconnects, to another replica).
///
/// # Errors
/// Unusable TLS settings, or the server failing.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Tls,
    scaler: Scaler,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let scaler = Scaler {
        stop: Some(stop_rx),
        ..scaler
    };
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let mut config = ServerTlsConfig::new().identity(tls.identity);
    if let Some(ca) = tls.client_ca {
        config = config.client_ca_root(ca);
    }
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .tls_config(config)
        .map_err(Error::Tls)?
        // A client that vanished without closing its connection (a KEDA pod gone)
        // is noticed, and its streams end.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(pb::external_scaler_server::ExternalScalerServer::new(
            scaler,
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(Error::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn metadata_is_read_with_defaults() {
        let t = parse_trigger(&meta(&[
            ("signal", "queue_depth"),
            ("series", "queue=jobs"),
            ("scalerAddress", "prescale.prescale.svc:9443"),
        ]))
        .unwrap();
        assert_eq!(t.signal, "queue_depth");
        assert_eq!(t.series_text, "queue=jobs");
        assert_eq!(t.target, None);
        assert_eq!(t.activation_threshold, 0.0);
        let t = parse_trigger(&meta(&[
            ("signal", "q"),
            ("target", "500m"),
            ("activationThresholdFromEnv", "12"),
        ]))
        .unwrap();
        assert_eq!(t.target, Some(0.5));
        assert_eq!(t.activation_threshold, 12.0);
        assert!(t.series.is_empty());
    }

    #[test]
    fn bad_metadata_names_its_key() {
        for (pairs, key) in [
            (&[][..], "signal"),
            (&[("signal", " ")][..], "signal"),
            (&[("signal", "q"), ("series", "queue in (")][..], "series"),
            (&[("signal", "q"), ("target", "0")][..], "target"),
            (&[("signal", "q"), ("target", "lots")][..], "target"),
            (
                &[("signal", "q"), ("activationThreshold", "NaN")][..],
                "activationThreshold",
            ),
            (
                &[("signal", "q"), ("activationthreshold", "3")][..],
                "activationthreshold",
            ),
            (&[("Signal", "q")][..], "Signal"),
        ] {
            match parse_trigger(&meta(pairs)) {
                Err(Error::Metadata { key: k, message }) => {
                    assert_eq!(k, key, "{pairs:?}: {message}")
                }
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
        let status = Status::from(parse_trigger(&meta(&[])).unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status
            .message()
            .starts_with("scalerMetadata.signal: required"));
    }

    #[test]
    fn refusals_keep_the_api_meaning() {
        let code = |e: ApiError| Status::from(Error::Refused(e)).code();
        assert_eq!(code(ApiError::NotFound("x".into())), tonic::Code::NotFound);
        assert_eq!(
            code(ApiError::ServiceUnavailable("x".into())),
            tonic::Code::Unavailable
        );
        assert_eq!(
            code(ApiError::Forbidden("x".into())),
            tonic::Code::PermissionDenied
        );
    }
}
