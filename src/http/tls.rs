//! HTTPS: the certificate and key from `http.tls_cert` / `http.tls_key` (PEM), swappable on
//! SIGHUP without dropping connections (new handshakes take the new pair).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("http.tls_cert: cannot read certificates from {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("http.tls_cert: {path} holds no certificate")]
    NoCert { path: PathBuf },
    #[error("http.tls_key: cannot read a private key from {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("http.tls_key: {path}: {reason}")]
    Unusable { path: PathBuf, reason: String },
}

/// The pair in use, loaded from files.
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: cert.to_owned(),
        });
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::Unusable {
            path: key.to_owned(),
            reason: e.to_string(),
        })?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| TlsError::Unusable {
        path: key.to_owned(),
        reason: format!("does not belong to the certificate in http.tls_cert ({e})"),
    })?;
    Ok(ck)
}

impl TlsFiles {
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<TlsFiles>, TlsError> {
        let ck = load(cert, key)?;
        Ok(Arc::new(TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(ck)),
        }))
    }

    /// Reads both files again; on error the pair in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let ck = load(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
        Ok(())
    }

    /// SHA-256 of the leaf certificate, as browsers show it (`AB:CD:…`), so that a user with a
    /// self-signed certificate can check what the browser warns about.
    pub fn fingerprint(&self) -> String {
        let ck = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let leaf = ck.cert.first().map(|c| c.as_ref()).unwrap_or_default();
        let mut out = String::with_capacity(95);
        for (i, b) in Sha256::digest(leaf).iter().enumerate() {
            if i > 0 {
                out.push(':');
            }
            let _ = write!(out, "{b:02X}");
        }
        out
    }

    /// A rustls server configuration that always presents the current pair. HTTP/1.1 only.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Unusable {
                path: self.key.clone(),
                reason: e.to_string(),
            })?;
        let mut cfg = builder
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

#[derive(Debug)]
struct Resolver(Arc<TlsFiles>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}
