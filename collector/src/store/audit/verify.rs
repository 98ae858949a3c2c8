//! `audit verify`: every writer's chain, oldest first, then the sealed checkpoint.

use super::anchor::{self, Stored};
use super::{AuditError, GENESIS, entry_hash};
use crate::store::Audited;

use std::collections::HashMap;

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Intact { entries: u64 },
    Broken { id: i64, reason: String },
}

/// Walks the whole trail and names the first entry that does not hold.
pub fn verify(tx: &Audited<'_>) -> Result<Verdict, AuditError> {
    let conn = tx.conn;
    let mut stmt = conn.prepare(
        "SELECT id, at, actor, role, action, object, purpose, source, detail, prev_hash, hash,
                writer
         FROM audit_log ORDER BY id",
    )?;
    let mut rows = stmt.query([])?;
    // Per writer: its newest entry so far.
    let mut chains: HashMap<String, (i64, String)> = HashMap::new();
    let mut previous_id = 0i64;
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
        let (prev_hash, hash, writer) = (text(9)?, text(10)?, text(11)?);
        let broken = |reason: String| Ok(Verdict::Broken { id, reason });
        let (chain_id, chain_hash) = chains
            .get(&writer)
            .cloned()
            .unwrap_or((0, GENESIS.to_owned()));
        if prev_hash != chain_hash {
            if id > previous_id + 1 {
                return broken(format!(
                    "entry {id} follows entry {previous_id}: entries {}..{} are missing",
                    previous_id + 1,
                    id - 1
                ));
            }
            return broken(format!(
                "entry {id} does not chain from entry {chain_id}: removed, inserted or reordered"
            ));
        }
        let fields = fields.each_ref().map(String::as_str);
        if entry_hash(&prev_hash, id, at, fields) != hash {
            return broken(format!("entry {id} was changed after it was written"));
        }
        chains.insert(writer, (id, hash));
        previous_id = id;
        seen += 1;
    }
    let Some(path) = anchor::head_path(conn) else {
        return Ok(Verdict::Intact { entries: seen });
    };
    let after_last = previous_id + 1;
    let at_end = |reason: String| {
        Ok(Verdict::Broken {
            id: after_last,
            reason,
        })
    };
    let checkpoint = match anchor::read(&path)? {
        None if seen == 0 => return Ok(Verdict::Intact { entries: 0 }),
        None => {
            return at_end(format!(
                "{} is missing: the trail cannot be shown to be whole (its newest entries may \
                 have been deleted); after checking the log's copies of the checkpoint, \
                 `audit anchor` seals the trail as it stands",
                path.display()
            ));
        }
        Some(Stored::Unkeyed { .. }) => {
            return at_end(format!(
                "{} is in the unkeyed format of an older version: any new access replaces it, \
                 or `audit anchor` seals the trail as it stands",
                path.display()
            ));
        }
        Some(Stored::Sealed { mac_ok: false, .. }) => {
            return at_end(format!(
                "{} does not carry a valid seal: it was written without the audit key \
                 (forged), or the key was replaced",
                path.display()
            ));
        }
        Some(Stored::Sealed { checkpoint, .. }) => checkpoint,
    };
    for (writer, (head_id, head_hash)) in &checkpoint.heads {
        let last = chains.get(writer).map_or(0, |(id, _)| *id);
        if *head_id > last {
            return Ok(Verdict::Broken {
                id: last + 1,
                reason: format!(
                    "writer {writer}'s chain ends at entry {last} but {} records entry \
                     {head_id}: the newest entries were deleted",
                    path.display()
                ),
            });
        }
        let at_head: Option<String> = conn
            .query_row(
                "SELECT hash FROM audit_log WHERE id = ?1 AND writer = ?2",
                crate::store::db::params![head_id, writer],
                |r| r.get(0),
            )
            .ok();
        if at_head.as_deref() != Some(head_hash.as_str()) {
            return Ok(Verdict::Broken {
                id: *head_id,
                reason: format!(
                    "entry {head_id} differs from the hash {} recorded",
                    path.display()
                ),
            });
        }
    }
    Ok(Verdict::Intact { entries: seen })
}
