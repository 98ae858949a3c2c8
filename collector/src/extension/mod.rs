//! The browser extension's own endpoint, for devices that run no agent (Chromebooks): the
//! extension posts its visits over HTTPS, identified by a device certificate from this
//! collector's CA (`device-cert create`), and they go through the agents' admission, committer,
//! quotas and audit exactly as an agent's events do. The design, and the trust it places in the
//! device, are in `agent/browser-extension/CHROMEOS.md`.

mod listener;
pub mod upload;

use crate::state::Shared;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
pub use listener::server_config;
use listener::{Peer, TlsListener};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The path the extension posts to.
pub const UPLOAD_PATH: &str = "/extension/v1/visits";

/// Starts serving the endpoint on `addr`; the address it listens on.
pub async fn serve(
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
) -> anyhow::Result<SocketAddr> {
    let listener = TlsListener::bind(addr, tls, handshake_timeout)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for the extension on {addr}: {e}"))?;
    let local = axum::serve::Listener::local_addr(&listener)?;
    let app = Router::new()
        .route(UPLOAD_PATH, post(upload_visits))
        .layer(DefaultBodyLimit::max(upload::MAX_BODY))
        .with_state(shared)
        .into_make_service_with_connect_info::<Peer>();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "extension endpoint stopped");
        }
    });
    Ok(local)
}

async fn upload_visits(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: axum::body::Bytes,
) -> Response {
    let cert = match peer.cert {
        Ok(c) => c,
        Err(why) => return refused(upload::Refused(401, why, None)),
    };
    let span = tracing::info_span!("extension", agent_id = %cert.agent_id, from = %peer.addr);
    let upload: upload::Upload = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            shared.metrics.refused(crate::metrics::Refusal::malformed);
            let why = format!("not an upload this collector understands: {e}");
            return refused(upload::Refused(400, truncate(&why), None));
        }
    };
    use tracing::Instrument;
    match upload::take(&shared, cert, upload).instrument(span).await {
        Ok(reply) => axum::Json(reply).into_response(),
        Err(r) => refused(r),
    }
}

fn truncate(s: &str) -> String {
    invigilator_visits::url_clean::truncate(s, 300)
}

/// A refusal as JSON, `{"error": why}`, with `Retry-After` when waiting will help.
fn refused(upload::Refused(code, why, retry_after): upload::Refused) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut response = (status, axum::Json(serde_json::json!({ "error": why }))).into_response();
    if let Some(v) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}
