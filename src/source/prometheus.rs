//! Samples from the Prometheus HTTP API (`/api/v1/query_range`), through
//! prometheus-http-query.
//!
//! Prometheus refuses a range query that would return more than 11,000 points per
//! series, so long ranges (the history backfill at start) are split into chunks of
//! [`MAX_POINTS_PER_QUERY`] points and stitched back together per label set.

use std::collections::BTreeMap;

use prometheus_http_query::response::Data;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};

use super::{BoxFuture, Error, Range, Result, Source};
use crate::config::PrometheusConfig;
use crate::series::{LabeledSeries, Labels};

/// Points per range query; below Prometheus' limit of 11,000 with room to spare.
pub const MAX_POINTS_PER_QUERY: usize = 10_000;

/// A [`Source`] that reads a Prometheus-compatible HTTP API.
#[derive(Clone)]
pub struct PrometheusSource {
    client: prometheus_http_query::Client,
    timeout_ms: i64,
    max_points: usize,
    /// `prometheus.freshness_query`; `None` when switched off.
    freshness_query: Option<String>,
    /// `prometheus.query_offset` in ms (0 when unset).
    query_offset_ms: i64,
}

impl std::fmt::Debug for PrometheusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusSource")
            .field("url", &self.client.base_url().as_str())
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl PrometheusSource {
    /// A source for the configured Prometheus: timeout, bearer token file, CA file or
    /// insecure mode, and extra headers.
    ///
    /// # Errors
    /// When the token or CA file cannot be read, or a header or the URL is invalid.
    pub fn new(config: &PrometheusConfig) -> Result<Self> {
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::ClientSetting(format!("header name {name:?}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| Error::ClientSetting(format!("value of header {name}")))?;
            headers.insert(name, value);
        }
        if let Some(path) = &config.bearer_token_file {
            let token = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
                path: path.clone(),
                source,
            })?;
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                .map_err(|_| Error::ClientSetting(format!("token in {}", path.display())))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout.as_std())
            .default_headers(headers);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|source| Error::ReadFile {
                path: path.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::ClientSetting(format!("CA file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(Error::ClientSetting(format!(
                    "CA file {}: no PEM certificate in it",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if config.insecure_skip_verify {
            tracing::warn!(url = %config.url, "TLS verification of Prometheus is switched off");
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| Error::ClientSetting(format!("HTTP client: {e}")))?;
        let client = prometheus_http_query::Client::from(http, &config.url)
            .map_err(|e| Error::ClientSetting(format!("url {:?}: {e}", config.url)))?;
        Ok(Self {
            client,
            timeout_ms: config.timeout.as_ms(),
            max_points: MAX_POINTS_PER_QUERY,
            freshness_query: Some(config.freshness_query.trim().to_string())
                .filter(|q| !q.is_empty()),
            query_offset_ms: config.query_offset.map_or(0, |d| d.as_ms()),
        })
    }

    /// Uses chunks of at most `max_points` points per query (tests use small chunks).
    pub fn with_max_points(mut self, max_points: usize) -> Self {
        self.max_points = max_points.max(1);
        self
    }

    #[tracing::instrument(level = "debug", skip(self), fields(start_ms = range.start_ms, points = range.len()))]
    async fn fetch_range(&self, query: &str, range: Range) -> Result<Vec<LabeledSeries>> {
        let mut by_labels: BTreeMap<Labels, crate::series::Series> = BTreeMap::new();
        for chunk in range.chunks(self.max_points) {
            let (start_s, end_s) = (chunk.start_ms / 1_000, chunk.end_ms / 1_000);
            let step_s = chunk.step_ms as f64 / 1_000.0;
            let err = |source| Error::Prometheus {
                query: query.to_string(),
                start_s,
                end_s,
                source,
            };
            let send = || {
                self.client
                    .query_range(query, start_s, end_s, step_s)
                    .timeout(self.timeout_ms)
                    .get()
            };
            let result = match send().await {
                // A kept-alive connection the server closed as the request went out
                // (Prometheus restarted, a proxy's idle timeout): one more try on a
                // new connection, rather than a refresh failed for nothing.
                Err(e) if dropped_connection(&e) => {
                    tracing::debug!(error = %e, "connection closed under the request; retrying once");
                    send().await.map_err(err)?
                }
                other => other.map_err(err)?,
            };
            let matrix = match result.into_inner().0 {
                Data::Matrix(m) => m,
                Data::Vector(_) => return Err(not_a_matrix(query, "instant vector")),
                Data::Scalar(_) => return Err(not_a_matrix(query, "scalar")),
            };
            for rv in matrix {
                let (labels, samples) = rv.into_inner();
                let labels: Labels = labels.into_iter().collect();
                let series = by_labels
                    .entry(labels)
                    .or_insert_with(|| range.empty_series());
                for s in samples {
                    let ts_ms = (s.timestamp() * 1_000.0).round() as i64;
                    let value = s.value();
                    if let (Some(i), true) = (range.index_of(ts_ms), value.is_finite()) {
                        series.values[i] = value;
                    }
                }
            }
        }
        Ok(by_labels
            .into_iter()
            .map(|(labels, series)| LabeledSeries { labels, series })
            .collect())
    }
}

/// Whether `e` is a connection that closed before any answer, as a reused
/// keep-alive connection does when the server has just closed it: neither a
/// timeout (the server is slow: retrying would double the wait) nor a refused
/// connection (the server is down).
fn dropped_connection(e: &prometheus_http_query::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<reqwest::Error>() {
            return r.is_request() && !r.is_timeout() && !r.is_connect();
        }
        cause = c.source();
    }
    false
}

fn not_a_matrix(query: &str, kind: &'static str) -> Error {
    Error::NotAMatrix {
        query: query.to_string(),
        kind,
    }
}

/// Longest wait for the freshness query.
const FRESHNESS_TIMEOUT_MS: i64 = 2_000;

impl PrometheusSource {
    /// The time of the newest ingested sample, from the freshness query: `None` when
    /// it is switched off, fails or returns nothing (the fetch that follows reports
    /// its own errors, and a Prometheus without `up` is not stalled for it).
    async fn ingested_to(&self) -> Option<i64> {
        let query = self.freshness_query.as_deref()?;
        // At most a couple of seconds: the refresh waits for it, and a Prometheus
        // that does not answer fails the fetch that follows anyway.
        let limit_ms = self.timeout_ms.clamp(1, FRESHNESS_TIMEOUT_MS);
        let request = self.client.query(query).timeout(limit_ms).get();
        let answer = tokio::time::timeout(
            std::time::Duration::from_millis(limit_ms.unsigned_abs()),
            request,
        )
        .await;
        let data = match answer {
            Ok(Ok(r)) => r.into_inner().0,
            Ok(Err(e)) => {
                tracing::debug!(query, error = %e, "freshness query failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(query, "freshness query timed out");
                return None;
            }
        };
        let seconds = match data {
            Data::Vector(v) => v
                .iter()
                .map(|s| s.sample().value())
                .filter(|v| v.is_finite())
                .reduce(f64::max)?,
            Data::Scalar(s) => s.value(),
            Data::Matrix(_) => {
                tracing::debug!(query, "freshness query returned a range vector");
                return None;
            }
        };
        // Anything before 2001 is not a sample time (`time() - x`, a count): ignored.
        (seconds.is_finite() && seconds > 1e9).then(|| (seconds * 1_000.0).round() as i64)
    }
}

impl Source for PrometheusSource {
    fn fetch<'a>(
        &'a self,
        query: &'a str,
        range: Range,
    ) -> BoxFuture<'a, Result<Vec<LabeledSeries>>> {
        Box::pin(self.fetch_range(query, range))
    }

    fn frontier(&self, now_ms: i64) -> BoxFuture<'_, Option<i64>> {
        Box::pin(async move {
            let offset = (self.query_offset_ms > 0).then(|| now_ms - self.query_offset_ms);
            match (self.ingested_to().await, offset) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn config(url: String) -> PrometheusConfig {
        PrometheusConfig {
            url,
            timeout: Duration::try_new("2s").unwrap(),
            bearer_token_file: None,
            ca_file: None,
            insecure_skip_verify: false,
            headers: Default::default(),
            freshness_query: String::new(),
            query_offset: None,
        }
    }

    /// Answers one HTTP request with `body` and returns the request head.
    async fn one_request(listener: tokio::net::TcpListener, body: &'static str) -> String {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        let mut got = 0;
        while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf[got..]).await.unwrap();
            assert!(n > 0, "connection closed before the request head ended");
            got += n;
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(reply.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&buf[..got]).into_owned()
    }

    #[tokio::test]
    async fn sends_token_and_headers_and_maps_samples_onto_the_grid() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"up","job":"a"},"values":[[60,"1"],[180,"NaN"],[240,"4.5"],[250,"9"]]}]}}"#;
        let server = tokio::spawn(one_request(listener, body));
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let mut c = config(format!("http://{addr}"));
        c.bearer_token_file = Some(token);
        c.headers.insert("X-Scope-OrgID".into(), "team-a".into());
        let src = PrometheusSource::new(&c).unwrap();
        let range = Range::try_new(60_000, 240_000, 60_000).unwrap();
        let got = src.fetch("up", range).await.unwrap();
        let head = server.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /api/v1/query_range?"), "{head}");
        assert!(head.contains("authorization: bearer s3cret\r\n"), "{head}");
        assert!(head.contains("x-scope-orgid: team-a\r\n"), "{head}");
        assert!(head.contains("step=60"), "{head}");
        assert_eq!(got.len(), 1);
        let v = &got[0].series.values;
        // 120 missing, 180 NaN, 250 off the grid: all gaps.
        assert_eq!(v.len(), 4);
        assert_eq!(v[0], 1.0);
        assert!(v[1].is_nan() && v[2].is_nan());
        assert_eq!(v[3], 4.5);
    }

    #[tokio::test]
    async fn the_frontier_is_the_newest_sample_time_less_any_query_offset() {
        let now = 1_800_000_000_000;
        // Neither set: no frontier. The offset alone: now minus it.
        let off = PrometheusSource::new(&config("http://127.0.0.1:9".into())).unwrap();
        assert_eq!(off.frontier(now).await, None);
        let mut c = config("http://127.0.0.1:9".into());
        c.query_offset = Some(Duration::try_new("30s").unwrap());
        let offset_only = PrometheusSource::new(&c).unwrap();
        assert_eq!(offset_only.frontier(now).await, Some(now - 30_000));

        // The query's newest timestamp, earlier of the two with an offset.
        for (offset, want) in [
            (None, 1_799_999_990_500),
            (Some("5s"), 1_799_999_990_500),
            (Some("15s"), now - 15_000),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let body = r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{},"value":[1800000000,"1799999990.5"]},
                {"metric":{"job":"b"},"value":[1800000000,"1799999980"]}]}}"#;
            let server = tokio::spawn(one_request(listener, body));
            let mut c = config(format!("http://{addr}"));
            c.freshness_query = "max by (job) (timestamp(up))".into();
            c.query_offset = offset.map(|o| Duration::try_new(o).unwrap());
            let src = PrometheusSource::new(&c).unwrap();
            assert_eq!(src.frontier(now).await, Some(want), "offset {offset:?}");
            let head = server.await.unwrap();
            assert!(head.starts_with("GET /api/v1/query?"), "{head}");
            assert!(head.contains("timestamp%28up%29"), "{head}");
        }

        // An answer that is not a sample time (an empty result, a count) is ignored.
        for body in [
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1800000000,"42"]}}"#,
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(one_request(listener, body));
            let mut c = config(format!("http://{addr}"));
            c.freshness_query = "max(timestamp(up))".into();
            let src = PrometheusSource::new(&c).unwrap();
            assert_eq!(src.frontier(now).await, None, "{body}");
            server.await.unwrap();
        }
    }

    /// Reads one request head from `conn`; `false` when the connection closed first.
    async fn read_head(conn: &mut tokio::net::TcpStream) -> bool {
        let mut buf = vec![0u8; 16 * 1024];
        let mut got = 0;
        while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf[got..]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => got += n,
            }
        }
        true
    }

    #[tokio::test]
    async fn a_keep_alive_connection_closed_under_the_request_is_retried_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"job":"a"},"values":[[60,"1"]]}]}}"#;
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let server = tokio::spawn(async move {
            // The first connection answers once, then takes the second request
            // and closes without a word (as a restarting server does).
            let (mut first, _) = listener.accept().await.unwrap();
            assert!(read_head(&mut first).await);
            first.write_all(reply.as_bytes()).await.unwrap();
            assert!(
                read_head(&mut first).await,
                "the second request reuses the connection"
            );
            drop(first);
            // The retry comes on a new connection.
            let (mut second, _) = listener.accept().await.unwrap();
            assert!(read_head(&mut second).await);
            second.write_all(reply.as_bytes()).await.unwrap();
            let _ = read_head(&mut second).await;
        });
        let src = PrometheusSource::new(&config(format!("http://{addr}"))).unwrap();
        let range = Range::try_new(60_000, 60_000, 60_000).unwrap();
        assert_eq!(src.fetch("up", range).await.unwrap().len(), 1);
        assert_eq!(src.fetch("up", range).await.unwrap().len(), 1);
        drop(src);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_prometheus_is_an_error() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let src = PrometheusSource::new(&config(format!("http://{addr}"))).unwrap();
        let range = Range::try_new(0, 60_000, 60_000).unwrap();
        let err = src.fetch("up", range).await.unwrap_err();
        assert!(matches!(err, Error::Prometheus { .. }), "{err}");
    }

    #[test]
    fn bad_settings_are_reported() {
        let mut c = config("http://127.0.0.1:9".to_string());
        c.bearer_token_file = Some("/nonexistent/token".into());
        assert!(matches!(
            PrometheusSource::new(&c),
            Err(Error::ReadFile { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let mut c = config("http://127.0.0.1:9".to_string());
        c.ca_file = Some(ca);
        let err = PrometheusSource::new(&c).unwrap_err();
        assert!(matches!(err, Error::ClientSetting(_)), "{err}");
    }
}
