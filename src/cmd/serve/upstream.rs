//! `prescale serve`'s delegation (`server.upstream`): one client per adapter
//! that owned a metrics group before, with prescale's own bearer token, and a
//! background reader of each adapter's discovery.

use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;

use prescale::api::upstream::{self, Configured, Group, TokenSource, Upstream, Upstreams};
use prescale::config::{ServerConfig, SignalConfig, UpstreamConfig};

/// The adapters of `server.upstream`, with their discovery readers spawned until
/// `stop` turns true; empty when none is configured.
///
/// # Errors
/// A CA file that cannot be read, or no bearer token to present.
pub async fn start(
    server: &ServerConfig,
    signals: &[SignalConfig],
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Upstreams> {
    let mut configured = Configured::default();
    for s in signals {
        let name = s.name.as_str().to_string();
        if s.custom.is_some() {
            configured.custom.insert(name);
        } else {
            configured.external.insert(name);
        }
    }
    let mut upstreams = Upstreams {
        configured: Arc::new(configured),
        ..Upstreams::default()
    };
    for (group, config) in [
        (Group::External, &server.upstream.external),
        (Group::Custom, &server.upstream.custom),
    ] {
        let Some(config) = config else { continue };
        let upstream = Arc::new(client(group, config).await.with_context(|| {
            format!(
                "server.upstream.{}: cannot set up the upstream",
                group.name()
            )
        })?);
        tracing::info!(
            group = group.name(),
            url = upstream.base_url(),
            "metrics prescale does not serve are forwarded upstream"
        );
        let mut stop = stop.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::spawn(Arc::clone(&upstream).refresh_until(stopped));
        match group {
            Group::External => upstreams.external = Some(upstream),
            Group::Custom => upstreams.custom = Some(upstream),
        }
    }
    Ok(upstreams)
}

async fn client(group: Group, config: &UpstreamConfig) -> anyhow::Result<Upstream> {
    let ca_pem = match &config.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read ca_file {}", path.display()))?,
        ),
        None => None,
    };
    let token = match &config.token_file {
        Some(path) => TokenSource::File(path.clone()),
        None => own_token().await?,
    };
    Upstream::new(upstream::Settings {
        group,
        base_url: config.base_url(),
        ca_pem,
        insecure: config.insecure_skip_tls_verify,
        token,
        timeout: config.timeout.as_std(),
        discovery_interval: config.discovery_interval.as_std(),
    })
    .map_err(anyhow::Error::msg)
}

/// prescale's own bearer token: the in-cluster ServiceAccount token file, or the
/// kubeconfig's token or token file.
async fn own_token() -> anyhow::Result<TokenSource> {
    let kube = ::kube::Config::infer().await.context(
        "no token_file given and no Kubernetes configuration to take prescale's token from",
    )?;
    if let Some(file) = kube.auth_info.token_file {
        return Ok(TokenSource::File(file.into()));
    }
    if let Some(token) = kube.auth_info.token {
        return Ok(TokenSource::Static(token.expose_secret().to_string()));
    }
    anyhow::bail!(
        "prescale's Kubernetes credentials hold no bearer token (a client certificate or an exec plugin?): set token_file to a token the upstream accepts"
    )
}
