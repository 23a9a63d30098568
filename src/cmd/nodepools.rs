//! `prescale serve`'s node-pool parts: the engine's node-pool planner with its
//! cluster lookup, the gRPC expander and the CapacityBuffer writer, built from the
//! configuration and run alongside the API with the same shutdown.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;

use prescale::clock::Clock;
use prescale::config::{Config, ServerConfig};
use prescale::engine::nodepools::{ClusterLookup, NodePools, Planner, StaticCluster};
use prescale::expander::{self, Expander};
use prescale::snapshot::Shared;

/// A task to run until shutdown.
pub type Task = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// What the node-pool sections of a configuration start.
pub struct Parts {
    /// The planner to hand to the engine; `None` without `nodepools`.
    pub nodepools: Option<NodePools>,
    /// The engine's snapshots, whose node-pool plan the expander and the
    /// CapacityBuffer writer read.
    snapshot: Shared,
    client: Option<::kube::Client>,
    config: Option<Config>,
}

/// The engine side: the planner, reading the cluster through Kubernetes when a
/// client can be made (else planning with configured shapes and minimum sizes, and
/// saying so). The readers read the plan from `snapshot`, where the engine
/// publishes.
///
/// # Errors
/// CapacityBuffers are enabled but there is no Kubernetes client.
pub async fn setup(
    config: Option<&Config>,
    watched: Option<Arc<prescale::kube::watch::Watched>>,
    snapshot: Shared,
) -> anyhow::Result<Parts> {
    let Some(config) = config.filter(|c| !c.nodepools.is_empty()) else {
        return Ok(Parts {
            nodepools: None,
            snapshot,
            client: None,
            config: None,
        });
    };
    let client = match ::kube::Client::try_default().await {
        Ok(c) => Some(c),
        Err(e) => {
            anyhow::ensure!(
                !config.capacity_buffers.enabled,
                "capacity_buffers.enabled needs the Kubernetes API: {e}"
            );
            tracing::warn!(
                error = %e,
                "no Kubernetes API: node pools are planned without current nodes and replicas (minimum sizes assumed)"
            );
            None
        }
    };
    let lookup: Arc<dyn ClusterLookup> = match (&client, watched) {
        (Some(_), Some(w)) => w,
        _ => Arc::new(StaticCluster::new(None)),
    };
    let planner = Planner::new(config.planning.clone());
    Ok(Parts {
        nodepools: Some(NodePools::new(planner, lookup)),
        snapshot,
        client,
        config: Some(config.clone()),
    })
}

/// The certificate files of a gRPC server (the expander, the KEDA scaler): its
/// own, else the API's (files, or the self-signed pair the API wrote at start:
/// call after the API is bound).
pub fn pem_files(
    cert: Option<&PathBuf>,
    key: Option<&PathBuf>,
    server: &ServerConfig,
) -> (PathBuf, PathBuf) {
    match (cert, key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => match (&server.tls.cert_file, &server.tls.key_file) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ => (
                server
                    .tls
                    .cert_dir
                    .join(prescale::api::tls::SELF_SIGNED_CERT),
                server
                    .tls
                    .cert_dir
                    .join(prescale::api::tls::SELF_SIGNED_KEY),
            ),
        },
    }
}

impl Parts {
    /// The gRPC expander, bound and ready to run until `shutdown`; `None` when not
    /// configured. Call after the API is bound (it may share its certificate).
    ///
    /// # Errors
    /// The address cannot be bound or the certificate cannot be read.
    pub async fn expander(
        &self,
        server: &ServerConfig,
        clock: Arc<dyn Clock>,
        metrics: expander::Metrics,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Option<Task>> {
        let Some(e) = self.config.as_ref().and_then(|c| c.expander.clone()) else {
            return Ok(None);
        };
        let (cert, key) = pem_files(e.cert_file.as_ref(), e.key_file.as_ref(), server);
        let read = |p: &PathBuf| {
            std::fs::read(p)
                .with_context(|| format!("cannot read the expander's TLS file {}", p.display()))
        };
        let identity = tonic::transport::Identity::from_pem(read(&cert)?, read(&key)?);
        let listener = tokio::net::TcpListener::bind(e.address)
            .await
            .with_context(|| format!("cannot bind the expander to {}", e.address))?;
        let addr = listener.local_addr().unwrap_or(e.address);
        tracing::info!(%addr, cert = %cert.display(), "gRPC expander listening");
        let service = Expander::new(self.snapshot.clone(), clock, e.max_plan_age.as_ms())
            .with_metrics(metrics);
        Ok(Some(Box::pin(async move {
            expander::serve(listener, identity, service, shutdown)
                .await
                .context("gRPC expander")
        })))
    }

    /// The CapacityBuffer writer; `None` unless enabled.
    pub fn buffers(
        &self,
        clock: Arc<dyn Clock>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Option<Task> {
        let config = self.config.as_ref()?;
        if !config.capacity_buffers.enabled {
            return None;
        }
        let client = self.client.clone()?;
        // The pod name: unique among the replicas, stable for a pod's life.
        let identity = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| format!("prescale-{}", std::process::id()));
        let max_age = config
            .expander
            .as_ref()
            .map_or(expander::DEFAULT_MAX_PLAN_AGE_MS, |e| {
                e.max_plan_age.as_ms()
            });
        tracing::info!(
            dry_run = config.capacity_buffers.dry_run,
            %identity,
            "CapacityBuffer writer starting (writes only while holding the lease)"
        );
        let run = prescale::kube::buffers::run(
            client,
            config.capacity_buffers.clone(),
            config.nodepools.clone(),
            self.snapshot.clone(),
            clock,
            identity,
            max_age,
            shutdown,
        );
        Some(Box::pin(async move {
            run.await;
            Ok(())
        }))
    }
}
