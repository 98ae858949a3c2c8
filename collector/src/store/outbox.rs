//! The notification outbox: which alerts the safeguarding lead has been told of. Where the
//! notifier got to is kept in `meta` (`notify_last_alert_id`): a restart neither repeats nor
//! skips alerts, and several collectors share one position.

use super::audit::{self, Actor, Record};
use super::{Result, System};
use rusqlite::{OptionalExtension, params};

pub const POSITION_KEY: &str = "notify_last_alert_id";

/// What a notification says of an alert: never what a pupil did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub id: i64,
    pub severity: String,
    pub category: String,
    pub hostname: String,
    pub observed_at_us: i64,
}

/// The last alert passed, or None before the first poll of a new install.
pub fn position(sys: &System<'_>) -> Result<Option<i64>> {
    let v: Option<String> = sys
        .conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [POSITION_KEY],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()))
}

/// Moves the position on without telling anyone of what it passes.
pub fn set_position(sys: &System<'_>, id: i64) -> Result<()> {
    sys.conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![POSITION_KEY, id.to_string()],
    )?;
    Ok(())
}

/// Starts a new install's outbox at the newest alert: older alerts were never due.
pub fn start_at_newest(sys: &System<'_>) -> Result<()> {
    let max: i64 = sys
        .conn
        .query_row("SELECT coalesce(max(id), 0) FROM alerts", [], |r| r.get(0))?;
    set_position(sys, max)
}

/// Up to `limit` alerts after `last`, oldest first.
pub fn after(sys: &System<'_>, last: i64, limit: i64) -> Result<Vec<Due>> {
    let mut stmt = sys.conn.prepare_cached(
        "SELECT id, severity, category, hostname, observed_at FROM alerts
         WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let due = stmt
        .query_map(params![last, limit], |r| {
            Ok(Due {
                id: r.get(0)?,
                severity: r.get(1)?,
                category: r.get(2)?,
                hostname: r.get(3)?,
                observed_at_us: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(due)
}

/// Records each alert as notified (`alert.notify`, by the system) and moves the position to
/// `furthest`, in one transaction: no mail leaves without its entry.
pub fn pass(
    sys: &System<'_>,
    due: &[&Due],
    furthest: i64,
) -> std::result::Result<(), audit::AuditError> {
    audit::transaction(sys.conn, |entries| {
        for a in due {
            let object = format!("alert:{}", a.id);
            let rec = Record {
                action: "alert.notify",
                object: &object,
                detail: &format!("{} {}", a.severity, a.category),
                ..Default::default()
            };
            entries.add(&Actor::system(), &rec)?;
        }
        set_position(sys, furthest)?;
        Ok(())
    })
}
