//! Open login sessions per device, kept current from session events inside the committer's
//! transaction.
//!
//! A session row is only as true as the device's last word about it: a machine that loses
//! power sends no logoff. So a device's sessions are closed when its agent reports a new boot
//! (a "boot" session event, spooled in order with the others) and when it goes silent, and a
//! session not heard of for [`PLAUSIBLE_FOR`] counts for nothing.

use super::Result;
use super::System;
use crate::store::db::{OptionalExtension, TurnClass, params};
use invigilator_proto::v1::{Event, SessionChange};

/// A session with no event for this long is not believed any more (a school day is shorter;
/// any lock, unlock, idle or activity change refreshes it, and an agent start reports it again).
pub const PLAUSIBLE_FOR_US: i64 = 24 * 3600 * 1_000_000;

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
        "boot" => {
            boot(conn, agent_id, &s.boot_id, now)?;
            return Ok(Vec::new());
        }
        "logoff" => {
            conn.execute(
                "DELETE FROM sessions WHERE agent_id = ?1 AND session_id = ?2",
                params![agent_id, s.session_id],
            )?;
            return Ok(Vec::new());
        }
        "logon" | "present" | "lock" | "unlock" | "idle" | "active" => {
            // Two logons of one person on two devices, committed at once (two collectors, or
            // two lanes of one), would each miss the other's session.
            if s.action == "logon" && !s.user.is_empty() {
                conn.take_turns(TurnClass::Sessions, &s.user.to_lowercase())?;
            }
            conn.execute(
                "INSERT INTO sessions(agent_id, session_id, user, hostname, grp, locked, idle_since, opened_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
                 ON CONFLICT(agent_id, session_id) DO UPDATE SET
                    user = excluded.user, hostname = excluded.hostname, locked = excluded.locked,
                    idle_since = excluded.idle_since, updated_at = excluded.updated_at,
                    unattended_alerted = CASE WHEN excluded.locked = 1 OR excluded.idle_since IS NULL
                                              THEN 0 ELSE sessions.unattended_alerted END",
                params![agent_id, s.session_id, s.user, event.hostname, group, s.locked, idle_since, now],
            )?;
        }
        _ => return Ok(Vec::new()),
    }
    if s.action != "logon" || s.user.is_empty() {
        return Ok(Vec::new());
    }
    // Only sessions still plausible: heard of lately, on a device whose agent is not silent
    // (a silent device's sessions are closed by `close_device`).
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT hostname FROM sessions
         WHERE user = ?1 AND agent_id <> ?2 AND updated_at >= ?3 ORDER BY hostname",
    )?;
    let hosts = stmt
        .query_map(params![s.user, agent_id, now - PLAUSIBLE_FOR_US], |r| {
            r.get(0)
        })?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(hosts)
}

/// A new boot of the device closes every session it had before: they cannot have survived it.
/// The boot id is kept per agent, so an agent restarted without a reboot keeps its sessions.
fn boot(
    conn: &crate::store::db::Connection,
    agent_id: &str,
    boot_id: &str,
    at_us: i64,
) -> Result<()> {
    if boot_id.is_empty() {
        return Ok(());
    }
    let known: Option<String> = conn
        .query_row(
            "SELECT boot_id FROM agents WHERE agent_id = ?1",
            [agent_id],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    if known.as_deref() == Some(boot_id) {
        return Ok(());
    }
    conn.execute(
        "DELETE FROM sessions WHERE agent_id = ?1 AND updated_at <= ?2",
        params![agent_id, at_us],
    )?;
    conn.execute(
        "UPDATE agents SET boot_id = ?2 WHERE agent_id = ?1",
        params![agent_id, boot_id],
    )?;
    Ok(())
}

/// Forgets every session of a device gone silent: nothing it reported can be trusted to be
/// still open.
pub fn close_device(tx: &System<'_>, agent_id: &str) -> Result<usize> {
    Ok(tx
        .conn
        .execute("DELETE FROM sessions WHERE agent_id = ?1", [agent_id])?)
}

/// How many of a device's users [`logged_on`] returns: a device that invents sessions by the
/// thousand must not make every USB event of its commit sort them all.
const LOGGED_ON_MAX: i64 = 4;

/// The users with a plausible session on this device, unlocked before locked, the most
/// recently active first (at most [`LOGGED_ON_MAX`], read through the `sessions_by_activity`
/// index): who a USB device plugged in now belongs to.
pub fn logged_on(tx: &System<'_>, agent_id: &str, at_us: i64) -> Result<Vec<String>> {
    let mut stmt = tx.conn.prepare_cached(
        "SELECT user FROM sessions WHERE agent_id = ?1 AND user <> '' AND updated_at >= ?2
         ORDER BY locked, updated_at DESC LIMIT ?3",
    )?;
    let users = stmt
        .query_map(
            params![agent_id, at_us - PLAUSIBLE_FOR_US, LOGGED_ON_MAX],
            |r| r.get(0),
        )?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(users)
}

/// A session unlocked and idle for longer than asked, not yet alerted on.
#[derive(Debug, Clone)]
pub struct IdleSession {
    pub agent_id: String,
    pub session_id: String,
    pub user: String,
    pub hostname: String,
    pub group: String,
    pub idle_since_us: i64,
    /// The time the device is known to be still idle at: now for an agent that is caught up
    /// (heard from lately, nothing waiting in its spool), else the time of its latest stored
    /// event. A spell is measured to here, so events delivered late never claim an idle spell
    /// longer than the device reported.
    pub as_of_us: i64,
}

/// Unlocked sessions idle for longer than `idle_for_us` as of the device's own clock (see
/// [`IdleSession::as_of_us`]) and not yet alerted on; marks them alerted. `now_us` and
/// `heard_since_us` decide whether an agent is caught up.
pub fn take_unattended(
    tx: &System<'_>,
    idle_for_us: i64,
    now_us: i64,
    heard_since_us: i64,
) -> Result<Vec<IdleSession>> {
    let conn = tx.conn;
    let tx = conn.unchecked_transaction()?;
    let rows = {
        let mut stmt = tx.prepare(
            "SELECT agent_id, session_id, user, hostname, grp, idle_since, as_of FROM (
               SELECT s.*, CASE
                 WHEN a.spool_depth = 0 AND a.last_seen >= ?3 THEN ?2
                 ELSE coalesce((SELECT e.observed_at FROM events e WHERE e.agent_id = s.agent_id
                                ORDER BY e.seq DESC LIMIT 1), s.updated_at)
               END AS as_of
               FROM sessions s JOIN agents a ON a.agent_id = s.agent_id
               WHERE s.locked = 0 AND s.idle_since IS NOT NULL AND s.unattended_alerted = 0) idle
             WHERE idle_since < as_of - ?1",
        )?;
        stmt.query_map(params![idle_for_us, now_us, heard_since_us], |r| {
            Ok(IdleSession {
                agent_id: r.get(0)?,
                session_id: r.get(1)?,
                user: r.get(2)?,
                hostname: r.get(3)?,
                group: r.get(4)?,
                idle_since_us: r.get(5)?,
                as_of_us: r.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?
    };
    let mut claimed = Vec::with_capacity(rows.len());
    for r in rows {
        let n = tx.execute(
            "UPDATE sessions SET unattended_alerted = 1
             WHERE agent_id = ?1 AND session_id = ?2 AND unattended_alerted = 0",
            params![r.agent_id, r.session_id],
        )?;
        if n == 1 {
            claimed.push(r);
        }
    }
    tx.commit()?;
    Ok(claimed)
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

    /// One person logging on at two devices, the two logons committed at the same moment
    /// (two collectors, or two lanes of one): one of them finds the other.
    #[test]
    fn two_logons_committed_at_once_find_each_other() {
        let (_d, conn) = crate::store::test_db();
        enrol(&conn, "a1", 0, 0);
        enrol(&conn, "a2", 0, 0);
        let found: Vec<Vec<String>> = std::thread::scope(|scope| {
            let commits: Vec<_> = [("a1", "lab-1"), ("a2", "office-2")]
                .into_iter()
                .map(|(agent, host)| {
                    let conn = conn.reopen();
                    scope.spawn(move || {
                        let tx = conn.unchecked_transaction().unwrap();
                        let sys = crate::store::System::test(&tx);
                        // As the committer, which locks the batch's agents first.
                        crate::store::delivery::lock(&sys, agent).unwrap();
                        let (e, s) = ev("logon", "1", "staff.jones", host, 10);
                        let found = apply(&sys, agent, "staff", &e, &s).unwrap();
                        std::thread::sleep(std::time::Duration::from_millis(150));
                        tx.commit().unwrap();
                        found
                    })
                })
                .collect();
            commits.into_iter().map(|c| c.join().unwrap()).collect()
        });
        assert_eq!(
            found.iter().filter(|f| !f.is_empty()).count(),
            1,
            "{found:?}"
        );
    }

    fn enrol(conn: &crate::store::db::Connection, id: &str, last_seen: i64, spool_depth: u64) {
        let admin = crate::store::Admin::test(conn);
        crate::store::agents::insert_agent(
            &admin,
            &crate::store::NewAgent {
                agent_id: id,
                group: "staff",
                hostname: "lab-1",
                os: "Linux",
                agent_version: "0",
                cert_serial: id,
                cert_not_after_us: i64::MAX,
            },
        )
        .unwrap();
        let h = crate::store::AgentHealth {
            last_seen_us: last_seen,
            report: Some(crate::store::agents::HealthReport {
                hostname: "lab-1".into(),
                spool_depth,
                ..Default::default()
            }),
        };
        crate::store::agents::write_health(&System::test(conn), [(&id.to_owned(), &h)]).unwrap();
    }

    #[test]
    fn idle_unlocked_sessions_are_taken_once_and_reset_by_activity() {
        let (_d, conn) = crate::store::test_db();
        let sys = System::test(&conn);
        enrol(&conn, "a1", 1_000, 0);
        for (action, t) in [("logon", 0), ("idle", 100)] {
            let (e, s) = ev(action, "1", "staff.jones", "lab-1", t);
            apply(&sys, "a1", "staff", &e, &s).unwrap();
        }
        // A caught-up agent is measured to now.
        let take = |now| take_unattended(&sys, 400, now, 500).unwrap();
        assert!(take(450).is_empty(), "not idle long enough");
        let taken = take(600);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].as_of_us - taken[0].idle_since_us, 500);
        assert!(take(600).is_empty(), "once per idle spell");
        for (action, t) in [("active", 600), ("idle", 700)] {
            let (e, s) = ev(action, "1", "staff.jones", "lab-1", t);
            apply(&sys, "a1", "staff", &e, &s).unwrap();
        }
        assert_eq!(take(1_200).len(), 1, "a new idle spell alerts again");
        let (e, s) = ev("lock", "1", "staff.jones", "lab-1", 1_300);
        apply(&sys, "a1", "staff", &e, &s).unwrap();
        assert!(take(100_000).is_empty(), "a locked screen is attended to");
    }

    #[test]
    fn an_idle_spell_delivered_late_is_measured_to_the_devices_own_events() {
        let (_d, conn) = crate::store::test_db();
        let sys = System::test(&conn);
        // Behind: events still waiting in its spool.
        enrol(&conn, "a1", 1_000, 40);
        for (action, t) in [("logon", 0), ("idle", 100)] {
            let (e, s) = ev(action, "1", "staff.jones", "lab-1", t);
            apply(&sys, "a1", "staff", &e, &s).unwrap();
        }
        let two_months = 60 * 24 * 3600 * 1_000_000_i64;
        assert!(
            take_unattended(&sys, 400, two_months, 0)
                .unwrap()
                .is_empty(),
            "nothing the device said shows it idle for long"
        );
    }

    #[test]
    fn a_new_boot_or_silence_closes_a_devices_sessions_and_old_ones_do_not_count() {
        let (_d, conn) = crate::store::test_db();
        let sys = System::test(&conn);
        enrol(&conn, "a1", 0, 0);
        enrol(&conn, "a2", 0, 0);
        let boot = |agent: &str, id: &str, t: i64| {
            let (mut e, mut s) = ev("boot", "", "", "lab-1", t);
            s.boot_id = id.into();
            e.kind = Some(Kind::Session(s.clone()));
            apply(&sys, agent, "staff", &e, &s).unwrap();
        };
        let logon = |agent: &str, user: &str, host: &str, t: i64| {
            let (e, s) = ev("logon", &format!("{agent}-{t}"), user, host, t);
            apply(&sys, agent, "staff", &e, &s).unwrap()
        };
        boot("a1", "boot-1", 5);
        logon("a1", "staff.jones", "lab-1", 10);
        assert_eq!(logged_on(&sys, "a1", 20).unwrap(), ["staff.jones"]);
        // The agent restarting in the same boot keeps them; a new boot does not.
        boot("a1", "boot-1", 30);
        assert_eq!(logged_on(&sys, "a1", 40).unwrap(), ["staff.jones"]);
        boot("a1", "boot-2", 50);
        assert!(logged_on(&sys, "a1", 60).unwrap().is_empty());
        assert!(logon("a2", "staff.jones", "office-2", 70).is_empty());
        // A session elsewhere counts while it is plausible.
        logon("a1", "staff.jones", "lab-1", 80);
        assert_eq!(logon("a2", "staff.jones", "office-2", 90), ["lab-1"]);
        assert!(logon("a2", "staff.jones", "office-2", 80 + PLAUSIBLE_FOR_US + 1).is_empty());
        // A silent device's sessions are closed.
        logon("a1", "staff.jones", "lab-1", PLAUSIBLE_FOR_US * 2);
        close_device(&sys, "a1").unwrap();
        assert!(logon("a2", "staff.jones", "office-2", PLAUSIBLE_FOR_US * 2 + 10).is_empty());
    }
}
