//! The shared engine: a PostgreSQL database, for a trust's or region's collectors.
//!
//! The schema is versioned: each migration is one SQL file, applied in order under an advisory
//! lock (several collectors may start at once) and recorded in `meta.schema_version`. A
//! database whose version is newer than this collector knows is refused, with what to do.
//!
//! Events are partitioned by week of their collector-clamped time (`observed_at`, never the
//! device's claim): [`ensure_partitions`] makes the weeks around now, and retention drops a
//! week whole once all of it is past its period.

use super::db::{Connection, OptionalExtension, PgTls};
use super::{Result, StoreConfig, StoreError};
use std::path::Path;

/// The migrations, oldest first; a database at version N has had the first N applied.
const MIGRATIONS: &[&str] = &[
    include_str!("postgres/0001_schema.sql"),
    include_str!("postgres/0002_alert_wakeups.sql"),
    include_str!("postgres/0003_fleet.sql"),
    include_str!("postgres/0004_extension.sql"),
];

/// Any number, the same in every collector: the lock that makes one of several collectors
/// starting together apply the migrations while the others wait.
const MIGRATION_LOCK: i64 = 0x0019_E71A;

pub(super) const WEEK_US: i64 = 7 * 86_400_000_000;

/// Connects and brings the schema up to date; refuses a newer one.
pub(in crate::store) fn open(url: &str, tls: &PgTls, data_dir: &Path) -> Result<Connection> {
    let conn = connect(url, tls, data_dir)?;
    migrate(&conn).map_err(|e| match e {
        StoreError::Sql(error) => StoreError::Database {
            target: redacted(url),
            error,
        },
        e => e,
    })?;
    ensure_partitions(&conn, super::now_us())?;
    Ok(conn)
}

/// TLS to the database `config` names: its CA file (relative to the data directory), or the
/// system's roots.
pub(in crate::store) fn tls(data_dir: &Path, config: &StoreConfig) -> Result<PgTls> {
    let ca = (!config.ca_file.is_empty()).then(|| data_dir.join(&config.ca_file));
    PgTls::new(ca.as_deref()).map_err(|message| StoreError::DatabaseCa {
        path: ca.unwrap_or_default(),
        message,
    })
}

/// A further connection of the pool: the schema was checked by the first.
pub(in crate::store) fn connect(url: &str, tls: &PgTls, data_dir: &Path) -> Result<Connection> {
    Connection::connect_postgres(url, tls, data_dir).map_err(|error| StoreError::Database {
        target: redacted(url),
        error,
    })
}

/// The URL as it may be shown: without its password.
pub(in crate::store) fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        // A key=value string: show only which host and database it names.
        Err(_) => url
            .split_whitespace()
            .filter(|kv| !kv.starts_with("password="))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn migrate(conn: &Connection) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.query_row("SELECT pg_advisory_xact_lock(?1)", [MIGRATION_LOCK], |_| {
        Ok(())
    })?;
    let has_meta: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                        WHERE table_schema = current_schema() AND table_name = 'meta')",
        (),
        |r| r.get(0),
    )?;
    let version: i64 = if has_meta {
        tx.query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            (),
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .map(|v| v.parse().unwrap_or(i64::MAX))
        .unwrap_or(0)
    } else {
        0
    };
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::NewerSchema {
            found: version,
            supported: known,
        });
    }
    for sql in &MIGRATIONS[version as usize..] {
        tx.execute_batch(sql)?;
    }
    if version < known {
        tx.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [known.to_string()],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// The start of the week (Thursday 00:00 UTC, the epoch's weekday) that `us` falls in.
pub(super) fn week_of(us: i64) -> i64 {
    us.div_euclid(WEEK_US) * WEEK_US
}

fn partition_name(week_start: i64) -> String {
    format!("events_w{}", week_start.div_euclid(WEEK_US))
}

/// Makes the weekly partitions from `back` weeks before now to four weeks ahead, so that an
/// event's week exists before it arrives (an agent may deliver weeks late, within the offline
/// allowance). Events outside land in the default partition.
pub(in crate::store) fn ensure_partitions(conn: &Connection, now_us: i64) -> Result<()> {
    let back = 8;
    let this = week_of(now_us);
    for w in -back..=4 {
        make_partition(conn, this + w * WEEK_US)?;
    }
    Ok(())
}

/// Makes the partition of the week starting at `start`, unless it exists.
fn make_partition(conn: &Connection, start: i64) -> Result<()> {
    let name = partition_name(start);
    let exists: bool =
        conn.query_row("SELECT to_regclass(?1) IS NOT NULL", [&name], |r| r.get(0))?;
    if exists {
        return Ok(());
    }
    // Rows of this week already in the default partition (written while it was missing) would
    // make the new partition's bounds a lie: PostgreSQL refuses, and the week stays in the
    // default, which retention still clears row by row.
    let made = conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {name} PARTITION OF events
         FOR VALUES FROM ({start}) TO ({})",
        start + WEEK_US
    ));
    if let Err(e) = made {
        tracing::warn!(partition = %name, error = %e, "cannot make the week's event partition");
    }
    Ok(())
}

/// Makes the weekly partitions of every week from `first_us` to `last_us` (a copied store's
/// events, which may go back further than the weeks made at start).
pub(in crate::store) fn ensure_partitions_between(
    conn: &Connection,
    first_us: i64,
    last_us: i64,
) -> Result<()> {
    // Ten years at most: anything older stays in the default partition.
    let mut week = week_of(first_us.max(last_us.saturating_sub(520 * WEEK_US)));
    while week <= last_us {
        make_partition(conn, week)?;
        week += WEEK_US;
    }
    Ok(())
}

/// The weekly partitions that end at or before `before`, oldest first: retention drops them.
pub(in crate::store) fn partitions_before(conn: &Connection, before: i64) -> Result<Vec<String>> {
    let names = conn
        .prepare(
            "SELECT c.relname FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_class p ON p.oid = i.inhparent
             WHERE p.relname = 'events' AND c.relname LIKE 'events\\_w%'
               AND p.relnamespace = current_schema()::regnamespace",
        )?
        .query_map((), |r| r.get::<_, String>(0))?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut weeks: Vec<(i64, String)> = names
        .into_iter()
        .filter_map(|n| Some((n.strip_prefix("events_w")?.parse::<i64>().ok()?, n)))
        .filter(|(w, _)| (w + 1) * WEEK_US <= before)
        .collect();
    weeks.sort();
    Ok(weeks.into_iter().map(|(_, n)| n).collect())
}

/// Drops one week of events, with the visit reports that point into it (they are not foreign
/// keys on a partitioned table); returns how many events went.
pub(in crate::store) fn drop_partition(conn: &Connection, name: &str) -> Result<u64> {
    // Names come from partitions_before, which only returns events_w<digits>.
    debug_assert!(
        name.strip_prefix("events_w")
            .is_some_and(|w| w.parse::<i64>().is_ok())
    );
    let tx = conn.unchecked_transaction()?;
    let n: i64 = tx.query_row(&format!("SELECT count(*) FROM {name}"), (), |r| r.get(0))?;
    tx.execute(
        &format!("DELETE FROM visit_reports v USING {name} e WHERE v.event_id = e.id"),
        (),
    )?;
    tx.execute(
        &format!(
            "UPDATE visit_reports SET same_as = NULL WHERE same_as IN (SELECT id FROM {name})"
        ),
        (),
    )?;
    tx.execute_batch(&format!("DROP TABLE {name}"))?;
    tx.commit()?;
    Ok(n.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(
            redacted("postgres://inv:s3cret@db.example:5432/invigilator"),
            "postgres://inv:***@db.example:5432/invigilator"
        );
        assert_eq!(
            redacted("host=db user=inv password=s3cret dbname=x"),
            "host=db user=inv dbname=x"
        );
    }

    /// A database that cannot be reached is named (without its password) with the reason, in
    /// well under the connect timeout when nothing listens.
    #[test]
    fn an_unreachable_database_is_named_with_the_reason_and_no_password() {
        let dir = tempfile::tempdir().unwrap();
        let url = "postgres://inv:s3cret@127.0.0.1:1/invigilator";
        let err = crate::store::Store::open(dir.path(), &crate::store::StoreConfig::postgres(url))
            .unwrap_err()
            .to_string();
        assert!(err.contains("127.0.0.1:1/invigilator"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        assert!(err.to_lowercase().contains("refused"), "{err}");
    }

    #[test]
    fn a_url_that_is_not_one_is_refused_at_load() {
        for bad in ["mysql://x/y", "postgres://", "host="] {
            let cfg = crate::store::StoreConfig::postgres(bad);
            assert!(cfg.validate().is_err(), "{bad}");
        }
        assert!(
            crate::store::StoreConfig::postgres("host=/run/postgresql dbname=x")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn weeks_start_on_a_boundary_and_name_their_partition() {
        let t = 1_764_806_400_000_000; // 2025-12-04 00:00 UTC, a Thursday
        assert_eq!(week_of(t), t);
        assert_eq!(week_of(t + WEEK_US - 1), t);
        assert_eq!(week_of(t - 1), t - WEEK_US);
        assert_eq!(partition_name(t), format!("events_w{}", t / WEEK_US));
        assert_eq!(week_of(-1), -WEEK_US);
    }
}
