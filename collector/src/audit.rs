//! The access audit trail: who read or changed monitored data, when, from where and why.
//!
//! Entries form a hash chain: each entry's `hash` is SHA-256 over the previous entry's hash and
//! this entry's fields, so editing, deleting or reordering any entry breaks every hash after it.
//! Deleting the newest entries leaves a shorter chain that is still valid, so the head (id and
//! hash of the latest entry) is also written to `audit.head` beside the database: `verify`
//! refuses a chain that no longer reaches it.

use crate::store::{self, now_us, rfc3339};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The hash the first entry chains from.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("audit log: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("audit head {path}: {source}")]
    Head {
        path: PathBuf,
        source: std::io::Error,
    },
}

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
fn entry_hash(prev_hash: &str, id: i64, at_us: i64, fields: [&str; 7]) -> String {
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

fn head_path(conn: &Connection) -> Option<PathBuf> {
    conn.path()
        .filter(|p| !p.is_empty())
        .map(|p| Path::new(p).with_file_name("audit.head"))
}

/// Appends one entry. Runs in its own immediate transaction so the CLI and the server, each
/// appending, never chain two entries from the same predecessor.
pub fn append(conn: &Connection, actor: &Actor, rec: &Record<'_>) -> Result<i64, AuditError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = append_in(conn, actor, rec);
    match &result {
        Ok(_) => conn.execute_batch("COMMIT")?,
        Err(_) => {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    let (id, hash) = result?;
    write_head(conn, id, &hash)?;
    Ok(id)
}

/// Appends inside a transaction the caller already holds, so that a change and its audit entry
/// commit together. The caller must call [`write_head`] after committing.
pub fn append_in(
    conn: &Connection,
    actor: &Actor,
    rec: &Record<'_>,
) -> Result<(i64, String), AuditError> {
    let last: Option<(i64, String)> = conn
        .query_row(
            "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (id, prev) = match last {
        Some((id, hash)) => (id + 1, hash),
        None => (1, GENESIS.to_owned()),
    };
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
                               prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
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
            hash
        ],
    )?;
    Ok((id, hash))
}

/// Commits the caller's transaction holding a change and its entry (from [`append_in`]), then
/// records the head. The change and its entry are saved and the chain in the database is the
/// record; the head file is a second check, so failing to write it is logged, not returned
/// (returning it would tell the user that something saved was not).
pub fn commit(conn: &Connection, id: i64, hash: &str) -> Result<(), AuditError> {
    conn.execute_batch("COMMIT")?;
    if let Err(e) = write_head(conn, id, hash) {
        tracing::error!(error = %e, entry = id, "could not record the audit head");
    }
    Ok(())
}

/// Records the newest entry outside the database. Never moves backwards: two processes
/// appending race only to write a head the other already passed.
pub fn write_head(conn: &Connection, id: i64, hash: &str) -> Result<(), AuditError> {
    let Some(path) = head_path(conn) else {
        return Ok(());
    };
    if let Some((known, _)) = read_head(&path)?
        && known >= id
    {
        return Ok(());
    }
    // One name per call: the console, the notifier and retention each write from their own
    // thread, and two writers sharing a temporary file could rename the other's half-written one.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("head.{}.{n}", std::process::id()));
    let io = |source| AuditError::Head {
        path: path.clone(),
        source,
    };
    std::fs::write(&tmp, format!("{id} {hash}\n")).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(())
}

fn read_head(path: &Path) -> Result<Option<(i64, String)>, AuditError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut parts = text.split_whitespace();
            let id = parts.next().and_then(|s| s.parse().ok());
            let hash = parts.next().map(str::to_owned);
            Ok(id.zip(hash))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuditError::Head {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Intact { entries: u64 },
    Broken { id: i64, reason: String },
}

/// Walks the whole chain, oldest first, and names the first entry that does not hold.
pub fn verify(conn: &Connection) -> Result<Verdict, AuditError> {
    let mut stmt = conn.prepare(
        "SELECT id, at, actor, role, action, object, purpose, source, detail, prev_hash, hash
         FROM audit_log ORDER BY id",
    )?;
    let mut rows = stmt.query([])?;
    let mut expected_id = 1i64;
    let mut prev = GENESIS.to_owned();
    let mut seen = 0u64;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let at: i64 = r.get(1)?;
        let text = |i| r.get::<_, String>(i);
        let fields = [
            text(2)?,
            text(3)?,
            text(4)?,
            text(5)?,
            text(6)?,
            text(7)?,
            text(8)?,
        ];
        let (prev_hash, hash) = (text(9)?, text(10)?);
        let broken = |reason: String| Ok(Verdict::Broken { id, reason });
        if id != expected_id {
            return broken(format!(
                "entry {id} follows entry {}: entries {expected_id}..{} are missing",
                expected_id - 1,
                id - 1
            ));
        }
        if prev_hash != prev {
            return broken(format!(
                "entry {id} does not chain from entry {}: removed, inserted or reordered",
                id - 1
            ));
        }
        let fields = fields.each_ref().map(String::as_str);
        if entry_hash(&prev, id, at, fields) != hash {
            return broken(format!("entry {id} was changed after it was written"));
        }
        prev = hash;
        expected_id += 1;
        seen += 1;
    }
    if let Some(path) = head_path(conn)
        && let Some((head_id, head_hash)) = read_head(&path)?
    {
        let last = expected_id - 1;
        if head_id > last {
            return Ok(Verdict::Broken {
                id: last + 1,
                reason: format!(
                    "the log ends at entry {last} but {} records entry {head_id}: \
                     the newest entries were deleted",
                    path.display()
                ),
            });
        }
        let at_head: String =
            conn.query_row("SELECT hash FROM audit_log WHERE id = ?1", [head_id], |r| {
                r.get(0)
            })?;
        if at_head != head_hash {
            return Ok(Verdict::Broken {
                id: head_id,
                reason: format!(
                    "entry {head_id} differs from the hash {} recorded",
                    path.display()
                ),
            });
        }
    }
    Ok(Verdict::Intact { entries: seen })
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

/// The newest entries first.
pub fn list(conn: &Connection, f: &Filter) -> Result<Vec<Entry>, AuditError> {
    let mut stmt = conn.prepare(
        "SELECT id, at, actor, role, action, object, purpose, source, detail, prev_hash, hash
         FROM audit_log
         WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR action LIKE ?2 || '%')
           AND (?3 IS NULL OR object = ?3) AND (?4 IS NULL OR id < ?4)
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
                &conn,
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
        conn.execute_batch(&format!(
            "DROP TRIGGER audit_log_append_only_u; DROP TRIGGER audit_log_append_only_d; {sql}"
        ))
        .unwrap();
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let (_d, conn) = filled(20);
        assert_eq!(verify(&conn).unwrap(), Verdict::Intact { entries: 20 });
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
                match verify(&conn).unwrap() {
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
            verify(&conn).unwrap(),
            Verdict::Broken { id: 4, .. }
        ));
    }

    #[test]
    fn deletion_in_the_middle_names_the_gap() {
        let (_d, conn) = filled(10);
        tamper(&conn, "DELETE FROM audit_log WHERE id = 4");
        let Verdict::Broken { id, reason } = verify(&conn).unwrap() else {
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
            verify(&conn).unwrap(),
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
            verify(&conn).unwrap(),
            Verdict::Broken { id: 2, .. }
        ));
    }

    #[test]
    fn deleting_the_newest_entries_is_caught_by_the_head() {
        let (_d, conn) = filled(8);
        tamper(&conn, "DELETE FROM audit_log WHERE id > 5");
        let Verdict::Broken { id, reason } = verify(&conn).unwrap() else {
            panic!("truncation went unnoticed");
        };
        assert_eq!(id, 6);
        assert!(reason.contains("deleted"), "{reason}");
    }

    #[test]
    fn concurrent_head_writes_never_share_a_temporary_file() {
        let (dir, conn) = filled(1);
        let db = conn.path().unwrap().to_owned();
        let writers: Vec<_> = (0..8)
            .map(|t| {
                let db = db.clone();
                std::thread::spawn(move || {
                    let conn = Connection::open(&db).unwrap();
                    for i in 0..50 {
                        let id = 2 + i * 8 + t;
                        write_head(&conn, id, &format!("{id:064}")).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let (id, hash) = read_head(&dir.path().join("audit.head")).unwrap().unwrap();
        assert_eq!(hash, format!("{id:064}"), "a torn or mixed head");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("audit.head."))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn list_reads_newest_first_with_filters() {
        let (_d, conn) = filled(5);
        let all = list(
            &conn,
            &Filter {
                limit: 3,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), [5, 4, 3]);
        let one = list(
            &conn,
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
