//! The node-pool sections of the configuration: `nodepools`, `workloads`,
//! `capacity_buffers` and `expander`. All optional: a file without them configures
//! no node-pool recommendations and no expander.
//!
//! Resource amounts are Kubernetes quantity strings (`"1500m"`, `"2"`, `"14500Mi"`),
//! parsed with [`crate::quantity`] while deserializing, so a bad one is reported at
//! its field path (`nodepools[0].allocatable.cpu: ...`). Problems that involve
//! several fields (a workload naming an unknown pool or signal, min above max) are
//! found by [`build`], which [`super::Config::validate`] calls: it reports every
//! problem and, when there are none, returns the sections as built values
//! ([`Planning`]), which the engine plans from without checking them again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Duration, MetricName, SignalConfig};
use crate::names::is_dns_label;
use crate::plan::nodepool::{
    self, Balloon, PoolShape, PoolSpec, Resources, WorkloadShape, WorkloadSpec,
};

/// Cpu in millicores, written as a Kubernetes quantity (`"1500m"`, `"2"`, `0.5`):
/// the same parse and form as any other milli-unit quantity.
pub type Millicores = MilliUnits;

/// Memory (or any whole count) in units, written as a Kubernetes quantity
/// (`"14500Mi"`, `"2Gi"`, `1073741824`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct Units(u64);

impl Units {
    /// Parses a quantity of whole units (bytes).
    ///
    /// # Errors
    /// Not a quantity, or negative.
    pub fn try_new(text: &str) -> Result<Self, String> {
        crate::quantity::parse_units(text)
            .map(Self)
            .map_err(|e| e.to_string())
    }

    /// The amount in units.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<Units> for String {
    fn from(u: Units) -> String {
        u.0.to_string()
    }
}

/// A quantity in milli-units: cpu ([`Millicores`]) or one with no resource meaning
/// (the balloon HPA's target).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct MilliUnits(u64);

impl MilliUnits {
    /// Parses a quantity into milli-units.
    ///
    /// # Errors
    /// Not a quantity, or negative.
    pub fn try_new(text: &str) -> Result<Self, String> {
        crate::quantity::parse_millicores(text)
            .map(Self)
            .map_err(|e| e.to_string())
    }

    /// The amount in milli-units.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<MilliUnits> for String {
    fn from(m: MilliUnits) -> String {
        format!("{}m", m.0)
    }
}

/// Visits a quantity written as a string or a bare YAML number.
struct QuantityVisitor<T>(fn(&str) -> Result<T, String>);

impl<T> serde::de::Visitor<'_> for QuantityVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Kubernetes quantity such as \"1500m\", \"2\" or \"4Gi\"")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        (self.0)(&v.to_string()).map_err(E::custom)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
        (self.0)(&v.to_string()).map_err(E::custom)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<T, E> {
        (self.0)(&v.to_string()).map_err(E::custom)
    }
}

macro_rules! quantity_deserialize {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(QuantityVisitor(Self::try_new))
            }
        }
    };
}
quantity_deserialize!(Units);
quantity_deserialize!(MilliUnits);

/// Cpu and memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesConfig {
    /// Cpu (`"1500m"`, `"2"`).
    #[serde(default)]
    pub cpu: Millicores,
    /// Memory (`"2Gi"`, `"14500Mi"`).
    #[serde(default)]
    pub memory: Units,
}

impl ResourcesConfig {
    /// As the planner's [`Resources`].
    pub const fn resources(&self) -> Resources {
        Resources::new(self.cpu.get(), self.memory.get())
    }
}

/// What the DaemonSets take on every node of a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSetOverhead {
    /// Their total cpu requests per node.
    #[serde(default)]
    pub cpu: Millicores,
    /// Their total memory requests per node.
    #[serde(default)]
    pub memory: Units,
    /// How many DaemonSet pods run on every node (taken off the pods-per-node limit).
    #[serde(default)]
    pub pods: u32,
}

/// Where a pool's CapacityBuffer lives and which PodTemplate it refers to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityBufferRef {
    /// Namespace of the buffer and of its PodTemplate.
    pub namespace: String,
    /// Name of a PodTemplate describing one node-sized placeholder pod of the pool
    /// (the buffer's `spec.podTemplateRef`); created by you, not by prescale.
    pub pod_template: String,
    /// Name of the buffer; `prescale-<pool>` when absent.
    #[serde(default)]
    pub name: Option<String>,
}

/// One node pool (a cluster-autoscaler node group, or several of one shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodePoolConfig {
    /// The pool's name: the `nodepool` label of `prescale_nodepool_nodes` and
    /// `prescale_nodepool_balloons`.
    pub name: String,
    /// Cluster-autoscaler node group ids of this pool (what the expander is offered).
    #[serde(default)]
    pub node_group_ids: Vec<String>,
    /// The node label whose value is the node group id (e.g.
    /// `eks.amazonaws.com/nodegroup`, `cloud.google.com/gke-nodepool`): with it the
    /// pool's nodes are found by their node group id.
    #[serde(default)]
    pub node_group_label: Option<String>,
    /// Node labels that identify the pool's nodes (all must match); also matched
    /// against the template nodes of node groups not listed in `node_group_ids`.
    #[serde(default)]
    pub node_labels: BTreeMap<String, String>,
    /// Allocatable cpu and memory of one node; read from the pool's nodes when absent
    /// (the smallest of them).
    #[serde(default)]
    pub allocatable: Option<ResourcesConfig>,
    /// The kubelet's pods-per-node limit (`max-pods`).
    #[serde(default = "default_max_pods_per_node")]
    pub max_pods_per_node: u32,
    /// What the DaemonSets take on every node.
    #[serde(default)]
    pub daemonset_overhead: DaemonSetOverhead,
    /// How long a new node of this pool takes to become schedulable.
    #[serde(default = "default_provisioning_delay")]
    pub provisioning_delay: Duration,
    /// The node group's minimum size.
    #[serde(default)]
    pub min_nodes: u32,
    /// The node group's maximum size.
    pub max_nodes: u32,
    /// The `averageValue` target of the balloon HPA (and of an HPA on
    /// `prescale_nodepool_nodes`): the served values are shaped so that it yields
    /// exactly the recommended count.
    #[serde(default = "default_balloon_target")]
    pub balloon_target: MilliUnits,
    /// The pool's CapacityBuffer (written only with `capacity_buffers.enabled`).
    #[serde(default)]
    pub capacity_buffer: Option<CapacityBufferRef>,
}

const fn default_max_pods_per_node() -> u32 {
    // The kubelet's default max-pods.
    110
}
const fn default_provisioning_delay() -> Duration {
    // Cloud VMs typically join and turn Ready in 2-3 minutes.
    Duration(std::time::Duration::from_secs(180))
}
const fn default_balloon_target() -> MilliUnits {
    // averageValue "1": one placeholder pod per unit served.
    MilliUnits(1000)
}

/// Where a workload's pods are counted (its current replicas).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaSelector {
    /// The workload's namespace.
    pub namespace: String,
    /// Labels its pods carry (all must match), e.g. the Deployment's `matchLabels`.
    pub pod_labels: BTreeMap<String, String>,
}

/// One workload (a Deployment scaled by an HPA on a prescale signal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    /// The workload's name (for the reasoning and the logs).
    pub name: String,
    /// The signal its HPA scales on.
    pub signal: MetricName,
    /// Which of the signal's series belong to the workload (labels that must all
    /// match); every series when empty. Matching series are summed.
    #[serde(default)]
    pub series: BTreeMap<String, String>,
    /// The HPA's target per replica, in the signal's unit.
    pub target_per_replica: f64,
    /// Requests of one pod (all containers plus pod overhead).
    pub pod_requests: ResourcesConfig,
    /// The pool its pods run in.
    pub pool: String,
    /// The HPA's `minReplicas`.
    #[serde(default = "default_min_replicas")]
    pub min_replicas: u32,
    /// The HPA's `maxReplicas`.
    pub max_replicas: u32,
    /// How long a new pod takes to become ready (added to the pool's provisioning
    /// delay: the forecast is taken that far ahead).
    #[serde(default = "default_pod_startup")]
    pub pod_startup: Duration,
    /// Where its running pods are counted; without it, current replicas count as
    /// `min_replicas`.
    #[serde(default)]
    pub replicas: Option<ReplicaSelector>,
}

const fn default_min_replicas() -> u32 {
    1
}
const fn default_pod_startup() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}

/// Optional CapacityBuffer objects (`autoscaling.x-k8s.io/v1beta1`), written by the
/// replica that holds the lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityBuffersConfig {
    /// Write buffers at all.
    #[serde(default)]
    pub enabled: bool,
    /// Only log what would be written.
    #[serde(default = "default_true")]
    pub dry_run: bool,
    /// Namespace of the `coordination.k8s.io` Lease that elects the writer.
    #[serde(default = "default_lease_namespace")]
    pub lease_namespace: String,
    /// Name of that Lease.
    #[serde(default = "default_lease_name")]
    pub lease_name: String,
    /// How long a leader's claim lasts without renewal.
    #[serde(default = "default_lease_duration")]
    pub lease_duration: Duration,
}

const fn default_true() -> bool {
    true
}
fn default_lease_namespace() -> String {
    "prescale".to_string()
}
fn default_lease_name() -> String {
    "prescale-capacity-buffers".to_string()
}
const fn default_lease_duration() -> Duration {
    // client-go's leader election default.
    Duration(std::time::Duration::from_secs(15))
}

impl Default for CapacityBuffersConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dry_run: true,
            lease_namespace: default_lease_namespace(),
            lease_name: default_lease_name(),
            lease_duration: default_lease_duration(),
        }
    }
}

/// The cluster-autoscaler gRPC expander.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpanderConfig {
    /// Address of the gRPC server (TLS).
    #[serde(default = "default_expander_address")]
    pub address: SocketAddr,
    /// PEM certificate chain; with `key_file`. Absent: the API's serving certificate
    /// (`server.tls`), which must then carry the Service's DNS name.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key; with `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Node-pool plans older than this are not trusted (every option is returned).
    #[serde(default = "default_max_plan_age")]
    pub max_plan_age: Duration,
}

fn default_expander_address() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}
const fn default_max_plan_age() -> Duration {
    // A few engine steps: older means the engine is stuck.
    Duration(std::time::Duration::from_secs(300))
}

impl Default for ExpanderConfig {
    fn default() -> Self {
        Self {
            address: default_expander_address(),
            cert_file: None,
            key_file: None,
            max_plan_age: default_max_plan_age(),
        }
    }
}

/// The node-pool sections as built values: what the engine plans from. Made by
/// [`build`] (through [`super::Config::validate`]) from sections without problems.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Planning {
    /// The pools, in configuration order.
    pub pools: Vec<Pool>,
    /// The workloads, in configuration order; each names a pool of `pools`.
    pub workloads: Vec<Workload>,
}

/// A configured node pool, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// Everything but the allocatable, which [`Pool::spec`] supplies.
    shape: PoolShape,
    allocatable: Option<Resources>,
    node_group_label: Option<String>,
    balloon: Balloon,
}

impl Pool {
    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.shape.name
    }

    /// The node label whose value is the node group id, if configured.
    pub fn node_group_label(&self) -> Option<&str> {
        self.node_group_label.as_deref()
    }

    /// The pool's node group ids.
    pub fn node_group_ids(&self) -> &[String] {
        &self.shape.node_group_ids
    }

    /// Node labels that identify the pool's nodes.
    pub fn node_labels(&self) -> &BTreeMap<String, String> {
        &self.shape.node_labels
    }

    /// The configured allocatable of one node (`None`: read from the pool's nodes).
    pub const fn allocatable(&self) -> Option<Resources> {
        self.allocatable
    }

    /// How counts are served to the pool's balloon HPA.
    pub const fn balloon(&self) -> Balloon {
        self.balloon
    }

    /// The planner's pool spec for nodes of `allocatable` (the configured one, or
    /// one read from the pool's nodes).
    ///
    /// # Errors
    /// [`nodepool::Error::InvalidPool`] when the DaemonSet overhead does not fit
    /// `allocatable`: the only check left, since the configuration checked the rest
    /// (and a configured allocatable) but nodes read from the cluster can be smaller.
    pub fn spec(&self, allocatable: Resources) -> nodepool::Result<PoolSpec> {
        PoolSpec::try_new(PoolShape {
            allocatable,
            ..self.shape.clone()
        })
    }
}

/// A configured workload, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    spec: WorkloadSpec,
    signal: MetricName,
    series: BTreeMap<String, String>,
    pod_startup_ms: i64,
    replicas: Option<ReplicaSelector>,
}

impl Workload {
    /// The workload's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The planner's workload spec, without a forecast or replicas running.
    pub const fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }

    /// The signal its HPA scales on.
    pub const fn signal(&self) -> &MetricName {
        &self.signal
    }

    /// Labels that pick the signal's series that belong to the workload (every
    /// series when empty).
    pub const fn series(&self) -> &BTreeMap<String, String> {
        &self.series
    }

    /// How long a new pod takes to become ready, in milliseconds.
    pub const fn pod_startup_ms(&self) -> i64 {
        self.pod_startup_ms
    }

    /// Where its running pods are counted, if configured.
    pub const fn replicas(&self) -> Option<&ReplicaSelector> {
        self.replicas.as_ref()
    }
}

/// Checks the node-pool sections against each other and the signals, pushing one
/// message per problem, each with its field path; returns them built (complete
/// only when nothing was pushed).
pub fn build(
    pools: &[NodePoolConfig],
    workloads: &[WorkloadConfig],
    buffers: &CapacityBuffersConfig,
    expander: Option<&ExpanderConfig>,
    signals: &[SignalConfig],
    problems: &mut Vec<String>,
) -> Planning {
    let mut planning = Planning::default();
    let mut names = BTreeSet::new();
    for (i, p) in pools.iter().enumerate() {
        planning
            .pools
            .extend(p.build(&format!("nodepools[{i}]"), &mut names, problems));
    }
    let mut workload_names = BTreeSet::new();
    for (i, w) in workloads.iter().enumerate() {
        planning.workloads.extend(w.build(
            &format!("workloads[{i}]"),
            &mut workload_names,
            pools,
            signals,
            problems,
        ));
    }
    if buffers.enabled {
        buffers.check(pools, problems);
    }
    if let Some(e) = expander {
        e.check(pools, problems);
    }
    planning
}

impl NodePoolConfig {
    /// The pool's problems, at `at` (`nodepools[i]`); its name joins `names`, the
    /// earlier pools' names. The pool, built, when it has none.
    fn build<'a>(
        &'a self,
        at: &str,
        names: &mut BTreeSet<&'a str>,
        problems: &mut Vec<String>,
    ) -> Option<Pool> {
        let before = problems.len();
        if !is_dns_label(&self.name) {
            problems.push(format!(
                "{at}.name: must be a lowercase RFC 1123 label (it is a label value and an object name), got {:?}",
                self.name
            ));
        }
        if !names.insert(self.name.as_str()) {
            problems.push(format!(
                "{at}.name: {:?} is used by an earlier pool",
                self.name
            ));
        }
        if self.node_group_ids.is_empty() && self.node_labels.is_empty() {
            problems.push(format!(
                "{at}: needs node_group_ids or node_labels to identify its nodes and node groups"
            ));
        }
        if self.node_group_label.is_some() && self.node_group_ids.is_empty() {
            problems.push(format!(
                "{at}.node_group_label: needs node_group_ids (the label's values)"
            ));
        }
        if self.max_nodes == 0 {
            problems.push(format!("{at}.max_nodes: must be at least 1"));
        }
        if self.min_nodes > self.max_nodes {
            problems.push(format!(
                "{at}.min_nodes: must not exceed max_nodes ({}), got {}",
                self.max_nodes, self.min_nodes
            ));
        }
        if self.daemonset_overhead.pods >= self.max_pods_per_node {
            problems.push(format!(
                "{at}.daemonset_overhead.pods: must leave room under max_pods_per_node ({}), got {}",
                self.max_pods_per_node, self.daemonset_overhead.pods
            ));
        }
        if let Some(a) = &self.allocatable {
            let a = a.resources();
            if a.cpu_milli == 0 || a.memory_bytes == 0 {
                problems.push(format!(
                    "{at}.allocatable: cpu and memory must both be positive, got {a}"
                ));
            }
            let overhead = Resources::new(
                self.daemonset_overhead.cpu.get(),
                self.daemonset_overhead.memory.get(),
            );
            if !overhead.fits_in(a) {
                problems.push(format!(
                    "{at}.daemonset_overhead: ({overhead}) exceeds the allocatable ({a})"
                ));
            }
        }
        // The rule is the planner's own, so the two cannot disagree.
        let balloon = Balloon::try_new(self.balloon_target.get());
        if balloon.is_err() {
            problems.push(format!(
                "{at}.balloon_target: must be at least 10m, got {}m",
                self.balloon_target.get()
            ));
        }
        if let Some(b) = &self.capacity_buffer {
            b.check(&format!("{at}.capacity_buffer"), problems);
        }
        let Ok(balloon) = balloon else {
            return None;
        };
        (problems.len() == before).then(|| Pool {
            shape: PoolShape {
                name: self.name.clone(),
                node_group_ids: self.node_group_ids.clone(),
                node_labels: self.node_labels.clone(),
                // Replaced by `Pool::spec`.
                allocatable: Resources::default(),
                max_pods_per_node: self.max_pods_per_node,
                daemonset_overhead: Resources::new(
                    self.daemonset_overhead.cpu.get(),
                    self.daemonset_overhead.memory.get(),
                ),
                daemonset_pods: self.daemonset_overhead.pods,
                provisioning_delay_s: u64::try_from(self.provisioning_delay.as_ms() / 1000)
                    .unwrap_or(0),
                min_nodes: self.min_nodes,
                max_nodes: self.max_nodes,
            },
            allocatable: self.allocatable.map(|a| a.resources()),
            node_group_label: self.node_group_label.clone(),
            balloon,
        })
    }
}

impl CapacityBufferRef {
    /// The reference's problems, at `at` (`nodepools[i].capacity_buffer`).
    fn check(&self, at: &str, problems: &mut Vec<String>) {
        if !is_dns_label(&self.namespace) {
            problems.push(format!(
                "{at}.namespace: not a namespace name, got {:?}",
                self.namespace
            ));
        }
        if self.pod_template.trim().is_empty() {
            problems.push(format!("{at}.pod_template: must not be empty"));
        }
    }
}

impl WorkloadConfig {
    /// The workload's problems, at `at` (`workloads[i]`), its pool and signal
    /// looked up in `pools` and `signals`; its name joins `names`, the earlier
    /// workloads' names. The workload, built, when it has none.
    fn build<'a>(
        &'a self,
        at: &str,
        names: &mut BTreeSet<&'a str>,
        pools: &[NodePoolConfig],
        signals: &[SignalConfig],
        problems: &mut Vec<String>,
    ) -> Option<Workload> {
        let before = problems.len();
        if self.name.trim().is_empty() {
            problems.push(format!("{at}.name: must not be empty"));
        }
        if !names.insert(self.name.as_str()) {
            problems.push(format!(
                "{at}.name: {:?} is used by an earlier workload",
                self.name
            ));
        }
        let signal = signals.iter().find(|s| s.name == self.signal);
        if signal.is_none() {
            problems.push(format!(
                "{at}.signal: no signal is called {:?}",
                self.signal.as_str()
            ));
        }
        let pool = pools.iter().find(|p| p.name == self.pool);
        if pool.is_none() {
            problems.push(format!("{at}.pool: no node pool is called {:?}", self.pool));
        }
        if let (Some(s), Some(p)) = (signal, pool) {
            let horizon = p
                .provisioning_delay
                .as_ms()
                .saturating_add(self.pod_startup.as_ms());
            if horizon > s.history.as_ms() {
                problems.push(format!(
                    "{at}.pod_startup: with the pool's provisioning_delay ({}) the plan looks {}s ahead, more than the signal's history ({}) it forecasts from, got {}",
                    p.provisioning_delay,
                    horizon / 1000,
                    s.history,
                    self.pod_startup
                ));
            }
        }
        // The planner's own rules (target, min and max), every problem reported.
        let shape = WorkloadShape {
            name: self.name.clone(),
            pool: self.pool.clone(),
            target_per_replica: self.target_per_replica,
            pod_requests: self.pod_requests.resources(),
            min_replicas: self.min_replicas,
            max_replicas: self.max_replicas,
        };
        for e in shape.problems() {
            problems.push(format!("{at}.{e}"));
        }
        let r = self.pod_requests.resources();
        if r.cpu_milli == 0 && r.memory_bytes == 0 {
            problems.push(format!(
                "{at}.pod_requests: set cpu or memory (pods without requests take no room)"
            ));
        }
        if let Some(sel) = &self.replicas {
            if !is_dns_label(&sel.namespace) {
                problems.push(format!(
                    "{at}.replicas.namespace: not a namespace name, got {:?}",
                    sel.namespace
                ));
            }
            if sel.pod_labels.is_empty() {
                problems.push(format!(
                    "{at}.replicas.pod_labels: must select the workload's pods (it would count every pod of the namespace)"
                ));
            }
        }
        if problems.len() > before {
            return None;
        }
        match WorkloadSpec::try_new(shape) {
            Ok(spec) => Some(Workload {
                spec,
                signal: self.signal.clone(),
                series: self.series.clone(),
                pod_startup_ms: self.pod_startup.as_ms(),
                replicas: self.replicas.clone(),
            }),
            Err(e) => {
                // Not reached: `problems` above are the constructor's.
                problems.push(format!("{at}.{e}"));
                None
            }
        }
    }
}

impl CapacityBuffersConfig {
    /// The section's problems when enabled: something to write, where to elect.
    fn check(&self, pools: &[NodePoolConfig], problems: &mut Vec<String>) {
        if !pools.iter().any(|p| p.capacity_buffer.is_some()) {
            problems.push(
                "capacity_buffers.enabled: no node pool has a capacity_buffer to write".to_string(),
            );
        }
        if !is_dns_label(&self.lease_namespace) {
            problems.push(format!(
                "capacity_buffers.lease_namespace: not a namespace name, got {:?}",
                self.lease_namespace
            ));
        }
        if self.lease_duration.as_ms() < 2_000 {
            problems.push(format!(
                "capacity_buffers.lease_duration: must be at least 2s, got {}",
                self.lease_duration
            ));
        }
    }
}

impl ExpanderConfig {
    /// The section's problems: a whole certificate pair, and pools to plan.
    fn check(&self, pools: &[NodePoolConfig], problems: &mut Vec<String>) {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => problems.push("expander.key_file: required with cert_file".into()),
            (None, Some(_)) => problems.push("expander.cert_file: required with key_file".into()),
            _ => {}
        }
        if pools.is_empty() {
            problems.push(
                "expander: needs nodepools (without a plan it would return every option)"
                    .to_string(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, Error};

    const BASE: &str = "
prometheus:
  url: http://127.0.0.1:9090
signals:
  - name: rps
    query: sum(rate(http_requests_total[1m]))
";

    #[test]
    fn sections_are_optional() {
        let c = Config::from_yaml(BASE).unwrap();
        assert!(c.nodepools.is_empty() && c.workloads.is_empty());
        assert!(c.expander.is_none());
        assert!(!c.capacity_buffers.enabled);
    }

    #[test]
    fn a_pool_and_a_workload_parse_with_quantities() {
        let text = format!(
            "{BASE}nodepools:
  - name: application
    node_group_ids: [app-asg]
    allocatable: {{ cpu: 7910m, memory: 14500Mi }}
    daemonset_overhead: {{ cpu: 150m, memory: 256Mi, pods: 3 }}
    max_pods_per_node: 58
    provisioning_delay: 3m
    min_nodes: 3
    max_nodes: 20
workloads:
  - name: web
    signal: rps
    series: {{ service: web }}
    target_per_replica: 100
    pod_requests: {{ cpu: 1, memory: 2Gi }}
    pool: application
    max_replicas: 100
    replicas: {{ namespace: shop, pod_labels: {{ app: web }} }}
expander: {{}}
"
        );
        // The expander shares the API's generated certificate: it must name the
        // Service the cluster-autoscaler dials.
        let Err(Error::Invalid(p)) = Config::from_yaml(&text) else {
            panic!("an expander certificate without the Service name accepted");
        };
        assert!(
            p[0].starts_with("expander: with the generated API certificate"),
            "{p:?}"
        );
        let text = format!("{text}server:\n  tls: {{ dns_names: [prescale.prescale.svc] }}\n");
        let c = Config::from_yaml(&text).unwrap();
        let p = &c.nodepools[0];
        let pool = &c.planning.pools[0];
        let spec = pool.spec(pool.allocatable().unwrap()).unwrap();
        assert_eq!(spec.allocatable.cpu_milli, 7910);
        assert_eq!(spec.allocatable.memory_bytes, 14_500 << 20);
        assert_eq!(spec.daemonset_overhead.cpu_milli, 150);
        assert_eq!(spec.daemonset_pods, 3);
        assert_eq!(spec.provisioning_delay_s, 180);
        assert_eq!(p.balloon_target.get(), 1000);
        let w = &c.workloads[0];
        assert_eq!(w.pod_requests.resources().cpu_milli, 1000);
        assert_eq!(w.pod_requests.resources().memory_bytes, 2 << 30);
        assert_eq!(w.pod_startup.as_ms(), 30_000);
        assert_eq!(w.min_replicas, 1);
        assert_eq!(c.expander.unwrap().address.port(), 8443);
    }

    #[test]
    fn a_bad_quantity_names_its_field() {
        let text = format!(
            "{BASE}nodepools:
  - name: app
    node_group_ids: [a]
    max_nodes: 3
    allocatable: {{ cpu: lots, memory: 1Gi }}
"
        );
        let err = Config::from_yaml(&text).unwrap_err();
        let msg = std::error::Error::source(&err).unwrap().to_string();
        assert!(
            msg.contains("nodepools[0].allocatable.cpu") && msg.contains("lots"),
            "{msg}"
        );
    }

    #[test]
    fn cross_field_problems_are_all_reported() {
        let text = format!(
            "{BASE}nodepools:
  - name: App
    max_nodes: 2
    min_nodes: 5
    allocatable: {{ cpu: 100m, memory: 1Gi }}
    daemonset_overhead: {{ cpu: 200m }}
    balloon_target: 1m
  - name: db
    node_labels: {{ pool: db }}
    max_nodes: 4
  - name: db
    node_labels: {{ pool: db }}
    node_group_label: eks.amazonaws.com/nodegroup
    max_nodes: 4
workloads:
  - name: web
    signal: nope
    target_per_replica: 0
    pod_requests: {{}}
    pool: nowhere
    min_replicas: 9
    max_replicas: 3
    replicas: {{ namespace: Shop, pod_labels: {{}} }}
capacity_buffers: {{ enabled: true }}
expander: {{ cert_file: /x.crt }}
"
        );
        let Err(Error::Invalid(problems)) = Config::from_yaml(&text) else {
            panic!("expected validation errors");
        };
        let all = problems.join("\n");
        let far = format!(
            "{BASE}nodepools:
  - name: app
    node_labels: {{ pool: app }}
    max_nodes: 4
    provisioning_delay: 9999999999s
workloads:
  - name: web
    signal: rps
    target_per_replica: 10
    pod_requests: {{ cpu: 1 }}
    pool: app
    max_replicas: 10
"
        );
        let Err(Error::Invalid(p)) = Config::from_yaml(&far) else {
            panic!("a plan 317 years ahead was accepted");
        };
        assert!(
            p.join("\n").contains(
                "workloads[0].pod_startup: with the pool's provisioning_delay (9999999999s) the plan looks 10000000029s ahead, more than the signal's history (7d)"
            ),
            "{p:?}"
        );
        for want in [
            "nodepools[0].name: must be a lowercase RFC 1123 label",
            "nodepools[0]: needs node_group_ids or node_labels",
            "nodepools[0].min_nodes: must not exceed max_nodes (2), got 5",
            "nodepools[0].daemonset_overhead: (200m cpu",
            "nodepools[0].balloon_target: must be at least 10m, got 1m",
            "nodepools[2].name: \"db\" is used by an earlier pool",
            "nodepools[2].node_group_label: needs node_group_ids",
            "workloads[0].signal: no signal is called \"nope\"",
            "workloads[0].pool: no node pool is called \"nowhere\"",
            "workloads[0].target_per_replica: must be a finite number > 0, got 0",
            "workloads[0].min_replicas: must not exceed max_replicas (3), got 9",
            "workloads[0].pod_requests: set cpu or memory",
            "workloads[0].replicas.namespace: not a namespace name",
            "workloads[0].replicas.pod_labels: must select",
            "capacity_buffers.enabled: no node pool has a capacity_buffer",
            "expander.key_file: required with cert_file",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
    }
}
