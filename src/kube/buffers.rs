//! Optional CapacityBuffer writer: the node-pool plan's balloons as
//! `autoscaling.x-k8s.io/v1beta1` CapacityBuffers (cluster-autoscaler ≥ 1.35), one
//! per pool that names a `capacity_buffer`, with `spec.replicas` placeholder pods
//! of the PodTemplate it refers to (`spec.podTemplateRef`).
//!
//! Only the replica that holds the Lease writes (see [`super::lease`]); with
//! `dry_run` it logs what it would write instead. A buffer prescale did not create
//! (no `app.kubernetes.io/managed-by: prescale` label) is never overwritten. A pool
//! whose plan is stale or incomplete keeps its buffer as it is.
//!
//! The object and the decision to write are plain functions over JSON, tested
//! without a cluster; [`run`] is the thin loop around them.

use std::future::Future;
use std::sync::Arc;

use ::kube::api::{Api, ApiResource, DynamicObject, PostParams};
use ::kube::Client;
use serde_json::{json, Value};

use super::lease::{Elector, KubeLease};
use crate::clock::Clock;
use crate::config::{CapacityBufferRef, CapacityBuffersConfig, NodePoolConfig};
use crate::plan::nodepool::Plan;
use crate::snapshot::Shared;

/// Why a buffer could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API call failed.
    #[error("capacity buffer {namespace}/{name}: {what}")]
    Api {
        /// The buffer's namespace.
        namespace: String,
        /// The buffer's name.
        name: String,
        /// What was being done.
        what: &'static str,
        /// The client error.
        #[source]
        source: Box<::kube::Error>,
    },
    /// The object could not be converted (a bug, reported rather than panicking).
    #[error("capacity buffer {name}: cannot encode the object")]
    Encode {
        /// The buffer's name.
        name: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

/// Result with this module's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// API group of CapacityBuffers.
pub const GROUP: &str = "autoscaling.x-k8s.io";
/// API version written.
pub const VERSION: &str = "v1beta1";
/// The label that marks objects prescale owns.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "prescale");
/// The label naming the pool.
pub const POOL_LABEL: &str = "prescale.io/nodepool";

/// The CapacityBuffer resource, for the dynamic client.
pub fn api_resource() -> ApiResource {
    ApiResource {
        group: GROUP.to_string(),
        version: VERSION.to_string(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: "CapacityBuffer".to_string(),
        plural: "capacitybuffers".to_string(),
    }
}

/// The buffer's name: configured, or `prescale-<pool>`.
pub fn buffer_name(pool: &str, r: &CapacityBufferRef) -> String {
    r.name.clone().unwrap_or_else(|| format!("prescale-{pool}"))
}

/// The CapacityBuffer for `pool` holding `replicas` placeholder pods.
pub fn buffer_object(pool: &str, r: &CapacityBufferRef, replicas: u32) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "CapacityBuffer",
        "metadata": {
            "name": buffer_name(pool, r),
            "namespace": r.namespace,
            "labels": {
                MANAGED_BY.0: MANAGED_BY.1,
                POOL_LABEL: pool,
            },
        },
        "spec": {
            "podTemplateRef": { "name": r.pod_template },
            "replicas": replicas,
        },
    })
}

/// What to do about one buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// It does not exist: create it.
    Create(Value),
    /// It exists with another spec: replace it (conditional on its resourceVersion).
    Replace(Value),
    /// It already says this.
    Unchanged,
    /// It exists but prescale does not own it: leave it alone.
    Foreign,
}

/// Compares the buffer as read (`existing`) with the `desired` object. A
/// replacement keeps the existing object's other labels, annotations and spec
/// fields (a user may set e.g. `provisioningStrategy`) and carries its
/// `resourceVersion`, so a concurrent change makes it fail instead of being lost.
pub fn decide(existing: Option<&Value>, desired: Value) -> Write {
    let Some(existing) = existing else {
        return Write::Create(desired);
    };
    let managed = existing["metadata"]["labels"][MANAGED_BY.0].as_str() == Some(MANAGED_BY.1);
    if !managed {
        return Write::Foreign;
    }
    let same = existing["spec"]["replicas"] == desired["spec"]["replicas"]
        && existing["spec"]["podTemplateRef"]["name"] == desired["spec"]["podTemplateRef"]["name"];
    if same {
        return Write::Unchanged;
    }
    let mut next = existing.clone();
    if let Some(obj) = next.as_object_mut() {
        obj.remove("status");
    }
    next["spec"]["replicas"] = desired["spec"]["replicas"].clone();
    next["spec"]["podTemplateRef"] = desired["spec"]["podTemplateRef"].clone();
    // Scaling by replicas and by percentage are exclusive in the API.
    if let Some(spec) = next["spec"].as_object_mut() {
        spec.remove("percentage");
    }
    Write::Replace(next)
}

/// The replicas each buffered pool should have by `plan`: its balloons, for pools
/// with a complete plan made at most `max_age_ms` before `now_ms`.
pub fn desired(
    pools: &[NodePoolConfig],
    plan: Option<&Plan>,
    now_ms: i64,
    max_age_ms: i64,
) -> Vec<(String, CapacityBufferRef, u32)> {
    let Some(plan) = plan.filter(|p| now_ms.saturating_sub(p.computed_at_ms) <= max_age_ms) else {
        return Vec::new();
    };
    pools
        .iter()
        .filter_map(|p| {
            let r = p.capacity_buffer.clone()?;
            let pp = plan.pool(&p.name).filter(|pp| pp.is_complete())?;
            Some((p.name.clone(), r, pp.balloons))
        })
        .collect()
}

async fn sync_one(
    client: &Client,
    pool: &str,
    r: &CapacityBufferRef,
    replicas: u32,
    dry_run: bool,
) -> Result<()> {
    let name = buffer_name(pool, r);
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &r.namespace, &api_resource());
    let err = |what, source| Error::Api {
        namespace: r.namespace.clone(),
        name: name.clone(),
        what,
        source: Box::new(source),
    };
    let existing = api.get_opt(&name).await.map_err(|e| err("reading", e))?;
    let existing = existing
        .map(serde_json::to_value)
        .transpose()
        .map_err(|source| Error::Encode {
            name: name.clone(),
            source,
        })?;
    let to_object = |v: Value| -> Result<DynamicObject> {
        serde_json::from_value(v).map_err(|source| Error::Encode {
            name: name.clone(),
            source,
        })
    };
    match decide(existing.as_ref(), buffer_object(pool, r, replicas)) {
        Write::Unchanged => {}
        Write::Foreign => tracing::warn!(
            buffer = %name, namespace = %r.namespace,
            "a CapacityBuffer of that name exists and is not managed by prescale; leaving it alone"
        ),
        Write::Create(v) if dry_run => {
            tracing::info!(buffer = %name, replicas, object = %v, "dry run: would create CapacityBuffer")
        }
        Write::Replace(v) if dry_run => {
            tracing::info!(buffer = %name, replicas, object = %v, "dry run: would update CapacityBuffer")
        }
        Write::Create(v) => {
            api.create(&PostParams::default(), &to_object(v)?)
                .await
                .map_err(|e| err("creating", e))?;
            tracing::info!(buffer = %name, replicas, "created CapacityBuffer");
        }
        Write::Replace(v) => {
            api.replace(&name, &PostParams::default(), &to_object(v)?)
                .await
                .map_err(|e| err("updating", e))?;
            tracing::info!(buffer = %name, replicas, "updated CapacityBuffer");
        }
    }
    Ok(())
}

/// Keeps the pools' CapacityBuffers at the balloons of the current snapshot's plan
/// while this replica (`identity`) holds the Lease, until `shutdown` completes.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: Client,
    config: CapacityBuffersConfig,
    pools: Vec<NodePoolConfig>,
    snapshot: Shared,
    clock: Arc<dyn Clock>,
    identity: String,
    max_plan_age_ms: i64,
    shutdown: impl Future<Output = ()>,
) {
    let lease = KubeLease::new(client.clone(), &config.lease_namespace, &config.lease_name);
    let mut elector = Elector::new(identity, config.lease_duration.as_ms());
    let period = std::time::Duration::from_millis(
        u64::try_from(elector.renew_every_ms())
            .unwrap_or(5_000)
            .max(500),
    );
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut was_leader = false;
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = interval.tick() => {}
        }
        let now_ms = clock.now_ms();
        if let Err(e) = lease.round(&mut elector, now_ms).await {
            tracing::warn!(error = %e, "capacity-buffer lease round failed");
        }
        let leader = elector.is_leader(clock.now_ms());
        if leader != was_leader {
            tracing::info!(identity = %elector.identity(), leader, "capacity-buffer writer leadership changed");
            was_leader = leader;
        }
        if !leader {
            continue;
        }
        let plan = snapshot.load().plan.clone();
        for (pool, r, replicas) in desired(&pools, plan.as_deref(), now_ms, max_plan_age_ms) {
            if let Err(e) = sync_one(&client, &pool, &r, replicas, config.dry_run).await {
                tracing::warn!(pool = %pool, error = %e, "cannot write CapacityBuffer");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer_ref() -> CapacityBufferRef {
        CapacityBufferRef {
            namespace: "prescale-balloons".into(),
            pod_template: "balloon-application".into(),
            name: None,
        }
    }

    #[test]
    fn the_object_has_the_v1beta1_shape() {
        let v = buffer_object("application", &buffer_ref(), 3);
        assert_eq!(
            v,
            json!({
                "apiVersion": "autoscaling.x-k8s.io/v1beta1",
                "kind": "CapacityBuffer",
                "metadata": {
                    "name": "prescale-application",
                    "namespace": "prescale-balloons",
                    "labels": {
                        "app.kubernetes.io/managed-by": "prescale",
                        "prescale.io/nodepool": "application",
                    },
                },
                "spec": {
                    "podTemplateRef": { "name": "balloon-application" },
                    "replicas": 3,
                },
            })
        );
        // It is a valid object for the dynamic client.
        let o: DynamicObject = serde_json::from_value(v).unwrap();
        assert_eq!(o.metadata.name.as_deref(), Some("prescale-application"));
        assert_eq!(api_resource().plural, "capacitybuffers");
    }

    #[test]
    fn buffers_follow_fresh_complete_plans_only() {
        use crate::plan::nodepool::{plan, PoolShape, PoolSpec, WorkloadShape, WorkloadSpec};
        let text = "
name: application
node_group_ids: [app]
allocatable: { cpu: 4, memory: 16Gi }
max_nodes: 10
capacity_buffer: { namespace: prescale-balloons, pod_template: balloon-application }
";
        let pool: NodePoolConfig = serde_yaml::from_str(text).unwrap();
        let unbuffered = NodePoolConfig {
            name: "other".into(),
            capacity_buffer: None,
            ..pool.clone()
        };
        let spec = PoolSpec::try_new(PoolShape {
            name: pool.name.clone(),
            node_group_ids: pool.node_group_ids.clone(),
            node_labels: pool.node_labels.clone(),
            allocatable: pool.allocatable.unwrap().resources(),
            max_pods_per_node: pool.max_pods_per_node,
            daemonset_overhead: Default::default(),
            daemonset_pods: 0,
            provisioning_delay_s: 180,
            min_nodes: pool.min_nodes,
            max_nodes: pool.max_nodes,
        })
        .unwrap();
        let mut web = WorkloadSpec::try_new(WorkloadShape {
            name: "web".into(),
            pool: "application".into(),
            target_per_replica: 1.0,
            pod_requests: crate::plan::nodepool::Resources::new(2000, 1 << 30),
            min_replicas: 1,
            max_replicas: 100,
        })
        .unwrap()
        .with_forecast(Some(8.0))
        .with_current_replicas(2);
        // 8 pods of 2 cpu: 4 nodes; the 2 running take 1: 3 balloons.
        let p = plan(
            std::slice::from_ref(&spec),
            std::slice::from_ref(&web),
            &Default::default(),
            1_000,
        );
        let pools = [pool, unbuffered];
        let d = desired(&pools, Some(&p), 2_000, 60_000);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].0.as_str(), d[0].2), ("application", 3));
        assert!(
            desired(&pools, Some(&p), 100_000, 60_000).is_empty(),
            "stale"
        );
        assert!(desired(&pools, None, 2_000, 60_000).is_empty());
        web.forecast = None;
        let p = plan(&[spec], &[web], &Default::default(), 1_000);
        assert!(
            desired(&pools, Some(&p), 2_000, 60_000).is_empty(),
            "incomplete"
        );
    }

    /// An in-memory kube-apiserver holding CapacityBuffers; records every call.
    #[derive(Default)]
    struct FakeApi {
        objects: std::collections::BTreeMap<String, Value>,
        calls: Vec<String>,
    }

    const BASE: &str =
        "/apis/autoscaling.x-k8s.io/v1beta1/namespaces/prescale-balloons/capacitybuffers";

    impl FakeApi {
        fn handle(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
            self.calls.push(format!("{method} {path}"));
            let not_found = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "reason": "NotFound", "code": 404});
            let name = path
                .strip_prefix(BASE)
                .unwrap_or("")
                .trim_start_matches('/');
            match method {
                "GET" => self
                    .objects
                    .get(name)
                    .map_or((404, not_found), |o| (200, o.clone())),
                "POST" | "PUT" => {
                    let mut o: Value = serde_json::from_slice(body).unwrap();
                    o["metadata"]["resourceVersion"] = json!("1");
                    let key = o["metadata"]["name"].as_str().unwrap().to_string();
                    self.objects.insert(key, o.clone());
                    (if method == "POST" { 201 } else { 200 }, o)
                }
                _ => (405, not_found),
            }
        }
    }

    fn client(api: Arc<std::sync::Mutex<FakeApi>>) -> Client {
        crate::kube::fake_client(move |method, uri, body| {
            api.lock().unwrap().handle(method, uri.path(), body)
        })
    }

    #[tokio::test]
    async fn the_writer_creates_then_updates_and_dry_run_only_reads() {
        let api = Arc::new(std::sync::Mutex::new(FakeApi::default()));
        let c = client(api.clone());
        let item = format!("{BASE}/prescale-application");
        let calls =
            |api: &Arc<std::sync::Mutex<FakeApi>>| std::mem::take(&mut api.lock().unwrap().calls);

        // Dry run: read, nothing written.
        sync_one(&c, "application", &buffer_ref(), 3, true)
            .await
            .unwrap();
        assert_eq!(calls(&api), [format!("GET {item}")]);
        assert!(api.lock().unwrap().objects.is_empty());

        sync_one(&c, "application", &buffer_ref(), 3, false)
            .await
            .unwrap();
        assert_eq!(calls(&api), [format!("GET {item}"), format!("POST {BASE}")]);
        sync_one(&c, "application", &buffer_ref(), 3, false)
            .await
            .unwrap();
        assert_eq!(calls(&api), [format!("GET {item}")], "unchanged: no write");
        sync_one(&c, "application", &buffer_ref(), 5, false)
            .await
            .unwrap();
        assert_eq!(calls(&api), [format!("GET {item}"), format!("PUT {item}")]);
        let stored = api.lock().unwrap().objects["prescale-application"].clone();
        assert_eq!(stored["spec"]["replicas"], 5);
        assert_eq!(
            stored["spec"]["podTemplateRef"]["name"],
            "balloon-application"
        );

        // Someone else's buffer of that name is left alone.
        api.lock()
            .unwrap()
            .objects
            .get_mut("prescale-application")
            .unwrap()["metadata"]["labels"] = json!({});
        sync_one(&c, "application", &buffer_ref(), 7, false)
            .await
            .unwrap();
        assert_eq!(calls(&api), [format!("GET {item}")]);
    }

    #[test]
    fn writes_only_what_changed_and_only_its_own() {
        let desired3 = buffer_object("application", &buffer_ref(), 3);
        assert_eq!(
            decide(None, desired3.clone()),
            Write::Create(desired3.clone())
        );

        let mut existing = buffer_object("application", &buffer_ref(), 3);
        existing["metadata"]["resourceVersion"] = json!("77");
        existing["metadata"]["labels"]["team"] = json!("platform");
        existing["spec"]["provisioningStrategy"] = json!("buffer.x-k8s.io/active-capacity");
        existing["status"] = json!({"replicas": 3});
        assert_eq!(decide(Some(&existing), desired3), Write::Unchanged);

        let desired5 = buffer_object("application", &buffer_ref(), 5);
        let Write::Replace(next) = decide(Some(&existing), desired5) else {
            panic!("expected a replacement");
        };
        assert_eq!(next["spec"]["replicas"], 5);
        assert_eq!(next["metadata"]["resourceVersion"], "77");
        assert_eq!(next["metadata"]["labels"]["team"], "platform");
        assert_eq!(
            next["spec"]["provisioningStrategy"],
            "buffer.x-k8s.io/active-capacity"
        );
        assert!(next.get("status").is_none());

        let mut foreign = existing.clone();
        foreign["metadata"]["labels"] = json!({"team": "platform"});
        assert_eq!(
            decide(
                Some(&foreign),
                buffer_object("application", &buffer_ref(), 5)
            ),
            Write::Foreign
        );
    }
}
