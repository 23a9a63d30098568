//! The node-pool look-ups against the kube-apiserver: a pool's nodes (by node
//! labels, or by the node label that carries the node group id) with their
//! allocatable, and a workload's running pods.
//!
//! The selector and counting rules are plain functions, tested without a cluster.

use std::collections::BTreeMap;

use ::kube::api::{Api, ListParams};
use ::kube::Client;
use k8s_openapi::api::core::v1::{Node, Pod};

use crate::engine::nodepools::{
    self, BoxFuture, ClusterLookup, Observation, PoolObservation, PoolQuery, ReplicaQuery,
};
use crate::plan::nodepool::Resources;
use crate::quantity;

/// Reads nodes and pods through the kube-apiserver (RBAC: `list` on `nodes` and
/// `pods`).
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster").finish_non_exhaustive()
    }
}

impl KubeCluster {
    /// A lookup through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// The label selector that lists a pool's nodes; `None` when the pool cannot be
/// found by labels (node group ids without a `node_group_label`).
pub fn node_selector(pool: &PoolQuery) -> Option<String> {
    let mut parts: Vec<String> = pool
        .node_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if let Some(label) = &pool.node_group_label {
        if !pool.node_group_ids.is_empty() {
            parts.push(format!("{label} in ({})", pool.node_group_ids.join(",")));
        }
    }
    (!parts.is_empty()).then(|| parts.join(","))
}

/// The label selector of a workload's pods.
pub fn pod_selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A node's allocatable cpu and memory; `None` when either is missing or unreadable.
pub fn node_allocatable(node: &Node) -> Option<Resources> {
    let a = node.status.as_ref()?.allocatable.as_ref()?;
    let cpu = quantity::parse_millicores(&a.get("cpu")?.0).ok()?;
    let memory = quantity::parse_units(&a.get("memory")?.0).ok()?;
    Some(Resources::new(cpu, memory))
}

/// The pool as seen in `nodes`: how many, and the smallest allocatable (cpu and
/// memory separately, so a mixed pool is planned with room every node has).
pub fn observe_nodes(nodes: &[Node]) -> PoolObservation {
    let allocatable = nodes.iter().filter_map(node_allocatable).reduce(|a, b| {
        Resources::new(
            a.cpu_milli.min(b.cpu_milli),
            a.memory_bytes.min(b.memory_bytes),
        )
    });
    PoolObservation {
        nodes: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
        allocatable,
    }
}

/// Pods that hold (or will hold) room: not finished and not being deleted.
pub fn count_replicas(pods: &[Pod]) -> u32 {
    let n = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn lookup_error(what: String, e: ::kube::Error) -> nodepools::Error {
    nodepools::Error::Lookup {
        what,
        message: e.to_string(),
    }
}

impl ClusterLookup for KubeCluster {
    fn observe<'a>(
        &'a self,
        pools: &'a [PoolQuery],
        workloads: &'a [ReplicaQuery],
    ) -> BoxFuture<'a, nodepools::Result<Observation>> {
        Box::pin(async move {
            let mut out = Observation::default();
            let nodes: Api<Node> = Api::all(self.client.clone());
            for p in pools {
                let Some(selector) = node_selector(p) else {
                    continue;
                };
                let list = nodes
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| {
                        lookup_error(format!("listing nodes of pool {} ({selector})", p.name), e)
                    })?;
                out.pools.insert(p.name.clone(), observe_nodes(&list.items));
            }
            for w in workloads {
                let pods: Api<Pod> = Api::namespaced(self.client.clone(), &w.namespace);
                let selector = pod_selector(&w.pod_labels);
                let list = pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| {
                        lookup_error(
                            format!(
                                "listing pods of {} ({}/{selector})",
                                w.workload, w.namespace
                            ),
                            e,
                        )
                    })?;
                out.replicas
                    .insert(w.workload.clone(), count_replicas(&list.items));
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeStatus, PodStatus};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn pool(labels: &[(&str, &str)], group_label: Option<&str>, ids: &[&str]) -> PoolQuery {
        PoolQuery {
            name: "app".into(),
            node_group_label: group_label.map(String::from),
            node_group_ids: ids.iter().map(|s| s.to_string()).collect(),
            node_labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn selectors_combine_labels_and_node_group_ids() {
        assert_eq!(
            node_selector(&pool(&[("pool", "app")], None, &["x"])).as_deref(),
            Some("pool=app")
        );
        assert_eq!(
            node_selector(&pool(
                &[("pool", "app")],
                Some("eks.amazonaws.com/nodegroup"),
                &["a", "b"]
            ))
            .as_deref(),
            Some("pool=app,eks.amazonaws.com/nodegroup in (a,b)")
        );
        assert_eq!(node_selector(&pool(&[], None, &["a"])), None);
    }

    fn node(cpu: &str, mem: &str) -> Node {
        Node {
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([
                    ("cpu".to_string(), Quantity(cpu.into())),
                    ("memory".to_string(), Quantity(mem.into())),
                ])),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    #[tokio::test]
    async fn the_lookup_lists_by_selector_through_the_api() {
        use std::sync::{Arc, Mutex};
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        let client = crate::kube::fake_client(move |_, uri, _| {
            log.lock().unwrap().push(uri.to_string());
            let body = if uri.path() == "/api/v1/nodes" {
                serde_json::json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {},
                "items": [
                    {"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "7910m", "memory": "15Gi"}}},
                    {"metadata": {"name": "n2"}, "status": {"allocatable": {"cpu": "8", "memory": "14Gi"}}},
                ]})
            } else {
                serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {},
                "items": [
                    {"metadata": {"name": "p1"}, "status": {"phase": "Running"}},
                    {"metadata": {"name": "p2"}, "status": {"phase": "Succeeded"}},
                    {"metadata": {"name": "p3"}, "status": {"phase": "Pending"}},
                ]})
            };
            (200, body)
        });
        let cluster = KubeCluster::new(client);
        let pools = [
            pool(
                &[("pool", "app")],
                Some("eks.amazonaws.com/nodegroup"),
                &["a"],
            ),
            PoolQuery {
                name: "unfindable".into(),
                ..pool(&[], None, &["x"])
            },
        ];
        let workloads = [ReplicaQuery {
            workload: "web".into(),
            namespace: "shop".into(),
            pod_labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
        }];
        let o = cluster.observe(&pools, &workloads).await.unwrap();
        assert_eq!(
            o.pools["app"],
            PoolObservation {
                nodes: 2,
                allocatable: Some(Resources::new(7910, 14 << 30)),
            }
        );
        assert!(!o.pools.contains_key("unfindable"), "not guessed");
        assert_eq!(o.replicas["web"], 2);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen[0].starts_with("/api/v1/nodes?")
                && seen[0].contains(
                    "labelSelector=pool%3Dapp%2Ceks.amazonaws.com%2Fnodegroup+in+%28a%29"
                ),
            "{seen:?}"
        );
        assert!(
            seen[1].starts_with("/api/v1/namespaces/shop/pods?")
                && seen[1].contains("labelSelector=app%3Dweb"),
            "{seen:?}"
        );
    }

    #[test]
    fn pools_take_the_smallest_allocatable() {
        let o = observe_nodes(&[node("7910m", "15Gi"), node("8", "14Gi"), Node::default()]);
        assert_eq!(o.nodes, 3);
        assert_eq!(o.allocatable, Some(Resources::new(7910, 14 << 30)));
        assert_eq!(observe_nodes(&[]).allocatable, None);
    }

    #[test]
    fn finished_and_deleted_pods_do_not_count() {
        let pod = |phase: &str, deleting: bool| {
            let mut p = Pod {
                status: Some(PodStatus {
                    phase: Some(phase.into()),
                    ..PodStatus::default()
                }),
                ..Pod::default()
            };
            if deleting {
                p.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::chrono::DateTime::UNIX_EPOCH,
                    ));
            }
            p
        };
        let pods = [
            pod("Running", false),
            pod("Pending", false),
            pod("Succeeded", false),
            pod("Failed", false),
            pod("Running", true),
        ];
        assert_eq!(count_replicas(&pods), 2);
    }
}
