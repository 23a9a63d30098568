//! deploy/: every kustomization rendered with `kubectl kustomize` and its output
//! checked for the invariants an install depends on (APIServices point at a real
//! Service port, RBAC subjects and roles exist, the ConfigMap's config parses with
//! prescale's own parser, security contexts, probes and args that the real binary
//! accepts), the examples against the base config, and the Grafana dashboard's
//! PromQL against the self-metrics of a running `prescale serve`.
//!
//! Needs kubectl: the pinned one tests/e2e/peers.sh builds, else one on PATH; missing,
//! it skips with the reason outside CI and fails with `CI=true`. The Helm chart
//! (deploy/helm/prescale) is compared with these installs in deploy/helm.rs.

use crate::support;
mod helm;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

use crate::support::prometheus::free_addr;
use crate::support::Killed;

/// RBAC subjects the cluster itself provides (not created by deploy/).
const CLUSTER_SERVICE_ACCOUNTS: &[(&str, &str)] = &[
    // The HPA controller, with kube-controller-manager's
    // --use-service-account-credentials (kubeadm and managed clusters).
    ("kube-system", "horizontal-pod-autoscaler"),
];

/// Roles the cluster itself provides.
const CLUSTER_ROLES: &[&str] = &["system:auth-delegator"];
const KUBE_SYSTEM_ROLES: &[&str] = &["extension-apiserver-authentication-reader"];

/// The seeds' node pools: name, instance type, its cpu (millicores) and memory (GiB),
/// and the pool's maximum node count.
const SEED_POOLS: &[(&str, &str, u64, u64, u64)] = &[
    ("application", "c5.2xlarge", 8_000, 16, 20),
    ("database", "r5.2xlarge", 8_000, 64, 8),
    ("cache", "r5.large", 2_000, 16, 6),
];

/// External metric names served by the node-pool work (src/plan/nodepool.rs).
const NODEPOOL_METRICS: &[&str] = &["prescale_nodepool_nodes", "prescale_nodepool_balloons"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kubectl() -> Option<PathBuf> {
    support::peers::kubectl()
}

/// Every directory under deploy/ that holds a kustomization.yaml.
fn kustomizations() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.file_name().is_some_and(|n| n == "kustomization.yaml") {
                out.push(p.parent().unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo().join("deploy"), &mut out);
    out
}

fn render(kubectl: &Path, dir: &Path) -> Vec<Value> {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    assert!(!docs.is_empty(), "{} renders nothing", dir.display());
    docs
}

/// `v["a"]["b"]...` as a string, or "".
fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or("")
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn seq<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn kind<'a>(docs: &'a [Value], k: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    docs.iter().filter(move |d| s(d, &["kind"]) == k)
}

fn find<'a>(docs: &'a [Value], k: &str, ns: &str, name: &str) -> Option<&'a Value> {
    docs.iter().find(|d| {
        s(d, &["kind"]) == k
            && s(d, &["metadata", "name"]) == name
            && s(d, &["metadata", "namespace"]) == ns
    })
}

fn selects(selector: &Value, labels: &Value) -> bool {
    let Some(want) = selector.as_mapping() else {
        return false;
    };
    !want.is_empty() && want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The installs: kustomizations that contain prescale's Deployment.
fn is_install(docs: &[Value]) -> bool {
    find(docs, "Deployment", "prescale", "prescale").is_some()
}

#[test]
fn every_kustomization_renders_and_the_installs_hold_their_invariants() {
    let Some(kubectl) = kubectl() else { return };
    let dirs = kustomizations();
    let names: BTreeSet<String> = dirs
        .iter()
        .map(|d| d.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    for expected in [
        "deploy/base",
        "deploy/overlays/cert-manager",
        "deploy/overlays/dev",
        "deploy/examples",
    ] {
        assert!(names.contains(expected), "{expected} missing: {names:?}");
    }
    for dir in &dirs {
        let docs = render(&kubectl, dir);
        let at = dir.strip_prefix(repo()).unwrap().display().to_string();
        if is_install(&docs) {
            check_install(&at, &docs);
        }
        check_pod_security(&at, &docs);
    }
}

fn check_install(at: &str, docs: &[Value]) {
    let ns = find(docs, "Namespace", "", "prescale")
        .unwrap_or_else(|| panic!("{at}: Namespace prescale"));
    assert_eq!(
        s(
            ns,
            &["metadata", "labels", "pod-security.kubernetes.io/enforce"]
        ),
        "restricted",
        "{at}: the namespace enforces the restricted Pod Security Standard"
    );
    // Everything lands in prescale's namespace, except the one kube-system binding;
    // and nothing uses the default namespace by omission.
    for d in docs {
        let (k, n) = (s(d, &["kind"]), s(d, &["metadata", "name"]));
        let cluster_scoped = matches!(
            k,
            "Namespace" | "ClusterRole" | "ClusterRoleBinding" | "APIService" | "PriorityClass"
        );
        let dns = s(d, &["metadata", "namespace"]);
        if cluster_scoped {
            assert_eq!(dns, "", "{at}: {k} {n} is cluster-scoped");
        } else if k == "RoleBinding" && dns == "kube-system" {
            assert_eq!(
                s(d, &["roleRef", "name"]),
                "extension-apiserver-authentication-reader",
                "{at}: {n}"
            );
        } else {
            assert_eq!(
                dns, "prescale",
                "{at}: {k} {n} must be in namespace prescale"
            );
        }
    }
    check_apiservices(at, docs);
    check_rbac(at, docs);
    let config = check_deployment(at, docs);
    check_service_matches_config(at, docs, &config);
    match at {
        "deploy/base" => {
            for a in kind(docs, "APIService") {
                assert!(
                    get(a, &["spec", "insecureSkipTLSVerify"]).is_none(),
                    "{at}: base must not skip TLS verification"
                );
            }
        }
        "deploy/overlays/cert-manager" => check_cert_manager(at, docs, &config),
        "deploy/overlays/dev" => {
            for a in kind(docs, "APIService") {
                assert_eq!(
                    get(a, &["spec", "insecureSkipTLSVerify"]),
                    Some(&Value::Bool(true)),
                    "{at}: {}",
                    s(a, &["metadata", "name"])
                );
                assert_eq!(
                    s(a, &["metadata", "labels", "prescale.io/insecure"]),
                    "dev-only-not-for-production"
                );
            }
            assert!(
                config.server.tls.cert_file.is_none(),
                "{at}: dev generates its certificate"
            );
        }
        other => {
            // A new install must be given its own expectations here.
            panic!("{other}: an install this test does not know about");
        }
    }
}

fn check_apiservices(at: &str, docs: &[Value]) {
    let mut seen = BTreeMap::new();
    for a in kind(docs, "APIService") {
        let name = s(a, &["metadata", "name"]);
        let (svc, ns) = (
            s(a, &["spec", "service", "name"]),
            s(a, &["spec", "service", "namespace"]),
        );
        let port = get(a, &["spec", "service", "port"])
            .and_then(Value::as_u64)
            .unwrap_or(443);
        let service = find(docs, "Service", ns, svc).unwrap_or_else(|| {
            panic!("{at}: APIService {name} points at missing Service {ns}/{svc}")
        });
        assert!(
            seq(service, &["spec", "ports"])
                .iter()
                .any(|p| get(p, &["port"]).and_then(Value::as_u64) == Some(port)),
            "{at}: APIService {name} points at port {port}, absent from Service {ns}/{svc}"
        );
        let group = s(a, &["spec", "group"]);
        let version = s(a, &["spec", "version"]);
        assert_eq!(name, format!("{version}.{group}"), "{at}: APIService name");
        assert_eq!(
            get(a, &["spec", "groupPriorityMinimum"]).and_then(Value::as_u64),
            Some(100),
            "{at}: {name} groupPriorityMinimum"
        );
        let vp = get(a, &["spec", "versionPriority"])
            .and_then(Value::as_u64)
            .unwrap_or(0);
        assert!(vp > 0, "{at}: {name} versionPriority");
        seen.insert(name.to_string(), vp);
    }
    let names: Vec<&str> = seen.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "v1beta1.custom.metrics.k8s.io",
            "v1beta1.external.metrics.k8s.io",
            "v1beta2.custom.metrics.k8s.io"
        ],
        "{at}"
    );
    assert!(
        seen["v1beta2.custom.metrics.k8s.io"] > seen["v1beta1.custom.metrics.k8s.io"],
        "{at}: v1beta2 must be the preferred custom.metrics version"
    );
}

fn check_rbac(at: &str, docs: &[Value]) {
    let prescale_sa = find(docs, "ServiceAccount", "prescale", "prescale");
    assert!(
        prescale_sa.is_some(),
        "{at}: ServiceAccount prescale/prescale"
    );
    let mut bound_roles = Vec::new();
    for b in kind(docs, "ClusterRoleBinding").chain(kind(docs, "RoleBinding")) {
        let bname = s(b, &["metadata", "name"]);
        let bns = s(b, &["metadata", "namespace"]);
        let subjects = seq(b, &["subjects"]);
        assert!(
            !subjects.is_empty(),
            "{at}: binding {bname} has no subjects"
        );
        for subject in subjects {
            assert_eq!(s(subject, &["kind"]), "ServiceAccount", "{at}: {bname}");
            let (ns, name) = (s(subject, &["namespace"]), s(subject, &["name"]));
            assert!(
                find(docs, "ServiceAccount", ns, name).is_some()
                    || CLUSTER_SERVICE_ACCOUNTS.contains(&(ns, name)),
                "{at}: binding {bname} names ServiceAccount {ns}/{name}, which does not exist"
            );
        }
        let (rkind, rname) = (s(b, &["roleRef", "kind"]), s(b, &["roleRef", "name"]));
        let exists = match rkind {
            "ClusterRole" => {
                find(docs, "ClusterRole", "", rname).is_some() || CLUSTER_ROLES.contains(&rname)
            }
            "Role" => {
                find(docs, "Role", bns, rname).is_some()
                    || (bns == "kube-system" && KUBE_SYSTEM_ROLES.contains(&rname))
            }
            other => panic!("{at}: binding {bname}: roleRef kind {other}"),
        };
        assert!(
            exists,
            "{at}: binding {bname} refers to missing {rkind} {rname}"
        );
        if subjects
            .iter()
            .any(|x| s(x, &["namespace"]) == "prescale" && s(x, &["name"]) == "prescale")
        {
            bound_roles.push((b.clone(), rkind.to_string(), rname.to_string()));
        }
    }
    let bound = |k: &str, name: &str, ns: &str| {
        bound_roles
            .iter()
            .any(|(b, rk, rn)| rk == k && rn == name && s(b, &["metadata", "namespace"]) == ns)
    };
    assert!(
        bound("ClusterRole", "system:auth-delegator", ""),
        "{at}: auth-delegator"
    );
    assert!(
        bound(
            "Role",
            "extension-apiserver-authentication-reader",
            "kube-system"
        ),
        "{at}: extension-apiserver-authentication-reader in kube-system"
    );
    // What prescale's own roles grant, as (group, resource, verb).
    let mut grants = BTreeSet::new();
    for (b, rk, rn) in &bound_roles {
        let ns = s(b, &["metadata", "namespace"]);
        let role = if rk == "ClusterRole" {
            find(docs, "ClusterRole", "", rn)
        } else {
            find(docs, "Role", ns, rn)
        };
        for rule in role.map(|r| seq(r, &["rules"])).unwrap_or(&[]) {
            for g in seq(rule, &["apiGroups"]) {
                for r in seq(rule, &["resources"]) {
                    for v in seq(rule, &["verbs"]) {
                        grants.insert((
                            g.as_str().unwrap().to_string(),
                            r.as_str().unwrap().to_string(),
                            v.as_str().unwrap().to_string(),
                        ));
                    }
                }
            }
        }
    }
    for (g, r, v) in [
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "namespaces", "get"),
        ("", "nodes", "list"),
        ("", "nodes", "watch"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "update"),
        ("coordination.k8s.io", "leases", "create"),
        ("autoscaling.x-k8s.io", "capacitybuffers", "get"),
        ("autoscaling.x-k8s.io", "capacitybuffers", "create"),
        ("autoscaling.x-k8s.io", "capacitybuffers", "update"),
    ] {
        assert!(
            grants.contains(&(g.to_string(), r.to_string(), v.to_string())),
            "{at}: prescale may not {v} {r} in group {g:?}"
        );
    }
    // The lease and the buffers get exactly what src/kube/lease.rs and
    // src/kube/buffers.rs call: no delete, no status, no watch.
    for (group, resource) in [
        ("coordination.k8s.io", "leases"),
        ("autoscaling.x-k8s.io", "capacitybuffers"),
    ] {
        let verbs: BTreeSet<&str> = grants
            .iter()
            .filter(|(g, r, _)| g == group && r == resource)
            .map(|(_, _, v)| v.as_str())
            .collect();
        assert_eq!(
            verbs,
            BTreeSet::from(["create", "get", "update"]),
            "{at}: {resource}"
        );
    }
    assert!(
        !grants
            .iter()
            .any(|(_, r, _)| r.starts_with("capacitybuffers/")),
        "{at}: prescale never writes a buffer's status"
    );
    // prescale reads, it never writes workloads or secrets.
    assert!(
        !grants.iter().any(|(_, r, _)| r == "secrets" || r == "*"),
        "{at}: prescale's roles are too broad: {grants:?}"
    );
    // The HPA controller may read the metrics (prescale authorizes by SAR).
    let hpa_reads = kind(docs, "ClusterRoleBinding").any(|b| {
        seq(b, &["subjects"]).iter().any(|x| {
            s(x, &["namespace"]) == "kube-system" && s(x, &["name"]) == "horizontal-pod-autoscaler"
        }) && find(docs, "ClusterRole", "", s(b, &["roleRef", "name"])).is_some_and(|r| {
            seq(r, &["rules"]).iter().any(|rule| {
                seq(rule, &["apiGroups"])
                    .iter()
                    .any(|g| g.as_str() == Some("external.metrics.k8s.io"))
                    && seq(rule, &["verbs"])
                        .iter()
                        .any(|v| v.as_str() == Some("get"))
            })
        })
    });
    assert!(
        hpa_reads,
        "{at}: the HPA controller cannot read external metrics"
    );
}

/// Checks the Deployment and returns the configuration it runs with.
fn check_deployment(at: &str, docs: &[Value]) -> prescale::config::Config {
    let d = find(docs, "Deployment", "prescale", "prescale").unwrap();
    assert_eq!(
        get(d, &["spec", "replicas"]).and_then(Value::as_u64),
        Some(2),
        "{at}: replicas"
    );
    let pod = get(d, &["spec", "template"]).unwrap();
    let labels = get(pod, &["metadata", "labels"]).unwrap();
    assert!(
        selects(
            get(d, &["spec", "selector", "matchLabels"]).unwrap(),
            labels
        ),
        "{at}: the Deployment's selector does not select its pods"
    );
    let sa = s(pod, &["spec", "serviceAccountName"]);
    assert!(
        find(docs, "ServiceAccount", "prescale", sa).is_some(),
        "{at}: ServiceAccount {sa}"
    );
    // Disruption budget and spreading.
    let pdb = kind(docs, "PodDisruptionBudget")
        .find(|p| {
            selects(
                get(p, &["spec", "selector", "matchLabels"]).unwrap_or(&Value::Null),
                labels,
            )
        })
        .unwrap_or_else(|| panic!("{at}: no PodDisruptionBudget selects prescale's pods"));
    assert_eq!(
        get(pdb, &["spec", "minAvailable"]).and_then(Value::as_u64),
        Some(1),
        "{at}: PDB"
    );
    let anti = get(pod, &["spec", "affinity", "podAntiAffinity"]).unwrap();
    let terms: Vec<&Value> = seq(anti, &["preferredDuringSchedulingIgnoredDuringExecution"])
        .iter()
        .filter_map(|t| get(t, &["podAffinityTerm"]))
        .chain(seq(
            anti,
            &["requiredDuringSchedulingIgnoredDuringExecution"],
        ))
        .collect();
    assert!(
        terms
            .iter()
            .any(|t| s(t, &["topologyKey"]) == "kubernetes.io/hostname"
                && selects(
                    get(t, &["labelSelector", "matchLabels"]).unwrap_or(&Value::Null),
                    labels
                )),
        "{at}: no anti-affinity across nodes"
    );
    check_pod_spec_security(at, pod);
    let containers = seq(pod, &["spec", "containers"]);
    assert_eq!(containers.len(), 1, "{at}");
    let c = &containers[0];
    // Image: prescale at the crate's version.
    let image = s(c, &["image"]);
    assert!(
        image.ends_with(&format!("/prescale:{}", env!("CARGO_PKG_VERSION"))),
        "{at}: image {image} is not prescale:{}",
        env!("CARGO_PKG_VERSION")
    );
    for r in ["cpu", "memory"] {
        assert!(
            get(c, &["resources", "requests", r]).is_some(),
            "{at}: requests.{r}"
        );
        assert!(
            get(c, &["resources", "limits", r]).is_some(),
            "{at}: limits.{r}"
        );
    }
    // Args: accepted by the real binary (clap rejects unknown flags and bad values
    // before it prints the help).
    let args: Vec<String> = seq(c, &["args"])
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        args.first().map(String::as_str),
        Some("serve"),
        "{at}: args {args:?}"
    );
    assert!(
        seq(c, &["command"]).is_empty(),
        "{at}: the image's entrypoint is the binary"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{at}: prescale rejects the container args {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The config file: --config names a key of the mounted ConfigMap.
    let config_path = args
        .iter()
        .find_map(|a| a.strip_prefix("--config="))
        .unwrap_or_else(|| panic!("{at}: no --config=FILE in {args:?}"));
    let volumes = seq(pod, &["spec", "volumes"]);
    let mounts = seq(c, &["volumeMounts"]);
    for m in mounts {
        assert!(
            volumes.iter().any(|v| s(v, &["name"]) == s(m, &["name"])),
            "{at}: volumeMount {} has no volume",
            s(m, &["name"])
        );
    }
    let mount_of = |path: &str| {
        mounts
            .iter()
            .filter(|m| Path::new(path).starts_with(s(m, &["mountPath"])))
            .max_by_key(|m| s(m, &["mountPath"]).len())
            .map(|m| {
                let v = volumes
                    .iter()
                    .find(|v| s(v, &["name"]) == s(m, &["name"]))
                    .unwrap();
                (m, v)
            })
    };
    let (m, v) = mount_of(config_path).unwrap_or_else(|| panic!("{at}: {config_path} not mounted"));
    let cm_name = s(v, &["configMap", "name"]);
    let key = Path::new(config_path)
        .strip_prefix(s(m, &["mountPath"]))
        .unwrap()
        .display()
        .to_string();
    let cm = find(docs, "ConfigMap", "prescale", cm_name)
        .unwrap_or_else(|| panic!("{at}: ConfigMap prescale/{cm_name} missing"));
    let text = s(cm, &["data", &key]);
    assert!(
        !text.is_empty(),
        "{at}: ConfigMap {cm_name} has no key {key}"
    );
    let config = prescale::config::Config::from_yaml(text)
        .unwrap_or_else(|e| panic!("{at}: ConfigMap {cm_name}/{key} does not parse: {e:?}"));
    assert_eq!(
        config.server.auth.mode,
        prescale::config::AuthMode::Kubernetes,
        "{at}: in-cluster auth"
    );
    // Certificate files live on a mounted Secret; the generated pair on a writable volume.
    match (&config.server.tls.cert_file, &config.server.tls.key_file) {
        (Some(cert), Some(key)) => {
            for f in [cert, key] {
                let (_, v) = mount_of(&f.display().to_string())
                    .unwrap_or_else(|| panic!("{at}: {} not mounted", f.display()));
                let secret = s(v, &["secret", "secretName"]);
                assert!(
                    !secret.is_empty(),
                    "{at}: {} is not on a Secret volume",
                    f.display()
                );
            }
        }
        (None, None) => {
            let dir = config.server.tls.cert_dir.display().to_string();
            let (m, v) = mount_of(&dir)
                .unwrap_or_else(|| panic!("{at}: cert_dir {dir} not on a volume (read-only root)"));
            assert!(
                get(v, &["emptyDir"]).is_some(),
                "{at}: cert_dir must be writable"
            );
            assert_ne!(
                get(m, &["readOnly"]),
                Some(&Value::Bool(true)),
                "{at}: cert_dir read-only"
            );
        }
        _ => panic!("{at}: cert_file and key_file go together"),
    }
    // Ports and probes: named container ports matching the config's addresses.
    let port = |name: &str| {
        seq(c, &["ports"])
            .iter()
            .find(|p| s(p, &["name"]) == name)
            .and_then(|p| get(p, &["containerPort"]))
            .and_then(Value::as_u64)
    };
    assert_eq!(
        port("https"),
        Some(u64::from(config.server.https_address.port())),
        "{at}: https port"
    );
    assert_eq!(
        port("http"),
        Some(u64::from(config.server.http_address.port())),
        "{at}: http port"
    );
    assert!(port("grpc-expander").is_some(), "{at}: grpc-expander port");
    for (probe, path) in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")] {
        let p = get(c, &[probe, "httpGet"]).unwrap_or_else(|| panic!("{at}: {probe}"));
        assert_eq!(s(p, &["path"]), path, "{at}: {probe}");
        let named = s(p, &["port"]);
        assert_eq!(
            port(named),
            port("http"),
            "{at}: {probe} must probe the plain-HTTP port"
        );
    }
    config
}

fn check_service_matches_config(at: &str, docs: &[Value], config: &prescale::config::Config) {
    let svc = find(docs, "Service", "prescale", "prescale").unwrap();
    let d = find(docs, "Deployment", "prescale", "prescale").unwrap();
    let pod = get(d, &["spec", "template"]).unwrap();
    assert!(
        selects(
            get(svc, &["spec", "selector"]).unwrap(),
            get(pod, &["metadata", "labels"]).unwrap()
        ),
        "{at}: the Service does not select prescale's pods"
    );
    let c = &seq(pod, &["spec", "containers"])[0];
    let container_port = |target: &Value| -> Option<u64> {
        match target {
            Value::String(name) => seq(c, &["ports"])
                .iter()
                .find(|p| s(p, &["name"]) == name)
                .and_then(|p| get(p, &["containerPort"]))
                .and_then(Value::as_u64),
            other => other.as_u64(),
        }
    };
    let mut by_name = BTreeMap::new();
    for p in seq(svc, &["spec", "ports"]) {
        let target = get(p, &["targetPort"]).unwrap();
        let cp = container_port(target).unwrap_or_else(|| {
            panic!(
                "{at}: Service port {} targets no container port",
                s(p, &["name"])
            )
        });
        by_name.insert(s(p, &["name"]).to_string(), cp);
    }
    assert_eq!(
        by_name.get("https"),
        Some(&u64::from(config.server.https_address.port())),
        "{at}"
    );
    assert_eq!(
        by_name.get("metrics"),
        Some(&u64::from(config.server.http_address.port())),
        "{at}"
    );
    // The expander listens where the Service's grpc-expander port sends traffic,
    // and the Service port is the one the cluster-autoscaler flags dial.
    let expander = config
        .expander
        .as_ref()
        .unwrap_or_else(|| panic!("{at}: the install's config starts no expander"));
    assert_eq!(
        by_name.get("grpc-expander"),
        Some(&u64::from(expander.address.port())),
        "{at}: grpc-expander targets another port than expander.address"
    );
    let grpc_port = seq(svc, &["spec", "ports"])
        .iter()
        .find(|p| s(p, &["name"]) == "grpc-expander")
        .and_then(|p| get(p, &["port"]))
        .and_then(Value::as_u64);
    assert_eq!(
        grpc_port,
        Some(8443),
        "{at}: examples/cluster-autoscaler-flags.yaml dials 8443"
    );
    // The KEDA scaler listens where the Service's grpc-keda port sends traffic.
    if let Some(keda) = &config.server.keda_scaler {
        assert_eq!(
            by_name.get("grpc-keda"),
            Some(&u64::from(keda.address.port())),
            "{at}: grpc-keda targets another port than server.keda_scaler.address"
        );
    }
    // The expander serves the API's certificate: it must name the Service.
    if expander.cert_file.is_none() && config.server.tls.cert_file.is_none() {
        assert!(
            config
                .server
                .tls
                .dns_names
                .iter()
                .any(|n| n == "prescale.prescale.svc"),
            "{at}: the generated certificate does not name prescale.prescale.svc"
        );
    }
}

fn check_cert_manager(at: &str, docs: &[Value], config: &prescale::config::Config) {
    let svc_names = [
        "prescale.prescale.svc",
        "prescale.prescale.svc.cluster.local",
    ];
    for a in kind(docs, "APIService") {
        let from = s(
            a,
            &["metadata", "annotations", "cert-manager.io/inject-ca-from"],
        );
        let (ns, name) = from
            .split_once('/')
            .unwrap_or_else(|| panic!("{at}: inject-ca-from {from:?}"));
        let cert = find(docs, "Certificate", ns, name)
            .unwrap_or_else(|| panic!("{at}: inject-ca-from names missing Certificate {from}"));
        let dns: Vec<&str> = seq(cert, &["spec", "dnsNames"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for n in svc_names {
            assert!(dns.contains(&n), "{at}: Certificate {from} lacks {n}");
        }
        // The Deployment mounts the very Secret this Certificate writes.
        let secret = s(cert, &["spec", "secretName"]);
        let d = find(docs, "Deployment", "prescale", "prescale").unwrap();
        assert!(
            seq(d, &["spec", "template", "spec", "volumes"])
                .iter()
                .any(|v| s(v, &["secret", "secretName"]) == secret),
            "{at}: the Deployment does not mount Secret {secret}"
        );
        let issuer = s(cert, &["spec", "issuerRef", "name"]);
        assert!(
            find(docs, "Issuer", ns, issuer).is_some(),
            "{at}: Issuer {issuer}"
        );
        assert!(get(a, &["spec", "insecureSkipTLSVerify"]).is_none(), "{at}");
    }
    assert!(
        config.server.tls.cert_file.is_some(),
        "{at}: serves the issued certificate"
    );
}

fn check_pod_spec_security(at: &str, pod: &Value) {
    let psc = get(pod, &["spec", "securityContext"]).unwrap_or(&Value::Null);
    for c in seq(pod, &["spec", "containers"])
        .iter()
        .chain(seq(pod, &["spec", "initContainers"]))
    {
        let name = s(c, &["name"]);
        let csc = get(c, &["securityContext"]).unwrap_or(&Value::Null);
        let either = |k: &str| get(csc, &[k]).or_else(|| get(psc, &[k]));
        assert_eq!(
            either("runAsNonRoot"),
            Some(&Value::Bool(true)),
            "{at}: {name} runAsNonRoot"
        );
        assert_eq!(
            get(csc, &["allowPrivilegeEscalation"]),
            Some(&Value::Bool(false)),
            "{at}: {name} allowPrivilegeEscalation"
        );
        assert_eq!(
            get(csc, &["readOnlyRootFilesystem"]),
            Some(&Value::Bool(true)),
            "{at}: {name} readOnlyRootFilesystem"
        );
        let drop: Vec<&str> = seq(csc, &["capabilities", "drop"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(drop, ["ALL"], "{at}: {name} capabilities.drop");
        assert!(
            seq(csc, &["capabilities", "add"]).is_empty(),
            "{at}: {name} adds capabilities"
        );
        let seccomp = either("seccompProfile")
            .map(|p| s(p, &["type"]))
            .unwrap_or("");
        assert_eq!(seccomp, "RuntimeDefault", "{at}: {name} seccompProfile");
        assert_ne!(
            get(csc, &["privileged"]),
            Some(&Value::Bool(true)),
            "{at}: {name}"
        );
    }
}

/// Every workload any kustomization renders meets the restricted profile.
fn check_pod_security(at: &str, docs: &[Value]) {
    for d in docs
        .iter()
        .filter(|d| matches!(s(d, &["kind"]), "Deployment" | "StatefulSet" | "DaemonSet"))
    {
        check_pod_spec_security(at, get(d, &["spec", "template"]).unwrap());
    }
}

#[test]
fn examples_refer_to_metrics_prescale_serves() {
    let Some(kubectl) = kubectl() else { return };
    let docs = render(&kubectl, &repo().join("deploy/examples"));
    let base =
        prescale::config::Config::from_file(&repo().join("deploy/base/prescale.yaml")).unwrap();
    let signals: BTreeSet<&str> = base.signals.iter().map(|s| s.name.as_str()).collect();
    let mut kinds = BTreeMap::new();
    for h in kind(&docs, "HorizontalPodAutoscaler") {
        let name = s(h, &["metadata", "name"]).to_string();
        assert!(
            get(h, &["spec", "behavior", "scaleUp"]).is_some(),
            "{name}: behavior"
        );
        assert!(
            get(h, &["spec", "behavior", "scaleDown"]).is_some(),
            "{name}: behavior"
        );
        // The behavior is valid by the rules the backtester's HPA model enforces
        // (known fields, policy values and periods in range).
        let manifest = serde_yaml::to_string(h).unwrap();
        if let Err(e) = prescale::backtest::behavior::Behavior::from_yaml(&manifest) {
            panic!("{name}: spec.behavior: {e}");
        }
        for m in seq(h, &["spec", "metrics"]) {
            let t = s(m, &["type"]);
            let key = match t {
                "External" => "external",
                "Pods" => "pods",
                "Object" => "object",
                other => panic!("{name}: metric type {other}"),
            };
            let metric = s(m, &[key, "metric", "name"]);
            assert!(
                signals.contains(metric) || (t == "External" && NODEPOOL_METRICS.contains(&metric)),
                "{name}: {t} metric {metric} is neither a signal of deploy/base/prescale.yaml nor a node-pool metric"
            );
            let target = get(m, &[key, "target"]).unwrap().clone();
            kinds.insert(name.clone(), (t.to_string(), metric.to_string(), target));
        }
    }
    let target = |n: &str| {
        kinds
            .get(n)
            .unwrap_or_else(|| panic!("HPA {n} missing: {kinds:?}"))
    };
    let (t, _, tg) = target("conexus-server");
    assert_eq!(
        (t.as_str(), s(tg, &["type"]), s(tg, &["averageValue"])),
        ("Pods", "AverageValue", "1000")
    );
    let (t, m, tg) = target("conexus-qdrant");
    assert_eq!(
        (t.as_str(), m.as_str(), s(tg, &["type"]), s(tg, &["value"])),
        ("Object", "qdrant_search_latency", "Value", "100m")
    );
    let (t, _, tg) = target("llm-agent-service");
    assert_eq!(
        (t.as_str(), s(tg, &["type"]), s(tg, &["averageValue"])),
        ("External", "AverageValue", "10")
    );
    // Balloons: one per pool, at priority -10, scaled on prescale_nodepool_balloons
    // with a target of 1 (the served value maps to exactly the count).
    let pc = kind(&docs, "PriorityClass").next().unwrap();
    assert_eq!(get(pc, &["value"]).and_then(Value::as_i64), Some(-10));
    for pool in ["application", "database", "cache"] {
        let hpa = format!("balloon-{pool}");
        let (t, m, tg) = target(&hpa);
        assert_eq!(
            (t.as_str(), m.as_str(), s(tg, &["averageValue"])),
            ("External", "prescale_nodepool_balloons", "1")
        );
        let h = kind(&docs, "HorizontalPodAutoscaler")
            .find(|h| s(h, &["metadata", "name"]) == hpa)
            .unwrap();
        let sel = seq(h, &["spec", "metrics"])[0].clone();
        assert_eq!(
            s(
                &sel,
                &["external", "metric", "selector", "matchLabels", "nodepool"]
            ),
            pool
        );
        let ns = s(h, &["metadata", "namespace"]);
        let dep = find(
            &docs,
            "Deployment",
            ns,
            s(h, &["spec", "scaleTargetRef", "name"]),
        )
        .unwrap_or_else(|| panic!("{hpa}: target Deployment missing"));
        assert_eq!(
            s(dep, &["spec", "template", "spec", "priorityClassName"]),
            s(pc, &["metadata", "name"])
        );
        // A balloon that fits no node of its pool never makes the cluster-autoscaler
        // add one; more balloons than the pool can have nodes only sit pending.
        let &(_, instance, cpu_milli, memory_gi, max_nodes) =
            SEED_POOLS.iter().find(|p| p.0 == pool).unwrap();
        let requests = get(
            &seq(dep, &["spec", "template", "spec", "containers"])[0],
            &["resources", "requests"],
        )
        .unwrap_or_else(|| panic!("{hpa}: the balloon has no requests"));
        let cpu = prescale::quantity::parse_millicores(s(requests, &["cpu"])).unwrap();
        let mem = prescale::quantity::parse_units(s(requests, &["memory"])).unwrap();
        // Room for the kubelet's reservations and DaemonSets: 100m and 1Gi at least.
        assert!(
            cpu + 100 <= cpu_milli && mem + (1 << 30) <= memory_gi << 30,
            "{hpa}: requests {cpu}m / {mem} bytes do not fit a {instance}"
        );
        let max = get(h, &["spec", "maxReplicas"])
            .and_then(Value::as_u64)
            .unwrap();
        assert!(
            max <= max_nodes,
            "{hpa}: maxReplicas {max} above the pool's {max_nodes} nodes"
        );
    }
    // The balloon math the HPAs rely on: target 1 → exactly `count` replicas.
    let balloon = prescale::plan::nodepool::Balloon::try_new(1000).unwrap();
    for count in [1, 2, 7] {
        assert_eq!(
            prescale::plan::nodepool::hpa_replicas(balloon.served_milli(count), 1000),
            u64::from(count)
        );
    }
    // The cluster-autoscaler flags.
    let ca = std::fs::read_to_string(repo().join("deploy/examples/cluster-autoscaler-flags.yaml"))
        .unwrap();
    let ca: Value = serde_yaml::from_str(&ca).unwrap();
    let command: Vec<&str> = seq(&ca, &["spec", "template", "spec", "containers"])[0]
        .get("command")
        .and_then(Value::as_sequence)
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(command.contains(&"--expander=grpc,least-waste"));
    assert!(command.contains(&"--grpc-expander-url=prescale.prescale.svc:8443"));
    assert!(command
        .iter()
        .any(|c| c.starts_with("--grpc-expander-cert=/")));
    let scrape =
        std::fs::read_to_string(repo().join("deploy/examples/prometheus-scrape.yaml")).unwrap();
    let scrape: Value = serde_yaml::from_str(&scrape).unwrap();
    let job = &seq(&scrape, &["scrape_configs"])[0];
    assert_eq!(s(job, &["job_name"]), "prescale");
    assert_eq!(s(job, &["metrics_path"]), "/metrics");
    // The job keeps the endpoints of the Service port that serves /metrics.
    let kept_port = seq(job, &["relabel_configs"])
        .iter()
        .find(|r| {
            seq(r, &["source_labels"])
                .iter()
                .any(|l| l.as_str() == Some("__meta_kubernetes_endpointslice_port_name"))
        })
        .map(|r| s(r, &["regex"]))
        .expect("the scrape job selects a Service port by name");
    let service = std::fs::read_to_string(repo().join("deploy/base/service.yaml")).unwrap();
    let service: Value = serde_yaml::from_str(&service).unwrap();
    let port = seq(&service, &["spec", "ports"])
        .iter()
        .find(|p| s(p, &["name"]) == kept_port)
        .unwrap_or_else(|| {
            panic!("the scrape job keeps port {kept_port:?}, which the Service lacks")
        });
    assert_eq!(
        s(port, &["targetPort"]),
        "http",
        "port {kept_port} must reach the container's plain-HTTP port (/metrics)"
    );
}

#[test]
fn dockerfile_is_multi_stage_and_non_root() {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    let last = froms.last().unwrap();
    assert!(
        last.contains("distroless") || last.contains("scratch"),
        "{last}"
    );
    let user = text.lines().rev().find(|l| l.starts_with("USER ")).unwrap();
    let uid: u32 = user[5..].split(':').next().unwrap().trim().parse().unwrap();
    assert_ne!(uid, 0, "runs as root");
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/prescale\"]"));
}

/// The Dockerfile's dependency stage, run as written against the real manifest
/// (with `cargo fetch` in place of the build, which would compile every
/// dependency): the placeholder sources it creates must satisfy every target the
/// manifest declares, or cargo stops with "can't find `load` bench".
#[test]
fn dockerfile_placeholder_stage_satisfies_the_manifest() {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("RUN mkdir -p src"))
        .expect("the dependency stage starts with `RUN mkdir -p src ...`");
    let mut script = String::new();
    for l in &lines[start..] {
        let more = l.trim_end().ends_with('\\');
        // Docker joins continued lines into one shell command.
        script.push_str(l.trim_end().trim_end_matches('\\'));
        script.push(' ');
        if !more {
            break;
        }
    }
    let script = script.trim_start().trim_start_matches("RUN").to_string();
    let build = "cargo build --release --locked --bin prescale";
    assert!(
        script.contains(build),
        "the stage builds the binary: {script}"
    );
    let Ok(cargo) = std::env::var("CARGO") else {
        eprintln!("SKIP: CARGO is not set (not run by cargo)");
        return;
    };
    // For the host only: `cargo fetch` for every platform wants crates that no
    // build here has downloaded, and the test stays offline.
    let version = Command::new(&cargo).arg("-vV").output().unwrap();
    let host = String::from_utf8_lossy(&version.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("cargo -vV names the host");
    let script = script.replace(
        build,
        &format!("'{cargo}' fetch --locked --offline --target {host}"),
    );
    let dir = tempfile::tempdir().unwrap();
    for f in ["Cargo.toml", "Cargo.lock"] {
        std::fs::copy(repo().join(f), dir.path().join(f)).unwrap();
    }
    let out = Command::new("sh")
        .args(["-c", &script])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the Dockerfile's dependency stage fails:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Dockerfile's builder image can build the locked dependency graph: its Rust
/// version is at least every locked package's `rust-version`.
#[test]
fn dockerfile_builder_is_new_enough_for_the_lockfile() {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let from = text
        .lines()
        .find(|l| l.starts_with("FROM rust:"))
        .expect("the builder stage is FROM rust:<version>");
    let version =
        |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse::<u64>().unwrap()).collect() };
    let image = version(from["FROM rust:".len()..].split(['-', ' ']).next().unwrap());
    let Ok(cargo) = std::env::var("CARGO") else {
        eprintln!("SKIP: CARGO is not set (not run by cargo)");
        return;
    };
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(repo())
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "SKIP: cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let too_new: Vec<String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let need = p["rust_version"].as_str()?;
            let mut need = version(need);
            need.resize(3, 0);
            let mut have = image.clone();
            have.resize(3, 0);
            (need > have).then(|| format!("{} {} needs {need:?}", p["name"], p["version"]))
        })
        .collect();
    assert!(
        too_new.is_empty(),
        "the builder image rust:{image:?} is too old for: {too_new:?}"
    );
}

/// Metric names in a PromQL expression: identifiers that are not functions,
/// keywords, label names (inside `{}` or a grouping) or Grafana variables.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "and",
        "or",
        "unless",
        "inf",
        "nan",
    ];
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let (mut i, mut braces, mut brackets) = (0, 0i32, 0i32);
    let mut grouping = false;
    let mut depth_at_grouping = 0i32;
    let mut parens = 0i32;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            '{' => braces += 1,
            '}' => braces -= 1,
            '[' => brackets += 1,
            ']' => brackets -= 1,
            '(' => parens += 1,
            ')' => {
                parens -= 1;
                if grouping && parens == depth_at_grouping {
                    grouping = false;
                }
            }
            '$' => {
                while i + 1 < chars.len() && (chars[i + 1].is_alphanumeric() || chars[i + 1] == '_')
                {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i + 1 < chars.len()
                    && (chars[i + 1].is_ascii_alphanumeric() || matches!(chars[i + 1], '_' | ':'))
                {
                    i += 1;
                }
                let word: String = chars[start..=i].iter().collect();
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                let preceded_by_digit = start > 0 && chars[start - 1].is_ascii_digit();
                // `sum by (x) (...)`: an aggregation followed by its grouping.
                let rest: String = chars[i + 1..].iter().collect();
                let rest = rest.trim_start();
                let aggregation_with_grouping = AGGREGATIONS.contains(&word.as_str())
                    && (rest.starts_with("by") || rest.starts_with("without"));
                if matches!(
                    word.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) && next == Some(&'(')
                {
                    grouping = true;
                    depth_at_grouping = parens;
                } else if braces == 0
                    && brackets == 0
                    && !grouping
                    && !preceded_by_digit
                    && next != Some(&'(')
                    && !aggregation_with_grouping
                    && !KEYWORDS.contains(&word.to_lowercase().as_str())
                {
                    out.insert(word);
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

#[test]
fn promql_metric_extraction() {
    let got = promql_metrics(
        r#"histogram_quantile(0.99, sum by (le, signal) (rate(a_bucket{job=~"$job", x="b c"}[5m]))) / on(signal) group_left b_total offset 5m"#,
    );
    assert_eq!(
        got,
        BTreeSet::from(["a_bucket".to_string(), "b_total".to_string()])
    );
    assert_eq!(
        promql_metrics("label_values(up, job)").len(),
        2,
        "the caller handles label_values"
    );
}

/// Every PromQL expression in the dashboard: panel targets and query variables.
fn dashboard_exprs(dash: &serde_json::Value) -> Vec<String> {
    fn panels(v: &serde_json::Value, out: &mut Vec<String>) {
        for p in v.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push(e.to_string());
                }
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dash["panels"], &mut out);
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let q = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .unwrap();
        // label_values(SELECTOR, LABEL): only the selector is PromQL.
        let q = match q.strip_prefix("label_values(") {
            Some(rest) => rest.rsplit_once(',').unwrap().0.to_string(),
            None => q.to_string(),
        };
        out.push(q);
    }
    out
}

/// Metric names (samples, and families by their TYPE with the suffixes the
/// exposition adds) in OpenMetrics text.
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap_or(""));
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "summary" => &["_sum", "_count", "_created"],
                _ => &[""],
            };
            for sfx in suffixes {
                names.insert(format!("{name}{sfx}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

#[tokio::test]
async fn dashboard_queries_only_metrics_a_running_server_exports() {
    let text = std::fs::read_to_string(repo().join("deploy/dashboards/prescale.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exprs = dashboard_exprs(&dash);
    assert!(exprs.len() >= 8, "{exprs:?}");
    let wanted: BTreeSet<String> = exprs.iter().flat_map(|e| promql_metrics(e)).collect();
    // What the issue asks the dashboard to show: per series observed vs forecast vs
    // served with the interval band, status, staleness and forecast error; API
    // request rate and latency; expander decisions.
    for must in [
        "prescale_api_requests_total",
        "prescale_api_request_duration_seconds_bucket",
        "prescale_forecast_mase",
        "prescale_series_by_signal",
        "prescale_series_observed",
        "prescale_series_forecast",
        "prescale_series_forecast_lower",
        "prescale_series_forecast_upper",
        "prescale_series_served",
        "prescale_series_status",
        "prescale_series_staleness_seconds",
        "prescale_series_forecast_mase",
        "prescale_series_not_exported",
        "prescale_expander_decisions_total",
        "prescale_expander_request_duration_seconds_bucket",
    ] {
        assert!(wanted.contains(must), "the dashboard does not show {must}");
    }

    let (https, plain): (SocketAddr, SocketAddr) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let _child = Killed(
        Command::new(env!("CARGO_BIN_EXE_prescale"))
            .args(["serve", "--https-address", &https.to_string()])
            .args(["--http-address", &plain.to_string()])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut ready = false;
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("http://{plain}/readyz")).send().await {
            if r.status() == 200 {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "prescale serve did not become ready");
    // Traffic on each kind of endpoint, so that the request families have series.
    let _ = client
        .get(format!(
            "https://{https}/apis/external.metrics.k8s.io/v1beta1"
        ))
        .send()
        .await
        .unwrap();
    let _ = client
        .get(format!("http://{plain}/metrics"))
        .send()
        .await
        .unwrap();
    // Some families appear only after the engine's first refreshes (the forecast
    // error needs two one-step errors): poll until every name is there, or time out.
    // Shadow mode's counter exists only for shadow signals, which the bundled
    // default has none of; its name is checked where one runs (engine's
    // `shadow_mode_serves_the_latest_and_counts_what_the_forecast_would_change`).
    const SHADOW_ONLY: &str = "prescale_shadow_replica_seconds_total";
    let mut missing: Vec<String> = wanted
        .iter()
        .filter(|m| *m != SHADOW_ONLY)
        .cloned()
        .collect();
    let mut exposed = BTreeSet::new();
    for _ in 0..120 {
        let metrics = client
            .get(format!("http://{plain}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        exposed = exposed_names(&metrics);
        missing.retain(|m| !exposed.contains(m));
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(missing.is_empty(), "the dashboard queries metrics prescale does not export: {missing:?}\nexported: {exposed:?}");
}

/// Every key of the configuration schema, at any depth, appears in the documented
/// reference `deploy/examples/prescale.yaml` (set, or as a commented example).
/// The keys come from the schema itself: the reference parsed into the real
/// `Config` (defaults filled in) and serialized back, so a field added to the code
/// and not to the reference fails here.
#[test]
fn the_reference_config_names_every_field() {
    let path = repo().join("deploy/examples/prescale.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = prescale::config::Config::from_yaml(&text).unwrap();
    let value = serde_yaml::to_value(&config).unwrap();
    fn keys(v: &Value, path: &str, out: &mut BTreeMap<String, String>) {
        match v {
            Value::Mapping(m) => {
                for (k, v) in m {
                    let Some(k) = k.as_str() else { continue };
                    let at = format!("{path}.{k}");
                    out.entry(k.to_string()).or_insert_with(|| at.clone());
                    // Free-form maps (labels, headers): their keys are data.
                    if !matches!(k, "headers" | "node_labels" | "series" | "pod_labels") {
                        keys(v, &at, out);
                    }
                }
            }
            Value::Sequence(s) => {
                for v in s {
                    keys(v, &format!("{path}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut all = BTreeMap::new();
    keys(&value, "", &mut all);
    assert!(
        all.len() > 40,
        "too few keys to be the whole schema: {all:?}"
    );
    let missing: Vec<&String> = all
        .iter()
        .filter(|(k, _)| !text.contains(&format!("{k}:")))
        .map(|(_, at)| at)
        .collect();
    assert!(
        missing.is_empty(),
        "the reference config does not mention {missing:?}"
    );
}
