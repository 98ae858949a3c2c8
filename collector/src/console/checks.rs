//! Leadership checks: leadership requests (with a reason), a technician who is not the
//! requester runs, and the requester, technicians and the DSL read the report, print it or
//! download it as CSV. Leadership see only the checks they asked for. Every step is audited.

use super::input::parse_when;
use super::layout::{csrf_field, page, when};
use super::{Audit, Console, ConsoleError, Staff};
use crate::store::accounts::Role;
use crate::store::checks::{self, Check, CheckError, KINDS, Scope};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/checks", get(list_page).post(request_form))
        .route("/api/checks", get(list_api).post(request_api))
        .route("/checks/new", get(new_page))
        .route("/checks/{id}", get(detail_page))
        .route("/api/checks/{id}", get(detail_api))
        .route("/checks/{id}/csv", get(csv_download))
        .route("/checks/{id}/print", get(print_page))
        .route("/checks/{id}/run", post(run_form))
        .route("/api/checks/{id}/run", post(run_api))
}

impl From<CheckError> for ConsoleError {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::Store(e) => e.into(),
            CheckError::NoSuchCheck(_) => ConsoleError::NotFound(e.to_string()),
            CheckError::AlreadyRun(_) => ConsoleError::Conflict(e.to_string()),
            CheckError::OwnRequest { .. } => ConsoleError::Forbidden(e.to_string()),
            _ => ConsoleError::BadRequest(e.to_string()),
        }
    }
}

/// A request as the API takes it; the form's fields are the same, lists comma-separated.
#[derive(Debug, Default, Deserialize)]
pub struct NewCheck {
    pub reason: String,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub devices: Vec<String>,
    /// A date (taken from its start), a local time or RFC 3339.
    pub from: String,
    /// A date (taken to its end), a local time or RFC 3339.
    pub to: String,
    #[serde(default)]
    pub kinds: Vec<String>,
    #[serde(default)]
    pub categories: Vec<String>,
}

impl NewCheck {
    fn scope(&self) -> Result<Scope, ConsoleError> {
        let from = self.from.trim();
        let to = self.to.trim();
        if from.is_empty() || to.is_empty() {
            return Err(ConsoleError::BadRequest(
                "a check needs a time range: give \"from\" and \"to\"".into(),
            ));
        }
        let mut to_us = parse_when("to", to)?;
        // "to 2026-11-27" means to the end of that day.
        if chrono::NaiveDate::parse_from_str(to, "%Y-%m-%d").is_ok() {
            let next = chrono::NaiveDate::parse_from_str(to, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.succ_opt())
                .map(|d| d.format("%Y-%m-%d").to_string());
            if let Some(next) = next {
                to_us = parse_when("to", &next)?;
            }
        }
        Ok(Scope {
            users: self.users.clone(),
            groups: self.groups.clone(),
            devices: self.devices.clone(),
            from_us: parse_when("from", from)?,
            to_us,
            kinds: self.kinds.clone(),
            categories: self.categories.clone(),
        })
    }

    fn from_form(body: &[u8]) -> Self {
        let split = |v: &str| {
            v.split([',', '\n'])
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        };
        let mut n = NewCheck::default();
        for (k, v) in url::form_urlencoded::parse(body) {
            match k.as_ref() {
                "reason" => n.reason = v.into_owned(),
                "users" => n.users = split(&v),
                "groups" => n.groups = split(&v),
                "devices" => n.devices = split(&v),
                "from" => n.from = v.into_owned(),
                "to" => n.to = v.into_owned(),
                "kinds" => n.kinds.push(v.into_owned()),
                "categories" => n.categories = split(&v),
                _ => {}
            }
        }
        n
    }
}

/// Leadership see the checks they asked for; the DSL sees all. A technician sees a check while
/// it waits to be run (to run it) and the ones they ran: what others found is not theirs to read.
fn readable(staff: &Staff) -> checks::Readable<'_> {
    match staff.role {
        Role::Leadership => checks::Readable::RequestedBy(&staff.username),
        Role::Technician => checks::Readable::RunnableOrRunBy(&staff.username),
        Role::Dsl => checks::Readable::All,
        // Kept out by the access table anyway; and they ask for none.
        Role::Governor => checks::Readable::RequestedBy(&staff.username),
    }
}

fn may_read(staff: &Staff, c: &Check) -> bool {
    readable(staff).allows(c)
}

async fn list(c: &Arc<Console>, staff: &Staff) -> Result<Vec<Check>, ConsoleError> {
    let s = staff.clone();
    c.audited(staff, Audit::new("check.list", "checks"), move |conn| {
        Ok(checks::list(conn, readable(&s))?)
    })
    .await
}

/// Stores the request and its audit entry (naming the new check) in one transaction.
async fn request(c: &Arc<Console>, staff: &Staff, n: NewCheck) -> Result<i64, ConsoleError> {
    let scope = n.scope()?;
    let who = staff.username.clone();
    c.audited_as(staff, move |tx| {
        let id = checks::request(tx, &who, &n.reason, scope)?;
        let entry = Audit::new("check.request", format!("check:{id}")).purpose(n.reason.trim());
        Ok((id, entry))
    })
    .await
}

async fn run(c: &Arc<Console>, staff: &Staff, id: i64) -> Result<Check, ConsoleError> {
    let policy = c.policy.load_full();
    let runner = staff.username.clone();
    // The scan runs outside any transaction: it may take a while, and neither ingest nor other
    // staff should wait for it. Its result stays sealed until `record` stores it, audited.
    let prepared = c
        .scan(move |scan| Ok(checks::prepare(scan, id, &runner, &policy)?))
        .await?;
    let (events, alerts, capped) = prepared.counts();
    let runner = staff.username.clone();
    let detail = format!(
        "{} events, {} alerts{}",
        events,
        alerts,
        if capped { ", capped" } else { "" }
    );
    c.audited(
        staff,
        Audit::new("check.run", format!("check:{id}")).detail(detail),
        move |conn| {
            checks::record(conn, id, &runner, &prepared)?;
            checks::get(conn, id)?.ok_or_else(|| ConsoleError::NotFound(format!("check {id}")))
        },
    )
    .await
}

/// One check, read under `action` (`check.view` or `check.export`).
async fn read(
    c: &Arc<Console>,
    staff: &Staff,
    id: i64,
    action: &'static str,
    detail: &str,
) -> Result<Check, ConsoleError> {
    let s = staff.clone();
    let entry = Audit::new(action, format!("check:{id}")).detail(detail);
    c.audited(staff, entry, move |conn| {
        let check = checks::get(conn, id)?.ok_or(CheckError::NoSuchCheck(id))?;
        if !may_read(&s, &check) {
            return Err(ConsoleError::Forbidden(format!(
                "check {id} is not yours to read: leadership see the checks they asked for, \
                 technicians those waiting to run and those they ran"
            )));
        }
        Ok(check)
    })
    .await
}

async fn list_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
) -> Result<Json<Vec<Check>>, ConsoleError> {
    list(&c, &staff).await.map(Json)
}

async fn request_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Json(n): Json<NewCheck>,
) -> Result<Json<Check>, ConsoleError> {
    let id = request(&c, &staff, n).await?;
    read(&c, &staff, id, "check.view", "").await.map(Json)
}

async fn request_form(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let id = request(&c, &staff, NewCheck::from_form(&body)).await?;
    Ok(Redirect::to(&format!("/checks/{id}")).into_response())
}

async fn run_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
) -> Result<Json<Check>, ConsoleError> {
    run(&c, &staff, id).await.map(Json)
}

async fn run_form(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
) -> Result<Response, ConsoleError> {
    run(&c, &staff, id).await?;
    Ok(Redirect::to(&format!("/checks/{id}")).into_response())
}

async fn detail_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
) -> Result<Json<Check>, ConsoleError> {
    read(&c, &staff, id, "check.view", "").await.map(Json)
}

async fn list_page(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
) -> Result<Markup, ConsoleError> {
    let all = list(&c, &staff).await?;
    Ok(page(
        Some(&staff),
        "Checks",
        html! {
            @if staff.role == Role::Leadership {
                p.no-print { a href="/checks/new" { "Request a check" } }
            }
            table #checks {
                thead { tr {
                    th { "Check" } th { "Requested" } th { "By" } th { "Reason" } th { "Status" } th { "Run by" }
                } }
                tbody { @for k in &all { tr {
                    td { a href={"/checks/" (k.id)} { "#" (k.id) } }
                    td { (when(&k.requested_at)) } td { (k.requested_by) } td { (k.reason) }
                    td { (k.status) } td { (k.run_by.as_deref().unwrap_or("")) }
                } } }
            }
            @if all.is_empty() { p { "No checks yet." } }
        },
    ))
}

async fn new_page(Extension(staff): Extension<Staff>) -> Markup {
    page(
        Some(&staff),
        "Request a check",
        html! {
            p { "A technician other than you will run the check. Browsing is reported as sites only, "
                "with page titles for staff but never for pupils." }
            form.stack method="post" action="/checks" {
                (csrf_field(&staff))
                label { "Reason (required)" textarea name="reason" rows="3" required {} }
                label { "Users (comma-separated; empty for any)" input name="users"; }
                label { "Groups: device enrolment groups or user groups (comma-separated)" input name="groups"; }
                label { "Devices: host names (comma-separated)" input name="devices"; }
                label { "From" input name="from" placeholder="2026-11-16" required; }
                label { "To (a date includes that whole day)" input name="to" placeholder="2026-11-20" required; }
                fieldset { legend { "Kinds of activity (none ticked: all)" }
                    @for k in KINDS { label { input type="checkbox" name="kinds" value=(k); " " (k) } " " }
                }
                label { "Alert categories (comma-separated; empty for all)" input name="categories"; }
                button type="submit" { "Request the check" }
            }
        },
    )
}

fn list_or_any(v: &[String]) -> String {
    if v.is_empty() {
        "any".into()
    } else {
        v.join(", ")
    }
}

/// Who asked, why, who ran it and when: the head of the report and of its printout.
fn summary(k: &Check) -> Markup {
    let s = &k.scope;
    html! {
        dl.facts #check-facts {
            dt { "Requested by" } dd #requested-by { (k.requested_by) " on " (when(&k.requested_at)) }
            dt { "Reason" } dd #reason { (k.reason) }
            dt { "Run by" } dd #run-by {
                @if let (Some(by), Some(at)) = (&k.run_by, &k.run_at) { (by) " on " (when(at)) }
                @else { "not run yet" }
            }
            dt { "Period" } dd { (when(&crate::store::rfc3339(s.from_us))) " to " (when(&crate::store::rfc3339(s.to_us))) }
            dt { "Users" } dd { (list_or_any(&s.users)) }
            dt { "Groups" } dd { (list_or_any(&s.groups)) }
            dt { "Devices" } dd { (list_or_any(&s.devices)) }
            dt { "Kinds" } dd { (list_or_any(&s.kinds)) }
            dt { "Alert categories" } dd { (list_or_any(&s.categories)) }
        }
    }
}

fn result_table(k: &Check) -> Markup {
    html! {
        @if let Some(r) = &k.result {
            p { (r.events) " events and " (r.alerts) " alerts." }
            @if r.capped { p.error #capped { (r.note) } }
            table #check-rows {
                thead { tr { th { "Time" } th { "User" } th { "Device" } th { "Kind" } th { "What" } } }
                tbody { @for row in &r.rows { tr {
                    td { (when(&row.time)) } td { (row.user) } td { (row.device) } td { (row.kind) } td { (row.what) }
                } } }
            }
        }
    }
}

async fn detail_page(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
) -> Result<Markup, ConsoleError> {
    let k = read(&c, &staff, id, "check.view", "").await?;
    let may_run = staff.role == Role::Technician
        && k.status == "requested"
        && !k.requested_by.eq_ignore_ascii_case(&staff.username);
    Ok(page(
        Some(&staff),
        &format!("Check #{id}"),
        html! {
            (summary(&k))
            @if may_run {
                form method="post" action={"/checks/" (id) "/run"} {
                    (csrf_field(&staff))
                    button type="submit" { "Run this check" }
                }
            } @else if k.status == "requested" {
                p { "Waiting for a technician (not the requester) to run it." }
            }
            @if k.result.is_some() {
                p.no-print {
                    a href={"/checks/" (id) "/print"} { "Printable version" } " · "
                    a href={"/checks/" (id) "/csv"} { "Download CSV" }
                }
            }
            (result_table(&k))
        },
    ))
}

async fn print_page(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
) -> Result<Markup, ConsoleError> {
    let k = read(&c, &staff, id, "check.view", "print").await?;
    Ok(page(
        Some(&staff),
        &format!("Check #{id}"),
        html! {
            p.no-print { "Use the browser's Print command; the menu and buttons are left off the page." }
            header.print-header {
                p { "Invigilator check #" (id) ", printed by " (staff.username) " on "
                    (when(&crate::store::rfc3339(crate::store::now_us()))) ". Confidential." }
            }
            (summary(&k))
            (result_table(&k))
        },
    ))
}

/// A spreadsheet would run a cell that starts like a formula: such cells get a leading `'`.
pub fn neutralise(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_owned()
    }
}

pub fn to_csv(k: &Check) -> Result<Vec<u8>, ConsoleError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| ConsoleError::Internal(format!("writing CSV: {e}"));
    w.write_record(["time", "user", "device", "kind", "what"])
        .map_err(fail)?;
    for r in k.result.iter().flat_map(|r| &r.rows) {
        w.write_record([&r.time, &r.user, &r.device, &r.kind, &r.what].map(|c| neutralise(c)))
            .map_err(fail)?;
    }
    w.into_inner()
        .map_err(|e| ConsoleError::Internal(format!("writing CSV: {e}")))
}

async fn csv_download(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
) -> Result<Response, ConsoleError> {
    let k = read(&c, &staff, id, "check.export", "csv").await?;
    if k.result.is_none() {
        return Err(ConsoleError::Conflict(format!(
            "check {id} has not been run yet: there is nothing to download"
        )));
    }
    let body = to_csv(&k)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"check-{id}.csv\""),
            ),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::checks::{Outcome, Row};

    #[test]
    fn formula_cells_are_neutralised_in_the_csv() {
        let hostile = "=HYPERLINK(\"http://evil\")";
        let k = Check {
            id: 1,
            requested_by: "head".into(),
            requested_at: String::new(),
            reason: "r".into(),
            scope: Scope::default(),
            status: "run".into(),
            run_by: Some("tech".into()),
            run_at: None,
            result: Some(Outcome {
                rows: vec![Row {
                    time: "2026-11-20T09:00:00Z".into(),
                    user: "@user".into(),
                    device: "-pc".into(),
                    kind: "+browsing".into(),
                    what: hostile.into(),
                }],
                events: 1,
                alerts: 0,
                capped: false,
                note: String::new(),
            }),
        };
        let text = String::from_utf8(to_csv(&k).unwrap()).unwrap();
        let mut rows = csv::Reader::from_reader(text.as_bytes());
        let row = rows.records().next().unwrap().unwrap();
        assert_eq!(&row[1], "'@user");
        assert_eq!(&row[2], "'-pc");
        assert_eq!(&row[3], "'+browsing");
        assert_eq!(&row[4], "'=HYPERLINK(\"http://evil\")");
        assert_eq!(&row[0], "2026-11-20T09:00:00Z");
        for cell in ["\tx", "\rx"] {
            assert!(neutralise(cell).starts_with('\''));
        }
        assert_eq!(neutralise("plain"), "plain");
    }
}

#[cfg(test)]
#[path = "checks_flow_tests.rs"]
mod flow_tests;
