//! Hostile and broken HTTP over real TLS sockets on 127.0.0.1: oversized heads
//! and bodies, slow and trickling clients, idle keep-alive connections, unsupported
//! methods, unknown paths, huge and malformed selectors, metric names with path
//! tricks. Every answer is a clean Kubernetes `Status` (or a closed connection
//! where HTTP itself gives up), never a panic and never a connection held forever;
//! the server answers normally afterwards.
//!
//! Requests are written by hand over tokio-rustls so that nothing (no client
//! library) normalises the bytes on the way.

use crate::support::pki;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prescale::api::auth::AuthMode;
use prescale::api::{Limits, Server, Settings, TlsSource};
use prescale::clock::SimClock;
use prescale::snapshot::{MetricEntry, SeriesDetail, SeriesEntry, Shared, Snapshot, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

const VALUES: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces";

struct Running {
    https: SocketAddr,
    ca_pem: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn connect(&self) -> TlsStream<tokio::net::TcpStream> {
        let config = pki::client_config(&self.ca_pem, None);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(self.https).await.unwrap();
        connector
            .connect("127.0.0.1".try_into().unwrap(), tcp)
            .await
            .unwrap()
    }

    /// An HTTP/2 connection negotiated by ALPN.
    async fn h2(&self) -> hyper::client::conn::http2::SendRequest<axum::body::Body> {
        let mut config = pki::client_config(&self.ca_pem, None);
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(self.https).await.unwrap();
        let tls = connector
            .connect("127.0.0.1".try_into().unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        sender
    }

    /// Sends `head` (and `body`) on a new connection and reads until the server
    /// closes it; `None` when it closed without an answer. Panics if the server
    /// neither answers nor closes within 5 s (a hung connection).
    async fn raw(&self, head: &str, body: &[u8]) -> Option<(u16, serde_json::Value)> {
        let mut s = self.connect().await;
        s.write_all(head.as_bytes()).await.unwrap();
        let _ = s.write_all(body).await;
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "no answer and not closed within 5 s: {head:.200}"
        );
        parse(&buf)
    }

    /// `GET path` with `Connection: close`.
    async fn get(&self, path: &str) -> Option<(u16, serde_json::Value)> {
        self.raw(
            &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
            b"",
        )
        .await
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops within the drain timeout")
            .unwrap();
    }
}

/// Status code and JSON body (`Null` when not JSON) of a raw HTTP/1.1 answer.
fn parse(buf: &[u8]) -> Option<(u16, serde_json::Value)> {
    let text = String::from_utf8_lossy(buf);
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((
        code,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    ))
}

fn snapshot() -> Snapshot {
    let entry = SeriesEntry {
        labels: [("queue".to_string(), "orders".to_string())].into(),
        status: Status::Ok,
        value: 12.0,
        timestamp_ms: 1_790_000_000_000,
        window_s: 60,
        expires_ms: i64::MAX,
        detail: SeriesDetail::default(),
    };
    let mut metrics = BTreeMap::new();
    metrics.insert(
        "queue_depth".to_string(),
        MetricEntry {
            series: vec![entry.into()],
            ..MetricEntry::default()
        },
    );
    Snapshot {
        published_ms: 1_790_000_000_000,
        metrics,
        plan: None,
    }
}

async fn start(limits: Limits) -> Running {
    let pair = pki::server_pair();
    let mut settings = Settings::new(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        TlsSource::Pem {
            cert_pem: pair.cert_pem.clone(),
            key_pem: pair.key_pem.clone(),
        },
        AuthMode::None,
    );
    settings.limits = limits;
    let shared = Shared::new();
    shared.publish(snapshot());
    let server = Server::bind(
        settings,
        shared,
        Arc::new(prometheus_client::registry::Registry::default()),
        Arc::new(SimClock::new(1_790_000_000_000)),
    )
    .await
    .unwrap();
    let https = server.https_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running {
        https,
        ca_pem: pair.cert_pem,
        stop: Some(stop),
        task,
    }
}

/// Asserts a Kubernetes `Status` with `code`, and returns its message.
fn status(answer: Option<(u16, serde_json::Value)>, code: u16) -> String {
    let (got, body) = answer.expect("an answer, not a closed connection");
    assert_eq!(got, code, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["code"], code, "{body}");
    body["message"].as_str().unwrap().to_string()
}

/// The server still answers a good request.
async fn still_serves(server: &Running) {
    let (code, body) = server
        .get(&format!("{VALUES}/shop/queue_depth"))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["items"][0]["value"], "12");
}

fn short_limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(400),
        tls_handshake_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(600),
        max_header_bytes: 16 * 1024,
        max_body_bytes: 1024,
        ..Limits::default()
    }
}

#[tokio::test]
async fn methods_paths_and_bodies_get_status_answers() {
    let server = start(short_limits()).await;
    // Unsupported methods: 405 with a Status, on values and discovery alike.
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "FOO"] {
        let msg = status(
            server
                .raw(
                    &format!("{method} {VALUES}/shop/queue_depth HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"),
                    b"{}",
                )
                .await,
            405,
        );
        assert!(msg.contains(method), "{msg}");
    }
    // Unknown paths: 404 with a Status.
    for path in [
        "/",
        "/apis/custom.metrics.k8s.io/v1alpha1",
        "/apis/custom.metrics.k8s.io/v2",
        "/apis/metrics.k8s.io/v1beta1",
        "/metricsx",
        "/apis/external.metrics.k8s.io/v1",
    ] {
        status(server.get(path).await, 404);
    }
    // A body over the limit is refused before anything reads it.
    let msg = status(
        server
            .raw(
                &format!("GET {VALUES}/shop/queue_depth HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"),
                b"x",
            )
            .await,
        413,
    );
    assert!(msg.contains("1024 bytes"), "{msg}");
    // A chunked body that never ends: answered (the body is never read) and the
    // connection does not stay open waiting for the rest.
    let started = Instant::now();
    let answer = server
        .raw(
            &format!("GET {VALUES}/shop/queue_depth HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
            b"400\r\naaaa",
        )
        .await;
    if let Some((code, _)) = answer {
        assert!(code == 200 || code == 400 || code == 413, "{code}");
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // Broken request lines and heads: HTTP's own 400, or a close.
    for head in [
        "GARBAGE\r\n\r\n",
        "GET /healthz HTTP/9.9\r\n\r\n",
        "GET  HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost x\r\n\r\n",
        "GET /heal\0thz HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        if let Some((code, _)) = server.raw(head, b"").await {
            assert!((400..500).contains(&code), "{head:?}: {code}");
        }
    }
    still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn oversized_heads_are_refused_over_tls_on_http1_and_http2() {
    let server = start(short_limits()).await;
    // One huge header, and many small ones.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    if let Some((code, _)) = server.raw(&big, b"").await {
        assert_eq!(code, 431);
    }
    let many: String = (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n");
    if let Some((code, _)) = server.raw(&many, b"").await {
        assert_eq!(code, 431);
    }
    // HTTP/2 (ALPN): the header list limit refuses the request (431, a reset
    // stream or the connection closed), and a new connection is served.
    let url = format!("https://127.0.0.1:{}/healthz", server.https.port());
    let mut sender = server.h2().await;
    let request = hyper::Request::get(&url)
        .header("X-Big", "a".repeat(64 * 1024))
        .body(axum::body::Body::empty())
        .unwrap();
    let big = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
        .await
        .expect("an HTTP/2 request with a huge header list hung");
    if let Ok(resp) = big {
        assert_eq!(resp.status(), 431);
    }
    let mut sender = server.h2().await;
    let request = hyper::Request::get(&url)
        .body(axum::body::Body::empty())
        .unwrap();
    let ok = sender.send_request(request).await.unwrap();
    assert_eq!(ok.status(), 200);
    still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn slow_trickling_and_idle_clients_do_not_hold_connections() {
    let server = start(short_limits()).await;
    // After the handshake, half a head and silence: closed after the header read timeout.
    let mut s = server.connect().await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a silent half-sent head holds the connection");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Trickling one byte every 100 ms does not reset the clock (slowloris).
    let mut s = server.connect().await;
    let started = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = false;
    for b in head {
        if s.write_all(&[*b]).await.is_err() || s.flush().await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    if !cut {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "trickling client still connected");
        assert!(
            !String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
            "a head trickled over {:?} was served",
            started.elapsed()
        );
    }

    // An idle keep-alive connection after a complete exchange is closed too.
    let mut s = server.connect().await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "an idle keep-alive connection is held open");

    // HTTP/2 negotiated, then silence (no connection preface): closed too.
    let mut config = pki::client_config(&server.ca_pem, None);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.https).await.unwrap();
    let mut h2 = connector
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), h2.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a silent HTTP/2 connection is held open");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed before its time"
    );
    // TLS done, then not a single byte: closed too.
    let mut s = server.connect().await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "a connection silent after the handshake is held open"
    );

    // An HTTP/2 connection that made a request and then only answers pings: closed
    // after the idle timeout.
    let mut sender = server.h2().await;
    let url = format!("https://127.0.0.1:{}/healthz", server.https.port());
    let request = hyper::Request::get(&url)
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    let started = Instant::now();
    while !sender.is_closed() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "an idle HTTP/2 connection is held open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(500));

    // No handshake at all.
    let mut tcp = tokio::net::TcpStream::connect(server.https).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "a connection without a handshake is held open"
    );
    still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn huge_and_malformed_selectors_are_400() {
    let server = start(Limits::default()).await;
    let path = format!("{VALUES}/shop/queue_depth");
    for selector in [
        "queue+in+%28",
        "queue%3D%3D%3Dorders",
        "%00",
        "queue%3Dorders%00",
        "%FF%FE",
        "queue+in+%28a%2Cb",
        "%21%21queue",
        "queue%3D%22orders%22",
        "%28%28%28%28%28%28%28%28",
        &"queue%3D".repeat(1000),
        &format!("queue%3D{}", "a".repeat(40_000)),
        &format!("queue+in+%28{}%29", vec!["a"; 5000].join("%2C")),
        &(0..3000)
            .map(|i| format!("k{i}%3Dv"))
            .collect::<Vec<_>>()
            .join("%2C"),
    ] {
        let answer = server
            .get(&format!("{path}?labelSelector={selector}"))
            .await;
        let (code, body) = answer.expect("an answer");
        // Valid-but-unmatched selectors are 404 (no series), everything else 400.
        assert!(
            code == 400 || code == 404,
            "{:.80}: {code} {body}",
            selector
        );
        assert_eq!(body["kind"], "Status", "{body}");
    }
    // Garbage query strings around the selector.
    for query in [
        "labelSelector",
        "labelSelector=%",
        "labelSelector=%G0",
        "a=b&labelSelector=queue%3Dorders&labelSelector=x",
    ] {
        let (code, body) = server
            .get(&format!("{path}?{query}"))
            .await
            .expect("an answer");
        assert!(
            (200..500).contains(&code) && code != 500,
            "{query}: {code} {body}"
        );
    }
    // A selector past the head limit is refused by HTTP itself.
    let answer = server
        .get(&format!(
            "{path}?labelSelector=queue%3D{}",
            "a".repeat(80 * 1024)
        ))
        .await;
    if let Some((code, _)) = answer {
        assert!(code == 414 || code == 431, "{code}");
    }
    still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn metric_names_and_namespaces_with_path_tricks_are_clean_errors() {
    let server = start(Limits::default()).await;
    for path in [
        format!("{VALUES}/shop/.."),
        format!("{VALUES}/shop/."),
        format!("{VALUES}/../queue_depth"),
        format!("{VALUES}/shop/../shop/queue_depth"),
        format!("{VALUES}/shop/%2e%2e"),
        format!("{VALUES}/shop/queue_depth%2F..%2F..%2Fhealthz"),
        format!("{VALUES}/shop/..%2Fqueue_depth"),
        format!("{VALUES}/shop%2Fqueue_depth/x"),
        format!("{VALUES}/shop/queue_depth%00"),
        format!("{VALUES}/shop/queue%00depth"),
        format!("{VALUES}/shop/%ZZ"),
        format!("{VALUES}/shop/%C3%28"),
        format!("{VALUES}/shop/%F0%9F%92%A5"),
        format!("{VALUES}/%00/queue_depth"),
        format!("{VALUES}/shop/{}", "m".repeat(8000)),
        format!("{VALUES}/shop/queue_depth/extra/segments"),
        format!("{VALUES}//queue_depth"),
        format!("{VALUES}/shop//"),
        "/apis/external.metrics.k8s.io/v1beta1/../../../etc/passwd".to_string(),
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/../pods/*/queue_depth".to_string(),
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/pods/%2e%2e/queue_depth".to_string(),
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/pods/*/queue_depth%00".to_string(),
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop%2Fpods/x/y/z".to_string(),
        "/apis/custom.metrics.k8s.io/v1beta1/namespaces/shop/metrics/%C3%28".to_string(),
        "/apis/custom.metrics.k8s.io/v1beta2/nodes/%00/queue_depth".to_string(),
        format!(
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/{}/x/y",
            "r".repeat(8000)
        ),
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/queue_depth/../../../../healthz"
            .to_string(),
    ] {
        let (code, body) = server.get(&path).await.expect("an answer");
        assert!(code == 400 || code == 404, "{:.120}: {code} {body}", path);
        assert_eq!(body["kind"], "Status", "{path:.120}: {body}");
        if path.contains("%00") || path.contains("%F0") {
            // The message quotes what it got escaped, never raw control bytes.
            let msg = body["message"].as_str().unwrap();
            assert!(!msg.contains('\0'), "{msg}");
        }
    }
    still_serves(&server).await;
    server.stop().await;
}
