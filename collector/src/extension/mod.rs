//! The browser extension's own endpoint, for devices that run no agent (Chromebooks): the
//! extension posts its visits over HTTPS, identified by a device certificate from this
//! collector's CA (`device-cert create`), and they go through the agents' admission, committer,
//! quotas and audit exactly as an agent's events do. The design, and the trust it places in the
//! device, are in `agent/browser-extension/CHROMEOS.md`.
//!
//! A request is taken only from the school's extension (its `Origin`, which no web page can
//! forge, though a page the pupil opens would present the same certificate), from an enrolled
//! device, one upload per device at a time, and its body is read only then, within a deadline.

mod listener;
pub mod upload;

use crate::state::Shared;
use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use listener::Peer;
pub use listener::server_config;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

/// The path the extension posts to.
pub const UPLOAD_PATH: &str = "/extension/v1/visits";
/// How long an upload's body may take to arrive once its headers have.
const BODY_DEADLINE: Duration = Duration::from_secs(30);

struct Endpoint {
    shared: Arc<Shared>,
    /// `chrome-extension://ID` of each extension id taken.
    origins: Vec<String>,
    /// Devices with an upload under way.
    busy: Mutex<HashSet<Arc<str>>>,
}

/// Marks a device's upload under way until dropped.
struct Busy<'a>(&'a Endpoint, Arc<str>);

impl Endpoint {
    fn begin(&self, agent: &Arc<str>) -> Option<Busy<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.insert(agent.clone())
            .then(|| Busy(self, agent.clone()))
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut busy = self.0.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.remove(&self.1);
    }
}

/// Starts serving the endpoint on `addr`; the address it listens on.
pub async fn serve(
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
) -> anyhow::Result<SocketAddr> {
    let origins = shared
        .config
        .extension
        .extension_ids
        .iter()
        .map(|id| format!("chrome-extension://{id}"))
        .collect();
    let endpoint = Arc::new(Endpoint {
        shared,
        origins,
        busy: Mutex::default(),
    });
    let app = Router::new()
        .route(UPLOAD_PATH, post(upload_visits))
        .with_state(endpoint);
    listener::serve(addr, tls, handshake_timeout, app)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for the extension on {addr}: {e}"))
}

async fn upload_visits(
    State(endpoint): State<Arc<Endpoint>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let cert = match peer.cert {
        Ok(c) => c,
        Err(why) => return refused(upload::Refused(401, why, None)),
    };
    let span = tracing::info_span!("extension", agent_id = %cert.agent_id, from = %peer.addr);
    async move {
        let shared = &endpoint.shared;
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        if !origin.is_some_and(|o| endpoint.origins.iter().any(|ours| ours == o)) {
            shared.metrics.refused(crate::metrics::Refusal::not_authorised);
            tracing::warn!(origin = ?origin, "extension endpoint: an upload not from the school's extension refused");
            let why = format!(
                "uploads are taken only from the school's extension; origin {:?} is not one",
                origin.unwrap_or("(none)")
            );
            return refused(upload::Refused(403, why, None));
        }
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"));
        if !json {
            return refused(upload::Refused(415, "an upload is application/json".into(), None));
        }
        let (agent, group) = match upload::authorise(shared, cert).await {
            Ok(a) => a,
            Err(r) => return refused(r),
        };
        let Some(_busy) = endpoint.begin(&agent) else {
            let why = "another upload from this device is under way".to_owned();
            return refused(upload::Refused(429, why, Some(1)));
        };
        let read = axum::body::to_bytes(body, upload::MAX_BODY);
        let bytes = match tokio::time::timeout(BODY_DEADLINE, read).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                let why = format!("an upload of at most {} bytes: {e}", upload::MAX_BODY);
                return refused(upload::Refused(413, why, None));
            }
            Err(_) => {
                let why = format!("the upload did not arrive within {}s", BODY_DEADLINE.as_secs());
                return refused(upload::Refused(408, why, None));
            }
        };
        let upload: upload::Upload = match serde_json::from_slice(&bytes) {
            Ok(u) => u,
            Err(e) => {
                shared.metrics.refused(crate::metrics::Refusal::malformed);
                let why = format!("not an upload this collector understands: {e}");
                let code = if e.to_string().contains(upload::TOO_MANY) { 413 } else { 400 };
                return refused(upload::Refused(code, truncate(&why), None));
            }
        };
        match upload::take(shared, agent, group, upload).await {
            Ok(reply) => axum::Json(reply).into_response(),
            Err(r) => refused(r),
        }
    }
    .instrument(span)
    .await
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
