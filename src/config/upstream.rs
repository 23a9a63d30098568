//! `server.upstream`: the adapter that owned a metrics group before prescale.
//!
//! A cluster has one APIService per group-version. When prescale takes
//! `external.metrics.k8s.io` or `custom.metrics.k8s.io` over from
//! prometheus-adapter or KEDA's metrics server, the metrics prescale does not
//! serve itself are forwarded to that adapter, so the HPAs that read them keep
//! working.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Duration;

/// One upstream per group; a group without one answers only its own metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamsConfig {
    /// Where requests for external metrics prescale does not serve go.
    #[serde(
        rename = "external.metrics.k8s.io",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external: Option<UpstreamConfig>,
    /// Where requests for custom metrics prescale does not serve go.
    #[serde(
        rename = "custom.metrics.k8s.io",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub custom: Option<UpstreamConfig>,
}

/// The adapter behind one group: a Service (in-cluster) or a URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The Service the group's APIService pointed at before (its `spec.service`).
    #[serde(default)]
    pub service: Option<ServiceRef>,
    /// Instead of `service`: the adapter's base URL (`https://host:port`), for a
    /// prescale running outside the cluster.
    #[serde(default)]
    pub url: Option<String>,
    /// PEM CA that signs the adapter's serving certificate (the old APIService's
    /// `caBundle`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Do not verify the adapter's certificate (only where the old APIService had
    /// `insecureSkipTLSVerify: true`).
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
    /// The bearer token prescale presents; absent: its own ServiceAccount token
    /// (the in-cluster token file, or the kubeconfig's token). Re-read every minute,
    /// so projected tokens rotate.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Longest wait for one forwarded request.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// How often the adapter's discovery lists are read (and merged into prescale's).
    #[serde(default = "default_discovery_interval")]
    pub discovery_interval: Duration,
}

/// `spec.service` of an APIService.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRef {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// Its port.
    #[serde(default = "default_port")]
    pub port: u16,
}

const fn default_port() -> u16 {
    443
}

const fn default_timeout() -> Duration {
    // The HPA controller's own client waits 30 s; an answer after 10 s is late anyway.
    Duration(std::time::Duration::from_secs(10))
}

const fn default_discovery_interval() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}

impl UpstreamConfig {
    /// The adapter's base URL: `url`, or the Service's cluster DNS name.
    pub fn base_url(&self) -> String {
        match (&self.url, &self.service) {
            (Some(url), _) => url.trim_end_matches('/').to_string(),
            (None, Some(s)) => format!("https://{}.{}.svc:{}", s.name, s.namespace, s.port),
            (None, None) => String::new(),
        }
    }
}

/// Checks `server.upstream`: pushes one message per problem, each with its field path.
pub fn check(upstreams: &UpstreamsConfig, problems: &mut Vec<String>) {
    for (group, upstream) in [
        ("external.metrics.k8s.io", &upstreams.external),
        ("custom.metrics.k8s.io", &upstreams.custom),
    ] {
        let Some(u) = upstream else { continue };
        let at = format!("server.upstream.{group}");
        match (&u.service, &u.url) {
            (None, None) => problems.push(format!(
                "{at}: needs service (namespace, name, port of the adapter's Service) or url"
            )),
            (Some(_), Some(_)) => {
                problems.push(format!("{at}: service and url are alternatives, set one"))
            }
            (Some(s), None) => {
                for (field, value) in [("namespace", &s.namespace), ("name", &s.name)] {
                    if !crate::names::is_dns_label(value) {
                        problems.push(format!(
                            "{at}.service.{field}: {value:?} is not a lowercase RFC 1123 label"
                        ));
                    }
                }
                if s.port == 0 {
                    problems.push(format!("{at}.service.port: must be 1-65535, got 0"));
                }
            }
            (None, Some(url)) => match url.strip_prefix("https://") {
                Some(rest) if !rest.is_empty() && !rest.contains(['?', '#']) => {
                    if rest.trim_end_matches('/').contains('/') {
                        problems.push(format!(
                            "{at}.url: {url:?} has a path; give the adapter's base URL (https://host:port), the request's path is appended"
                        ));
                    }
                }
                _ => problems.push(format!(
                    "{at}.url: {url:?} is not an https:// base URL (aggregated API servers serve TLS)"
                )),
            },
        }
        match (&u.ca_file, u.insecure_skip_tls_verify) {
            (Some(_), true) => problems.push(format!(
                "{at}: ca_file and insecure_skip_tls_verify are alternatives, set one"
            )),
            (None, false) => problems.push(format!(
                "{at}: set ca_file (the CA of the old APIService's caBundle) or insecure_skip_tls_verify: true (if the old APIService had insecureSkipTLSVerify)"
            )),
            _ => {}
        }
        if u.timeout.as_std().is_zero() {
            problems.push(format!("{at}.timeout: must be above zero"));
        }
        if u.discovery_interval.as_std() < std::time::Duration::from_secs(1) {
            problems.push(format!("{at}.discovery_interval: must be at least 1s"));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Error};

    const MINIMAL: &str =
        "prometheus: {url: 'http://127.0.0.1:9090'}\nsignals: [{name: q, query: up}]\n";

    #[test]
    fn absent_means_none_and_a_service_gets_its_cluster_name() {
        let config = Config::from_yaml(MINIMAL).unwrap();
        assert_eq!(config.server.upstream.external, None);
        assert_eq!(config.server.upstream.custom, None);
        let text = format!(
            "{MINIMAL}server:\n  upstream:\n    external.metrics.k8s.io:\n      service: {{namespace: monitoring, name: prometheus-adapter}}\n      insecure_skip_tls_verify: true\n"
        );
        let u = Config::from_yaml(&text).unwrap().server.upstream;
        let external = u.external.unwrap();
        assert_eq!(
            external.base_url(),
            "https://prometheus-adapter.monitoring.svc:443"
        );
        assert_eq!(external.timeout.as_std().as_secs(), 10);
        assert_eq!(u.custom, None);
    }

    #[test]
    fn problems_name_their_field() {
        let text = format!(
            "{MINIMAL}server:\n  upstream:\n    external.metrics.k8s.io: {{}}\n    custom.metrics.k8s.io:\n      url: http://adapter:443/x\n      ca_file: /ca.pem\n      insecure_skip_tls_verify: true\n"
        );
        let Err(Error::Invalid(problems)) = Config::from_yaml(&text) else {
            panic!("accepted");
        };
        let all = problems.join("\n");
        for want in [
            "server.upstream.external.metrics.k8s.io: needs service",
            "server.upstream.external.metrics.k8s.io: set ca_file",
            "server.upstream.custom.metrics.k8s.io.url: \"http://adapter:443/x\" is not an https:// base URL",
            "server.upstream.custom.metrics.k8s.io: ca_file and insecure_skip_tls_verify are alternatives",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        let path = format!(
            "{MINIMAL}server:\n  upstream:\n    custom.metrics.k8s.io: {{url: 'https://a:1/apis', insecure_skip_tls_verify: true, service: {{namespace: Mon, name: a}}}}\n"
        );
        let Err(Error::Invalid(problems)) = Config::from_yaml(&path) else {
            panic!("accepted");
        };
        assert!(
            problems[0].contains("service and url are alternatives"),
            "{problems:?}"
        );
        let unknown =
            format!("{MINIMAL}server:\n  upstream:\n    metrics.k8s.io: {{url: 'https://a'}}\n");
        let err = Config::from_yaml(&unknown).unwrap_err();
        let err = std::error::Error::source(&err).unwrap().to_string();
        assert!(
            err.contains("server.upstream") && err.contains("metrics.k8s.io"),
            "{err}"
        );
    }
}
