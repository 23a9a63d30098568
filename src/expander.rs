//! The cluster-autoscaler's gRPC expander (`--expander=grpc`), served over TLS.
//!
//! The edge decodes the wire into plain structs — template nodes and pending pods
//! arrive as Kubernetes core/v1 protobuf, in fields 3/5 (cluster-autoscaler ≥ 1.34)
//! or 2/4 (≤ 1.34); 3/5 are preferred — and hands them to
//! [`crate::plan::choice::choose`] together with the node-pool plan of the current
//! snapshot ([`crate::snapshot::Snapshot::plan`]). The answer is the preferred
//! options, or every option when the plan cannot vouch for the choice: an empty
//! answer would make newer cluster-autoscalers skip the scale-up.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::clock::Clock;
use crate::plan::choice::{self, Abstention, Candidate, Choice, Freshness, TemplateNode};
use crate::plan::nodepool::Resources;
use crate::quantity;
use crate::snapshot::Shared;

/// Code generated from `proto/expander.proto` (package `grpcplugin`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("grpcplugin");
}

/// Minimal Kubernetes core/v1 messages: only the fields the expander reads, with
/// the field numbers of k8s.io/api/core/v1 and k8s.io/apimachinery
/// `generated.proto`. prost skips every other field.
pub mod k8s {
    use std::collections::BTreeMap;

    /// `k8s.io.apimachinery.pkg.api.resource.Quantity`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Quantity {
        /// The quantity's string form ("3800m", "15Gi").
        #[prost(string, tag = "1")]
        pub string: String,
    }

    /// `k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta` (name, namespace, labels).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ObjectMeta {
        /// `name` = 1.
        #[prost(string, tag = "1")]
        pub name: String,
        /// `namespace` = 3.
        #[prost(string, tag = "3")]
        pub namespace: String,
        /// `labels` = 11.
        #[prost(btree_map = "string, string", tag = "11")]
        pub labels: BTreeMap<String, String>,
    }

    /// `k8s.io.api.core.v1.Taint`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Taint {
        /// `key` = 1.
        #[prost(string, tag = "1")]
        pub key: String,
        /// `value` = 2.
        #[prost(string, tag = "2")]
        pub value: String,
        /// `effect` = 3.
        #[prost(string, tag = "3")]
        pub effect: String,
    }

    /// `k8s.io.api.core.v1.NodeSpec` (taints).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeSpec {
        /// `taints` = 5.
        #[prost(message, repeated, tag = "5")]
        pub taints: Vec<Taint>,
    }

    /// `k8s.io.api.core.v1.NodeStatus` (capacity, allocatable).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeStatus {
        /// `capacity` = 1.
        #[prost(btree_map = "string, message", tag = "1")]
        pub capacity: BTreeMap<String, Quantity>,
        /// `allocatable` = 2.
        #[prost(btree_map = "string, message", tag = "2")]
        pub allocatable: BTreeMap<String, Quantity>,
    }

    /// `k8s.io.api.core.v1.Node`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Node {
        /// `metadata` = 1.
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<ObjectMeta>,
        /// `spec` = 2.
        #[prost(message, optional, tag = "2")]
        pub spec: Option<NodeSpec>,
        /// `status` = 3.
        #[prost(message, optional, tag = "3")]
        pub status: Option<NodeStatus>,
    }

    /// `k8s.io.api.core.v1.ResourceRequirements`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceRequirements {
        /// `limits` = 1.
        #[prost(btree_map = "string, message", tag = "1")]
        pub limits: BTreeMap<String, Quantity>,
        /// `requests` = 2.
        #[prost(btree_map = "string, message", tag = "2")]
        pub requests: BTreeMap<String, Quantity>,
    }

    /// `k8s.io.api.core.v1.Container` (name, resources).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Container {
        /// `name` = 1.
        #[prost(string, tag = "1")]
        pub name: String,
        /// `resources` = 8.
        #[prost(message, optional, tag = "8")]
        pub resources: Option<ResourceRequirements>,
    }

    /// `k8s.io.api.core.v1.PodSpec` (containers, init containers, overhead).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSpec {
        /// `containers` = 2.
        #[prost(message, repeated, tag = "2")]
        pub containers: Vec<Container>,
        /// `initContainers` = 20.
        #[prost(message, repeated, tag = "20")]
        pub init_containers: Vec<Container>,
        /// `overhead` = 32.
        #[prost(btree_map = "string, message", tag = "32")]
        pub overhead: BTreeMap<String, Quantity>,
    }

    /// `k8s.io.api.core.v1.Pod`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Pod {
        /// `metadata` = 1.
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<ObjectMeta>,
        /// `spec` = 2.
        #[prost(message, optional, tag = "2")]
        pub spec: Option<PodSpec>,
    }
}

/// What can go wrong at the expander edge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A template node's bytes are not a Kubernetes core/v1 Node.
    #[error("{field}[{group:?}]: not a Kubernetes core/v1 Node")]
    Node {
        /// `nodeBytesMap` or `nodeMap`.
        field: &'static str,
        /// The node group id (the map key).
        group: String,
        /// The protobuf decoding error.
        #[source]
        source: prost::DecodeError,
    },
    /// A pending pod's bytes are not a Kubernetes core/v1 Pod.
    #[error("options[{option}].{field}[{index}]: not a Kubernetes core/v1 Pod")]
    Pod {
        /// Position of the option.
        option: usize,
        /// `podBytes` or `pod`.
        field: &'static str,
        /// Position of the pod in the option.
        index: usize,
        /// The protobuf decoding error.
        #[source]
        source: prost::DecodeError,
    },
    /// A resource quantity in a node or pod does not parse.
    #[error("{path}: not a usable resource quantity")]
    Quantity {
        /// Where the quantity is, e.g. `nodeBytesMap["ng-1"].status.allocatable["cpu"]`.
        path: String,
        /// Why it does not parse.
        #[source]
        source: quantity::Error,
    },
    /// An option's node count is negative.
    #[error("options[{option}].nodeCount: must not be negative, got {count}")]
    NodeCount {
        /// Position of the option.
        option: usize,
        /// The count received.
        count: i32,
    },
    /// The server's TLS identity cannot be used.
    #[error("expander TLS configuration")]
    Tls(#[source] tonic::transport::Error),
    /// The gRPC server failed.
    #[error("expander gRPC server")]
    Serve(#[source] tonic::transport::Error),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    /// The one place expander errors become gRPC statuses: bad input is
    /// `InvalidArgument` with the whole cause chain in the message.
    fn from(e: Error) -> Self {
        let mut message = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            message.push_str(": ");
            message.push_str(&c.to_string());
            cause = c.source();
        }
        match e {
            Error::Node { .. }
            | Error::Pod { .. }
            | Error::Quantity { .. }
            | Error::NodeCount { .. } => Status::invalid_argument(message),
            Error::Tls(_) | Error::Serve(_) => Status::internal(message),
        }
    }
}

/// Labels of the decision counter: every value comes from a fixed set or from the
/// configured pool names, never from the request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    /// `chose`, `abstained` or `error`.
    result: &'static str,
    /// Why: `shortfall` or `least_waste` when it chose; an [`Abstention`] name; the
    /// kind of bad input on an error.
    reason: &'static str,
    /// The chosen pool (a configured pool's name); empty otherwise.
    pool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs (a handful of options) to 4 s (the server's own timeout).
    Histogram::new([
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0,
        4.0,
    ])
}

/// The expander's self-metrics, registered under the `prescale` prefix:
/// `prescale_expander_decisions_total{result, reason, pool}` and
/// `prescale_expander_request_duration_seconds{result}`.
#[derive(Debug, Clone)]
pub struct Metrics {
    decisions: Family<DecisionLabels, Counter>,
    latency: Family<ResultLabel, Histogram, fn() -> Histogram>,
}

impl Metrics {
    /// Creates the metrics and registers them on `registry` under the `prescale`
    /// prefix (they are listed on `/metrics` before the first call).
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        // The fixed label combinations start at zero: the families are listed on
        // /metrics before the first call (empty families are not), and `rate()`
        // sees the first abstention or error as an increase.
        for reason in [
            Abstention::NoOptions,
            Abstention::NoPlan,
            Abstention::StalePlan,
            Abstention::UnknownNodeGroup,
            Abstention::IncompletePool,
        ] {
            m.touch("abstained", reason.as_str());
        }
        for reason in ERROR_REASONS {
            m.touch("error", reason);
        }
        for result in ["chose", "abstained", "error"] {
            drop(m.latency.get_or_create(&ResultLabel { result }));
        }
        let r = registry.sub_registry_with_prefix("prescale");
        r.register(
            "expander_decisions",
            "BestOptions calls answered, by result (chose, abstained, error), reason and chosen pool",
            m.decisions.clone(),
        );
        r.register(
            "expander_request_duration_seconds",
            "Time to decode and score one BestOptions call, by result",
            m.latency.clone(),
        );
        m
    }

    /// Metrics that are not registered anywhere (tests, tools, the default).
    pub fn unregistered() -> Self {
        Self {
            decisions: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }

    fn touch(&self, result: &'static str, reason: &'static str) {
        drop(self.decisions.get_or_create(&DecisionLabels {
            result,
            reason,
            pool: String::new(),
        }));
    }

    fn record(&self, outcome: &Outcome, seconds: f64) {
        self.decisions
            .get_or_create(&DecisionLabels {
                result: outcome.result,
                reason: outcome.reason,
                pool: outcome.pool.clone(),
            })
            .inc();
        self.latency
            .get_or_create(&ResultLabel {
                result: outcome.result,
            })
            .observe(seconds);
    }
}

/// How one call ended, as the metrics label it.
struct Outcome {
    result: &'static str,
    reason: &'static str,
    pool: String,
}

/// The `reason` of a call that failed on bad input (see [`Outcome::error`]).
const ERROR_REASONS: [&str; 4] = ["bad_node", "bad_pod", "bad_quantity", "bad_node_count"];

impl Outcome {
    fn error(e: &Error) -> Self {
        let reason = match e {
            Error::Node { .. } => ERROR_REASONS[0],
            Error::Pod { .. } => ERROR_REASONS[1],
            Error::Quantity { .. } => ERROR_REASONS[2],
            Error::NodeCount { .. } => ERROR_REASONS[3],
            // Not produced while answering a call; named for completeness.
            Error::Tls(_) | Error::Serve(_) => "internal",
        };
        Self {
            result: "error",
            reason,
            pool: String::new(),
        }
    }
}

/// The expander service.
#[derive(Clone)]
pub struct Expander {
    snapshot: Shared,
    clock: Arc<dyn Clock>,
    max_plan_age_ms: i64,
    metrics: Metrics,
}

impl std::fmt::Debug for Expander {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expander")
            .field("has_plan", &self.snapshot.load().plan.is_some())
            .field("max_plan_age_ms", &self.max_plan_age_ms)
            .finish()
    }
}

/// Plans older than this are not trusted by default: a few engine steps.
pub const DEFAULT_MAX_PLAN_AGE_MS: i64 = 5 * 60 * 1000;

impl Expander {
    /// An expander reading the plan of `snapshot`'s current snapshot, trusting plans
    /// up to `max_plan_age_ms` old by `clock`.
    pub fn new(snapshot: Shared, clock: Arc<dyn Clock>, max_plan_age_ms: i64) -> Self {
        Self {
            snapshot,
            clock,
            max_plan_age_ms,
            metrics: Metrics::unregistered(),
        }
    }

    /// Counts decisions and their latency in `metrics` (by default, in metrics
    /// registered nowhere).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Answers one `BestOptions` call (synchronous: decoding and scoring only),
    /// and counts it.
    ///
    /// # Errors
    /// Malformed node or pod bytes, unparsable quantities, negative node counts.
    pub fn answer(&self, request: pb::BestOptionsRequest) -> Result<pb::BestOptionsResponse> {
        // A duration, not a time of day: the monotonic clock is fine here.
        let started = std::time::Instant::now();
        let (answer, outcome) = match self.decide(request) {
            Ok((response, outcome)) => (Ok(response), outcome),
            Err(e) => {
                let outcome = Outcome::error(&e);
                (Err(e), outcome)
            }
        };
        self.metrics
            .record(&outcome, started.elapsed().as_secs_f64());
        answer
    }

    fn decide(
        &self,
        request: pb::BestOptionsRequest,
    ) -> Result<(pb::BestOptionsResponse, Outcome)> {
        let candidates = decode_candidates(&request)?;
        let snapshot = self.snapshot.load();
        let freshness = Freshness {
            now_ms: self.clock.now_ms(),
            max_age_ms: self.max_plan_age_ms,
        };
        // The cluster-autoscaler maps each returned option back to its own by
        // `nodeGroupId` and ignores the rest: the pods are not sent back, so the
        // answer stays small however many pods the request carried (the
        // cluster-autoscaler receives at most 4 MiB).
        let mut options: Vec<pb::Option> = request.options.into_iter().map(without_pods).collect();
        match choice::choose(&candidates, snapshot.plan.as_deref(), freshness) {
            Choice::Prefer {
                indices,
                reason,
                pool,
                shortfall_nodes,
            } => {
                let outcome = Outcome {
                    result: "chose",
                    reason: if shortfall_nodes > 0 {
                        "shortfall"
                    } else {
                        "least_waste"
                    },
                    pool,
                };
                tracing::info!(
                    chosen = ?indices.iter().filter_map(|&i| options.get(i).map(|o| o.node_group_id.as_str())).collect::<Vec<_>>(),
                    offered = options.len(),
                    reason = %reason,
                    "expander chose"
                );
                let chosen: Vec<pb::Option> = indices
                    .iter()
                    .filter_map(|&i| options.get_mut(i).map(std::mem::take))
                    .map(|mut o| {
                        o.debug = reason.clone();
                        o
                    })
                    .collect();
                if chosen.is_empty() {
                    // Cannot happen (indices come from the options), but an empty
                    // answer would cancel the scale-up: never send one.
                    return Ok((pb::BestOptionsResponse { options }, outcome));
                }
                Ok((pb::BestOptionsResponse { options: chosen }, outcome))
            }
            Choice::Abstain { kind, reason } => {
                tracing::info!(offered = options.len(), reason = %reason, "expander abstained: returning every option");
                let outcome = Outcome {
                    result: "abstained",
                    reason: kind.as_str(),
                    pool: String::new(),
                };
                Ok((pb::BestOptionsResponse { options }, outcome))
            }
        }
    }
}

/// `option` with its pending pods dropped (see [`Expander::answer`]).
fn without_pods(option: pb::Option) -> pb::Option {
    pb::Option {
        pod: Vec::new(),
        pod_bytes: Vec::new(),
        ..option
    }
}

#[tonic::async_trait]
impl pb::expander_server::Expander for Expander {
    async fn best_options(
        &self,
        request: Request<pb::BestOptionsRequest>,
    ) -> std::result::Result<Response<pb::BestOptionsResponse>, Status> {
        self.answer(request.into_inner())
            .map(Response::new)
            .map_err(Status::from)
    }
}

/// The largest `BestOptions` request accepted (64 MiB).
pub const MAX_REQUEST_BYTES: usize = 64 << 20;

/// Serves `expander` over TLS with `identity` (a certificate that carries the
/// service DNS name the cluster-autoscaler dials) on `listener` until `shutdown`
/// completes. No client certificate is asked for: the cluster-autoscaler sends none.
///
/// # Errors
/// An unusable identity, or the server failing.
pub async fn serve(
    listener: tokio::net::TcpListener,
    identity: Identity,
    expander: Expander,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    // Without TCP_NODELAY a response's last segment can wait for the peer's delayed
    // ACK (~40 ms): far more than the answer itself takes.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))
        .map_err(Error::Tls)?
        // The cluster-autoscaler gives each call 5 s; answer (or fail) well before.
        .timeout(Duration::from_secs(4))
        // Requests carry a template node per node group of the cluster: allow more
        // than tonic's 4 MiB default.
        .add_service(
            pb::expander_server::ExpanderServer::new(expander)
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(Error::Serve)
}

/// Decodes every option with its pods and its node group's template node.
///
/// # Errors
/// See [`Expander::answer`].
pub fn decode_candidates(request: &pb::BestOptionsRequest) -> Result<Vec<Candidate>> {
    // Only the templates of offered node groups are decoded (the maps cover every
    // node group of the cluster); each once.
    let mut templates: HashMap<&str, Option<TemplateNode>> = HashMap::new();
    // The same pending pods are usually offered by many options: decode each once.
    let mut pod_cache: HashMap<&[u8], Resources> = HashMap::new();
    let mut out = Vec::with_capacity(request.options.len());
    for (i, o) in request.options.iter().enumerate() {
        let node_count = u32::try_from(o.node_count).map_err(|_| Error::NodeCount {
            option: i,
            count: o.node_count,
        })?;
        let template = match templates.get(o.node_group_id.as_str()) {
            Some(t) => t.clone(),
            None => {
                let t = template_for(request, &o.node_group_id)?;
                templates.insert(o.node_group_id.as_str(), t.clone());
                t
            }
        };
        let (field, pods) = if o.pod_bytes.is_empty() {
            ("pod", &o.pod)
        } else {
            ("podBytes", &o.pod_bytes)
        };
        let mut decoded = Vec::with_capacity(pods.len());
        for (j, bytes) in pods.iter().enumerate() {
            let r = match pod_cache.get(bytes.as_slice()) {
                Some(r) => *r,
                None => {
                    let r = decode_pod(bytes, i, field, j)?;
                    pod_cache.insert(bytes.as_slice(), r);
                    r
                }
            };
            decoded.push(r);
        }
        out.push(Candidate {
            node_group_id: o.node_group_id.clone(),
            node_count,
            pods: decoded,
            template,
        });
    }
    Ok(out)
}

fn template_for(request: &pb::BestOptionsRequest, group: &str) -> Result<Option<TemplateNode>> {
    let (field, bytes) = match request.node_bytes_map.get(group) {
        Some(b) => ("nodeBytesMap", b),
        None => match request.node_map.get(group) {
            Some(b) => ("nodeMap", b),
            None => return Ok(None),
        },
    };
    decode_node(bytes, field, group).map(Some)
}

/// Decodes a serialized core/v1 Node into a template node.
///
/// # Errors
/// Bytes that are not a Node, or quantities that do not parse.
pub fn decode_node(bytes: &[u8], field: &'static str, group: &str) -> Result<TemplateNode> {
    let node = <k8s::Node as prost::Message>::decode(bytes).map_err(|source| Error::Node {
        field,
        group: group.to_string(),
        source,
    })?;
    let status = node.status.unwrap_or_default();
    // Allocatable is what the scheduler uses; capacity only where it is missing.
    let pick = |key: &'static str| -> Option<(&'static str, &'static str, &str)> {
        status
            .allocatable
            .get(key)
            .map(|q| ("allocatable", key, q.string.as_str()))
            .or_else(|| {
                status
                    .capacity
                    .get(key)
                    .map(|q| ("capacity", key, q.string.as_str()))
            })
    };
    let bad = |(map, key, _): (&str, &str, &str), source| Error::Quantity {
        path: format!("{field}[{group:?}].status.{map}[{key:?}]"),
        source,
    };
    let cpu = match pick("cpu") {
        Some(at) => quantity::parse_millicores(at.2).map_err(|e| bad(at, e))?,
        None => 0,
    };
    let memory = match pick("memory") {
        Some(at) => quantity::parse_units(at.2).map_err(|e| bad(at, e))?,
        None => 0,
    };
    let max_pods = match pick("pods") {
        Some(at) => Some(
            u32::try_from(quantity::parse_units(at.2).map_err(|e| bad(at, e))?).unwrap_or(u32::MAX),
        ),
        None => None,
    };
    let taints = node
        .spec
        .map(|s| {
            s.taints
                .into_iter()
                .map(|t| format!("{}={}:{}", t.key, t.value, t.effect))
                .collect()
        })
        .unwrap_or_default();
    Ok(TemplateNode {
        labels: node.metadata.map(|m| m.labels).unwrap_or_default(),
        allocatable: Resources::new(cpu, memory),
        max_pods,
        taints,
    })
}

/// Decodes a serialized core/v1 Pod into the requests the scheduler fits: the sum
/// over containers, at least the largest init container, plus the pod overhead. A
/// container without a request for a resource falls back to its limit (the API
/// server's defaulting).
///
/// # Errors
/// Bytes that are not a Pod, or quantities that do not parse.
pub fn decode_pod(
    bytes: &[u8],
    option: usize,
    field: &'static str,
    index: usize,
) -> Result<Resources> {
    let pod = <k8s::Pod as prost::Message>::decode(bytes).map_err(|source| Error::Pod {
        option,
        field,
        index,
        source,
    })?;
    // Paths are only formatted when a quantity is bad: this runs for every pod.
    let base = || format!("options[{option}].{field}[{index}].spec");
    let spec = pod.spec.unwrap_or_default();
    let mut sum = Resources::default();
    for (c, container) in spec.containers.iter().enumerate() {
        let at = || format!("{}.containers[{c}].resources", base());
        sum = sum.saturating_add(container_requests(container, &at)?);
    }
    for (c, container) in spec.init_containers.iter().enumerate() {
        let at = || format!("{}.initContainers[{c}].resources", base());
        let r = container_requests(container, &at)?;
        sum.cpu_milli = sum.cpu_milli.max(r.cpu_milli);
        sum.memory_bytes = sum.memory_bytes.max(r.memory_bytes);
    }
    let at = || base();
    let overhead = resources(("overhead", &spec.overhead), None, &at)?;
    Ok(sum.saturating_add(overhead))
}

fn container_requests(c: &k8s::Container, at: &dyn Fn() -> String) -> Result<Resources> {
    match &c.resources {
        Some(r) => resources(("requests", &r.requests), Some(("limits", &r.limits)), at),
        None => Ok(Resources::default()),
    }
}

type NamedMap<'a> = (&'static str, &'a BTreeMap<String, k8s::Quantity>);

/// cpu and memory from the `primary` map, falling back to `fallback` per resource;
/// a bad quantity is reported at `at()` + the map's name and key.
fn resources(
    primary: NamedMap<'_>,
    fallback: Option<NamedMap<'_>>,
    at: &dyn Fn() -> String,
) -> Result<Resources> {
    let get = |key: &str| -> Option<(&'static str, &str)> {
        primary
            .1
            .get(key)
            .map(|q| (primary.0, q.string.as_str()))
            .or_else(|| {
                fallback.and_then(|(name, map)| map.get(key).map(|q| (name, q.string.as_str())))
            })
    };
    let bad = |map: &str, key: &str, source| Error::Quantity {
        path: format!("{}.{map}[{key:?}]", at()),
        source,
    };
    let cpu = match get("cpu") {
        Some((map, s)) => quantity::parse_millicores(s).map_err(|e| bad(map, "cpu", e))?,
        None => 0,
    };
    let memory = match get("memory") {
        Some((map, s)) => quantity::parse_units(s).map_err(|e| bad(map, "memory", e))?,
        None => 0,
    };
    Ok(Resources::new(cpu, memory))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SimClock;
    use crate::plan::nodepool::{
        plan, PoolShape, PoolSpec, PoolState, WorkloadShape, WorkloadSpec,
    };
    use crate::snapshot::Snapshot;
    use prost::Message;

    const GI: u64 = 1 << 30;

    fn q(s: &str) -> k8s::Quantity {
        k8s::Quantity { string: s.into() }
    }

    fn node_bytes(labels: &[(&str, &str)], cpu: &str, mem: &str) -> Vec<u8> {
        k8s::Node {
            metadata: Some(k8s::ObjectMeta {
                name: "template".into(),
                namespace: String::new(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }),
            spec: Some(k8s::NodeSpec {
                taints: vec![k8s::Taint {
                    key: "dedicated".into(),
                    value: "db".into(),
                    effect: "NoSchedule".into(),
                }],
            }),
            status: Some(k8s::NodeStatus {
                capacity: BTreeMap::from([("cpu".into(), q("8")), ("memory".into(), q("32Gi"))]),
                allocatable: BTreeMap::from([
                    ("cpu".into(), q(cpu)),
                    ("memory".into(), q(mem)),
                    ("pods".into(), q("58")),
                ]),
            }),
        }
        .encode_to_vec()
    }

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> k8s::Container {
        let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), q(v))).collect();
        k8s::Container {
            name: "c".into(),
            resources: Some(k8s::ResourceRequirements {
                requests: map(requests),
                limits: map(limits),
            }),
        }
    }

    fn pod_bytes(cpu: &str, mem: &str) -> Vec<u8> {
        k8s::Pod {
            metadata: Some(k8s::ObjectMeta {
                name: "web-1".into(),
                namespace: "shop".into(),
                labels: BTreeMap::new(),
            }),
            spec: Some(k8s::PodSpec {
                containers: vec![container(&[("cpu", cpu), ("memory", mem)], &[])],
                init_containers: vec![],
                overhead: BTreeMap::new(),
            }),
        }
        .encode_to_vec()
    }

    #[test]
    fn decodes_template_nodes() {
        let t = decode_node(
            &node_bytes(&[("pool", "app")], "7910m", "29Gi"),
            "nodeBytesMap",
            "ng",
        )
        .unwrap();
        assert_eq!(t.allocatable, Resources::new(7910, 29 * GI));
        assert_eq!(t.max_pods, Some(58));
        assert_eq!(t.labels.get("pool").map(String::as_str), Some("app"));
        assert_eq!(t.taints, vec!["dedicated=db:NoSchedule".to_string()]);
        // Capacity stands in where allocatable is missing.
        let only_capacity = k8s::Node {
            metadata: None,
            spec: None,
            status: Some(k8s::NodeStatus {
                capacity: BTreeMap::from([("cpu".into(), q("2")), ("memory".into(), q("4Gi"))]),
                allocatable: BTreeMap::new(),
            }),
        };
        let t = decode_node(&only_capacity.encode_to_vec(), "nodeMap", "ng").unwrap();
        assert_eq!(t.allocatable, Resources::new(2000, 4 * GI));
        assert_eq!(t.max_pods, None);
    }

    #[test]
    fn pod_requests_follow_the_scheduler() {
        let pod = k8s::Pod {
            metadata: None,
            spec: Some(k8s::PodSpec {
                containers: vec![
                    container(&[("cpu", "500m"), ("memory", "1Gi")], &[]),
                    // No request: the limit is the request.
                    container(&[], &[("cpu", "250m"), ("memory", "512Mi")]),
                ],
                // The largest init container dominates memory only.
                init_containers: vec![container(&[("cpu", "100m"), ("memory", "3Gi")], &[])],
                overhead: BTreeMap::from([("cpu".into(), q("50m"))]),
            }),
        };
        let r = decode_pod(&pod.encode_to_vec(), 0, "podBytes", 0).unwrap();
        assert_eq!(r, Resources::new(750 + 50, 3 * GI));
    }

    #[test]
    fn malformed_input_names_where() {
        let e = decode_node(&[0xff, 0xff, 0xff], "nodeBytesMap", "ng-1").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("nodeBytesMap[\"ng-1\"]: not a Kubernetes core/v1 Node"),
            "{e}"
        );
        let s = Status::from(e);
        assert_eq!(s.code(), tonic::Code::InvalidArgument);

        let e = decode_node(&node_bytes(&[], "lots", "1Gi"), "nodeMap", "ng-2").unwrap_err();
        assert_eq!(
            e.to_string(),
            "nodeMap[\"ng-2\"].status.allocatable[\"cpu\"]: not a usable resource quantity"
        );
        let s = Status::from(e);
        assert!(s.message().contains("\"lots\""), "{}", s.message());

        let e = decode_pod(&pod_bytes("1", "-1Gi"), 3, "pod", 2).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("options[3].pod[2].spec.containers[0].resources.requests[\"memory\"]"),
            "{e}"
        );
    }

    fn seed() -> (Expander, Shared) {
        let pools = [
            PoolSpec::try_new(PoolShape {
                name: "app".into(),
                node_group_ids: vec!["app-asg".into()],
                node_labels: BTreeMap::new(),
                allocatable: Resources::new(8000, 32 * GI),
                max_pods_per_node: 58,
                daemonset_overhead: Resources::default(),
                daemonset_pods: 0,
                provisioning_delay_s: 150,
                min_nodes: 3,
                max_nodes: 20,
            })
            .unwrap(),
            PoolSpec::try_new(PoolShape {
                name: "db".into(),
                node_group_ids: vec![],
                node_labels: BTreeMap::from([("pool".into(), "db".into())]),
                allocatable: Resources::new(8000, 64 * GI),
                max_pods_per_node: 58,
                daemonset_overhead: Resources::default(),
                daemonset_pods: 0,
                provisioning_delay_s: 150,
                min_nodes: 2,
                max_nodes: 8,
            })
            .unwrap(),
        ];
        let workloads = [WorkloadSpec::try_new(WorkloadShape {
            name: "web".into(),
            pool: "app".into(),
            target_per_replica: 1.0,
            pod_requests: Resources::new(1500, 2 * GI),
            min_replicas: 2,
            max_replicas: 100,
        })
        .unwrap()
        .with_forecast(Some(20.0))
        .with_current_replicas(10)];
        let state = BTreeMap::from([("app".to_string(), PoolState { current_nodes: 3 })]);
        let p = plan(&pools, &workloads, &state, 0);
        let shared = Shared::new();
        shared.publish(Snapshot {
            plan: Some(Arc::new(p)),
            ..Snapshot::default()
        });
        let clock = Arc::new(SimClock::new(1000));
        (
            Expander::new(shared.clone(), clock, DEFAULT_MAX_PLAN_AGE_MS),
            shared,
        )
    }

    fn option(id: &str, count: i32, pods: Vec<Vec<u8>>) -> pb::Option {
        pb::Option {
            node_group_id: id.into(),
            node_count: count,
            debug: String::new(),
            pod: vec![],
            pod_bytes: pods,
        }
    }

    #[test]
    fn answers_with_the_short_pool_and_says_why() {
        let (e, _) = seed();
        let req = pb::BestOptionsRequest {
            options: vec![
                option("db-asg", 1, vec![pod_bytes("1", "1Gi")]),
                option("app-asg", 1, vec![pod_bytes("1", "1Gi")]),
            ],
            node_map: HashMap::new(),
            node_bytes_map: HashMap::from([
                (
                    "db-asg".to_string(),
                    node_bytes(&[("pool", "db")], "8", "64Gi"),
                ),
                ("app-asg".to_string(), node_bytes(&[], "8", "32Gi")),
            ]),
        };
        let resp = e.answer(req).unwrap();
        assert_eq!(resp.options.len(), 1);
        assert_eq!(resp.options[0].node_group_id, "app-asg");
        // 20 pods of 1500m: 5 per node, 4 nodes; have 3.
        assert!(
            resp.options[0]
                .debug
                .contains("pool app is short 1 node(s)"),
            "{}",
            resp.options[0].debug
        );
        assert!(
            resp.options[0].pod_bytes.is_empty() && resp.options[0].pod.is_empty(),
            "the answer carries no pods"
        );
    }

    #[test]
    fn decisions_and_latency_are_counted_with_bounded_labels() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let render = |r: &Registry| {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, r).unwrap();
            text
        };
        // Listed before the first call, so dashboards and alerts find the names.
        let empty = render(&registry);
        assert!(
            empty.contains("# TYPE prescale_expander_decisions counter"),
            "{empty}"
        );
        assert!(
            empty.contains("# TYPE prescale_expander_request_duration_seconds histogram"),
            "{empty}"
        );

        let (e, _) = seed();
        let e = e.with_metrics(metrics);
        let chose = pb::BestOptionsRequest {
            options: vec![
                option("db-asg", 1, vec![pod_bytes("1", "1Gi")]),
                option("app-asg", 1, vec![pod_bytes("1", "1Gi")]),
            ],
            node_map: HashMap::new(),
            node_bytes_map: HashMap::from([(
                "db-asg".to_string(),
                node_bytes(&[("pool", "db")], "8", "64Gi"),
            )]),
        };
        e.answer(chose.clone()).unwrap();
        e.answer(chose).unwrap();
        let unknown = pb::BestOptionsRequest {
            options: vec![option("a-node-group-nobody-configured", 1, vec![])],
            ..Default::default()
        };
        e.answer(unknown).unwrap();
        let bad = pb::BestOptionsRequest {
            options: vec![option("app-asg", -1, vec![])],
            ..Default::default()
        };
        e.answer(bad).unwrap_err();

        let text = render(&registry);
        for want in [
            "prescale_expander_decisions_total{result=\"chose\",reason=\"shortfall\",pool=\"app\"} 2",
            "prescale_expander_decisions_total{result=\"abstained\",reason=\"unknown_node_group\",pool=\"\"} 1",
            "prescale_expander_decisions_total{result=\"error\",reason=\"bad_node_count\",pool=\"\"} 1",
            "prescale_expander_request_duration_seconds_count{result=\"chose\"} 2",
            "prescale_expander_request_duration_seconds_count{result=\"error\"} 1",
        ] {
            assert!(text.contains(want), "missing {want}\n{text}");
        }
        // The node group id from the request is never a label value.
        assert!(!text.contains("nobody-configured"), "{text}");
    }

    #[test]
    fn abstains_with_every_option() {
        let (e, shared) = seed();
        let req = pb::BestOptionsRequest {
            options: vec![option("app-asg", 1, vec![]), option("gpu-asg", 2, vec![])],
            ..Default::default()
        };
        let resp = e.answer(req.clone()).unwrap();
        assert_eq!(
            resp.options, req.options,
            "unknown node group: all options, untouched"
        );
        shared.publish(Snapshot::default());
        let resp = e
            .answer(pb::BestOptionsRequest {
                options: vec![option("app-asg", 1, vec![])],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(resp.options.len(), 1);
        assert!(resp.options[0].debug.is_empty());
    }

    #[test]
    fn prefers_bytes_fields_and_falls_back_to_messages() {
        // Field 2 says db labels, field 3 says app: field 3 wins.
        let req = pb::BestOptionsRequest {
            options: vec![pb::Option {
                node_group_id: "ng".into(),
                node_count: 1,
                debug: String::new(),
                pod: vec![pod_bytes("4", "1Gi")],
                pod_bytes: vec![pod_bytes("2", "1Gi")],
            }],
            node_map: HashMap::from([(
                "ng".to_string(),
                node_bytes(&[("pool", "db")], "8", "64Gi"),
            )]),
            node_bytes_map: HashMap::from([(
                "ng".to_string(),
                node_bytes(&[("pool", "app")], "8", "32Gi"),
            )]),
        };
        let c = decode_candidates(&req).unwrap();
        assert_eq!(c[0].pods, vec![Resources::new(2000, GI)]);
        assert_eq!(c[0].template.as_ref().unwrap().labels["pool"], "app");
        // Without 3 and 5, 2 and 4 are used.
        let mut old = req.clone();
        old.node_bytes_map.clear();
        old.options[0].pod_bytes.clear();
        let c = decode_candidates(&old).unwrap();
        assert_eq!(c[0].pods, vec![Resources::new(4000, GI)]);
        assert_eq!(c[0].template.as_ref().unwrap().labels["pool"], "db");
        // Negative node counts are refused.
        let mut neg = req;
        neg.options[0].node_count = -1;
        assert!(matches!(
            decode_candidates(&neg),
            Err(Error::NodeCount {
                option: 0,
                count: -1
            })
        ));
    }
}
