//! Custom metrics (`custom.metrics.k8s.io`): which Kubernetes object a series
//! describes.
//!
//! A custom signal maps series labels to Kubernetes resources, in the spirit of
//! prometheus-adapter's `resources.overrides`: label `namespace` names the
//! namespace, label `statefulset` names a `statefulsets.apps` object, and so on.
//! Two kinds of signal use such a [`Mapping`]:
//! - **Object** metrics: each series describes the object its labels name, and is
//!   served as that object's value (`statefulsets.apps/<name>/<metric>`).
//! - **Pods** metrics: each series is the total of one workload (a Deployment,
//!   StatefulSet, DaemonSet or ReplicaSet); it is served split evenly across the
//!   workload's current pods, so the HPA's own averaging sees the total.
//!
//! Pure: no I/O; the API edge asks the questions and the pod look-up lives in
//! `api::pods` and `kube::watch`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::series::Labels;

/// A Kubernetes resource a series label can name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Resource {
    /// API group, empty for the core group.
    pub group: String,
    /// The version objects are described with (`v1`).
    pub version: String,
    /// Lowercase plural, as in URLs (`statefulsets`).
    pub plural: String,
    /// The kind (`StatefulSet`).
    pub kind: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

impl Resource {
    /// The resource as the HPA writes it in a URL: `statefulsets.apps`, or
    /// `pods` for the core group.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `apiVersion` of the objects: `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether this is the core `namespaces` resource.
    pub fn is_namespace(&self) -> bool {
        self.group.is_empty() && self.plural == "namespaces"
    }

    /// Whether this is the core `pods` resource.
    pub fn is_pod(&self) -> bool {
        self.group.is_empty() && self.plural == "pods"
    }

    /// Whether pods are owned by objects of this resource (what a Pods metric
    /// forecasts at).
    pub fn is_workload(&self) -> bool {
        self.group == "apps"
            && matches!(
                self.plural.as_str(),
                "deployments" | "statefulsets" | "daemonsets" | "replicasets"
            )
    }
}

/// Resources known without asking the cluster: (group, version, plural, singular,
/// kind, namespaced). Anything else (custom resources) is declared in full in the
/// configuration.
const KNOWN: &[(&str, &str, &str, &str, &str, bool)] = &[
    ("", "v1", "namespaces", "namespace", "Namespace", false),
    ("", "v1", "nodes", "node", "Node", false),
    ("", "v1", "pods", "pod", "Pod", true),
    ("", "v1", "services", "service", "Service", true),
    (
        "",
        "v1",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        true,
    ),
    (
        "",
        "v1",
        "persistentvolumes",
        "persistentvolume",
        "PersistentVolume",
        false,
    ),
    (
        "",
        "v1",
        "replicationcontrollers",
        "replicationcontroller",
        "ReplicationController",
        true,
    ),
    (
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
    ),
    (
        "apps",
        "v1",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        true,
    ),
    ("apps", "v1", "daemonsets", "daemonset", "DaemonSet", true),
    (
        "apps",
        "v1",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
    ),
    ("batch", "v1", "jobs", "job", "Job", true),
    ("batch", "v1", "cronjobs", "cronjob", "CronJob", true),
    (
        "networking.k8s.io",
        "v1",
        "ingresses",
        "ingress",
        "Ingress",
        true,
    ),
];

/// A well-known resource by group and name; the name may be the plural, the
/// singular or the kind, in any case (`statefulset`, `statefulsets`,
/// `StatefulSet`).
pub fn known(group: &str, name: &str) -> Option<Resource> {
    let name = name.to_ascii_lowercase();
    KNOWN
        .iter()
        .find(|(g, _, plural, singular, kind, _)| {
            *g == group
                && (name == *plural || name == *singular || name == kind.to_ascii_lowercase())
        })
        .map(|(g, v, plural, _, kind, namespaced)| Resource {
            group: (*g).to_string(),
            version: (*v).to_string(),
            plural: (*plural).to_string(),
            kind: (*kind).to_string(),
            namespaced: *namespaced,
        })
}

/// The names [`known`] accepts, for error messages (`statefulsets.apps`, ...).
pub fn known_names() -> Vec<String> {
    KNOWN
        .iter()
        .map(|(g, _, plural, ..)| {
            if g.is_empty() {
                (*plural).to_string()
            } else {
                format!("{plural}.{g}")
            }
        })
        .collect()
}

/// How an HPA refers to a custom signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    /// `type: Pods`: a workload total served split across the workload's pods.
    Pods,
    /// `type: Object`: each series is the value of the object it describes.
    Object,
}

/// Which labels of a signal's series name which Kubernetes objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mapping {
    metric_type: MetricType,
    labels: BTreeMap<String, Resource>,
}

impl Mapping {
    /// A mapping of `labels` (series label → resource) for a signal of `metric_type`.
    ///
    /// # Errors
    /// One message per rule broken: no labels, two labels for one resource, a
    /// namespaced resource without a label for its namespace, and for Pods
    /// metrics anything but one workload resource (Deployment, StatefulSet,
    /// DaemonSet, ReplicaSet) beside the namespace.
    pub fn try_new(
        metric_type: MetricType,
        labels: BTreeMap<String, Resource>,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        if labels.is_empty() {
            problems.push("must map at least one label to a resource".to_string());
        }
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for (label, resource) in &labels {
            if let Some(first) = seen.insert(resource.qualified(), label) {
                problems.push(format!(
                    "labels {first:?} and {label:?} both map to {}: one label per resource",
                    resource.qualified()
                ));
            }
        }
        let has_namespace = labels.values().any(Resource::is_namespace);
        for (label, resource) in &labels {
            if resource.namespaced && !has_namespace {
                problems.push(format!(
                    "label {label:?} maps to {}, which is namespaced: another label must map to namespace",
                    resource.qualified()
                ));
            }
        }
        if metric_type == MetricType::Pods {
            let objects: Vec<(&String, &Resource)> =
                labels.iter().filter(|(_, r)| !r.is_namespace()).collect();
            match objects.as_slice() {
                [(_, r)] if r.is_workload() => {}
                [(label, r)] => problems.push(format!(
                    "label {label:?} maps to {}: a Pods metric is forecast per workload, so it must map deployments.apps, statefulsets.apps, daemonsets.apps or replicasets.apps",
                    r.qualified()
                )),
                _ => {
                    let listed: Vec<String> = objects
                        .iter()
                        .map(|(l, r)| format!("{l} -> {}", r.qualified()))
                        .collect();
                    problems.push(format!(
                        "a Pods metric maps exactly one workload label (besides namespace), got {}",
                        if listed.is_empty() {
                            "none".to_string()
                        } else {
                            listed.join(", ")
                        }
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(Self {
                metric_type,
                labels,
            })
        } else {
            Err(problems)
        }
    }

    /// How HPAs refer to the signal.
    pub fn metric_type(&self) -> MetricType {
        self.metric_type
    }

    /// Every mapped label with its resource, by label.
    pub fn labels(&self) -> impl Iterator<Item = (&str, &Resource)> {
        self.labels.iter().map(|(l, r)| (l.as_str(), r))
    }

    /// The label naming the namespace, if any.
    pub fn namespace_label(&self) -> Option<&str> {
        self.labels
            .iter()
            .find(|(_, r)| r.is_namespace())
            .map(|(l, _)| l.as_str())
    }

    /// The workload a Pods metric is forecast for: its label and resource.
    pub fn workload(&self) -> Option<(&str, &Resource)> {
        if self.metric_type != MetricType::Pods {
            return None;
        }
        self.labels
            .iter()
            .find(|(_, r)| r.is_workload())
            .map(|(l, r)| (l.as_str(), r))
    }

    /// The resources whose objects the series describe, with their labels: every
    /// mapped resource but the namespace, or the namespace when it is the only
    /// one (a series per namespace). For Pods metrics: `pods`, served through the
    /// workload.
    pub fn described(&self) -> Vec<(&str, &Resource)> {
        let objects: Vec<(&str, &Resource)> = self
            .labels
            .iter()
            .filter(|(_, r)| !r.is_namespace())
            .map(|(l, r)| (l.as_str(), r))
            .collect();
        if objects.is_empty() {
            self.labels.iter().map(|(l, r)| (l.as_str(), r)).collect()
        } else {
            objects
        }
    }

    /// The described resource a URL names (`statefulsets.apps`), with its label.
    pub fn describing(&self, qualified: &str) -> Option<(&str, &Resource)> {
        self.described()
            .into_iter()
            .find(|(_, r)| r.qualified() == qualified)
    }

    /// Whether a series with `labels` describes object `name` through `label`,
    /// in `namespace` (for namespaced resources; the namespace label decides).
    pub fn names(&self, labels: &Labels, label: &str, namespace: Option<&str>, name: &str) -> bool {
        if labels.get(label).map(String::as_str) != Some(name) {
            return false;
        }
        match (namespace, self.namespace_label()) {
            (Some(ns), Some(ns_label)) if ns_label != label => {
                labels.get(ns_label).map(String::as_str) == Some(ns)
            }
            _ => true,
        }
    }
}

/// An object a pod belongs to through its controller owner references.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    /// Its kind (`ReplicaSet`, `Deployment`, `StatefulSet`).
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// The chain of owners of a pod whose controller is `kind`/`name`: a ReplicaSet
/// made by a Deployment also yields the Deployment. A Deployment names its
/// ReplicaSets `<deployment>-<pod-template-hash>` and labels their pods with that
/// hash, so the Deployment is found without another API call.
pub fn owners(kind: &str, name: &str, pod_template_hash: Option<&str>) -> Vec<Owner> {
    let mut out = vec![Owner {
        kind: kind.to_string(),
        name: name.to_string(),
    }];
    if kind == "ReplicaSet" {
        if let Some(deployment) = pod_template_hash
            .filter(|h| !h.is_empty())
            .and_then(|h| name.strip_suffix(h))
            .and_then(|rest| rest.strip_suffix('-'))
            .filter(|d| !d.is_empty())
        {
            out.push(Owner {
                kind: "Deployment".to_string(),
                name: deployment.to_string(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(group: &str, name: &str) -> Resource {
        known(group, name).unwrap()
    }

    fn map(pairs: &[(&str, Resource)]) -> BTreeMap<String, Resource> {
        pairs
            .iter()
            .map(|(l, r)| (l.to_string(), r.clone()))
            .collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn known_resources_by_any_name() {
        for name in ["statefulset", "statefulsets", "StatefulSet"] {
            let r = res("apps", name);
            assert_eq!(r.qualified(), "statefulsets.apps");
            assert_eq!(r.api_version(), "apps/v1");
            assert_eq!(r.kind, "StatefulSet");
            assert!(r.namespaced && r.is_workload());
        }
        let ns = res("", "namespace");
        assert_eq!(
            (ns.qualified(), ns.api_version()),
            ("namespaces".into(), "v1".into())
        );
        assert!(ns.is_namespace() && !ns.namespaced);
        assert!(!res("", "node").namespaced);
        assert!(known("", "statefulset").is_none(), "wrong group");
        assert!(known("apps", "gizmo").is_none());
        assert!(known_names().contains(&"ingresses.networking.k8s.io".to_string()));
    }

    #[test]
    fn mapping_rules_are_all_reported() {
        let ns = res("", "namespace");
        let sts = res("apps", "statefulset");
        let pod = res("", "pod");
        let node = res("", "node");
        assert!(Mapping::try_new(
            MetricType::Object,
            map(&[("namespace", ns.clone()), ("statefulset", sts.clone())])
        )
        .is_ok());
        assert!(Mapping::try_new(MetricType::Object, map(&[("node", node.clone())])).is_ok());
        let err = Mapping::try_new(
            MetricType::Object,
            map(&[("statefulset", sts.clone()), ("sts", sts.clone())]),
        )
        .unwrap_err();
        assert_eq!(err.len(), 3, "{err:?}");
        assert!(err[0].contains("both map to statefulsets.apps"), "{err:?}");
        assert!(
            err[1].contains("another label must map to namespace"),
            "{err:?}"
        );
        assert!(Mapping::try_new(MetricType::Object, BTreeMap::new()).is_err());
        let err = Mapping::try_new(
            MetricType::Pods,
            map(&[("namespace", ns.clone()), ("pod", pod)]),
        )
        .unwrap_err();
        assert!(err[0].contains("forecast per workload"), "{err:?}");
        let err =
            Mapping::try_new(MetricType::Pods, map(&[("namespace", ns.clone())])).unwrap_err();
        assert!(err[0].contains("exactly one workload"), "{err:?}");
        let m = Mapping::try_new(
            MetricType::Pods,
            map(&[("namespace", ns), ("deployment", res("apps", "deployment"))]),
        )
        .unwrap();
        assert_eq!(
            m.workload().map(|(l, r)| (l, r.kind.as_str())),
            Some(("deployment", "Deployment"))
        );
    }

    #[test]
    fn series_name_their_objects() {
        let m = Mapping::try_new(
            MetricType::Object,
            map(&[
                ("namespace", res("", "namespace")),
                ("statefulset", res("apps", "statefulset")),
            ]),
        )
        .unwrap();
        assert_eq!(m.namespace_label(), Some("namespace"));
        assert_eq!(m.described().len(), 1);
        let (label, r) = m.describing("statefulsets.apps").unwrap();
        assert_eq!((label, r.kind.as_str()), ("statefulset", "StatefulSet"));
        assert!(
            m.describing("namespaces").is_none(),
            "the namespace only qualifies"
        );
        assert!(
            m.describing("statefulsets").is_none(),
            "group-qualified only"
        );
        let s = labels(&[("namespace", "conexus"), ("statefulset", "qdrant")]);
        assert!(m.names(&s, "statefulset", Some("conexus"), "qdrant"));
        assert!(!m.names(&s, "statefulset", Some("other"), "qdrant"));
        assert!(!m.names(&s, "statefulset", Some("conexus"), "redis"));

        let by_ns =
            Mapping::try_new(MetricType::Object, map(&[("ns", res("", "namespace"))])).unwrap();
        let (label, _) = by_ns.describing("namespaces").unwrap();
        assert!(by_ns.names(&labels(&[("ns", "shop")]), label, Some("shop"), "shop"));
    }

    #[test]
    fn deployments_are_found_through_their_replicasets() {
        let o = owners("ReplicaSet", "conexus-server-7d9f8b6c5", Some("7d9f8b6c5"));
        assert_eq!(o.len(), 2);
        assert_eq!(
            (o[1].kind.as_str(), o[1].name.as_str()),
            ("Deployment", "conexus-server")
        );
        assert_eq!(owners("ReplicaSet", "bare-rs", Some("abc")).len(), 1);
        assert_eq!(owners("ReplicaSet", "x", None).len(), 1);
        assert_eq!(owners("ReplicaSet", "-abc", Some("abc")).len(), 1);
        let s = owners("StatefulSet", "qdrant", None);
        assert_eq!((s[0].kind.as_str(), s.len()), ("StatefulSet", 1));
    }
}
