//! Alerts as staff work with them: filtered pages of the list, one alert with its history, and
//! the workflow new -> triaged -> escalated / resolved / false positive.

use super::{Admin, Audited};
use super::{Result, now_us, rfc3339};
use crate::store::db::OwnedValue as Value;
use crate::store::db::{OptionalExtension, params, params_from_iter};
use serde::Serialize;

/// The workflow's states, in the order a list shows them.
pub const STATUSES: &[&str] = &["new", "triaged", "escalated", "resolved", "false_positive"];

/// Which status may follow which. A closed alert can be reopened to triaged (a mistake, or new
/// information), never silently back to new.
pub fn transition_allowed(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        (
            "new",
            "triaged" | "escalated" | "resolved" | "false_positive"
        ) | ("triaged", "escalated" | "resolved" | "false_positive")
            | ("escalated", "triaged" | "resolved" | "false_positive")
            | ("resolved" | "false_positive", "triaged")
    ) || from == to
}

#[derive(Debug, Clone, Default)]
pub struct Query {
    pub severity: Option<String>,
    pub category: Option<String>,
    /// The device's enrolment group.
    pub group: Option<String>,
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub status: Option<String>,
    pub assigned_to: Option<String>,
    pub from_us: Option<i64>,
    pub to_us: Option<i64>,
    /// Keyset pagination, newest first: alerts with ids below this.
    pub before_id: Option<i64>,
    /// Live updates: alerts with ids above this, oldest first.
    pub after_id: Option<i64>,
    pub limit: u32,
}

/// An alert with what triage adds to it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub id: i64,
    pub agent_id: String,
    pub hostname: String,
    pub group: String,
    pub user: String,
    pub kind: String,
    pub rule: String,
    pub category: String,
    pub severity: invigilator_policy::Severity,
    pub summary: String,
    pub matched: String,
    pub observed_at: String,
    pub last_observed_at: String,
    pub created_at: String,
    pub policy_version: String,
    pub event_seq: Option<u64>,
    pub status: String,
    pub assigned_to: Option<String>,
    pub count: u64,
    pub response: String,
}

const COLUMNS: &str = "a.id, a.agent_id, a.hostname, coalesce(g.grp, ''), a.user, a.kind, a.rule,
    a.category, a.severity, a.summary, a.matched, a.observed_at,
    coalesce(a.last_observed_at, a.observed_at), a.created_at, a.policy_version, a.event_seq,
    a.status, a.assigned_to, a.count, a.response";

fn listed(r: &crate::store::db::Row<'_>) -> crate::store::db::Result<Listed> {
    Ok(Listed {
        id: r.get(0)?,
        agent_id: r.get(1)?,
        hostname: r.get(2)?,
        group: r.get(3)?,
        user: r.get(4)?,
        kind: r.get(5)?,
        rule: r.get(6)?,
        category: r.get(7)?,
        severity: super::severity(r, 8)?,
        summary: r.get(9)?,
        matched: r.get(10)?,
        observed_at: rfc3339(r.get(11)?),
        last_observed_at: rfc3339(r.get(12)?),
        created_at: rfc3339(r.get(13)?),
        policy_version: r.get(14)?,
        event_seq: r.get::<_, Option<i64>>(15)?.map(|s| s as u64),
        status: r.get(16)?,
        assigned_to: r.get(17)?,
        count: r.get::<_, i64>(18)? as u64,
        response: r.get(19)?,
    })
}

/// One page of alerts. The WHERE clause names only the filters given, so SQLite can walk the
/// matching index in id order and stop at the page's end.
pub fn search(tx: &Audited<'_>, q: &Query) -> Result<Vec<Listed>> {
    let conn = tx.conn;
    let mut sql = format!(
        "SELECT {COLUMNS} FROM alerts a LEFT JOIN agents g ON g.agent_id = a.agent_id WHERE 1 = 1"
    );
    let mut args: Vec<Value> = Vec::new();
    let mut add = |clause: &str, v: Value| {
        sql.push_str(" AND ");
        sql.push_str(&clause.replace('?', &format!("?{}", args.len() + 1)));
        args.push(v);
    };
    let text = |s: &Option<String>| s.as_ref().map(|s| Value::Text(s.clone()));
    for (clause, v) in [
        ("a.severity = ?", text(&q.severity)),
        ("a.category = ?", text(&q.category)),
        ("g.grp = ?", text(&q.group)),
        ("a.hostname = ?", text(&q.hostname)),
        ("a.user = ?", text(&q.user)),
        ("a.status = ?", text(&q.status)),
        ("a.assigned_to = ?", text(&q.assigned_to)),
        ("a.observed_at >= ?", q.from_us.map(Value::Int)),
        ("a.observed_at < ?", q.to_us.map(Value::Int)),
        ("a.id < ?", q.before_id.map(Value::Int)),
        ("a.id > ?", q.after_id.map(Value::Int)),
    ] {
        if let Some(v) = v {
            add(clause, v);
        }
    }
    let order = if q.after_id.is_some() { "ASC" } else { "DESC" };
    sql.push_str(&format!(
        " ORDER BY a.id {order} LIMIT {}",
        q.limit.clamp(1, 1000)
    ));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), listed)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get(tx: &Audited<'_>, id: i64) -> Result<Option<Listed>> {
    let conn = tx.conn;
    Ok(conn
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM alerts a LEFT JOIN agents g ON g.agent_id = a.agent_id
                 WHERE a.id = ?1"
            ),
            [id],
            listed,
        )
        .optional()?)
}

/// The values the filters offer, from what is stored.
pub fn distinct(tx: &Admin<'_>, column: &str) -> Result<Vec<String>> {
    let conn = tx.conn;
    let sql = match column {
        "category" => "SELECT DISTINCT category FROM alerts ORDER BY 1",
        "group" => "SELECT DISTINCT grp FROM agents ORDER BY 1",
        _ => return Ok(Vec::new()),
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[derive(Debug, Clone, Serialize)]
pub struct Note {
    pub at: String,
    pub author: String,
    pub status_from: String,
    pub status_to: String,
    pub assigned_to: Option<String>,
    pub note: String,
}

pub fn notes(tx: &Audited<'_>, alert_id: i64) -> Result<Vec<Note>> {
    let conn = tx.conn;
    let mut stmt = conn.prepare_cached(
        "SELECT at, author, status_from, status_to, assigned_to, note FROM alert_notes
         WHERE alert_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([alert_id], |r| {
        Ok(Note {
            at: rfc3339(r.get(0)?),
            author: r.get(1)?,
            status_from: r.get(2)?,
            status_to: r.get(3)?,
            assigned_to: r.get(4)?,
            note: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A triage step: any of a new status, an assignee, a note.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub status: Option<String>,
    /// Some("") unassigns.
    pub assign_to: Option<String>,
    pub note: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TriageError {
    #[error("no alert {0}")]
    NoSuchAlert(i64),
    #[error("{0:?} is not a status: use one of new, triaged, escalated, resolved, false_positive")]
    BadStatus(String),
    #[error("alert {id} cannot go from {from} to {to}")]
    NotAllowed { id: i64, from: String, to: String },
    #[error("nothing to change: give a status, an assignee or a note")]
    Empty,
}

/// Applies a change and records it in the alert's history. Returns the status it moved from.
pub fn apply(
    tx: &Audited<'_>,
    id: i64,
    author: &str,
    change: &Change,
) -> Result<std::result::Result<String, TriageError>> {
    let conn = tx.conn;
    if change.status.is_none() && change.assign_to.is_none() && change.note.trim().is_empty() {
        return Ok(Err(TriageError::Empty));
    }
    if let Some(s) = &change.status
        && !STATUSES.contains(&s.as_str())
    {
        return Ok(Err(TriageError::BadStatus(s.clone())));
    }
    let current: Option<(String, Option<String>)> = conn
        .query_row(
            "SELECT status, assigned_to FROM alerts WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((from, assigned)) = current else {
        return Ok(Err(TriageError::NoSuchAlert(id)));
    };
    let to = change.status.clone().unwrap_or_else(|| from.clone());
    if !transition_allowed(&from, &to) {
        return Ok(Err(TriageError::NotAllowed { id, from, to }));
    }
    let assigned_to = match &change.assign_to {
        Some(a) if a.is_empty() => None,
        Some(a) => Some(a.clone()),
        None => assigned,
    };
    let now = now_us();
    conn.execute(
        "UPDATE alerts SET status = ?2, assigned_to = ?3, updated_at = ?4 WHERE id = ?1",
        params![id, to, assigned_to, now],
    )?;
    conn.execute(
        "INSERT INTO alert_notes(alert_id, at, author, status_from, status_to, assigned_to, note)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id, now, author, from, to, assigned_to, change.note.trim()],
    )?;
    Ok(Ok(from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::Connection;
    use crate::store::{alerts, test_db};
    use invigilator_policy::Alert;

    fn alert(conn: &Connection, user: &str, severity: &str, at: i64) -> i64 {
        alerts::insert(
            &crate::store::System::test(conn),
            &Alert {
                agent_id: "a1".into(),
                hostname: "pc1".into(),
                user: user.into(),
                kind: "browsing".into(),
                rule: "web.gambling".into(),
                category: "gambling".into(),
                severity: severity.parse().unwrap(),
                summary: "s".into(),
                matched: "m".into(),
                observed_at_us: at,
                policy_version: "1".into(),
                event_seq: Some(1),
                response: String::new(),
                aggregate_key: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn filters_combine_and_pages_follow_on() {
        let (_d, conn) = test_db();
        for i in 0..30 {
            let sev = if i % 3 == 0 {
                "serious"
            } else {
                "inappropriate"
            };
            alert(&conn, if i % 2 == 0 { "amy" } else { "ben" }, sev, i * 1000);
        }
        let q = Query {
            user: Some("amy".into()),
            severity: Some("serious".into()),
            limit: 3,
            ..Default::default()
        };
        let page1 = search(&crate::store::Audited::test(&conn), &q).unwrap();
        assert_eq!(page1.iter().map(|a| a.id).collect::<Vec<_>>(), [25, 19, 13]);
        let page2 = search(
            &crate::store::Audited::test(&conn),
            &Query {
                before_id: Some(13),
                ..q.clone()
            },
        )
        .unwrap();
        assert_eq!(page2.iter().map(|a| a.id).collect::<Vec<_>>(), [7, 1]);
        let later = search(
            &crate::store::Audited::test(&conn),
            &Query {
                after_id: Some(28),
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(later.iter().map(|a| a.id).collect::<Vec<_>>(), [29, 30]);
        let window = search(
            &crate::store::Audited::test(&conn),
            &Query {
                from_us: Some(5000),
                to_us: Some(8000),
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(window.len(), 3);
    }

    #[test]
    fn the_workflow_keeps_its_order_and_history() {
        let (_d, conn) = test_db();
        let id = alert(&conn, "amy", "serious", 1);
        let step = |status: &str| Change {
            status: Some(status.into()),
            ..Default::default()
        };
        assert_eq!(
            apply(
                &crate::store::Audited::test(&conn),
                id,
                "tech",
                &step("triaged")
            )
            .unwrap(),
            Ok("new".into())
        );
        assert!(matches!(
            apply(
                &crate::store::Audited::test(&conn),
                id,
                "tech",
                &step("new")
            )
            .unwrap(),
            Err(TriageError::NotAllowed { .. })
        ));
        assert!(matches!(
            apply(
                &crate::store::Audited::test(&conn),
                id,
                "tech",
                &step("closed")
            )
            .unwrap(),
            Err(TriageError::BadStatus(_))
        ));
        let assign = Change {
            status: Some("escalated".into()),
            assign_to: Some("dsl1".into()),
            note: "looks like a pattern".into(),
        };
        apply(&crate::store::Audited::test(&conn), id, "tech", &assign)
            .unwrap()
            .unwrap();
        apply(
            &crate::store::Audited::test(&conn),
            id,
            "dsl1",
            &step("resolved"),
        )
        .unwrap()
        .unwrap();
        let a = get(&crate::store::Audited::test(&conn), id)
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.status.as_str(), a.assigned_to.as_deref()),
            ("resolved", Some("dsl1"))
        );
        let h = notes(&crate::store::Audited::test(&conn), id).unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(h[1].note, "looks like a pattern");
        assert_eq!(
            apply(
                &crate::store::Audited::test(&conn),
                999,
                "x",
                &step("triaged")
            )
            .unwrap(),
            Err(TriageError::NoSuchAlert(999))
        );
    }
}
