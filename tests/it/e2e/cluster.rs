//! The end-to-end tier's control plane, shared with the benches that need a real
//! kube-apiserver: the peer binaries ([`find_peers`]), child processes killed on drop
//! ([`Proc`]), and [`Cluster`]: etcd, kube-apiserver and kube-controller-manager on
//! 127.0.0.1 with their PKI, static tokens and an admin kubeconfig.
//!
//! `crate::e2e::cluster` in the tests; benches include it with
//! `#[path = "../tests/it/e2e/cluster.rs"] mod cluster;` beside `support` (the tests'
//! `support` module, included by path) at their root.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::peers::{kubernetes_version as k8s_version, pinned};
use crate::support::pki;
use crate::support::prometheus::{available, free_addr};

pub struct Peers {
    pub apiserver: PathBuf,
    pub controller_manager: PathBuf,
    pub kubectl: PathBuf,
    pub etcd: PathBuf,
}

/// The peers, or why they are missing.
pub fn find_peers() -> Result<Peers, String> {
    let version = k8s_version();
    let bin = |name: &str| pinned(name, &version);
    let etcd = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("etcd is not installed (apt-get install etcd-server)")?;
    if !available() {
        return Err("prometheus/promtool are not installed (apt-get install prometheus)".into());
    }
    // Check i's upstream; tests/it/e2e/upstream.rs starts it.
    pinned(
        "prometheus-adapter",
        &crate::support::peers::adapter_version(),
    )?;
    Ok(Peers {
        apiserver: bin("kube-apiserver")?,
        controller_manager: bin("kube-controller-manager")?,
        kubectl: bin("kubectl")?,
        etcd,
    })
}

/// A child process killed (and waited for) on drop, with its log file.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join(format!("{name}.out"))).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        Self { name, child, log }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited with {status}:\n{}", self.name, self.log_tail(40));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn kubeconfig(server: &str, ca_file: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
         users:\n- name: e2e\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: e2e\n\
         current-context: e2e\n",
        ca = ca_file.display()
    )
}

/// The control plane: etcd, kube-apiserver and kube-controller-manager.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub kubectl: PathBuf,
    pub url: String,
    pub admin: reqwest::Client,
    pub nobody: reqwest::Client,
    pub ca_file: PathBuf,
    pub front_proxy_ca: pki::Ca,
    pub procs: Vec<Proc>,
}

pub const ADMIN_TOKEN: &str = "e2e-admin-token";
pub const NOBODY_TOKEN: &str = "e2e-nobody-token";

impl Cluster {
    pub async fn start(peers: &Peers) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // PKI: the cluster CA and the apiserver's serving pair, the front-proxy CA and
        // its client, the service-account signing key.
        let ca = pki::Ca::new("e2e-cluster-ca");
        let serving = ca.server(&[
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "10.96.0.1",
        ]);
        let front_proxy_ca = pki::Ca::new("e2e-front-proxy-ca");
        let front_proxy = front_proxy_ca.client("front-proxy-client");
        let sa = rcgen::KeyPair::generate().unwrap();
        let ca_file = d.join("ca.crt");
        write(&ca_file, &ca.cert_pem);
        write(&d.join("apiserver.crt"), &serving.cert_pem);
        write(&d.join("apiserver.key"), &serving.key_pem);
        write(&d.join("front-proxy-ca.crt"), &front_proxy_ca.cert_pem);
        write(&d.join("front-proxy-client.crt"), &front_proxy.cert_pem);
        write(&d.join("front-proxy-client.key"), &front_proxy.key_pem);
        write(&d.join("sa.key"), &sa.serialize_pem());
        write(&d.join("sa.pub"), &sa.public_key_pem());
        write(
            &d.join("tokens.csv"),
            &format!(
                "{ADMIN_TOKEN},e2e-admin,uid-admin,\"system:masters\"\n{NOBODY_TOKEN},e2e-nobody,uid-nobody\n"
            ),
        );
        std::fs::create_dir_all(d.join("etcd")).unwrap();
        std::fs::create_dir_all(d.join("apiserver-certs")).unwrap();

        let mut procs = Vec::new();
        let (etcd_client, etcd_peer) = (free_addr(), free_addr());
        procs.push(Proc::spawn(
            "etcd",
            Command::new(&peers.etcd)
                .arg("--name=e2e")
                .arg(format!("--data-dir={}", d.join("etcd").display()))
                .arg(format!("--listen-client-urls=http://{etcd_client}"))
                .arg(format!("--advertise-client-urls=http://{etcd_client}"))
                .arg(format!("--listen-peer-urls=http://{etcd_peer}"))
                .arg(format!("--initial-advertise-peer-urls=http://{etcd_peer}"))
                .arg(format!("--initial-cluster=e2e=http://{etcd_peer}"))
                .arg("--log-level=warn"),
            d,
        ));

        let api = free_addr();
        let url = format!("https://{api}");
        procs.push(Proc::spawn(
            "kube-apiserver",
            Command::new(&peers.apiserver)
                .arg(format!("--etcd-servers=http://{etcd_client}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--secure-port={}", api.port()))
                .arg(format!(
                    "--cert-dir={}",
                    d.join("apiserver-certs").display()
                ))
                .arg(format!(
                    "--tls-cert-file={}",
                    d.join("apiserver.crt").display()
                ))
                .arg(format!(
                    "--tls-private-key-file={}",
                    d.join("apiserver.key").display()
                ))
                .arg(format!("--client-ca-file={}", ca_file.display()))
                .arg(format!(
                    "--token-auth-file={}",
                    d.join("tokens.csv").display()
                ))
                .arg("--authorization-mode=Node,RBAC")
                .arg("--service-cluster-ip-range=10.96.0.0/24")
                .arg("--endpoint-reconciler-type=none")
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!(
                    "--service-account-key-file={}",
                    d.join("sa.pub").display()
                ))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    d.join("sa.key").display()
                ))
                .arg(format!(
                    "--requestheader-client-ca-file={}",
                    d.join("front-proxy-ca.crt").display()
                ))
                .arg("--requestheader-allowed-names=front-proxy-client")
                .arg("--requestheader-username-headers=X-Remote-User")
                .arg("--requestheader-group-headers=X-Remote-Group")
                .arg("--requestheader-extra-headers-prefix=X-Remote-Extra-")
                .arg(format!(
                    "--proxy-client-cert-file={}",
                    d.join("front-proxy-client.crt").display()
                ))
                .arg(format!(
                    "--proxy-client-key-file={}",
                    d.join("front-proxy-client.key").display()
                ))
                .arg("--enable-aggregator-routing=false")
                .arg("--profiling=false")
                .arg("--v=1"),
            d,
        ));

        let ca_pem = reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap();
        let client = |token: &str| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
            reqwest::Client::builder()
                .add_root_certificate(ca_pem.clone())
                .default_headers(headers)
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap()
        };
        let admin = client(ADMIN_TOKEN);
        let nobody = client(NOBODY_TOKEN);
        let admin_kubeconfig = d.join("admin.kubeconfig");
        write(&admin_kubeconfig, &kubeconfig(&url, &ca_file, ADMIN_TOKEN));

        let mut cluster = Self {
            dir,
            kubectl: peers.kubectl.clone(),
            url,
            admin,
            nobody,
            ca_file,
            front_proxy_ca,
            procs,
        };
        // Ready: /readyz answers 200 (etcd reachable, post-start hooks done).
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            for p in &mut cluster.procs {
                p.assert_running();
            }
            if let Ok(r) = cluster
                .admin
                .get(format!("{}/readyz", cluster.url))
                .send()
                .await
            {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready within 120s:\n{}",
                cluster.procs[1].log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }

        let kcm = free_addr();
        let d = cluster.dir.path();
        let proc = Proc::spawn(
            "kube-controller-manager",
            Command::new(&peers.controller_manager)
                .arg(format!("--kubeconfig={}", admin_kubeconfig.display()))
                .arg(format!(
                    "--authentication-kubeconfig={}",
                    admin_kubeconfig.display()
                ))
                .arg(format!(
                    "--authorization-kubeconfig={}",
                    admin_kubeconfig.display()
                ))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={}", kcm.port()))
                .arg(format!("--cert-dir={}", d.join("kcm-certs").display()))
                .arg(
                    "--controllers=serviceaccount-token-controller,serviceaccount-controller,\
                     deployment-controller,replicaset-controller,statefulset-controller,\
                     horizontal-pod-autoscaler-controller",
                )
                .arg(format!(
                    "--service-account-private-key-file={}",
                    d.join("sa.key").display()
                ))
                .arg(format!("--root-ca-file={}", cluster.ca_file.display()))
                .arg("--use-service-account-credentials=true")
                .arg("--horizontal-pod-autoscaler-sync-period=1s")
                // Every HPA sync logged (g. reads the replay HPA's from it), in UTC.
                .arg("--vmodule=horizontal=4")
                .env("TZ", "UTC")
                .arg("--leader-elect=false")
                .arg("--profiling=false")
                .arg("--v=1"),
            d,
        );
        cluster.procs.push(proc);
        cluster
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg(format!(
            "--kubeconfig={}",
            self.path("admin.kubeconfig").display()
        ))
        .arg(format!(
            "--cache-dir={}",
            self.path("kubectl-cache").display()
        ))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HOME", self.dir.path());
        cmd
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("kubectl runs")
    }

    /// kubectl, which must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of a JSON object or List.
    pub fn apply(&self, obj: &Value) {
        let mut child = self
            .kubectl_cmd(&["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(obj.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply of {obj} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub async fn get(
        &self,
        client: &reqwest::Client,
        path: &str,
        accept: Option<&str>,
    ) -> (u16, Value) {
        let mut req = client.get(format!("{}{path}", self.url));
        if let Some(a) = accept {
            req = req.header(reqwest::header::ACCEPT, a);
        }
        match req.send().await {
            Ok(r) => {
                let code = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                (
                    code,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            }
            Err(e) => (0, Value::String(e.to_string())),
        }
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        self.get(&self.admin, path, None).await
    }
}
