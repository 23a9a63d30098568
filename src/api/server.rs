//! The connection loop: hyper over tokio-rustls (or plain TCP), one task per
//! connection, each request tagged with the connection's verified client
//! certificate. axum's own `serve` cannot pass per-connection TLS identity to
//! requests, hence this small loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::auth::PeerCert;
use super::{tls, Limits};

/// Serves `listener` until `stop` turns true (or its sender is dropped), then
/// gives open connections [`Limits::drain_timeout`] to finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let limits = Arc::new(limits);
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // never closed; leaving is the only sane answer
            },
            _ = stopped(&mut stop) => break,
        };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let router = router.clone();
        let limits = limits.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp))
                            .await;
                    let stream = match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "TLS handshake timed out");
                            return;
                        }
                    };
                    let peer = tls::peer_cert(stream.get_ref().1.peer_certificates());
                    serve_connection(stream, peer, router, &limits, stop).await;
                }
                None => serve_connection(tcp, None, router, &limits, stop).await,
            }
        });
        // Reap finished connections so the set only holds live ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            open = connections.len(),
            "closing connections still open after the drain timeout"
        );
    }
    connections.shutdown().await;
}

/// Serves one connection (HTTP/1.1 or HTTP/2) with the size and time limits.
async fn serve_connection<I>(
    io: I,
    peer: Option<PeerCert>,
    router: Router,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let seen = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        if let Some(peer) = &peer {
            request.extensions_mut().insert(peer.clone());
        }
        let busy = Busy::new(Arc::clone(&seen));
        let answer = router.clone().oneshot(request);
        async move {
            let _busy = busy;
            answer.await
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper refuses buffers under 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.http2_max_streams)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    // Until its first request a connection gets the header read timeout (hyper
    // applies it to HTTP/1 heads only: a client silent from the start, or an
    // HTTP/2 client that never sends its preface, would otherwise stay forever);
    // after that, the idle timeout.
    let mut deadline = tokio::time::Instant::now() + limits.header_read_timeout;
    let mut requests_seen = 0;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stopped(&mut stop) => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                let (started, busy) = activity.get();
                if started != requests_seen || busy > 0 {
                    requests_seen = started;
                    deadline = tokio::time::Instant::now() + limits.idle_timeout;
                    continue;
                }
                tracing::debug!(requests = started, "closing an idle connection");
                connection.as_mut().graceful_shutdown();
                // Nothing is in flight: a peer that does not take the hint is dropped.
                let _ = tokio::time::timeout(limits.header_read_timeout, connection).await;
                return;
            }
        }
    }
}

/// Requests started on a connection and requests in flight, for the idle check.
#[derive(Debug, Default)]
struct Activity {
    started: AtomicU64,
    busy: AtomicU64,
}

impl Activity {
    fn get(&self) -> (u64, u64) {
        (
            self.started.load(Ordering::Acquire),
            self.busy.load(Ordering::Acquire),
        )
    }
}

/// Marks a request in flight for as long as it lives.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Ordering::AcqRel);
        activity.busy.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Completes once shutdown is requested or its sender is gone. The guard that
/// `wait_for` returns is dropped here, so callers stay `Send`.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
