//! prometheus-adapter (the pinned binary tests/e2e/peers.sh builds) against a
//! [`Cluster`] and a Prometheus, on a loopback port: for checks and benches that put
//! prescale beside it or in front of it.
//!
//! [`Adapter::start`] writes, under the cluster's directory (`prometheus-adapter/`):
//! - the rules config (prometheus-adapter's own format; [`rules`] writes one External
//!   and one Pods rule per series name);
//! - a serving pair signed by a CA of its own ([`Adapter::ca_pem`]), for `127.0.0.1`,
//!   `localhost` and [`SERVICE_DNS`];
//! - a kubeconfig with a token of the ServiceAccount [`NAMESPACE`]/[`SERVICE_ACCOUNT`]
//!   that it creates with the RBAC below;
//!
//! then starts the adapter and waits until `/readyz` answers 200. Requests are
//! authenticated as the aggregator's are: the front-proxy client certificate of the
//! cluster's front-proxy CA with `X-Remote-User`/`X-Remote-Group`
//! ([`Adapter::client`] builds such a client), or a bearer token (TokenReview), or a
//! client certificate of the cluster CA; and authorized by SubjectAccessReview.
//!
//! Its identity's rights, and why each (least privilege: the bench runs with these
//! and the adapter's log shows no refused call):
//! - `system:auth-delegator` (create TokenReviews and SubjectAccessReviews): it
//!   delegates authentication of bearer tokens and authorization of every request
//!   to the kube-apiserver;
//! - list `pods` (ClusterRole `prometheus-adapter-resource-reader`): a Pods metric
//!   over a label selector (`pods/*`, as the HPA asks) lists the pods it selects and
//!   puts their names into the Prometheus query. Nothing else is read: a metric of
//!   one named pod or of a namespace is a Prometheus query alone. Rules that map
//!   series to other resources, read over a selector, would need list on those;
//! - not the `extension-apiserver-authentication` ConfigMap of kube-system: the
//!   front-proxy CA and the cluster CA are given as files
//!   (`--authentication-skip-lookup`), so it has no reason to read it;
//! - API discovery, which its resource mapping reads, is open to every
//!   authenticated user (`system:discovery`).
//!
//! [`Adapter::stop`] kills it (port, files and identity stay); [`Adapter::restart`]
//! starts it again on the same port and waits until it answers. Dropping the value
//! kills it.

#![allow(dead_code)] // each includer uses a part of the API

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use super::cluster::{kubeconfig, write, Cluster, Proc};
use crate::support::peers::{adapter_version, pinned};
use crate::support::pki;
use crate::support::prometheus::free_addr;

/// The namespace of the adapter's ServiceAccount.
pub const NAMESPACE: &str = "prometheus-adapter";
/// The adapter's ServiceAccount.
pub const SERVICE_ACCOUNT: &str = "prometheus-adapter";
/// The Service name its serving certificate also holds, for an APIService that
/// points at it through a Service `prometheus-adapter` in [`NAMESPACE`].
pub const SERVICE_DNS: &str = "prometheus-adapter.prometheus-adapter.svc";
/// How long it gets to answer on `/readyz` after a start.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// A prometheus-adapter process (running or stopped) and what it was started with.
pub struct Adapter {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The listening address.
    pub addr: SocketAddr,
    /// PEM of the CA that signed its serving certificate.
    pub ca_pem: String,
    /// Its directory: `rules.yaml`, `serving.crt`/`.key`, `serving-ca.crt`,
    /// `kubeconfig`, logs (`prometheus-adapter.log`, earlier runs' with a suffix).
    pub dir: PathBuf,
    args: Vec<String>,
    front_proxy: pki::Pair,
    proc: Option<Proc>,
    starts: usize,
}

/// prometheus-adapter rules: for each of `external`, an External metric of that
/// name over the series of that name (not namespaced: any namespace reads it; the
/// HPA's selector picks series by their labels); for each of `pods`, a Pods metric
/// over series of that name labelled `namespace` and `pod`, summed per pod.
pub fn rules(external: &[&str], pods: &[&str]) -> String {
    let mut out = String::from("rules:\n");
    for name in pods {
        out.push_str(&format!(
            "- seriesQuery: '{name}{{namespace!=\"\",pod!=\"\"}}'\n\
             \x20 resources:\n    overrides:\n      namespace: {{resource: namespace}}\n      pod: {{resource: pod}}\n\
             \x20 name: {{matches: '^{name}$', as: '{name}'}}\n\
             \x20 metricsQuery: 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'\n"
        ));
    }
    out.push_str("externalRules:\n");
    for name in external {
        out.push_str(&format!(
            "- seriesQuery: '{name}'\n  resources: {{namespaced: false}}\n\
             \x20 name: {{matches: '^{name}$', as: '{name}'}}\n\
             \x20 metricsQuery: '<<.Series>>{{<<.LabelMatchers>>}}'\n"
        ));
    }
    out
}

impl Adapter {
    /// Starts prometheus-adapter against `cluster` and the Prometheus at
    /// `prometheus_url` with `rules` (prometheus-adapter's config, e.g. from
    /// [`rules`]) and waits until it answers. `extra_args` are appended to its
    /// command line (e.g. `--client-qps=100`).
    ///
    /// Re-listing the series from Prometheus runs every second, so series a rule
    /// matches are served within a few seconds of the start.
    ///
    /// # Panics
    /// When the binary is missing (check `common::peers::prometheus_adapter()`
    /// first: it skips or fails as the suite does), its identity cannot be set up,
    /// or it does not answer within 90 s.
    pub async fn start(
        cluster: &Cluster,
        prometheus_url: &str,
        rules: &str,
        extra_args: &[&str],
    ) -> Self {
        let binary = pinned("prometheus-adapter", &adapter_version())
            .unwrap_or_else(|why| panic!("prometheus-adapter: {why}"));
        let dir = cluster.path("prometheus-adapter");
        std::fs::create_dir_all(dir.join("certs")).expect("the adapter's directory");

        // Identity: ServiceAccount, its rights, a token.
        cluster.apply(&identity());
        let token = cluster
            .kubectl_ok(&[
                "create",
                "token",
                SERVICE_ACCOUNT,
                "-n",
                NAMESPACE,
                "--duration=12h",
            ])
            .trim()
            .to_string();
        let kubeconfig_file = dir.join("kubeconfig");
        write(
            &kubeconfig_file,
            &kubeconfig(&cluster.url, &cluster.ca_file, &token),
        );

        // Serving pair of its own CA; rules.
        let ca = pki::Ca::new("prometheus-adapter-serving-ca");
        let serving = ca.server(&["127.0.0.1", "localhost", SERVICE_DNS]);
        write(&dir.join("serving-ca.crt"), &ca.cert_pem);
        write(&dir.join("serving.crt"), &serving.cert_pem);
        write(&dir.join("serving.key"), &serving.key_pem);
        write(&dir.join("rules.yaml"), rules);

        let addr = free_addr();
        let file = |name: &str| dir.join(name).display().to_string();
        let kc = kubeconfig_file.display().to_string();
        let mut args = vec![
            format!("--secure-port={}", addr.port()),
            "--bind-address=127.0.0.1".to_string(),
            format!("--cert-dir={}", file("certs")),
            format!("--tls-cert-file={}", file("serving.crt")),
            format!("--tls-private-key-file={}", file("serving.key")),
            format!("--prometheus-url={prometheus_url}"),
            format!("--config={}", file("rules.yaml")),
            "--metrics-relist-interval=1s".to_string(),
            format!("--lister-kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            // The CAs as files: nothing to look up in kube-system's ConfigMap.
            "--authentication-skip-lookup=true".to_string(),
            format!("--client-ca-file={}", cluster.ca_file.display()),
            format!(
                "--requestheader-client-ca-file={}",
                cluster.path("front-proxy-ca.crt").display()
            ),
            "--requestheader-allowed-names=front-proxy-client".to_string(),
            "--requestheader-username-headers=X-Remote-User".to_string(),
            "--requestheader-group-headers=X-Remote-Group".to_string(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_string(),
            "--profiling=false".to_string(),
            "--v=1".to_string(),
        ];
        args.extend(extra_args.iter().map(|a| a.to_string()));
        args.insert(0, binary.display().to_string());

        let mut adapter = Self {
            url: format!("https://{addr}"),
            addr,
            ca_pem: ca.cert_pem,
            dir,
            args,
            front_proxy: cluster.front_proxy_ca.client("front-proxy-client"),
            proc: None,
            starts: 0,
        };
        adapter.spawn().await;
        adapter
    }

    /// A client as the aggregator is: trusts [`Adapter::ca_pem`], presents the
    /// front-proxy client certificate (requests still need `X-Remote-User` and
    /// `X-Remote-Group` headers), HTTP/1.1 keep-alive, 30 s timeout.
    pub fn client(&self) -> reqwest::Client {
        let identity = format!("{}{}", self.front_proxy.cert_pem, self.front_proxy.key_pem);
        reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("the CA's PEM"),
            )
            .identity(reqwest::Identity::from_pem(identity.as_bytes()).expect("the client pair"))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a reqwest client")
    }

    /// Kills the adapter and waits for it; its port, files and identity stay.
    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Starts the adapter again (stopped or not) with the same port, files and
    /// flags, and waits until it answers.
    ///
    /// # Panics
    /// As [`Adapter::start`].
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.proc
            .as_mut()
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }

    /// The process id while it runs (to pause it with SIGSTOP).
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    /// The last `lines` lines of the current run's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.proc
            .as_ref()
            .map(|p| p.log_tail(lines))
            .unwrap_or_default()
    }

    /// Waits until `GET path` (with the front-proxy identity of `user` in `group`)
    /// answers 200, e.g. until the first re-list has found a rule's series. The
    /// answer's body, or the last status and body seen.
    ///
    /// # Errors
    /// Not within `within`.
    pub async fn wait_for(
        &mut self,
        path: &str,
        user: &str,
        group: &str,
        within: Duration,
    ) -> Result<String, String> {
        let client = self.client();
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            if !self.is_running() {
                return Err(format!(
                    "prometheus-adapter is not running:\n{}",
                    self.log_tail(30)
                ));
            }
            match client
                .get(format!("{}{path}", self.url))
                .header("X-Remote-User", user)
                .header("X-Remote-Group", group)
                .send()
                .await
            {
                Ok(r) => {
                    let code = r.status().as_u16();
                    let body = r.text().await.unwrap_or_default();
                    if code == 200 {
                        return Ok(body);
                    }
                    last = format!("{code} {body}");
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!("GET {path}: not 200 within {within:?}: {last}"))
    }

    async fn spawn(&mut self) {
        // Each run logs to prometheus-adapter.log; an earlier run's log is kept.
        let log = self.dir.join("prometheus-adapter.log");
        if self.starts > 0 && log.exists() {
            let _ = std::fs::rename(
                &log,
                self.dir
                    .join(format!("prometheus-adapter.{}.log", self.starts)),
            );
        }
        self.starts += 1;
        let mut cmd = Command::new(&self.args[0]);
        cmd.args(&self.args[1..]).current_dir(&self.dir);
        self.proc = Some(Proc::spawn("prometheus-adapter", &mut cmd, &self.dir));
        let client = self.client();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(p) = self.proc.as_mut() {
                p.assert_running();
            }
            // /readyz needs no rights (--authorization-always-allow-paths), but a
            // client certificate needs a user: one that the front proxy vouches for.
            let ready = client
                .get(format!("{}/readyz", self.url))
                .header("X-Remote-User", "prometheus-adapter-launcher")
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus-adapter not ready within {READY_TIMEOUT:?}:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The adapter's namespace, ServiceAccount and rights (see the module's doc for why
/// each).
fn identity() -> serde_json::Value {
    let subject =
        json!([{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]);
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "prometheus-adapter:system:auth-delegator"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "system:auth-delegator"},
         "subjects": subject},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "prometheus-adapter-resource-reader"},
         "rules": [{"apiGroups": [""], "resources": ["pods"],
                    "verbs": ["list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "prometheus-adapter-resource-reader"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "prometheus-adapter-resource-reader"},
         "subjects": subject},
    ]})
}
