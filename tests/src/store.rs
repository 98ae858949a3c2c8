//! The database a test's collector keeps its data in, read and written the way the test needs
//! (to inspect what was stored, or to tamper as an attacker with database access would).
//!
//! SQLite in the data directory by default. When `INVIGILATOR_TEST_POSTGRES` names a server
//! (tests/run.sh's PostgreSQL pass starts one with tests/postgres.sh), each collector gets a
//! database of its own there, made by `init --store-url`.

use std::path::{Path, PathBuf};

const ENV: &str = "INVIGILATOR_TEST_POSTGRES";

/// A new, empty PostgreSQL database for one collector, when the tests run on PostgreSQL.
pub fn new_postgres_url() -> Option<String> {
    let base = std::env::var(ENV).ok().filter(|s| !s.is_empty())?;
    let name = format!("c_{}", uuid::Uuid::new_v4().simple());
    on_own_thread(move || {
        let mut admin = postgres::Client::connect(&base, postgres::NoTls)
            .unwrap_or_else(|e| panic!("{ENV}={base}: {e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        Some(format!("{base} dbname={name}"))
    })
}

/// `f` on a new connection to `url`, on a thread of its own (see [`on_own_thread`]).
fn with_client<R: Send + 'static>(
    url: &str,
    f: impl FnOnce(&mut postgres::Client) -> R + Send + 'static,
) -> R {
    let url = url.to_owned();
    on_own_thread(move || f(&mut postgres::Client::connect(&url, postgres::NoTls).unwrap()))
}

/// The sync PostgreSQL client blocks on a runtime of its own, which must not be inside the
/// caller's (a `#[tokio::test]`).
fn on_own_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(f).join().unwrap()
}

/// Runs `tests/postgres.sh CMD DIR` with `env`; what it printed.
fn postgres_sh(cmd: &str, dir: &Path, env: &[(&str, String)]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("postgres.sh");
    let out = std::process::Command::new(&script)
        .arg(cmd)
        .arg(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script:?} {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A PostgreSQL server of a test's own (tests/postgres.sh), stopped when dropped.
pub struct PgServer {
    dir: tempfile::TempDir,
    url: String,
}

impl PgServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With `PG_TLS_DIR` and `PG_PORT` in `env`: TCP on loopback with TLS only.
    pub fn start_with(env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = postgres_sh("start", &dir.path().join("pg"), env);
        Self { dir, url }
    }

    /// Where the server's Unix socket is (it listens there whatever else it does).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("pg")
    }

    /// Stops the server at once (every connection cut, as in a crash) and starts it again.
    pub fn restart(&self) {
        postgres_sh("restart", &self.socket_dir(), &[]);
    }

    /// A new, empty database on the server.
    pub fn new_database(&self) -> String {
        let name = format!("d_{}", uuid::Uuid::new_v4().simple());
        TestDb::Postgres(self.url.clone()).execute_batch(&format!("CREATE DATABASE {name}"));
        format!("{} dbname={name}", self.url)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("postgres.sh");
        let _ = std::process::Command::new(script)
            .arg("stop")
            .arg(self.socket_dir())
            .output();
    }
}

/// One collector's database.
pub enum TestDb {
    Sqlite(rusqlite::Connection),
    Postgres(String),
}

impl TestDb {
    pub fn open(data_dir: &Path, postgres_url: Option<&str>) -> Self {
        match postgres_url {
            Some(url) => Self::Postgres(url.to_owned()),
            None => {
                Self::Sqlite(rusqlite::Connection::open(data_dir.join("invigilator.db")).unwrap())
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Statements without parameters (the tests write their values in).
    pub fn execute_batch(&self, sql: &str) {
        match self {
            Self::Sqlite(c) => c.execute_batch(sql).unwrap(),
            Self::Postgres(url) => {
                let sql = sql.to_owned();
                with_client(url, move |c| c.batch_execute(&sql).unwrap())
            }
        }
    }

    /// The first column of every row, as text (NULL as "").
    pub fn column(&self, sql: &str) -> Vec<String> {
        match self {
            Self::Sqlite(c) => {
                let mut stmt = c.prepare(sql).unwrap();
                stmt.query_map([], |r| {
                    Ok(match r.get_ref(0)? {
                        rusqlite::types::ValueRef::Null => String::new(),
                        rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                        rusqlite::types::ValueRef::Real(f) => f.to_string(),
                        rusqlite::types::ValueRef::Text(t) => {
                            String::from_utf8_lossy(t).into_owned()
                        }
                        rusqlite::types::ValueRef::Blob(b) => hex(b),
                    })
                })
                .unwrap()
                .map(Result::unwrap)
                .collect()
            }
            Self::Postgres(url) => {
                let sql = sql.to_owned();
                with_client(url, move |c| {
                    // As text, whatever the column's type: the simple protocol sends it so.
                    c.simple_query(&sql)
                        .unwrap()
                        .into_iter()
                        .filter_map(|m| match m {
                            postgres::SimpleQueryMessage::Row(r) => {
                                Some(r.get(0).unwrap_or_default().to_owned())
                            }
                            _ => None,
                        })
                        .collect()
                })
            }
        }
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.column(sql)
            .first()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("not a count: {sql}"))
    }

    /// The first column of every row, a blob (an event's protobuf payload).
    pub fn blobs(&self, sql: &str) -> Vec<Vec<u8>> {
        match self {
            Self::Sqlite(c) => {
                let mut stmt = c.prepare(sql).unwrap();
                stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
            Self::Postgres(url) => {
                let sql = sql.to_owned();
                with_client(url, move |c| {
                    c.query(&sql, &[])
                        .unwrap()
                        .iter()
                        .map(|r| r.get::<_, Vec<u8>>(0))
                        .collect()
                })
            }
        }
    }

    /// Everything the database holds, as bytes to search (a secret must not be among them).
    pub fn dump(&self, data_dir: &Path) -> Vec<u8> {
        match self {
            Self::Sqlite(_) => std::fs::read(data_dir.join("invigilator.db")).unwrap(),
            Self::Postgres(url) => {
                // Blobs (an event's payload) in escape form, where printable text stays
                // readable: in the default hex form a secret inside one would not be found.
                let out = std::process::Command::new("pg_dump")
                    .env("PGOPTIONS", "-c bytea_output=escape")
                    .args(["--data-only", "--dbname", url])
                    .output()
                    .expect("pg_dump (Debian's postgresql-client)");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                out.stdout
            }
        }
    }

    /// Switches off the audit trail's append-only guard, as an attacker with the database
    /// could: the chain, not the guard, must catch what follows.
    pub fn drop_audit_guard(&self) {
        self.execute_batch(if self.is_postgres() {
            "ALTER TABLE audit_log DISABLE TRIGGER USER"
        } else {
            "DROP TRIGGER audit_log_append_only_u; DROP TRIGGER audit_log_append_only_d;"
        });
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
