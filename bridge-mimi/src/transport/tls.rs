//! TLS configuration of both ends: mutual authentication against a configured CA bundle
//! (protocol-06 §4.1), rustls on the `ring` provider.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};

/// Why TLS material or configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file holds no usable certificate or key.
    #[error("PEM: {0}")]
    Pem(String),
    /// rustls refused the configuration (for example a key that does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Our provider's certificate chain and private key (server and client certificate alike: a
/// MIMI certificate names the provider domain).
#[derive(Debug)]
pub struct TlsIdentity {
    /// The chain, end-entity certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key of the end-entity certificate.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl TlsIdentity {
    /// Reads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| TlsError::Pem(format!("certificate chain: {error}")))?;
        if chain.is_empty() {
            return Err(TlsError::Pem("no certificate in the chain".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|error| TlsError::Pem(format!("private key: {error}")))?;
        Ok(Self { chain, key })
    }
}

/// Reads the CA bundle peers' certificates are verified against.
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem) {
        let certificate =
            certificate.map_err(|error| TlsError::Pem(format!("CA bundle: {error}")))?;
        roots
            .add(certificate)
            .map_err(|error| TlsError::Pem(format!("CA bundle: {error}")))?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem("no certificate in the CA bundle".into()));
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side: our certificate, and a client certificate chaining to `roots` required
/// from every peer (a handshake without one fails).
pub fn server_config(
    identity: TlsIdentity,
    roots: RootCertStore,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|error| TlsError::Config(error.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config(error.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)
        .map_err(|error| TlsError::Config(error.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client side: servers verified against `roots`, our certificate presented when asked
/// (`identity` `None` only to test that servers refuse clients without one).
pub fn client_config(
    identity: Option<TlsIdentity>,
    roots: RootCertStore,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config(error.to_string()))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.chain, identity.key)
            .map_err(|error| TlsError::Config(error.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Whether `certificate` (already verified against the CA bundle during the handshake: a peer's
/// client certificate, or a server's) authenticates `domain` (its subjectAltName, RFC 6125 as
/// implemented by webpki).
pub fn certificate_names(certificate: &CertificateDer<'_>, domain: &str) -> Result<(), String> {
    let parsed = ParsedCertificate::try_from(certificate)
        .map_err(|error| format!("unreadable certificate: {error}"))?;
    let name = ServerName::try_from(domain.to_owned())
        .map_err(|_| format!("{domain:?} is not a DNS name"))?;
    rustls::client::verify_server_name(&parsed, &name)
        .map_err(|_| format!("the certificate does not authenticate {domain}"))
}
