//! The server's TLS configuration: where its certificate comes from and which
//! client certificates it verifies (the request-header CA).
//!
//! rustls 0.23 with the `ring` provider, chosen explicitly rather than through a
//! process-wide default so that no other crate's choice can change it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::auth::PeerCert;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate or key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A PEM input holds no usable certificate or key.
    #[error("{what}: {detail}")]
    Pem {
        /// Which input (a path, or "request-header CA").
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Generating the self-signed pair failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("request-header CA verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Result with this module's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the serving certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files: the certificate chain and its private key.
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// Generate a self-signed pair at start (as metrics-server does with
    /// `--cert-dir`) and write it to `dir/apiserver.crt` and `dir/apiserver.key`,
    /// valid for 127.0.0.1, ::1, localhost and `dns_names`.
    SelfSigned {
        /// Directory the pair is written to (created if missing).
        dir: PathBuf,
        /// Extra DNS names (e.g. the Service's `prescale.prescale.svc`).
        dns_names: Vec<String>,
    },
    /// PEM text held in memory (tests, benches).
    Pem {
        /// Certificate chain, leaf first.
        cert_pem: String,
        /// Private key.
        key_pem: String,
    },
}

/// The self-signed certificate's file name inside the cert dir.
pub const SELF_SIGNED_CERT: &str = "apiserver.crt";
/// The self-signed key's file name inside the cert dir.
pub const SELF_SIGNED_KEY: &str = "apiserver.key";

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)
}

/// Generates a self-signed certificate for loopback and `dns_names`; returns
/// `(cert_pem, key_pem)`.
///
/// # Errors
/// [`Error::Generate`] when rcgen fails (e.g. an invalid DNS name).
pub fn self_signed(dns_names: &[String]) -> Result<(String, String)> {
    let mut names = vec![
        "127.0.0.1".to_string(),
        "::1".to_string(),
        "localhost".to_string(),
    ];
    names.extend(dns_names.iter().cloned());
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "prescale");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The certificate chain and key of `source`, generating and writing them first
/// for [`TlsSource::SelfSigned`].
///
/// # Errors
/// When files cannot be read or written or hold no certificate/key.
pub fn load(source: &TlsSource) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let (cert_pem, key_pem, what) = match source {
        TlsSource::Files { cert, key } => (
            read(cert)?,
            read(key)?,
            (cert.display().to_string(), key.display().to_string()),
        ),
        TlsSource::SelfSigned { dir, dns_names } => {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
            let (cert, key) = self_signed(dns_names)?;
            let cert_path = dir.join(SELF_SIGNED_CERT);
            let key_path = dir.join(SELF_SIGNED_KEY);
            write(&cert_path, &cert, 0o644)?;
            write(&key_path, &key, 0o600)?;
            (
                cert.into_bytes(),
                key.into_bytes(),
                (
                    cert_path.display().to_string(),
                    key_path.display().to_string(),
                ),
            )
        }
        TlsSource::Pem { cert_pem, key_pem } => (
            cert_pem.clone().into_bytes(),
            key_pem.clone().into_bytes(),
            ("certificate PEM".into(), "key PEM".into()),
        ),
    };
    let certs = parse_certs(&cert_pem, &what.0)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| Error::Pem {
        what: what.1,
        detail: format!("no usable private key: {e}"),
    })?;
    Ok((certs, key))
}

/// Every certificate in a PEM bundle; at least one.
fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            what: what.to_string(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            what: what.to_string(),
            detail: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// Builds the server configuration: our certificate, HTTP/2 and HTTP/1.1 by
/// ALPN, and — when `client_ca_pem` is given — verification of client
/// certificates against it. Clients without a certificate are still let in
/// (`allow_unauthenticated`) so that bearer-token clients can connect; a client
/// that presents a certificate from another CA fails the handshake.
///
/// # Errors
/// When the certificate, key or CA cannot be used.
pub fn server_config(source: &TlsSource, client_ca_pem: Option<&str>) -> Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (certs, key) = load(source)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca_pem {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in parse_certs(ca.as_bytes(), "request-header CA")? {
                roots.add(cert)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The identity of a verified client certificate (its subject CN).
///
/// Only called on certificates rustls has already verified; a certificate we
/// cannot parse yields a `PeerCert` without a CN, which no non-empty allow-list
/// accepts.
pub fn peer_cert(certs: Option<&[CertificateDer<'_>]>) -> Option<PeerCert> {
    let leaf = certs?.first()?;
    let common_name = x509_parser::parse_x509_certificate(leaf.as_ref())
        .ok()
        .and_then(|(_, cert)| {
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_string)
        });
    Some(PeerCert { common_name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_pair_loads_and_names_its_cn() {
        let (cert, key) = self_signed(&["prescale.svc".into()]).unwrap();
        let (certs, _) = load(&TlsSource::Pem {
            cert_pem: cert.clone(),
            key_pem: key.clone(),
        })
        .unwrap();
        let peer = peer_cert(Some(&certs)).unwrap();
        assert_eq!(peer.common_name.as_deref(), Some("prescale"));
        server_config(
            &TlsSource::Pem {
                cert_pem: cert.clone(),
                key_pem: key,
            },
            Some(&cert),
        )
        .unwrap();
    }

    #[test]
    fn cert_dir_gets_a_fresh_pair() {
        let dir = tempfile::tempdir().unwrap();
        let source = TlsSource::SelfSigned {
            dir: dir.path().join("certs"),
            dns_names: vec![],
        };
        server_config(&source, None).unwrap();
        assert!(dir.path().join("certs").join(SELF_SIGNED_CERT).exists());
        assert!(dir.path().join("certs").join(SELF_SIGNED_KEY).exists());
    }

    #[test]
    fn bad_inputs_name_what_is_wrong() {
        let err = load(&TlsSource::Files {
            cert: "/nonexistent/tls.crt".into(),
            key: "/nonexistent/tls.key".into(),
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tls.crt"), "{err}");
        let err = load(&TlsSource::Pem {
            cert_pem: "not pem".into(),
            key_pem: "not pem".into(),
        })
        .unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
        let (cert, key) = self_signed(&[]).unwrap();
        let err = server_config(
            &TlsSource::Pem {
                cert_pem: cert,
                key_pem: key,
            },
            Some("garbage"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("request-header CA"), "{err}");
    }
}
