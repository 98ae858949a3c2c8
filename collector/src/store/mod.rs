//! The collector's store: all of its SQL, behind one seam. One SQLite file in the data
//! directory (`sqlite`), or a PostgreSQL database (`postgres`), through one connection type
//! (`db`).
//!
//! Nothing outside this module holds a connection: callers get typed handles from [`Store`]
//! (see [`access`] for who may hold which, and why the store is a module rather than a crate),
//! and each operation names the handle it needs. Monitored data is read through [`Audited`]
//! only, with its entry written in the same transaction. The writers: the ingest committer
//! (events and the alerts they raise, one transaction per group of batches) and short
//! administrative writes; readers use their own pooled connections, which WAL mode lets read
//! while ingest writes.

use invigilator_policy::Severity;
pub(in crate::store) use sqlite::{Durability, create, open};
use std::path::{Path, PathBuf};

pub mod access;
pub mod accounts;
pub mod agents;
pub mod alerts;
pub mod approvers;
pub mod audit;
pub mod ca_binding;
pub mod checks;
pub mod db;
pub mod delivery;
pub mod enrol_guard;
pub mod events;
pub mod extension;
pub mod incidents;
pub mod leader;
pub mod migrate;
pub mod outbox;
pub mod peers;
mod postgres;
pub mod reports;
pub mod retention;
pub mod reveals;
pub mod sar;
pub mod sessions;
mod sqlite;
pub mod tokens;
pub mod triage;
pub mod visits;
pub mod wakeups;

pub use access::{Admin, Audited, Scan, Sealed, Store, System};
pub use agents::{AgentHealth, AgentRow, NewAgent};
pub use alerts::{AlertFilter, AlertRow};
pub use events::{EventFilter, EventRow, StoredBatch};
pub use leader::Leadership;
pub use tokens::{TokenRejection, create_token};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open { path: PathBuf, source: db::Error },
    #[error("no collector data in {0}: run `invigilator-collector init --data-dir {0}` first")]
    NotInitialised(PathBuf),
    #[error("cannot make {path} readable by its owner only: {source}")]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The error is shown, not chained (a chain would print it twice).
    #[error("database {target}: {error}")]
    Database { target: String, error: db::Error },
    #[error(
        "the database's schema is version {found}, newer than this collector knows ({supported}): \
         run the collector version that upgraded it, or restore a backup from before the upgrade"
    )]
    NewerSchema { found: i64, supported: i64 },
    #[error("cannot read the database server's CA {path}: {message}")]
    DatabaseCa { path: PathBuf, message: String },
    #[error("database error: {0}")]
    Sql(#[from] db::Error),
    #[error("stored event {agent_id}/{seq} cannot be decoded: {message}")]
    Corrupt {
        agent_id: String,
        seq: u64,
        message: String,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// See [`db::Error::is_retryable`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Sql(e) | Self::Database { error: e, .. } if e.is_retryable())
    }
}

/// Where the store keeps its data: `[store]` in `collector.toml`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Empty: the embedded SQLite file. Else a PostgreSQL URL or key=value string.
    pub url: String,
    /// The database server's CA (PEM), relative to the data directory; empty: system roots.
    pub ca_file: String,
    /// Connections kept open between uses.
    pub max_idle: usize,
    /// Group commits made at once on PostgreSQL (one per lane of agents); SQLite has one
    /// writer and always one.
    pub commit_lanes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            ca_file: String::new(),
            max_idle: 8,
            commit_lanes: 2,
        }
    }
}

impl StoreConfig {
    /// The embedded SQLite file, as `init` and the tests make it.
    pub fn sqlite() -> Self {
        Self::default()
    }

    pub fn postgres(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            ..Self::default()
        }
    }

    pub fn is_postgres(&self) -> bool {
        !self.url.is_empty()
    }

    /// Committer threads to run: `commit_lanes` on PostgreSQL, one on SQLite.
    pub fn lanes(&self) -> usize {
        if self.is_postgres() {
            self.commit_lanes
        } else {
            1
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.is_postgres() {
            let parsed = self.url.parse::<::postgres::Config>().map_err(|e| {
                format!("store.url is not a PostgreSQL URL or key=value string: {e}")
            })?;
            if parsed.get_hosts().is_empty() {
                return Err(
                    "store.url names no host (host=/run/postgresql for a local socket)".into(),
                );
            }
        } else if !self.ca_file.is_empty() {
            return Err("store.ca_file is for a PostgreSQL store.url, which is empty".into());
        }
        if !(1..=256).contains(&self.max_idle) {
            return Err("store.max_idle must be between 1 and 256".into());
        }
        if !(1..=64).contains(&self.commit_lanes) {
            return Err("store.commit_lanes must be between 1 and 64".into());
        }
        Ok(())
    }
}

pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("invigilator.db")
}

/// A stored severity. The column only ever holds what [`Severity::as_str`] wrote; anything else
/// is a corrupt row, named as such rather than shown as some default.
pub(crate) fn severity(row: &db::Row<'_>, idx: usize) -> db::Result<Severity> {
    let text: String = row.get(idx)?;
    text.parse()
        .map_err(|e: invigilator_policy::UnknownSeverity| db::Error::decode(idx, e))
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
pub(crate) fn test_open(data_dir: &Path) -> db::Connection {
    open(data_dir, Durability::Normal).unwrap()
}

/// A fresh database for one test: SQLite in a temp dir, or, when `INVIGILATOR_TEST_POSTGRES`
/// names a server (tests/run.sh starts one), a schema of its own there. The store's tests run
/// once on each engine.
#[cfg(test)]
pub(crate) fn test_db() -> (tempfile::TempDir, db::Connection) {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config();
    let conn = if config.is_postgres() {
        let tls = db::PgTls::new(None).unwrap();
        // For Store::test_open on the same directory.
        std::fs::write(dir.path().join(TEST_STORE_URL), &config.url).unwrap();
        postgres::open(&config.url, &tls, dir.path()).unwrap()
    } else {
        create(dir.path()).unwrap()
    };
    (dir, conn)
}

/// Where [`test_db`] leaves its PostgreSQL schema's URL for [`Store::test_open`].
#[cfg(test)]
const TEST_STORE_URL: &str = "test-store-url";

#[cfg(test)]
impl Store {
    /// The store of a directory [`test_db`] made, on whichever engine it made it.
    pub(crate) fn test_open(dir: &Path) -> Store {
        Store::open(dir, &test_config_of(dir)).unwrap()
    }
}

/// The engine and database of a directory [`test_db`] made.
#[cfg(test)]
fn test_config_of(dir: &Path) -> StoreConfig {
    match std::fs::read_to_string(dir.join(TEST_STORE_URL)) {
        Ok(url) => StoreConfig::postgres(&url),
        Err(_) => StoreConfig::sqlite(),
    }
}

/// The engine the tests run on (see [`test_db`]): each PostgreSQL call gets a new schema.
#[cfg(test)]
pub(crate) fn test_config() -> StoreConfig {
    let Some(base) = std::env::var("INVIGILATOR_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())
    else {
        return StoreConfig::sqlite();
    };
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let tls = db::PgTls::new(None).unwrap();
    let conn = db::Connection::connect_postgres(&base, &tls, Path::new("/")).unwrap();
    conn.execute_batch(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    StoreConfig::postgres(&format!("{base} options='-c search_path={schema}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seam holds by construction (handles), and this keeps it so: no production code
    /// outside `store/` names either engine's crate. Tests may, to set up and inspect.
    #[test]
    fn a_schema_newer_than_this_collector_is_refused_and_left_alone() {
        let (dir, conn) = test_db();
        conn.execute(
            "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
            (),
        )
        .unwrap();
        conn.execute("INSERT INTO notices(at, text) VALUES (1, 'kept')", ())
            .unwrap();
        let err = Store::open(dir.path(), &test_config_of(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("version 99") && err.contains("newer than this collector"),
            "{err}"
        );
        let kept: String = conn
            .query_row("SELECT text FROM notices", (), |r| r.get(0))
            .unwrap();
        assert_eq!(kept, "kept");
    }

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
            if production.contains("rusqlite") || production.contains("postgres::") {
                offenders.push(name.into_owned());
            }
        }
        assert!(offenders.is_empty(), "SQL outside the store: {offenders:?}");
        // And the check itself can fail: the store's own files do name it.
        assert!(
            std::fs::read_to_string(src.join("store/db/mod.rs"))
                .unwrap()
                .contains("rusqlite")
        );
    }
}
