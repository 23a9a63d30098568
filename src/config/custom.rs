//! The `custom` section of a signal: serve it on `custom.metrics.k8s.io` as a
//! Pods or Object metric, with series labels mapped to Kubernetes objects the way
//! prometheus-adapter's `resources.overrides` does.
//!
//! ```yaml
//! custom:
//!   type: Object                 # or Pods
//!   resources:
//!     overrides:
//!       namespace: {resource: namespace}
//!       statefulset: {group: apps, resource: statefulset}
//! ```
//!
//! Resources are named by singular, plural or kind within their group
//! (`statefulset`, `statefulsets`, `StatefulSet`). The common built-in resources
//! are known; a custom resource is declared with `kind` and `version` as well,
//! and `resource` is then its lowercase plural.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::custom::{self, Mapping, MetricType, Resource};

/// How a signal is served on `custom.metrics.k8s.io`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomConfig {
    /// `Pods`: every series is a workload total, served split across the
    /// workload's current pods; `Object`: every series is the value of the object
    /// its labels name.
    #[serde(rename = "type")]
    pub metric_type: MetricTypeConfig,
    /// Which labels name which objects.
    pub resources: ResourcesConfig,
}

/// The HPA metric type a custom signal answers (`type: Pods` / `type: Object`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricTypeConfig {
    /// `type: Pods` metrics.
    #[serde(alias = "pods")]
    Pods,
    /// `type: Object` metrics.
    #[serde(alias = "object")]
    Object,
}

/// Label-to-resource associations, as in prometheus-adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesConfig {
    /// Series label → the resource its values name.
    pub overrides: BTreeMap<String, ResourceRef>,
}

/// A Kubernetes resource, by group and name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRef {
    /// API group; empty (the default) for the core group (`namespace`, `pod`,
    /// `node`, `service`).
    #[serde(default)]
    pub group: String,
    /// Singular, plural or kind (`statefulset`); for a custom resource its
    /// lowercase plural.
    pub resource: String,
    /// Kind of a custom resource (unknown to prescale); requires `version`.
    #[serde(default)]
    pub kind: Option<String>,
    /// API version of a custom resource (`v1`); requires `kind`.
    #[serde(default)]
    pub version: Option<String>,
    /// Whether a custom resource's objects live in namespaces.
    #[serde(default = "default_namespaced")]
    pub namespaced: bool,
}

const fn default_namespaced() -> bool {
    // Most custom resources are namespaced; cluster-wide ones say so.
    true
}

/// Whether `s` is a Prometheus label name.
fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl ResourceRef {
    fn resolve(&self, at: &str, problems: &mut Vec<String>) -> Option<Resource> {
        match (&self.kind, &self.version) {
            (None, None) => {
                let found = custom::known(&self.group, &self.resource);
                if found.is_none() {
                    problems.push(format!(
                        "{at}.resource: {:?} in group {:?} is not a resource prescale knows (one of {}); for a custom resource give kind and version too",
                        self.resource,
                        self.group,
                        custom::known_names().join(", ")
                    ));
                }
                found
            }
            (Some(kind), Some(version)) => {
                let plural_ok = !self.resource.is_empty()
                    && self
                        .resource
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                let kind_ok = kind.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && kind.chars().all(|c| c.is_ascii_alphanumeric());
                let version_ok = version.starts_with('v')
                    && version
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
                if !plural_ok {
                    problems.push(format!(
                        "{at}.resource: a custom resource is named by its lowercase plural, got {:?}",
                        self.resource
                    ));
                }
                if !kind_ok {
                    problems.push(format!(
                        "{at}.kind: expected a kind such as \"VectorIndex\", got {kind:?}"
                    ));
                }
                if !version_ok {
                    problems.push(format!(
                        "{at}.version: expected a version such as \"v1\" or \"v1beta1\", got {version:?}"
                    ));
                }
                if self.group.is_empty() {
                    problems.push(format!(
                        "{at}.group: a custom resource has a group, got none"
                    ));
                }
                (plural_ok && kind_ok && version_ok && !self.group.is_empty()).then(|| Resource {
                    group: self.group.clone(),
                    version: version.clone(),
                    plural: self.resource.clone(),
                    kind: kind.clone(),
                    namespaced: self.namespaced,
                })
            }
            (Some(_), None) => {
                problems.push(format!("{at}.version: required with kind"));
                None
            }
            (None, Some(_)) => {
                problems.push(format!("{at}.kind: required with version"));
                None
            }
        }
    }
}

impl CustomConfig {
    /// The validated mapping.
    ///
    /// # Errors
    /// Every problem, each with its field path below `at` (the path of this section).
    pub fn mapping(&self, at: &str) -> Result<Mapping, Vec<String>> {
        let mut problems = Vec::new();
        let mut labels = BTreeMap::new();
        let overrides = format!("{at}.resources.overrides");
        for (label, r) in &self.resources.overrides {
            if !is_label_name(label) {
                problems.push(format!(
                    "{overrides}: {label:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"
                ));
                continue;
            }
            if let Some(resource) = r.resolve(&format!("{overrides}.{label}"), &mut problems) {
                labels.insert(label.clone(), resource);
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let metric_type = match self.metric_type {
            MetricTypeConfig::Pods => MetricType::Pods,
            MetricTypeConfig::Object => MetricType::Object,
        };
        Mapping::try_new(metric_type, labels).map_err(|ps| {
            ps.into_iter()
                .map(|p| format!("{overrides}: {p}"))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> CustomConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn adapter_style_overrides_resolve() {
        let c = parse(
            "type: Object\nresources:\n  overrides:\n    namespace: {resource: namespace}\n    statefulset: {group: apps, resource: statefulset}\n",
        );
        let m = c.mapping("signals[0].custom").unwrap();
        assert_eq!(m.metric_type(), MetricType::Object);
        assert_eq!(m.describing("statefulsets.apps").unwrap().0, "statefulset");
        let crd = parse(
            "type: object\nresources:\n  overrides:\n    index: {group: vectors.example.com, resource: vectorindexes, kind: VectorIndex, version: v1alpha1, namespaced: false}\n",
        );
        let m = crd.mapping("x").unwrap();
        let (_, r) = m.describing("vectorindexes.vectors.example.com").unwrap();
        assert_eq!(
            (r.api_version(), r.namespaced),
            ("vectors.example.com/v1alpha1".into(), false)
        );
    }

    #[test]
    fn problems_name_their_field() {
        let c = parse(
            "type: Pods\nresources:\n  overrides:\n    namespace: {resource: namespace}\n    deployment: {group: apps, resource: deploymnt}\n    bad-label: {resource: pod}\n    crd: {group: x.io, resource: Things, kind: thing}\n",
        );
        let all = c.mapping("signals[1].custom").unwrap_err().join("\n");
        for want in [
            "signals[1].custom.resources.overrides.deployment.resource: \"deploymnt\" in group \"apps\" is not a resource",
            "signals[1].custom.resources.overrides: \"bad-label\" is not a label name",
            "signals[1].custom.resources.overrides.crd.version: required with kind",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        let pods_on_pod = parse(
            "type: Pods\nresources:\n  overrides:\n    namespace: {resource: namespace}\n    pod: {resource: pod}\n",
        );
        let err = pods_on_pod.mapping("s").unwrap_err().join("\n");
        assert!(
            err.starts_with("s.resources.overrides: label \"pod\" maps to pods"),
            "{err}"
        );
        let unknown_field: Result<CustomConfig, _> =
            serde_yaml::from_str("type: Pods\nresources: {overrides: {}}\nrules: []\n");
        assert!(unknown_field.is_err());
    }
}
