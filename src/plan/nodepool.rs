//! Node-pool pre-scale recommendations: from workload forecasts to nodes.
//!
//! For every pool, each workload's forecast (taken at now + the pool's provisioning
//! delay + pod start-up, so that nodes ordered now are ready when the pods are)
//! becomes a replica count, the replicas' pod requests are packed into nodes of the
//! pool's shape (first-fit decreasing on cpu, memory and the pods-per-node limit),
//! and the result is compared with the pool's current nodes. Pods that fit no node
//! of the pool are reported, never dropped silently.
//!
//! The [`Balloon`] math turns a recommended count into the value of an external
//! metric such that an HPA with an `AverageValue` target on a placeholder
//! Deployment yields exactly that count.
//!
//! Pure and synchronous: plain structs in, plain structs out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Why a pool, a workload or a balloon cannot be built from the given fields. The
/// message starts at the field; the caller puts the path in front
/// (`nodepools[0].` or `pools[0] (app).`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A pool's shape or limits make no sense.
    #[error("{field}: {message}")]
    InvalidPool {
        /// The offending field.
        field: &'static str,
        /// What was expected.
        message: String,
    },
    /// A workload's target or limits make no sense.
    #[error("{field}: {message}")]
    InvalidWorkload {
        /// The offending field.
        field: &'static str,
        /// What was expected.
        message: String,
    },
    /// A balloon target too small to leave a rounding margin.
    #[error("balloon target: must be at least 10m (0.01), got {target_milli}m")]
    InvalidBalloonTarget {
        /// The rejected target, in milli-units.
        target_milli: u64,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Cpu and memory, as Kubernetes requests and allocatable count them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resources {
    /// Cpu in millicores.
    pub cpu_milli: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

impl Resources {
    /// Cpu and memory.
    pub const fn new(cpu_milli: u64, memory_bytes: u64) -> Self {
        Self {
            cpu_milli,
            memory_bytes,
        }
    }

    /// Both components added, saturating (requests never wrap around).
    pub const fn saturating_add(self, other: Self) -> Self {
        Self {
            cpu_milli: self.cpu_milli.saturating_add(other.cpu_milli),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }

    /// Both components subtracted, or `None` when `other` exceeds `self` in either.
    pub fn checked_sub(self, other: Self) -> Option<Self> {
        Some(Self {
            cpu_milli: self.cpu_milli.checked_sub(other.cpu_milli)?,
            memory_bytes: self.memory_bytes.checked_sub(other.memory_bytes)?,
        })
    }

    /// `self` times `n`, saturating.
    pub const fn saturating_mul(self, n: u64) -> Self {
        Self {
            cpu_milli: self.cpu_milli.saturating_mul(n),
            memory_bytes: self.memory_bytes.saturating_mul(n),
        }
    }

    /// True when `self` fits within `room` in both components.
    pub const fn fits_in(self, room: Self) -> bool {
        self.cpu_milli <= room.cpu_milli && self.memory_bytes <= room.memory_bytes
    }

    /// The larger of the two shares `self` takes of `capacity` (the dominant share),
    /// in [0, ∞); a zero capacity component counts as fully used by any request.
    pub fn dominant_share(self, capacity: Self) -> f64 {
        fn share(x: u64, cap: u64) -> f64 {
            if cap == 0 {
                if x == 0 {
                    0.0
                } else {
                    f64::INFINITY
                }
            } else {
                x as f64 / cap as f64
            }
        }
        share(self.cpu_milli, capacity.cpu_milli)
            .max(share(self.memory_bytes, capacity.memory_bytes))
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}m cpu, {:.2}Gi memory",
            self.cpu_milli,
            self.memory_bytes as f64 / (1u64 << 30) as f64
        )
    }
}

/// The fields of a node pool, unchecked: what [`PoolSpec::try_new`] builds from.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolShape {
    /// The pool's name; the `nodepool` label of the served metrics.
    pub name: String,
    /// Cluster-autoscaler node group ids that belong to this pool.
    pub node_group_ids: Vec<String>,
    /// Node labels that identify the pool's nodes (all must match); used when a node
    /// group id is not listed.
    pub node_labels: BTreeMap<String, String>,
    /// Allocatable cpu and memory of one node.
    pub allocatable: Resources,
    /// The kubelet's pods-per-node limit (`max-pods`).
    pub max_pods_per_node: u32,
    /// Requests of the DaemonSet pods every node runs (taken off each node's room).
    pub daemonset_overhead: Resources,
    /// How many DaemonSet pods every node runs (taken off the pods-per-node limit).
    pub daemonset_pods: u32,
    /// How long a new node takes to become schedulable, in seconds.
    pub provisioning_delay_s: u64,
    /// The pool's lower node bound.
    pub min_nodes: u32,
    /// The pool's upper node bound.
    pub max_nodes: u32,
}

/// A node pool (a cluster-autoscaler node group, or several with the same shape)
/// that can be planned: a named pool whose DaemonSets leave room and pod slots on
/// every node, with `min_nodes <= max_nodes`. Its fields are read through
/// [`PoolShape`].
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSpec {
    shape: PoolShape,
}

impl PoolSpec {
    /// Checks `shape`.
    ///
    /// # Errors
    /// [`Error::InvalidPool`] naming the first field that makes no sense: an empty
    /// name, DaemonSets that take more than the node's allocatable or all its pod
    /// slots, `min_nodes` above `max_nodes`.
    pub fn try_new(shape: PoolShape) -> Result<Self> {
        let bad = |field: &'static str, message: String| Err(Error::InvalidPool { field, message });
        if shape.name.is_empty() {
            return bad("name", "must not be empty".into());
        }
        if shape
            .allocatable
            .checked_sub(shape.daemonset_overhead)
            .is_none()
        {
            return bad(
                "daemonset_overhead",
                format!(
                    "({}) exceeds the node's allocatable ({})",
                    shape.daemonset_overhead, shape.allocatable
                ),
            );
        }
        if shape.max_pods_per_node <= shape.daemonset_pods {
            return bad(
                "max_pods_per_node",
                format!(
                    "must leave room for workload pods after {} DaemonSet pods, got {}",
                    shape.daemonset_pods, shape.max_pods_per_node
                ),
            );
        }
        if shape.min_nodes > shape.max_nodes {
            return bad(
                "min_nodes",
                format!(
                    "must not exceed max_nodes ({}), got {}",
                    shape.max_nodes, shape.min_nodes
                ),
            );
        }
        Ok(Self { shape })
    }

    /// Room for workload pods on one empty node: allocatable minus DaemonSet overhead.
    pub fn room_per_node(&self) -> Resources {
        // Checked by `try_new`: the overhead fits.
        self.allocatable
            .checked_sub(self.daemonset_overhead)
            .unwrap_or_default()
    }

    /// Workload pods one node can hold by the pods-per-node limit (at least 1).
    pub fn pod_slots_per_node(&self) -> u32 {
        self.max_pods_per_node.saturating_sub(self.daemonset_pods)
    }

    /// True when a node with `labels` belongs to this pool by its node labels.
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.node_labels.is_empty()
            && self
                .node_labels
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
    }
}

impl std::ops::Deref for PoolSpec {
    type Target = PoolShape;
    fn deref(&self) -> &PoolShape {
        &self.shape
    }
}

/// The fields of a workload, unchecked: what [`WorkloadSpec::try_new`] builds from.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadShape {
    /// The workload's name, for the reasoning.
    pub name: String,
    /// Name of the pool its pods run in.
    pub pool: String,
    /// The HPA's target per replica (same unit as the forecast).
    pub target_per_replica: f64,
    /// Requests of one pod (all containers, plus pod overhead).
    pub pod_requests: Resources,
    /// The HPA's minimum replicas.
    pub min_replicas: u32,
    /// The HPA's maximum replicas.
    pub max_replicas: u32,
}

impl WorkloadShape {
    /// Every problem of the fields, in field order (empty when
    /// [`WorkloadSpec::try_new`] accepts them).
    pub fn problems(&self) -> Vec<Error> {
        let bad = |field: &'static str, message: String| Error::InvalidWorkload { field, message };
        let mut out = Vec::new();
        if !(self.target_per_replica.is_finite() && self.target_per_replica > 0.0) {
            out.push(bad(
                "target_per_replica",
                format!(
                    "must be a finite number > 0, got {}",
                    self.target_per_replica
                ),
            ));
        }
        if self.min_replicas > self.max_replicas {
            out.push(bad(
                "min_replicas",
                format!(
                    "must not exceed max_replicas ({}), got {}",
                    self.max_replicas, self.min_replicas
                ),
            ));
        }
        out
    }
}

/// A workload (a Deployment scaled by an HPA) that can be planned: a finite
/// positive target per replica, `min_replicas <= max_replicas`. Its fields are read
/// through [`WorkloadShape`]; what changes every step (the forecast, the replicas
/// running) is set with [`with_forecast`](Self::with_forecast) and
/// [`with_current_replicas`](Self::with_current_replicas).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSpec {
    shape: WorkloadShape,
    /// Its scaling metric forecast at now + the pool's provisioning delay + pod
    /// start-up (total over the workload); `None` when there is no forecast.
    pub forecast: Option<f64>,
    /// Replicas running now (used to size the balloons; see [`PoolPlan::balloons`]).
    pub current_replicas: u32,
}

impl WorkloadSpec {
    /// Checks `shape`; no forecast and no replicas running yet.
    ///
    /// # Errors
    /// [`Error::InvalidWorkload`] naming the first field that makes no sense (see
    /// [`WorkloadShape::problems`]).
    pub fn try_new(shape: WorkloadShape) -> Result<Self> {
        if let Some(e) = shape.problems().into_iter().next() {
            return Err(e);
        }
        Ok(Self {
            shape,
            forecast: None,
            current_replicas: 0,
        })
    }

    /// With `forecast` as its forecast.
    #[must_use]
    pub fn with_forecast(mut self, forecast: Option<f64>) -> Self {
        self.forecast = forecast;
        self
    }

    /// With `replicas` running now.
    #[must_use]
    pub fn with_current_replicas(mut self, replicas: u32) -> Self {
        self.current_replicas = replicas;
        self
    }

    /// Replicas for `forecast`: `ceil(forecast / target)` clamped to min/max; a
    /// negative forecast counts as zero, a missing or non-finite one as the minimum.
    pub fn replicas_for(&self, forecast: Option<f64>) -> u32 {
        let Some(f) = forecast.filter(|f| f.is_finite()) else {
            return self.min_replicas;
        };
        let raw = (f.max(0.0) / self.target_per_replica).ceil();
        // `as` saturates for floats beyond u32, which the clamp then bounds.
        (raw as u32).clamp(self.min_replicas, self.max_replicas)
    }
}

impl std::ops::Deref for WorkloadSpec {
    type Target = WorkloadShape;
    fn deref(&self) -> &WorkloadShape {
        &self.shape
    }
}

/// What the planner knows of a pool right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolState {
    /// Nodes the pool has now (ready or being provisioned).
    pub current_nodes: u32,
}

/// One workload's part in a pool's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadPlan {
    /// The workload's name.
    pub name: String,
    /// The forecast the replicas come from (`None`: no forecast, minimum used).
    pub forecast: Option<f64>,
    /// The target per replica.
    pub target_per_replica: f64,
    /// Replicas planned for the forecast.
    pub replicas: u32,
    /// Replicas running now.
    pub current_replicas: u32,
    /// Requests of one pod.
    pub pod_requests: Resources,
    /// How many of the planned pods fit no node of the pool.
    pub unschedulable: u32,
}

/// Pods of one workload that fit no node of the pool, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unschedulable {
    /// The workload.
    pub workload: String,
    /// How many of its pods.
    pub pods: u32,
    /// Requests of one pod.
    pub pod_requests: Resources,
    /// Why no node fits them.
    pub reason: String,
}

/// One pool's recommendation.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolPlan {
    /// The pool, as planned.
    pub spec: PoolSpec,
    /// Each workload of the pool, in input order.
    pub workloads: Vec<WorkloadPlan>,
    /// Nodes the packing of the forecast pods uses, before the min/max clamp.
    pub nodes_packed: u32,
    /// Nodes the pool should have: `nodes_packed` clamped to min/max.
    pub nodes_needed: u32,
    /// Nodes the pool has now.
    pub current_nodes: u32,
    /// Nodes to add now so they are ready when the pods are: `nodes_needed - current`.
    pub extra_nodes: u32,
    /// Nodes the pods running now take (same packing), for sizing the balloons.
    pub nodes_for_current_pods: u32,
    /// Node-sized placeholder pods to run so the pool grows to `nodes_needed`:
    /// `nodes_needed - nodes_for_current_pods`. Stable while balloons get scheduled
    /// (it does not depend on the node count they cause), shrinking only as real
    /// pods arrive and take their room.
    pub balloons: u32,
    /// True when the forecast demand needs more than `max_nodes`.
    pub capped_by_max: bool,
    /// Pods that fit no node of this pool, per workload.
    pub unschedulable: Vec<Unschedulable>,
    /// Workloads of this pool without a usable forecast (their minimum was planned).
    pub missing_forecasts: Vec<String>,
    /// Total requests of the planned pods that fit.
    pub requested: Resources,
    /// Why: the workloads, their forecasts and replicas, and the node arithmetic.
    pub reasoning: String,
}

impl PoolPlan {
    /// True when every workload of the pool has a usable forecast.
    pub fn is_complete(&self) -> bool {
        self.missing_forecasts.is_empty()
    }
}

/// The recommendation for every pool.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// When the plan was made (unix milliseconds).
    pub computed_at_ms: i64,
    /// One entry per pool, in input order.
    pub pools: Vec<PoolPlan>,
}

impl Plan {
    /// The pool a cluster-autoscaler node group belongs to: by listed id first, then
    /// by the template node's labels. `None` when no pool claims it, or when more
    /// than one pool's labels match (ambiguous).
    pub fn pool_for_node_group(
        &self,
        node_group_id: &str,
        template_labels: Option<&BTreeMap<String, String>>,
    ) -> Option<&PoolPlan> {
        if let Some(p) = self
            .pools
            .iter()
            .find(|p| p.spec.node_group_ids.iter().any(|id| id == node_group_id))
        {
            return Some(p);
        }
        let labels = template_labels?;
        let mut matching = self.pools.iter().filter(|p| p.spec.matches_labels(labels));
        let first = matching.next()?;
        matching.next().is_none().then_some(first)
    }

    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolPlan> {
        self.pools.iter().find(|p| p.spec.name == name)
    }
}

/// Plans every pool: replicas from forecasts, pods packed into nodes, compared with
/// `state` (pools missing from `state` count as having `min_nodes`). Each workload
/// is planned in the pool it names; one naming no pool of `pools` is not planned.
/// Pools are told apart by name, so their names should differ (the configuration
/// makes sure of it).
pub fn plan(
    pools: &[PoolSpec],
    workloads: &[WorkloadSpec],
    state: &BTreeMap<String, PoolState>,
    now_ms: i64,
) -> Plan {
    let pools = pools
        .iter()
        .map(|spec| {
            let current = state
                .get(&spec.name)
                .map_or(spec.min_nodes, |s| s.current_nodes);
            let mine: Vec<&WorkloadSpec> =
                workloads.iter().filter(|w| w.pool == spec.name).collect();
            plan_pool(spec, &mine, current)
        })
        .collect();
    Plan {
        computed_at_ms: now_ms,
        pools,
    }
}

fn plan_pool(spec: &PoolSpec, workloads: &[&WorkloadSpec], current_nodes: u32) -> PoolPlan {
    let room = spec.room_per_node();
    let slots = spec.pod_slots_per_node();

    let mut plans = Vec::with_capacity(workloads.len());
    let mut missing = Vec::new();
    let mut forecast_pods = Vec::new();
    let mut current_pods = Vec::new();
    for w in workloads {
        let forecast = w.forecast.filter(|f| f.is_finite());
        if forecast.is_none() {
            missing.push(w.name.clone());
        }
        let replicas = w.replicas_for(forecast);
        forecast_pods.push(PodGroup {
            workload: &w.name,
            requests: w.pod_requests,
            count: replicas,
        });
        current_pods.push(PodGroup {
            workload: &w.name,
            requests: w.pod_requests,
            count: w.current_replicas,
        });
        plans.push(WorkloadPlan {
            name: w.name.clone(),
            forecast,
            target_per_replica: w.target_per_replica,
            replicas,
            current_replicas: w.current_replicas,
            pod_requests: w.pod_requests,
            unschedulable: 0,
        });
    }

    let packed = pack(&forecast_pods, room, slots);
    let for_current = pack(&current_pods, room, slots);
    for u in &packed.unschedulable {
        if let Some(p) = plans.iter_mut().find(|p| p.name == u.workload) {
            p.unschedulable = u.pods;
        }
    }

    let nodes_packed = packed.nodes;
    let nodes_needed = nodes_packed.clamp(spec.min_nodes, spec.max_nodes);
    let extra_nodes = nodes_needed.saturating_sub(current_nodes);
    let balloons = nodes_needed.saturating_sub(for_current.nodes);
    let capped_by_max = nodes_packed > spec.max_nodes;

    let mut reasoning = format!(
        "pool {}: {} node(s) of room {} and {} pod slot(s) each, ready after {}s;",
        spec.name, nodes_needed, room, slots, spec.provisioning_delay_s
    );
    for p in &plans {
        match p.forecast {
            Some(f) => {
                let _ = write!(
                    reasoning,
                    " {} forecast {:.3} / {:.3} per replica -> {} replica(s) (now {});",
                    p.name, f, p.target_per_replica, p.replicas, p.current_replicas
                );
            }
            None => {
                let _ = write!(
                    reasoning,
                    " {} has no forecast -> its minimum {} replica(s) (now {});",
                    p.name, p.replicas, p.current_replicas
                );
            }
        }
    }
    let _ = write!(
        reasoning,
        " packed into {} node(s), needed {} (min {}, max {}), have {}, add {}",
        nodes_packed, nodes_needed, spec.min_nodes, spec.max_nodes, current_nodes, extra_nodes
    );
    if capped_by_max {
        let _ = write!(reasoning, "; capped by max_nodes");
    }
    for u in &packed.unschedulable {
        let _ = write!(
            reasoning,
            "; {} pod(s) of {} fit no node: {}",
            u.pods, u.workload, u.reason
        );
    }

    PoolPlan {
        spec: spec.clone(),
        workloads: plans,
        nodes_packed,
        nodes_needed,
        current_nodes,
        extra_nodes,
        nodes_for_current_pods: for_current.nodes,
        balloons,
        capped_by_max,
        unschedulable: packed.unschedulable,
        missing_forecasts: missing,
        requested: packed.requested,
        reasoning,
    }
}

/// `count` identical pods of one workload.
#[derive(Debug, Clone, Copy)]
struct PodGroup<'a> {
    workload: &'a str,
    requests: Resources,
    count: u32,
}

/// The outcome of packing pods into empty nodes of one shape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Packing {
    /// Nodes used.
    pub nodes: u32,
    /// Total requests of the pods placed.
    pub requested: Resources,
    /// Pods that fit no empty node.
    pub unschedulable: Vec<Unschedulable>,
}

/// First-fit decreasing: pods sorted by their dominant share of a node (largest
/// first), each placed on the first node with room for its cpu, memory and a pod
/// slot, a new node opened when none has. Pods larger than an empty node are
/// reported in `unschedulable`.
///
/// `groups` are `(workload, pod requests, count)`.
pub fn pack_pods(groups: &[(&str, Resources, u32)], room: Resources, slots: u32) -> Packing {
    let groups: Vec<PodGroup<'_>> = groups
        .iter()
        .map(|&(workload, requests, count)| PodGroup {
            workload,
            requests,
            count,
        })
        .collect();
    pack(&groups, room, slots)
}

fn pack(groups: &[PodGroup<'_>], room: Resources, slots: u32) -> Packing {
    let mut out = Packing::default();
    let mut order: Vec<&PodGroup<'_>> = Vec::with_capacity(groups.len());
    for g in groups.iter().filter(|g| g.count > 0) {
        if slots == 0 || !g.requests.fits_in(room) {
            let reason = if slots == 0 {
                "the node has no pod slots left after DaemonSets".to_string()
            } else {
                format!("requests {} exceed a node's room {}", g.requests, room)
            };
            out.unschedulable.push(Unschedulable {
                workload: g.workload.to_string(),
                pods: g.count,
                pod_requests: g.requests,
                reason,
            });
        } else {
            order.push(g);
        }
    }
    // Stable sort: equal shares keep input order, so the result is deterministic.
    order.sort_by(|a, b| {
        b.requests
            .dominant_share(room)
            .total_cmp(&a.requests.dominant_share(room))
    });

    // Each open node: room left and pod slots left.
    let mut nodes: Vec<(Resources, u32)> = Vec::new();
    for g in order {
        // Nodes before `first_open` cannot take another pod of this group: pods of a
        // group are identical, so once a node refuses one it refuses the rest.
        let mut first_open = 0;
        for _ in 0..g.count {
            let slot = nodes[first_open..]
                .iter()
                .position(|(left, pods)| *pods > 0 && g.requests.fits_in(*left))
                .map(|i| i + first_open);
            let i = match slot {
                Some(i) => i,
                None => {
                    nodes.push((room, slots));
                    nodes.len() - 1
                }
            };
            first_open = i;
            let node = &mut nodes[i];
            // Fits: checked above (or a fresh node, which fits by the filter).
            node.0 = node.0.checked_sub(g.requests).unwrap_or_default();
            node.1 -= 1;
            out.requested = out.requested.saturating_add(g.requests);
        }
    }
    out.nodes = u32::try_from(nodes.len()).unwrap_or(u32::MAX);
    out
}

/// How a count is served to an HPA with an `AverageValue` target on a placeholder
/// Deployment (metrics `prescale_nodepool_nodes` and `prescale_nodepool_balloons`,
/// label `nodepool`).
///
/// The HPA computes `ceil(value / target)` on milli-units (`Quantity::MilliValue`).
/// The served value sits in the middle of the interval that maps to the count,
/// `count × target − (target − 1)/2` milli-units, rather than on its upper edge
/// `count × target`: then any rounding of the value on its way to the HPA (float
/// formatting, a conversion that rounds up to the next milli-unit) of less than half
/// a target in either direction still yields exactly `count`, where `count × target`
/// plus one milli-unit would already yield `count + 1`. Zero is served as zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balloon {
    target_milli: u64,
}

impl Balloon {
    /// The HPA's `AverageValue` target, in milli-units (`1` → 1000).
    ///
    /// # Errors
    /// A target below 10m: it would leave less than a few milli-units of margin
    /// against rounding (a target of `1` is the natural choice).
    pub fn try_new(target_milli: u64) -> Result<Self> {
        if target_milli < 10 {
            return Err(Error::InvalidBalloonTarget { target_milli });
        }
        Ok(Self { target_milli })
    }

    /// The HPA target in milli-units.
    pub const fn target_milli(&self) -> u64 {
        self.target_milli
    }

    /// The value to serve for `count`, in milli-units (exact: serve it as `"{n}m"`).
    pub const fn served_milli(&self, count: u32) -> u64 {
        if count == 0 {
            return 0;
        }
        let top = (count as u64).saturating_mul(self.target_milli);
        top - (self.target_milli - 1) / 2
    }

    /// The same value as a float, for APIs that take one (the nearest `f64` to
    /// `served_milli / 1000`).
    pub fn served_value(&self, count: u32) -> f64 {
        self.served_milli(count) as f64 / 1000.0
    }

    /// The value to serve for `count` as an exact Kubernetes Quantity string
    /// (`"2501m"`), for APIs that pass quantities through unchanged.
    pub fn served_quantity(&self, count: u32) -> String {
        format!("{}m", self.served_milli(count))
    }

    /// How far (in milli-units) the served value may be rounded either way and
    /// still yield exactly the count.
    pub const fn rounding_margin_milli(&self) -> u64 {
        (self.target_milli - 1) / 2
    }
}

/// Replicas an HPA computes for an external metric with an `AverageValue` target:
/// `ceil(value_milli / target_milli)` (the HPA's tolerance band aside).
pub const fn hpa_replicas(value_milli: u64, target_milli: u64) -> u64 {
    if target_milli == 0 {
        return 0;
    }
    value_milli.div_ceil(target_milli)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    /// A pool's fields, to change before [`spec`].
    fn shape(name: &str) -> PoolShape {
        PoolShape {
            name: name.into(),
            node_group_ids: vec![format!("{name}-asg")],
            node_labels: BTreeMap::from([("pool".to_string(), name.to_string())]),
            allocatable: Resources::new(4000, 16 * GI),
            max_pods_per_node: 10,
            daemonset_overhead: Resources::new(0, 0),
            daemonset_pods: 0,
            provisioning_delay_s: 180,
            min_nodes: 0,
            max_nodes: 100,
        }
    }

    fn spec(shape: PoolShape) -> PoolSpec {
        PoolSpec::try_new(shape).unwrap()
    }

    fn pool(name: &str) -> PoolSpec {
        spec(shape(name))
    }

    fn workload(
        name: &str,
        pool: &str,
        forecast: f64,
        target: f64,
        req: Resources,
    ) -> WorkloadSpec {
        workload_spec(workload_shape(name, pool, target, req)).with_forecast(Some(forecast))
    }

    /// A workload's fields, to change before [`workload_spec`].
    fn workload_shape(name: &str, pool: &str, target: f64, req: Resources) -> WorkloadShape {
        WorkloadShape {
            name: name.into(),
            pool: pool.into(),
            target_per_replica: target,
            pod_requests: req,
            min_replicas: 1,
            max_replicas: 1000,
        }
    }

    fn workload_spec(shape: WorkloadShape) -> WorkloadSpec {
        WorkloadSpec::try_new(shape).unwrap()
    }

    fn state(pool: &str, nodes: u32) -> BTreeMap<String, PoolState> {
        BTreeMap::from([(
            pool.to_string(),
            PoolState {
                current_nodes: nodes,
            },
        )])
    }

    #[test]
    fn replicas_are_the_clamped_ceiling_of_forecast_over_target() {
        let mut shape = workload_shape("web", "app", 100.0, Resources::new(100, GI));
        let w = workload_spec(shape.clone());
        assert_eq!(w.replicas_for(Some(1001.0)), 11);
        assert_eq!(w.replicas_for(Some(1000.0)), 10);
        assert_eq!(
            w.replicas_for(Some(-5.0)),
            1,
            "negative counts as zero, then min"
        );
        assert_eq!(w.replicas_for(None), 1);
        assert_eq!(w.replicas_for(Some(f64::NAN)), 1);
        shape.max_replicas = 8;
        assert_eq!(workload_spec(shape).replicas_for(Some(1e12)), 8);
    }

    #[test]
    fn ffd_packs_a_hand_computed_case() {
        // Room 4000m / 16Gi, 10 slots. Pods (dominant share):
        //   a: 3 × 2500m/2Gi (0.625), b: 4 × 1500m/4Gi (0.375), c: 2 × 500m/12Gi (0.75).
        // Decreasing: c c a a a b b b b.
        //   c1 -> n1 (3500m, 4Gi left); c2 -> n1? 12Gi > 4Gi no -> n2 (3500m, 4Gi)
        //   a1 -> n1 (1000m, 2Gi); a2 -> n2 (1000m, 2Gi); a3 -> n3 (1500m, 14Gi)
        //   b1: n1 1000m < 1500 no, n2 no, n3 yes (0m, 10Gi)
        //   b2 -> n4 (2500m, 12Gi); b3 -> n4 (1000m, 8Gi); b4 -> n5.
        let p = pack_pods(
            &[
                ("a", Resources::new(2500, 2 * GI), 3),
                ("b", Resources::new(1500, 4 * GI), 4),
                ("c", Resources::new(500, 12 * GI), 2),
            ],
            Resources::new(4000, 16 * GI),
            10,
        );
        assert_eq!(p.nodes, 5);
        assert!(p.unschedulable.is_empty());
        assert_eq!(
            p.requested,
            Resources::new(3 * 2500 + 4 * 1500 + 2 * 500, (6 + 16 + 24) * GI)
        );
    }

    #[test]
    fn the_pods_per_node_limit_opens_nodes() {
        // 25 tiny pods, 10 slots per node after 2 DaemonSet pods of 12: 3 nodes.
        let mut shape = shape("app");
        shape.max_pods_per_node = 12;
        shape.daemonset_pods = 2;
        let w = workload("tiny", "app", 25.0, 1.0, Resources::new(10, 1 << 20));
        let plan = plan(&[spec(shape)], &[w], &state("app", 1), 0);
        let p = &plan.pools[0];
        assert_eq!(p.nodes_packed, 3);
        assert_eq!(p.nodes_needed, 3);
        assert_eq!(p.extra_nodes, 2);
    }

    #[test]
    fn daemonset_overhead_shrinks_each_node() {
        // Allocatable 4000m, DaemonSets take 600m: room 3400m. Pods of 1000m: 3 per
        // node, 10 pods -> 4 nodes; without the overhead 4 per node -> 3 nodes.
        let mut shape = shape("app");
        shape.daemonset_overhead = Resources::new(600, GI);
        let w = workload("api", "app", 10.0, 1.0, Resources::new(1000, GI));
        let with = plan(
            &[spec(shape.clone())],
            std::slice::from_ref(&w),
            &state("app", 0),
            0,
        );
        assert_eq!(with.pools[0].nodes_packed, 4);
        shape.daemonset_overhead = Resources::default();
        let without = plan(&[spec(shape)], &[w], &state("app", 0), 0);
        assert_eq!(without.pools[0].nodes_packed, 3);
    }

    #[test]
    fn pods_that_fit_no_node_are_reported_not_dropped() {
        // 5000m pods on 4000m nodes: none fits; the others still pack.
        let spec = pool("app");
        let huge = workload("huge", "app", 2.0, 1.0, Resources::new(5000, GI));
        let fine = workload("fine", "app", 4.0, 1.0, Resources::new(2000, GI));
        let plan = plan(&[spec], &[huge, fine], &state("app", 1), 0);
        let p = &plan.pools[0];
        assert_eq!(p.nodes_packed, 2, "4 pods of 2000m: 2 per node");
        assert_eq!(p.unschedulable.len(), 1);
        assert_eq!(p.unschedulable[0].workload, "huge");
        assert_eq!(p.unschedulable[0].pods, 2);
        assert!(
            p.unschedulable[0].reason.contains("exceed"),
            "{}",
            p.unschedulable[0].reason
        );
        assert_eq!(p.workloads[0].unschedulable, 2);
        assert_eq!(p.workloads[1].unschedulable, 0);
        assert!(
            p.reasoning.contains("2 pod(s) of huge fit no node"),
            "{}",
            p.reasoning
        );
        // Memory alone can make a pod fit nowhere too.
        let q = pack_pods(
            &[("mem", Resources::new(1, 17 * GI), 1)],
            Resources::new(4000, 16 * GI),
            10,
        );
        assert_eq!(q.nodes, 0);
        assert_eq!(q.unschedulable[0].pods, 1);
    }

    #[test]
    fn nodes_are_clamped_and_extra_is_against_current() {
        let mut shape = shape("app");
        shape.min_nodes = 3;
        shape.max_nodes = 6;
        let spec = spec(shape);
        // 1 pod -> 1 node -> min 3; have 2 -> add 1.
        let w = workload("web", "app", 1.0, 1.0, Resources::new(3000, GI));
        let p = plan(std::slice::from_ref(&spec), &[w], &state("app", 2), 0);
        assert_eq!(
            (
                p.pools[0].nodes_packed,
                p.pools[0].nodes_needed,
                p.pools[0].extra_nodes
            ),
            (1, 3, 1)
        );
        assert!(!p.pools[0].capped_by_max);
        // 10 pods of 3000m -> 10 nodes -> max 6; have 8 -> add 0.
        let w = workload("web", "app", 10.0, 1.0, Resources::new(3000, GI));
        let p = plan(&[spec], &[w], &state("app", 8), 0);
        assert_eq!(
            (
                p.pools[0].nodes_packed,
                p.pools[0].nodes_needed,
                p.pools[0].extra_nodes
            ),
            (10, 6, 0)
        );
        assert!(p.pools[0].capped_by_max);
        assert!(p.pools[0].reasoning.contains("capped by max_nodes"));
    }

    #[test]
    fn balloons_cover_the_gap_between_forecast_and_current_pods() {
        // Forecast 12 replicas of 2000m (2 per node: 6 nodes); 4 run now (2 nodes).
        let spec = pool("app");
        let w = workload("web", "app", 1200.0, 100.0, Resources::new(2000, GI))
            .with_current_replicas(4);
        let p = plan(&[spec], &[w], &state("app", 3), 0);
        let p = &p.pools[0];
        assert_eq!(p.nodes_needed, 6);
        assert_eq!(p.nodes_for_current_pods, 2);
        assert_eq!(p.balloons, 4);
        assert_eq!(p.extra_nodes, 3);
        assert!(
            p.reasoning
                .contains("web forecast 1200.000 / 100.000 per replica -> 12 replica(s) (now 4)"),
            "{}",
            p.reasoning
        );
    }

    #[test]
    fn only_the_pools_own_workloads_count_and_missing_forecasts_are_flagged() {
        let mut shape = workload_shape("web", "app", 1.0, Resources::new(2000, GI));
        shape.min_replicas = 2;
        let w1 = workload_spec(shape);
        let w2 = workload("db", "data", 1.0, 1.0, Resources::new(3000, GI));
        let p = plan(&[pool("app"), pool("data")], &[w1, w2], &BTreeMap::new(), 7);
        assert_eq!(p.computed_at_ms, 7);
        assert_eq!(p.pools[0].nodes_packed, 1, "2 minimum replicas of 2000m");
        assert_eq!(p.pools[0].missing_forecasts, vec!["web".to_string()]);
        assert!(!p.pools[0].is_complete());
        assert_eq!(p.pools[1].nodes_packed, 1);
        assert!(p.pools[1].is_complete());
    }

    #[test]
    fn invalid_input_names_the_field() {
        let mut bad = shape("app");
        bad.daemonset_overhead = Resources::new(5000, 0);
        let e = PoolSpec::try_new(bad).unwrap_err();
        assert!(
            e.to_string().starts_with("daemonset_overhead: (5000m cpu"),
            "{e}"
        );

        let mut bad = shape("app");
        bad.daemonset_pods = 10;
        let e = PoolSpec::try_new(bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            "max_pods_per_node: must leave room for workload pods after 10 DaemonSet pods, got 10"
        );

        let mut bad = shape("app");
        bad.min_nodes = 101;
        let e = PoolSpec::try_new(bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            "min_nodes: must not exceed max_nodes (100), got 101"
        );
        assert!(PoolSpec::try_new(shape("")).is_err());

        let e = WorkloadSpec::try_new(workload_shape("web", "app", 0.0, Resources::default()))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("target_per_replica: must be a finite number > 0"),
            "{e}"
        );
        // Every problem, in field order, for the configuration to report them all.
        let mut bad = workload_shape("web", "app", f64::NAN, Resources::default());
        bad.min_replicas = 9;
        bad.max_replicas = 3;
        let all: Vec<String> = bad.problems().iter().map(ToString::to_string).collect();
        assert_eq!(
            all,
            [
                "target_per_replica: must be a finite number > 0, got NaN",
                "min_replicas: must not exceed max_replicas (3), got 9",
            ]
        );

        // A workload of no listed pool is not planned (the configuration rejects it).
        let w = workload("web", "nowhere", 1.0, 1.0, Resources::default());
        let p = plan(&[pool("app")], &[w], &BTreeMap::new(), 0);
        assert!(p.pools[0].workloads.is_empty());
    }

    #[test]
    fn node_groups_map_to_pools_by_id_then_unambiguous_labels() {
        let p = plan(&[pool("app"), pool("db")], &[], &BTreeMap::new(), 0);
        assert_eq!(
            p.pool_for_node_group("db-asg", None)
                .map(|p| p.spec.name.as_str()),
            Some("db")
        );
        let labels = BTreeMap::from([
            ("pool".to_string(), "app".to_string()),
            ("zone".into(), "a".into()),
        ]);
        assert_eq!(
            p.pool_for_node_group("other", Some(&labels))
                .map(|p| p.spec.name.as_str()),
            Some("app")
        );
        assert!(p.pool_for_node_group("other", None).is_none());
        assert!(p
            .pool_for_node_group("other", Some(&BTreeMap::new()))
            .is_none());
    }

    #[test]
    fn balloon_value_yields_exactly_the_count() {
        for target in [10u64, 11, 17, 100, 250, 1000, 1500, 2333, 1_000_000] {
            let b = Balloon::try_new(target).unwrap();
            for count in [0u32, 1, 2, 3, 9, 10, 11, 99, 1000, 65_535] {
                let v = b.served_milli(count);
                assert_eq!(
                    hpa_replicas(v, target),
                    u64::from(count),
                    "target {target}m count {count}"
                );
                // Rounding by up to the margin either way keeps the count.
                if count > 0 {
                    let m = b.rounding_margin_milli();
                    assert_eq!(hpa_replicas(v + m, target), u64::from(count));
                    assert_eq!(hpa_replicas(v - m, target), u64::from(count));
                }
                // Through a float and back to milli-units, rounding up or to nearest.
                let f = b.served_value(count);
                for milli in [(f * 1000.0).ceil(), (f * 1000.0).round()] {
                    assert_eq!(
                        hpa_replicas(milli as u64, target),
                        u64::from(count),
                        "float path, target {target}m count {count}"
                    );
                }
            }
        }
        // The naive count × target breaks on one milli-unit of rounding up.
        assert_eq!(hpa_replicas(3 * 1000 + 1, 1000), 4);
        assert_eq!(Balloon::try_new(1000).unwrap().served_milli(3), 2501);
        assert_eq!(Balloon::try_new(1000).unwrap().served_quantity(3), "2501m");
        assert!(Balloon::try_new(0).is_err());
        assert!(Balloon::try_new(9).is_err());
    }

    proptest::proptest! {
        #[test]
        fn balloon_count_survives_rounding(count in 0u32..100_000, target in 10u64..10_000_000) {
            let b = Balloon::try_new(target).unwrap();
            let v = b.served_milli(count);
            proptest::prop_assert_eq!(hpa_replicas(v, target), u64::from(count));
            let f = b.served_value(count);
            proptest::prop_assert_eq!(hpa_replicas((f * 1000.0).ceil() as u64, target), u64::from(count));
        }

        #[test]
        fn packing_never_overfills_and_never_loses_pods(
            reqs in proptest::collection::vec((1u64..5000, 1u64..(20 * GI), 0u32..30), 1..6)
        ) {
            let room = Resources::new(4000, 16 * GI);
            let names: Vec<String> = (0..reqs.len()).map(|i| format!("w{i}")).collect();
            let groups: Vec<(&str, Resources, u32)> = reqs
                .iter()
                .zip(&names)
                .map(|(&(c, m, n), name)| (name.as_str(), Resources::new(c, m), n))
                .collect();
            let p = pack_pods(&groups, room, 8);
            let placed: u64 = groups.iter().filter(|g| g.1.fits_in(room)).map(|g| u64::from(g.2)).sum();
            let dropped: u64 = p.unschedulable.iter().map(|u| u64::from(u.pods)).sum();
            let total: u64 = groups.iter().map(|g| u64::from(g.2)).sum();
            proptest::prop_assert_eq!(placed + dropped, total);
            // Lower bounds: total requests and pod slots.
            let lb_cpu = p.requested.cpu_milli.div_ceil(room.cpu_milli);
            let lb_mem = p.requested.memory_bytes.div_ceil(room.memory_bytes);
            let lb_pods = placed.div_ceil(8);
            proptest::prop_assert!(u64::from(p.nodes) >= lb_cpu.max(lb_mem).max(lb_pods));
            // Upper bound: never more nodes than pods.
            proptest::prop_assert!(u64::from(p.nodes) <= placed);
        }
    }
}
