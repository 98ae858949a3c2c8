//! The one way into the store, and what each kind of caller may do there.
//!
//! Nothing outside `store` holds a connection. A caller gets a short-lived handle for one
//! closure, and the handle's type decides which operations it can name:
//!
//! - [`Audited`]: monitored data (events, alerts, incidents, checks, reveals, subject access,
//!   the trail itself) and the changes staff make to it. Made only by [`Store::audited`], which
//!   writes the caller's audit entry in the same transaction: a read is returned, and a change
//!   kept, only once its entry is written. The console, its API and the CLI read this way.
//! - [`Admin`]: staff accounts, log-in sessions and back-off, enrolment tokens, the agent
//!   registry, settings and notices. None of it is children's data; what is done to it is
//!   audited where it matters (log-ins, account changes) by the callers that know why.
//! - [`System`]: the collector's own work (committing batches and the alerts they raise,
//!   aggregation, agent watches, notification and report outboxes, quotas). Made only by
//!   [`Store::system`] with a [`SystemKey`], which only `serve` can mint and hands to the
//!   services it starts: the console and the CLI are never given one, so they cannot
//!   reach these reads.
//!
//! The store is a module of the collector crate rather than a crate of its own because these
//! capabilities are enforced by module privacy: the key's constructor is private to `serve`,
//! which a separate store crate could not express.
//!
//! Two engines, chosen in `collector.toml` (`[store] url`): the SQLite file in WAL mode, or a
//! PostgreSQL database. Connections are pooled, each used by one closure at a time. A handle
//! holds a [`super::db::Connection`], an enum over the two engines rather than a trait: an
//! operation is written once in the SQL both read, and where they differ it matches on the
//! dialect, the two versions side by side (see `store::db` for why). A trait would put every
//! operation twice in two impls far apart, and make every caller generic over the engine (or
//! pay for a trait object) for no gain: a collector runs one engine.
//!
//! # What the compiler refuses
//!
//! These are compile-fail tests (`cargo test --doc`), each pinned to the error it must fail
//! with, beside one that compiles to show the paths are real.
//!
//! An audited read compiles:
//! ```no_run
//! use invigilator_collector::store::audit::{Actor, Audit, AuditError};
//! use invigilator_collector::store::{self, EventFilter, Store};
//! # fn f(store: &Store) -> Result<(), AuditError> {
//! let rows = store.audited(&Actor::cli(), |tx| {
//!     let rows = store::events::list(tx, &EventFilter::default())?;
//!     Ok::<_, AuditError>((rows, Audit::new("event.list", "events")))
//! })?;
//! # Ok(()) }
//! ```
//! Monitored data cannot be read with the accounts handle:
//! ```compile_fail,E0308
//! use invigilator_collector::store::{self, EventFilter, Store};
//! # fn f(store: &Store) -> Result<(), store::StoreError> {
//! let rows = store.admin(|a| store::events::list(a, &EventFilter::default()))?;
//! # Ok(()) }
//! ```
//! Nor can an audited handle be made without its entry:
//! ```compile_fail,E0451
//! # fn f(conn: &invigilator_collector::store::db::Connection) {
//! let tx = invigilator_collector::store::Audited { conn };
//! # }
//! ```
//! Nor can a connection be opened outside the store:
//! ```compile_fail,E0603
//! # fn f(dir: &std::path::Path) {
//! let conn = invigilator_collector::store::open(dir, invigilator_collector::store::Durability::Full);
//! # }
//! ```
//! A scan's result stays sealed until an audited transaction releases it:
//! ```compile_fail,E0616
//! use invigilator_collector::store::{self, Store};
//! # fn f(store: &Store) -> Result<(), store::StoreError> {
//! let sealed = store.scan(|s| store::sar::export(s, "amy"))?;
//! let export = sealed.0;
//! # Ok(()) }
//! ```
//! And only `serve` can mint the key to the system's own reads:
//! ```compile_fail,E0423
//! use invigilator_collector::{serve::SystemKey, store::{self, Store}};
//! # fn f(store: &Store) -> Result<(), store::StoreError> {
//! let due = store.system(&SystemKey(()), |s| store::outbox::after(s, 0, 100))?;
//! # Ok(()) }
//! ```

use super::audit::{self, Actor, Audit, AuditError};
use super::db::PgTls;
use super::{Durability, Result, StoreConfig, StoreError};
use crate::serve::SystemKey;
use crate::store::db::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A collector's store. Cheap to clone; every clone shares the pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    data_dir: PathBuf,
    engine: Engine,
    max_idle: usize,
    idle: Mutex<Vec<Connection>>,
    wakeups: std::sync::OnceLock<super::wakeups::AlertWakeups>,
}

/// Where new connections of the pool go.
enum Engine {
    Sqlite,
    Postgres { url: String, tls: PgTls },
}

/// Monitored data, readable only once its audit entry is written (see the module doc).
pub struct Audited<'a> {
    pub(in crate::store) conn: &'a Connection,
}

/// Staff accounts, sessions, tokens, the agent registry and settings: no children's data.
pub struct Admin<'a> {
    pub(in crate::store) conn: &'a Connection,
}

/// A long read outside any write transaction (a leadership check's scan), so that ingest and
/// other staff do not wait for it. What it produces is sealed: its content reaches a caller
/// only through an [`Audited`] operation that stores it under its entry.
pub struct Scan<'a> {
    pub(in crate::store) conn: &'a Connection,
}

/// What a [`Scan`] produced: readable only through [`Audited::unseal`], in the transaction
/// that writes its entry. The store gives each sealed result the summary its entry records.
#[derive(Debug)]
pub struct Sealed<T>(pub(in crate::store) T);

/// The collector's own work; only `serve` and what it starts hold the key.
pub struct System<'a> {
    pub(in crate::store) conn: &'a Connection,
}

#[cfg(test)]
impl<'a> Audited<'a> {
    /// A handle on a test's own connection, with no entry written.
    pub(crate) fn test(conn: &'a Connection) -> Self {
        Self { conn }
    }
}

#[cfg(test)]
impl<'a> Admin<'a> {
    pub(crate) fn test(conn: &'a Connection) -> Self {
        Self { conn }
    }
}

#[cfg(test)]
impl<'a> System<'a> {
    pub(crate) fn test(conn: &'a Connection) -> Self {
        Self { conn }
    }
}

impl Audited<'_> {
    /// A scan's result, released under this transaction's entry.
    pub fn unseal<T>(&self, sealed: Sealed<T>) -> T {
        sealed.0
    }

    /// A change to accounts or settings made in the same transaction as its entry.
    pub fn admin(&self) -> Admin<'_> {
        Admin { conn: self.conn }
    }
}

#[cfg(test)]
impl<'a> Scan<'a> {
    pub(crate) fn test(conn: &'a Connection) -> Self {
        Self { conn }
    }
}

impl System<'_> {
    /// Runs `f` in one transaction: all of it is stored, or none of it (a group commit and
    /// the alerts it raises).
    pub fn transaction<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&System<'_>) -> std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(StoreError::from)?;
        let r = f(&System { conn: &tx })?;
        tx.commit().map_err(StoreError::from)?;
        Ok(r)
    }

    /// The system also keeps the registry (enrolment, renewal, health).
    pub fn admin(&self) -> Admin<'_> {
        Admin { conn: self.conn }
    }
}

impl Store {
    /// The store of an initialised data directory, in the engine `config` names.
    pub fn open(data_dir: &Path, config: &StoreConfig) -> Result<Self> {
        Self::start(data_dir, config, false)
    }

    /// Creates the store of a new data directory (for `init`): the SQLite file, or the schema
    /// in an empty PostgreSQL database.
    pub fn create(data_dir: &Path, config: &StoreConfig) -> Result<Self> {
        Self::start(data_dir, config, true)
    }

    fn start(data_dir: &Path, config: &StoreConfig, create: bool) -> Result<Self> {
        let (engine, first) = if config.is_postgres() {
            let tls = super::postgres::tls(data_dir, config)?;
            let first = super::postgres::open(&config.url, &tls, data_dir)?;
            let url = config.url.clone();
            (Engine::Postgres { url, tls }, first)
        } else if create {
            (Engine::Sqlite, super::create(data_dir)?)
        } else {
            (Engine::Sqlite, super::open(data_dir, Durability::Full)?)
        };
        Ok(Self {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                engine,
                max_idle: config.max_idle.max(1),
                idle: Mutex::new(vec![first]),
                wakeups: std::sync::OnceLock::new(),
            }),
        })
    }

    pub(in crate::store) fn wakeups_cell(
        &self,
    ) -> &std::sync::OnceLock<super::wakeups::AlertWakeups> {
        &self.inner.wakeups
    }

    pub(in crate::store) fn is_postgres(&self) -> bool {
        matches!(self.inner.engine, Engine::Postgres { .. })
    }

    /// A new connection of the store's engine, outside the pool.
    pub(in crate::store) fn connect(&self) -> Result<Connection> {
        match &self.inner.engine {
            Engine::Sqlite => super::open(&self.inner.data_dir, Durability::Full),
            Engine::Postgres { url, tls } => {
                super::postgres::connect(url, tls, &self.inner.data_dir)
            }
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// Runs `f` on a pooled connection, opening one when none is idle.
    pub(in crate::store) fn with_conn<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Connection) -> std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        let idle = self.inner.idle.lock().ok().and_then(|mut v| v.pop());
        let conn = match idle {
            Some(c) => c,
            None => self.connect()?,
        };
        let result = f(&conn);
        // A connection left inside a transaction (a panic or a failed rollback) is not reused.
        if conn.is_autocommit()
            && let Ok(mut idle) = self.inner.idle.lock()
            && idle.len() < self.inner.max_idle
        {
            idle.push(conn);
        }
        result
    }

    /// Reads or changes monitored data as `actor`. `f` returns its result with the entry to
    /// record (which may depend on what it found); the entry is appended in the same
    /// immediate transaction, and nothing is returned or kept unless both succeed.
    pub fn audited<R, E>(
        &self,
        actor: &Actor,
        f: impl FnOnce(&Audited<'_>) -> std::result::Result<(R, Audit), E>,
    ) -> std::result::Result<R, E>
    where
        E: From<StoreError> + From<AuditError>,
    {
        self.with_conn(|conn| {
            audit::transaction(conn, |entries| {
                let (r, entry) = f(&Audited { conn })?;
                entries.add(actor, &entry.record())?;
                Ok(r)
            })
        })
    }

    /// Like [`Store::audited`], for a read that may find nothing worth recording (a poll with
    /// nothing new, a report another collector stored first): when `f` returns None the
    /// transaction is rolled back, and the caller gets None, so nothing it read goes unrecorded.
    pub fn audited_if<R, E>(
        &self,
        actor: &Actor,
        f: impl FnOnce(&Audited<'_>) -> std::result::Result<Option<(R, Audit)>, E>,
    ) -> std::result::Result<Option<R>, E>
    where
        E: From<StoreError> + From<AuditError>,
    {
        self.with_conn(|conn| {
            audit::transaction(conn, |entries| match f(&Audited { conn })? {
                Some((r, entry)) => {
                    entries.add(actor, &entry.record())?;
                    Ok(Some(r))
                }
                None => {
                    entries.discard();
                    Ok(None)
                }
            })
        })
    }

    /// A long read whose result stays sealed until an audited operation stores it.
    pub fn scan<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Scan<'_>) -> std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        self.with_conn(|conn| f(&Scan { conn }))
    }

    /// Accounts, sessions, tokens, the agent registry, settings.
    pub fn admin<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Admin<'_>) -> std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        self.with_conn(|conn| f(&Admin { conn }))
    }

    /// The collector's own work, for the holders of the key.
    pub fn system<R, E: From<StoreError>>(
        &self,
        _key: &SystemKey,
        f: impl FnOnce(&System<'_>) -> std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        self.with_conn(|conn| f(&System { conn }))
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.inner.data_dir)
            .finish_non_exhaustive()
    }
}
