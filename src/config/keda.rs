//! `server.keda_scaler`: prescale as a KEDA external scaler (gRPC over TLS).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The KEDA external scaler: not started when absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KedaScalerConfig {
    /// Address of the gRPC server (TLS); a ScaledObject's `scalerAddress` names
    /// the Service port that leads here.
    #[serde(default = "default_address")]
    pub address: SocketAddr,
    /// Its certificate and, optionally, the CA of the client certificates required.
    #[serde(default)]
    pub tls: KedaTlsConfig,
}

/// The scaler's TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KedaTlsConfig {
    /// PEM certificate chain; with `key_file`. Absent: the API's serving
    /// certificate (`server.tls`), which must then carry the Service's DNS name.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key; with `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle: when set, clients must present a certificate it signs (the
    /// trigger's `tlsClientCert` and `tlsClientKey`); absent, any client is served.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

fn default_address() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9443))
}

impl Default for KedaScalerConfig {
    fn default() -> Self {
        Self {
            address: default_address(),
            tls: KedaTlsConfig::default(),
        }
    }
}

/// Checks `server.keda_scaler` against the rest of the server settings: pushes
/// one message per problem, each with its field path.
pub fn check(keda: &KedaScalerConfig, server: &super::ServerConfig, problems: &mut Vec<String>) {
    let at = "server.keda_scaler";
    match (&keda.tls.cert_file, &keda.tls.key_file) {
        (Some(_), None) => problems.push(format!("{at}.tls.key_file: required with cert_file")),
        (None, Some(_)) => problems.push(format!("{at}.tls.cert_file: required with key_file")),
        _ => {}
    }
    for (field, addr) in [
        ("https_address", server.https_address),
        ("http_address", server.http_address),
    ] {
        if addr == keda.address {
            problems.push(format!("{at}.address: {addr} is server.{field} already"));
        }
    }
    // KEDA verifies the scaler's certificate against the host of `scalerAddress`;
    // a generated one carries only the listed names.
    let generated = keda.tls.cert_file.is_none() && server.tls.cert_file.is_none();
    if generated && server.tls.dns_names.is_empty() {
        problems.push(format!(
            "{at}.tls: with the generated API certificate, server.tls.dns_names must list the Service name KEDA dials (e.g. prescale.prescale.svc), or set {at}.tls.cert_file"
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Error};

    const MINIMAL: &str =
        "prometheus: {url: 'http://127.0.0.1:9090'}\nsignals: [{name: q, query: up}]\n";

    #[test]
    fn absent_means_off_and_present_gets_defaults() {
        assert_eq!(Config::from_yaml(MINIMAL).unwrap().server.keda_scaler, None);
        let text = format!("{MINIMAL}server:\n  tls: {{dns_names: [prescale.prescale.svc]}}\n  keda_scaler: {{}}\n");
        let k = Config::from_yaml(&text)
            .unwrap()
            .server
            .keda_scaler
            .unwrap();
        assert_eq!(k.address.port(), 9443);
        assert_eq!(k.tls.client_ca_file, None);
    }

    #[test]
    fn problems_name_their_field() {
        let text = format!(
            "{MINIMAL}server:\n  https_address: 0.0.0.0:9443\n  keda_scaler:\n    tls: {{cert_file: /c.pem, client_ca_file: /ca.pem}}\n"
        );
        let Err(Error::Invalid(problems)) = Config::from_yaml(&text) else {
            panic!("accepted");
        };
        let all = problems.join("\n");
        for want in [
            "server.keda_scaler.tls.key_file: required with cert_file",
            "server.keda_scaler.address: 0.0.0.0:9443 is server.https_address already",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        let generated = format!("{MINIMAL}server:\n  keda_scaler: {{address: 0.0.0.0:9000}}\n");
        let Err(Error::Invalid(problems)) = Config::from_yaml(&generated) else {
            panic!("a generated certificate without dns_names accepted");
        };
        assert!(
            problems[0].starts_with("server.keda_scaler.tls: with the generated API certificate"),
            "{problems:?}"
        );
        let unknown = format!("{MINIMAL}server:\n  keda_scaler: {{tls: {{ca_file: /x}}}}\n");
        let err = Config::from_yaml(&unknown).unwrap_err();
        let err = std::error::Error::source(&err).unwrap().to_string();
        assert!(
            err.contains("server.keda_scaler.tls") && err.contains("ca_file"),
            "{err}"
        );
    }
}
