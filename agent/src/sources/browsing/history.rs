//! Reading visits from a history database, the same way for every browser: each browser module
//! supplies its SQL and its conversions in a [`Queries`].

use rusqlite::types::ValueRef;
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
    let mut rows = stmt.query([after, limit as i64])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        // SQLite lets any column hold any type, and the file is the pupil's: a text time or a
        // blob title must not fail the read (every later read would fail at the same row and
        // the profile would go quiet). Only an id that is not an integer cannot be followed.
        let Some(id) = integer(r.get_ref(0)?) else {
            continue;
        };
        out.push(RawVisit {
            id,
            url: text(r.get_ref(1)?),
            title: text(r.get_ref(2)?),
            time: integer(r.get_ref(3)?).unwrap_or(0),
            transition: integer(r.get_ref(4)?).unwrap_or(-1),
        });
    }
    Ok(out)
}

/// A column read as text whatever its stored type (None for NULL).
fn text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

/// A column read as an integer whatever its stored type (None when it holds none).
fn integer(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(i) => Some(i),
        // `as` saturates, and NaN becomes 0.
        ValueRef::Real(f) => Some(f as i64),
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.trim().parse().ok(),
        ValueRef::Null | ValueRef::Blob(_) => None,
    }
}

pub fn max_id(conn: &Connection, q: &Queries) -> rusqlite::Result<i64> {
    conn.query_row(q.max_id, [], |r| Ok(integer(r.get_ref(0)?).unwrap_or(0)))
}

/// Raw time of visit `id`, None when there is no such visit.
pub fn time_of(conn: &Connection, q: &Queries, id: i64) -> rusqlite::Result<Option<i64>> {
    conn.query_row(q.time_of, [id], |r| Ok(integer(r.get_ref(0)?).unwrap_or(0)))
        .optional()
}

/// The id just before the first visit later than `time` (raw), or the largest id when none is:
/// reading on from it yields exactly the visits after `time`, assuming ids grow with time.
pub fn base_after_time(conn: &Connection, q: &Queries, time: i64) -> rusqlite::Result<i64> {
    let first = conn.query_row(q.first_id_after, [time], |r| Ok(integer(r.get_ref(0)?)))?;
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
    fn values_of_the_wrong_type_neither_fail_the_read_nor_stop_it() {
        // Found by fuzzing: one row with a text time or a blob title made every read of the
        // profile fail at that row, so a pupil could silence their own history.
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE urls(id INTEGER PRIMARY KEY, url, title);
             CREATE TABLE visits(id INTEGER PRIMARY KEY, url, visit_time, transition);
             INSERT INTO urls VALUES (1, 'https://a.test/', x'ff41'), (2, 42, 'two');
             INSERT INTO visits VALUES (1, 1, 'soon', 'x'), (2, 2, 3.5, x'00'),
                                       (3, 1, 13300000000000000, 0);",
        )
        .unwrap();
        let v = visits_after(&conn, &QUERIES, 0, 10).unwrap();
        assert_eq!(v.iter().map(|v| v.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(v[0].title.as_deref(), Some("\u{fffd}A"));
        assert_eq!((v[0].time, v[0].transition), (0, -1));
        assert_eq!((v[1].url.as_deref(), v[1].time), (Some("42"), 3));
        assert_eq!(v[2].time, 13_300_000_000_000_000);
    }

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
