//! The checkpoint that anchors the audit chain outside the database.
//!
//! `audit.head` holds every writer's newest entry (id and hash) sealed with an HMAC-SHA256 whose
//! key, `audit.key`, the database never holds: someone who can change the database (a copy, a
//! restored backup, later a PostgreSQL role) can delete the newest entries but cannot write a
//! checkpoint that agrees. Each new checkpoint is also written to the collector's log (journald
//! or syslog, which schools forward off the machine), so removing both files still leaves the
//! heads on record elsewhere.
//!
//! A missing checkpoint is a failure once the trail has entries, and it is not silently
//! recreated: `audit anchor` (an audited operator action) seals the trail as it stands.

use super::AuditError;
use crate::store::Admin;
use crate::store::db::Connection;
use ring::hmac;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Every writer's newest entry: writer → (id, hash).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub heads: BTreeMap<String, (i64, String)>,
}

/// What `audit.head` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stored {
    /// Written by this version: the checkpoint and whether its MAC is good.
    Sealed {
        checkpoint: Checkpoint,
        mac_ok: bool,
    },
    /// "id hash", written by versions before the key: trusted only to be replaced.
    Unkeyed { id: i64, hash: String },
}

pub(super) fn head_path(conn: &Connection) -> Option<PathBuf> {
    dir_of(conn).map(|d| d.join("audit.head"))
}

fn dir_of(conn: &Connection) -> Option<PathBuf> {
    conn.data_dir().map(Path::to_path_buf)
}

/// The MAC key beside the database (owner-only). Made only when a trail is first sealed (its
/// first entry, or `audit anchor`): a key that appears later must not be able to re-seal a
/// checkpoint made with the old one. None when it is missing and `create` is false.
fn key(dir: &Path, create: bool) -> Result<Option<hmac::Key>, AuditError> {
    let path = dir.join("audit.key");
    let bad = |message: String| AuditError::Key {
        path: path.clone(),
        message,
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut k = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k)
                .map_err(|_| bad("no randomness for a new key".into()))?;
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(hex::encode(k).as_bytes()).and(f.sync_all()));
            match created {
                Ok(()) => {}
                // Another process made it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(bad(e.to_string())),
            }
            std::fs::read(&path).map_err(|e| bad(e.to_string()))?
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    let k = hex::decode(String::from_utf8_lossy(&bytes).trim())
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| bad("not 64 hex digits".into()))?;
    Ok(Some(hmac::Key::new(hmac::HMAC_SHA256, &k)))
}

fn signed_text(cp: &Checkpoint) -> String {
    let mut text = String::from("invigilator-audit-head-v1\n");
    for (writer, (id, hash)) in &cp.heads {
        text.push_str(&format!("{writer} {id} {hash}\n"));
    }
    text
}

fn encode(cp: &Checkpoint, key: &hmac::Key) -> String {
    let mac = hex::encode(hmac::sign(key, signed_text(cp).as_bytes()));
    let heads: serde_json::Map<String, serde_json::Value> = cp
        .heads
        .iter()
        .map(|(w, (id, h))| (w.clone(), serde_json::json!([id, h])))
        .collect();
    serde_json::json!({ "heads": heads, "mac": mac }).to_string()
}

pub(super) fn read(path: &Path) -> Result<Option<Stored>, AuditError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuditError::Head {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
        let mut cp = Checkpoint::default();
        for (writer, head) in v["heads"].as_object().into_iter().flatten() {
            if let (Some(id), Some(hash)) = (head[0].as_i64(), head[1].as_str()) {
                cp.heads.insert(writer.clone(), (id, hash.to_owned()));
            }
        }
        let mac = v["mac"]
            .as_str()
            .and_then(|m| hex::decode(m).ok())
            .unwrap_or_default();
        let dir = path.parent().unwrap_or(Path::new("."));
        let mac_ok = key(dir, false)?
            .is_some_and(|k| hmac::verify(&k, signed_text(&cp).as_bytes(), &mac).is_ok());
        return Ok(Some(Stored::Sealed {
            checkpoint: cp,
            mac_ok,
        }));
    }
    let mut parts = text.split_whitespace();
    match (parts.next().and_then(|s| s.parse().ok()), parts.next()) {
        (Some(id), Some(hash)) => Ok(Some(Stored::Unkeyed {
            id,
            hash: hash.to_owned(),
        })),
        _ => Ok(Some(Stored::Sealed {
            checkpoint: Checkpoint::default(),
            mac_ok: false,
        })),
    }
}

/// Moves `writer`'s head to `id` after an append. Never backwards, and never over a checkpoint
/// it cannot trust: a missing one over a trail that already had entries, one whose seal does not
/// verify, or one in the old unkeyed format. Re-sealing those is what hiding a truncation would
/// rely on, so it is left to `audit anchor`; the error says so and `verify` reports it.
pub(super) fn advance(
    conn: &Connection,
    writer: &str,
    id: i64,
    hash: &str,
) -> Result<(), AuditError> {
    let (Some(path), Some(dir)) = (head_path(conn), dir_of(conn)) else {
        return Ok(());
    };
    let io = |source| AuditError::Head {
        path: path.clone(),
        source,
    };
    let _held = lock_head(&dir).map_err(io)?;
    let refuse = |why: &str| {
        Err(io(std::io::Error::other(format!(
            "{why}: not re-sealed; run `audit verify`, then `audit anchor` to seal the trail \
             as it stands"
        ))))
    };
    let mut cp = match read(&path)? {
        Some(Stored::Sealed {
            checkpoint,
            mac_ok: true,
        }) => checkpoint,
        Some(Stored::Sealed { mac_ok: false, .. }) => return refuse("its seal does not verify"),
        Some(Stored::Unkeyed { .. }) => return refuse("it is in the old unkeyed format"),
        None if id == 1 => Checkpoint::default(),
        None => return refuse("missing over a trail that has entries"),
    };
    if cp.heads.get(writer).is_some_and(|(known, _)| *known >= id) {
        return Ok(());
    }
    cp.heads.insert(writer.to_owned(), (id, hash.to_owned()));
    let Some(key) = key(&dir, id == 1)? else {
        return refuse("the audit key is missing");
    };
    write(&path, &encode(&cp, &key)).map_err(io)?;
    tracing::info!(target: "invigilator::audit", checkpoint = %signed_text(&cp).replace('\n', "; "), "audit checkpoint");
    Ok(())
}

/// One writer of `audit.head` at a time, across threads and processes: the temporary file
/// it is written through has one name.
fn lock_head(dir: &Path) -> std::io::Result<nix::fcntl::Flock<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join("audit.head.lock"))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e.into())
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("head.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Seals the trail as it stands into a new checkpoint: after a verified trail lost its
/// checkpoint, or after an upgrade from an unkeyed one. The caller audits the act first.
pub fn reanchor(tx: &Admin<'_>) -> Result<Checkpoint, AuditError> {
    let conn = tx.conn;
    let (Some(path), Some(dir)) = (head_path(conn), dir_of(conn)) else {
        return Ok(Checkpoint::default());
    };
    let io = |source| AuditError::Head {
        path: path.clone(),
        source,
    };
    let _held = lock_head(&dir).map_err(io)?;
    let mut cp = Checkpoint::default();
    let mut stmt = conn.prepare(
        "SELECT writer, id, hash FROM audit_log a
         WHERE id = (SELECT MAX(id) FROM audit_log b WHERE b.writer = a.writer)",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (writer, id, hash) = row?;
        cp.heads.insert(writer, (id, hash));
    }
    let key = key(&dir, true)?.expect("created when missing");
    write(&path, &encode(&cp, &key)).map_err(io)?;
    tracing::warn!(target: "invigilator::audit", checkpoint = %signed_text(&cp).replace('\n', "; "), "audit trail re-anchored");
    Ok(cp)
}
