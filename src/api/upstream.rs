//! Delegation: requests for metrics prescale does not serve go to the adapter
//! that owned the group before (`server.upstream`: prometheus-adapter, KEDA's
//! metrics server), so a cluster keeps every HPA working when prescale takes
//! its APIService over.
//!
//! Decisions worth knowing:
//! - **Who owns a metric** is read from the current snapshot: an external metric
//!   prescale serves, or a custom `<resource>/<metric>` it lists. Before the first
//!   snapshot the configured signal names decide, so a metric of prescale's is
//!   never sent upstream while prescale warms up (it answers 503 instead).
//! - Requests are authenticated and authorized by prescale first, exactly like
//!   its own (the `authorize` middleware runs before any handler), then
//!   forwarded with prescale's own bearer token: the path and query as received,
//!   `Accept` passed on, nothing of the caller's identity (the adapter could not
//!   trust front-proxy headers from prescale anyway). The adapter authenticates
//!   the token with a TokenReview and authorizes prescale's ServiceAccount with
//!   its own SubjectAccessReview: it needs `get` and `list` on the group's
//!   resources (an external metric is asked as `list`).
//! - The answer comes back as the adapter wrote it (code, `Content-Type`, body).
//!   An adapter that cannot be reached, times out or writes an oversized body
//!   gives **503** for its metrics only; prescale's own are unaffected.
//! - **Discovery** merges both: the adapter's resource lists are read every
//!   `discovery_interval` in the background (never during a request), and the
//!   last good lists are kept while it is down, so discovery does not flap.
//!   prescale's own entry wins where both list a name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::custom::{self, Listed};
use super::status::Error;
use crate::snapshot::Shared;

/// Largest answer taken from an adapter. A MetricValueList of every pod in a big
/// namespace stays far below it; more is an adapter gone wrong.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How long a token read from a file is used before it is read again (projected
/// ServiceAccount tokens rotate; the kubelet refreshes them well before expiry).
const TOKEN_REREAD: Duration = Duration::from_secs(60);

/// The two groups an adapter can own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// `external.metrics.k8s.io`.
    External,
    /// `custom.metrics.k8s.io`.
    Custom,
}

impl Group {
    /// The group name.
    pub fn name(self) -> &'static str {
        match self {
            Group::External => super::external::GROUP,
            Group::Custom => custom::GROUP,
        }
    }

    /// The versions whose discovery is read from the adapter.
    fn versions(self) -> &'static [&'static str] {
        match self {
            Group::External => &["v1beta1"],
            Group::Custom => &["v1beta2", "v1beta1"],
        }
    }
}

/// Marks a response that an adapter wrote, for the request metrics (endpoint
/// `upstream`).
#[derive(Debug, Clone, Copy)]
pub struct Forwarded;

/// Where prescale's bearer token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// A token fixed at start (a kubeconfig's `token`).
    Static(String),
    /// A file read again every minute (the in-cluster ServiceAccount token, a
    /// kubeconfig's `tokenFile`, or `token_file`).
    File(PathBuf),
}

#[derive(Debug)]
struct Token {
    source: TokenSource,
    cached: Mutex<Option<(Instant, String)>>,
}

impl Token {
    async fn get(&self) -> Result<String, String> {
        let path = match &self.source {
            TokenSource::Static(token) => return Ok(token.clone()),
            TokenSource::File(path) => path,
        };
        if let Ok(cached) = self.cached.lock() {
            if let Some((at, token)) = cached.as_ref() {
                if at.elapsed() < TOKEN_REREAD {
                    return Ok(token.clone());
                }
            }
        }
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return Err(format!("the token file {} is empty", path.display()));
        }
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some((Instant::now(), token.clone()));
        }
        Ok(token)
    }
}

/// One entry of an adapter's `APIResourceList`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// `name`: an external metric, or a custom `<resource>/<metric>`.
    pub name: String,
    /// `namespaced`.
    pub namespaced: bool,
}

/// How to reach one adapter.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The group it owned.
    pub group: Group,
    /// Its base URL, `https://host:port`.
    pub base_url: String,
    /// PEM CA bundle of its serving certificate; `None` with `insecure`.
    pub ca_pem: Option<Vec<u8>>,
    /// Skip verifying its certificate.
    pub insecure: bool,
    /// prescale's bearer token.
    pub token: TokenSource,
    /// Longest wait for one request.
    pub timeout: Duration,
    /// How often its discovery lists are read.
    pub discovery_interval: Duration,
}

/// One adapter: the client, the token and the last discovery read.
#[derive(Debug)]
pub struct Upstream {
    group: Group,
    base_url: String,
    client: reqwest::Client,
    token: Token,
    discovery_interval: Duration,
    /// Per version, the adapter's resources as last read.
    lists: ArcSwap<BTreeMap<&'static str, Vec<Resource>>>,
    /// 1 reachable, 0 not, -1 not asked yet.
    up: AtomicI64,
}

impl Upstream {
    /// A client for the adapter of `settings`.
    ///
    /// # Errors
    /// A CA bundle that holds no certificate, or a TLS client that cannot be built.
    pub fn new(settings: Settings) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none());
        if settings.insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        if let Some(pem) = &settings.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("the CA bundle is not PEM: {e}"))?;
            if certs.is_empty() {
                return Err("the CA bundle holds no certificate".to_string());
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTPS client: {e}"))?;
        Ok(Self {
            group: settings.group,
            base_url: settings.base_url.trim_end_matches('/').to_string(),
            client,
            token: Token {
                source: settings.token,
                cached: Mutex::new(None),
            },
            discovery_interval: settings.discovery_interval,
            lists: ArcSwap::from_pointee(BTreeMap::new()),
            up: AtomicI64::new(-1),
        })
    }

    /// The group this adapter owned.
    pub fn group(&self) -> Group {
        self.group
    }

    /// Its base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Whether the last request or discovery read reached it (`None`: none yet).
    pub fn is_up(&self) -> Option<bool> {
        match self.up.load(Ordering::Relaxed) {
            -1 => None,
            v => Some(v == 1),
        }
    }

    fn mark(&self, up: bool, why: &str) {
        let before = self.up.swap(i64::from(up), Ordering::Relaxed);
        if before != i64::from(up) {
            if up {
                tracing::info!(group = self.group.name(), url = %self.base_url, "upstream reachable");
            } else {
                tracing::warn!(group = self.group.name(), url = %self.base_url, error = why, "upstream unreachable: its metrics answer 503 until it is back");
            }
        }
    }

    /// The adapter's resources of `version` as last read (empty before the first
    /// good read or when it does not serve that version).
    pub fn resources(&self, version: &str) -> Vec<Resource> {
        self.lists.load().get(version).cloned().unwrap_or_default()
    }

    /// Forwards a request that prescale has authorized and does not serve.
    pub async fn forward(&self, uri: &Uri, accept: Option<&HeaderValue>) -> Response {
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        let url = format!("{}{path}", self.base_url);
        let unavailable = |why: String| {
            let mut response = Error::ServiceUnavailable(format!(
                "{} upstream {} cannot answer: {why}; prescale's own metrics are unaffected",
                self.group.name(),
                self.base_url
            ))
            .into_response();
            response.extensions_mut().insert(Forwarded);
            response
        };
        let token = match self.token.get().await {
            Ok(t) => t,
            Err(why) => return unavailable(why),
        };
        let mut request = self.client.get(&url).bearer_auth(token);
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        let mut answer = match request.send().await {
            Ok(a) => a,
            Err(e) => {
                let why = describe_error(&e);
                self.mark(false, &why);
                return unavailable(why);
            }
        };
        let status = StatusCode::from_u16(answer.status().as_u16())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
        let mut body = Vec::new();
        loop {
            match answer.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY_BYTES {
                        return unavailable(format!(
                            "its answer is larger than {MAX_BODY_BYTES} bytes"
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    let why = describe_error(&e);
                    self.mark(false, &why);
                    return unavailable(why);
                }
            }
        }
        self.mark(true, "");
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let said: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            tracing::warn!(
                group = self.group.name(),
                url = %self.base_url,
                code = status.as_u16(),
                answer = %said,
                "upstream refused prescale's identity: it needs TokenReview access to the cluster and prescale's ServiceAccount needs get and list on the group's resources (deploy/examples/upstream-rbac.yaml)"
            );
        }
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        if let Some(ct) = content_type {
            response.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        response.extensions_mut().insert(Forwarded);
        response
    }

    /// Reads the adapter's resource lists once; keeps the previous ones on failure.
    pub async fn refresh(&self) {
        let token = match self.token.get().await {
            Ok(t) => t,
            Err(why) => {
                self.mark(false, &why);
                return;
            }
        };
        let mut lists = BTreeMap::new();
        for &version in self.group.versions() {
            let url = format!("{}/apis/{}/{version}", self.base_url, self.group.name());
            let answer = self
                .client
                .get(&url)
                .bearer_auth(&token)
                .header(header::ACCEPT, "application/json")
                .send()
                .await;
            let answer = match answer {
                Ok(a) => a,
                Err(e) => return self.mark(false, &describe_error(&e)),
            };
            let code = answer.status().as_u16();
            if code == 404 {
                // The adapter does not serve this version.
                lists.insert(version, Vec::new());
                continue;
            }
            let text = match answer.text().await {
                Ok(t) => t,
                Err(e) => return self.mark(false, &describe_error(&e)),
            };
            if code != 200 {
                let first: String = text.chars().take(200).collect();
                return self.mark(false, &format!("GET {url}: {code}: {first}"));
            }
            match parse_resource_list(&text) {
                Ok(resources) => {
                    lists.insert(version, resources);
                }
                Err(why) => return self.mark(false, &format!("GET {url}: {why}")),
            }
        }
        self.mark(true, "");
        self.lists.store(Arc::new(lists));
    }

    /// Reads the adapter's discovery now and then every `discovery_interval`
    /// until `stop` completes.
    pub async fn refresh_until(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            self.refresh().await;
            tokio::select! {
                () = tokio::time::sleep(self.discovery_interval) => {}
                () = &mut stop => return,
            }
        }
    }
}

/// The error and its causes in one line (reqwest's own says only "error sending
/// request").
fn describe_error(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The resources of an `APIResourceList`; entries without a name are skipped.
///
/// # Errors
/// A body that is not an `APIResourceList`.
pub fn parse_resource_list(text: &str) -> Result<Vec<Resource>, String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if doc.get("kind").and_then(|k| k.as_str()) != Some("APIResourceList") {
        return Err("not an APIResourceList".to_string());
    }
    let resources = doc
        .get("resources")
        .and_then(|r| r.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    Ok(resources
        .iter()
        .filter_map(|r| {
            let name = r.get("name")?.as_str()?;
            (!name.is_empty()).then(|| Resource {
                name: name.to_string(),
                namespaced: r
                    .get("namespaced")
                    .and_then(|n| n.as_bool())
                    .unwrap_or(true),
            })
        })
        .collect())
}

/// The names prescale's configuration serves, which decide ownership until the
/// first snapshot.
#[derive(Debug, Clone, Default)]
pub struct Configured {
    /// External metric names.
    pub external: BTreeSet<String>,
    /// Custom metric names (any resource).
    pub custom: BTreeSet<String>,
}

/// The adapters of both groups (either may be absent).
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    /// The adapter of `external.metrics.k8s.io`.
    pub external: Option<Arc<Upstream>>,
    /// The adapter of `custom.metrics.k8s.io`.
    pub custom: Option<Arc<Upstream>>,
    /// prescale's configured names.
    pub configured: Arc<Configured>,
}

impl Upstreams {
    /// Whether any group has an adapter.
    pub fn any(&self) -> bool {
        self.external.is_some() || self.custom.is_some()
    }

    /// The adapter of external metric `metric` when prescale does not serve it.
    pub fn external_for(&self, shared: &Shared, metric: &str) -> Option<&Upstream> {
        let upstream = self.external.as_deref()?;
        let owned = if shared.is_ready() {
            shared
                .load()
                .metrics
                .get(metric)
                .is_some_and(|e| e.custom.is_none())
        } else {
            self.configured.external.contains(metric)
        };
        (!owned).then_some(upstream)
    }

    /// The adapter of custom metric `metric` of `resource` when prescale does not
    /// serve that pair.
    pub fn custom_for(&self, shared: &Shared, resource: &str, metric: &str) -> Option<&Upstream> {
        let upstream = self.custom.as_deref()?;
        let owned = if shared.is_ready() {
            // Only this metric's entry: what `custom::listed` lists for it.
            let snapshot = shared.load();
            snapshot
                .metrics
                .get(metric)
                .and_then(|e| e.custom.as_deref())
                .is_some_and(|mapping| {
                    custom::discovery_names(mapping, metric)
                        .iter()
                        .any(|l| same_resource(&l.resource, resource))
                })
        } else {
            self.configured.custom.contains(metric)
        };
        (!owned).then_some(upstream)
    }

    /// The adapter's external metric names that prescale does not list itself.
    pub fn external_extra(&self, own: &BTreeSet<&str>) -> Vec<Resource> {
        let Some(upstream) = &self.external else {
            return Vec::new();
        };
        upstream
            .resources(super::external::VERSION)
            .into_iter()
            .filter(|r| !own.contains(r.name.as_str()) && !r.name.contains('/'))
            .collect()
    }

    /// The adapter's custom metrics of `version` that prescale does not list itself.
    pub fn custom_extra(&self, version: custom::Version, own: &[Listed]) -> Vec<Listed> {
        let Some(upstream) = &self.custom else {
            return Vec::new();
        };
        let own: BTreeSet<String> = own.iter().map(Listed::name).collect();
        upstream
            .resources(version.as_str())
            .into_iter()
            .filter(|r| !own.contains(&r.name))
            .filter_map(|r| {
                let (resource, metric) = r.name.split_once('/')?;
                (!resource.is_empty() && !metric.is_empty() && !metric.contains('/')).then(|| {
                    Listed {
                        resource: resource.to_string(),
                        metric: metric.to_string(),
                        namespaced: r.namespaced,
                    }
                })
            })
            .collect()
    }

    /// A collector of `prescale_upstream_up{group}` (1 reachable, 0 not; absent
    /// before the first attempt), for the `/metrics` registry.
    pub fn collector(&self) -> Box<dyn Collector> {
        Box::new(UpCollector {
            upstreams: [self.external.clone(), self.custom.clone()]
                .into_iter()
                .flatten()
                .collect(),
        })
    }
}

/// Whether a listed resource (`deployments.apps`) and a requested one
/// (`deployments.apps`, or `deployments` as some clients write it) are the same.
fn same_resource(listed: &str, requested: &str) -> bool {
    listed == requested || listed.split('.').next() == Some(requested)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: &'static str,
}

#[derive(Debug)]
struct UpCollector {
    upstreams: Vec<Arc<Upstream>>,
}

impl Collector for UpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = Family::<GroupLabels, Gauge>::default();
        for u in &self.upstreams {
            if let Some(up) = u.is_up() {
                family
                    .get_or_create(&GroupLabels {
                        group: u.group.name(),
                    })
                    .set(i64::from(up));
            }
        }
        let metric = encoder.encode_descriptor(
            "upstream_up",
            "Whether the adapter prescale forwards a group's other metrics to answered its last request (1) or not (0).",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_are_read_leniently_but_must_be_resource_lists() {
        let list = r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"custom.metrics.k8s.io/v1beta1","resources":[
            {"name":"pods/http_requests","singularName":"","namespaced":true,"kind":"MetricValueList","verbs":["get"]},
            {"name":"nodes/load","namespaced":false},
            {"singularName":"nameless"}]}"#;
        assert_eq!(
            parse_resource_list(list).unwrap(),
            vec![
                Resource {
                    name: "pods/http_requests".into(),
                    namespaced: true
                },
                Resource {
                    name: "nodes/load".into(),
                    namespaced: false
                },
            ]
        );
        assert!(parse_resource_list(r#"{"kind":"Status","code":403}"#).is_err());
        assert!(parse_resource_list("<html>").is_err());
        let empty = r#"{"kind":"APIResourceList","resources":null}"#;
        assert_eq!(parse_resource_list(empty).unwrap(), vec![]);
    }

    #[test]
    fn resources_match_qualified_or_by_their_plural() {
        assert!(same_resource("deployments.apps", "deployments.apps"));
        assert!(same_resource("deployments.apps", "deployments"));
        assert!(same_resource("pods", "pods"));
        assert!(!same_resource("pods", "nodes"));
        assert!(!same_resource("deployments.apps", "statefulsets.apps"));
    }
}
