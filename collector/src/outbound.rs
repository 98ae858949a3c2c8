//! The HTTP client for the collector's own calls out (webhooks, the identity provider): rustls
//! on ring, a deadline on every request, statuses returned rather than raised, and no
//! redirects followed, so that no answer can point the collector at another address
//! (server-side request forgery).

use std::path::Path;
use std::time::Duration;

/// Every request ends within this.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A client trusting the public roots, or only the certificates in `ca_file` (PEM). Err: what
/// is wrong with the file.
pub fn client(ca_file: Option<&Path>) -> Result<ureq::Agent, String> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| e.to_string())?;
        let certs = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        if certs.is_empty() {
            return Err("no certificate in it".into());
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    Ok(ureq::Agent::config_builder()
        .tls_config(tls.build())
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into())
}
