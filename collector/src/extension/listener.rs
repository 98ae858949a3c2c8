//! The extension endpoint's TLS listener: a client certificate from this collector's CA is
//! required in the handshake, and the verified certificate goes with every request on the
//! connection (`Peer`), never anything the request says.
//!
//! Every stage has a deadline and a bound, so a device that stalls, or opens many connections,
//! delays nobody else's: handshakes run each in their own task (at most `MAX_HANDSHAKES`, and
//! `MAX_HANDSHAKES_PER_ADDRESS` from one address), a connection's request headers must arrive
//! within `HEADER_DEADLINE`, a connection lives at most `CONNECTION_LIFETIME`, and a device has
//! at most `MAX_CONNECTIONS_PER_DEVICE` open.

use crate::identity::{self, PeerCert};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Handshakes under way at once; more wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 1024;
/// Handshakes under way at once from one address: one host cannot hold every slot.
const MAX_HANDSHAKES_PER_ADDRESS: usize = 32;
/// Connections open at once, in all and per device.
const MAX_CONNECTIONS: usize = 4096;
const MAX_CONNECTIONS_PER_DEVICE: usize = 4;
/// A request's headers must arrive within this (also the idle time between requests).
const HEADER_DEADLINE: Duration = Duration::from_secs(10);
/// Longest a connection stays open; the extension opens another.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

/// Who is on a connection: the address, and the identity in its verified certificate.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub cert: Result<PeerCert, String>,
}

/// Counts held per key (an address, a device), released when the guard drops.
#[derive(Clone)]
struct PerKey<K: std::hash::Hash + Eq + Clone>(Arc<Mutex<HashMap<K, usize>>>);

impl<K: std::hash::Hash + Eq + Clone> Default for PerKey<K> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

struct Held<K: std::hash::Hash + Eq + Clone>(PerKey<K>, K);

impl<K: std::hash::Hash + Eq + Clone> PerKey<K> {
    fn take(&self, key: K, max: usize) -> Option<Held<K>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.clone()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Held(self.clone(), key))
    }
}

impl<K: std::hash::Hash + Eq + Clone> Drop for Held<K> {
    fn drop(&mut self) {
        let mut map = (self.0).0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

/// Listens on `addr` and serves `app` on every connection that completes its handshake; the
/// address it listens on.
pub async fn serve(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
    app: axum::Router,
) -> std::io::Result<SocketAddr> {
    let tcp = TcpListener::bind(addr).await?;
    let local = tcp.local_addr()?;
    let acceptor = TlsAcceptor::from(tls);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let from_address: PerKey<IpAddr> = PerKey::default();
    let per_device: PerKey<String> = PerKey::default();
    tokio::spawn(async move {
        loop {
            let Ok(slot) = Arc::clone(&handshakes).acquire_owned().await else {
                return;
            };
            let (stream, from) = match tcp.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!(error = %e, "extension endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(mine) = from_address.take(from.ip(), MAX_HANDSHAKES_PER_ADDRESS) else {
                tracing::debug!(%from, "extension endpoint: too many handshakes from one address");
                continue;
            };
            let Ok(open) = Arc::clone(&connections).try_acquire_owned() else {
                tracing::warn!(%from, "extension endpoint: {MAX_CONNECTIONS} connections open; refused");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, app, per_device) = (acceptor.clone(), app.clone(), per_device.clone());
            tokio::spawn(async move {
                let tls = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await;
                drop((slot, mine));
                let tls = match tls {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        return tracing::debug!(%from, error = %e, "extension endpoint: handshake refused");
                    }
                    Err(_) => {
                        return tracing::debug!(%from, "extension endpoint: handshake not finished in time");
                    }
                };
                let peer = peer_of(&tls, from);
                let _device = match &peer.cert {
                    Ok(cert) => {
                        match per_device.take(cert.agent_id.clone(), MAX_CONNECTIONS_PER_DEVICE) {
                            Some(held) => Some(held),
                            None => {
                                return tracing::debug!(%from, agent_id = %cert.agent_id, "extension endpoint: too many connections from one device");
                            }
                        }
                    }
                    Err(_) => None,
                };
                let service = TowerToHyperService::new(app.layer(axum::Extension(peer)));
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_DEADLINE)
                    .serve_connection(TokioIo::new(tls), service);
                match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(%from, error = %e, "extension endpoint: connection ended")
                    }
                    Err(_) => {
                        tracing::debug!(%from, "extension endpoint: connection closed at the end of its lifetime")
                    }
                }
                drop(open);
            });
        }
    });
    Ok(local)
}

fn peer_of(tls: &TlsStream<TcpStream>, addr: SocketAddr) -> Peer {
    let (_, session) = tls.get_ref();
    let cert = session
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| "no client certificate presented".to_owned())
        .and_then(|leaf| identity::peer_from_der(leaf));
    Peer { addr, cert }
}

/// TLS for the endpoint: the collector's server certificate, and a client certificate from its
/// CA required (rustls checks the chain, validity and clientAuth usage).
pub fn server_config(
    server_cert_pem: &[u8],
    server_key_pem: &[u8],
    ca_cert_pem: &[u8],
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use anyhow::Context;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_cert_pem) {
        roots
            .add(ca.context("the CA certificate")?)
            .context("the CA certificate")?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .context("the client certificate verifier")?;
    let chain = CertificateDer::pem_slice_iter(server_cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("the server certificate")?;
    let key = PrivateKeyDer::from_pem_slice(server_key_pem).context("the server key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("the server certificate and key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
