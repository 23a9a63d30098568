//! Check h of tests/it/e2e.rs: prescale's KEDA external scaler, called over TLS
//! with a client certificate by `keda-client` (tests/e2e/keda: KEDA's own
//! generated `externalscaler` client, built by tests/e2e/peers.sh), as KEDA's
//! `external` trigger calls it. The KEDA operator itself does not run here.
//!
//! The fixture gains series of `e2e_queue_depth`: `{queue="ramp"}`, rising one per
//! second, whose served forecast runs ahead of its observation; and steps
//! `{queue="step-<T>"}`, constant at [`STEP_LOW`] until the Unix second `T` and at
//! [`STEP_HIGH`] from then on, one every [`STEP_EVERY_S`] seconds over the next 20
//! minutes, so that the check can watch a stream over a change it knows is coming
//! (constant before it: the forecast does not see it coming).

use super::*;

/// A step series' level before and after its step.
const STEP_LOW: f64 = 100.0;
const STEP_HIGH: f64 = 1_000.0;
/// Seconds between the steps of successive step series.
const STEP_EVERY_S: i64 = 30;

/// The series this check adds to the fixture, on its grid over its 80 minutes.
pub fn series() -> Vec<LabeledSeries> {
    let now = SystemClock.now_ms();
    let start_ms = now - now.rem_euclid(STEP_MS) - 40 * 60_000;
    let n = (80 * 60_000 / STEP_MS) as usize;
    let series = |queue: String, value: &dyn Fn(i64) -> f64| LabeledSeries {
        labels: labels(&[("__name__", EXTERNAL), ("queue", &queue)]),
        series: Series {
            start_ms,
            step_ms: STEP_MS,
            values: (0..n)
                .map(|i| value(start_ms + i as i64 * STEP_MS))
                .collect(),
        },
    };
    let mut out = vec![series("ramp".into(), &|t| ((t - start_ms) / 1_000) as f64)];
    let first = next_step_s(now / 1_000);
    for k in 0..(20 * 60 / STEP_EVERY_S) {
        let step_s = first + k * STEP_EVERY_S;
        out.push(series(format!("step-{step_s}"), &|t| {
            if t >= step_s * 1_000 {
                STEP_HIGH
            } else {
                STEP_LOW
            }
        }));
    }
    out
}

/// The first step time (Unix seconds, a multiple of [`STEP_EVERY_S`]) after `s`.
fn next_step_s(s: i64) -> i64 {
    (s / STEP_EVERY_S + 1) * STEP_EVERY_S
}

/// The scaler's address, the CA its clients' certificates must come from, and
/// the client certificate `keda-client` presents.
pub struct Setup {
    addr: SocketAddr,
    client_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Setup {
    /// A free address and the client PKI, written into the cluster's directory.
    pub fn new(c: &Cluster) -> Self {
        let ca = pki::Ca::new("e2e-keda-clients");
        let pair = ca.client("keda-operator");
        let setup = Self {
            addr: free_addr(),
            client_ca: c.path("keda-client-ca.crt"),
            cert: c.path("keda-client.crt"),
            key: c.path("keda-client.key"),
        };
        write(&setup.client_ca, &ca.cert_pem);
        write(&setup.cert, &pair.cert_pem);
        write(&setup.key, &pair.key_pem);
        setup
    }

    /// `config` (prescale's YAML, with a top-level `server:` section) with
    /// `server.keda_scaler`: on the free address, the API's (generated)
    /// certificate, client certificates required.
    pub fn with_scaler(&self, config: String) -> String {
        let scaler = format!(
            "\nserver:\n  keda_scaler:\n    address: {}\n    tls:\n      client_ca_file: {}\n",
            self.addr,
            self.client_ca.display()
        );
        assert!(
            config.contains("\nserver:\n"),
            "prescale's e2e config has no `server:` section"
        );
        config.replacen("\nserver:\n", &scaler, 1)
    }

    /// Runs `keda-client OP key=value...` against the scaler and returns its JSON
    /// lines; `with_cert` false leaves the client certificate out.
    async fn call(
        &self,
        client: &Path,
        server_ca: &Path,
        with_cert: bool,
        op: &str,
        args: &[String],
    ) -> Result<Vec<Value>, String> {
        let mut cmd = tokio::process::Command::new(client);
        cmd.arg(format!("-addr=127.0.0.1:{}", self.addr.port()))
            .arg(format!("-ca={}", server_ca.display()))
            .arg("-server-name=prescale.prescale.svc")
            .arg(format!("-namespace={NS}"))
            .arg("-timeout=30s");
        if with_cert {
            cmd.arg(format!("-cert={}", self.cert.display()))
                .arg(format!("-key={}", self.key.display()));
        }
        // Go's flags come before the operation; the metadata after it.
        let (flags, metadata): (Vec<&String>, Vec<&String>) =
            args.iter().partition(|a| a.starts_with('-'));
        let out = cmd
            .args(flags)
            .arg(op)
            .args(metadata)
            .output()
            .await
            .map_err(|e| format!("keda-client does not run: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "keda-client {op}: {}{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).map_err(|e| format!("keda-client {op}: {e}: {l}")))
            .collect()
    }

    /// The check.
    pub async fn check(&self, c: &Cluster, plain: SocketAddr, cert_dir: &Path) -> Check {
        let client = match client_binary() {
            Ok(p) => p,
            Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => return Err(why),
            Err(why) => return Ok(format!("SKIPPED: {why}")),
        };
        let server_ca = cert_dir.join(prescale::api::tls::SELF_SIGNED_CERT);
        let meta = |pairs: &[(&str, &str)]| -> Vec<String> {
            pairs.iter().map(|(k, v)| format!("{k}={v}")).collect()
        };
        let call = async |op: &str, args: Vec<String>| {
            let lines = self.call(&client, &server_ca, true, op, &args).await?;
            match lines.as_slice() {
                [one] if one.get("code").is_none() => Ok(one.clone()),
                _ => Err(format!("keda-client {op} {args:?}: {lines:?}")),
            }
        };
        let jobs = [
            ("signal", EXTERNAL),
            ("series", "queue=jobs"),
            ("target", "100"),
        ];
        let mut seen = Vec::new();

        // GetMetricSpec.
        let spec = call("spec", meta(&jobs)).await?;
        if spec[0]["metricName"] != EXTERNAL || spec[0]["targetSizeFloat"] != 100.0 {
            return Err(format!("GetMetricSpec: {spec}"));
        }
        seen.push(format!(
            "GetMetricSpec {}/{}",
            spec[0]["metricName"], spec[0]["targetSizeFloat"]
        ));

        // GetMetrics equals what the apiserver's aggregator serves for the series.
        let api_path = format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/{EXTERNAL}?labelSelector=queue%3Djobs"
        );
        let milli = |v: f64| (v * 1000.0).round() as i64;
        let equal = wait_for(Duration::from_secs(30), async || {
            let values = call("metrics", meta(&jobs)).await?;
            let grpc = values[0]["metricValueFloat"].as_f64().unwrap_or(f64::NAN);
            let (code, body) = c.admin_get(&api_path).await;
            let api = sum_values(&body).ok_or(format!("{api_path}: {code} {body}"))?;
            if milli(grpc) == milli(api) {
                Ok(format!(
                    "GetMetrics {grpc} = external.metrics.k8s.io {} (via the apiserver)",
                    body["items"][0]["value"]
                ))
            } else {
                Err(format!("GetMetrics {grpc} ≠ external.metrics.k8s.io {api}"))
            }
        })
        .await?;
        seen.push(equal);

        // IsActive from the forecast: a threshold between the ramp's observation
        // and its forecast peak over the lead time (the forecast alone crosses it,
        // before the tolerance factor the served value adds).
        let debug = reqwest::Client::new();
        let ramp_doc = async || -> Result<(f64, f64, f64, String), String> {
            let doc: Value = debug
                .get(format!("http://{plain}/debug/signals"))
                .query(&[("signal", EXTERNAL), ("series", "queue=ramp")])
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            let s = &doc["metrics"][0]["series"][0];
            let why = &s["why"];
            match (
                s["latest"].as_f64(),
                why["forecast_peak"].as_f64(),
                s["served_value"].as_f64(),
            ) {
                (Some(latest), Some(peak), Some(served)) if s["status"] == "ok" => Ok((
                    latest,
                    peak,
                    served,
                    why["text"].as_str().unwrap_or("?").to_string(),
                )),
                _ => Err(format!("ramp not served with a forecast yet: {s}")),
            }
        };
        let (latest, peak, served, why) = wait_for(Duration::from_secs(60), ramp_doc).await?;
        let threshold = ((latest + peak) / 2.0).round();
        if !(latest < threshold && threshold < peak && peak <= served) {
            return Err(format!(
                "ramp: the forecast peak {peak} is not ahead of the observation {latest} (served {served}: {why})"
            ));
        }
        let ramp = |t: f64| {
            meta(&[
                ("signal", EXTERNAL),
                ("series", "queue=ramp"),
                ("activationThreshold", &t.to_string()),
            ])
        };
        let active = call("active", ramp(threshold)).await?;
        if active["result"] != true {
            return Err(format!(
                "IsActive {active} with observed {latest} < activationThreshold {threshold} < forecast peak {peak}"
            ));
        }
        // The observation only rises: below the threshold after the answer, it
        // was below it when the answer was given.
        let (after, ..) = ramp_doc().await?;
        if after >= threshold {
            return Err(format!(
                "the ramp's observation {after} reached activationThreshold {threshold} before the check could tell"
            ));
        }
        let above = call("active", ramp(served + 1_000.0)).await?;
        if above["result"] != false {
            return Err(format!("IsActive {above} above the served value {served}"));
        }
        seen.push(format!(
            "IsActive true at activationThreshold {threshold} with the ramp observed at {latest} (still {after} after the answer) and forecast to {peak} within the lead time (served {served}: {why}), false at {}",
            served + 1_000.0
        ));

        // StreamIsActive over a step at least 15 s away: false (served 1.1 × 100),
        // then true once the observation is 1000.
        let step_s = next_step_s(SystemClock.now_ms() / 1_000 + 15);
        let step = format!("queue=step-{step_s}");
        let wait_s = step_s - SystemClock.now_ms() / 1_000;
        let mut args = vec![
            "-messages=2".to_string(),
            format!("-timeout={}s", wait_s + 60),
        ];
        args.extend(meta(&[
            ("signal", EXTERNAL),
            ("series", &step),
            ("activationThreshold", "500"),
        ]));
        let lines = self
            .call(&client, &server_ca, true, "stream", &args)
            .await?;
        let results: Vec<&Value> = lines.iter().map(|l| &l["result"]).collect();
        if results != [&Value::Bool(false), &Value::Bool(true)] {
            return Err(format!(
                "StreamIsActive on {step} at activationThreshold 500 (from {STEP_LOW} to {STEP_HIGH} at {step_s}): {lines:?}"
            ));
        }
        let after_s = (lines[1]["at_ms"].as_i64().unwrap_or(0) - step_s * 1_000) as f64 / 1_000.0;
        seen.push(format!(
            "StreamIsActive on a step {STEP_LOW}→{STEP_HIGH} at activationThreshold 500: false, then true {after_s:.1}s after the step"
        ));

        // Bad metadata: InvalidArgument naming the key.
        for (args, key) in [
            (
                meta(&[("signal", EXTERNAL), ("series", "queue in (")]),
                "series",
            ),
            (meta(&[("series", "queue=jobs")]), "signal"),
        ] {
            let lines = self
                .call(&client, &server_ca, true, "metrics", &args)
                .await?;
            let got = &lines[0];
            let message = got["message"].as_str().unwrap_or_default();
            if got["code"] != "InvalidArgument"
                || !message.starts_with(&format!("scalerMetadata.{key}:"))
            {
                return Err(format!("bad {key}: {got}"));
            }
        }
        seen.push("bad series/signal → InvalidArgument naming the key".into());

        // No client certificate: refused.
        let lines = self
            .call(&client, &server_ca, false, "active", &meta(&jobs))
            .await?;
        let code = lines[0]["code"].as_str().unwrap_or("OK").to_string();
        if code == "OK" {
            return Err(format!(
                "a client without a certificate was served: {lines:?}"
            ));
        }
        seen.push(format!("no client certificate → {code}"));
        Ok(seen.join("; "))
    }
}

/// The cached `keda-client` of the KEDA version in tests/e2e/keda/go.mod.
fn client_binary() -> Result<PathBuf, String> {
    let gomod = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/keda/go.mod"),
    )
    .map_err(|e| format!("tests/e2e/keda/go.mod: {e}"))?;
    let version = gomod
        .lines()
        .find_map(|l| l.trim().strip_prefix("github.com/kedacore/keda/v2 "))
        .ok_or("no github.com/kedacore/keda/v2 requirement in tests/e2e/keda/go.mod")?
        .trim();
    crate::support::peers::pinned("keda-client", version)
}
