//! Agents' health: last seen, version, spool depth, dropped events, silent agents.

use super::layout::{page, when};
use super::{Audit, Console, ConsoleError, Staff};
use crate::store::{self, AgentRow};
use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Json, Router};
use maud::{Markup, html};
use std::sync::Arc;

pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/agents", get(page_view))
        .route("/api/agents", get(api))
}

async fn fetch(c: &Arc<Console>, staff: &Staff) -> Result<Vec<AgentRow>, ConsoleError> {
    c.audited(staff, Audit::new("agent.list", "agents"), |conn| {
        Ok(store::agents::list(conn)?)
    })
    .await
}

async fn api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
) -> Result<Json<Vec<AgentRow>>, ConsoleError> {
    fetch(&c, &staff).await.map(Json)
}

async fn page_view(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
) -> Result<Markup, ConsoleError> {
    let agents = fetch(&c, &staff).await?;
    let silent = agents.iter().filter(|a| a.silent && !a.revoked).count();
    let dropped: u64 = agents.iter().map(|a| a.dropped_total).sum();
    Ok(page(
        Some(&staff),
        "Agents",
        html! {
            p {
                (agents.len()) " enrolled · "
                span #silent-count { (silent) } " silent · "
                (dropped) " events dropped by full spools in total"
            }
            table #agents {
                thead { tr {
                    th { "Device" } th { "Group" } th { "OS" } th { "Version" } th { "Last seen" }
                    th { "Spool depth" } th { "Dropped" } th { "Process source" } th { "State" }
                } }
                tbody { @for a in &agents { tr {
                    td { (a.hostname) } td { (a.group) } td { (a.os) } td { (a.agent_version) }
                    td { (a.last_seen.as_deref().map(when).unwrap_or_else(|| "never".into())) }
                    td { (a.spool_depth) } td { (a.dropped_total) } td title=(a.process_fallback) { (a.process_source) @if !a.process_fallback.is_empty() { " (fallback)" } }
                    td {
                        @if a.revoked { "revoked" }
                        @else if a.silent { strong.error { "silent" } }
                        @else { "reporting" }
                    }
                } } }
            }
        },
    ))
}
