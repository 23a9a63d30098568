//! The pods an HPA's selector picks, for Pods metrics.
//!
//! The API asks a [`PodLookup`] (owned here, by its consumer): the Kubernetes
//! API in the cluster (`kube::watch`, an index kept by a watch), [`StaticPods`] in tests
//! and local runs. A lookup returns only *current* pods: pods being deleted and
//! pods that have finished (phase `Failed` or `Succeeded`) are left out. The HPA
//! leaves deleted and failed pods out of its own count too; `Succeeded` does not
//! happen to the pods of Deployments and StatefulSets (they always restart), so
//! leaving it out costs nothing there and keeps finished Job pods from sharing a
//! workload's total.

use std::sync::Arc;

use super::auth::BoxFuture;
use super::selector::Selector;
use crate::custom::{self, Owner};
use crate::series::Labels;

/// Why pods could not be listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API call failed.
    #[error("listing pods in namespace {namespace:?}: {message}")]
    Api {
        /// The namespace asked about.
        namespace: String,
        /// The client's error.
        message: String,
    },
    /// No Kubernetes API is configured (running outside a cluster).
    #[error("no Kubernetes API to list pods from: Pods metrics need `prescale serve` with a cluster (auth mode kubernetes)")]
    Unavailable,
}

/// Result with this module's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A current pod, as a Pods metric needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// The pod's name.
    pub name: String,
    /// Phase `Pending`: the HPA sets such pods aside, so they do not share the
    /// workload's total (they are still answered for).
    pub pending: bool,
    /// The objects that own it, controller first (`ReplicaSet`, then its
    /// `Deployment`); empty for a bare pod.
    pub owners: Vec<Owner>,
}

/// A pod's lifecycle phase, as far as lookups care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not yet running (scheduling, pulling images).
    Pending,
    /// Running (or `Unknown`: the node is unreachable, the pod probably runs).
    Running,
    /// Finished successfully: not current.
    Succeeded,
    /// Finished with an error: not current.
    Failed,
}

impl Phase {
    /// The phase a `status.phase` string names (unknown or absent: running).
    pub fn parse(phase: Option<&str>) -> Self {
        match phase {
            Some("Pending") => Phase::Pending,
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            _ => Phase::Running,
        }
    }
}

/// The [`Pod`] to answer for, `None` when the pod is not current (being
/// deleted, or finished).
pub fn current(name: &str, phase: Phase, deleting: bool, owners: Vec<Owner>) -> Option<Pod> {
    if deleting || matches!(phase, Phase::Succeeded | Phase::Failed) {
        return None;
    }
    Some(Pod {
        name: name.to_string(),
        pending: phase == Phase::Pending,
        owners,
    })
}

/// Lists the current pods in a namespace that a label selector picks.
pub trait PodLookup: Send + Sync {
    /// The current pods of `namespace` matching `selector` (`selector_text` is
    /// its text, already validated, for lookups that pass it on), sorted by name.
    ///
    /// # Errors
    /// [`Error::Api`] when the pods cannot be listed, [`Error::Unavailable`]
    /// without a Kubernetes API.
    fn pods<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a Selector,
        selector_text: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Pod>>>;
}

/// A pod known to [`StaticPods`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels, matched by selectors.
    pub labels: Labels,
    /// Phase.
    pub phase: Phase,
    /// Has a deletion timestamp.
    pub deleting: bool,
    /// Controller owner (kind, name); a ReplicaSet's Deployment is derived from
    /// the `pod-template-hash` label, as in the cluster.
    pub controller: Option<(String, String)>,
}

impl StaticPod {
    /// A running pod of `namespace` with `labels`, owned by `kind`/`name`.
    pub fn new(
        namespace: &str,
        name: &str,
        labels: Labels,
        controller: Option<(&str, &str)>,
    ) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            labels,
            phase: Phase::Running,
            deleting: false,
            controller: controller.map(|(k, n)| (k.to_string(), n.to_string())),
        }
    }

    /// Replaces the phase.
    pub fn with_phase(mut self, phase: Phase) -> Self {
        self.phase = phase;
        self
    }

    /// Marks the pod as being deleted.
    pub fn deleting(mut self) -> Self {
        self.deleting = true;
        self
    }
}

/// Pods known in advance: for tests and local runs.
#[derive(Debug, Clone, Default)]
pub struct StaticPods {
    pods: Vec<StaticPod>,
}

impl StaticPods {
    /// No pods.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pod.
    pub fn with_pod(mut self, pod: StaticPod) -> Self {
        self.pods.push(pod);
        self
    }

    /// As a shared lookup.
    pub fn shared(self) -> Arc<dyn PodLookup> {
        Arc::new(self)
    }
}

impl PodLookup for StaticPods {
    fn pods<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a Selector,
        _selector_text: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Pod>>> {
        let mut found: Vec<Pod> = self
            .pods
            .iter()
            .filter(|p| p.namespace == namespace && selector.matches(&p.labels))
            .filter_map(|p| {
                let owners = p
                    .controller
                    .as_ref()
                    .map(|(kind, name)| {
                        custom::owners(
                            kind,
                            name,
                            p.labels.get("pod-template-hash").map(String::as_str),
                        )
                    })
                    .unwrap_or_default();
                current(&p.name, p.phase, p.deleting, owners)
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Box::pin(async move { Ok(found) })
    }
}

/// A lookup that always fails with [`Error::Unavailable`]: serving without a
/// cluster, Pods metrics answer 503 with that reason instead of guessing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPods;

impl PodLookup for NoPods {
    fn pods<'a>(
        &'a self,
        _namespace: &'a str,
        _selector: &'a Selector,
        _selector_text: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Pod>>> {
        Box::pin(async { Err(Error::Unavailable) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::selector;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn static_pods_select_and_skip_finished_and_deleted() {
        let app = labels(&[("app", "web"), ("pod-template-hash", "5f6d")]);
        let rs = Some(("ReplicaSet", "web-5f6d"));
        let pods = StaticPods::new()
            .with_pod(StaticPod::new("shop", "web-b", app.clone(), rs))
            .with_pod(StaticPod::new("shop", "web-a", app.clone(), rs).with_phase(Phase::Pending))
            .with_pod(StaticPod::new("shop", "web-c", app.clone(), rs).with_phase(Phase::Failed))
            .with_pod(StaticPod::new("shop", "web-d", app.clone(), rs).with_phase(Phase::Succeeded))
            .with_pod(StaticPod::new("shop", "web-e", app.clone(), rs).deleting())
            .with_pod(StaticPod::new("other", "web-f", app.clone(), rs))
            .with_pod(StaticPod::new(
                "shop",
                "db-0",
                labels(&[("app", "db")]),
                Some(("StatefulSet", "db")),
            ));
        let sel = selector::parse("app=web").unwrap();
        let got = pods.pods("shop", &sel, "app=web").await.unwrap();
        let names: Vec<&str> = got.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["web-a", "web-b"]);
        assert!(got[0].pending && !got[1].pending);
        assert_eq!(got[1].owners[1].name, "web");
        assert_eq!(NoPods.pods("shop", &sel, "").await, Err(Error::Unavailable));
    }

    #[test]
    fn phases_parse_with_unknown_as_running() {
        assert_eq!(Phase::parse(Some("Pending")), Phase::Pending);
        assert_eq!(Phase::parse(Some("Unknown")), Phase::Running);
        assert_eq!(Phase::parse(None), Phase::Running);
        assert!(current("p", Phase::Failed, false, vec![]).is_none());
        assert!(current("p", Phase::Running, true, vec![]).is_none());
    }
}
