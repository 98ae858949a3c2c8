//! The collector's store: all of its SQL, behind one seam. One SQLite file in the data
//! directory today.
//!
//! Nothing outside this module holds a connection: callers get typed handles from [`Store`]
//! (see [`access`] for who may hold which, and why the store is a module rather than a crate),
//! and each operation names the handle it needs. Monitored data is read through [`Audited`]
//! only, with its entry written in the same transaction. The writers: the ingest committer
//! (events and the alerts they raise, one transaction per group of batches) and short
//! administrative writes; readers use their own pooled connections, which WAL mode lets read
//! while ingest writes.

use invigilator_policy::Severity;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod access;
pub mod accounts;
pub mod agents;
pub mod alerts;
pub mod approvers;
pub mod audit;
pub mod checks;
pub mod delivery;
pub mod enrol_guard;
pub mod events;
pub mod incidents;
pub mod outbox;
pub mod reports;
pub mod retention;
pub mod reveals;
pub mod sar;
pub mod sessions;
pub mod tokens;
pub mod triage;
pub mod visits;

pub use access::{Admin, Audited, Scan, Sealed, Store, System};
pub use agents::{AgentHealth, AgentRow, NewAgent};
pub use alerts::{AlertFilter, AlertRow};
pub use events::{EventFilter, EventRow, StoredBatch};
pub use tokens::{TokenRejection, create_token};

const SCHEMA: &str = include_str!("schema.sql");
const SCHEMA_VERSION: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("no collector data in {0}: run `invigilator-collector init --data-dir {0}` first")]
    NotInitialised(PathBuf),
    #[error("cannot make {path} readable by its owner only: {source}")]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored event {agent_id}/{seq} cannot be decoded: {message}")]
    Corrupt {
        agent_id: String,
        seq: u64,
        message: String,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("invigilator.db")
}

/// How a connection will be used, which decides its durability settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit: what an acknowledgement to an agent promises.
    Full,
    /// Health and bookkeeping, which the next heartbeat rewrites anyway.
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
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(path, flags).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(15)).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    owner_only(path).map_err(|source| StoreError::Permissions {
        path: path.to_path_buf(),
        source,
    })?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(err)?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(err)?;
    // Checks the file really is a database before anything relies on it.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
        .map_err(err)?;
    // Every statement is IF NOT EXISTS: opening also brings an older file up to date.
    conn.execute_batch(SCHEMA).map_err(err)?;
    migrate(&conn).map_err(err)?;
    if create {
        conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?1)",
            [SCHEMA_VERSION],
        )
        .map_err(err)?;
    }
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
    // Single sign-on (accounts::sso): the provider's person an account is, and whether the
    // sign-on created it (its role then follows the provider's groups).
    ("staff", "sso_issuer", "TEXT"),
    ("staff", "sso_subject", "TEXT"),
    ("staff", "role_from_sso", "INTEGER NOT NULL DEFAULT 0"),
];

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
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
    conn: &Connection,
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

fn add_columns(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column, decl) in missing_columns(conn)? {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS alerts_by_aggregate ON alerts (aggregate_key, last_observed_at);
         CREATE UNIQUE INDEX IF NOT EXISTS staff_by_sso ON staff (sso_issuer, sso_subject)
             WHERE sso_subject IS NOT NULL;",
    )
}

/// A stored severity. The column only ever holds what [`Severity::as_str`] wrote; anything else
/// is a corrupt row, named as such rather than shown as some default.
pub(crate) fn severity(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Severity> {
    let text: String = row.get(idx)?;
    text.parse()
        .map_err(|e: invigilator_policy::UnknownSeverity| {
            rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
        })
}

pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// RFC 3339 (UTC, microseconds) for a stored time.
pub fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A connection of a test's own, to set up and inspect what the code under test stored.
#[cfg(test)]
pub(crate) fn test_open(data_dir: &Path) -> Connection {
    open(data_dir, Durability::Normal).unwrap()
}

#[cfg(test)]
pub(crate) fn test_db() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let conn = create(dir.path()).unwrap();
    (dir, conn)
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

    /// The seam holds by construction (handles), and this keeps it so: no production code
    /// outside `store/` names the SQLite crate. Tests may, to set up and inspect.
    #[test]
    fn no_sql_outside_the_store() {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&src, &mut files);
        // Test modules declared from a file (`mod tests;`) are files of their own, skipped
        // below; an inline one runs to the end of its file.
        let declared =
            regex::Regex::new(r#"#\[cfg\(test\)\]\s*(#\[path = "[^"]*"\]\s*)?mod \w+;"#).unwrap();
        let mut offenders = Vec::new();
        for f in files {
            let rel = f.strip_prefix(&src).unwrap();
            let name = rel.to_string_lossy();
            if rel.starts_with("store") || name.ends_with("tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            let text = declared.replace_all(&text, "");
            let production = text
                .split("#[cfg(test)]\nmod tests {")
                .next()
                .unwrap_or_default();
            if production.contains("rusqlite") {
                offenders.push(name.into_owned());
            }
        }
        assert!(offenders.is_empty(), "SQL outside the store: {offenders:?}");
        // And the check itself can fail: the store's own files do name it.
        assert!(
            std::fs::read_to_string(src.join("store/access.rs"))
                .unwrap()
                .contains("rusqlite")
        );
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
        assert_eq!(missing_columns(&conn).unwrap().len(), 2);
        drop(conn);
        let conn = open(dir.path(), Durability::Normal).unwrap();
        assert!(missing_columns(&conn).unwrap().is_empty());
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
