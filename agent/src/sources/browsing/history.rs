//! Reading visits from a history database, the same way for every browser: each browser module
//! supplies its SQL and its conversions in a [`Queries`].

use rusqlite::{Connection, OptionalExtension};

/// One browser's queries and conversions.
pub struct Queries {
    /// The tables the queries read: each must be a real table, not a view the database's
    /// author wrote (a view can compute for ever or hand back anything).
    pub tables: &'static [&'static str],
    /// (id, url, title, raw time, raw transition) of visits with id > ?1, by id, at most ?2.
    pub visits_after: &'static str,
    /// Largest visit id, 0 when there are none.
    pub max_id: &'static str,
    /// Raw time of visit ?1.
    pub time_of: &'static str,
    /// Smallest id of a visit with raw time > ?1 (NULL when none).
    pub first_id_after: &'static str,
    /// Browser time to microseconds since the Unix epoch, and back.
    pub to_unix_us: fn(i64) -> i64,
    pub from_unix_us: fn(i64) -> i64,
    pub transition: fn(i64) -> &'static str,
}

/// A visit as stored, before cleaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawVisit {
    pub id: i64,
    /// None when the visit's URL row is missing (a database being cleared mid-read).
    pub url: Option<String>,
    pub title: Option<String>,
    /// In the browser's epoch.
    pub time: i64,
    pub transition: i64,
}

/// The database's tables are what the queries expect; the error names the first that is not.
pub fn check_tables(conn: &Connection, q: &Queries) -> rusqlite::Result<()> {
    for table in q.tables {
        let kind: Option<String> = conn
            .query_row(
                "SELECT type FROM sqlite_schema WHERE name = ?1",
                [table],
                |r| r.get(0),
            )
            .optional()?;
        if kind.as_deref() != Some("table") {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "`{table}` is {} in this database, not a table",
                kind.as_deref().unwrap_or("missing")
            )));
        }
    }
    Ok(())
}

pub fn visits_after(
    conn: &Connection,
    q: &Queries,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<RawVisit>> {
    let mut stmt = conn.prepare_cached(q.visits_after)?;
    let rows = stmt.query_map([after, limit as i64], |r| {
        Ok(RawVisit {
            id: r.get(0)?,
            url: r.get(1)?,
            title: r.get(2)?,
            time: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
            transition: r.get::<_, Option<i64>>(4)?.unwrap_or(-1),
        })
    })?;
    rows.collect()
}

pub fn max_id(conn: &Connection, q: &Queries) -> rusqlite::Result<i64> {
    conn.query_row(q.max_id, [], |r| r.get(0))
}

/// Raw time of visit `id`, None when there is no such visit.
pub fn time_of(conn: &Connection, q: &Queries, id: i64) -> rusqlite::Result<Option<i64>> {
    conn.query_row(q.time_of, [id], |r| r.get::<_, Option<i64>>(0))
        .optional()
        .map(|t| t.map(|t| t.unwrap_or(0)))
}

/// The id just before the first visit later than `time` (raw), or the largest id when none is:
/// reading on from it yields exactly the visits after `time`, assuming ids grow with time.
pub fn base_after_time(conn: &Connection, q: &Queries, time: i64) -> rusqlite::Result<i64> {
    let first: Option<i64> = conn.query_row(q.first_id_after, [time], |r| r.get(0))?;
    match first {
        // The database's author chooses the ids: i64::MIN must not wrap to i64::MAX (a cursor
        // past every visit) or panic.
        Some(id) => Ok(id.saturating_sub(1)),
        None => max_id(conn, q),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::browsing::chromium::QUERIES;

    #[test]
    fn the_smallest_visit_id_does_not_overflow() {
        // Found by fuzzing (fuzz/corpus/history_rows/crash-visit-id-i64-min): a visit with id
        // i64::MIN made `base_after_time` subtract with overflow: a panic in debug builds, and
        // in release a cursor of i64::MAX that no later visit could pass.
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE urls(id INTEGER PRIMARY KEY, url, title);
             CREATE TABLE visits(id INTEGER PRIMARY KEY, url, visit_time, transition);
             INSERT INTO urls VALUES (1, 'https://example.test/', 'x');
             INSERT INTO visits VALUES (-9223372036854775808, 1, 5, 0), (7, 1, 6, 0);",
        )
        .unwrap();
        let base = base_after_time(&conn, &QUERIES, 0).unwrap();
        assert_eq!(base, i64::MIN);
        let ids: Vec<i64> = visits_after(&conn, &QUERIES, base, 10)
            .unwrap()
            .iter()
            .map(|v| v.id)
            .collect();
        assert_eq!(ids, [7]);
    }
}
