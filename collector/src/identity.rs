//! Who is calling: the agent id, taken only from the verified client certificate.
//!
//! rustls has already checked the chain against our CA, the validity period and the clientAuth
//! usage before a request reaches us; here we read the identity out of it and check it has not
//! been revoked since.

pub use crate::pki::Holder;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::watch;
use tonic::{Request, Status};

/// What the verified client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    pub agent_id: String,
    /// The certificate's serial, as hex without leading zeros (see [`same_serial`]).
    pub serial: String,
    /// The subject public key's bits: a renewal must be for this same key.
    pub public_key: Vec<u8>,
    /// An agent's, or a device's (`device-cert create`), by the subject's organisation.
    pub holder: Holder,
}

/// The peer's certificate, or `Unauthenticated` when there is none.
pub fn peer<T>(req: &Request<T>) -> Result<PeerCert, Status> {
    let certs = req.peer_certs().ok_or_else(|| {
        Status::unauthenticated("a client certificate issued by this collector is required")
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("no client certificate presented"))?;
    peer_from_der(leaf).map_err(Status::unauthenticated)
}

/// Serials compare as numbers: DER may or may not carry a leading zero byte.
pub fn same_serial(a: &str, b: &str) -> bool {
    let trim = |s: &str| s.trim_start_matches('0').to_ascii_lowercase();
    trim(a) == trim(b)
}

pub fn peer_from_der(der: &[u8]) -> Result<PeerCert, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("client certificate cannot be parsed: {e}"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or("client certificate has no common name")?;
    let id = uuid::Uuid::parse_str(cn)
        .map_err(|_| format!("client certificate common name {cn:?} is not an agent id"))?;
    let device = cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .any(|o| o == Holder::Device.organisation());
    Ok(PeerCert {
        holder: if device {
            Holder::Device
        } else {
            Holder::Agent
        },
        agent_id: id.hyphenated().to_string(),
        serial: hex::encode(cert.tbs_certificate.raw_serial()),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
    })
}

/// The set of revoked agent ids, refreshed from the database in the background so that a
/// revocation made with the CLI, or on another collector sharing the database, reaches streams
/// that are already open: a stream waits on [`Revocations::revoked`] beside its next message.
#[derive(Clone)]
pub struct Revocations(Arc<watch::Sender<Arc<HashSet<String>>>>);

impl Default for Revocations {
    fn default() -> Self {
        Self(Arc::new(watch::channel(Arc::default()).0))
    }
}

impl Revocations {
    pub fn is_revoked(&self, agent_id: &str) -> bool {
        self.0.borrow().contains(agent_id)
    }

    pub fn replace(&self, ids: impl IntoIterator<Item = String>) {
        let set: HashSet<String> = ids.into_iter().collect();
        self.0.send_if_modified(|current| {
            let changed = **current != set;
            if changed {
                *current = Arc::new(set);
            }
            changed
        });
    }

    /// Returns once `agent_id` is revoked (at once if it is).
    pub async fn revoked(&self, agent_id: &str) {
        let mut rx = self.0.subscribe();
        if rx.wait_for(|set| set.contains(agent_id)).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    pub fn check(&self, agent_id: &str) -> Result<(), Status> {
        if self.is_revoked(agent_id) {
            Err(Self::refusal(agent_id))
        } else {
            Ok(())
        }
    }

    /// What a revoked agent is told.
    pub fn refusal(agent_id: &str) -> Status {
        Status::permission_denied(format!("agent {agent_id} has been revoked"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_waiting_stream_learns_of_its_revocation() {
        let r = Revocations::default();
        let wait = tokio::spawn({
            let r = r.clone();
            async move { r.revoked("b").await }
        });
        r.replace(["a".to_owned()]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!wait.is_finished(), "another agent's revocation ended it");
        r.replace(["a".to_owned(), "b".to_owned()]);
        tokio::time::timeout(Duration::from_secs(1), wait)
            .await
            .expect("the revocation was not seen")
            .unwrap();
        assert!(r.is_revoked("b") && r.check("c").is_ok());
    }
}
