//! The cluster state prescale reads, kept in memory by watches: pods (for Pods
//! metrics and workload replicas) and nodes (for node-pool sizes). Requests and
//! engine steps read these indexes and never wait on the kube-apiserver.
//!
//! Decisions worth knowing:
//! - Each kind is listed once and then watched (kube-runtime's `watcher`, with its
//!   default backoff on errors); a re-list replaces the index whole when it is
//!   complete (`InitDone`), so a half-read list is never served.
//! - Only what prescale reads is kept: a pod's labels, phase, deletion mark and
//!   controller; a node's labels and allocatable cpu and memory. A pod costs a few
//!   hundred bytes, whatever its spec.
//! - Until the first list is complete the indexes are *not synced*: lookups answer
//!   an error saying so (a Pods metric then answers 503, the engine keeps the
//!   last node-pool observation), and `/readyz` is not ready. After that a watch
//!   that breaks keeps the last state while it reconnects, as an informer does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use ::kube::api::Api;
use ::kube::runtime::watcher::{self, Event};
use ::kube::runtime::WatchStreamExt;
use ::kube::Client;
use k8s_openapi::api::core::v1::{Node, Pod as KubePod};
use tokio_stream::StreamExt;

use crate::api::auth::BoxFuture;
use crate::api::pods::{self, current, Phase, Pod, PodLookup};
use crate::api::selector::{self, Selector};
use crate::custom;
use crate::engine::nodepools::{
    self, ClusterLookup, Observation, PoolObservation, PoolQuery, ReplicaQuery,
};
use crate::plan::nodepool::Resources;
use crate::quantity;
use crate::series::Labels;

/// A pod as prescale reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlimPod {
    /// Its labels, matched by selectors.
    pub labels: Labels,
    /// Its phase.
    pub phase: Phase,
    /// It has a deletion timestamp.
    pub deleting: bool,
    /// Its controller (kind, name), if any.
    pub controller: Option<(String, String)>,
}

impl SlimPod {
    /// What prescale keeps of `pod`; `None` without a name or namespace.
    pub fn from_pod(pod: &KubePod) -> Option<(String, String, Self)> {
        let name = pod.metadata.name.clone()?;
        let namespace = pod.metadata.namespace.clone()?;
        let controller = pod
            .metadata
            .owner_references
            .as_ref()
            .and_then(|refs| refs.iter().find(|r| r.controller == Some(true)))
            .map(|r| (r.kind.clone(), r.name.clone()));
        Some((
            namespace,
            name,
            Self {
                labels: pod.metadata.labels.clone().unwrap_or_default().into(),
                phase: Phase::parse(pod.status.as_ref().and_then(|s| s.phase.as_deref())),
                deleting: pod.metadata.deletion_timestamp.is_some(),
                controller,
            },
        ))
    }

    /// The pod as a Pods metric answers for it; `None` when not current.
    fn answered(&self, name: &str) -> Option<Pod> {
        let hash = self.labels.get("pod-template-hash").map(String::as_str);
        let owners = self
            .controller
            .as_ref()
            .map(|(kind, owner)| custom::owners(kind, owner, hash))
            .unwrap_or_default();
        current(name, self.phase, self.deleting, owners)
    }
}

/// A node as prescale reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlimNode {
    /// Its labels.
    pub labels: Labels,
    /// Its allocatable cpu and memory, when readable.
    pub allocatable: Option<Resources>,
}

impl SlimNode {
    /// What prescale keeps of `node`; `None` without a name.
    pub fn from_node(node: &Node) -> Option<(String, String, Self)> {
        let name = node.metadata.name.clone()?;
        Some((
            String::new(),
            name,
            Self {
                labels: node.metadata.labels.clone().unwrap_or_default().into(),
                allocatable: node_allocatable(node),
            },
        ))
    }
}

/// Objects of one kind by namespace (empty for cluster-scoped ones) and name.
type ByNamespace<T> = HashMap<String, HashMap<String, T>>;

/// One kind's index, fed by its watch.
#[derive(Debug)]
pub struct Index<T> {
    kind: &'static str,
    objects: RwLock<ByNamespace<T>>,
    /// Objects of a re-list in progress, swapped in at `InitDone`.
    listing: std::sync::Mutex<Option<ByNamespace<T>>>,
    synced: AtomicBool,
}

impl<T: Clone> Index<T> {
    /// An empty, unsynced index of `kind` (for messages: "pods", "nodes").
    pub fn new(kind: &'static str) -> Self {
        Self {
            kind,
            objects: RwLock::new(HashMap::new()),
            listing: std::sync::Mutex::new(None),
            synced: AtomicBool::new(false),
        }
    }

    /// Whether the first complete list has been read.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Applies one watch event, objects already slimmed to
    /// `(namespace, name, object)`.
    pub fn apply(&self, event: Event<Option<(String, String, T)>>) {
        match event {
            Event::Init => {
                if let Ok(mut listing) = self.listing.lock() {
                    *listing = Some(HashMap::new());
                }
            }
            Event::InitApply(Some((ns, name, object))) => {
                if let Ok(mut listing) = self.listing.lock() {
                    listing
                        .get_or_insert_with(HashMap::new)
                        .entry(ns)
                        .or_default()
                        .insert(name, object);
                }
            }
            Event::InitDone => {
                let listed = self.listing.lock().ok().and_then(|mut l| l.take());
                if let (Some(listed), Ok(mut objects)) = (listed, self.objects.write()) {
                    *objects = listed;
                }
                if !self.synced.swap(true, Ordering::AcqRel) {
                    tracing::info!(kind = self.kind, objects = self.len(), "watch synced");
                }
            }
            Event::Apply(Some((ns, name, object))) => {
                if let Ok(mut objects) = self.objects.write() {
                    objects.entry(ns).or_default().insert(name, object);
                }
            }
            Event::Delete(Some((ns, name, _))) => {
                if let Ok(mut objects) = self.objects.write() {
                    if let Some(names) = objects.get_mut(&ns) {
                        names.remove(&name);
                        if names.is_empty() {
                            objects.remove(&ns);
                        }
                    }
                }
            }
            Event::InitApply(None) | Event::Apply(None) | Event::Delete(None) => {}
        }
    }

    /// How many objects are indexed.
    pub fn len(&self) -> usize {
        self.objects
            .read()
            .map(|o| o.values().map(HashMap::len).sum())
            .unwrap_or(0)
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with every object of `namespace` (`""` for cluster-scoped kinds)
    /// and its name.
    pub fn each_in(&self, namespace: &str, mut f: impl FnMut(&str, &T)) {
        if let Ok(objects) = self.objects.read() {
            if let Some(names) = objects.get(namespace) {
                for (name, object) in names {
                    f(name, object);
                }
            }
        }
    }

    fn not_synced(&self) -> String {
        format!(
            "the {} of the cluster are still being listed (prescale started moments ago, or cannot reach the kube-apiserver)",
            self.kind
        )
    }
}

/// Watches `api` into `index` (each object slimmed by `slim`) until the process
/// ends: errors are logged and the watch retried with backoff.
pub async fn run<K, T>(
    api: Api<K>,
    index: Arc<Index<T>>,
    slim: fn(&K) -> Option<(String, String, T)>,
) where
    K: ::kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    T: Clone,
{
    let config = watcher::Config::default().any_semantic();
    let stream = watcher::watcher(api, config).default_backoff();
    tokio::pin!(stream);
    let mut failing = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                if failing {
                    failing = false;
                    tracing::info!(kind = index.kind, "watch recovered");
                }
                index.apply(slimmed(event, slim));
            }
            Err(e) => {
                if !failing {
                    failing = true;
                    tracing::warn!(kind = index.kind, error = %e, "watch failed: the last state is kept while it retries");
                }
            }
        }
    }
}

/// The event with each object slimmed by `slim`.
fn slimmed<K, T>(event: Event<K>, slim: fn(&K) -> Option<T>) -> Event<Option<T>> {
    match event {
        Event::Apply(k) => Event::Apply(slim(&k)),
        Event::Delete(k) => Event::Delete(slim(&k)),
        Event::Init => Event::Init,
        Event::InitApply(k) => Event::InitApply(slim(&k)),
        Event::InitDone => Event::InitDone,
    }
}

/// The watched pods and nodes, and the lookups over them.
#[derive(Debug)]
pub struct Watched {
    /// Pods, when watched.
    pub pods: Option<Arc<Index<SlimPod>>>,
    /// Nodes, when watched.
    pub nodes: Option<Arc<Index<SlimNode>>>,
}

impl Watched {
    /// Starts the watches asked for through `client` (each a task that ends with
    /// the runtime).
    pub fn start(client: &Client, pods: bool, nodes: bool) -> Arc<Self> {
        let pods = pods.then(|| {
            let index = Arc::new(Index::new("pods"));
            let api: Api<KubePod> = Api::all(client.clone());
            tokio::spawn(run(api, Arc::clone(&index), SlimPod::from_pod));
            index
        });
        let nodes = nodes.then(|| {
            let index = Arc::new(Index::new("nodes"));
            let api: Api<Node> = Api::all(client.clone());
            tokio::spawn(run(api, Arc::clone(&index), SlimNode::from_node));
            index
        });
        Arc::new(Self { pods, nodes })
    }

    /// A collector of `prescale_kube_watched_objects{kind}` and
    /// `prescale_kube_watch_synced{kind}`, for the `/metrics` registry.
    pub fn collector(self: &Arc<Self>) -> Box<dyn prometheus_client::collector::Collector> {
        Box::new(WatchCollector(Arc::clone(self)))
    }

    /// Why `/readyz` should wait, if it should: a watch not synced yet.
    pub fn not_ready(&self) -> Option<String> {
        let pods = self.pods.as_ref().filter(|i| !i.is_synced());
        let nodes = self.nodes.as_ref().filter(|i| !i.is_synced());
        match (pods, nodes) {
            (None, None) => None,
            (Some(_), None) => Some("pods not listed yet".to_string()),
            (None, Some(_)) => Some("nodes not listed yet".to_string()),
            (Some(_), Some(_)) => Some("pods and nodes not listed yet".to_string()),
        }
    }
}

#[derive(Debug)]
struct WatchCollector(Arc<Watched>);

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

impl prometheus_client::collector::Collector for WatchCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::gauge::Gauge;
        let objects = Family::<KindLabels, Gauge>::default();
        let synced = Family::<KindLabels, Gauge>::default();
        let record = |kind: &'static str, len: usize, is_synced: bool| {
            objects
                .get_or_create(&KindLabels { kind })
                .set(i64::try_from(len).unwrap_or(i64::MAX));
            synced
                .get_or_create(&KindLabels { kind })
                .set(i64::from(is_synced));
        };
        if let Some(i) = &self.0.pods {
            record("pods", i.len(), i.is_synced());
        }
        if let Some(i) = &self.0.nodes {
            record("nodes", i.len(), i.is_synced());
        }
        let metric = encoder.encode_descriptor(
            "kube_watched_objects",
            "Objects held in memory by the watches (pods, nodes).",
            None,
            objects.metric_type(),
        )?;
        objects.encode(metric)?;
        let metric = encoder.encode_descriptor(
            "kube_watch_synced",
            "Whether a watch's first list is complete (1) or not yet (0).",
            None,
            synced.metric_type(),
        )?;
        synced.encode(metric)
    }
}

/// The current pods of `namespace` that `selector` picks, sorted by name.
pub fn select_pods(index: &Index<SlimPod>, namespace: &str, selector: &Selector) -> Vec<Pod> {
    let mut found = Vec::new();
    index.each_in(namespace, |name, pod| {
        if selector.matches(&pod.labels) {
            found.extend(pod.answered(name));
        }
    });
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

impl PodLookup for Watched {
    fn pods<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a Selector,
        _selector_text: &'a str,
    ) -> BoxFuture<'a, pods::Result<Vec<Pod>>> {
        let answer = match &self.pods {
            None => Err(pods::Error::Unavailable),
            Some(index) if !index.is_synced() => Err(pods::Error::Api {
                namespace: namespace.to_string(),
                message: index.not_synced(),
            }),
            Some(index) => Ok(select_pods(index, namespace, selector)),
        };
        Box::pin(async move { answer })
    }
}

/// A node's allocatable cpu and memory; `None` when either is missing or unreadable.
pub fn node_allocatable(node: &Node) -> Option<Resources> {
    let a = node.status.as_ref()?.allocatable.as_ref()?;
    let cpu = quantity::parse_millicores(&a.get("cpu")?.0).ok()?;
    let memory = quantity::parse_units(&a.get("memory")?.0).ok()?;
    Some(Resources::new(cpu, memory))
}

/// Whether a pool's nodes can be told by their labels: node labels, or node group
/// ids with the label that carries them (ids alone are not guessed).
pub fn findable(pool: &PoolQuery) -> bool {
    !pool.node_labels.is_empty()
        || (pool.node_group_label.is_some() && !pool.node_group_ids.is_empty())
}

/// Whether a node with `labels` belongs to `pool` (its node labels, and its node
/// group label in the pool's ids when it has both).
fn in_pool(pool: &PoolQuery, node: &Labels) -> bool {
    let labelled = pool.node_labels.iter().all(|(k, v)| node.get(k) == Some(v));
    let grouped = match &pool.node_group_label {
        Some(label) if !pool.node_group_ids.is_empty() => node
            .get(label)
            .is_some_and(|id| pool.node_group_ids.iter().any(|g| g == id)),
        _ => true,
    };
    labelled && grouped
}

impl ClusterLookup for Watched {
    fn observe<'a>(
        &'a self,
        pools: &'a [PoolQuery],
        workloads: &'a [ReplicaQuery],
    ) -> nodepools::BoxFuture<'a, nodepools::Result<Observation>> {
        let answer = (|| {
            let mut out = Observation::default();
            let unsynced = |index_kind: String| nodepools::Error::Lookup {
                what: format!("listing {index_kind}"),
                message: "the first list is not complete yet".to_string(),
            };
            if pools.iter().any(findable) {
                let nodes = self
                    .nodes
                    .as_ref()
                    .ok_or_else(|| unsynced("nodes".into()))?;
                if !nodes.is_synced() {
                    return Err(unsynced("nodes".into()));
                }
                for p in pools {
                    if !findable(p) {
                        continue;
                    }
                    let mut count = 0u32;
                    let mut smallest: Option<Resources> = None;
                    nodes.each_in("", |_, node| {
                        if in_pool(p, &node.labels) {
                            count = count.saturating_add(1);
                            if let Some(a) = node.allocatable {
                                smallest = Some(match smallest {
                                    None => a,
                                    Some(s) => Resources::new(
                                        s.cpu_milli.min(a.cpu_milli),
                                        s.memory_bytes.min(a.memory_bytes),
                                    ),
                                });
                            }
                        }
                    });
                    out.pools.insert(
                        p.name.clone(),
                        PoolObservation {
                            nodes: count,
                            allocatable: smallest,
                        },
                    );
                }
            }
            if !workloads.is_empty() {
                let pods = self.pods.as_ref().ok_or_else(|| unsynced("pods".into()))?;
                if !pods.is_synced() {
                    return Err(unsynced("pods".into()));
                }
                for w in workloads {
                    let selector = Selector {
                        requirements: w
                            .pod_labels
                            .iter()
                            .map(|(k, v)| selector::Requirement {
                                key: k.clone(),
                                op: selector::Op::Equals(v.clone()),
                            })
                            .collect(),
                    };
                    let n = select_pods(pods, &w.namespace, &selector).len();
                    out.replicas
                        .insert(w.workload.clone(), u32::try_from(n).unwrap_or(u32::MAX));
                }
            }
            Ok(out)
        })();
        Box::pin(async move { answer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use std::collections::BTreeMap;

    fn pod(ns: &str, name: &str, labels: &[(&str, &str)], phase: &str) -> KubePod {
        let mut p = KubePod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some(ns.into());
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "web-6b7c8d".into(),
            uid: "2".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            ..PodStatus::default()
        });
        p
    }

    fn slim(p: &KubePod) -> Event<Option<(String, String, SlimPod)>> {
        Event::Apply(SlimPod::from_pod(p))
    }

    fn names(pods: &[Pod]) -> Vec<&str> {
        pods.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn the_index_follows_a_watch_and_swaps_a_relist_in_whole() {
        let index = Index::new("pods");
        let web = [("app", "web"), ("pod-template-hash", "6b7c8d")];
        let sel = selector::parse("app=web").unwrap();
        assert!(!index.is_synced());
        index.apply(Event::Init);
        index.apply(Event::InitApply(SlimPod::from_pod(&pod(
            "shop", "web-b", &web, "Running",
        ))));
        assert!(
            select_pods(&index, "shop", &sel).is_empty(),
            "a list in progress is not served"
        );
        index.apply(Event::InitApply(SlimPod::from_pod(&pod(
            "shop", "web-a", &web, "Pending",
        ))));
        index.apply(Event::InitDone);
        assert!(index.is_synced());
        let got = select_pods(&index, "shop", &sel);
        assert_eq!(names(&got), ["web-a", "web-b"]);
        assert!(got[0].pending);
        assert_eq!(got[1].owners[1].name, "web", "the Deployment from the hash");

        index.apply(slim(&pod("shop", "web-c", &web, "Running")));
        index.apply(slim(&pod("shop", "web-b", &web, "Failed")));
        index.apply(slim(&pod("other", "web-d", &web, "Running")));
        index.apply(slim(&pod("shop", "db-0", &[("app", "db")], "Running")));
        assert_eq!(
            names(&select_pods(&index, "shop", &sel)),
            ["web-a", "web-c"]
        );
        index.apply(Event::Delete(SlimPod::from_pod(&pod(
            "shop", "web-a", &web, "Running",
        ))));
        assert_eq!(names(&select_pods(&index, "shop", &sel)), ["web-c"]);
        assert_eq!(index.len(), 4);

        // A re-list: what it does not list is gone once it is done, not before.
        index.apply(Event::Init);
        index.apply(Event::InitApply(SlimPod::from_pod(&pod(
            "shop", "web-e", &web, "Running",
        ))));
        assert_eq!(names(&select_pods(&index, "shop", &sel)), ["web-c"]);
        index.apply(Event::InitDone);
        assert_eq!(names(&select_pods(&index, "shop", &sel)), ["web-e"]);
        assert_eq!(index.len(), 1);
        assert!(select_pods(&index, "other", &sel).is_empty());
    }

    #[tokio::test]
    async fn lookups_refuse_until_the_first_list_is_complete() {
        let index = Arc::new(Index::new("pods"));
        let watched = Watched {
            pods: Some(Arc::clone(&index)),
            nodes: None,
        };
        let sel = selector::parse("app=web").unwrap();
        let err = watched.pods("shop", &sel, "app=web").await.unwrap_err();
        assert!(err.to_string().contains("still being listed"), "{err}");
        assert_eq!(watched.not_ready().as_deref(), Some("pods not listed yet"));
        index.apply(Event::Init);
        index.apply(Event::InitDone);
        assert_eq!(watched.pods("shop", &sel, "app=web").await, Ok(vec![]));
        assert_eq!(watched.not_ready(), None);
        let none = Watched {
            pods: None,
            nodes: None,
        };
        assert_eq!(
            none.pods("shop", &sel, "").await,
            Err(pods::Error::Unavailable)
        );
    }

    #[test]
    fn pools_are_told_by_node_labels_and_node_group_ids() {
        let labels = |pairs: &[(&str, &str)]| -> Labels {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let group = "eks.amazonaws.com/nodegroup";
        let pool = PoolQuery {
            name: "app".into(),
            node_group_label: Some(group.into()),
            node_group_ids: vec!["a".into(), "b".into()],
            node_labels: labels(&[("pool", "app")]).into_inner(),
        };
        assert!(findable(&pool));
        assert!(in_pool(&pool, &labels(&[("pool", "app"), (group, "b")])));
        assert!(!in_pool(&pool, &labels(&[("pool", "app"), (group, "c")])));
        assert!(!in_pool(&pool, &labels(&[("pool", "app")])));
        assert!(!in_pool(&pool, &labels(&[("pool", "db"), (group, "a")])));
        let ids_only = PoolQuery {
            node_labels: Default::default(),
            node_group_label: None,
            ..pool.clone()
        };
        assert!(
            !findable(&ids_only),
            "ids without their label are not guessed"
        );
        let by_group = PoolQuery {
            node_labels: Default::default(),
            ..pool
        };
        assert!(findable(&by_group));
        assert!(in_pool(&by_group, &labels(&[(group, "a")])));
    }

    #[tokio::test]
    async fn pools_and_replicas_are_read_from_the_indexes() {
        let nodes = Arc::new(Index::new("nodes"));
        let pods = Arc::new(Index::new("pods"));
        let node = |name: &str, labels: &[(&str, &str)], cpu: &str, mem: &str| {
            let mut n = Node::default();
            n.metadata.name = Some(name.into());
            n.metadata.labels = Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            n.status = Some(k8s_openapi::api::core::v1::NodeStatus {
                allocatable: Some(BTreeMap::from([
                    (
                        "cpu".to_string(),
                        k8s_openapi::apimachinery::pkg::api::resource::Quantity(cpu.into()),
                    ),
                    (
                        "memory".to_string(),
                        k8s_openapi::apimachinery::pkg::api::resource::Quantity(mem.into()),
                    ),
                ])),
                ..Default::default()
            });
            Event::InitApply(SlimNode::from_node(&n))
        };
        let group = "eks.amazonaws.com/nodegroup";
        nodes.apply(Event::Init);
        nodes.apply(node(
            "n1",
            &[("pool", "app"), (group, "a")],
            "7910m",
            "15Gi",
        ));
        nodes.apply(node("n2", &[("pool", "app"), (group, "a")], "8", "14Gi"));
        nodes.apply(node("n3", &[("pool", "app"), (group, "b")], "1", "1Gi"));
        nodes.apply(node("n4", &[("pool", "db")], "1", "1Gi"));
        nodes.apply(node("n5", &[("pool", "app"), (group, "a")], "?", "1Gi"));
        nodes.apply(Event::InitDone);
        pods.apply(Event::Init);
        for (name, phase) in [("p1", "Running"), ("p2", "Succeeded"), ("p3", "Pending")] {
            pods.apply(Event::InitApply(SlimPod::from_pod(&pod(
                "shop",
                name,
                &[("app", "web")],
                phase,
            ))));
        }
        pods.apply(Event::InitDone);
        let watched = Watched {
            pods: Some(pods),
            nodes: Some(nodes),
        };
        let pools = [
            PoolQuery {
                name: "app".into(),
                node_group_label: Some(group.into()),
                node_group_ids: vec!["a".into()],
                node_labels: BTreeMap::from([("pool".to_string(), "app".to_string())]),
            },
            PoolQuery {
                name: "unfindable".into(),
                node_group_label: None,
                node_group_ids: vec!["x".into()],
                node_labels: BTreeMap::new(),
            },
        ];
        let workloads = [ReplicaQuery {
            workload: "web".into(),
            namespace: "shop".into(),
            pod_labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
        }];
        let o = watched.observe(&pools, &workloads).await.unwrap();
        assert_eq!(
            o.pools["app"],
            PoolObservation {
                nodes: 3,
                allocatable: Some(Resources::new(7910, 14 << 30)),
            },
            "an unreadable allocatable counts the node, not its size"
        );
        assert!(!o.pools.contains_key("unfindable"), "not guessed");
        assert_eq!(o.replicas["web"], 2, "the finished pod does not count");
    }
}
