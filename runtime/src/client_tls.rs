//! Client TLS configurations, all built on the one crypto provider of the project (aws-lc-rs,
//! the same as the server side and the token signatures), so no second provider is ever linked
//! or chosen by default.

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject},
};
use std::sync::Arc;

/// Why a client TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    /// The CA bundle is unreadable or holds no certificate.
    #[error("{0}")]
    Ca(String),
    #[error(transparent)]
    Tls(#[from] rustls::Error),
}

/// A client configuration trusting `roots`: safe default protocol versions, no client
/// certificate.
pub fn config(roots: RootCertStore) -> Result<ClientConfig, rustls::Error> {
    Ok(
        ClientConfig::builder_with_provider(
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// A client configuration trusting exactly the certificates of the PEM bundle `ca_pem` (for a
/// private CA, e.g. the operator's): it must hold at least one.
pub fn trusting(ca_pem: &[u8]) -> Result<ClientConfig, ClientTlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| ClientTlsError::Ca(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| ClientTlsError::Ca(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ClientTlsError::Ca("no certificate".into()));
    }
    Ok(config(roots)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_a_certificate_is_refused() {
        assert!(matches!(trusting(b""), Err(ClientTlsError::Ca(_))));
        assert!(matches!(
            trusting(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"),
            Err(ClientTlsError::Ca(_))
        ));
    }
}
