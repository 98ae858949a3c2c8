//! The embedded engine: one SQLite file in the data directory, in WAL mode.

use super::db::Connection;
use super::{Result, StoreError, db_path};
use rusqlite::{OpenFlags, OptionalExtension};
use std::path::Path;
use std::time::Duration;

const SCHEMA: &str = include_str!("schema.sql");
const SCHEMA_VERSION: &str = "1";

/// How a connection will be used, which decides its durability settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit: what an acknowledgement to an agent promises.
    Full,
    /// A test's own connection, which needs no fsync.
    #[cfg(test)]
    Normal,
}

/// Opens the database of an initialised data directory. Only the store opens connections:
/// everything else goes through [`Store`].
pub(in crate::store) fn open(data_dir: &Path, durability: Durability) -> Result<Connection> {
    let path = db_path(data_dir);
    if !path.exists() {
        return Err(StoreError::NotInitialised(data_dir.to_path_buf()));
    }
    open_path(&path, durability, false)
}

/// Creates the database (for `init`, through [`Store::create`]).
pub(in crate::store) fn create(data_dir: &Path) -> Result<Connection> {
    open_path(&db_path(data_dir), Durability::Full, true)
}

/// The database holds password hashes, TOTP secrets and children's data: its directory is
/// the owner's only (0700) and its files too (0600), whatever mode an existing directory or file
/// had (`init` into a 0755 directory once left the database 0644). SQLite gives the -wal and
/// -shm files the database's mode when it creates them.
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &Path, mode| match std::fs::set_permissions(p, PermissionsExt::from_mode(mode)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        set(dir, 0o700)?;
    }
    for sfx in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(sfx);
        set(Path::new(&p), 0o600)?;
    }
    Ok(())
}

fn open_path(path: &Path, durability: Durability, create: bool) -> Result<Connection> {
    let err = |source: rusqlite::Error| StoreError::Open {
        path: path.to_path_buf(),
        source: source.into(),
    };
    let conn = open_file(path, durability, create).map_err(err)?;
    owner_only(path).map_err(|source| StoreError::Permissions {
        path: path.to_path_buf(),
        source,
    })?;
    // A file a newer collector has changed is not touched: its tables may mean other things.
    let version: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .or_else(|e| match e {
            // A file from before the meta table.
            rusqlite::Error::SqliteFailure(_, Some(m)) if m.contains("no such table") => Ok(None),
            e => Err(e),
        })
        .map_err(err)?;
    let found = version.map_or(0, |v| v.parse::<i64>().unwrap_or(i64::MAX));
    let supported: i64 = SCHEMA_VERSION.parse().expect("a number");
    if found > supported {
        return Err(StoreError::NewerSchema { found, supported });
    }
    // Every statement is IF NOT EXISTS: opening also brings an older file up to date.
    conn.execute_batch(SCHEMA).map_err(err)?;
    migrate(&conn).map_err(err)?;
    if create {
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [SCHEMA_VERSION],
        )
        .map_err(err)?;
    }
    Ok(Connection::sqlite(conn))
}

fn open_file(
    path: &Path,
    durability: Durability,
    create: bool,
) -> rusqlite::Result<rusqlite::Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = rusqlite::Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(15))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    sql_functions(&conn)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let sync = match durability {
        Durability::Full => "FULL",
        #[cfg(test)]
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    // Checks the file really is a database before anything relies on it.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
    Ok(conn)
}

/// Columns added after a table was first released, with what they need. SQLite has no
/// `ADD COLUMN IF NOT EXISTS`, so each is added only when `table_info` lacks it.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    // Aggregation: repeats of one breach update a single alert.
    ("alerts", "count", "INTEGER NOT NULL DEFAULT 1"),
    ("alerts", "last_observed_at", "INTEGER"),
    ("alerts", "aggregate_key", "TEXT"),
    // The sanctions table's recommended response for this user.
    ("alerts", "response", "TEXT NOT NULL DEFAULT ''"),
    // Triage (console): who has it, and when its status last changed.
    ("alerts", "assigned_to", "TEXT"),
    ("alerts", "updated_at", "INTEGER"),
    // Delivery progress, for the "agent stalled" alert: the highest sequence committed, when.
    ("agents", "acked_seq", "INTEGER NOT NULL DEFAULT 0"),
    ("agents", "acked_at", "INTEGER"),
    ("agents", "stalled_alerted", "INTEGER NOT NULL DEFAULT 0"),
    // Who made the account and who last reset its password (a console user, or "cli"): an
    // approver of a reveal must not be an account its requester made or reset.
    ("staff", "created_by", "TEXT"),
    ("staff", "reset_by", "TEXT"),
    // The audit chain an entry belongs to (audit::WRITER): one per collector writing.
    ("audit_log", "writer", "TEXT NOT NULL DEFAULT 'collector'"),
    // The certificate a renewal replaced: refused from then on, except to renew again (the
    // agent may not have received the new one).
    ("agents", "prev_cert_serial", "TEXT"),
    // The boot the agent last reported ("boot" session events): a new one closes the device's
    // sessions.
    ("agents", "boot_id", "TEXT"),
    // Why the agent's preferred process source is not the one running, and the eBPF exec
    // program's counters (heartbeat `process_stats`).
    ("agents", "process_fallback", "TEXT NOT NULL DEFAULT ''"),
    ("agents", "process_seen", "INTEGER NOT NULL DEFAULT 0"),
    ("agents", "process_dropped", "INTEGER NOT NULL DEFAULT 0"),
    ("agents", "process_truncated", "INTEGER NOT NULL DEFAULT 0"),
    // The browsers' managed-policy posture from the heartbeat (JSON), the browsers in it where
    // a pupil can browse unseen (comma-separated; '' when none), and whether that was alerted.
    ("agents", "browser_posture", "TEXT NOT NULL DEFAULT ''"),
    ("agents", "browsers_unseen", "TEXT NOT NULL DEFAULT ''"),
    ("agents", "posture_alerted", "INTEGER NOT NULL DEFAULT 0"),
    // Browsers running without the extension connected, by user ("chromium: amy; ..."; ''
    // when none), and whether that was alerted.
    ("agents", "extension_missing", "TEXT NOT NULL DEFAULT ''"),
    ("agents", "extension_alerted", "INTEGER NOT NULL DEFAULT 0"),
    // The agent's newest event stream, on whichever collector (delivery::open_stream).
    ("agents", "stream_epoch", "INTEGER NOT NULL DEFAULT 0"),
    // The agent's quotas as the last collector left them (delivery::Ration, delivery::Bucket):
    // new streams left and when, rate allowance in bytes and when. NULL: full.
    ("agents", "stream_allowance", "REAL"),
    ("agents", "stream_allowance_at", "INTEGER"),
    ("agents", "rate_tokens", "REAL"),
    ("agents", "rate_tokens_at", "INTEGER"),
    // Single sign-on (accounts::sso): the provider's person an account is, and whether the
    // sign-on created it (its role then follows the provider's groups).
    ("staff", "sso_issuer", "TEXT"),
    ("staff", "sso_subject", "TEXT"),
    ("staff", "role_from_sso", "INTEGER NOT NULL DEFAULT 0"),
    // Numbering lanes handed to the browser extension's instances on a device without an
    // agent (store::extension): each browser profile numbers its visits in its own lane.
    ("agents", "extension_lanes", "INTEGER NOT NULL DEFAULT 0"),
];

/// Statements kept prepared per connection: the store has a few hundred texts.
const STATEMENT_CACHE: usize = 512;

/// PostgreSQL's scalar `greatest` and `least`, which SQLite spells as two-argument `max` and
/// `min`: the store writes the former, so that one text serves both engines.
pub(in crate::store) fn sql_functions(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    use rusqlite::types::Value;
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    for (name, greater) in [("greatest", true), ("least", false)] {
        conn.create_scalar_function(name, -1, flags, move |ctx| {
            // As PostgreSQL: NULLs are ignored, and NULL only when every argument is.
            let mut best: Option<Value> = None;
            for i in 0..ctx.len() {
                let v: Value = ctx.get(i)?;
                if v == Value::Null {
                    continue;
                }
                best = Some(match best {
                    None => v,
                    Some(b) => {
                        let keep_new = match (&v, &b) {
                            (Value::Integer(x), Value::Integer(y)) => (x > y) == greater,
                            (Value::Real(x), Value::Real(y)) => (x > y) == greater,
                            (Value::Integer(x), Value::Real(y)) => ((*x as f64) > *y) == greater,
                            (Value::Real(x), Value::Integer(y)) => (*x > *y as f64) == greater,
                            (Value::Text(x), Value::Text(y)) => (x > y) == greater,
                            _ => false,
                        };
                        if keep_new { v } else { b }
                    }
                });
            }
            Ok(best.unwrap_or(Value::Null))
        })?;
    }
    Ok(())
}

fn migrate(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    // Most opens (every CLI read) find nothing to do: they must not queue for the write lock.
    if missing_columns(conn)?.is_empty() {
        return Ok(());
    }
    // Several connections open at start-up; the write lock makes one of them do the work, and
    // the others find it done when they look again under the lock.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = add_columns(conn);
    conn.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
    result
}

fn missing_columns(
    conn: &rusqlite::Connection,
) -> rusqlite::Result<Vec<&'static (&'static str, &'static str, &'static str)>> {
    let mut missing = Vec::new();
    for added @ (table, column, _) in ADDED_COLUMNS {
        let exists: bool = conn.query_row(
            &format!("SELECT count(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
            [column],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !exists {
            missing.push(added);
        }
    }
    Ok(missing)
}

fn add_columns(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    for (table, column, decl) in missing_columns(conn)? {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS alerts_by_aggregate ON alerts (aggregate_key, last_observed_at);
         CREATE UNIQUE INDEX IF NOT EXISTS staff_by_sso ON staff (sso_issuer, sso_subject)
             WHERE sso_subject IS NOT NULL;",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_the_owners_only_whatever_existed_before() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
        drop(create(dir.path()).unwrap());
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&db_path(dir.path())), 0o600);
        // Loosened by hand later: tightened again at the next open.
        std::fs::set_permissions(db_path(dir.path()), PermissionsExt::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
        let _conn = open(dir.path(), Durability::Full).unwrap();
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&db_path(dir.path())), 0o600);
    }

    #[test]
    fn an_uninitialised_dir_says_to_run_init() {
        let dir = tempfile::tempdir().unwrap();
        let err = open(dir.path(), Durability::Full).unwrap_err().to_string();
        assert!(err.contains("init"), "{err}");
    }

    #[test]
    fn an_older_file_gains_the_added_columns_once() {
        let dir = tempfile::tempdir().unwrap();
        let conn = create(dir.path()).unwrap();
        conn.execute_batch(
            "DROP INDEX alerts_by_aggregate;
             ALTER TABLE alerts DROP COLUMN aggregate_key;
             ALTER TABLE alerts DROP COLUMN response;",
        )
        .unwrap();
        assert_eq!(missing_columns(conn.as_sqlite().unwrap()).unwrap().len(), 2);
        drop(conn);
        let conn = open(dir.path(), Durability::Normal).unwrap();
        assert!(
            missing_columns(conn.as_sqlite().unwrap())
                .unwrap()
                .is_empty()
        );
        // Opening again finds nothing to do.
        drop(open(dir.path(), Durability::Normal).unwrap());
        let index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'alerts_by_aggregate'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, 1);
    }

    #[test]
    fn a_corrupt_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(db_path(dir.path()), vec![0x42u8; 8192]).unwrap();
        let err = open(dir.path(), Durability::Full).unwrap_err().to_string();
        assert!(err.contains("invigilator.db"), "{err}");
    }
}
