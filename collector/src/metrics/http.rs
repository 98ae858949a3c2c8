//! `/metrics` over HTTP, and the console's request figures.
//!
//! Scraping needs no staff log-in (Prometheus has none to give). Two ways in, both set in
//! `[metrics]`: a listener of its own, which asks nothing (bind it to loopback or the
//! management network), and `/metrics` on the console's listener, which asks for the bearer
//! token in `token_file`. With neither, the collector serves no metrics.

use super::{Live, Metrics};
use crate::admission::Admission;
use crate::committer::Committer;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;

/// What a scrape reads: the figures, and the services the live ones come from.
pub struct Scrape {
    pub metrics: Arc<Metrics>,
    pub admission: Arc<Admission>,
    pub committer: Committer,
    pub data_dir: PathBuf,
}

impl Scrape {
    fn live(&self) -> Live {
        let lists = invigilator_lists::store::lists_dir(&self.data_dir);
        let now = std::time::SystemTime::now();
        let lists_age = [
            invigilator_lists::ListClass::Ordinary,
            invigilator_lists::ListClass::Illegal,
        ]
        .into_iter()
        .filter_map(|class| {
            let modified = std::fs::metadata(lists.join(class.file_name()))
                .and_then(|m| m.modified())
                .ok()?;
            let age = now.duration_since(modified).unwrap_or_default();
            Some((class.as_str(), age.as_secs_f64()))
        })
        .collect();
        Live {
            connected_agents: self.admission.live_streams(),
            committer_queue: self.committer.queued(),
            pending_bytes: self.admission.pending_bytes(),
            lists_age,
        }
    }
}

/// The scrape token, read from its file; refused if it is too short to resist guessing.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl Token {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("cannot read the metrics token {}: {e}", path.display())
        })?;
        let token = text.trim();
        if token.len() < 32 {
            anyhow::bail!(
                "the metrics token in {} is {} characters; it must be at least 32",
                path.display(),
                token.len()
            );
        }
        Ok(Self(Sha256::digest(token.as_bytes()).into()))
    }

    /// Compared as digests in constant time, so neither the length nor a prefix leaks.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        digest.ct_eq(&self.0).into()
    }
}

/// `/metrics`, asking for `token` when there is one.
pub fn routes(scrape: Arc<Scrape>, token: Option<Token>) -> Router {
    Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let (scrape, token) = (Arc::clone(&scrape), token.clone());
            async move {
                if token.as_ref().is_some_and(|t| !t.admits(&headers)) {
                    return (
                        StatusCode::UNAUTHORIZED,
                        [(header::WWW_AUTHENTICATE, "Bearer")],
                        "metrics need the scrape token ([metrics] token_file)\n",
                    )
                        .into_response();
                }
                let text = scrape.metrics.render(&scrape.live());
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
                    .into_response()
            }
        }),
    )
}

/// Counts and times each console request under its route's template. Added as a route layer,
/// so only matched routes are counted: a scanner's made-up paths cannot add labels.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    metrics.request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
