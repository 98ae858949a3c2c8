//! TLS to the collector, with rustls and the ring provider.
//!
//! Before enrolment the agent has no CA to trust, only the fingerprint in its token: the
//! [`PinnedCa`] verifier accepts the collector only if its chain carries a certificate with that
//! fingerprint and the server certificate verifies against it. After enrolment, the CA saved
//! in the state directory is the only root, and the device certificate is presented (mTLS).

use crate::identity::{self, IdentityError, StatePaths};
use invigilator_proto::ca_fingerprint;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("collector address {0:?} is not https://HOST:PORT")]
    BadUrl(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot connect to the collector: {0}")]
    Connect(#[from] tonic::transport::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Host, port and TLS server name of `https://HOST:PORT`.
pub fn parse_collector_url(url: &str) -> Result<(String, u16, ServerName<'static>), TlsError> {
    let bad = || TlsError::BadUrl(url.to_owned());
    let uri: http::Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("https") {
        return Err(bad());
    }
    let host = uri
        .host()
        .ok_or_else(bad)?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(50051);
    let name = ServerName::try_from(host.clone()).map_err(|_| bad())?;
    Ok((host, port, name))
}

/// Verifies the collector: against the CA whose fingerprint the enrolment token carries
/// (before enrolment), or against the CA saved at enrolment (after).
///
/// A device clock running behind (a flat CMOS battery, a pupil setting it back) must not cut the
/// device off: a certificate that is "not valid yet" by the device's clock is checked again at
/// its own start time. Only the collector's own CA can have issued it, and everything else
/// (signatures, name, expiry) is still checked. A clock running ahead gets no such allowance:
/// an expired certificate is refused.
#[derive(Debug)]
pub struct PinnedCa {
    trust: Trust,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug)]
enum Trust {
    /// Before enrolment: the CA in the chain with this fingerprint (a verifier per handshake).
    Fingerprint(String),
    /// After: the saved CA, its verifier built once.
    Saved(Arc<WebPkiServerVerifier>),
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let inner = match &self.trust {
            Trust::Saved(inner) => inner.clone(),
            Trust::Fingerprint(fingerprint) => {
                let ca = intermediates
                    .iter()
                    .find(|c| ca_fingerprint(c) == *fingerprint)
                    .ok_or_else(|| {
                        rustls::Error::General(
                            "the collector's certificate chain does not contain the CA pinned by the enrolment token".into(),
                        )
                    })?;
                let mut roots = RootCertStore::empty();
                roots.add(ca.clone().into_owned())?;
                verifier(roots, &self.provider)?
            }
        };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidYet
                | rustls::CertificateError::NotValidYetContext { .. },
            )) => {
                let start = identity::not_before(end_entity).ok_or_else(|| {
                    rustls::Error::General("the collector's certificate cannot be parsed".into())
                })?;
                tracing::warn!(
                    "this device's clock is behind the collector's certificate; checking it at the certificate's start"
                );
                let at = UnixTime::since_unix_epoch(Duration::from_secs(start.max(0) as u64));
                inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, at)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn verifier(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))
}

fn finish(mut cfg: ClientConfig) -> Arc<ClientConfig> {
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

/// Server-authenticated TLS for enrolment, pinned by CA fingerprint.
pub fn enrolment_config(ca_fingerprint: &str) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa {
            trust: Trust::Fingerprint(ca_fingerprint.to_owned()),
            provider,
        }))
        .with_no_client_auth();
    Ok(finish(cfg))
}

/// Mutual TLS with the saved CA and the device certificate.
pub fn mtls_config(paths: &StatePaths) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in identity::read_certs(&paths.ca())? {
        roots.add(ca)?;
    }
    let chain = identity::read_certs(&paths.cert())?;
    let key = identity::read_private_key(&paths.key())?;
    let provider = provider();
    let cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa {
            trust: Trust::Saved(verifier(roots, &provider)?),
            provider,
        }))
        .with_client_auth_cert(chain, key)?;
    Ok(finish(cfg))
}

pub use crate::dial::{channel, channel_from};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_urls() {
        let (h, p, _) = parse_collector_url("https://collector.school.internal:50051").unwrap();
        assert_eq!((h.as_str(), p), ("collector.school.internal", 50051));
        let (h, p, _) = parse_collector_url("https://[::1]:9").unwrap();
        assert_eq!((h.as_str(), p), ("::1", 9));
        for bad in ["http://x:1", "collector:50051", "https://", ""] {
            assert!(parse_collector_url(bad).is_err(), "{bad}");
        }
    }
}
