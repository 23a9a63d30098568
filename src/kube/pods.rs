//! Pods by namespace and label selector from the Kubernetes API, for Pods
//! metrics, with a short cache.
//!
//! Every HPA on a Pods metric asks every 15 s; caching each (namespace,
//! selector) answer for [`CACHE_TTL_MS`] turns many HPAs and both API versions
//! into one list call per selector per few seconds, while a new pod is still
//! answered for within one HPA period (the HPA counts a pod missing from the
//! answer against scaling up). Errors are not cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ::kube::api::{Api, ListParams};
use ::kube::Client;
use k8s_openapi::api::core::v1::Pod as KubePod;

use crate::api::auth::BoxFuture;
use crate::api::pods::{self, current, Phase, Pod, PodLookup};
use crate::api::selector::Selector;
use crate::clock::Clock;
use crate::custom;

/// How long a list answer is reused.
pub const CACHE_TTL_MS: i64 = 5_000;

/// Answers kept at most; beyond it expired ones are dropped, and if that is not
/// enough the cache starts over.
const CACHE_MAX_ENTRIES: usize = 1024;

/// The pod to answer for, `None` when it is being deleted or has finished.
pub fn pod_from(pod: &KubePod) -> Option<Pod> {
    let name = pod.metadata.name.as_deref()?;
    let phase = Phase::parse(pod.status.as_ref().and_then(|s| s.phase.as_deref()));
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"))
        .map(String::as_str);
    let owners = pod
        .metadata
        .owner_references
        .as_ref()
        .and_then(|refs| refs.iter().find(|r| r.controller == Some(true)))
        .map(|r| custom::owners(&r.kind, &r.name, hash))
        .unwrap_or_default();
    current(name, phase, deleting, owners)
}

type Key = (String, String);

/// Lists pods through a Kubernetes client, caching answers briefly.
pub struct KubePods {
    client: Client,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<Key, (Vec<Pod>, i64)>>,
}

impl KubePods {
    /// Lists through `client`; the cache is timed by `clock`.
    pub fn new(client: Client, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            clock,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &Key, now: i64) -> Option<Vec<Pod>> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(pods, _)| pods.clone())
    }

    fn remember(&self, key: Key, pods: Vec<Pod>, now: i64) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX_ENTRIES {
                cache.retain(|_, (_, expires)| *expires > now);
                if cache.len() >= CACHE_MAX_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(key, (pods, now + CACHE_TTL_MS));
        }
    }
}

impl PodLookup for KubePods {
    fn pods<'a>(
        &'a self,
        namespace: &'a str,
        _selector: &'a Selector,
        selector_text: &'a str,
    ) -> BoxFuture<'a, pods::Result<Vec<Pod>>> {
        Box::pin(async move {
            let key = (namespace.to_string(), selector_text.to_string());
            let now = self.clock.now_ms();
            if let Some(pods) = self.cached(&key, now) {
                return Ok(pods);
            }
            let api: Api<KubePod> = Api::namespaced(self.client.clone(), namespace);
            // The kube-apiserver applies the selector: it understands the same
            // syntax the HPA sent, and we validated it already. Any resource
            // version: answered from the API server's watch cache, not etcd, as
            // the HPA's own pod lister is.
            let params = ListParams::default().labels(selector_text).match_any();
            let list = api.list(&params).await.map_err(|e| pods::Error::Api {
                namespace: namespace.to_string(),
                message: e.to_string(),
            })?;
            let mut found: Vec<Pod> = list.items.iter().filter_map(pod_from).collect();
            found.sort_by(|a, b| a.name.cmp(&b.name));
            self.remember(key, found.clone(), now);
            Ok(found)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    fn pod(name: &str, phase: &str) -> KubePod {
        let mut p = KubePod::default();
        p.metadata.name = Some(name.into());
        p.metadata.labels = Some([("pod-template-hash".to_string(), "6b7c8d".to_string())].into());
        p.metadata.owner_references = Some(vec![
            OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: "not-the-controller".into(),
                uid: "1".into(),
                controller: None,
                block_owner_deletion: None,
            },
            OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "conexus-server-6b7c8d".into(),
                uid: "2".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        ]);
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            ..PodStatus::default()
        });
        p
    }

    #[test]
    fn pods_map_to_their_deployment_and_finished_ones_are_skipped() {
        let p = pod_from(&pod("a", "Running")).unwrap();
        assert_eq!(p.name, "a");
        assert!(!p.pending);
        let kinds: Vec<(&str, &str)> = p
            .owners
            .iter()
            .map(|o| (o.kind.as_str(), o.name.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("ReplicaSet", "conexus-server-6b7c8d"),
                ("Deployment", "conexus-server")
            ]
        );
        assert!(pod_from(&pod("b", "Pending")).unwrap().pending);
        assert!(pod_from(&pod("c", "Failed")).is_none());
        assert!(pod_from(&pod("d", "Succeeded")).is_none());
        let mut deleting = pod("e", "Running");
        deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(pod_from(&deleting).is_none());
        let mut bare = pod("f", "Running");
        bare.metadata.owner_references = None;
        assert!(pod_from(&bare).unwrap().owners.is_empty());
        assert!(pod_from(&KubePod::default()).is_none(), "no name");
    }

    /// A client whose API server answers every list with two pods and counts the calls.
    fn counting_client(calls: Arc<std::sync::atomic::AtomicUsize>) -> Client {
        crate::kube::fake_client(move |_, uri, _| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let uri = uri.to_string();
            assert!(uri.starts_with("/api/v1/namespaces/conexus/pods?"), "{uri}");
            assert!(uri.contains("labelSelector=app%3Dweb"), "{uri}");
            assert!(uri.contains("resourceVersion=0"), "{uri}");
            let list = serde_json::json!({
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {},
                "items": [
                    {"metadata": {"name": "web-b"}, "status": {"phase": "Running"}},
                    {"metadata": {"name": "web-a"}, "status": {"phase": "Pending"}},
                    {"metadata": {"name": "web-c"}, "status": {"phase": "Succeeded"}},
                ],
            });
            (200, list)
        })
    }

    #[tokio::test]
    async fn answers_are_cached_for_a_few_seconds() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let clock = Arc::new(crate::clock::SimClock::new(0));
        let lookup = KubePods::new(counting_client(calls.clone()), clock.clone());
        let sel = crate::api::selector::parse("app=web").unwrap();
        let got = lookup.pods("conexus", &sel, "app=web").await.unwrap();
        let names: Vec<&str> = got.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["web-a", "web-b"]);
        lookup.pods("conexus", &sel, "app=web").await.unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        clock.advance(CACHE_TTL_MS);
        lookup.pods("conexus", &sel, "app=web").await.unwrap();
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "expired"
        );
    }
}
