//! A TCP proxy on 127.0.0.1 that passes, delays, refuses or mangles what flows to
//! and from an upstream (a real Prometheus), to make a source misbehave on cue.
//!
//! Changing the [`Mode`] closes every open connection, so a client's pooled
//! keep-alive connection cannot carry the old behaviour over.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards both ways.
    Pass,
    /// Waits this long after the request arrives before forwarding it.
    Delay(Duration),
    /// Answers every request with `503 Service Unavailable` itself.
    Unavailable,
    /// Forwards the request, then sends back half of the response's first chunk
    /// and closes: a response cut mid-body.
    Cut,
    /// Closes every connection at once without answering.
    Refuse,
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream` in `mode`.
    pub async fn start(upstream: SocketAddr, mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(mode);
        let task = tokio::spawn(async move {
            let rx = Arc::new(rx);
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mut rx = (*rx).clone();
                tokio::spawn(async move {
                    let mode = *rx.borrow_and_update();
                    tokio::select! {
                        () = handle(client, upstream, mode) => {}
                        // A new mode ends the connection: its behaviour is the old one's.
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            mode: tx,
            task,
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches the behaviour for every connection, open ones included.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(mut client: TcpStream, upstream: SocketAddr, mode: Mode) {
    match mode {
        Mode::Refuse => {}
        Mode::Pass => {
            if let Ok(mut up) = TcpStream::connect(upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            }
        }
        Mode::Delay(d) => {
            let mut buf = vec![0u8; 64 * 1024];
            let Ok(n) = client.read(&mut buf).await else {
                return;
            };
            tokio::time::sleep(d).await;
            if let Ok(mut up) = TcpStream::connect(upstream).await {
                if up.write_all(&buf[..n]).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                }
            }
        }
        Mode::Unavailable => {
            let mut buf = vec![0u8; 64 * 1024];
            if client.read(&mut buf).await.is_ok() {
                let body = "upstream unavailable\n";
                let _ = client
                    .write_all(
                        format!(
                            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        }
        Mode::Cut => {
            let mut buf = vec![0u8; 64 * 1024];
            let Ok(n) = client.read(&mut buf).await else {
                return;
            };
            let Ok(mut up) = TcpStream::connect(upstream).await else {
                return;
            };
            if up.write_all(&buf[..n]).await.is_err() {
                return;
            }
            let mut resp = vec![0u8; 256 * 1024];
            if let Ok(m) = up.read(&mut resp).await {
                let _ = client.write_all(&resp[..m / 2]).await;
            }
            let _ = client.shutdown().await;
        }
    }
}
