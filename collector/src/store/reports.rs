//! Generated reports, kept as they were generated (a later policy change or deleted alert does
//! not rewrite what the headteacher and governors were shown).

use super::{Admin, Audited};
use super::{Result, now_us, rfc3339};
use crate::store::db::{OptionalExtension, params};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Stored {
    pub id: i64,
    pub kind: String,
    pub period_start: String,
    pub generated_at: String,
    pub generated_by: String,
    /// The report itself (JSON); left out of lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
}

/// Stores a report unless one of this kind already covers `period_start`; returns its id when
/// stored. Call inside a transaction when several writers may race.
pub fn insert_once(
    tx: &Audited<'_>,
    kind: &str,
    period_start_us: i64,
    generated_by: &str,
    body: &serde_json::Value,
) -> Result<Option<i64>> {
    let conn = tx.conn;
    if exists(&tx.admin(), kind, period_start_us)? {
        return Ok(None);
    }
    let id = conn.query_row(
        "INSERT INTO reports(kind, period_start, generated_at, generated_by, body)
         VALUES (?1, ?2, ?3, ?4, ?5)
         RETURNING id",
        params![
            kind,
            period_start_us,
            now_us(),
            generated_by,
            body.to_string()
        ],
        |r| r.get::<_, i64>(0),
    )?;
    Ok(Some(id))
}

pub fn exists(tx: &Admin<'_>, kind: &str, period_start_us: i64) -> Result<bool> {
    let conn = tx.conn;
    Ok(conn
        .query_row(
            "SELECT 1 FROM reports WHERE kind = ?1 AND period_start = ?2",
            params![kind, period_start_us],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn stored(r: &crate::store::db::Row<'_>, with_body: bool) -> crate::store::db::Result<Stored> {
    let body = if with_body {
        let text: String = r.get(5)?;
        Some(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    } else {
        None
    };
    Ok(Stored {
        id: r.get(0)?,
        kind: r.get(1)?,
        period_start: rfc3339(r.get(2)?),
        generated_at: rfc3339(r.get(3)?),
        generated_by: r.get(4)?,
        body,
    })
}

/// Stored reports, newest period first, without their bodies.
pub fn list(tx: &Audited<'_>) -> Result<Vec<Stored>> {
    let conn = tx.conn;
    let mut stmt = conn.prepare(
        "SELECT id, kind, period_start, generated_at, generated_by, '' FROM reports
         ORDER BY period_start DESC, id DESC LIMIT 520",
    )?;
    let rows = stmt.query_map([], |r| stored(r, false))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get(tx: &Audited<'_>, id: i64) -> Result<Option<Stored>> {
    let conn = tx.conn;
    Ok(conn
        .query_row(
            "SELECT id, kind, period_start, generated_at, generated_by, body FROM reports
             WHERE id = ?1",
            [id],
            |r| stored(r, true),
        )
        .optional()?)
}

/// What a report counts of one alert.
pub struct AlertFacts {
    pub user: String,
    pub group: String,
    pub kind: String,
    pub rule: String,
    pub category: String,
    pub severity: invigilator_policy::Severity,
    pub summary: String,
    pub count: u64,
}

/// How many incidents were opened in `[from, to)`.
pub fn incidents_opened(tx: &Audited<'_>, from: i64, to: i64) -> Result<i64> {
    Ok(tx.conn.query_row(
        "SELECT count(*) FROM incidents WHERE created_at >= ?1 AND created_at < ?2",
        [from, to],
        |r| r.get(0),
    )?)
}

/// The alerts observed in `[from, to)`, as reports count them.
pub fn alert_facts(tx: &Audited<'_>, from: i64, to: i64) -> Result<Vec<AlertFacts>> {
    let conn = tx.conn;
    let mut stmt = conn.prepare_cached(
        "SELECT a.user, coalesce(g.grp, ''), a.kind, a.rule, a.category, a.severity, a.summary,
                a.count
         FROM alerts a LEFT JOIN agents g ON g.agent_id = a.agent_id
         WHERE a.observed_at >= ?1 AND a.observed_at < ?2",
    )?;
    let rows = stmt.query_map([from, to], |r| {
        Ok(AlertFacts {
            user: r.get(0)?,
            group: r.get(1)?,
            kind: r.get(2)?,
            rule: r.get(3)?,
            category: r.get(4)?,
            severity: super::severity(r, 5)?,
            summary: r.get(6)?,
            count: r.get::<_, i64>(7)?.max(1) as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_is_stored_once() {
        let (_d, conn) = crate::store::test_db();
        let body = serde_json::json!({"week": "2026-W47"});
        let id = insert_once(
            &crate::store::Audited::test(&conn),
            "weekly",
            5,
            "system",
            &body,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            insert_once(
                &crate::store::Audited::test(&conn),
                "weekly",
                5,
                "system",
                &body
            )
            .unwrap(),
            None
        );
        assert!(
            insert_once(
                &crate::store::Audited::test(&conn),
                "weekly",
                6,
                "system",
                &body
            )
            .unwrap()
            .is_some()
        );
        let got = get(&crate::store::Audited::test(&conn), id)
            .unwrap()
            .unwrap();
        assert_eq!(got.body.unwrap()["week"], "2026-W47");
        let all = list(&crate::store::Audited::test(&conn)).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all[0].body.is_none());
    }
}
