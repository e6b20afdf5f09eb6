//! TLS configuration. Clients: webpki roots plus an optional per-account CA file;
//! certificates are always verified, there is no switch to turn that off. Server (the
//! BCC-drop listener's STARTTLS): a configured certificate chain and key.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate or key file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    #[error("the server's certificate is not trusted: {0}")]
    Certificate(String),
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
}

/// The largest PEM file read (a CA bundle is a few hundred KB): a path such as
/// `/dev/zero` must not be read forever.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Reads a PEM file of at most [`MAX_PEM_BYTES`].
fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut pem = Vec::new();
    file.take(MAX_PEM_BYTES + 1).read_to_end(&mut pem).map_err(|e| e.to_string())?;
    if pem.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("larger than {} KiB: not a PEM file", MAX_PEM_BYTES >> 10));
    }
    Ok(pem)
}

/// Reads the PEM certificates of a CA file; a file without one is an error.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::CaFile { path: path.display().to_string(), reason };
    let pem = read_pem(path).map_err(err)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err("contains no PEM certificate".into()));
    }
    Ok(certs)
}

/// A connector trusting the webpki roots and, when given, the certificates of `ca_file`.
pub fn connector(ca_file: Option<&Path>) -> Result<TlsConnector, TlsError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_file {
        for cert in load_ca_file(path)? {
            roots.add(cert).map_err(|e| TlsError::CaFile {
                path: path.display().to_string(),
                reason: format!("unusable certificate: {e}"),
            })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Handshake(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// An acceptor serving the PEM certificate chain in `cert_file` with the PEM private
/// key (PKCS#8, PKCS#1 or SEC1) in `key_file`.
pub fn acceptor(cert_file: &Path, key_file: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let certs = load_ca_file(cert_file)?;
    let key_err = |reason: String| TlsError::CaFile { path: key_file.display().to_string(), reason };
    let pem = read_pem(key_file).map_err(key_err)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => key_err("contains no PEM private key".into()),
        other => key_err(format!("not PEM: {other}")),
    })?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Handshake(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| key_err(format!("does not fit the certificate: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Runs the TLS handshake over `stream`, classifying certificate failures.
pub async fn handshake<S>(connector: &TlsConnector, host: &str, stream: S) -> Result<TlsStream<S>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName(host.to_string()))?;
    connector.connect(name, stream).await.map_err(|e| {
        let certificate = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
        if certificate { TlsError::Certificate(e.to_string()) } else { TlsError::Handshake(e.to_string()) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_or_empty_file_is_refused_without_reading_it_all() {
        let started = std::time::Instant::now();
        let endless = load_ca_file(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(endless.contains("larger than 1024 KiB"), "{endless}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let empty = load_ca_file(Path::new("/dev/null")).unwrap_err().to_string();
        assert!(empty.contains("contains no PEM certificate"), "{empty}");
    }
}
