//! Generated reports, kept as they were generated (a later policy change or deleted alert does
//! not rewrite what the headteacher and governors were shown).

use super::{Result, now_us, rfc3339};
use rusqlite::{Connection, OptionalExtension, params};
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
    conn: &Connection,
    kind: &str,
    period_start_us: i64,
    generated_by: &str,
    body: &serde_json::Value,
) -> Result<Option<i64>> {
    if exists(conn, kind, period_start_us)? {
        return Ok(None);
    }
    conn.execute(
        "INSERT INTO reports(kind, period_start, generated_at, generated_by, body)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            kind,
            period_start_us,
            now_us(),
            generated_by,
            body.to_string()
        ],
    )?;
    Ok(Some(conn.last_insert_rowid()))
}

pub fn exists(conn: &Connection, kind: &str, period_start_us: i64) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM reports WHERE kind = ?1 AND period_start = ?2",
            params![kind, period_start_us],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn stored(r: &rusqlite::Row<'_>, with_body: bool) -> rusqlite::Result<Stored> {
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
pub fn list(conn: &Connection) -> Result<Vec<Stored>> {
    let mut stmt = conn.prepare(
        "SELECT id, kind, period_start, generated_at, generated_by, '' FROM reports
         ORDER BY period_start DESC, id DESC LIMIT 520",
    )?;
    let rows = stmt.query_map([], |r| stored(r, false))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get(conn: &Connection, id: i64) -> Result<Option<Stored>> {
    Ok(conn
        .query_row(
            "SELECT id, kind, period_start, generated_at, generated_by, body FROM reports
             WHERE id = ?1",
            [id],
            |r| stored(r, true),
        )
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_is_stored_once() {
        let (_d, conn) = crate::store::test_db();
        let body = serde_json::json!({"week": "2026-W47"});
        let id = insert_once(&conn, "weekly", 5, "system", &body)
            .unwrap()
            .unwrap();
        assert_eq!(
            insert_once(&conn, "weekly", 5, "system", &body).unwrap(),
            None
        );
        assert!(
            insert_once(&conn, "weekly", 6, "system", &body)
                .unwrap()
                .is_some()
        );
        let got = get(&conn, id).unwrap().unwrap();
        assert_eq!(got.body.unwrap()["week"], "2026-W47");
        let all = list(&conn).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all[0].body.is_none());
    }
}
