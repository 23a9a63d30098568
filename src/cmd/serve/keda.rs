//! `prescale serve`'s KEDA external scaler (`server.keda_scaler`): bound at start
//! like the expander, with its own certificate or the API's, and run until the
//! shutdown signal.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use prescale::clock::Clock;
use prescale::config::ServerConfig;
use prescale::keda::{self, Scaler, SharedCatalog};
use prescale::snapshot::Shared;

use crate::cmd::nodepools::{pem_files, Task};

/// The scaler, bound and ready to run until `shutdown`; `None` when not
/// configured. Call after the API is bound (it may serve the API's certificate).
///
/// # Errors
/// The address cannot be bound, or a certificate file cannot be read.
pub async fn start(
    server: &ServerConfig,
    shared: Shared,
    clock: Arc<dyn Clock>,
    catalog: SharedCatalog,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<Task>> {
    let Some(k) = &server.keda_scaler else {
        return Ok(None);
    };
    let (cert, key) = pem_files(k.tls.cert_file.as_ref(), k.tls.key_file.as_ref(), server);
    let read = |p: &PathBuf| {
        std::fs::read(p)
            .with_context(|| format!("cannot read the KEDA scaler's TLS file {}", p.display()))
    };
    let client_ca = match &k.tls.client_ca_file {
        Some(p) => Some(tonic::transport::Certificate::from_pem(read(p)?)),
        None => None,
    };
    let tls = keda::Tls {
        identity: tonic::transport::Identity::from_pem(read(&cert)?, read(&key)?),
        client_ca,
    };
    let listener = tokio::net::TcpListener::bind(k.address)
        .await
        .with_context(|| format!("cannot bind the KEDA scaler to {}", k.address))?;
    let addr = listener.local_addr().unwrap_or(k.address);
    tracing::info!(
        %addr,
        cert = %cert.display(),
        client_certificates = if k.tls.client_ca_file.is_some() { "required" } else { "not asked for" },
        "KEDA external scaler listening"
    );
    let scaler = Scaler::new(shared, clock, catalog);
    Ok(Some(Box::pin(async move {
        keda::serve(listener, tls, scaler, shutdown)
            .await
            .context("KEDA external scaler")
    })))
}
