//! Check "f" for the Helm chart: deploy/helm/prescale rendered by the pinned helm
//! (tests/e2e/peers.sh) in its default (self-signed certificate) and cert-manager
//! modes, each applied with `kubectl apply --dry-run=server -f` to the real
//! apiserver, which runs every admission and validation step without storing.
//! Then a real `helm install`, `helm upgrade` and `helm uninstall` of a second
//! release (its own names, no APIServices, so the test's own registration is left
//! alone): the upgrade keeps the self-signed pair (Helm's `lookup` of the Secret),
//! so the pods' `checksum/tls` does not change and they do not roll.

use std::path::Path;
use std::process::Command;

use super::{Check, Cluster};
use crate::support::peers::{helm_version, pinned};

fn helm_cmd(helm: &Path, c: &Cluster, args: &[&str]) -> Command {
    let mut cmd = Command::new(helm);
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HELM_CACHE_HOME", c.path("helm/cache"))
        .env("HELM_CONFIG_HOME", c.path("helm/config"))
        .env("HELM_DATA_HOME", c.path("helm/data"));
    cmd
}

/// helm against the test's apiserver, as its admin; stdout, or why it failed.
fn helm_live(helm: &Path, c: &Cluster, args: &[&str]) -> Result<String, String> {
    let kubeconfig = c.path("admin.kubeconfig").display().to_string();
    let out = helm_cmd(helm, c, args)
        .args(["--kubeconfig", &kubeconfig])
        .output()
        .map_err(|e| format!("helm: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "helm {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Install, upgrade, uninstall: the figures, or what went wrong.
fn install_upgrade_uninstall(helm: &Path, c: &Cluster) -> Check {
    let (release, ns, full) = ("helmcheck", "helm-e2e", "helmcheck-prescale");
    let common = [
        "--namespace",
        ns,
        "--set",
        "apiServices.external=false",
        "--set",
        "apiServices.custom=false",
    ];
    let state = || -> Result<(String, String), String> {
        let get = |args: &[&str]| {
            let out = c.kubectl(args);
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Err(format!(
                    "kubectl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        Ok((
            get(&[
                "-n",
                ns,
                "get",
                "secret",
                &format!("{full}-serving-cert"),
                "-o",
                "jsonpath={.data.tls\\.crt}",
            ])?,
            get(&[
                "-n",
                ns,
                "get",
                "deployment",
                full,
                "-o",
                "jsonpath={.spec.template.metadata.annotations.checksum/tls}",
            ])?,
        ))
    };
    let chart = "deploy/helm/prescale";
    let mut install = vec!["install", release, chart, "--create-namespace"];
    install.extend(common);
    helm_live(helm, c, &install)?;
    let (cert, checksum) = state()?;
    let mut upgrade = vec!["upgrade", release, chart, "--set", "replicaCount=3"];
    upgrade.extend(common);
    helm_live(helm, c, &upgrade)?;
    let (cert_after, checksum_after) = state()?;
    let replicas = c.kubectl(&[
        "-n",
        ns,
        "get",
        "deployment",
        full,
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    let replicas = String::from_utf8_lossy(&replicas.stdout).into_owned();
    helm_live(helm, c, &["uninstall", release, "--namespace", ns])?;
    if cert.is_empty() || checksum.is_empty() {
        return Err(format!(
            "installed: no tls.crt ({}) or checksum/tls ({checksum:?})",
            cert.len()
        ));
    }
    if cert_after != cert || checksum_after != checksum {
        return Err(
            "helm upgrade generated a new self-signed pair (lookup did not find the Secret)".into(),
        );
    }
    if replicas != "3" {
        return Err(format!(
            "helm upgrade did not apply replicaCount=3: {replicas:?}"
        ));
    }
    let left = c.kubectl(&[
        "-n",
        ns,
        "get",
        "deployment,secret,service,configmap",
        "-l",
        &format!("app.kubernetes.io/instance={release}"),
        "-o",
        "name",
    ]);
    if !left.status.success() {
        return Err(format!(
            "after helm uninstall: {}",
            String::from_utf8_lossy(&left.stderr)
        ));
    }
    let left = String::from_utf8_lossy(&left.stdout).into_owned();
    if !left.trim().is_empty() {
        return Err(format!("helm uninstall left {left}"));
    }
    Ok(format!(
        "install, upgrade (replicas 2 → 3, same certificate and checksum/tls), uninstall of release {release} in {ns}"
    ))
}

pub(crate) fn check(c: &Cluster) -> Check {
    let version = helm_version();
    let helm = match pinned("helm", &version) {
        Ok(helm) => helm,
        Err(why) => {
            return if std::env::var("CI").is_ok_and(|v| v == "true") {
                Err(why)
            } else {
                Ok(format!("SKIPPED: {why}"))
            };
        }
    };
    let mut seen = Vec::new();
    for (mode, set) in [
        ("selfSigned", None),
        ("certManager", Some("certificates.mode=certManager")),
    ] {
        let mut cmd = Command::new(&helm);
        cmd.args([
            "template",
            "prescale",
            "deploy/helm/prescale",
            "--namespace",
            "prescale",
        ])
        .args(set.map(|s| ["--set", s]).into_iter().flatten())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HELM_CACHE_HOME", c.path("helm/cache"))
        .env("HELM_CONFIG_HOME", c.path("helm/config"))
        .env("HELM_DATA_HOME", c.path("helm/data"));
        let out = cmd.output().map_err(|e| format!("helm: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "helm template ({mode}): {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let file = c.path(&format!("helm-{mode}.yaml"));
        std::fs::write(&file, &out.stdout).map_err(|e| format!("{}: {e}", file.display()))?;
        let out = c.kubectl(&[
            "apply",
            "--dry-run=server",
            "-f",
            &file.display().to_string(),
        ]);
        if !out.status.success() {
            return Err(format!(
                "deploy/helm/prescale ({mode}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let objects = String::from_utf8_lossy(&out.stdout).lines().count();
        seen.push(format!("{mode} ({objects} objects)"));
    }
    let live = install_upgrade_uninstall(&helm, c)?;
    Ok(format!(
        "helm {version}, deploy/helm/prescale {}; {live}",
        seen.join(", ")
    ))
}
