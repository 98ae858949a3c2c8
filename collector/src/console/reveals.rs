//! The two-person rule in the console: the safeguarding lead asks to see a pupil's full
//! addresses and searches behind one alert, another senior member of staff decides, and the
//! alert page shows the full content to the requester while the approval lasts.

use super::alert_detail::Detail;
use super::layout::{csrf_field, page, when};
use super::privacy;
use super::routes;
use super::{Audit, Console, ConsoleError, Staff};
use crate::store::accounts::Role;
use crate::store::reveals::{self, Request, RevealError};
use crate::store::{Audited, now_us, triage};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/alerts/{id}/reveal", post(request_form))
        .route("/api/alerts/{id}/reveal", post(request_api))
        .route("/reveals", get(list_page))
        .route("/api/reveals", get(list_api))
        .route("/reveals/{id}/decide", post(decide_form))
        .route("/api/reveals/{id}/decide", post(decide_api))
}

/// Decided requests stay on the list this long, so a decision can be checked.
const RECENT: Duration = Duration::from_secs(14 * 24 * 3600);

impl From<RevealError> for ConsoleError {
    fn from(e: RevealError) -> Self {
        match e {
            RevealError::Sql(e) => crate::store::StoreError::from(e).into(),
            RevealError::NoSuchAlert(id) => ConsoleError::NotFound(format!("alert {id}")),
            RevealError::NoSuchRequest(id) => {
                ConsoleError::NotFound(format!("reveal request {id}"))
            }
            RevealError::Illegal(_)
            | RevealError::OwnRequest(_)
            | RevealError::ApproverNewer { .. }
            | RevealError::NoSuchApprover(_)
            | RevealError::NotAnApprover(_)
            | RevealError::MadeByRequester { .. } => ConsoleError::Forbidden(e.to_string()),
            RevealError::Decided { .. } | RevealError::Outstanding(_) => {
                ConsoleError::Conflict(e.to_string())
            }
            RevealError::NoReason => ConsoleError::BadRequest(e.to_string()),
        }
    }
}

/// What [`super::alert_detail::detail`] asks: the reason of this member of staff's live approval
/// for the alert, if they hold one.
pub fn grant_of(
    staff: &Staff,
    alert_id: i64,
) -> impl FnOnce(&Audited<'_>) -> Result<Option<String>, ConsoleError> + Send + 'static {
    let user = staff.username.clone();
    move |conn| Ok(reveals::grant(conn, alert_id, &user, now_us())?.map(|r| r.reason))
}

#[derive(Debug, Deserialize)]
pub struct RequestInput {
    #[serde(default)]
    pub reason: String,
}

pub(super) async fn request(
    c: &Arc<Console>,
    staff: &Staff,
    alert_id: i64,
    reason: String,
) -> Result<i64, ConsoleError> {
    let policy = c.policy.load_full();
    let role = staff.role;
    let user = staff.username.clone();
    c.audited_as(staff, move |conn| {
        let a = triage::get(conn, alert_id)?
            .ok_or_else(|| ConsoleError::NotFound(format!("alert {alert_id}")))?;
        if privacy::is_illegal(&a) {
            return Err(RevealError::Illegal(alert_id).into());
        }
        if !privacy::for_alert(&policy, role, &a, false).revealable {
            return Err(ConsoleError::BadRequest(format!(
                "alert {alert_id} has nothing withheld to reveal: the two-person rule covers a \
                 pupil's serious or keyword alerts"
            )));
        }
        let id = reveals::request(conn, alert_id, &user, &reason)?;
        let entry = Audit::new("reveal.request", format!("alert:{alert_id}"))
            .purpose(reason.trim())
            .detail(format!("reveal:{id}"));
        Ok((id, entry))
    })
    .await
}

async fn request_form(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
    Form(input): Form<RequestInput>,
) -> Result<Response, ConsoleError> {
    request(&c, &staff, id, input.reason).await?;
    Ok(Redirect::to(&format!("/alerts/{id}")).into_response())
}

async fn request_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
    Json(input): Json<RequestInput>,
) -> Result<Json<serde_json::Value>, ConsoleError> {
    let rid = request(&c, &staff, id, input.reason).await?;
    Ok(Json(serde_json::json!({ "id": rid, "status": "waiting" })))
}

pub(super) async fn decide(
    c: &Arc<Console>,
    staff: &Staff,
    id: i64,
    approve: bool,
) -> Result<Request, ConsoleError> {
    let user = staff.username.clone();
    let lasts = c.config.reveal_for;
    let approvers = c.config.reveal_approvers.clone();
    c.audited_as(staff, move |conn| {
        let r = reveals::decide(conn, id, &user, approve, lasts, &approvers)?;
        let action = if approve {
            "reveal.approve"
        } else {
            "reveal.refuse"
        };
        let entry = Audit::new(action, format!("alert:{}", r.alert_id))
            .purpose(r.reason.clone())
            .detail(format!("reveal:{id} requested by {}", r.requested_by));
        Ok((r, entry))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct DecideForm {
    approve: String,
}

async fn decide_form(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
    Form(input): Form<DecideForm>,
) -> Result<Response, ConsoleError> {
    let approve = match input.approve.as_str() {
        "true" => true,
        "false" => false,
        other => {
            return Err(ConsoleError::BadRequest(format!(
                "approve {other:?} is not true or false"
            )));
        }
    };
    decide(&c, &staff, id, approve).await?;
    Ok(Redirect::to("/reveals").into_response())
}

#[derive(Debug, Deserialize)]
struct DecideInput {
    approve: bool,
}

async fn decide_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
    Json(input): Json<DecideInput>,
) -> Result<Json<Request>, ConsoleError> {
    decide(&c, &staff, id, input.approve).await.map(Json)
}

/// A request with what an approver needs to weigh it (not the content itself).
#[derive(Debug, Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub request: Request,
    pub alert_severity: String,
    pub alert_category: String,
    pub alert_rule: String,
}

async fn fetch(c: &Arc<Console>, staff: &Staff) -> Result<Vec<Listed>, ConsoleError> {
    c.audited(staff, Audit::new("reveal.list", "reveals"), |conn| {
        let mut out = Vec::new();
        for request in reveals::list(conn, now_us(), RECENT)? {
            let a = triage::get(conn, request.alert_id)?;
            let field = |f: fn(&triage::Listed) -> &String| a.as_ref().map(f).cloned();
            out.push(Listed {
                alert_severity: a
                    .as_ref()
                    .map(|a| a.severity.to_string())
                    .unwrap_or_default(),
                alert_category: field(|a| &a.category).unwrap_or_default(),
                alert_rule: field(|a| &a.rule).unwrap_or_default(),
                request,
            });
        }
        Ok(out)
    })
    .await
}

async fn list_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
) -> Result<Json<Vec<Listed>>, ConsoleError> {
    fetch(&c, &staff).await.map(Json)
}

async fn list_page(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
) -> Result<Markup, ConsoleError> {
    let rows = fetch(&c, &staff).await?;
    let opens_alerts = routes::find("GET", "/alerts/{id}")
        .is_some_and(|r| r.access.allows(staff.role, staff.is_admin));
    Ok(page(
        Some(&staff),
        "Reveal requests",
        html! {
            p { "The safeguarding lead may see a pupil's full addresses and searches behind a "
                "serious or keyword alert only once another senior member of staff approves. "
                "An approval lasts " (humantime::format_duration(c.config.reveal_for)) "." }
            @if rows.is_empty() { p { "No requests." } }
            @else {
                table #reveals {
                    thead { tr { th { "Request" } th { "Alert" } th { "Asked by" } th { "When" }
                        th { "Reason" } th { "Decision" } } }
                    tbody { @for l in &rows {
                        @let r = &l.request;
                        tr {
                            td { "#" (r.id) }
                            td {
                                @if opens_alerts { a href={"/alerts/" (r.alert_id)} { "#" (r.alert_id) } }
                                @else { "#" (r.alert_id) }
                                " · " (l.alert_severity) " · " (l.alert_category)
                            }
                            td { (r.requested_by) }
                            td { (when(&r.requested_at)) }
                            td { (r.reason) }
                            td { (decision_cell(&staff, r)) }
                        }
                    } }
                }
            }
        },
    ))
}

fn decision_cell(staff: &Staff, r: &Request) -> Markup {
    html! {
        @match r.decision.as_deref() {
            Some(d) => {
                (d) " by " (r.decided_by.as_deref().unwrap_or("")) " " (r.decided_at.as_deref().map(when).unwrap_or_default())
                @if let Some(e) = &r.expires_at { " · until " (when(e)) }
            }
            None if r.requested_by.eq_ignore_ascii_case(&staff.username) => {
                "waiting for another senior member of staff"
            }
            None => {
                form.inline method="post" action={"/reveals/" (r.id) "/decide"} {
                    (csrf_field(staff))
                    button type="submit" name="approve" value="true" { "Approve" }
                    " "
                    button type="submit" name="approve" value="false" { "Refuse" }
                }
            }
        }
    }
}

/// The reveal state on an alert's page, for the safeguarding lead. Their own request is not
/// monitored data (its reason is theirs), so reading it is not a separate audit entry.
pub async fn alert_panel(
    c: &Arc<Console>,
    staff: &Staff,
    d: &Detail,
) -> Result<Markup, ConsoleError> {
    if staff.role != Role::Dsl || privacy::is_illegal(&d.alert) {
        return Ok(html! {});
    }
    let (id, user) = (d.alert.id, staff.username.clone());
    let latest = c.admin(move |a| Ok(reveals::latest(a, id, &user)?)).await?;
    let now = now_us();
    Ok(html! {
        section #reveal {
            @match &latest {
                Some(r) if r.live(now) => p.revealed {
                    "Full addresses and searches revealed until "
                    (r.expires_at.as_deref().map(when).unwrap_or_default())
                    " (approved by " (r.decided_by.as_deref().unwrap_or("")) "; reason: " (r.reason) ")."
                },
                Some(r) if r.waiting() => p.waiting {
                    "Reveal requested: waiting for approval by another senior member of staff."
                },
                _ if d.revealable => {
                    @if let Some(r) = latest.as_ref().filter(|r| r.decision.as_deref() == Some("refused")) {
                        p { "Your last request was refused by " (r.decided_by.as_deref().unwrap_or("")) "." }
                    }
                    form.stack method="post" action={"/alerts/" (id) "/reveal"} {
                        (csrf_field(staff))
                        label { "Reason for seeing the full addresses and searches (shown to the approver, kept in the audit trail)"
                            textarea name="reason" rows="2" required {} }
                        button type="submit" { "Ask another senior member of staff to approve" }
                    }
                },
                _ => {},
            }
        }
    })
}
