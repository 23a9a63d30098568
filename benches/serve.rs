//! Serving cost of the external-metric GET over keep-alive HTTPS, against a bare
//! hyper + rustls handler that returns the same bytes, in the same run.
//!
//! Both servers use the same TLS configuration (ring, client certificates verified
//! against the request-header CA) and are loaded by the same client, so the ratio
//! isolates what the API adds per request: routing, front-proxy authentication,
//! the cached authorization decision, the selector, the snapshot read and the JSON.
//!
//! Reports requests/s of both (closed loop, `CONNECTIONS` keep-alive HTTP/1.1
//! connections, `ROUNDS` alternating pairs of rounds), the median of the per-pair
//! ratios (goal ≥ 0.8; pairing cancels most of a shared machine's drifting
//! background load), and p50/p99 latency of both at half the API's median rate
//! (goal p99 ≤ 1 ms).
//!
//! `cargo bench --bench serve` runs the full measurement; without `--bench` (e.g.
//! `cargo test --benches`) it runs a short smoke pass.

#[path = "../tests/it/support/pki.rs"]
mod pki;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prescale::api::auth::{AuthMode, FrontProxy, StaticAuthorizer};
use prescale::api::{Server, Settings, TlsSource};
use prescale::clock::SystemClock;
use prescale::snapshot::{MetricEntry, SeriesDetail, SeriesEntry, Shared, Snapshot, Status};
use tokio::task::JoinSet;

const CONNECTIONS: usize = 8;
const ROUNDS: usize = 7;
const PATH: &str =
    "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/queue_depth?labelSelector=queue%3Dorders";

fn snapshot() -> Snapshot {
    // Twenty series, of which the HPA's selector picks one, as a queue signal would.
    let series = (0..20)
        .map(|i| {
            std::sync::Arc::new(SeriesEntry {
                labels: [
                    (
                        "queue".to_string(),
                        if i == 0 {
                            "orders".to_string()
                        } else {
                            format!("q{i}")
                        },
                    ),
                    ("vhost".to_string(), "/".to_string()),
                ]
                .into(),
                status: Status::Ok,
                value: 1234.567 + f64::from(i),
                timestamp_ms: 1_790_000_000_000,
                window_s: 60,
                expires_ms: i64::MAX,
                detail: SeriesDetail::default(),
            })
        })
        .collect();
    let mut metrics = BTreeMap::new();
    metrics.insert(
        "queue_depth".to_string(),
        MetricEntry {
            namespaces: None,
            custom: None,
            series,
            error: None,
        },
    );
    Snapshot {
        published_ms: 1_790_000_000_000,
        metrics,
        plan: None,
    }
}

/// The bare baseline: hyper over tokio-rustls, one fixed body for every request.
async fn bare_server(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    body: axum::body::Bytes,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let body = body.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service =
                hyper::service::service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(axum::body::Body::from(body))
                                .unwrap(),
                        )
                    }
                });
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let _ = builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn clients(server: &pki::Pair, identity: &pki::Pair) -> Vec<reqwest::Client> {
    (0..CONNECTIONS)
        .map(|_| {
            reqwest::Client::builder()
                .use_preconfigured_tls(pki::client_config(&server.cert_pem, Some(identity)))
                .http1_only()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap()
        })
        .collect()
}

async fn get(client: &reqwest::Client, url: &str) -> axum::body::Bytes {
    let response = client
        .get(url)
        .header("Accept", "application/vnd.kubernetes.protobuf, */*")
        .header(
            "X-Remote-User",
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        )
        .header("X-Remote-Group", "system:serviceaccounts")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "every measured request must succeed"
    );
    response.bytes().await.unwrap()
}

/// Requests/s with every connection sending back to back for `duration`.
async fn closed_loop(clients: &[reqwest::Client], url: &str, duration: Duration) -> f64 {
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = JoinSet::new();
    for client in clients {
        let (client, url) = (client.clone(), url.to_string());
        tasks.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                get(&client, &url).await;
                n += 1;
            }
            n
        });
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Latencies with the connections together sending `rate` requests/s, evenly paced.
async fn paced(
    clients: &[reqwest::Client],
    url: &str,
    rate: f64,
    duration: Duration,
) -> Vec<Duration> {
    let per_connection = Duration::from_secs_f64(clients.len() as f64 / rate);
    let end = Instant::now() + duration;
    let mut tasks = JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let (client, url) = (client.clone(), url.to_string());
        let offset = per_connection.mul_f64(i as f64 / clients.len() as f64);
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            let mut ticks = tokio::time::interval(per_connection);
            let mut latencies = Vec::new();
            while Instant::now() < end {
                ticks.tick().await;
                let sent = Instant::now();
                get(&client, &url).await;
                latencies.push(sent.elapsed());
            }
            latencies
        });
    }
    let mut all = Vec::new();
    while let Some(l) = tasks.join_next().await {
        all.extend(l.unwrap());
    }
    all.sort();
    all
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (round, paced_for) = if full {
        (Duration::from_millis(1500), Duration::from_secs(7))
    } else {
        (Duration::from_millis(200), Duration::from_millis(700))
    };
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let server_pair = pki::server_pair();
    let ca = pki::Ca::new("front-proxy-ca");
    let identity = ca.client("front-proxy-client");
    let tls_source = TlsSource::Pem {
        cert_pem: server_pair.cert_pem.clone(),
        key_pem: server_pair.key_pem.clone(),
    };

    let (api_addr, bare_listener, shared) = servers.block_on(async {
        let auth = AuthMode::Delegated {
            front_proxy: Some(
                FrontProxy::new(ca.cert_pem.clone())
                    .with_allowed_names(vec!["front-proxy-client".into()]),
            ),
            tokens: None,
            authorizer: Arc::new(StaticAuthorizer::allow_all()),
        };
        let settings = Settings::new(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            tls_source.clone(),
            auth,
        );
        let shared = Shared::new();
        shared.publish(snapshot());
        let server = Server::bind(
            settings,
            shared.clone(),
            Arc::new(prometheus_client::registry::Registry::default()),
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
        let addr = server.https_addr();
        tokio::spawn(server.run(std::future::pending()));
        let bare = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        (addr, bare, shared)
    });
    let _keep = shared;
    let api_url = format!("https://127.0.0.1:{}{PATH}", api_addr.port());
    let bare_url = format!(
        "https://127.0.0.1:{}{PATH}",
        bare_listener.local_addr().unwrap().port()
    );

    let api_clients = clients(&server_pair, &identity);
    let bare_clients = clients(&server_pair, &identity);
    // The bare handler returns exactly the API's answer, so both move the same bytes.
    let body = load.block_on(get(&api_clients[0], &api_url));
    let tls = Arc::new(prescale::api::tls::server_config(&tls_source, Some(&ca.cert_pem)).unwrap());
    servers.spawn(bare_server(bare_listener, tls, body.clone()));

    let (api_rates, bare_rates) = load.block_on(async {
        // Warm up: handshakes and the authorization cache.
        closed_loop(&api_clients, &api_url, round / 3).await;
        closed_loop(&bare_clients, &bare_url, round / 3).await;
        let (mut api, mut bare) = (Vec::new(), Vec::new());
        // Alternate short rounds so that both see the same background load on a
        // shared machine; each pair gives one ratio.
        for _ in 0..ROUNDS {
            api.push(closed_loop(&api_clients, &api_url, round).await);
            bare.push(closed_loop(&bare_clients, &bare_url, round).await);
        }
        (api, bare)
    });
    let mut ratios: Vec<f64> = api_rates
        .iter()
        .zip(&bare_rates)
        .map(|(a, b)| a / b)
        .collect();
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (api_median, bare_median) = (median(&api_rates), median(&bare_rates));
    let half = api_median / 2.0;
    let (api_lat, bare_lat) = load.block_on(async {
        // Alternating paced rounds as well, so both tails see the same background.
        let (mut api, mut bare) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            api.extend(paced(&api_clients, &api_url, half, paced_for / ROUNDS as u32).await);
            bare.extend(paced(&bare_clients, &bare_url, half, paced_for / ROUNDS as u32).await);
        }
        api.sort();
        bare.sort();
        (api, bare)
    });

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("serve bench: GET {PATH}");
    println!(
        "  {CONNECTIONS} keep-alive HTTP/1.1 connections over TLS (ring), response {} bytes, {ROUNDS} alternating pairs of {:?} rounds",
        body.len(),
        round
    );
    let list = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "  api  : median {api_median:>7.0} req/s  (rounds: {})",
        list(&api_rates)
    );
    println!(
        "  bare : median {bare_median:>7.0} req/s  (rounds: {})",
        list(&bare_rates)
    );
    println!(
        "  ratio: median of pairs {ratio:.3}, min {:.3}, max {:.3} (goal >= 0.8: {})",
        ratios[0],
        ratios[ratios.len() - 1],
        if ratio >= 0.8 { "met" } else { "NOT met" }
    );
    println!(
        "  latency at {half:.0} req/s (half the api's rate), {:?}:",
        paced_for
    );
    for (name, lat) in [("api ", &api_lat), ("bare", &bare_lat)] {
        println!(
            "    {name}: n={:>6}  p50 {:>7.0} us  p99 {:>7.0} us  p99.9 {:>7.0} us",
            lat.len(),
            us(quantile(lat, 0.5)),
            us(quantile(lat, 0.99)),
            us(quantile(lat, 0.999))
        );
    }
    // Latency tails on a shared machine say more about its load than about the
    // server: print the load so the numbers can be read in context.
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!(
            "  load average during the run: {} ({} CPUs)",
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    }
    let p99 = quantile(&api_lat, 0.99);
    println!(
        "  api p99 goal <= 1 ms: {}",
        if p99 <= Duration::from_millis(1) {
            "met"
        } else {
            "NOT met"
        }
    );
}
