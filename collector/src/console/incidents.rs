//! The Online Safety incident log: the list, a new incident (often from alerts), one incident
//! with its history, and edits, each of which appends a version. The safeguarding lead writes;
//! leadership reads; governors see a summary without names ([`incidents::Summary`]).

use super::input::parse_when;
use super::layout::{csrf_field, page, when};
use super::routes::{self, Access, INCIDENT_READERS};
use super::{Audit, Console, ConsoleError, Staff};
use crate::store::accounts::Role;
use crate::store::incidents::{
    self, CLASSES, Current, Filter, Incident, IncidentError, IncidentRecord, OTHER, SEVERITIES,
    STATUSES, Summary,
};
use crate::store::{rfc3339, triage};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use invigilator_policy::Policy;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/incidents", get(list_page).post(create_form))
        .route("/api/incidents", get(list_api).post(create_api))
        .route("/incidents/new", get(new_page))
        .route("/incidents/{id}", get(detail_page).post(update_form))
        .route("/api/incidents/{id}", get(detail_api).post(update_api))
}

impl From<IncidentError> for ConsoleError {
    fn from(e: IncidentError) -> Self {
        match e {
            IncidentError::Invalid { .. }
            | IncidentError::Unchanged(_)
            | IncidentError::Triage(..) => ConsoleError::BadRequest(e.to_string()),
            IncidentError::NoSuchIncident(id) => ConsoleError::NotFound(format!("incident {id}")),
            IncidentError::NoSuchAlert(id) => ConsoleError::NotFound(format!("alert {id}")),
            IncidentError::Sql(e) => crate::store::StoreError::from(e).into(),
            IncidentError::Store(e) => e.into(),
            IncidentError::Corrupt(..) => ConsoleError::Internal(e.to_string()),
        }
    }
}

fn reads_in_full(staff: &Staff) -> bool {
    Access::Roles(INCIDENT_READERS).allows(staff.role, false)
}

fn may_open(staff: &Staff, method: &str, path: &str) -> bool {
    routes::find(method, path).is_some_and(|r| r.access.allows(staff.role, staff.is_admin))
}

/// The list's filters (the same for the page and the API).
#[derive(Debug, Default, Deserialize)]
pub struct ListFilters {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    /// On when it happened: a date, a local time or RFC 3339, as on the alerts list.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
}

impl ListFilters {
    fn filter(&self) -> Result<Filter, ConsoleError> {
        let opt = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
        let time = |field, s: &Option<String>| {
            opt(s)
                .map(|s| parse_when(field, &s).map(rfc3339))
                .transpose()
        };
        if let Some(s) = opt(&self.status).filter(|s| !STATUSES.contains(&s.as_str())) {
            return Err(ConsoleError::BadRequest(format!(
                "status {s:?} is not one of {}",
                STATUSES.join(", ")
            )));
        }
        Ok(Filter {
            status: opt(&self.status),
            category: opt(&self.category),
            from: time("from", &self.from)?,
            to: time("to", &self.to)?,
        })
    }
}

/// The list as this role may see it.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Listing {
    Full(Vec<Current>),
    Summaries(Vec<Summary>),
}

pub(super) async fn fetch(
    c: &Arc<Console>,
    staff: &Staff,
    f: &ListFilters,
) -> Result<Listing, ConsoleError> {
    let filter = f.filter()?;
    let full = reads_in_full(staff);
    let object = format!(
        "incidents?status={}&category={}&from={}&to={}",
        filter.status.as_deref().unwrap_or(""),
        filter.category.as_deref().unwrap_or(""),
        filter.from.as_deref().unwrap_or(""),
        filter.to.as_deref().unwrap_or("")
    );
    let action = if full {
        "incident.list"
    } else {
        "incident.list.summary"
    };
    c.audited(staff, Audit::new(action, object), move |conn| {
        let rows = incidents::list(conn, &filter)?;
        Ok(if full {
            Listing::Full(rows)
        } else {
            Listing::Summaries(rows.iter().map(Summary::from).collect())
        })
    })
    .await
}

async fn list_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Query(f): Query<ListFilters>,
) -> Result<Json<Listing>, ConsoleError> {
    fetch(&c, &staff, &f).await.map(Json)
}

async fn list_page(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Query(f): Query<ListFilters>,
) -> Result<Markup, ConsoleError> {
    let listing = fetch(&c, &staff, &f).await?;
    let status_select = html! {
        select name="status" {
            option value="" { "any" }
            @for s in STATUSES { option value=(s) selected[f.status.as_deref() == Some(*s)] { (s) } }
        }
    };
    Ok(page(
        Some(&staff),
        "Incident log",
        html! {
            form.filters method="get" action="/incidents" {
                label { "Status " (status_select) }
                label { "Category " input name="category" value=[f.category.as_deref()]; }
                label { "From " input name="from" placeholder="2026-11-20" value=[f.from.as_deref()]; }
                label { "To " input name="to" placeholder="2026-11-27" value=[f.to.as_deref()]; }
                button type="submit" { "Filter" }
            }
            @if may_open(&staff, "GET", "/incidents/new") {
                p { a href="/incidents/new" { "Record a new incident" } }
            }
            @match &listing {
                Listing::Full(rows) => {
                    table #incidents {
                        thead { tr { th { "Incident" } th { "Occurred" } th { "Subject" } th { "Category" }
                            th { "Severity" } th { "Summary" } th { "Status" } th { "Version" } } }
                        tbody { @for i in rows { tr {
                            td { a href={"/incidents/" (i.id)} { "#" (i.id) } }
                            td { (when(&i.record.occurred_at)) }
                            td { (i.record.subject) " (" (i.record.subject_class) ")" }
                            td { (i.record.category) }
                            td.sev.{"sev-" (i.record.severity)} { (i.record.severity) }
                            td { (i.record.summary) }
                            td { (i.record.status) }
                            td { (i.version) }
                        } } }
                    }
                    @if rows.is_empty() { p { "No incidents match." } }
                }
                Listing::Summaries(rows) => {
                    p { "Summaries for oversight: names and accounts of what happened are not shown." }
                    table #incidents {
                        thead { tr { th { "Incident" } th { "Opened" } th { "Category" } th { "Severity" }
                            th { "Action taken" } th { "Parents informed" } th { "Police referral" } th { "Status" } } }
                        tbody { @for s in rows { tr {
                            td { "#" (s.id) }
                            td { (when(&s.opened_at)) }
                            td { (s.category) }
                            td.sev.{"sev-" (s.severity)} { (s.severity) }
                            td { (s.action_taken.join("; ")) }
                            td { (yes_no(s.parents_informed)) }
                            td { (yes_no(s.police_referral)) }
                            td { (s.status) }
                        } } }
                    }
                    @if rows.is_empty() { p { "No incidents match." } }
                }
            }
        },
    ))
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn class_of(policy: &Policy, a: &triage::Listed) -> &'static str {
    let device = policy.groups.device(&a.group);
    policy.groups.person(&a.user, &device).class.as_str()
}

fn parse_ids(s: &str) -> Result<Vec<i64>, ConsoleError> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| ConsoleError::BadRequest(format!("alerts: {s:?} is not an alert id")))
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct NewParams {
    #[serde(default)]
    alerts: String,
}

async fn new_page(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Query(p): Query<NewParams>,
) -> Result<Markup, ConsoleError> {
    let ids = parse_ids(&p.alerts)?;
    let policy = c.policy.load_full();
    let record = if ids.is_empty() {
        IncidentRecord {
            subject_class: "pupil".into(),
            status: "open".into(),
            ..Default::default()
        }
    } else {
        let object = ids.iter().map(|i| format!("alert:{i}")).collect::<Vec<_>>();
        let entry = Audit::new("incident.prefill", object.join(","));
        let (ids, policy) = (ids.clone(), Arc::clone(&policy));
        c.audited(&staff, entry, move |conn| {
            let mut r = incidents::prefill(conn, &ids)?;
            let mut classes = Vec::new();
            for &id in &ids {
                if let Some(a) = triage::get(conn, id)? {
                    classes.push(class_of(&policy, &a));
                }
            }
            classes.sort_unstable();
            classes.dedup();
            if let [one] = classes[..] {
                r.subject_class = one.into();
            }
            Ok(r)
        })
        .await?
    };
    Ok(page(
        Some(&staff),
        "New incident",
        record_form(&staff, &policy, "/incidents", &record, &ids),
    ))
}

/// The form's fields, as posted. `action` comes once per ticked box, which serde's form
/// decoding cannot gather.
fn form_record(body: &[u8]) -> Result<(IncidentRecord, Vec<i64>), ConsoleError> {
    let mut r = IncidentRecord::default();
    let mut alerts = Vec::new();
    let mut other = String::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        let v = v.into_owned();
        match k.as_ref() {
            "subject" => r.subject = v,
            "subject_class" => r.subject_class = v,
            "summary" => r.summary = v,
            "occurred_at" if !v.trim().is_empty() => {
                r.occurred_at = rfc3339(parse_when("occurred_at", v.trim())?)
            }
            "category" => r.category = v,
            "severity" => r.severity = v,
            "action" => r.action_taken.push(v),
            "action_other" => other = v,
            "parents_informed" => r.parents_informed = true,
            "parents_informed_at" if !v.trim().is_empty() => {
                r.parents_informed_at = Some(rfc3339(parse_when("parents_informed_at", v.trim())?))
            }
            "police_referral" => r.police_referral = true,
            "referred_to" => r.referred_to = Some(v),
            "status" => r.status = v,
            "notes" => r.notes = v,
            "alerts" => alerts = parse_ids(&v)?,
            _ => {}
        }
    }
    if !other.trim().is_empty() {
        r.action_taken.push(format!("{OTHER} {}", other.trim()));
    }
    Ok((r, alerts))
}

pub(super) async fn create(
    c: &Arc<Console>,
    staff: &Staff,
    record: IncidentRecord,
    alerts: Vec<i64>,
) -> Result<i64, ConsoleError> {
    let policy = c.policy.load_full();
    let author = staff.username.clone();
    c.audited_as(staff, move |conn| {
        let actions = incidents::action_options(&policy.responses, &record.subject_class);
        let id = incidents::create(conn, &author, record, &alerts, &actions)?;
        let mut entry = Audit::new("incident.create", format!("incident:{id}"));
        if !alerts.is_empty() {
            let list = alerts
                .iter()
                .map(|a| format!("alert:{a}"))
                .collect::<Vec<_>>();
            entry = entry.detail(format!("from {}", list.join(",")));
        }
        Ok((id, entry))
    })
    .await
}

async fn create_form(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let (record, alerts) = form_record(&body)?;
    let id = create(&c, &staff, record, alerts).await?;
    Ok(Redirect::to(&format!("/incidents/{id}")).into_response())
}

#[derive(Debug, Deserialize)]
pub struct CreateInput {
    pub record: IncidentRecord,
    #[serde(default)]
    pub alerts: Vec<i64>,
}

async fn create_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Json(input): Json<CreateInput>,
) -> Result<Json<Incident>, ConsoleError> {
    let id = create(&c, &staff, input.record, input.alerts).await?;
    fetch_one(&c, &staff, id).await.map(Json)
}

pub(super) async fn update(
    c: &Arc<Console>,
    staff: &Staff,
    id: i64,
    record: IncidentRecord,
) -> Result<u32, ConsoleError> {
    let policy = c.policy.load_full();
    let author = staff.username.clone();
    c.audited_as(staff, move |conn| {
        let actions = incidents::action_options(&policy.responses, &record.subject_class);
        let n = incidents::update(conn, id, &author, record, &actions)?;
        let entry =
            Audit::new("incident.update", format!("incident:{id}")).detail(format!("version {n}"));
        Ok((n, entry))
    })
    .await
}

async fn update_form(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let (record, _) = form_record(&body)?;
    update(&c, &staff, id, record).await?;
    Ok(Redirect::to(&format!("/incidents/{id}")).into_response())
}

async fn update_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
    Json(record): Json<IncidentRecord>,
) -> Result<Json<Incident>, ConsoleError> {
    update(&c, &staff, id, record).await?;
    fetch_one(&c, &staff, id).await.map(Json)
}

async fn fetch_one(c: &Arc<Console>, staff: &Staff, id: i64) -> Result<Incident, ConsoleError> {
    let entry = Audit::new("incident.view", format!("incident:{id}"));
    c.audited(staff, entry, move |conn| {
        incidents::get(conn, id)?.ok_or_else(|| ConsoleError::NotFound(format!("incident {id}")))
    })
    .await
}

async fn detail_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
) -> Result<Json<Incident>, ConsoleError> {
    fetch_one(&c, &staff, id).await.map(Json)
}

async fn detail_page(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
) -> Result<Markup, ConsoleError> {
    let inc = fetch_one(&c, &staff, id).await?;
    let policy = c.policy.load_full();
    let opens_alerts = may_open(&staff, "GET", "/alerts/{id}");
    let cur = &inc.current;
    Ok(page(
        Some(&staff),
        &format!("Incident #{id}"),
        html! {
            p { "Opened " (when(&cur.opened_at)) " by " (cur.opened_by) " · version " (cur.version)
                ", " (when(&cur.updated_at)) " by " (cur.updated_by) }
            (facts(&cur.record))
            h2 { "Alerts" }
            @if inc.alerts.is_empty() { p { "Not recorded from alerts." } }
            @else { ul #incident-alerts { @for a in &inc.alerts { li {
                @if opens_alerts { a href={"/alerts/" (a)} { "Alert #" (a) } } @else { "Alert #" (a) }
            } } } }
            h2 { "History" }
            table #history {
                thead { tr { th { "Version" } th { "When" } th { "Who" } th { "Changed" } th { "As it was" } } }
                tbody { @for v in inc.history.iter().rev() { tr {
                    td { (v.version) }
                    td { (when(&v.at)) }
                    td { (v.author) }
                    td { @if v.version == 1 { "recorded" } @else { (v.changed.join(", ")) } }
                    td { details { summary { "show" } (facts(&v.record)) } }
                } } }
            }
            @if may_open(&staff, "POST", "/incidents/{id}") {
                h2 { "Edit (adds version " (cur.version + 1) ")" }
                (record_form(&staff, &policy, &format!("/incidents/{id}"), &cur.record, &[]))
            }
        },
    ))
}

fn facts(r: &IncidentRecord) -> Markup {
    html! {
        dl.facts {
            dt { "Subject" } dd.subject { (r.subject) " (" (r.subject_class) ")" }
            dt { "Occurred" } dd { (when(&r.occurred_at)) }
            dt { "Category" } dd { (r.category) }
            dt { "Severity" } dd.sev.{"sev-" (r.severity)} { (r.severity) }
            dt { "What happened" } dd.summary { (r.summary) }
            dt { "Action taken" } dd { ul { @for a in &r.action_taken { li { (a) } } } }
            dt { "Parents informed" } dd { (yes_no(r.parents_informed))
                @if let Some(t) = &r.parents_informed_at { " · " (when(t)) } }
            dt { "Police referral" } dd { (yes_no(r.police_referral)) }
            dt { "Referred to" } dd { (r.referred_to.as_deref().unwrap_or("")) }
            dt { "Status" } dd { (r.status) }
            dt { "Notes" } dd.notes { (r.notes) }
        }
    }
}

/// A time as the form's text box shows it: local, to the minute (what `parse_when` reads).
fn local(rfc: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc)
        .map(|t| {
            t.with_timezone(&chrono_tz::Europe::London)
                .format("%Y-%m-%dT%H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

fn record_form(
    staff: &Staff,
    policy: &Policy,
    action: &str,
    r: &IncidentRecord,
    alerts: &[i64],
) -> Markup {
    let select = |name: &str, options: &[&str], current: &str| {
        html! { select name=(name) { @for o in options { option value=(o) selected[*o == current] { (o) } } } }
    };
    let other = r
        .action_taken
        .iter()
        .find_map(|a| a.strip_prefix(OTHER))
        .map(str::trim)
        .unwrap_or("");
    let tables = [
        (
            "For pupils",
            incidents::action_options(&policy.responses, "pupil"),
        ),
        (
            "For staff and visitors",
            incidents::action_options(&policy.responses, "staff"),
        ),
    ];
    let alert_list = alerts
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    html! {
        form.stack method="post" action=(action) {
            (csrf_field(staff))
            @if !alerts.is_empty() {
                input type="hidden" name="alerts" value=(alert_list);
                p { "From alerts " @for a in alerts { "#" (a) " " } "(they become escalated)." }
            }
            label { "Subject: user name(s), separated by commas" input name="subject" required value=(r.subject); }
            label { "Subject is a " (select("subject_class", CLASSES, &r.subject_class)) }
            label { "When it happened" input name="occurred_at" required placeholder="2026-11-20T09:00" value=(local(&r.occurred_at)); }
            label { "Category" input name="category" required value=(r.category); }
            label { "Severity " (select("severity", SEVERITIES, &r.severity)) }
            label { "What happened" textarea name="summary" rows="4" required { (r.summary) } }
            fieldset {
                legend { "Action taken (from the sanctions table for the subject's class)" }
                @for (title, options) in &tables {
                    p { b { (title) } }
                    @for o in options {
                        label.check { input type="checkbox" name="action" value=(o) checked[r.action_taken.contains(o)]; " " (o) }
                    }
                }
                label { "Other action" input name="action_other" value=(other); }
            }
            label.check { input type="checkbox" name="parents_informed" checked[r.parents_informed]; " Parents informed" }
            label { "Parents informed at" input name="parents_informed_at" placeholder="2026-11-20T15:00"
                value=(r.parents_informed_at.as_deref().map(local).unwrap_or_default()); }
            label.check { input type="checkbox" name="police_referral" checked[r.police_referral]; " Referred to the police" }
            label { "Referred to (e.g. LADO, CEOP, children's social care)" input name="referred_to" value=(r.referred_to.as_deref().unwrap_or("")); }
            label { "Status " (select("status", STATUSES, &r.status)) }
            label { "Notes" textarea name="notes" rows="3" { (r.notes) } }
            button type="submit" { "Save" }
        }
    }
}

/// On an alert's page, for the safeguarding lead: the incidents it is recorded in and a way to
/// record a new one. Only ids and statuses, which the alert's own (audited) view already
/// implies, so no separate audit entry.
pub async fn alert_panel(
    c: &Arc<Console>,
    staff: &Staff,
    alert_id: i64,
) -> Result<Markup, ConsoleError> {
    if staff.role != Role::Dsl {
        return Ok(html! {});
    }
    let entry = Audit::new("incident.list", format!("alert:{alert_id}"));
    let linked = c
        .audited(staff, entry, move |tx| {
            Ok(incidents::for_alert(tx, alert_id)?)
        })
        .await?;
    Ok(html! {
        section #alert-incidents {
            h2 { "Incident log" }
            @if !linked.is_empty() {
                ul { @for (id, status) in &linked { li { a href={"/incidents/" (id)} { "Incident #" (id) } " (" (status) ")" } } }
            }
            p { a href={"/incidents/new?alerts=" (alert_id)} { "Create incident from this alert" } }
        }
    })
}
