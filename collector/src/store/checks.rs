//! Leadership checks ("periodic checks on internet use ... at the request of the Leadership
//! Team"): a leadership user asks, with a reason, for a scope of users, groups, devices, a time
//! range, kinds of activity and alert categories; a technician who is not the requester runs it
//! against the stored events and alerts. The result is kept as it was produced.
//!
//! Data minimisation: browsing is reported as its site (host) only, never the full address or
//! the search; a page title is shown for staff but not for pupils (nor for anyone the policy
//! cannot place, who are treated as children).

use super::{Audited, Scan, Sealed};
use super::{events, now_us, rfc3339};
use crate::store::db::OwnedValue as Sql;
use crate::store::db::{Connection, OptionalExtension, params, params_from_iter};
use invigilator_policy::Policy;
use invigilator_policy::groups::Class;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The kinds of activity a check can list.
pub const KINDS: &[&str] = &["process", "usb", "session", "browsing"];
/// A check stops here and says so: a bigger scope should be split, not printed.
pub const MAX_ROWS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("a check needs a reason: say why it is being requested")]
    NoReason,
    #[error("the time range is empty: \"from\" must be before \"to\"")]
    EmptyRange,
    #[error("{0:?} is not a kind of activity: use process, usb, session or browsing")]
    BadKind(String),
    #[error("no check {0}")]
    NoSuchCheck(i64),
    #[error("check {0} has already been run")]
    AlreadyRun(i64),
    #[error("check {id} was requested by {requester}: it must be run by another member of staff")]
    OwnRequest { id: i64, requester: String },
    #[error(transparent)]
    Store(#[from] super::StoreError),
}

impl From<crate::store::db::Error> for CheckError {
    fn from(e: crate::store::db::Error) -> Self {
        CheckError::Store(e.into())
    }
}

pub type Result<T, E = CheckError> = std::result::Result<T, E>;

/// What a check covers. Empty lists mean "any".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(default)]
    pub users: Vec<String>,
    /// Device enrolment groups or policy user groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Host names.
    #[serde(default)]
    pub devices: Vec<String>,
    pub from_us: i64,
    pub to_us: i64,
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Alert categories; alerts of other categories are left out.
    #[serde(default)]
    pub categories: Vec<String>,
}

impl Scope {
    /// Drops blanks and repeats; names are compared case-insensitively.
    pub fn normalised(mut self) -> Result<Self> {
        for list in [
            &mut self.users,
            &mut self.groups,
            &mut self.devices,
            &mut self.kinds,
            &mut self.categories,
        ] {
            let mut seen: Vec<String> = Vec::new();
            for s in list.drain(..) {
                let s = s.trim().to_owned();
                if !s.is_empty() && !seen.iter().any(|t| t.eq_ignore_ascii_case(&s)) {
                    seen.push(s);
                }
            }
            *list = seen;
        }
        if let Some(k) = self.kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
            return Err(CheckError::BadKind(k.clone()));
        }
        if self.from_us >= self.to_us {
            return Err(CheckError::EmptyRange);
        }
        Ok(self)
    }
}

/// One line of a check's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub time: String,
    pub user: String,
    pub device: String,
    /// process, usb, session, browsing, or alert.
    pub kind: String,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub rows: Vec<Row>,
    pub events: usize,
    pub alerts: usize,
    /// True when the check stopped at [`MAX_ROWS`].
    pub capped: bool,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: i64,
    pub requested_by: String,
    pub requested_at: String,
    pub reason: String,
    pub scope: Scope,
    pub status: String,
    pub run_by: Option<String>,
    pub run_at: Option<String>,
    pub result: Option<Outcome>,
}

pub fn request(tx: &Audited<'_>, requested_by: &str, reason: &str, scope: Scope) -> Result<i64> {
    let conn = tx.conn;
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(CheckError::NoReason);
    }
    let scope = scope.normalised()?;
    let id = conn.query_row(
        "INSERT INTO checks(requested_by, requested_at, reason, scope) VALUES (?1, ?2, ?3, ?4)
         RETURNING id",
        params![
            requested_by,
            now_us(),
            reason,
            serde_json::to_string(&scope).expect("scope serialises")
        ],
        |r| r.get::<_, i64>(0),
    )?;
    Ok(id)
}

const COLUMNS: &str =
    "id, requested_by, requested_at, reason, scope, status, run_by, run_at, result";

fn check(r: &crate::store::db::Row<'_>, with_result: bool) -> crate::store::db::Result<Check> {
    let json_err = |i, e: serde_json::Error| crate::store::db::Error::decode(i, e);
    let scope: String = r.get(4)?;
    let result: Option<String> = if with_result { r.get(8)? } else { None };
    Ok(Check {
        id: r.get(0)?,
        requested_by: r.get(1)?,
        requested_at: rfc3339(r.get(2)?),
        reason: r.get(3)?,
        scope: serde_json::from_str(&scope).map_err(|e| json_err(4, e))?,
        status: r.get(5)?,
        run_by: r.get(6)?,
        run_at: r.get::<_, Option<i64>>(7)?.map(rfc3339),
        result: result
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| json_err(8, e))?,
    })
}

pub fn get(tx: &Audited<'_>, id: i64) -> Result<Option<Check>> {
    get_in(tx.conn, id)
}

fn get_in(conn: &Connection, id: i64) -> Result<Option<Check>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM checks WHERE id = ?1"),
            [id],
            |r| check(r, true),
        )
        .optional()?)
}

/// Which checks a reader may see.
#[derive(Debug, Clone, Copy)]
pub enum Readable<'a> {
    All,
    /// Leadership: the checks they asked for.
    RequestedBy(&'a str),
    /// Technicians: those waiting to be run, and those they ran.
    RunnableOrRunBy(&'a str),
}

impl Readable<'_> {
    pub fn allows(self, c: &Check) -> bool {
        match self {
            Readable::All => true,
            Readable::RequestedBy(who) => c.requested_by == who,
            Readable::RunnableOrRunBy(who) => {
                c.status == "requested" || c.run_by.as_deref() == Some(who)
            }
        }
    }
}

/// Checks, newest first, without their results; only those `who` may read.
pub fn list(tx: &Audited<'_>, who: Readable<'_>) -> Result<Vec<Check>> {
    let conn = tx.conn;
    let (requested_by, runner) = match who {
        Readable::All => (None, None),
        Readable::RequestedBy(w) => (Some(w), None),
        Readable::RunnableOrRunBy(w) => (None, Some(w)),
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM checks
         WHERE (CAST(?1 AS TEXT) IS NULL OR requested_by = ?1)
           AND (CAST(?2 AS TEXT) IS NULL OR status = 'requested' OR run_by = ?2)
         ORDER BY id DESC LIMIT 500"
    ))?;
    let rows = stmt.query_map(params![requested_by, runner], |r| check(r, false))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Runs a requested check as `runner` and stores the result: [`prepare`] then [`record`].
pub fn run(tx: &Audited<'_>, id: i64, runner: &str, policy: &Policy) -> Result<Outcome> {
    let prepared = Sealed(produce(
        tx.conn,
        &runnable(tx.conn, id, runner)?.scope,
        policy,
    )?);
    record(tx, id, runner, &prepared)?;
    Ok(prepared.0)
}

/// A check's result produced by [`prepare`], sealed until [`record`] stores it under its audit
/// entry: only its counts can be read before.
pub type Prepared = Sealed<Outcome>;

impl Sealed<Outcome> {
    /// Events and alerts matched, and whether the result was capped: what the entry records.
    pub fn counts(&self) -> (usize, usize, bool) {
        (self.0.events, self.0.alerts, self.0.capped)
    }
}

/// Produces a check's result without writing anything, so a long scan can run on a reader
/// connection outside any write transaction (ingest must not wait for it). The two-person rule
/// is checked here and again in [`record`], so no caller can skip it.
pub fn prepare(tx: &Scan<'_>, id: i64, runner: &str, policy: &Policy) -> Result<Prepared> {
    let conn = tx.conn;
    let c = runnable(conn, id, runner)?;
    Ok(Sealed(produce(conn, &c.scope, policy)?))
}

fn runnable(conn: &Connection, id: i64, runner: &str) -> Result<Check> {
    let c = get_in(conn, id)?.ok_or(CheckError::NoSuchCheck(id))?;
    if c.status != "requested" {
        return Err(CheckError::AlreadyRun(id));
    }
    if c.requested_by.eq_ignore_ascii_case(runner) {
        return Err(CheckError::OwnRequest {
            id,
            requester: c.requested_by,
        });
    }
    Ok(c)
}

/// Stores a result from [`prepare`]; refuses if someone else ran the check meanwhile.
pub fn record(tx: &Audited<'_>, id: i64, runner: &str, prepared: &Prepared) -> Result<()> {
    let outcome = &prepared.0;
    let conn = tx.conn;
    runnable(conn, id, runner)?;
    let n = conn.execute(
        "UPDATE checks SET status = 'run', run_by = ?2, run_at = ?3, result = ?4
         WHERE id = ?1 AND status = 'requested'",
        params![
            id,
            runner,
            now_us(),
            serde_json::to_string(outcome).expect("outcome serialises")
        ],
    )?;
    if n == 0 {
        return Err(CheckError::AlreadyRun(id));
    }
    Ok(())
}

fn any_eq(list: &[String], s: &str) -> bool {
    list.is_empty() || list.iter().any(|x| x.eq_ignore_ascii_case(s))
}

/// Whether someone on a device of `enrolment_group` is in the scope's groups, and whether they
/// are to be treated as a child.
fn placed(policy: &Policy, scope: &Scope, enrolment_group: &str, user: &str) -> (bool, bool) {
    let device = policy.groups.device(enrolment_group);
    let person = policy.groups.person(user, &device);
    let in_group = scope.groups.is_empty()
        || any_eq(&scope.groups, enrolment_group) && !enrolment_group.is_empty()
        || person.group.is_some_and(|g| any_eq(&scope.groups, g));
    let child = matches!(person.class, Class::Pupil | Class::Unknown);
    (in_group, child)
}

/// `(clause, args)` for `column IN (...)` on lower-cased values, or nothing for an empty list.
fn in_list(column: &str, list: &[String], args: &mut Vec<Sql>) -> String {
    if list.is_empty() {
        return String::new();
    }
    let marks: Vec<String> = list
        .iter()
        .map(|v| {
            args.push(Sql::Text(v.to_lowercase()));
            format!("?{}", args.len())
        })
        .collect();
    format!(" AND lower({column}) IN ({})", marks.join(", "))
}

/// The check's rows: events and alerts in the range that match the scope, in time order.
fn produce(conn: &Connection, scope: &Scope, policy: &Policy) -> Result<Outcome> {
    let mut rows: Vec<(i64, Row)> = Vec::new();
    let mut capped = false;
    let (mut n_events, mut n_alerts) = (0, 0);

    // Events: the time index bounds the scan; users, devices and kinds narrow it in SQL, groups
    // need the policy and are applied here.
    let mut args = vec![Sql::Int(scope.from_us), Sql::Int(scope.to_us)];
    let mut sql = String::from(
        "SELECT e.agent_id, e.seq, e.kind, e.observed_at, e.received_at, e.hostname, e.user,
                e.payload, coalesce(a.grp, '')
         FROM events e LEFT JOIN agents a ON a.agent_id = e.agent_id
         WHERE e.observed_at >= ?1 AND e.observed_at < ?2",
    );
    sql += &in_list("e.user", &scope.users, &mut args);
    sql += &in_list("e.hostname", &scope.devices, &mut args);
    let kinds: Vec<String> = if scope.kinds.is_empty() {
        KINDS.iter().map(|k| k.to_string()).collect()
    } else {
        scope.kinds.clone()
    };
    sql += &in_list("e.kind", &kinds, &mut args);
    sql += " ORDER BY e.observed_at, e.id";
    let mut stmt = conn.prepare(&sql)?;
    let mut q = stmt.query(params_from_iter(args))?;
    while let Some(r) = q.next()? {
        let group: String = r.get(8)?;
        let at: i64 = r.get(3)?;
        let e = events::row(&r)?;
        let (in_group, child) = placed(policy, scope, &group, &e.user);
        if !in_group {
            continue;
        }
        if rows.len() >= MAX_ROWS {
            capped = true;
            break;
        }
        n_events += 1;
        rows.push((
            at,
            Row {
                time: e.observed_at.clone(),
                what: describe(&e.kind, &e.details, child),
                user: e.user,
                device: e.hostname,
                kind: e.kind,
            },
        ));
    }

    // Alerts in the same range and scope.
    let mut args = vec![Sql::Int(scope.from_us), Sql::Int(scope.to_us)];
    let mut sql = String::from(
        "SELECT a.observed_at, a.user, a.hostname, a.kind, a.category, a.severity, a.summary,
                coalesce(g.grp, '')
         FROM alerts a LEFT JOIN agents g ON g.agent_id = a.agent_id
         WHERE a.observed_at >= ?1 AND a.observed_at < ?2",
    );
    sql += &in_list("a.user", &scope.users, &mut args);
    sql += &in_list("a.hostname", &scope.devices, &mut args);
    sql += &in_list("a.category", &scope.categories, &mut args);
    sql += " ORDER BY a.observed_at, a.id";
    let mut stmt = conn.prepare(&sql)?;
    let mut q = stmt.query(params_from_iter(args))?;
    while let Some(r) = q.next()? {
        let (user, kind, group): (String, String, String) = (r.get(1)?, r.get(3)?, r.get(7)?);
        // Only alerts about the kinds asked for (an "agent" alert goes with any scope).
        if !scope.kinds.is_empty() && kind != "agent" && !any_eq(&scope.kinds, &kind) {
            continue;
        }
        if !placed(policy, scope, &group, &user).0 {
            continue;
        }
        if rows.len() >= MAX_ROWS {
            capped = true;
            break;
        }
        n_alerts += 1;
        let (category, severity, summary): (String, String, String) =
            (r.get(4)?, r.get(5)?, r.get(6)?);
        rows.push((
            r.get(0)?,
            Row {
                time: rfc3339(r.get(0)?),
                user,
                device: r.get(2)?,
                kind: "alert".into(),
                what: format!("{severity} alert, {category}: {summary}"),
            },
        ));
    }
    rows.sort_by_key(|(at, _)| *at);
    let note = if capped {
        format!(
            "Stopped at {MAX_ROWS} rows: the scope matched more. Narrow it and run another check."
        )
    } else {
        String::new()
    };
    Ok(Outcome {
        rows: rows.into_iter().map(|(_, r)| r).collect(),
        events: n_events,
        alerts: n_alerts,
        capped,
        note,
    })
}

fn field<'a>(d: &'a serde_json::Map<String, Value>, k: &str) -> &'a str {
    d.get(k).and_then(Value::as_str).unwrap_or("")
}

/// What an event was, in a line: only the fields a check reports.
fn describe(kind: &str, d: &serde_json::Map<String, Value>, child: bool) -> String {
    let join = |parts: &[(&str, &str)]| {
        parts
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match kind {
        "process" => join(&[("program", field(d, "name")), ("at", field(d, "exe"))]),
        "usb" => join(&[
            ("", field(d, "action")),
            ("vendor", field(d, "vendor_id")),
            ("product", field(d, "product_id")),
            ("maker", field(d, "manufacturer")),
            ("name", field(d, "product")),
            ("serial", field(d, "serial")),
        ])
        .trim_start()
        .to_owned(),
        "session" => join(&[
            ("", field(d, "action")),
            ("session", field(d, "session_id")),
        ])
        .trim_start()
        .to_owned(),
        "browsing" => {
            let url = field(d, "url");
            let site = url::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "(no site)".into());
            let title = field(d, "title");
            if child || title.is_empty() {
                format!("site {site}")
            } else {
                format!("site {site}, title {title}")
            }
        }
        _ => String::new(),
    }
}

#[cfg(test)]
#[path = "checks_tests.rs"]
mod tests;
