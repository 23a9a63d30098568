//! A real Prometheus (Debian's `/usr/bin/prometheus`) for integration tests.
//!
//! [`Prometheus::start`] writes the given series as OpenMetrics, backfills a
//! temporary TSDB with `promtool tsdb create-blocks-from openmetrics`, starts
//! Prometheus on a free 127.0.0.1 port over that TSDB and waits until it is ready.
//! [`Prometheus::stop`] and [`Prometheus::restart`] (same port, same data) let
//! tests exercise outages and recovery; dropping the value kills the process and
//! removes the data.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prescale::series::{write_openmetrics, LabeledSeries};

/// How long Prometheus gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or stopped) Prometheus over a backfilled temporary TSDB.
pub struct Prometheus {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// Whether the `prometheus` and `promtool` binaries are installed (tests/ci.sh installs them).
pub fn available() -> bool {
    ["prometheus", "promtool"].iter().all(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Whether a test that needs Prometheus can run. Outside CI a missing binary skips
/// it with the reason printed; with `CI=true` it is a failure, so that a suite
/// cannot pass because nothing ran.
pub fn usable() -> bool {
    if available() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "prometheus/promtool are not installed and CI=true (tests/ci.sh installs them)"
    );
    eprintln!("skipped: prometheus/promtool not installed (tests/ci.sh installs them)");
    false
}

impl Prometheus {
    /// Backfills `series` (each with a `__name__` label) and starts Prometheus.
    ///
    /// # Panics
    /// When the binaries are missing, backfilling fails or Prometheus does not get ready.
    pub fn start(series: &[LabeledSeries]) -> Self {
        Self::start_scraping(
            series,
            "global:\n  scrape_interval: 1h\nscrape_configs: []\n",
        )
    }

    /// Backfills `series` (may be empty) and starts Prometheus with `config` as its
    /// whole `prometheus.yml` (global settings and `scrape_configs`), for tests whose
    /// data arrives by scraping a live target on 127.0.0.1.
    ///
    /// # Panics
    /// As [`Prometheus::start`].
    pub fn start_scraping(series: &[LabeledSeries], config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        if !series.is_empty() {
            backfill(dir.path(), series);
        }
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write prometheus.yml");
        let addr = free_addr();
        let mut p = Self {
            child: None,
            addr,
            dir,
        };
        p.spawn();
        p
    }

    /// Base URL of the HTTP API, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TSDB directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Kills Prometheus and waits for it to exit; the data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Prometheus again on the same port over the same data, and waits until ready.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts Prometheus again on the same port over a new TSDB holding only
    /// `series` (as after losing its volume), and waits until ready.
    pub fn restart_fresh(&mut self, series: &[LabeledSeries]) {
        self.stop();
        std::fs::remove_dir_all(self.data_dir()).expect("remove the old TSDB");
        backfill(self.dir.path(), series);
        self.spawn();
    }

    /// The process id while running (to pause it with SIGSTOP).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", self.data_dir().display()))
            // Backfilled data may be old: never let retention delete it during a test.
            .arg("--storage.tsdb.retention.time=100y")
            .arg(format!("--web.listen-address={}", self.addr))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus runs (apt-get install prometheus)");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if http_status(self.addr, "/-/ready") == Some(200) {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "prometheus exited with {status} before getting ready:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "prometheus not ready after {READY_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Prometheus' own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes `series` as OpenMetrics in `dir` and backfills a TSDB in `dir/data` from it.
fn backfill(dir: &Path, series: &[LabeledSeries]) {
    let om = dir.join("backfill.om");
    let mut text = Vec::new();
    write_openmetrics(series, &mut text).expect("series are writable as OpenMetrics");
    std::fs::write(&om, &text).expect("write OpenMetrics file");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
        .arg(&om)
        .arg(dir.join("data"))
        .output()
        .expect("promtool runs (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "promtool failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address")
}

/// The HTTP status of `GET path`, `None` when nothing answers.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// Reads a bundled trace from tests/data and puts it on its own grid.
pub fn bundled_trace(file: &str) -> prescale::series::Series {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
    let loaded = prescale::series::load_file(&path, &prescale::series::ResampleOptions::default())
        .expect("bundled trace loads");
    loaded.into_iter().next().expect("one series").0.series
}
