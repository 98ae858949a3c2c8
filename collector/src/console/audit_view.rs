//! The access audit trail, for the DSL, leadership and governors: who looked at what, when,
//! from where and why; and the chain check.

use super::layout::{page, when};
use super::{Audit, Console, ConsoleError, Staff};
use crate::audit::{self, Entry, Filter, Verdict};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/audit", get(page_view))
        .route("/api/audit", get(api))
        .route("/api/audit/verify", get(verify))
}

#[derive(Debug, Default, Deserialize)]
struct Params {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    object: Option<String>,
    #[serde(default)]
    before: Option<i64>,
}

async fn fetch(c: &Arc<Console>, staff: &Staff, p: Params) -> Result<Vec<Entry>, ConsoleError> {
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let f = Filter {
        actor: nonempty(p.actor),
        action_prefix: nonempty(p.action),
        object: nonempty(p.object),
        before_id: p.before,
        limit: 200,
    };
    // Reading the trail is itself recorded: who watches the watchers is on the record too.
    c.audited(staff, Audit::new("audit.list", "audit"), move |conn| {
        Ok(audit::list(conn, &f)?)
    })
    .await
}

async fn api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Query(p): Query<Params>,
) -> Result<Json<Vec<Entry>>, ConsoleError> {
    fetch(&c, &staff, p).await.map(Json)
}

async fn verify(
    State(c): State<Arc<Console>>,
    Extension(_staff): Extension<Staff>,
) -> Result<Json<serde_json::Value>, ConsoleError> {
    let v = c.db(|conn| Ok(audit::verify(conn)?)).await?;
    Ok(Json(match v {
        Verdict::Intact { entries } => serde_json::json!({"intact": true, "entries": entries}),
        Verdict::Broken { id, reason } => {
            serde_json::json!({"intact": false, "first_bad_entry": id, "reason": reason})
        }
    }))
}

async fn page_view(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Query(p): Query<Params>,
) -> Result<Markup, ConsoleError> {
    let entries = fetch(&c, &staff, p).await?;
    let verdict = c.db(|conn| Ok(audit::verify(conn)?)).await?;
    let older = entries
        .last()
        .map(|e| e.id)
        .filter(|_| entries.len() == 200);
    Ok(page(
        Some(&staff),
        "Access audit trail",
        html! {
            @match &verdict {
                Verdict::Intact { entries } => p.notice #chain { "Chain intact: " (entries) " entries verified." },
                Verdict::Broken { id, reason } => p.warning #chain { "Chain broken at entry " (id) ": " (reason) },
            }
            form.filters method="get" action="/audit" {
                label { "Who" input name="actor"; }
                label { "Action (prefix)" input name="action" placeholder="alert."; }
                label { "Object" input name="object" placeholder="alert:42"; }
                button type="submit" { "Filter" }
            }
            table #audit {
                thead { tr { th { "#" } th { "When" } th { "Who" } th { "Role" } th { "Action" }
                             th { "Object" } th { "Purpose" } th { "From" } th { "Detail" } } }
                tbody { @for e in &entries { tr {
                    td { (e.id) } td { (when(&e.at)) } td { (e.actor) } td { (e.role) } td { (e.action) }
                    td { (e.object) } td { (e.purpose) } td { (e.source) } td { (e.detail) }
                } } }
            }
            @if let Some(id) = older { div.pager { a href={"/audit?before=" (id)} { "Older entries →" } } }
        },
    ))
}
