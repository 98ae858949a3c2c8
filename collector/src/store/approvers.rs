//! The named reveal approvers (`[console] reveal_approvers` in collector.toml), and the notices
//! that announce a change to them.
//!
//! The list lives in a file only someone with the server's files can change, so that an account
//! administrator cannot mint their own second person. A change made there must still not go
//! unnoticed: at start-up the collector compares the list with the one it last saw, writes the
//! change to the audit trail, and leaves a notice that every DSL and leadership account sees on
//! every console page for `NOTICE_DAYS` days.

use crate::store::Admin;
use crate::store::audit::{self, Actor, AuditError, Record};
use crate::store::db::{OptionalExtension, params};
use serde::Serialize;

/// How long a notice stays on DSL and leadership pages.
pub const NOTICE_DAYS: i64 = 30;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Notice {
    pub at: String,
    pub text: String,
}

/// Records a change of the configured list since the last start: an audit entry and a notice.
/// Returns the notice's text when there was a change.
pub fn sync(tx: &Admin<'_>, configured: &[String]) -> Result<Option<String>, AuditError> {
    let conn = tx.conn;
    let mut now: Vec<String> = configured.iter().map(|n| n.to_lowercase()).collect();
    now.sort();
    now.dedup();
    let before: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'reveal_approvers'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let before: Vec<String> = before
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or_default();
    if before == now {
        return Ok(None);
    }
    let show = |l: &[String]| {
        if l.is_empty() {
            "nobody".to_owned()
        } else {
            l.join(", ")
        }
    };
    let text = format!(
        "The staff who may approve a reveal of a pupil's full addresses and searches changed \
         (collector.toml): was {}, now {}.",
        show(&before),
        show(&now)
    );
    conn.execute(
        "INSERT INTO meta(key, value) VALUES ('reveal_approvers', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [serde_json::to_string(&now).unwrap_or_default()],
    )?;
    conn.execute(
        "INSERT INTO notices(at, text) VALUES (?1, ?2)",
        params![crate::store::now_us(), text],
    )?;
    audit::append(
        tx,
        &Actor {
            name: "collector.toml".into(),
            role: "configuration".into(),
            source: "system".into(),
        },
        &Record {
            action: "config.reveal_approvers",
            object: "reveal_approvers",
            detail: &text,
            ..Default::default()
        },
    )?;
    Ok(Some(text))
}

/// Notices from the last `NOTICE_DAYS` days, newest first.
pub fn recent(tx: &Admin<'_>) -> crate::store::Result<Vec<Notice>> {
    let conn = tx.conn;
    let since = crate::store::now_us() - NOTICE_DAYS * 86_400_000_000;
    let mut stmt =
        conn.prepare_cached("SELECT at, text FROM notices WHERE at >= ?1 ORDER BY id DESC")?;
    let notices = stmt
        .query_map([since], |r| {
            Ok(Notice {
                at: crate::store::rfc3339(r.get(0)?),
                text: r.get(1)?,
            })
        })?
        .collect::<crate::store::db::Result<_>>()?;
    Ok(notices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_audited_and_noticed_once() {
        let (_d, conn) = crate::store::test_db();
        let list = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let first = sync(
            &crate::store::Admin::test(&conn),
            &list(&["Head", "deputy"]),
        )
        .unwrap()
        .unwrap();
        assert!(first.contains("was nobody, now deputy, head"), "{first}");
        assert_eq!(
            sync(
                &crate::store::Admin::test(&conn),
                &list(&["deputy", "head", "HEAD"])
            )
            .unwrap(),
            None
        );
        let second = sync(
            &crate::store::Admin::test(&conn),
            &list(&["head", "newcomer"]),
        )
        .unwrap()
        .unwrap();
        assert!(
            second.contains("was deputy, head, now head, newcomer"),
            "{second}"
        );
        let notices = recent(&crate::store::Admin::test(&conn)).unwrap();
        assert_eq!(notices.len(), 2);
        assert_eq!(notices[0].text, second);
        let trail = audit::list(
            &crate::store::Audited::test(&conn),
            &audit::Filter {
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
        let changes: Vec<_> = trail
            .iter()
            .filter(|e| e.action == "config.reveal_approvers")
            .collect();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].actor, "collector.toml");
    }
}
