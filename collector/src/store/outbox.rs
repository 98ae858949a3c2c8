//! Outboxes over the alerts: which alerts the safeguarding lead has been told of by mail, and
//! which each hand-off destination has taken. Where each reader got to is kept in `meta` under
//! its own key: a restart neither repeats nor skips alerts, and several collectors share one
//! position.

use super::audit::{self, Actor, Record};
use super::{Result, System};
use crate::store::db::{OptionalExtension, params};
use invigilator_policy::Severity;

/// The mail notifier's position.
pub const NOTIFY: &str = "notify_last_alert_id";

/// The last alert `key`'s reader passed, or None before its first poll.
pub fn position(sys: &System<'_>, key: &str) -> Result<Option<i64>> {
    let v: Option<String> = sys
        .conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()))
}

/// Moves `key`'s position on without telling anyone of what it passes.
pub fn set_position(sys: &System<'_>, key: &str, id: i64) -> Result<()> {
    sys.conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, id.to_string()],
    )?;
    Ok(())
}

/// Starts a new reader at the newest alert: older alerts were never due to it.
pub fn start_at_newest(sys: &System<'_>, key: &str) -> Result<()> {
    let max: i64 = sys
        .conn
        .query_row("SELECT coalesce(max(id), 0) FROM alerts", [], |r| r.get(0))?;
    set_position(sys, key, max)
}

/// Records each alert as notified (`alert.notify`, by the system) and moves the position to
/// `furthest`, in one transaction: no mail leaves without its entry.
pub fn pass(
    sys: &System<'_>,
    due: &[&Outgoing],
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
        set_position(sys, NOTIFY, furthest)?;
        Ok(())
    })
}

/// An alert as an outbox reads it; each reader decides what of it leaves (the mail, almost
/// nothing; a hand-off, by its destination's settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub id: i64,
    pub kind: String,
    pub rule: String,
    pub category: String,
    pub severity: Severity,
    pub summary: String,
    pub hostname: String,
    pub user: String,
    pub matched: String,
    pub observed_at_us: i64,
    pub policy_version: String,
}

/// Up to `limit` alerts after `last`, oldest first. An alert whose stored severity is not one
/// (a corrupt row) is logged and passed over, so that it cannot hold up every alert behind it.
pub fn after(sys: &System<'_>, last: i64, limit: i64) -> Result<Vec<Outgoing>> {
    let mut stmt = sys.conn.prepare_cached(
        "SELECT id, kind, rule, category, severity, summary, hostname, user, matched,
                observed_at, policy_version
         FROM alerts WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![last, limit], |r| {
            let id: i64 = r.get(0)?;
            let severity = match r.get::<_, String>(4)?.parse() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(alert = id, error = %e, "outbox: passing over an alert whose stored severity is corrupt");
                    return Ok(None);
                }
            };
            Ok(Some(Outgoing {
                id,
                kind: r.get(1)?,
                rule: r.get(2)?,
                category: r.get(3)?,
                severity,
                summary: r.get(5)?,
                hostname: r.get(6)?,
                user: r.get(7)?,
                matched: r.get(8)?,
                observed_at_us: r.get(9)?,
                policy_version: r.get(10)?,
            }))
        })?
        .filter_map(Result::transpose)
        .collect::<crate::store::db::Result<_>>()?;
    Ok(rows)
}

/// Records that `destination` took alert `id` (`alert.handoff`, by the system) and moves
/// `key` to it, in one transaction: the next delivery starts after it, and every delivery
/// that counted is in the trail.
pub fn handed_off(
    sys: &System<'_>,
    key: &str,
    destination: &str,
    id: i64,
) -> std::result::Result<(), audit::AuditError> {
    audit::transaction(sys.conn, |entries| {
        let object = format!("alert:{id}");
        let rec = Record {
            action: "alert.handoff",
            object: &object,
            detail: destination,
            ..Default::default()
        };
        entries.add(&Actor::system(), &rec)?;
        set_position(sys, key, id)?;
        Ok(())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Records one alert of `rule` at `severity` (nothing else about it matters to a reader).
    pub(crate) fn record(sys: &System<'_>, rule: &str, severity: Severity) {
        let a = invigilator_policy::Alert {
            agent_id: "a".into(),
            hostname: "h".into(),
            user: "u".into(),
            kind: "process".into(),
            rule: rule.into(),
            category: "c".into(),
            severity,
            summary: String::new(),
            matched: String::new(),
            observed_at_us: 1,
            policy_version: "1".into(),
            event_seq: None,
            response: String::new(),
            aggregate_key: None,
        };
        crate::store::alerts::record(sys, &a, 0).unwrap();
    }

    #[test]
    fn an_alert_with_a_corrupt_severity_does_not_hold_up_the_ones_behind_it() {
        let (_d, conn) = crate::store::test_db();
        let sys = System::test(&conn);
        record(&sys, "first", Severity::Serious);
        record(&sys, "second", Severity::Serious);
        conn.execute(
            "UPDATE alerts SET severity = 'dire' WHERE rule = 'first'",
            [],
        )
        .unwrap();
        let rules: Vec<String> = after(&sys, 0, 10)
            .unwrap()
            .into_iter()
            .map(|a| a.rule)
            .collect();
        assert_eq!(rules, ["second"]);
    }
}
