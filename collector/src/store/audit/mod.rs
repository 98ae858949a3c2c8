//! The access audit trail: who read or changed monitored data, when, from where and why.
//!
//! Entries form a hash chain: each entry's `hash` is SHA-256 over the previous entry's hash and
//! this entry's fields, so editing, deleting or reordering any entry breaks every hash after it.
//! Deleting the newest entries leaves a shorter chain that is still valid, so the head (id and
//! hash of the latest entry) is sealed with a keyed MAC into `audit.head` outside the database
//! and sent to the log (see [`anchor`]): `verify` refuses a chain that no longer reaches it.
//!
//! Each writer keeps its own chain (`writer`; one, "collector", while the store is one SQLite
//! file): several collectors sharing a database each append to theirs without a global lock,
//! and the checkpoint in `audit.head` seals every writer's head together.

mod anchor;
mod verify;

pub use anchor::{Checkpoint, reanchor};
pub use verify::{Verdict, verify};

use crate::store::db::{Connection, Dialect, OptionalExtension, TransactionBehavior, params};
use crate::store::{self, now_us, rfc3339};
use crate::store::{Admin, Audited, System};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// The hash the first entry chains from.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("audit log: {0}")]
    Sql(#[from] crate::store::db::Error),
    #[error("audit head {path}: {source}")]
    Head {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit key {path}: {message}")]
    Key { path: PathBuf, message: String },
}

/// The chain this process appends to. One while the store is one SQLite file; a collector
/// sharing a PostgreSQL database would use its own name.
pub const WRITER: &str = "collector";

/// Who is acting, as the trail records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// A console user name, or `cli:<os user>` for the command line, or `system`.
    pub name: String,
    pub role: String,
    /// Remote address for the console and API; `cli` or `system` otherwise.
    pub source: String,
}

impl Actor {
    /// The person running a CLI command, as the operating system knows them.
    pub fn cli() -> Self {
        let user = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| format!("uid{}", nix::unistd::getuid()));
        Self {
            name: format!("cli:{user}"),
            role: "operator".into(),
            source: "cli".into(),
        }
    }

    /// Scheduled jobs of the collector itself (retention, reports, notifications).
    pub fn system() -> Self {
        Self {
            name: "system".into(),
            role: "system".into(),
            source: "system".into(),
        }
    }
}

/// One thing done: `action` is a dotted verb such as `alert.view` or `incident.update`,
/// `object` what it was done to (`alert:42`, `user:jo.bloggs`, a filter), `purpose` the reason
/// given for a sensitive read, `detail` anything else worth keeping.
#[derive(Debug, Clone, Default)]
pub struct Record<'a> {
    pub action: &'a str,
    pub object: &'a str,
    pub purpose: &'a str,
    pub detail: &'a str,
}

/// An audit entry a caller asks for: `action` on `object`, with the purpose stated for a
/// sensitive read and any detail worth keeping.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub action: &'static str,
    pub object: String,
    pub purpose: String,
    pub detail: String,
}

impl Audit {
    pub fn new(action: &'static str, object: impl Into<String>) -> Self {
        Self {
            action,
            object: object.into(),
            ..Default::default()
        }
    }

    pub fn purpose(mut self, purpose: impl Into<String>) -> Self {
        self.purpose = purpose.into();
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// The entry as the trail records it.
    pub fn record(&self) -> Record<'_> {
        Record {
            action: self.action,
            object: &self.object,
            purpose: &self.purpose,
            detail: &self.detail,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub object: String,
    pub purpose: String,
    pub source: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of one entry: every field, length-prefixed so no two entries can serialise alike.
pub(crate) fn entry_hash(prev_hash: &str, id: i64, at_us: i64, fields: [&str; 7]) -> String {
    let mut h = Sha256::new();
    h.update(b"invigilator-audit-v1\n");
    h.update(prev_hash.as_bytes());
    h.update(id.to_be_bytes());
    h.update(at_us.to_be_bytes());
    for f in fields {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Appends one entry. Runs in its own immediate transaction so the CLI and the server, each
/// appending, never chain two entries from the same predecessor.
pub fn append(tx: &Admin<'_>, actor: &Actor, rec: &Record<'_>) -> Result<i64, AuditError> {
    transaction(tx.conn, |entries| entries.add(actor, rec))
}

/// The entries appended inside a [`transaction`].
pub(in crate::store) struct Entries<'c> {
    conn: &'c Connection,
    /// The newest entry's id and hash: the head sealed at commit.
    head: Option<(i64, String)>,
    discard: bool,
}

impl Entries<'_> {
    /// Appends an entry, to be committed with the transaction's change.
    pub(in crate::store) fn add(
        &mut self,
        actor: &Actor,
        rec: &Record<'_>,
    ) -> Result<i64, AuditError> {
        let (id, hash) = append_in(self.conn, actor, rec)?;
        self.head = Some((id, hash));
        Ok(id)
    }

    /// Keeps nothing: the transaction is rolled back, its change and entries with it. The
    /// caller must then return nothing of what it read.
    pub(in crate::store) fn discard(&mut self) {
        self.discard = true;
    }
}

/// PostgreSQL's advisory lock for appending to the trail: one append at a time over every
/// collector, so that ids and each writer's chain stay in step. Any constant, the same in all.
const AUDIT_LOCK: i64 = 0x001A_0D17;

/// Runs `f` in one immediate transaction: the change it makes and the entries it adds are
/// committed together (and the head sealed), or, on an error or a discard, neither is. The
/// one way the store writes a change with its audit entries.
pub(in crate::store) fn transaction<R, E: From<AuditError>>(
    conn: &Connection,
    f: impl FnOnce(&mut Entries<'_>) -> Result<R, E>,
) -> Result<R, E> {
    conn.begin(TransactionBehavior::Immediate)
        .map_err(AuditError::from)?;
    let mut entries = Entries {
        conn,
        head: None,
        discard: false,
    };
    match f(&mut entries) {
        Ok(r) if entries.discard => {
            conn.rollback().map_err(AuditError::from)?;
            Ok(r)
        }
        Ok(r) => {
            match entries.head {
                Some((id, hash)) => commit(conn, id, &hash)?,
                None => conn.commit().map_err(AuditError::from)?,
            }
            Ok(r)
        }
        Err(e) => {
            let _ = conn.rollback();
            Err(e)
        }
    }
}

/// Appends inside the transaction held (see [`transaction`]).
fn append_in(
    conn: &Connection,
    actor: &Actor,
    rec: &Record<'_>,
) -> Result<(i64, String), AuditError> {
    // The writer's own previous entry; the id is the next over all writers. SQLite's write
    // lock makes the two reads and the insert one step; PostgreSQL's other collectors need a
    // lock of their own, held to the commit.
    if conn.dialect() == Dialect::Postgres {
        conn.query_row("SELECT pg_advisory_xact_lock(?1)", [AUDIT_LOCK], |_| Ok(()))?;
    }
    let prev: Option<String> = conn
        .query_row(
            "SELECT hash FROM audit_log WHERE writer = ?1 ORDER BY id DESC LIMIT 1",
            [WRITER],
            |r| r.get(0),
        )
        .optional()?;
    let prev = prev.unwrap_or_else(|| GENESIS.to_owned());
    let id: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM audit_log", [], |r| {
        r.get(0)
    })?;
    let at = now_us();
    let fields = [
        actor.name.as_str(),
        actor.role.as_str(),
        rec.action,
        rec.object,
        rec.purpose,
        actor.source.as_str(),
        rec.detail,
    ];
    let hash = entry_hash(&prev, id, at, fields);
    conn.execute(
        "INSERT INTO audit_log(id, at, actor, role, action, object, purpose, source, detail,
                               prev_hash, hash, writer)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            id,
            at,
            actor.name,
            actor.role,
            rec.action,
            rec.object,
            rec.purpose,
            actor.source,
            rec.detail,
            prev,
            hash,
            WRITER
        ],
    )?;
    Ok((id, hash))
}

/// Commits the transaction holding a change and its entries, then records the head. The change
/// and its entries are saved and the chain in the database is the record; the head file is a
/// second check, so failing to write it is logged, not returned (returning it would tell the
/// user that something saved was not).
fn commit(conn: &Connection, id: i64, hash: &str) -> Result<(), AuditError> {
    conn.commit()?;
    if let Err(e) = anchor::advance(conn, WRITER, id, hash) {
        tracing::error!(error = %e, entry = id, "could not record the audit head");
    }
    Ok(())
}

/// Filters for reading the trail in the console.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub actor: Option<String>,
    pub action_prefix: Option<String>,
    pub object: Option<String>,
    /// Entries with ids below this (pagination, newest first).
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// The id of the newest entry of any writer (0 for an empty trail).
pub fn last_id(tx: &Audited<'_>) -> Result<i64, AuditError> {
    Ok(tx
        .conn
        .query_row("SELECT COALESCE(MAX(id), 0) FROM audit_log", [], |r| {
            r.get(0)
        })?)
}

/// How long the trail is (its newest id), for the metrics: a count, no entry is read.
pub fn length(sys: &System<'_>) -> store::Result<i64> {
    Ok(sys
        .conn
        .query_row("SELECT COALESCE(MAX(id), 0) FROM audit_log", [], |r| {
            r.get(0)
        })?)
}

/// The newest entries first.
pub fn list(tx: &Audited<'_>, f: &Filter) -> Result<Vec<Entry>, AuditError> {
    let conn = tx.conn;
    let mut stmt = conn.prepare(
        "SELECT id, at, actor, role, action, object, purpose, source, detail, prev_hash, hash
         FROM audit_log
         WHERE (CAST(?1 AS TEXT) IS NULL OR actor = ?1)
           AND (CAST(?2 AS TEXT) IS NULL OR action LIKE ?2 || '%')
           AND (CAST(?3 AS TEXT) IS NULL OR object = ?3)
           AND (CAST(?4 AS BIGINT) IS NULL OR id < ?4)
         ORDER BY id DESC LIMIT ?5",
    )?;
    let rows = stmt.query_map(
        params![
            f.actor,
            f.action_prefix,
            f.object,
            f.before_id,
            f.limit.max(1)
        ],
        |r| {
            Ok(Entry {
                id: r.get(0)?,
                at: rfc3339(r.get(1)?),
                actor: r.get(2)?,
                role: r.get(3)?,
                action: r.get(4)?,
                object: r.get(5)?,
                purpose: r.get(6)?,
                source: r.get(7)?,
                detail: r.get(8)?,
                prev_hash: r.get(9)?,
                hash: r.get(10)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(n: usize) -> (tempfile::TempDir, Connection) {
        let (dir, conn) = store::test_db();
        let actor = Actor {
            name: "dsl1".into(),
            role: "dsl".into(),
            source: "127.0.0.1".into(),
        };
        for i in 0..n {
            let object = format!("alert:{i}");
            append(
                &crate::store::Admin::test(&conn),
                &actor,
                &Record {
                    action: "alert.view",
                    object: &object,
                    purpose: "triage",
                    detail: "",
                },
            )
            .unwrap();
        }
        (dir, conn)
    }

    /// What an attacker with the database file can do: the triggers are only a guard rail.
    fn tamper(conn: &Connection, sql: &str) {
        let off = match conn.dialect() {
            Dialect::Sqlite => {
                "DROP TRIGGER audit_log_append_only_u; DROP TRIGGER audit_log_append_only_d;"
            }
            Dialect::Postgres => "ALTER TABLE audit_log DISABLE TRIGGER USER;",
        };
        conn.execute_batch(&format!("{off} {sql}")).unwrap();
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let (_d, conn) = filled(20);
        assert_eq!(
            verify(&crate::store::Audited::test(&conn)).unwrap(),
            Verdict::Intact { entries: 20 }
        );
    }

    #[test]
    fn the_application_cannot_edit_or_delete_entries() {
        let (_d, conn) = filled(2);
        let e = conn
            .execute("UPDATE audit_log SET actor = 'x' WHERE id = 1", [])
            .unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        assert!(conn.execute("DELETE FROM audit_log", []).is_err());
    }

    #[test]
    fn every_field_of_every_entry_is_covered() {
        let columns = [
            "at = at + 1",
            "actor = 'someone'",
            "role = 'governor'",
            "action = 'alert.list'",
            "object = 'alert:999'",
            "purpose = ''",
            "source = '10.0.0.9'",
            "detail = 'x'",
        ];
        for id in [1, 7, 12] {
            for set in columns {
                let (_d, conn) = filled(12);
                tamper(
                    &conn,
                    &format!("UPDATE audit_log SET {set} WHERE id = {id}"),
                );
                match verify(&crate::store::Audited::test(&conn)).unwrap() {
                    Verdict::Broken { id: bad, reason } => {
                        assert_eq!(bad, id, "{set}: {reason}");
                        assert!(reason.contains("changed"), "{reason}");
                    }
                    v => panic!("{set} on entry {id} went unnoticed: {v:?}"),
                }
            }
        }
    }

    #[test]
    fn a_rehashed_edit_still_breaks_the_next_link() {
        let (_d, conn) = filled(5);
        let at: i64 = conn
            .query_row("SELECT at FROM audit_log WHERE id = 3", [], |r| r.get(0))
            .unwrap();
        let prev: String = conn
            .query_row("SELECT prev_hash FROM audit_log WHERE id = 3", [], |r| {
                r.get(0)
            })
            .unwrap();
        let forged = entry_hash(
            &prev,
            3,
            at,
            [
                "dsl1",
                "dsl",
                "alert.view",
                "alert:0",
                "triage",
                "127.0.0.1",
                "",
            ],
        );
        tamper(
            &conn,
            &format!("UPDATE audit_log SET object = 'alert:0', hash = '{forged}' WHERE id = 3"),
        );
        assert!(matches!(
            verify(&crate::store::Audited::test(&conn)).unwrap(),
            Verdict::Broken { id: 4, .. }
        ));
    }

    #[test]
    fn deletion_in_the_middle_names_the_gap() {
        let (_d, conn) = filled(10);
        tamper(&conn, "DELETE FROM audit_log WHERE id = 4");
        let Verdict::Broken { id, reason } = verify(&crate::store::Audited::test(&conn)).unwrap()
        else {
            panic!("deletion went unnoticed");
        };
        assert_eq!(id, 5);
        assert!(reason.contains("missing"), "{reason}");
    }

    #[test]
    fn renumbering_after_a_deletion_breaks_the_chain() {
        let (_d, conn) = filled(10);
        tamper(
            &conn,
            "DELETE FROM audit_log WHERE id = 4; UPDATE audit_log SET id = id - 1 WHERE id > 4",
        );
        assert!(matches!(
            verify(&crate::store::Audited::test(&conn)).unwrap(),
            Verdict::Broken { id: 4, .. }
        ));
    }

    #[test]
    fn reordering_is_detected() {
        let (_d, conn) = filled(6);
        tamper(
            &conn,
            "UPDATE audit_log SET id = 100 WHERE id = 2;
             UPDATE audit_log SET id = 2 WHERE id = 3;
             UPDATE audit_log SET id = 3 WHERE id = 100;",
        );
        assert!(matches!(
            verify(&crate::store::Audited::test(&conn)).unwrap(),
            Verdict::Broken { id: 2, .. }
        ));
    }

    #[test]
    fn deleting_the_newest_entries_is_caught_by_the_head() {
        let (_d, conn) = filled(8);
        tamper(&conn, "DELETE FROM audit_log WHERE id > 5");
        let Verdict::Broken { id, reason } = verify(&crate::store::Audited::test(&conn)).unwrap()
        else {
            panic!("truncation went unnoticed");
        };
        assert_eq!(id, 6);
        assert!(reason.contains("deleted"), "{reason}");
    }

    #[test]
    fn concurrent_appends_keep_one_chain_and_one_sealed_head() {
        let (dir, conn) = filled(1);
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let conn = conn.reopen();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        append(
                            &crate::store::Admin::test(&conn),
                            &Actor::system(),
                            &Record::default(),
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(
            verify(&crate::store::Audited::test(&conn)).unwrap(),
            Verdict::Intact { entries: 161 }
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("audit.head.") && n != "audit.head.lock")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    fn broken_reason(conn: &Connection) -> String {
        match verify(&crate::store::Audited::test(conn)).unwrap() {
            Verdict::Broken { reason, .. } => reason,
            v => panic!("went unnoticed: {v:?}"),
        }
    }

    #[test]
    fn a_deleted_head_is_a_failure_and_is_not_quietly_recreated() {
        let (dir, conn) = filled(8);
        std::fs::remove_file(dir.path().join("audit.head")).unwrap();
        tamper(&conn, "DELETE FROM audit_log WHERE id > 5");
        assert!(broken_reason(&conn).contains("missing"));
        // The next access does not paper over it ...
        let _ = append(
            &crate::store::Admin::test(&conn),
            &Actor::system(),
            &Record::default(),
        );
        assert!(broken_reason(&conn).contains("missing"));
        // ... an operator's re-anchoring does, on the record.
        reanchor(&crate::store::Admin::test(&conn)).unwrap();
        assert_eq!(
            verify(&crate::store::Audited::test(&conn)).unwrap(),
            Verdict::Intact { entries: 6 }
        );
    }

    #[test]
    fn a_head_written_without_the_key_is_refused() {
        let (dir, conn) = filled(8);
        tamper(&conn, "DELETE FROM audit_log WHERE id > 5");
        let h5: String = conn
            .query_row("SELECT hash FROM audit_log WHERE id = 5", [], |r| r.get(0))
            .unwrap();
        let head = dir.path().join("audit.head");
        let forged = serde_json::json!({"heads": {WRITER: [5, h5]}, "mac": "00".repeat(32)});
        std::fs::write(&head, forged.to_string()).unwrap();
        assert!(broken_reason(&conn).contains("seal"));
        // The format of older versions, without a MAC, is no way round it either.
        std::fs::write(&head, format!("5 {h5}\n")).unwrap();
        assert!(broken_reason(&conn).contains("unkeyed"));
        // Nor is a new key: the checkpoint was sealed with the old one.
        std::fs::remove_file(dir.path().join("audit.key")).unwrap();
        let _ = append(
            &crate::store::Admin::test(&conn),
            &Actor::system(),
            &Record::default(),
        );
        assert!(
            broken_reason(&conn).contains("seal"),
            "{:?}",
            verify(&crate::store::Audited::test(&conn))
        );
    }

    #[test]
    fn several_writers_chain_separately_under_one_checkpoint() {
        let (_d, conn) = filled(3);
        // A second collector's entries, interleaved, chained among themselves.
        let mut prev = GENESIS.to_owned();
        for id in [4, 6] {
            let fields = ["other", "system", "x", "", "", "system", ""];
            let hash = entry_hash(&prev, id, 1, fields);
            conn.execute(
                "INSERT INTO audit_log(id, at, actor, role, action, object, purpose, source,
                                       detail, prev_hash, hash, writer)
                 VALUES (?1, 1, 'other', 'system', 'x', '', '', 'system', '', ?2, ?3, 'b')",
                params![id, prev, hash],
            )
            .unwrap();
            anchor::advance(&conn, "b", id, &hash).unwrap();
            prev = hash;
            if id == 4 {
                append(
                    &crate::store::Admin::test(&conn),
                    &Actor::system(),
                    &Record::default(),
                )
                .unwrap();
            }
        }
        assert_eq!(
            verify(&crate::store::Audited::test(&conn)).unwrap(),
            Verdict::Intact { entries: 6 }
        );
        // Removing the other writer's newest entry is caught by its head in the checkpoint.
        tamper(&conn, "DELETE FROM audit_log WHERE id = 6");
        assert!(broken_reason(&conn).contains("writer b"));
    }

    #[test]
    fn list_reads_newest_first_with_filters() {
        let (_d, conn) = filled(5);
        let all = list(
            &crate::store::Audited::test(&conn),
            &Filter {
                limit: 3,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), [5, 4, 3]);
        let one = list(
            &crate::store::Audited::test(&conn),
            &Filter {
                object: Some("alert:1".into()),
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].id, 2);
    }
}
