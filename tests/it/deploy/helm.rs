//! deploy/helm/prescale: `helm lint --strict` and `helm template` with a real helm
//! (built by tests/e2e/peers.sh into the peers cache), for each certificate mode,
//! and the rendered objects compared with the kustomize install they stand for:
//! the same (kind, namespace, name) set, RBAC rules and bindings, APIService
//! groups, versions and priorities, Service ports, Deployment and pod spec, PDB,
//! cert-manager objects, and a ConfigMap whose config is the base config by
//! prescale's own parser. The invariants deploy.rs checks on the kustomize
//! installs are run on the chart's output too; the self-signed pair the chart
//! generates is loaded by prescale's TLS code and completes a handshake with a
//! client that trusts only the APIServices' caBundle.
//!
//! Without helm the tests skip with the reason, except with `CI=true`, where they fail.

use super::*;

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

const CHART: &str = "deploy/helm/prescale";
/// The release as deploy/README installs it: every object gets deploy/base's name.
const RELEASE: &str = "prescale";
const NAMESPACE: &str = "prescale";

use crate::support::peers::{cache_dir as peers_cache, cached, helm_version};

/// The cached helm; `None` (with the reason printed) outside CI, a failure in CI.
fn helm() -> Option<PathBuf> {
    let version = helm_version();
    let found = cached("helm", &version);
    if found.is_none() {
        let why = format!(
            "helm {version} is not in {} (run `bash tests/e2e/peers.sh`)",
            peers_cache().display()
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the Helm chart cannot be tested in CI: {why}");
        }
        println!("SKIPPED: {why}; the Helm chart was not rendered");
    }
    found
}

/// Runs helm with its state directories in a temporary one; stdout and stderr.
fn run_helm(helm: &Path, args: &[&str]) -> (bool, String, String) {
    let home = tempfile::tempdir().expect("tempdir");
    let out = Command::new(helm)
        .args(args)
        .current_dir(repo())
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .env_remove("KUBECONFIG")
        .output()
        .expect("helm runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template` of the chart as release `release` in `namespace`, with `set`
/// values; the YAML text.
pub(crate) fn template_text(
    helm: &Path,
    release: &str,
    namespace: &str,
    set: &[&str],
) -> Result<String, String> {
    let mut args = vec!["template", release, CHART, "--namespace", namespace];
    for s in set {
        args.extend(["--set", s]);
    }
    match run_helm(helm, &args) {
        (true, out, _) => Ok(out),
        (false, out, err) => Err(format!("helm {}: {out}{err}", args.join(" "))),
    }
}

fn template(helm: &Path, release: &str, namespace: &str, set: &[&str]) -> Vec<Value> {
    let text = template_text(helm, release, namespace, set).unwrap_or_else(|e| panic!("{e}"));
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("helm renders YAML"))
        .filter(|v| !v.is_null())
        .collect();
    assert!(!docs.is_empty(), "helm template {set:?} renders nothing");
    docs
}

fn lint(helm: &Path, set: &[&str]) {
    let mut args = vec!["lint", "--strict", CHART, "--namespace", NAMESPACE];
    for s in set {
        args.extend(["--set", s]);
    }
    let (ok, out, err) = run_helm(helm, &args);
    assert!(ok, "helm {}:\n{out}{err}", args.join(" "));
}

/// The certificate modes and the kustomize install each one stands for.
struct Mode {
    name: &'static str,
    set: Vec<String>,
    kustomization: &'static str,
    /// Objects the chart renders that the kustomization does not: (kind, name).
    extra: &'static [(&'static str, &'static str)],
}

/// A ConfigMap name without the content hash kustomize's generator appends.
fn unhashed(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((stem, hash))
            if hash.len() == 10 && hash.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            stem
        }
        _ => name,
    }
}

/// (kind, namespace, name), ConfigMap names without kustomize's hash.
fn key(d: &Value) -> (String, String, String) {
    let kind = s(d, &["kind"]).to_string();
    let mut name = s(d, &["metadata", "name"]);
    if kind == "ConfigMap" {
        name = unhashed(name);
    }
    (
        kind,
        s(d, &["metadata", "namespace"]).to_string(),
        name.to_string(),
    )
}

fn subset(small: &Value, big: &Value) -> bool {
    small
        .as_mapping()
        .is_none_or(|m| m.iter().all(|(k, v)| big.get(k) == Some(v)))
}

fn remove(v: &mut Value, path: &[&str]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut at = v;
    for p in parents {
        at = at.get_mut(*p)?;
    }
    at.as_mapping_mut()?.remove(*last)
}

/// A Deployment's spec without what legitimately differs between kustomize and
/// Helm (label selectors, which the chart widens by `app.kubernetes.io/instance`;
/// the pod template's metadata; the ConfigMap's hash suffix) and without the
/// chart's explicit Kubernetes defaults.
fn comparable_deployment(d: &Value) -> Value {
    let mut spec = get(d, &["spec"]).cloned().unwrap_or(Value::Null);
    remove(&mut spec, &["selector"]);
    remove(&mut spec, &["template", "metadata"]);
    let grace = ["template", "spec", "terminationGracePeriodSeconds"];
    if get(&spec, &grace).and_then(Value::as_u64) == Some(30) {
        remove(&mut spec, &grace);
    }
    if let Some(terms) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("spec"))
        .and_then(|p| p.get_mut("affinity"))
        .and_then(|a| a.get_mut("podAntiAffinity"))
        .and_then(|a| a.get_mut("preferredDuringSchedulingIgnoredDuringExecution"))
        .and_then(Value::as_sequence_mut)
    {
        for t in terms {
            remove(t, &["podAffinityTerm", "labelSelector"]);
        }
    }
    if let Some(volumes) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("spec"))
        .and_then(|p| p.get_mut("volumes"))
        .and_then(Value::as_sequence_mut)
    {
        for v in volumes {
            if let Some(name) = v.get_mut("configMap").and_then(|c| c.get_mut("name")) {
                *name = Value::String(unhashed(name.as_str().unwrap_or("")).to_string());
            }
        }
    }
    spec
}

/// The chart's objects against the kustomization's, object by object.
fn check_equivalent(at: &str, chart: &[Value], base: &[Value], extra: &[(&str, &str)]) {
    let chart_has_namespace = kind(chart, "Namespace").next().is_some();
    let want: BTreeSet<_> = base
        .iter()
        .map(key)
        .filter(|(k, _, _)| k != "Namespace" || chart_has_namespace)
        .chain(
            extra
                .iter()
                .map(|(k, n)| (k.to_string(), NAMESPACE.to_string(), n.to_string())),
        )
        .collect();
    let got: BTreeSet<_> = chart.iter().map(key).collect();
    assert_eq!(
        got.difference(&want).collect::<Vec<_>>(),
        Vec::<&(String, String, String)>::new(),
        "{at}: objects the kustomize install does not have"
    );
    assert_eq!(
        want.difference(&got).collect::<Vec<_>>(),
        Vec::<&(String, String, String)>::new(),
        "{at}: objects of the kustomize install the chart lacks"
    );
    for b in base {
        let k = key(b);
        let Some(c) = chart.iter().find(|c| key(c) == k) else {
            continue; // the Namespace, checked above
        };
        let what = format!("{at}: {} {}/{}", k.0, k.1, k.2);
        assert!(
            subset(
                get(b, &["metadata", "labels"]).unwrap_or(&Value::Null),
                get(c, &["metadata", "labels"]).unwrap_or(&Value::Null)
            ),
            "{what}: labels {:?} lack the kustomize ones {:?}",
            get(c, &["metadata", "labels"]),
            get(b, &["metadata", "labels"])
        );
        let same = |path: &[&str]| {
            assert_eq!(get(c, path), get(b, path), "{what}: {}", path.join("."));
        };
        match k.0.as_str() {
            "Namespace" => assert!(
                subset(
                    get(b, &["metadata", "labels"]).unwrap_or(&Value::Null),
                    get(c, &["metadata", "labels"]).unwrap_or(&Value::Null)
                ),
                "{what}: Pod Security labels"
            ),
            "ServiceAccount" => same(&["automountServiceAccountToken"]),
            "ClusterRole" | "Role" => same(&["rules"]),
            "ClusterRoleBinding" | "RoleBinding" => {
                same(&["roleRef"]);
                same(&["subjects"]);
            }
            "APIService" => {
                for field in [
                    "group",
                    "version",
                    "groupPriorityMinimum",
                    "versionPriority",
                    "service",
                    "insecureSkipTLSVerify",
                ] {
                    same(&["spec", field]);
                }
                same(&["metadata", "annotations"]);
            }
            "Service" => {
                same(&["spec", "ports"]);
                assert!(
                    subset(
                        get(b, &["spec", "selector"]).unwrap_or(&Value::Null),
                        get(c, &["spec", "selector"]).unwrap_or(&Value::Null)
                    ),
                    "{what}: selector"
                );
            }
            "Deployment" => {
                assert_eq!(
                    comparable_deployment(c),
                    comparable_deployment(b),
                    "{what}: spec"
                );
                assert!(
                    subset(
                        get(b, &["spec", "template", "metadata", "labels"]).unwrap(),
                        get(c, &["spec", "template", "metadata", "labels"]).unwrap()
                    ),
                    "{what}: pod labels"
                );
            }
            "PodDisruptionBudget" => same(&["spec", "minAvailable"]),
            "ConfigMap" => {
                let config = |d: &Value| {
                    prescale::config::Config::from_yaml(s(d, &["data", "prescale.yaml"]))
                        .unwrap_or_else(|e| panic!("{what}: prescale.yaml: {e:?}"))
                };
                assert_eq!(config(c), config(b), "{what}: the configuration");
            }
            "Issuer" | "Certificate" => same(&["spec"]),
            other => panic!("{what}: this test does not know how to compare a {other}"),
        }
    }
}

/// The Secret's pair is what prescale loads, and a client trusting only the
/// APIServices' caBundle completes a handshake with it for the Service's names.
fn check_self_signed_pair(at: &str, docs: &[Value], secret_name: &str, ns: &str, svc: &str) {
    let b64 = |text: &str| base64_decode(text).unwrap_or_else(|| panic!("{at}: not base64"));
    let secret = find(docs, "Secret", ns, secret_name)
        .unwrap_or_else(|| panic!("{at}: Secret {ns}/{secret_name}"));
    assert_eq!(s(secret, &["type"]), "kubernetes.io/tls", "{at}");
    let ca = s(secret, &["data", "ca.crt"]);
    let apiservices: Vec<&Value> = kind(docs, "APIService").collect();
    assert!(!apiservices.is_empty(), "{at}: APIServices");
    for a in apiservices {
        assert_eq!(
            s(a, &["spec", "caBundle"]),
            ca,
            "{at}: {} trusts another CA than the Secret's",
            s(a, &["metadata", "name"])
        );
    }
    let source = prescale::api::tls::TlsSource::Pem {
        cert_pem: String::from_utf8(b64(s(secret, &["data", "tls.crt"]))).unwrap(),
        key_pem: String::from_utf8(b64(s(secret, &["data", "tls.key"]))).unwrap(),
    };
    let server = Arc::new(
        prescale::api::tls::server_config(&source, None)
            .unwrap_or_else(|e| panic!("{at}: prescale cannot load the pair: {e}")),
    );
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&b64(ca)) {
        roots
            .add(cert.expect("a CA certificate"))
            .expect("a usable CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    for name in [
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.cluster.local"),
    ] {
        let server_name = rustls::pki_types::ServerName::try_from(name.clone()).unwrap();
        let mut c = rustls::ClientConnection::new(client.clone(), server_name).unwrap();
        let mut sv = rustls::ServerConnection::new(server.clone()).unwrap();
        let mut rounds = 0;
        while c.is_handshaking() || sv.is_handshaking() {
            rounds += 1;
            assert!(rounds < 20, "{at}: {name}: the handshake does not finish");
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            sv.read_tls(&mut buf.as_slice()).unwrap();
            sv.process_new_packets()
                .unwrap_or_else(|e| panic!("{at}: {name}: server: {e}"));
            let mut buf = Vec::new();
            sv.write_tls(&mut buf).unwrap();
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets()
                .unwrap_or_else(|e| panic!("{at}: {name}: a client trusting the caBundle: {e}"));
        }
    }
}

/// Standard base64 (what Kubernetes stores Secret data and caBundles as).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn modes(ca_bundle: &str) -> Vec<Mode> {
    vec![
        Mode {
            name: "selfSigned (default values)",
            set: vec![],
            kustomization: "deploy/base",
            extra: &[("Secret", "prescale-serving-cert")],
        },
        Mode {
            name: "selfSigned, namespace.create",
            set: vec!["namespace.create=true".into()],
            kustomization: "deploy/base",
            extra: &[("Secret", "prescale-serving-cert")],
        },
        Mode {
            name: "certManager",
            set: vec!["certificates.mode=certManager".into()],
            kustomization: "deploy/overlays/cert-manager",
            extra: &[],
        },
        Mode {
            name: "secret",
            set: vec![
                "certificates.mode=secret".into(),
                "certificates.secret.name=prescale-serving-cert".into(),
                format!("certificates.secret.caBundle={ca_bundle}"),
            ],
            kustomization: "deploy/base",
            extra: &[],
        },
    ]
}

#[test]
fn helm_chart_lints_and_renders_the_kustomize_install() {
    let Some(helm) = helm() else { return };
    let Some(kubectl) = kubectl() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("no kubectl to render deploy/base with (run `bash tests/e2e/peers.sh`)");
        }
        return;
    };
    // Chart.yaml's appVersion is the crate's: the default image is this release.
    let chart_yaml: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join(CHART).join("Chart.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        s(&chart_yaml, &["appVersion"]),
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml appVersion"
    );
    // The user-provided CA of the `secret` mode: any valid bundle will do.
    let default = template(&helm, RELEASE, NAMESPACE, &[]);
    let ca_bundle = s(
        find(&default, "Secret", NAMESPACE, "prescale-serving-cert").expect("the generated Secret"),
        &["data", "ca.crt"],
    )
    .to_string();
    let mut counts = Vec::new();
    for mode in modes(&ca_bundle) {
        let set: Vec<&str> = mode.set.iter().map(String::as_str).collect();
        let at = format!("{CHART} [{}]", mode.name);
        lint(&helm, &set);
        let chart = template(&helm, RELEASE, NAMESPACE, &set);
        let base = render(&kubectl, &repo().join(mode.kustomization));
        check_equivalent(&at, &chart, &base, mode.extra);
        // deploy.rs's invariants of an install hold for the chart's output too.
        check_apiservices(&at, &chart);
        check_rbac(&at, &chart);
        let config = check_deployment(&at, &chart);
        check_service_matches_config(&at, &chart, &config);
        check_pod_security(&at, &chart);
        match mode.kustomization {
            "deploy/overlays/cert-manager" => check_cert_manager(&at, &chart, &config),
            _ if mode.extra.is_empty() => {
                for a in kind(&chart, "APIService") {
                    assert_eq!(s(a, &["spec", "caBundle"]), ca_bundle, "{at}: caBundle");
                }
            }
            _ => {
                check_self_signed_pair(&at, &chart, "prescale-serving-cert", NAMESPACE, "prescale")
            }
        }
        if let Some(ns) = find(&chart, "Namespace", "", NAMESPACE) {
            assert_eq!(
                s(
                    ns,
                    &["metadata", "labels", "pod-security.kubernetes.io/enforce"]
                ),
                "restricted",
                "{at}"
            );
        }
        counts.push(format!("{}: {} objects", mode.name, chart.len()));
    }
    println!("helm {}: {}", helm_version(), counts.join(", "));
}

/// Another release name and namespace: every name, reference, subject, DNS name
/// and the Lease namespace follow; values reach the config; the settings the pod
/// depends on cannot be overridden; optional objects go away.
#[test]
fn helm_chart_follows_release_name_namespace_and_values() {
    let Some(helm) = helm() else { return };
    let (release, ns, full) = ("metrics", "autoscaling", "metrics-prescale");
    let docs = template(
        &helm,
        release,
        ns,
        &[
            "apiServices.custom=false",
            "podDisruptionBudget.enabled=false",
            "config.prometheus.url=http://thanos-query.monitoring.svc:9090",
            "config.server.https_address=0.0.0.0:1234",
            "config.expander=null",
            "config.nodepools=null",
            "config.workloads=null",
            "replicaCount=3",
            "nodeSelector.pool=system",
            "podAnnotations.team=platform",
            "rbac.upstreamReader=true",
            "extraVolumes[0].name=upstream-ca",
            "extraVolumes[0].configMap.name=prescale-upstream-ca",
            "extraVolumeMounts[0].name=upstream-ca",
            "extraVolumeMounts[0].mountPath=/etc/prescale/upstream",
            "config.server.upstream.external\\.metrics\\.k8s\\.io.service.namespace=monitoring",
            "config.server.upstream.external\\.metrics\\.k8s\\.io.service.name=prometheus-adapter",
            "config.server.upstream.external\\.metrics\\.k8s\\.io.ca_file=/etc/prescale/upstream/ca.crt",
        ],
    );
    for d in &docs {
        let (k, dns, name) = key(d);
        match k.as_str() {
            "ClusterRole" | "ClusterRoleBinding" | "APIService" => {
                assert_eq!(dns, "", "{k} {name}");
            }
            "RoleBinding" if dns == "kube-system" => {}
            _ => assert_eq!(dns, ns, "{k} {name}"),
        }
        if !matches!(
            k.as_str(),
            "APIService" | "ClusterRoleBinding" | "RoleBinding"
        ) {
            assert!(
                name.starts_with(full),
                "{k} {name} is not named after the release"
            );
        }
        for subject in seq(d, &["subjects"]) {
            if s(subject, &["namespace"]) != "kube-system" {
                assert_eq!(
                    (s(subject, &["namespace"]), s(subject, &["name"])),
                    (ns, full),
                    "{k} {name}"
                );
            }
        }
    }
    let names: Vec<&str> = kind(&docs, "APIService")
        .map(|a| s(a, &["metadata", "name"]))
        .collect();
    assert_eq!(names, ["v1beta1.external.metrics.k8s.io"]);
    for a in kind(&docs, "APIService") {
        assert_eq!(s(a, &["spec", "service", "name"]), full);
        assert_eq!(s(a, &["spec", "service", "namespace"]), ns);
    }
    assert!(kind(&docs, "PodDisruptionBudget").next().is_none());
    check_self_signed_pair(
        "release metrics",
        &docs,
        &format!("{full}-serving-cert"),
        ns,
        full,
    );
    let d = find(&docs, "Deployment", ns, full).expect("the Deployment");
    assert_eq!(
        get(d, &["spec", "replicas"]).and_then(Value::as_u64),
        Some(3)
    );
    assert_eq!(
        s(d, &["spec", "template", "spec", "nodeSelector", "pool"]),
        "system"
    );
    assert_eq!(
        s(d, &["spec", "template", "metadata", "annotations", "team"]),
        "platform"
    );
    assert_eq!(
        s(d, &["spec", "template", "spec", "serviceAccountName"]),
        full
    );
    let cm = find(&docs, "ConfigMap", ns, &format!("{full}-config")).expect("the ConfigMap");
    let config = prescale::config::Config::from_yaml(s(cm, &["data", "prescale.yaml"]))
        .unwrap_or_else(|e| panic!("the rendered config: {e:?}"));
    assert_eq!(
        config.prometheus.url,
        "http://thanos-query.monitoring.svc:9090"
    );
    assert_eq!(config.server.https_address.port(), 6443, "chart-managed");
    assert_eq!(config.capacity_buffers.lease_namespace, ns);
    assert!(config.expander.is_none() && config.nodepools.is_empty());
    let role = find(&docs, "Role", ns, &format!("{full}-leases")).expect("the Lease Role");
    assert_eq!(s(role, &["metadata", "namespace"]), ns);

    // Delegation: the adapter's CA mounted where the config reads it, and prescale's
    // own ServiceAccount allowed to read the metrics it forwards.
    let upstream = config.server.upstream.external.expect("server.upstream");
    assert_eq!(
        upstream.base_url(),
        "https://prometheus-adapter.monitoring.svc:443"
    );
    let pod = &d["spec"]["template"]["spec"];
    assert!(seq(pod, &["volumes"])
        .iter()
        .any(|v| s(v, &["name"]) == "upstream-ca"
            && s(v, &["configMap", "name"]) == "prescale-upstream-ca"));
    assert!(seq(&pod["containers"][0], &["volumeMounts"])
        .iter()
        .any(|m| s(m, &["name"]) == "upstream-ca"
            && s(m, &["mountPath"]) == "/etc/prescale/upstream"));
    let binding = find(
        &docs,
        "ClusterRoleBinding",
        "",
        &format!("{full}-upstream-reader"),
    )
    .expect("the upstream reader binding");
    assert_eq!(
        s(binding, &["roleRef", "name"]),
        format!("{full}-upstream-reader")
    );
    let reader = find(&docs, "ClusterRole", "", &format!("{full}-upstream-reader"))
        .expect("the upstream reader role");
    let verbs: Vec<&str> = seq(&reader["rules"][0], &["verbs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(verbs, ["get", "list"], "read only");
}

/// Values that cannot work are refused when rendering, with the reason.
#[test]
fn helm_chart_refuses_incomplete_certificate_values() {
    let Some(helm) = helm() else { return };
    for (set, says) in [
        (
            vec!["certificates.mode=secret"],
            "certificates.secret.name is required",
        ),
        (
            vec!["certificates.mode=secret", "certificates.secret.name=mine"],
            "certificates.secret.caBundle",
        ),
        (
            vec!["certificates.mode=vault"],
            "certificates.mode must be one of",
        ),
    ] {
        match template_text(&helm, RELEASE, NAMESPACE, &set) {
            Ok(_) => panic!("{set:?} renders"),
            Err(e) => assert!(e.contains(says), "{set:?}: {e}"),
        }
    }
}
