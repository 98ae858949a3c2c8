//! One connection type over the two engines, shaped like rusqlite's so that an operation is
//! written once, in the SQL both engines speak, and only what they say differently is matched
//! on [`Connection::dialect`].
//!
//! Why a facade and not two implementations of every operation: the store's operations are
//! ~250 statements, nearly all of them plain SQL that PostgreSQL and SQLite read alike once a
//! few habits are kept (`ON CONFLICT` rather than `INSERT OR ...`, `RETURNING id` rather than
//! `last_insert_rowid()`, `greatest`/`least` rather than two-argument `max`/`min`, integer
//! flags compared with `<> 0`). Writing each twice would double the store and let the two copies
//! drift; the differences that remain (schema, partitions, locks, vacuum) are few and sit side
//! by side where they occur.
//!
//! Parameters are written `?1`, `?2` ... in both; the PostgreSQL side rewrites them to `$1`
//! once per statement text (see [`pg::translate`]) and caches the prepared statement. Values
//! cross as [`Value`]: SQLite's five storage classes, which PostgreSQL's typed parameters are
//! encoded from by the type the server inferred (an integer sent to an `int4` or `bool` slot
//! is converted, and refused if it does not fit rather than wrapped).
//!
//! PostgreSQL is driven through the `postgres` crate, the synchronous face of `tokio-postgres`:
//! the store is synchronous (its callers run on blocking threads), and a connection is used by
//! one closure at a time, so an async pool would buy nothing but an executor hop per statement.

mod pg;
mod sqlite;
mod value;

pub(in crate::store) use pg::PgTls;
pub use value::{FromValue, OwnedValue, ToValue, Value, ValueRef};

use std::cell::Cell;
use std::path::{Path, PathBuf};

/// Which SQL the connection speaks, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// Described in full (the server's message, detail and hint) and not chained further:
    /// the client's own error repeats its cause.
    #[error("{}", pg::describe(.0))]
    Postgres(postgres::Error),
    #[error("query returned no rows")]
    QueryReturnedNoRows,
    #[error("column {column}: {message}")]
    Decode { column: usize, message: String },
    #[error("a transaction is already open on this connection")]
    NestedTransaction,
}

impl Error {
    /// PostgreSQL gave up the transaction to break a deadlock or keep it serialisable: run
    /// again, it succeeds (nothing of it was kept).
    pub fn is_retryable(&self) -> bool {
        use postgres::error::SqlState;
        match self {
            Self::Postgres(e) => e.code().is_some_and(|c| {
                *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
            }),
            _ => false,
        }
    }

    /// A stored value that is not what the column promises (a corrupt row).
    pub fn decode(column: usize, e: impl std::fmt::Display) -> Self {
        Self::Decode {
            column,
            message: e.to_string(),
        }
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        Self::Postgres(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `.optional()` on a single-row query, as rusqlite's extension trait has it.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::QueryReturnedNoRows) => Ok(None),
            Err(Error::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A statement's parameters.
pub trait Params {
    fn values(&self) -> Vec<Value<'_>>;
}

impl Params for &[&dyn ToValue] {
    fn values(&self) -> Vec<Value<'_>> {
        self.iter().map(|v| v.to_value()).collect()
    }
}

impl Params for [&dyn ToValue; 0] {
    fn values(&self) -> Vec<Value<'_>> {
        Vec::new()
    }
}

impl Params for () {
    fn values(&self) -> Vec<Value<'_>> {
        Vec::new()
    }
}

macro_rules! array_params {
    ($($n:literal)*) => {$(
        impl<T: ToValue> Params for [T; $n] {
            fn values(&self) -> Vec<Value<'_>> {
                self.iter().map(|v| v.to_value()).collect()
            }
        }
        impl<T: ToValue> Params for &[T; $n] {
            fn values(&self) -> Vec<Value<'_>> {
                self.iter().map(|v| v.to_value()).collect()
            }
        }
    )*};
}
array_params!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);

/// Parameters built at run time (a filter's optional clauses).
pub struct ParamsFromIter(Vec<OwnedValue>);

pub fn params_from_iter<I>(iter: I) -> ParamsFromIter
where
    I: IntoIterator,
    I::Item: Into<OwnedValue>,
{
    ParamsFromIter(iter.into_iter().map(Into::into).collect())
}

impl Params for ParamsFromIter {
    fn values(&self) -> Vec<Value<'_>> {
        self.0.iter().map(OwnedValue::as_value).collect()
    }
}

/// `params![a, b, ...]`: a statement's parameters of mixed types.
macro_rules! params {
    () => { () };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::store::db::ToValue),+][..]
    };
}
pub(crate) use params;

enum Engine {
    Sqlite(rusqlite::Connection),
    Postgres(Box<pg::Session>),
}

/// A connection to either engine. Used by one closure at a time (the store's pool hands it out),
/// so its PostgreSQL half keeps its client in a `RefCell`.
pub struct Connection {
    engine: Engine,
    /// A transaction this facade opened and has not ended (PostgreSQL has no `is_autocommit`).
    in_transaction: Cell<bool>,
    /// The collector's data directory, where what lives beside the database is kept (the audit
    /// trail's checkpoint and key).
    data_dir: Option<PathBuf>,
}

/// What [`Connection::take_turns`] takes turns on: the first half of a PostgreSQL advisory lock
/// (the collectors' leader uses 1966336).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnClass {
    /// Counting a breach into an open alert (its aggregation key).
    Aggregation = 1_966_337,
    /// A person's sessions across devices (their user name).
    Sessions = 1_966_338,
}

impl Connection {
    pub(in crate::store) fn sqlite(conn: rusqlite::Connection) -> Self {
        let data_dir = conn
            .path()
            .filter(|p| !p.is_empty())
            .and_then(|p| Path::new(p).parent().map(Path::to_path_buf));
        Self {
            engine: Engine::Sqlite(conn),
            in_transaction: Cell::new(false),
            data_dir,
        }
    }

    /// Connects to a PostgreSQL server (`postgres://` URL or key=value string) for the
    /// collector whose data directory is `data_dir`.
    pub(in crate::store) fn connect_postgres(
        url: &str,
        tls: &PgTls,
        data_dir: &Path,
    ) -> Result<Self> {
        Ok(Self {
            engine: Engine::Postgres(Box::new(pg::Session::connect(url, tls)?)),
            in_transaction: Cell::new(false),
            data_dir: Some(data_dir.to_path_buf()),
        })
    }

    /// Another connection to the same database, for a test of concurrent writers.
    #[cfg(test)]
    pub(in crate::store) fn reopen(&self) -> Self {
        match &self.engine {
            Engine::Sqlite(c) => {
                let c2 = rusqlite::Connection::open(c.path().unwrap()).unwrap();
                c2.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
                crate::store::sqlite::sql_functions(&c2).unwrap();
                Self::sqlite(c2)
            }
            Engine::Postgres(s) => {
                let (url, tls) = &s.target;
                Self::connect_postgres(url, tls, self.data_dir.as_deref().unwrap()).unwrap()
            }
        }
    }

    /// PostgreSQL: waits up to `timeout` for a notification on a channel this connection
    /// listens to (`LISTEN`). SQLite has none: it waits and says none came.
    pub(in crate::store) fn notified(&self, timeout: std::time::Duration) -> Result<bool> {
        match &self.engine {
            Engine::Postgres(s) => s.notified(timeout),
            Engine::Sqlite(_) => {
                std::thread::sleep(timeout);
                Ok(false)
            }
        }
    }

    pub(in crate::store) fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    pub fn dialect(&self) -> Dialect {
        match self.engine {
            Engine::Sqlite(_) => Dialect::Sqlite,
            Engine::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Makes this transaction and any other taking turns on the same `(class, key)` run one
    /// after the other from here until commit: on PostgreSQL an advisory transaction lock
    /// (keys hashed; a rare collision only makes two wait); SQLite's one writer already does.
    /// For a read that decides a write across rows no row lock covers (an open alert to
    /// count into, another device's session).
    pub fn take_turns(&self, class: TurnClass, key: &str) -> Result<(), Error> {
        if self.dialect() == Dialect::Postgres {
            self.query_row(
                "SELECT pg_advisory_xact_lock(?1, hashtext(?2))",
                params![class as i64, key],
                |_| Ok(()),
            )?;
        }
        Ok(())
    }

    /// The SQLite connection underneath, for a test of what only SQLite has.
    #[cfg(test)]
    pub(in crate::store) fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.engine {
            Engine::Sqlite(c) => Some(c),
            Engine::Postgres(_) => None,
        }
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// Statements without parameters, separated by `;`.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.engine {
            Engine::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Engine::Postgres(s) => s.batch(sql),
        }
    }

    pub fn query_row<P: Params, T>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        self.prepare_cached(sql)
    }

    /// Statements are cached on both engines: the store's few hundred texts are reused for
    /// the life of the connection.
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement {
            inner: match &self.engine {
                Engine::Sqlite(c) => StatementInner::Sqlite(c.prepare_cached(sql)?),
                Engine::Postgres(s) => StatementInner::Postgres(s, s.prepare(sql)?),
            },
        })
    }

    /// Opens a transaction that ends with [`Transaction::commit`] or, when dropped, rolls back.
    /// Unchecked as rusqlite's is: it takes `&self`, and refuses to nest.
    pub fn unchecked_transaction(&self) -> Result<Transaction<'_>> {
        Transaction::new_unchecked(self, TransactionBehavior::Deferred)
    }

    /// Opens a transaction that the caller ends with [`Connection::commit`] or
    /// [`Connection::rollback`] (for transactions that span a callback; else use
    /// [`Transaction`], which cannot be left open).
    pub fn begin(&self, behavior: TransactionBehavior) -> Result<()> {
        if self.in_transaction.get() {
            return Err(Error::NestedTransaction);
        }
        let begin = match (self.dialect(), behavior) {
            (Dialect::Sqlite, TransactionBehavior::Immediate) => "BEGIN IMMEDIATE",
            (Dialect::Sqlite, TransactionBehavior::Deferred) => "BEGIN DEFERRED",
            (Dialect::Postgres, _) => "BEGIN",
        };
        self.execute_batch(begin)?;
        self.in_transaction.set(true);
        Ok(())
    }

    pub fn commit(&self) -> Result<()> {
        self.in_transaction.set(false);
        if let Err(e) = self.execute_batch("COMMIT") {
            let _ = self.execute_batch("ROLLBACK");
            return Err(e);
        }
        Ok(())
    }

    pub fn rollback(&self) -> Result<()> {
        self.in_transaction.set(false);
        self.execute_batch("ROLLBACK")
    }

    pub fn transaction(&mut self) -> Result<Transaction<'_>> {
        self.unchecked_transaction()
    }

    /// No transaction is open (a connection returned to the pool must be so).
    pub fn is_autocommit(&self) -> bool {
        match &self.engine {
            Engine::Sqlite(c) => c.is_autocommit(),
            Engine::Postgres(s) => !self.in_transaction.get() && !s.broken(),
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("dialect", &self.dialect())
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// How a transaction takes its locks. PostgreSQL's row locks make the difference moot there;
/// SQLite's IMMEDIATE takes the write lock up front rather than fail to upgrade half-way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionBehavior {
    Deferred,
    Immediate,
}

/// An open transaction; rolled back on drop unless committed.
pub struct Transaction<'c> {
    conn: &'c Connection,
    done: bool,
}

impl<'c> Transaction<'c> {
    pub fn new_unchecked(conn: &'c Connection, behavior: TransactionBehavior) -> Result<Self> {
        conn.begin(behavior)?;
        Ok(Self { conn, done: false })
    }

    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        self.conn.commit()
    }

    pub fn rollback(mut self) -> Result<()> {
        self.done = true;
        self.conn.rollback()
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.rollback();
        }
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

enum StatementInner<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    Postgres(&'c pg::Session, postgres::Statement),
}

/// A prepared statement.
pub struct Statement<'c> {
    inner: StatementInner<'c>,
}

impl Statement<'_> {
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        let values = params.values();
        match &mut self.inner {
            StatementInner::Sqlite(s) => Ok(s.execute(sqlite::params(&values))?),
            StatementInner::Postgres(session, stmt) => session.execute(stmt, &values),
        }
    }

    pub fn query_row<P: Params, T>(
        &mut self,
        params: P,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut rows = self.query(params)?;
        match rows.next()? {
            Some(row) => f(&row),
            None => Err(Error::QueryReturnedNoRows),
        }
    }

    /// Every row mapped by `f`, read in full before returning.
    pub fn query_map<P: Params, T>(
        &mut self,
        params: P,
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let mut rows = self.query(params)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(f(&row));
        }
        Ok(out.into_iter())
    }

    pub fn query<P: Params>(&mut self, params: P) -> Result<Rows<'_>> {
        let values = params.values();
        Ok(Rows {
            inner: match &mut self.inner {
                StatementInner::Sqlite(s) => RowsInner::Sqlite(s.query(sqlite::params(&values))?),
                StatementInner::Postgres(session, stmt) => {
                    RowsInner::Postgres(session.query(stmt, &values)?.into_iter(), None)
                }
            },
        })
    }
}

enum RowsInner<'s> {
    Sqlite(rusqlite::Rows<'s>),
    /// PostgreSQL's rows arrive whole; the current one is kept so that a row can be lent.
    Postgres(std::vec::IntoIter<postgres::Row>, Option<postgres::Row>),
}

/// The rows of a query, one at a time.
pub struct Rows<'s> {
    inner: RowsInner<'s>,
}

impl Rows<'_> {
    #[allow(clippy::should_implement_trait)] // lends each row, as rusqlite's does
    pub fn next(&mut self) -> Result<Option<Row<'_>>> {
        match &mut self.inner {
            RowsInner::Sqlite(rows) => Ok(rows.next()?.map(Row::Sqlite)),
            RowsInner::Postgres(rows, current) => {
                *current = rows.next();
                Ok(current.as_ref().map(Row::Postgres))
            }
        }
    }
}

/// A column's position. Only `usize`, so that a bare literal (`r.get(0)`) infers it.
pub trait RowIndex {
    fn index(self) -> usize;
}

impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One row of a result.
pub enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

impl Row<'_> {
    /// Column `idx` as `T`. Two type parameters, as rusqlite's `get::<_, T>` has them.
    pub fn get<I: RowIndex, T: FromValue>(&self, idx: I) -> Result<T> {
        let idx = idx.index();
        let value = match self {
            Row::Sqlite(r) => sqlite::value(r.get_ref(idx)?),
            Row::Postgres(r) => r.try_get::<_, ValueRef<'_>>(idx)?,
        };
        T::from_value(value).map_err(|message| Error::Decode {
            column: idx,
            message,
        })
    }
}

#[cfg(test)]
mod tests;
