//! TLS for the links between nodes and the tracker: the tracker's certificate and key, the
//! certificates a node trusts, and a failed handshake told as one line a person can act on.
//! The same text lines run inside TLS as over plain TCP; nothing else changes.
//!
//! rustls with its `ring` provider: `ring` builds with nothing but a C compiler, where
//! `aws-lc-rs` (rustls's default) also wants `CMake` on some platforms and takes far longer to
//! build; neither links OpenSSL.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};

use crate::error::{Error, Result};

/// The first byte of every TLS connection: the record type of the `ClientHello`. A tracker
/// that speaks TLS tells a node speaking plain text (whose first byte is a letter) by it.
pub const HANDSHAKE_RECORD: u8 = 0x16;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The tracker's side: its certificate chain (`cert`, PEM, its own certificate first) and
/// private key (`key`, PEM).
///
/// # Errors
/// [`Error::InvalidArgument`] naming the file that cannot be read or holds no certificate or
/// key, or saying that the key does not match the certificate.
pub fn tracker_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| unreadable("certificate", cert, &e))?;
    if chain.is_empty() {
        return Err(Error::InvalidArgument(format!("{} holds no PEM certificate", cert.display())));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| unreadable("private key", key, &e))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, private))
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => Error::InvalidArgument(format!(
                "the private key in {} does not match the certificate in {}",
                key.display(),
                cert.display()
            )),
            other => Error::InvalidArgument(format!(
                "cannot use {} and {}: {other}",
                cert.display(),
                key.display()
            )),
        })?;
    Ok(Arc::new(config))
}

/// A node's side: trusts the certificates in `ca` (PEM), or the system's roots without it.
///
/// # Errors
/// [`Error::InvalidArgument`] if `ca` cannot be read or holds no certificate, or if the
/// system has no root certificates.
pub fn node_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(ca) => {
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| unreadable("CA certificate", ca, &e))? {
                let cert = cert.map_err(|e| unreadable("CA certificate", ca, &e))?;
                roots.add(cert).map_err(|e| {
                    Error::InvalidArgument(format!(
                        "{} holds a certificate that cannot be used: {e}",
                        ca.display()
                    ))
                })?;
            }
            if roots.is_empty() {
                return Err(Error::InvalidArgument(format!("{} holds no PEM certificate", ca.display())));
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if roots.is_empty() {
                return Err(Error::InvalidArgument(
                    "this system has no root certificates to trust the tracker by; give its CA with --tls-ca"
                        .into(),
                ));
            }
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidArgument(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn unreadable(what: &str, path: &Path, e: &rustls::pki_types::pem::Error) -> Error {
    use rustls::pki_types::pem::Error as Pem;
    let why = match e {
        Pem::Io(io) => io.to_string(),
        Pem::NoItemsFound => "no PEM item of that kind found".to_owned(),
        other => format!("not valid PEM ({other:?})"),
    };
    Error::InvalidArgument(format!("cannot read the {what} from {}: {why}", path.display()))
}

/// How a node reaches a tracker over TLS: what it trusts, and the name the tracker's
/// certificate must carry.
#[derive(Clone, Debug)]
pub struct Dial {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}

impl Dial {
    /// Checks `host` (a DNS name or an IP address, as the node was given it).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `host` is neither.
    pub fn new(config: Arc<ClientConfig>, host: &str) -> Result<Dial> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            Error::InvalidArgument(format!("{host} is not a host name or address TLS can check"))
        })?;
        Ok(Dial { config, name })
    }

    /// The host name the certificate is checked against.
    pub fn host(&self) -> String {
        match &self.name {
            ServerName::DnsName(name) => name.as_ref().to_owned(),
            ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
            other => format!("{other:?}"),
        }
    }
}

/// A node's failed TLS handshake with the tracker at `addr`, as one line a person can act on.
pub fn node_handshake_failed(e: io::Error, dial: &Dial, addr: std::net::SocketAddr) -> Error {
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        // Closed mid-handshake: a tracker at its connection limit does that, so it is worth
        // trying again, like any tracker that cannot be reached for now.
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::Io(io::Error::new(
                e.kind(),
                format!(
                    "the tracker at {addr} closed the connection during the TLS handshake \
                     (it may be at its connection limit, or not speak TLS)"
                ),
            )),
            _ => Error::Io(e),
        };
    };
    let host = dial.host();
    Error::Tls(match tls {
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateHandshakeMessage { .. } => format!(
            "the tracker at {addr} answered in plain text: it does not offer TLS (leave out --tls, \
             or start the tracker with --tls-cert and --tls-key)"
        ),
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => "the tracker's certificate is not signed by a CA this node \
                 trusts (give the CA that signed it with --tls-ca)"
                .to_owned(),
            CertificateError::BadSignature => "the tracker's certificate names a trusted CA as its issuer \
                 but is not signed by it (a certificate from another CA of the same name, or a forgery)"
                .to_owned(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "the tracker's certificate is not valid for the name {host} (connect by a name the \
                 certificate lists, or give the tracker a certificate for {host})"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the tracker's certificate has expired (give the tracker a new one)".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the tracker's certificate is not valid yet (check both machines' clocks)".to_owned()
            }
            other => format!("the tracker's certificate was refused: {other:?}"),
        },
        other => format!("the TLS handshake with the tracker at {addr} failed: {other}"),
    })
}
