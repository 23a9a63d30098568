//! Check "f" for the Helm chart: deploy/helm/prescale rendered by the pinned helm
//! (tests/e2e/peers.sh) in its default (self-signed certificate) and cert-manager
//! modes, each applied with `kubectl apply --dry-run=server -f` to the real
//! apiserver, which runs every admission and validation step without storing.

use std::path::PathBuf;
use std::process::Command;

use super::{peers_dir, Check, Cluster};

/// The helm version tests/e2e/peers.sh pins (its `HELM_VERSION=` line).
fn helm_version() -> String {
    let script = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/peers.sh"),
    )
    .expect("tests/e2e/peers.sh");
    script
        .lines()
        .find_map(|l| l.strip_prefix("HELM_VERSION="))
        .expect("a HELM_VERSION= line in tests/e2e/peers.sh")
        .trim()
        .to_string()
}

pub(crate) fn check(c: &Cluster) -> Check {
    let version = helm_version();
    let helm = peers_dir().join(format!("helm-{version}"));
    if !helm.is_file() || !peers_dir().join(format!("helm-{version}.stamp")).is_file() {
        let why = format!(
            "{} (with its .stamp) is missing: run `bash tests/e2e/peers.sh`",
            helm.display()
        );
        return if std::env::var("CI").is_ok_and(|v| v == "true") {
            Err(why)
        } else {
            Ok(format!("SKIPPED: {why}"))
        };
    }
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
    Ok(format!(
        "helm {version}, deploy/helm/prescale {}",
        seen.join(", ")
    ))
}
