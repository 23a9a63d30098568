//! Node-pool recommendations in the engine loop.
//!
//! Every step, after the signals are forecast, each configured workload's forecast
//! is taken at now + its pool's provisioning delay + its pod start-up (the same
//! rule as the served value, over that longer horizon: [`Tracker::value_ahead`]),
//! the pools' current nodes and the workloads' current replicas come from a
//! [`ClusterLookup`] (Kubernetes in production, [`StaticCluster`] in tests), and
//! [`crate::plan::nodepool::plan`] packs the forecast pods into nodes. The pools and
//! workloads were checked when the configuration was loaded; the one thing checked
//! here is what comes from the cluster, a pool's allocatable read from its nodes,
//! against the pool's DaemonSet overhead. The plan goes
//! into the step's one snapshot twice over: as the external metrics
//! `prescale_nodepool_nodes` and `prescale_nodepool_balloons` (label `nodepool`),
//! and whole as [`Snapshot::plan`], which the expander and the CapacityBuffer writer
//! read.
//!
//! [`Tracker::value_ahead`]: crate::plan::Tracker::value_ahead
//! [`Snapshot::plan`]: crate::snapshot::Snapshot::plan

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use super::Core;
use crate::config::nodepools::{Planning, Pool, Workload};
use crate::plan::nodepool::{self, Plan, PoolState, Resources, WorkloadSpec};
use crate::series::Labels;
use crate::snapshot::{MetricEntry, SeriesDetail, SeriesEntry, Status};

/// External metric: the nodes each pool should have, shaped for an `AverageValue`
/// HPA target (see [`Balloon`](crate::plan::nodepool::Balloon)).
pub const NODES_METRIC: &str = "prescale_nodepool_nodes";
/// External metric: the node-sized placeholder pods each pool should run.
pub const BALLOONS_METRIC: &str = "prescale_nodepool_balloons";
/// The label that names the pool in both metrics.
pub const POOL_LABEL: &str = "nodepool";
/// How long a published recommendation may be served without a newer plan (the
/// engine plans every step; this only bites when it is stuck): as long as the
/// expander trusts a plan by default.
pub const PLAN_TTL_MS: i64 = crate::expander::DEFAULT_MAX_PLAN_AGE_MS;

/// Why the node-pool state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster's state is not known yet (the watched index has not completed its
    /// first list, or a test double has none). Watch errors themselves are handled by
    /// the watcher's retries and never reach here.
    #[error("{what}: {message}")]
    Lookup {
        /// What was being read.
        what: String,
        /// Why it is not known.
        message: String,
    },
}

/// Result with this module's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed, sendable future (the lookup trait is object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a pool's nodes are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolQuery {
    /// The pool.
    pub name: String,
    /// With `node_group_ids`: nodes whose value of this label is one of the ids.
    pub node_group_label: Option<String>,
    /// The pool's node group ids.
    pub node_group_ids: Vec<String>,
    /// Labels all of the pool's nodes carry.
    pub node_labels: BTreeMap<String, String>,
}

/// How a workload's pods are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaQuery {
    /// The workload.
    pub workload: String,
    /// Its namespace.
    pub namespace: String,
    /// Labels its pods carry.
    pub pod_labels: BTreeMap<String, String>,
}

/// What the cluster says about one pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolObservation {
    /// Nodes of the pool (ready or not: a joining node is capacity on its way).
    pub nodes: u32,
    /// The smallest allocatable among them (cpu and memory taken separately);
    /// `None` without nodes.
    pub allocatable: Option<Resources>,
}

/// What the cluster says, at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// Per pool name; a pool missing here could not be read.
    pub pools: BTreeMap<String, PoolObservation>,
    /// Running (non-terminated) pods per workload name.
    pub replicas: BTreeMap<String, u32>,
}

/// The Kubernetes look-ups the node-pool plan needs.
pub trait ClusterLookup: Send + Sync {
    /// Nodes per pool and pods per workload.
    ///
    /// # Errors
    /// When the cluster cannot be asked.
    fn observe<'a>(
        &'a self,
        pools: &'a [PoolQuery],
        workloads: &'a [ReplicaQuery],
    ) -> BoxFuture<'a, Result<Observation>>;
}

/// An in-memory cluster: tests, and runs without Kubernetes (nothing observed).
#[derive(Debug, Default)]
pub struct StaticCluster {
    state: Mutex<Option<Observation>>,
}

impl StaticCluster {
    /// A cluster that answers `observation` (or fails when `None`).
    pub fn new(observation: Option<Observation>) -> Self {
        Self {
            state: Mutex::new(observation),
        }
    }

    /// Changes what the cluster answers from now on.
    pub fn set(&self, observation: Option<Observation>) {
        if let Ok(mut s) = self.state.lock() {
            *s = observation;
        }
    }
}

impl ClusterLookup for StaticCluster {
    fn observe<'a>(
        &'a self,
        _pools: &'a [PoolQuery],
        _workloads: &'a [ReplicaQuery],
    ) -> BoxFuture<'a, Result<Observation>> {
        let answer = self.state.lock().ok().and_then(|s| s.clone());
        Box::pin(async move {
            answer.ok_or_else(|| Error::Lookup {
                what: "static cluster".into(),
                message: "no observation set".into(),
            })
        })
    }
}

/// The configured pools and workloads, and how to plan them from a [`Core`].
#[derive(Debug, Clone)]
pub struct Planner {
    pools: Vec<Pool>,
    workloads: Vec<Workload>,
}

/// What one planning pass produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The plan of every pool that could be planned; `None` when none could.
    pub plan: Option<Plan>,
    /// The two metrics, to add to the snapshot.
    pub metrics: Vec<(String, MetricEntry)>,
}

impl Planner {
    /// A planner for the configuration's built node-pool sections
    /// ([`crate::config::Config::planning`]).
    pub fn new(planning: Planning) -> Self {
        Self {
            pools: planning.pools,
            workloads: planning.workloads,
        }
    }

    /// The look-ups the pools need.
    pub fn pool_queries(&self) -> Vec<PoolQuery> {
        self.pools
            .iter()
            .map(|p| PoolQuery {
                name: p.name().to_string(),
                node_group_label: p.node_group_label().map(str::to_string),
                node_group_ids: p.node_group_ids().to_vec(),
                node_labels: p.node_labels().clone(),
            })
            .collect()
    }

    /// The look-ups the workloads need (those with a `replicas` selector).
    pub fn replica_queries(&self) -> Vec<ReplicaQuery> {
        self.workloads
            .iter()
            .filter_map(|w| {
                w.replicas().map(|r| ReplicaQuery {
                    workload: w.name().to_string(),
                    namespace: r.namespace.clone(),
                    pod_labels: r.pod_labels.clone(),
                })
            })
            .collect()
    }

    /// Plans every pool at `now_ms` from the core's forecasts and what the cluster
    /// last said (`None`: never read; pools then count as having `min_nodes`, and
    /// workloads as running `min_replicas`).
    pub fn plan(&self, core: &Core, now_ms: i64, observed: Option<&Observation>) -> Outcome {
        let mut specs = Vec::new();
        let mut skipped: BTreeMap<&str, String> = BTreeMap::new();
        let mut state = BTreeMap::new();
        // The first pool whose nodes are too small for its DaemonSets: nothing is
        // planned then (the last plan stands and ages out).
        let mut failed = None;
        for p in &self.pools {
            let seen = observed.and_then(|o| o.pools.get(p.name()));
            let allocatable = p.allocatable().or_else(|| seen.and_then(|s| s.allocatable));
            let Some(allocatable) = allocatable else {
                skipped.insert(
                    p.name(),
                    "allocatable is not configured and the pool has no nodes to read it from"
                        .into(),
                );
                continue;
            };
            if let Some(s) = seen {
                state.insert(
                    p.name().to_string(),
                    PoolState {
                        current_nodes: s.nodes,
                    },
                );
            }
            match p.spec(allocatable) {
                Ok(spec) => specs.push(spec),
                Err(e) if failed.is_none() => {
                    failed = Some(format!("pools[{}] ({}).{e}", specs.len(), p.name()));
                }
                Err(_) => {}
            }
        }
        let workloads: Vec<WorkloadSpec> = self
            .workloads
            .iter()
            .filter_map(|w| {
                let spec = w.spec();
                let pool = specs.iter().find(|s| s.name == spec.pool)?;
                let horizon_ms = i64::try_from(pool.provisioning_delay_s)
                    .unwrap_or(i64::MAX / 1000)
                    .saturating_mul(1000)
                    .saturating_add(w.pod_startup_ms());
                let forecast = core.value_ahead(w.signal().as_str(), w.series(), horizon_ms);
                let current = observed
                    .and_then(|o| o.replicas.get(w.name()).copied())
                    .unwrap_or(spec.min_replicas);
                Some(
                    spec.clone()
                        .with_forecast(forecast)
                        .with_current_replicas(current),
                )
            })
            .collect();
        let plan = match failed {
            None => Some(nodepool::plan(&specs, &workloads, &state, now_ms)),
            Some(e) => {
                // A configured allocatable was checked at load, but one read from
                // the nodes can be smaller than the DaemonSet overhead.
                tracing::warn!(error = %e, "node-pool plan failed");
                for p in &self.pools {
                    skipped
                        .entry(p.name())
                        .or_insert_with(|| format!("the plan failed: {e}"));
                }
                None
            }
        };

        let mut nodes = Vec::with_capacity(self.pools.len());
        let mut balloons = Vec::with_capacity(self.pools.len());
        for p in &self.pools {
            let labels: Labels = [(POOL_LABEL.to_string(), p.name().to_string())].into();
            let pool_plan = plan.as_ref().and_then(|pl| pl.pool(p.name()));
            let (status, reason, counts) = match (pool_plan, skipped.get(p.name())) {
                (Some(pp), _) if pp.is_complete() => (
                    Status::Ok,
                    pp.reasoning.clone(),
                    Some((pp.nodes_needed, pp.balloons)),
                ),
                (Some(pp), _) => (
                    Status::Failed,
                    format!(
                        "no forecast for {}: {}",
                        pp.missing_forecasts.join(", "),
                        pp.reasoning
                    ),
                    None,
                ),
                (None, Some(why)) => (Status::Failed, why.clone(), None),
                (None, None) => (Status::Failed, "not planned".into(), None),
            };
            let balloon = p.balloon();
            let value = |count: Option<u32>| count.map_or(f64::NAN, |n| balloon.served_value(n));
            let entry = |v: f64| {
                Arc::new(SeriesEntry {
                    labels: labels.clone(),
                    status,
                    value: v,
                    timestamp_ms: now_ms,
                    window_s: 60,
                    expires_ms: now_ms.saturating_add(PLAN_TTL_MS),
                    detail: SeriesDetail {
                        model: "nodepool-plan".into(),
                        reason: Some(reason.clone()),
                        ..SeriesDetail::default()
                    },
                })
            };
            nodes.push(entry(value(counts.map(|c| c.0))));
            balloons.push(entry(value(counts.map(|c| c.1))));
        }
        let metric = |series| MetricEntry {
            namespaces: None,
            series,
            error: None,
            custom: None,
        };
        Outcome {
            plan,
            metrics: vec![
                (NODES_METRIC.to_string(), metric(nodes)),
                (BALLOONS_METRIC.to_string(), metric(balloons)),
            ],
        }
    }
}

/// The node-pool part of the engine: the planner, the lookup, and the plan to
/// publish.
pub struct NodePools {
    planner: Arc<Planner>,
    lookup: Arc<dyn ClusterLookup>,
    /// The last plan made: published with every snapshot until a newer one.
    plan: Option<Arc<Plan>>,
    pool_queries: Vec<PoolQuery>,
    replica_queries: Vec<ReplicaQuery>,
    observe_every_ms: i64,
    last_attempt_ms: Option<i64>,
    observed: Option<Observation>,
}

impl std::fmt::Debug for NodePools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodePools")
            .field("planner", &self.planner)
            .field("observed", &self.observed)
            .field("plan", &self.plan)
            .finish()
    }
}

/// How often the cluster is asked by default: node and pod counts change on the
/// scale of the HPA's sync period, and a list of every pool's nodes is not free.
pub const DEFAULT_OBSERVE_EVERY_MS: i64 = 15_000;

impl NodePools {
    /// Plans `planner`'s pools, reading the cluster with `lookup`.
    pub fn new(planner: Planner, lookup: Arc<dyn ClusterLookup>) -> Self {
        Self {
            pool_queries: planner.pool_queries(),
            replica_queries: planner.replica_queries(),
            planner: Arc::new(planner),
            lookup,
            plan: None,
            observe_every_ms: DEFAULT_OBSERVE_EVERY_MS,
            last_attempt_ms: None,
            observed: None,
        }
    }

    /// Asks the cluster every `ms` instead of the default.
    pub fn with_observe_every_ms(mut self, ms: i64) -> Self {
        self.observe_every_ms = ms.max(0);
        self
    }

    /// Reads the cluster when due; on failure the last answer is kept.
    pub async fn refresh(&mut self, now_ms: i64) {
        let due = self
            .last_attempt_ms
            .is_none_or(|t| now_ms - t >= self.observe_every_ms);
        if !due {
            return;
        }
        self.last_attempt_ms = Some(now_ms);
        match self
            .lookup
            .observe(&self.pool_queries, &self.replica_queries)
            .await
        {
            Ok(o) => self.observed = Some(o),
            Err(e) => tracing::warn!(
                error = %e,
                kept = self.observed.is_some(),
                "cannot read node pools and replicas; planning with the last answer"
            ),
        }
    }

    /// What a blocking planning pass needs: the planner and the last observation.
    pub fn input(&self) -> (Arc<Planner>, Option<Observation>) {
        (Arc::clone(&self.planner), self.observed.clone())
    }

    /// Takes a pass's plan and returns the plan to publish: that one, or when the
    /// pass planned nothing the previous one, which ages out (readers judge it by
    /// its `computed_at_ms`).
    pub fn keep(&mut self, plan: Option<Plan>) -> Option<Arc<Plan>> {
        if let Some(p) = plan {
            self.plan = Some(Arc::new(p));
        }
        self.plan.clone()
    }

    /// The last plan made, if any.
    pub fn plan(&self) -> Option<Arc<Plan>> {
        self.plan.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Metrics, Planned, SignalSettings};
    use crate::forecast::ModelSpec;
    use crate::plan::{ServePolicy, TrackerSettings};
    use crate::series::LabeledSeries;
    use crate::source::Range;

    const STEP: i64 = 60_000;

    fn settings() -> SignalSettings {
        SignalSettings {
            shadow: None,
            name: "rps".into(),
            query: "rps".into(),
            history_ms: 100 * STEP,
            max_staleness_ms: 5 * STEP,
            namespaces: None,
            custom: None,
            tracker: TrackerSettings {
                spec: ModelSpec::by_name("seasonal-naive").unwrap(),
                step_ms: STEP,
                policy: ServePolicy {
                    lead_steps: 1,
                    lead_ms: 0,
                    tolerance: 0.0,
                    quantile: 0.9,
                    reactive_floor: true,
                },
                history_steps: 100,
                refit_every_steps: 10,
                // Always warming: the value ahead is the latest observation.
                min_history_steps: 1_000,
                fit_steps: 1,
                spread_refits: false,
            },
        }
    }

    fn core_with(values: &[(&str, f64)]) -> Core {
        let mut core = Core::new(vec![settings()], Metrics::unregistered());
        let range = Range::try_new(0, 9 * STEP, STEP).unwrap();
        let fetched = values
            .iter()
            .map(|(service, v)| {
                let mut series = range.empty_series();
                series.values.fill(*v);
                LabeledSeries {
                    labels: [("service".to_string(), service.to_string())].into(),
                    series,
                }
            })
            .collect();
        let planned = Planned {
            signal: 0,
            query: "rps".into(),
            range,
        };
        core.apply(
            9 * STEP,
            vec![(planned, Ok(fetched), std::time::Duration::ZERO)],
        );
        core
    }

    fn planner() -> Planner {
        planner_with("", "series: { service: web },")
    }

    /// The planner of pool `app` (with `pool_extra` fields) and workload `web`
    /// (with `workload_extra`), as a configuration builds them.
    fn planner_with(pool_extra: &str, workload_extra: &str) -> Planner {
        let text = format!(
            "prometheus: {{ url: http://127.0.0.1:9090 }}
signals: [{{ name: rps, query: rps }}]
nodepools:
  - {{ name: app, node_labels: {{ pool: app }}, max_nodes: 10, min_nodes: 1 {pool_extra} }}
workloads:
  - {{ name: web, signal: rps, {workload_extra} target_per_replica: 100,
       pod_requests: {{ cpu: 1, memory: 1Gi }}, pool: app, max_replicas: 50,
       replicas: {{ namespace: shop, pod_labels: {{ app: web }} }} }}
"
        );
        Planner::new(crate::config::Config::from_yaml(&text).unwrap().planning)
    }

    fn series<'a>(o: &'a Outcome, metric: &str) -> &'a SeriesEntry {
        let (_, m) = o.metrics.iter().find(|(n, _)| n == metric).unwrap();
        assert_eq!(m.series.len(), 1);
        &m.series[0]
    }

    #[test]
    fn allocatable_and_counts_come_from_the_cluster() {
        // The web series; another service's is ignored.
        let core2 = core_with(&[("web", 500.0), ("other", 99_999.0)]);
        let observed = Observation {
            pools: BTreeMap::from([(
                "app".to_string(),
                PoolObservation {
                    nodes: 2,
                    allocatable: Some(Resources::new(4000, 8 << 30)),
                },
            )]),
            replicas: BTreeMap::from([("web".to_string(), 2)]),
        };
        let o = planner().plan(&core2, 42, Some(&observed));
        let plan = o.plan.as_ref().unwrap();
        let app = plan.pool("app").unwrap();
        // 500 / 100 -> 5 pods of 1 cpu on 4-cpu nodes: 2 nodes; the 2 running: 1.
        assert_eq!(app.workloads[0].forecast, Some(500.0));
        assert_eq!(app.spec.allocatable, Resources::new(4000, 8 << 30));
        assert_eq!(
            (
                app.nodes_needed,
                app.current_nodes,
                app.extra_nodes,
                app.balloons
            ),
            (2, 2, 0, 1)
        );
        let nodes = series(&o, NODES_METRIC);
        assert_eq!(nodes.status, Status::Ok);
        assert_eq!(nodes.labels[POOL_LABEL], "app");
        assert_eq!(nodes.timestamp_ms, 42);
        // count x 1000m - 499m: 2 nodes, 1 balloon.
        assert!((nodes.value - 1.501).abs() < 1e-9, "{}", nodes.value);
        assert!((series(&o, BALLOONS_METRIC).value - 0.501).abs() < 1e-9);
    }

    #[test]
    fn matching_series_are_summed() {
        let core = core_with(&[("web", 300.0), ("other", 7.0)]);
        let p = planner_with("", "");
        let o = p.plan(
            &core,
            0,
            Some(&Observation {
                pools: BTreeMap::from([(
                    "app".to_string(),
                    PoolObservation {
                        nodes: 1,
                        allocatable: Some(Resources::new(4000, 8 << 30)),
                    },
                )]),
                replicas: BTreeMap::new(),
            }),
        );
        let app = o.plan.as_ref().unwrap().pool("app").unwrap().clone();
        assert_eq!(app.workloads[0].forecast, Some(307.0));
        // No replica count observed: the minimum runs.
        assert_eq!(app.workloads[0].current_replicas, 1);
    }

    #[test]
    fn a_pool_without_a_known_shape_is_failed_not_guessed() {
        let core = core_with(&[("web", 500.0)]);
        let o = planner().plan(&core, 0, None);
        assert!(o.plan.as_ref().unwrap().pool("app").is_none());
        for metric in [NODES_METRIC, BALLOONS_METRIC] {
            let s = series(&o, metric);
            assert_eq!(s.status, Status::Failed);
            assert!(
                s.detail
                    .reason
                    .as_deref()
                    .unwrap()
                    .starts_with("allocatable is not configured"),
                "{:?}",
                s.detail.reason
            );
        }
    }

    #[tokio::test]
    async fn the_plan_is_published_in_the_snapshot_of_its_metrics() {
        use crate::clock::SimClock;
        use crate::engine::{Engine, Reload};
        use crate::series::Series;
        use crate::snapshot::Shared;
        use crate::source::file::FileSource;

        let now = 9 * STEP;
        let web = LabeledSeries {
            labels: [("service".to_string(), "web".to_string())].into(),
            series: Series {
                start_ms: 0,
                step_ms: STEP,
                values: vec![500.0; 10],
            },
        };
        let source = FileSource::new(now).with_recording("rps", vec![web]);
        let clock = Arc::new(SimClock::new(now));
        let shared = Shared::new();
        // DaemonSets take 100m of each node: nodes read with less cannot be planned.
        let p = planner_with(
            ", daemonset_overhead: { cpu: 100m }",
            "series: { service: web },",
        );
        let seen = |cpu_milli| Observation {
            pools: BTreeMap::from([(
                "app".to_string(),
                PoolObservation {
                    nodes: 2,
                    allocatable: Some(Resources::new(cpu_milli, 8 << 30)),
                },
            )]),
            replicas: BTreeMap::new(),
        };
        let cluster = Arc::new(StaticCluster::new(Some(seen(4000))));
        let mut engine = Engine::new(
            vec![settings()],
            Arc::new(source),
            shared.clone(),
            clock.clone(),
            crate::engine::Metrics::unregistered(),
        )
        .with_nodepools(NodePools::new(p, cluster.clone()).with_observe_every_ms(0));

        engine.step().await.unwrap();
        let first = shared.load();
        let plan = first.plan.clone().expect("a plan");
        assert_eq!(plan.computed_at_ms, first.published_ms);
        let nodes = &first.metrics[NODES_METRIC].series[0];
        assert_eq!(nodes.timestamp_ms, plan.computed_at_ms);
        assert_eq!(nodes.status, Status::Ok);

        // A pass that cannot plan keeps the last plan (it ages out), beside its
        // failed metrics.
        cluster.set(Some(seen(50)));
        clock.advance(STEP);
        engine.step().await.unwrap();
        let second = shared.load();
        assert_eq!(second.published_ms, now + STEP);
        assert!(Arc::ptr_eq(second.plan.as_ref().unwrap(), &plan));
        assert_eq!(
            second.metrics[NODES_METRIC].series[0].status,
            Status::Failed
        );
        assert_eq!(
            second.metrics[NODES_METRIC].series[0].detail.reason.as_deref(),
            Some("the plan failed: pools[0] (app).daemonset_overhead: (100m cpu, 0.00Gi memory) exceeds the node's allocatable (50m cpu, 8.00Gi memory)")
        );

        // A reload publishes at once, and the plan stands.
        engine.reload(Reload {
            signals: vec![settings()],
            source: None,
        });
        assert!(Arc::ptr_eq(shared.load().plan.as_ref().unwrap(), &plan));
    }
}
