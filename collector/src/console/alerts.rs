//! Alerts: the filtered list with live updates, the detail view that explains why an alert
//! fired, and the triage workflow. Each page has its JSON twin under `/api`.

use super::alert_detail::{Detail, detail};
use super::input::parse_when;
use super::layout::{csrf_field, page, when};
use super::privacy;
use super::{Audit, Console, ConsoleError, Staff};
use crate::store::EventRow;
use crate::store::accounts::{self, Role};
use crate::store::triage::{self, Change, Listed, Query as AlertQuery, STATUSES};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::Stream;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/alerts", get(list_page))
        .route("/api/alerts", get(list_api))
        .route("/api/alerts/stream", get(stream))
        .route("/alerts/bulk", post(bulk_form))
        .route("/api/alerts/bulk", post(bulk_api))
        .route("/alerts/{id}", get(detail_page))
        .route("/api/alerts/{id}", get(detail_api))
        .route("/alerts/{id}/triage", post(triage_form))
        .route("/api/alerts/{id}/triage", post(triage_api))
}

pub const PAGE_SIZE: u32 = 50;

/// The list's filters, as query parameters (the same for the page and the API).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Filters {
    #[serde(default, skip_serializing_if = "blank")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "blank")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "blank")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "blank")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "blank")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "blank")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "blank")]
    pub assigned: Option<String>,
    /// A date (2026-11-20, the school's time zone), a local time (2026-11-20T09:00) or RFC 3339.
    #[serde(default, skip_serializing_if = "blank")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "blank")]
    pub to: Option<String>,
    #[serde(default, skip_serializing)]
    pub before: Option<i64>,
    #[serde(default, skip_serializing)]
    pub after: Option<i64>,
    #[serde(default, skip_serializing)]
    pub limit: Option<u32>,
}

fn blank(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(str::is_empty)
}

impl Filters {
    fn query(&self) -> Result<AlertQuery, ConsoleError> {
        let opt = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        if let Some(s) = opt(&self.status).filter(|s| !STATUSES.contains(&s.as_str())) {
            return Err(ConsoleError::BadRequest(format!(
                "status {s:?} is not one of {}",
                STATUSES.join(", ")
            )));
        }
        Ok(AlertQuery {
            severity: opt(&self.severity),
            category: opt(&self.category),
            group: opt(&self.group),
            hostname: opt(&self.device),
            user: opt(&self.user),
            status: opt(&self.status),
            assigned_to: opt(&self.assigned),
            from_us: opt(&self.from)
                .map(|s| parse_when("from", &s))
                .transpose()?,
            to_us: opt(&self.to).map(|s| parse_when("to", &s)).transpose()?,
            before_id: self.before,
            after_id: self.after,
            limit: self.limit.unwrap_or(PAGE_SIZE).clamp(1, 500),
        })
    }

    /// The filters as a query string (for the audit trail, pager links and the live stream).
    pub fn encoded(&self) -> String {
        serde_urlencoded_like(self)
    }
}

fn serde_urlencoded_like(f: &Filters) -> String {
    let value = serde_json::to_value(f).unwrap_or_default();
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    if let Some(map) = value.as_object() {
        for (k, v) in map {
            if let Some(s) = v.as_str() {
                out.append_pair(k, s);
            }
        }
    }
    out.finish()
}

/// A page of alerts as this member of staff may see them.
async fn fetch(
    c: &Arc<Console>,
    staff: &Staff,
    filters: &Filters,
) -> Result<Vec<Listed>, ConsoleError> {
    let q = filters.query()?;
    let policy = c.policy.load_full();
    let role = staff.role;
    let object = format!("alerts?{}", filters.encoded());
    c.audited(staff, Audit::new("alert.list", object), move |conn| {
        let rows = triage::search(conn, &q)?;
        Ok(as_seen_by(&policy, role, rows))
    })
    .await
}

/// Alerts as a role may see them in a list.
fn as_seen_by(policy: &invigilator_policy::Policy, role: Role, rows: Vec<Listed>) -> Vec<Listed> {
    rows.into_iter()
        .map(|a| {
            let v = privacy::for_alert(policy, role, &a, false);
            privacy::alert(a, v)
        })
        .collect()
}

/// Like [`fetch`], but an empty poll is not worth an audit entry: only alerts actually sent are.
async fn fetch_live(
    c: &Arc<Console>,
    staff: &Staff,
    filters: &Filters,
) -> Result<Vec<Listed>, ConsoleError> {
    let q = filters.query()?;
    let policy = c.policy.load_full();
    let role = staff.role;
    // Nothing new is the usual answer to a poll: that read is rolled back with its entry, so
    // the trail records what was seen, not every second a stream was open.
    let seen = c
        .audited_if(staff, move |tx| {
            let rows = triage::search(tx, &q)?;
            if rows.is_empty() {
                return Ok(None);
            }
            let object = rows
                .iter()
                .map(|a| format!("alert:{}", a.id))
                .collect::<Vec<_>>()
                .join(",");
            Ok(Some((rows, Audit::new("alert.stream", object))))
        })
        .await?;
    Ok(as_seen_by(&policy, role, seen.unwrap_or_default()))
}

async fn list_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Query(filters): Query<Filters>,
) -> Result<Json<Vec<Listed>>, ConsoleError> {
    fetch(&c, &staff, &filters).await.map(Json)
}

async fn list_page(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Query(filters): Query<Filters>,
) -> Result<Markup, ConsoleError> {
    let rows = fetch(&c, &staff, &filters).await?;
    let (categories, groups) = c
        .admin(|a| {
            Ok((
                triage::distinct(a, "category")?,
                triage::distinct(a, "group")?,
            ))
        })
        .await?;
    let newest = if filters.before.is_none() {
        rows.first().map(|a| a.id).unwrap_or(0)
    } else {
        -1
    };
    let older = (rows.len() as u32 == filters.limit.unwrap_or(PAGE_SIZE))
        .then(|| rows.last().map(|a| a.id))
        .flatten();
    let encoded = filters.encoded();
    let select = |name: &str, options: &[String], current: &Option<String>| {
        html! {
            select name=(name) {
                option value="" { "any" }
                @for o in options {
                    option value=(o) selected[current.as_deref() == Some(o.as_str())] { (o) }
                }
            }
        }
    };
    let severities: Vec<String> = ["informational", "inappropriate", "serious", "illegal"]
        .map(String::from)
        .to_vec();
    let statuses: Vec<String> = STATUSES.iter().map(|s| s.to_string()).collect();
    Ok(page(
        Some(&staff),
        "Alerts",
        html! {
            form.filters method="get" action="/alerts" {
                label { "Severity" (select("severity", &severities, &filters.severity)) }
                label { "Category" (select("category", &categories, &filters.category)) }
                label { "Device group" (select("group", &groups, &filters.group)) }
                label { "Device" input name="device" value=[filters.device.as_deref()]; }
                label { "User" input name="user" value=[filters.user.as_deref()]; }
                label { "Status" (select("status", &statuses, &filters.status)) }
                label { "From" input name="from" placeholder="2026-11-20" value=[filters.from.as_deref()]; }
                label { "To" input name="to" placeholder="2026-11-27" value=[filters.to.as_deref()]; }
                button type="submit" { "Filter" }
            }
            p { span #live-count {} }
            form method="post" action="/alerts/bulk" {
                (csrf_field(&staff))
                table #alerts {
                    thead { tr {
                        th { "" } th { "Alert" } th { "Observed" } th { "Severity" } th { "Category" }
                        th { "Summary" } th { "User" } th { "Device" } th { "Group" } th { "Count" } th { "Status" }
                    } }
                    tbody #alerts-body data-after=(newest) data-filters=(if encoded.is_empty() { String::new() } else { format!("&{encoded}") }) {
                        @for a in &rows {
                            tr data-id=(a.id) {
                                td { input type="checkbox" name="ids" value=(a.id) aria-label={"select alert " (a.id)}; }
                                td { a href={"/alerts/" (a.id)} { "#" (a.id) } }
                                td { (when(&a.observed_at)) }
                                td.sev.{"sev-" (a.severity)} { (a.severity) }
                                td { (a.category) }
                                td { (a.summary) }
                                td { (a.user) }
                                td { (a.hostname) }
                                td { (a.group) }
                                td { (a.count) }
                                td { (a.status) }
                            }
                        }
                    }
                }
                @if rows.is_empty() { p { "No alerts match." } }
                div.pager {
                    @if let Some(id) = older {
                        a href={"/alerts?" (encoded) (if encoded.is_empty() { "" } else { "&" }) "before=" (id)} { "Older alerts →" }
                    }
                }
                fieldset.no-print {
                    legend { "Selected alerts" }
                    label { "Set status " select name="status" {
                        @for s in STATUSES.iter().skip(1) { option value=(s) { (s) } }
                    } }
                    " "
                    label { "Note " input name="note"; }
                    " "
                    button type="submit" { "Apply to selected" }
                }
            }
        },
    ))
}

#[derive(Deserialize)]
struct StreamParams {
    #[serde(default)]
    after: i64,
    #[serde(flatten)]
    filters: Filters,
}

/// New alerts as server-sent events. The database is the source, so alerts raised by any
/// process or collector are seen: the store wakes the stream when alerts are committed (see
/// `store::wakeups`), and each batch sent is audited like a page of the list.
async fn stream(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    headers: axum::http::HeaderMap,
    Query(p): Query<StreamParams>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, std::convert::Infallible>>>, ConsoleError> {
    let mut filters = p.filters;
    filters.before = None;
    filters.query()?;
    let mut after = p.after.max(0);
    let token = super::auth::session_token(&headers).ok_or(ConsoleError::Unauthenticated)?;
    let idle = c.config.idle_timeout;
    let mut wake = c.alert_wakeups();
    let stream = async_stream(move |tx| async move {
        loop {
            wake.next().await;
            if tx.is_closed() {
                return;
            }
            // The stream outlives the request that opened it: it ends with the session (log-out,
            // expiry, a disabled account) or when the role changes.
            let t = token.clone();
            let role = c
                .admin(move |a| Ok(accounts::live_role(a, &t, idle)?))
                .await;
            if !matches!(role, Ok(Some(r)) if r == staff.role) {
                return;
            }
            let f = Filters {
                after: Some(after),
                limit: Some(100),
                ..filters.clone()
            };
            let Ok(rows) = fetch_live(&c, &staff, &f).await else {
                continue;
            };
            for a in rows {
                after = after.max(a.id);
                let data = serde_json::to_string(&a).unwrap_or_default();
                if tx
                    .send(
                        SseEvent::default()
                            .event("alert")
                            .id(a.id.to_string())
                            .data(data),
                    )
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A stream fed by a task; the task ends when the client goes away.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<SseEvent, std::convert::Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures_util::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

async fn detail_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
) -> Result<Json<Detail>, ConsoleError> {
    let (d, _) = detail(&c, &staff, id, super::reveals::grant_of(&staff, id)).await?;
    Ok(Json(d))
}

async fn detail_page(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
) -> Result<Markup, ConsoleError> {
    let (d, _) = detail(&c, &staff, id, super::reveals::grant_of(&staff, id)).await?;
    let reveal = super::reveals::alert_panel(&c, &staff, &d).await?;
    let incidents = super::incidents::alert_panel(&c, &staff, id).await?;
    Ok(page(
        Some(&staff),
        &format!("Alert #{id}"),
        detail_markup(&staff, &d, html! { (reveal) (incidents) }),
    ))
}

/// The detail view; `extra` is what other modules add (reveal requests, incidents).
pub fn detail_markup(staff: &Staff, d: &Detail, extra: Markup) -> Markup {
    let a = &d.alert;
    html! {
        @if privacy::is_illegal(a) {
            div.warning {
                strong { "Illegal content. " }
                "Do not investigate and do not look for the content. Refer to the safeguarding lead "
                "and the police. The address is kept only as a hash."
            }
        }
        dl.facts {
            dt { "Summary" } dd #summary { (a.summary) }
            dt { "Severity" } dd.sev.{"sev-" (a.severity)} { (a.severity) }
            dt { "Category" } dd { (a.category) }
            dt { "Rule" } dd #rule { (a.rule) }
            dt { "What matched" } dd #matched { (a.matched) }
            dt { "Policy version" } dd { (a.policy_version) }
            dt { "Recommended response" } dd { (a.response) }
            dt { "User" } dd #user { (a.user) (if d.is_child { " (pupil)" } else { "" }) }
            dt { "Device" } dd { (a.hostname) " · group " (a.group) }
            dt { "Observed" } dd { (when(&a.observed_at)) @if a.count > 1 { " · " (a.count) " times, last " (when(&a.last_observed_at)) } }
            dt { "Status" } dd #status { (a.status) @if let Some(who) = &a.assigned_to { " · assigned to " (who) } }
        }
        (extra)
        h2 { "Triage" }
        form.stack method="post" action={"/alerts/" (a.id) "/triage"} {
            (csrf_field(staff))
            label { "Status" select name="status" {
                @for s in STATUSES.iter().filter(|s| triage::transition_allowed(&a.status, s)) {
                    option value=(s) selected[*s == a.status] { (s) }
                }
            } }
            label { "Assign to (user name; empty keeps it)" input name="assign_to"; }
            label { "Note" textarea name="note" rows="2" {} }
            button type="submit" { "Save" }
        }
        @if !d.history.is_empty() {
            h2 { "History" }
            table { thead { tr { th { "When" } th { "Who" } th { "Status" } th { "Assigned" } th { "Note" } } }
                tbody { @for n in &d.history { tr {
                    td { (when(&n.at)) } td { (n.author) } td { (n.status_from) " → " (n.status_to) }
                    td { (n.assigned_to.as_deref().unwrap_or("")) } td { (n.note) }
                } } }
            }
        }
        h2 { "Events around it" }
        @match d.content {
            "none" => p { "No events are shown for this alert." },
            "host-only" => p.masked { "Addresses are shown as their site only; titles and searches are hidden." },
            _ => {},
        }
        @if !d.events.is_empty() {
            table #events { thead { tr { th { "Seq" } th { "Observed" } th { "Kind" } th { "User" } th { "Details" } } }
                tbody { @for e in &d.events {
                    tr.{(if Some(e.seq) == a.event_seq { "fresh" } else { "" })} {
                        td { (e.seq) } td { (when(&e.observed_at)) } td { (e.kind) } td { (e.user) }
                        td { (event_details(e)) }
                    }
                } }
            }
        }
    }
}

/// An event's own fields, as text.
fn event_details(e: &EventRow) -> Markup {
    html! {
        @for (k, v) in &e.details {
            @let text = match v {
                serde_json::Value::String(s) if s.is_empty() => continue,
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(a) if a.is_empty() => continue,
                other => other.to_string(),
            };
            span.field { strong { (k) ": " } (text) } " "
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct TriageInput {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub assign_to: Option<String>,
    #[serde(default)]
    pub note: String,
}

async fn apply(
    c: &Arc<Console>,
    staff: &Staff,
    ids: Vec<i64>,
    input: TriageInput,
) -> Result<Vec<i64>, ConsoleError> {
    if ids.is_empty() {
        return Err(ConsoleError::BadRequest("no alerts selected".into()));
    }
    if ids.len() > 1000 {
        return Err(ConsoleError::BadRequest(
            "at most 1000 alerts at once".into(),
        ));
    }
    let change = Change {
        status: input.status.filter(|s| !s.is_empty()),
        // An empty form field means "leave as it is"; the API unassigns with "".
        assign_to: input.assign_to,
        note: input.note,
    };
    let author = staff.username.clone();
    let object = ids
        .iter()
        .map(|i| format!("alert:{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let detail_status = change.status.clone().unwrap_or_default();
    let entry = Audit::new("alert.triage", object).detail(detail_status);
    let policy = c.policy.load_full();
    let role = staff.role;
    c.audited(staff, entry, move |conn| {
        for &id in &ids {
            if role != Role::Dsl
                && let Some(a) = triage::get(conn, id)?
            {
                check_may_close(&policy, &a, change.status.as_deref())?;
            }
            if let Err(e) = triage::apply(conn, id, &author, &change)? {
                return Err(match e {
                    triage::TriageError::NoSuchAlert(_) => ConsoleError::NotFound(e.to_string()),
                    _ => ConsoleError::BadRequest(e.to_string()),
                });
            }
        }
        Ok(ids)
    })
    .await
}

/// A pupil's serious or safeguarding alert, or an illegal-class one, is the safeguarding
/// lead's to close: others can triage and escalate it, but not resolve it, call it a false
/// positive, or take it back out of the DSL's hands once escalated.
fn check_may_close(
    policy: &invigilator_policy::Policy,
    a: &Listed,
    to: Option<&str>,
) -> Result<(), ConsoleError> {
    let guarded =
        privacy::is_illegal(a) || privacy::for_alert(policy, Role::Dsl, a, false).revealable;
    let Some(to) = to.filter(|to| *to != a.status) else {
        return Ok(());
    };
    if guarded && (matches!(to, "resolved" | "false_positive") || a.status == "escalated") {
        return Err(ConsoleError::Forbidden(format!(
            "alert {} is a safeguarding alert about a pupil (or illegal content): only the \
             safeguarding lead can move it from {} to {to}",
            a.id, a.status
        )));
    }
    Ok(())
}

async fn triage_form(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let mut input = form_input(&body);
    if input.assign_to.as_deref() == Some("") {
        input.assign_to = None;
    }
    apply(&c, &staff, vec![id], input).await?;
    Ok(Redirect::to(&format!("/alerts/{id}")).into_response())
}

async fn triage_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
    Json(input): Json<TriageInput>,
) -> Result<Json<serde_json::Value>, ConsoleError> {
    apply(&c, &staff, vec![id], input).await?;
    let (d, _) = detail(&c, &staff, id, |_| Ok(None)).await?;
    Ok(Json(serde_json::to_value(d.alert).unwrap_or_default()))
}

/// Forms post `ids` once per ticked box, which serde's form decoding cannot gather.
fn form_input(body: &[u8]) -> TriageInput {
    let mut input = TriageInput {
        status: None,
        assign_to: None,
        note: String::new(),
    };
    for (k, v) in url::form_urlencoded::parse(body) {
        match k.as_ref() {
            "status" => input.status = Some(v.into_owned()),
            "assign_to" => input.assign_to = Some(v.into_owned()),
            "note" => input.note = v.into_owned(),
            _ => {}
        }
    }
    input
}

async fn bulk_form(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let mut ids = Vec::new();
    for (k, v) in url::form_urlencoded::parse(&body) {
        if k == "ids" {
            ids.push(
                v.parse::<i64>()
                    .map_err(|_| ConsoleError::BadRequest(format!("{v:?} is not an alert id")))?,
            );
        }
    }
    let mut input = form_input(&body);
    input.assign_to = None;
    apply(&c, &staff, ids, input).await?;
    Ok(Redirect::to("/alerts").into_response())
}

#[derive(Deserialize)]
struct BulkInput {
    ids: Vec<i64>,
    #[serde(flatten)]
    input: TriageInput,
}

async fn bulk_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Json(b): Json<BulkInput>,
) -> Result<Json<serde_json::Value>, ConsoleError> {
    let ids = apply(&c, &staff, b.ids, b.input).await?;
    Ok(Json(serde_json::json!({ "updated": ids })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_round_trip_through_the_query_string() {
        let f = Filters {
            severity: Some("serious".into()),
            user: Some("a&b".into()),
            before: Some(9),
            ..Default::default()
        };
        let s = f.encoded();
        assert_eq!(s, "severity=serious&user=a%26b");
    }
}
