//! Leader election on a `coordination.k8s.io/v1` Lease, so that only one replica
//! writes CapacityBuffers.
//!
//! [`Elector`] is a pure state machine over time: given the Lease as read (or its
//! absence) it says what to write, and from the outcome of that write whether this
//! replica leads. As in client-go, another holder's claim is judged by when *this*
//! replica saw the record change, on its own clock, never by the timestamps written
//! in it: clocks of different nodes need not agree. [`KubeLease`] is the thin
//! adapter that reads and writes the object.

use ::kube::api::{Api, PostParams};
use ::kube::Client;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

/// Why the Lease could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Someone else wrote the Lease between our read and our write.
    #[error("lease {name}: changed by another writer")]
    Conflict {
        /// The Lease's name.
        name: String,
    },
    /// The API call failed.
    #[error("lease {name}: {what}")]
    Api {
        /// The Lease's name.
        name: String,
        /// What was being done.
        what: &'static str,
        /// The client error.
        #[source]
        source: Box<::kube::Error>,
    },
}

/// Result with this module's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The parts of a Lease the election reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Who holds it; empty when released.
    pub holder: String,
    /// How long a claim lasts without renewal, in seconds.
    pub duration_s: i32,
    /// When the holder acquired it (unix ms, the holder's clock).
    pub acquire_ms: Option<i64>,
    /// When the holder last renewed it (unix ms, the holder's clock).
    pub renew_ms: Option<i64>,
    /// How many times it changed hands.
    pub transitions: i32,
}

/// What to do after reading the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No Lease exists: create this one.
    Create(LeaseRecord),
    /// Write this record over the one read (a renewal or a takeover).
    Update(LeaseRecord),
    /// Another replica holds a live claim: do nothing.
    Follow {
        /// The holder.
        holder: String,
    },
}

/// The election state of one replica.
#[derive(Debug, Clone)]
pub struct Elector {
    identity: String,
    duration_ms: i64,
    /// The last record read and when (our clock) it was first seen that way.
    observed: Option<(LeaseRecord, i64)>,
    /// Until when our last successful write lets us lead.
    leading_until_ms: Option<i64>,
}

impl Elector {
    /// A replica called `identity` (unique: the pod name), with claims lasting
    /// `duration_ms`.
    pub fn new(identity: impl Into<String>, duration_ms: i64) -> Self {
        Self {
            identity: identity.into(),
            duration_ms: duration_ms.max(1_000),
            observed: None,
            leading_until_ms: None,
        }
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How often to read and renew: a third of the claim, so two renewals can fail
    /// before it lapses.
    pub fn renew_every_ms(&self) -> i64 {
        self.duration_ms / 3
    }

    fn duration_s(&self) -> i32 {
        i32::try_from((self.duration_ms + 999) / 1_000).unwrap_or(i32::MAX)
    }

    /// What to write at `now_ms`, given the Lease as just read (`None`: absent).
    pub fn step(&mut self, now_ms: i64, current: Option<&LeaseRecord>) -> Step {
        let Some(current) = current else {
            return Step::Create(LeaseRecord {
                holder: self.identity.clone(),
                duration_s: self.duration_s(),
                acquire_ms: Some(now_ms),
                renew_ms: Some(now_ms),
                transitions: 0,
            });
        };
        let seen_at = match &self.observed {
            Some((record, at)) if record == current => *at,
            _ => {
                self.observed = Some((current.clone(), now_ms));
                now_ms
            }
        };
        if current.holder == self.identity {
            return Step::Update(LeaseRecord {
                renew_ms: Some(now_ms),
                duration_s: self.duration_s(),
                ..current.clone()
            });
        }
        // The holder's own duration, by when we saw its last renewal.
        let claim_ms = i64::from(current.duration_s.max(1)) * 1_000;
        if current.holder.is_empty() || now_ms >= seen_at.saturating_add(claim_ms) {
            return Step::Update(LeaseRecord {
                holder: self.identity.clone(),
                duration_s: self.duration_s(),
                acquire_ms: Some(now_ms),
                renew_ms: Some(now_ms),
                transitions: current.transitions.saturating_add(1),
            });
        }
        self.leading_until_ms = None;
        Step::Follow {
            holder: current.holder.clone(),
        }
    }

    /// `record` was written by a call that started at `started_ms`: we lead until
    /// the claim, counted from then, is four-fifths over (the margin covers the
    /// write's latency and others' clock rates).
    pub fn written(&mut self, record: &LeaseRecord, started_ms: i64) {
        self.observed = Some((record.clone(), started_ms));
        self.leading_until_ms = Some(started_ms + self.duration_ms - self.duration_ms / 5);
    }

    /// The write lost a race: someone else holds the Lease now.
    pub fn conflicted(&mut self) {
        self.leading_until_ms = None;
        self.observed = None;
    }

    /// Whether this replica leads at `now_ms`. A failed renewal (other than a
    /// conflict) keeps leadership only until the last claim runs out.
    pub fn is_leader(&self, now_ms: i64) -> bool {
        self.leading_until_ms.is_some_and(|t| now_ms < t)
    }
}

fn micro(ms: Option<i64>) -> Option<MicroTime> {
    ms.and_then(k8s_openapi::chrono::DateTime::from_timestamp_millis)
        .map(MicroTime)
}

/// The record of a Lease object.
pub fn record_of(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity.unwrap_or_default(),
        duration_s: spec.lease_duration_seconds.unwrap_or(0),
        acquire_ms: spec.acquire_time.map(|t| t.0.timestamp_millis()),
        renew_ms: spec.renew_time.map(|t| t.0.timestamp_millis()),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

/// The Lease object for `record` (`resource_version` makes an update conditional).
pub fn lease_of(
    namespace: &str,
    name: &str,
    record: &LeaseRecord,
    resource_version: Option<String>,
) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            resource_version,
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: (!record.holder.is_empty()).then(|| record.holder.clone()),
            lease_duration_seconds: Some(record.duration_s),
            acquire_time: micro(record.acquire_ms),
            renew_time: micro(record.renew_ms),
            lease_transitions: Some(record.transitions),
            ..LeaseSpec::default()
        }),
    }
}

/// Reads and writes one Lease (RBAC: `get`, `create`, `update` on `leases` in its
/// namespace).
#[derive(Clone)]
pub struct KubeLease {
    api: Api<Lease>,
    namespace: String,
    name: String,
}

impl std::fmt::Debug for KubeLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLease")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish()
    }
}

impl KubeLease {
    /// The Lease `namespace/name`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// One round at `now_ms`: read, let `elector` decide, write. Returns whether
    /// this replica leads afterwards.
    ///
    /// # Errors
    /// The read or the write failed (a conflict is not an error: it means follow).
    pub async fn round(&self, elector: &mut Elector, now_ms: i64) -> Result<bool> {
        let api_err = |what, source| Error::Api {
            name: self.name.clone(),
            what,
            source: Box::new(source),
        };
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| api_err("reading", e))?;
        let record = current.as_ref().map(record_of);
        let rv = current.and_then(|l| l.metadata.resource_version);
        let step = elector.step(now_ms, record.as_ref());
        let result = match &step {
            Step::Follow { .. } => return Ok(false),
            Step::Create(r) => self
                .api
                .create(
                    &PostParams::default(),
                    &lease_of(&self.namespace, &self.name, r, None),
                )
                .await
                .map(|_| r),
            Step::Update(r) => self
                .api
                .replace(
                    &self.name,
                    &PostParams::default(),
                    &lease_of(&self.namespace, &self.name, r, rv),
                )
                .await
                .map(|_| r),
        };
        match result {
            Ok(r) => {
                elector.written(r, now_ms);
                Ok(true)
            }
            // 409 on update, 409 AlreadyExists on create: another replica won.
            Err(::kube::Error::Api(s)) if s.code == 409 => {
                elector.conflicted();
                Err(Error::Conflict {
                    name: self.name.clone(),
                })
            }
            Err(e) => Err(api_err("writing", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: i64 = 15_000;

    fn written(e: &mut Elector, step: Step, at: i64) -> LeaseRecord {
        let r = match step {
            Step::Create(r) | Step::Update(r) => r,
            Step::Follow { holder } => panic!("expected a write, got follow {holder}"),
        };
        e.written(&r, at);
        r
    }

    #[test]
    fn creates_a_missing_lease_and_renews_it() {
        let mut a = Elector::new("a", D);
        assert!(!a.is_leader(0));
        let s = a.step(1_000, None);
        assert!(matches!(&s, Step::Create(r) if r.holder == "a" && r.duration_s == 15));
        let r = written(&mut a, s, 1_000);
        assert!(a.is_leader(1_000));
        assert!(a.is_leader(12_999), "four-fifths of the claim");
        assert!(!a.is_leader(13_000));
        // Renewal keeps the acquire time and the transitions.
        let s = a.step(6_000, Some(&r));
        let r2 = written(&mut a, s, 6_000);
        assert_eq!(r2.acquire_ms, Some(1_000));
        assert_eq!(r2.renew_ms, Some(6_000));
        assert_eq!(r2.transitions, 0);
        assert!(a.is_leader(17_000));
        assert_eq!(a.renew_every_ms(), 5_000);
    }

    #[test]
    fn follows_a_live_holder_and_takes_over_when_it_stops_renewing() {
        let mut b = Elector::new("b", D);
        let held = LeaseRecord {
            holder: "a".into(),
            duration_s: 15,
            acquire_ms: Some(0),
            // Written by a's clock, far in b's future: must not matter.
            renew_ms: Some(10_000_000),
            transitions: 3,
        };
        assert_eq!(
            b.step(100_000, Some(&held)),
            Step::Follow { holder: "a".into() }
        );
        // Unchanged for less than a's duration (by b's clock): still follow.
        assert!(matches!(b.step(114_999, Some(&held)), Step::Follow { .. }));
        assert!(!b.is_leader(114_999));
        // a renews: the record changes, the clock restarts.
        let renewed = LeaseRecord {
            renew_ms: Some(10_005_000),
            ..held.clone()
        };
        assert!(matches!(
            b.step(114_999, Some(&renewed)),
            Step::Follow { .. }
        ));
        assert!(matches!(
            b.step(129_998, Some(&renewed)),
            Step::Follow { .. }
        ));
        // Unchanged for a whole duration: take over.
        let s = b.step(129_999, Some(&renewed));
        let r = written(&mut b, s, 129_999);
        assert_eq!(r.holder, "b");
        assert_eq!(r.transitions, 4);
        assert_eq!(r.acquire_ms, Some(129_999));
        assert!(b.is_leader(130_000));
    }

    #[test]
    fn a_released_lease_is_taken_at_once_and_a_conflict_demotes() {
        let mut c = Elector::new("c", D);
        let released = LeaseRecord {
            holder: String::new(),
            duration_s: 15,
            acquire_ms: None,
            renew_ms: None,
            transitions: 1,
        };
        let s = c.step(5, Some(&released));
        let r = written(&mut c, s, 5);
        assert_eq!((r.holder.as_str(), r.transitions), ("c", 2));
        assert!(c.is_leader(10));
        c.conflicted();
        assert!(!c.is_leader(10));
    }

    /// An in-memory kube-apiserver holding one Lease, with optimistic concurrency.
    #[derive(Default)]
    struct FakeApi {
        lease: Option<serde_json::Value>,
        version: u64,
        /// Someone else writes right before the next update.
        interfere: bool,
    }

    const BASE: &str = "/apis/coordination.k8s.io/v1/namespaces/prescale/leases";

    fn status(code: u16, reason: &str) -> (u16, serde_json::Value) {
        let body = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": reason, "reason": reason, "code": code,
        });
        (code, body)
    }

    impl FakeApi {
        fn handle(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
            let item = format!("{BASE}/elect");
            match (method, path) {
                ("GET", p) if p == item => match &self.lease {
                    Some(l) => (200, l.clone()),
                    None => status(404, "NotFound"),
                },
                ("POST", BASE) if self.lease.is_some() => status(409, "AlreadyExists"),
                ("POST", BASE) => {
                    self.version += 1;
                    let mut l: serde_json::Value = serde_json::from_slice(body).unwrap();
                    l["metadata"]["resourceVersion"] = self.version.to_string().into();
                    self.lease = Some(l.clone());
                    (201, l)
                }
                ("PUT", p) if p == item => {
                    if std::mem::take(&mut self.interfere) {
                        self.version += 1;
                    }
                    let mut l: serde_json::Value = serde_json::from_slice(body).unwrap();
                    if l["metadata"]["resourceVersion"] != self.version.to_string().as_str() {
                        return status(409, "Conflict");
                    }
                    self.version += 1;
                    l["metadata"]["resourceVersion"] = self.version.to_string().into();
                    self.lease = Some(l.clone());
                    (200, l)
                }
                _ => status(405, "MethodNotAllowed"),
            }
        }
    }

    fn client(api: std::sync::Arc<std::sync::Mutex<FakeApi>>) -> Client {
        crate::kube::fake_client(move |method, uri, body| {
            api.lock().unwrap().handle(method, uri.path(), body)
        })
    }

    #[tokio::test]
    async fn the_adapter_elects_one_writer_through_the_api() {
        let api = std::sync::Arc::new(std::sync::Mutex::new(FakeApi::default()));
        let lease = KubeLease::new(client(api.clone()), "prescale", "elect");
        let (mut a, mut b) = (Elector::new("a", D), Elector::new("b", D));

        assert!(lease.round(&mut a, 0).await.unwrap(), "a creates the lease");
        assert!(!lease.round(&mut b, 1_000).await.unwrap(), "b follows");
        assert!(lease.round(&mut a, 5_000).await.unwrap(), "a renews");
        assert_eq!(api.lock().unwrap().version, 2);
        assert!(!lease.round(&mut b, 6_000).await.unwrap());
        // a stops renewing; b takes over once the record sat unchanged for 15s.
        assert!(!lease.round(&mut b, 20_000).await.unwrap());
        assert!(lease.round(&mut b, 21_000).await.unwrap());
        assert!(b.is_leader(21_000));
        let stored = api.lock().unwrap().lease.clone().unwrap();
        assert_eq!(stored["spec"]["holderIdentity"], "b");
        assert_eq!(stored["spec"]["leaseTransitions"], 1);
        // a comes back: it follows, and no longer leads.
        assert!(!lease.round(&mut a, 22_000).await.unwrap());
        assert!(!a.is_leader(22_000));
        // A write that loses a race is a conflict: b stops leading at once.
        api.lock().unwrap().interfere = true;
        let e = lease.round(&mut b, 26_000).await.unwrap_err();
        assert!(matches!(e, Error::Conflict { .. }), "{e}");
        assert!(!b.is_leader(26_000));
    }

    #[test]
    fn records_round_trip_through_the_lease_object() {
        let r = LeaseRecord {
            holder: "prescale-abc".into(),
            duration_s: 15,
            acquire_ms: Some(1_700_000_000_123),
            renew_ms: Some(1_700_000_005_456),
            transitions: 2,
        };
        let lease = lease_of(
            "prescale",
            "prescale-capacity-buffers",
            &r,
            Some("42".into()),
        );
        assert_eq!(record_of(&lease), r);
        let json = serde_json::to_value(&lease).unwrap();
        assert_eq!(json["spec"]["holderIdentity"], "prescale-abc");
        assert_eq!(json["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(json["metadata"]["resourceVersion"], "42");
        assert!(json["spec"]["renewTime"]
            .as_str()
            .unwrap()
            .starts_with("2023-11-14T22:13:25.456"));
    }
}
