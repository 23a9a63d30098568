//! The container image, built and run without a Docker daemon (the machines have
//! none, and no registry can be reached for the Dockerfile's base images).
//!
//! The test assembles an OCI image with `umoci` from scratch: the locally built
//! binary at the path the Dockerfile installs it to, the shared libraries it links
//! (what distroless/cc provides: glibc, libgcc), CA certificates, the nonroot user
//! and `/tmp`. The image's entrypoint, command, user and ports are taken from the
//! Dockerfile's runtime stage, so the two cannot drift apart. It then unpacks the
//! image and runs it as the Dockerfile's user in a chroot of its root file system:
//! `prescale serve` must start from what the image holds and answer `/readyz`.
//!
//! Needs `umoci` (tests/ci.sh installs it) and root (for the chroot): outside CI it
//! skips with the reason; with `CI=true` either missing is a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::prometheus::{free_addr, http_status};
use crate::support::Killed;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the Dockerfile's last stage says about the image.
#[derive(Debug, PartialEq)]
struct Runtime {
    binary: String,
    user: String,
    ports: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

fn json_array(line: &str, keyword: &str) -> Vec<String> {
    let rest = line.trim_start_matches(keyword).trim();
    serde_json::from_str(rest)
        .unwrap_or_else(|e| panic!("{keyword} must be a JSON array (exec form): {line:?}: {e}"))
}

fn dockerfile_runtime(text: &str) -> Runtime {
    let last_stage = text
        .rsplit_once("\nFROM ")
        .map(|(_, s)| s)
        .expect("the Dockerfile has a runtime stage");
    let mut rt = Runtime {
        binary: String::new(),
        user: String::new(),
        ports: Vec::new(),
        entrypoint: Vec::new(),
        cmd: Vec::new(),
    };
    for line in last_stage.lines().map(str::trim) {
        if let Some(copy) = line.strip_prefix("COPY --from=build ") {
            let parts: Vec<&str> = copy.split_whitespace().collect();
            assert_eq!(parts.len(), 2, "one file copied from the build: {line:?}");
            rt.binary = parts[1].to_string();
        } else if let Some(u) = line.strip_prefix("USER ") {
            rt.user = u.trim().to_string();
        } else if let Some(p) = line.strip_prefix("EXPOSE ") {
            rt.ports = p.split_whitespace().map(|p| format!("{p}/tcp")).collect();
        } else if line.starts_with("ENTRYPOINT ") {
            rt.entrypoint = json_array(line, "ENTRYPOINT");
        } else if line.starts_with("CMD ") {
            rt.cmd = json_array(line, "CMD");
        }
    }
    rt
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies `from` to `root` + `at` (an absolute path inside the image).
fn place(root: &Path, from: &Path, at: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    let to = root.join(at.trim_start_matches('/'));
    std::fs::create_dir_all(to.parent().expect("a parent directory")).expect("mkdir");
    std::fs::copy(from, &to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The shared libraries `binary` links, with the dynamic loader (absolute paths).
fn linked_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = run(Command::new("ldd").arg(binary));
    out.lines()
        .filter_map(|l| {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn missing(reason: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "image test cannot run in CI: {reason}"
    );
    eprintln!("skipped: {reason}");
}

#[test]
fn the_dockerfile_runtime_stage_is_read_as_written() {
    let text =
        std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("deploy/Dockerfile");
    let rt = dockerfile_runtime(&text);
    assert_eq!(rt.binary, "/usr/local/bin/prescale");
    assert_eq!(rt.user, "65532:65532");
    assert_eq!(rt.ports, ["6443/tcp", "8443/tcp", "8080/tcp"]);
    assert_eq!(rt.entrypoint, ["/usr/local/bin/prescale"]);
    assert_eq!(rt.cmd, ["serve"]);
}

#[test]
fn an_image_assembled_from_the_build_runs_serve_and_answers_readyz() {
    if Command::new("umoci").arg("--version").output().is_err() {
        return missing("umoci is not installed (tests/ci.sh installs it)");
    }
    let uid = run(Command::new("id").arg("-u"));
    if uid.trim() != "0" {
        return missing("running the image needs root (chroot)");
    }
    let text =
        std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("deploy/Dockerfile");
    let rt = dockerfile_runtime(&text);
    let work = tempfile::tempdir().expect("temporary directory");
    let layout = work.path().join("oci");
    let image = format!("{}:prescale", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    let bundle = work.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");

    // The binary (a stripped copy: the debug build carries 200+ MB of symbols).
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_prescale"));
    let stripped = work.path().join("prescale");
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&binary)
        .status()
        .is_ok_and(|s| s.success());
    place(
        &rootfs,
        if ok { &stripped } else { &binary },
        &rt.binary,
        0o755,
    );
    for lib in linked_libraries(&binary) {
        let real = std::fs::canonicalize(&lib).expect("a linked library");
        place(&rootfs, &real, &lib.to_string_lossy(), 0o755);
    }
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if ca.exists() {
        place(&rootfs, ca, "/etc/ssl/certs/ca-certificates.crt", 0o644);
    }
    let (uid, gid) = rt.user.split_once(':').expect("USER uid:gid");
    std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir etc");
    std::fs::write(
        rootfs.join("etc/passwd"),
        format!("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{uid}:{gid}:nonroot:/home/nonroot:/sbin/nologin\n"),
    )
    .expect("passwd");
    std::fs::write(
        rootfs.join("etc/group"),
        format!("root:x:0:\nnonroot:x:{gid}:\n"),
    )
    .expect("group");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = rootfs.join("tmp");
        std::fs::create_dir_all(&tmp).expect("mkdir tmp");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    }
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    let mut config = Command::new("umoci");
    config.args(["config", "--image", &image, "--config.user", &rt.user]);
    for e in &rt.entrypoint {
        config.args(["--config.entrypoint", e]);
    }
    for c in &rt.cmd {
        config.args(["--config.cmd", c]);
    }
    for p in &rt.ports {
        config.args(["--config.exposedports", p]);
    }
    run(&mut config);

    // The image's own config says what the Dockerfile says.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
            .expect("JSON");
    let blob = |digest: &str| -> serde_json::Value {
        let hex = digest.trim_start_matches("sha256:");
        serde_json::from_slice(
            &std::fs::read(layout.join("blobs/sha256").join(hex)).expect("a blob"),
        )
        .expect("JSON blob")
    };
    let manifest = blob(
        index["manifests"][0]["digest"]
            .as_str()
            .expect("a manifest"),
    );
    let cfg = blob(manifest["config"]["digest"].as_str().expect("a config"));
    assert_eq!(cfg["config"]["User"], rt.user.as_str(), "{cfg}");
    assert_eq!(
        cfg["config"]["Entrypoint"],
        serde_json::json!(rt.entrypoint)
    );
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(rt.cmd));
    for p in &rt.ports {
        assert!(
            cfg["config"]["ExposedPorts"].get(p).is_some(),
            "{p} in {cfg}"
        );
    }
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "{manifest}");

    // Run it: a fresh unpack of the image, chrooted, as the image's user.
    let run_dir = work.path().join("run");
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&run_dir));
    let (https, plain) = (free_addr(), free_addr());
    let mut argv: Vec<String> = rt.entrypoint.clone();
    argv.extend(rt.cmd.iter().cloned());
    argv.extend([
        "--https-address".to_string(),
        https.to_string(),
        "--http-address".to_string(),
        plain.to_string(),
    ]);
    let log = work.path().join("serve.log");
    let mut child = Killed(
        Command::new("chroot")
            .arg(format!("--userspec={}", rt.user))
            .arg(run_dir.join("rootfs"))
            .args(&argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("TMPDIR", "/tmp")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("chroot runs"),
    );
    let started = Instant::now();
    let mut status = None;
    while started.elapsed() < Duration::from_secs(60) {
        status = http_status(plain, "/readyz");
        if status == Some(200) {
            break;
        }
        if let Ok(Some(exit)) = child.0.try_wait() {
            panic!(
                "prescale in the image exited ({exit}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        status,
        Some(200),
        "no /readyz from the image after {:?}: {}",
        started.elapsed(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    eprintln!(
        "image: {} layer(s), ready after {:.1}s running {argv:?} as {}",
        layers.len(),
        started.elapsed().as_secs_f64(),
        rt.user
    );
}
