//! Open login sessions per device, kept current from session events inside the committer's
//! transaction.

use super::Result;
use super::System;
use invigilator_proto::v1::{Event, SessionChange};
use rusqlite::params;

/// Applies a session event. For a logon, returns the host names where the same user already has
/// a session open on another device.
pub fn apply(
    tx: &System<'_>,
    agent_id: &str,
    group: &str,
    event: &Event,
    s: &SessionChange,
) -> Result<Vec<String>> {
    let conn = tx.conn;
    let now = event.observed_at_us;
    let idle_since = (s.idle).then_some(if s.idle_since_us > 0 {
        s.idle_since_us
    } else {
        now
    });
    match s.action.as_str() {
        "logoff" => {
            conn.execute(
                "DELETE FROM sessions WHERE agent_id = ?1 AND session_id = ?2",
                params![agent_id, s.session_id],
            )?;
            return Ok(Vec::new());
        }
        "logon" | "present" | "lock" | "unlock" | "idle" | "active" => {
            conn.execute(
                "INSERT INTO sessions(agent_id, session_id, user, hostname, grp, locked, idle_since, opened_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
                 ON CONFLICT(agent_id, session_id) DO UPDATE SET
                    user = excluded.user, hostname = excluded.hostname, locked = excluded.locked,
                    idle_since = excluded.idle_since, updated_at = excluded.updated_at,
                    unattended_alerted = CASE WHEN excluded.locked = 1 OR excluded.idle_since IS NULL
                                              THEN 0 ELSE unattended_alerted END",
                params![agent_id, s.session_id, s.user, event.hostname, group, s.locked, idle_since, now],
            )?;
        }
        _ => return Ok(Vec::new()),
    }
    if s.action != "logon" || s.user.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT hostname FROM sessions WHERE user = ?1 AND agent_id <> ?2 ORDER BY hostname",
    )?;
    let hosts = stmt
        .query_map(params![s.user, agent_id], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(hosts)
}

/// A session unlocked and idle since before `cutoff_us`, not yet alerted on.
#[derive(Debug, Clone)]
pub struct IdleSession {
    pub agent_id: String,
    pub session_id: String,
    pub user: String,
    pub hostname: String,
    pub group: String,
    pub idle_since_us: i64,
}

/// Unlocked sessions idle since before `cutoff_us` and not yet alerted on; marks them alerted.
pub fn take_unattended(tx: &System<'_>, cutoff_us: i64) -> Result<Vec<IdleSession>> {
    let conn = tx.conn;
    let tx = conn.unchecked_transaction()?;
    let rows = {
        let mut stmt = tx.prepare(
            "SELECT agent_id, session_id, user, hostname, grp, idle_since FROM sessions
             WHERE locked = 0 AND idle_since IS NOT NULL AND idle_since < ?1 AND unattended_alerted = 0",
        )?;
        stmt.query_map([cutoff_us], |r| {
            Ok(IdleSession {
                agent_id: r.get(0)?,
                session_id: r.get(1)?,
                user: r.get(2)?,
                hostname: r.get(3)?,
                group: r.get(4)?,
                idle_since_us: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?
    };
    for r in &rows {
        tx.execute(
            "UPDATE sessions SET unattended_alerted = 1 WHERE agent_id = ?1 AND session_id = ?2",
            params![r.agent_id, r.session_id],
        )?;
    }
    tx.commit()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use invigilator_proto::v1::event::Kind;

    fn ev(action: &str, session: &str, user: &str, host: &str, t: i64) -> (Event, SessionChange) {
        let s = SessionChange {
            action: action.into(),
            session_id: session.into(),
            user: user.into(),
            idle: action == "idle",
            idle_since_us: if action == "idle" { t } else { 0 },
            locked: action == "lock",
            ..Default::default()
        };
        (
            Event {
                hostname: host.into(),
                observed_at_us: t,
                kind: Some(Kind::Session(s.clone())),
                ..Default::default()
            },
            s,
        )
    }

    #[test]
    fn logons_elsewhere_are_found_and_logoffs_forgotten() {
        let (_d, conn) = crate::store::test_db();
        let (e, s) = ev("logon", "1", "staff.jones", "lab-1", 10);
        assert!(
            apply(&crate::store::System::test(&conn), "a1", "staff", &e, &s)
                .unwrap()
                .is_empty()
        );
        let (e, s) = ev("logon", "7", "staff.jones", "office-2", 20);
        assert_eq!(
            apply(&crate::store::System::test(&conn), "a2", "staff", &e, &s).unwrap(),
            vec!["lab-1".to_string()]
        );
        let (e, s) = ev("logoff", "1", "staff.jones", "lab-1", 30);
        apply(&crate::store::System::test(&conn), "a1", "staff", &e, &s).unwrap();
        let (e, s) = ev("logon", "9", "staff.jones", "lab-3", 40);
        assert_eq!(
            apply(&crate::store::System::test(&conn), "a3", "staff", &e, &s).unwrap(),
            vec!["office-2".to_string()]
        );
    }

    #[test]
    fn idle_unlocked_sessions_are_taken_once_and_reset_by_activity() {
        let (_d, conn) = crate::store::test_db();
        for (action, t) in [("logon", 0), ("idle", 100)] {
            let (e, s) = ev(action, "1", "staff.jones", "lab-1", t);
            apply(&crate::store::System::test(&conn), "a1", "staff", &e, &s).unwrap();
        }
        assert!(
            take_unattended(&crate::store::System::test(&conn), 50)
                .unwrap()
                .is_empty(),
            "not idle long enough"
        );
        assert_eq!(
            take_unattended(&crate::store::System::test(&conn), 500)
                .unwrap()
                .len(),
            1
        );
        assert!(
            take_unattended(&crate::store::System::test(&conn), 500)
                .unwrap()
                .is_empty(),
            "once per idle spell"
        );
        for (action, t) in [("active", 600), ("idle", 700)] {
            let (e, s) = ev(action, "1", "staff.jones", "lab-1", t);
            apply(&crate::store::System::test(&conn), "a1", "staff", &e, &s).unwrap();
        }
        assert_eq!(
            take_unattended(&crate::store::System::test(&conn), 800)
                .unwrap()
                .len(),
            1,
            "a new idle spell alerts again"
        );
        let (e, s) = ev("lock", "1", "staff.jones", "lab-1", 900);
        apply(&crate::store::System::test(&conn), "a1", "staff", &e, &s).unwrap();
        assert!(
            take_unattended(&crate::store::System::test(&conn), 10_000)
                .unwrap()
                .is_empty(),
            "a locked screen is attended to"
        );
    }
}
