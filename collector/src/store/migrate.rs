//! `store migrate`: a school's SQLite store copied into an empty PostgreSQL database, so that
//! it can join a trust's collectors.
//!
//! Everything is copied as it is, ids included: the audit trail's entries keep their ids and
//! hashes (so its chain, and the checkpoint beside the database, still verify), and alerts,
//! incidents and reveal requests keep the numbers staff have written down. One transaction on
//! the PostgreSQL side: a failed copy leaves the target empty, and the SQLite file is only read.
//! Every table of the file must be one this module knows, so that no data is left behind
//! unnoticed by a later table this list forgot.

use super::audit::{self, Actor, AuditError, Record, Verdict};
use super::db::{Connection, OwnedValue, params_from_iter};
use super::{Admin, Audited, Durability, StoreConfig, StoreError};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// Every table of the store, parents before the rows that name them.
const TABLES: &[&str] = &[
    "meta",
    "enrollment_tokens",
    "enrol_failures",
    "agents",
    "agent_usage",
    "events",
    "alerts",
    "sessions",
    "staff",
    "sso_logins",
    "login_throttle",
    "notices",
    "console_sessions",
    "audit_log",
    "alert_notes",
    "incidents",
    "incident_versions",
    "incident_alerts",
    "reveal_requests",
    "checks",
    "reports",
    "visit_reports",
    "collectors",
];

/// Tables whose `id` PostgreSQL numbers itself: its sequence must continue after the copy.
const NUMBERED: &[&str] = &[
    "events",
    "alerts",
    "notices",
    "audit_log",
    "alert_notes",
    "incidents",
    "reveal_requests",
    "checks",
    "reports",
];

/// Parameters per INSERT statement: PostgreSQL takes at most 65,535.
const PARAMS_PER_INSERT: usize = 30_000;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(
        "the PostgreSQL database already holds data ({rows} rows in {table}): migrate into a new, empty database"
    )]
    NotEmpty { table: String, rows: i64 },
    #[error("the SQLite file has a table this version does not know to copy: {0}")]
    UnknownTable(String),
    #[error("{table}: {source_rows} rows in the SQLite file, {copied} copied")]
    Mismatch {
        table: String,
        source_rows: i64,
        copied: i64,
    },
    #[error("the audit trail does not verify after the copy: {0}; nothing was kept")]
    TrailBroken(String),
}

impl From<super::db::Error> for MigrateError {
    fn from(e: super::db::Error) -> Self {
        Self::Store(e.into())
    }
}

/// What was copied.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tables: Vec<(String, u64)>,
    pub audit_entries: u64,
    pub elapsed_ms: u64,
}

/// Copies the SQLite store of `data_dir` into the empty database `to` names, verifies the
/// audit trail there, and records the move in it.
pub fn to_postgres(data_dir: &Path, to: &StoreConfig) -> Result<Report, MigrateError> {
    let started = Instant::now();
    let src = super::open(data_dir, Durability::Full)?;
    let tls = super::postgres::tls(data_dir, to)?;
    let dst = super::postgres::open(&to.url, &tls, data_dir)?;
    check_tables(&src)?;
    // The file stays still while it is read: a collector still running is held off.
    let read = src.unchecked_transaction()?;
    let write = dst.unchecked_transaction()?;
    for table in TABLES {
        let rows = existing(&dst, table)?;
        if rows > 0 {
            return Err(MigrateError::NotEmpty {
                table: (*table).into(),
                rows,
            });
        }
    }
    let (first, last): (Option<i64>, Option<i64>) = src.query_row(
        "SELECT min(observed_at), max(observed_at) FROM events",
        (),
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if let (Some(first), Some(last)) = (first, last) {
        super::postgres::ensure_partitions_between(&dst, first, last)?;
    }
    let mut report = Report {
        tables: Vec::new(),
        audit_entries: 0,
        elapsed_ms: 0,
    };
    for table in TABLES {
        let copied = copy(&src, &dst, table)?;
        let source_rows = existing(&src, table)?;
        let now_there = existing(&dst, table)?;
        if now_there != source_rows || copied as i64 != source_rows {
            return Err(MigrateError::Mismatch {
                table: (*table).into(),
                source_rows,
                copied: now_there,
            });
        }
        report.tables.push(((*table).into(), copied));
    }
    for table in NUMBERED {
        dst.query_row(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}
                 HAVING max(id) IS NOT NULL"
            ),
            (),
            |_| Ok(()),
        )
        .or_else(|e| match e {
            super::db::Error::QueryReturnedNoRows => Ok(()),
            e => Err(e),
        })?;
    }
    match audit::verify(&Audited { conn: &dst })? {
        Verdict::Intact { entries } => report.audit_entries = entries,
        other => return Err(MigrateError::TrailBroken(format!("{other:?}"))),
    }
    write.commit()?;
    read.commit()?;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    let detail = serde_json::to_string(&report).unwrap_or_default();
    audit::append(
        &Admin { conn: &dst },
        &Actor::cli(),
        &Record {
            action: "store.migrate",
            object: "store",
            purpose: "moving the school's store to PostgreSQL",
            detail: &detail,
        },
    )?;
    Ok(report)
}

/// What is copied of `table`: all of it but `meta`'s schema version, which each engine keeps
/// for its own schema.
fn copied_rows(table: &str) -> &'static str {
    if table == "meta" {
        " WHERE key <> 'schema_version'"
    } else {
        ""
    }
}

/// Rows already in `table`; the schema's own version row of `meta` does not count.
fn existing(conn: &Connection, table: &str) -> Result<i64, MigrateError> {
    let filter = copied_rows(table);
    Ok(
        conn.query_row(&format!("SELECT count(*) FROM {table}{filter}"), (), |r| {
            r.get(0)
        })?,
    )
}

fn check_tables(src: &Connection) -> Result<(), MigrateError> {
    let names = src
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?
        .query_map((), |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    match names.into_iter().find(|n| !TABLES.contains(&n.as_str())) {
        Some(unknown) => Err(MigrateError::UnknownTable(unknown)),
        None => Ok(()),
    }
}

/// Copies one table in multi-row INSERTs; returns the rows copied.
fn copy(src: &Connection, dst: &Connection, table: &str) -> Result<u64, MigrateError> {
    let columns = src
        .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?
        .query_map([table], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let list = columns.join(", ");
    let filter = copied_rows(table);
    let per_insert = (PARAMS_PER_INSERT / columns.len()).max(1);
    let mut stmt = src.prepare(&format!("SELECT {list} FROM {table}{filter}"))?;
    let mut rows = stmt.query(())?;
    let mut batch: Vec<OwnedValue> = Vec::with_capacity(per_insert * columns.len());
    let mut copied = 0u64;
    loop {
        let row = rows.next()?;
        if let Some(row) = &row {
            for i in 0..columns.len() {
                batch.push(row.get(i)?);
            }
        }
        let full = batch.len() == per_insert * columns.len();
        if (full || row.is_none()) && !batch.is_empty() {
            let n = batch.len() / columns.len();
            let values = (0..n)
                .map(|r| {
                    let cells = (0..columns.len())
                        .map(|c| format!("?{}", r * columns.len() + c + 1))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("({cells})")
                })
                .collect::<Vec<_>>()
                .join(", ");
            dst.execute(
                &format!("INSERT INTO {table} ({list}) VALUES {values}"),
                params_from_iter(batch.drain(..)),
            )?;
            copied += n as u64;
        }
        if row.is_none() {
            return Ok(copied);
        }
    }
}
