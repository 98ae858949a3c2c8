//! Enrolled agents: identity, certificate, revocation and health.

use super::{Admin, Audited, System};
use super::{Result, now_us, rfc3339};
use crate::store::db::{OptionalExtension, params};
use serde::Serialize;

pub struct NewAgent<'a> {
    pub agent_id: &'a str,
    pub group: &'a str,
    pub hostname: &'a str,
    pub os: &'a str,
    pub agent_version: &'a str,
    pub cert_serial: &'a str,
    pub cert_not_after_us: i64,
}

/// That an agent was heard from, and what its heartbeat said if one came; written in bulk by
/// the health flusher.
#[derive(Debug, Clone, Default)]
pub struct AgentHealth {
    pub last_seen_us: i64,
    /// None when the agent was only heard sending events: then only `last_seen` is written,
    /// and the state its last heartbeat reported stays as it was.
    pub report: Option<HealthReport>,
}

/// What a heartbeat (or a Chromebook's upload) says of the device.
#[derive(Debug, Clone, Default)]
pub struct HealthReport {
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub spool_depth: u64,
    pub dropped_total: u64,
    pub last_seq: u64,
    pub process_source: String,
    pub process_fallback: String,
    /// The eBPF exec program's counters: execs seen, records dropped, records truncated.
    pub process_stats: ProcessStats,
    /// The browsers' posture, when the agent reports one (older agents and Windows do not).
    pub browsers: Option<BrowserPosture>,
}

/// A device's browsers as its heartbeat described them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrowserPosture {
    /// Each browser's posture, as JSON for the agents list.
    pub json: String,
    /// The browsers where a pupil can browse unseen, comma-separated; empty when none.
    pub unseen: String,
    /// Browsers running without the extension, with their users ("chromium: amy, ben"; ...).
    pub missing: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ProcessStats {
    pub seen: u64,
    pub dropped: u64,
    pub truncated: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentRow {
    pub agent_id: String,
    pub group: String,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub enrolled_at: String,
    pub cert_serial: String,
    pub cert_not_after: String,
    pub last_seen: Option<String>,
    pub revoked: bool,
    pub revoked_at: Option<String>,
    pub spool_depth: u64,
    pub dropped_total: u64,
    pub last_seq: u64,
    pub process_source: String,
    /// Why the preferred process source is not running ("ebpf: no BTF at ..."); empty if it is.
    pub process_fallback: String,
    pub process_stats: ProcessStats,
    pub silent: bool,
    /// Each browser's managed-policy posture (empty until an agent reports it).
    pub browsers: serde_json::Value,
    /// The browsers where a pupil can browse unseen, comma-separated.
    pub browsers_unseen: String,
    /// Browsers running without the extension connected, with their users.
    pub extension_missing: String,
}

pub fn insert_agent(tx: &Admin<'_>, a: &NewAgent<'_>) -> Result<()> {
    let conn = tx.conn;
    let now = now_us();
    conn.execute(
        "INSERT INTO agents(agent_id, grp, hostname, os, agent_version, enrolled_at, cert_serial,
                            cert_not_after, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?6)",
        params![
            a.agent_id,
            a.group,
            a.hostname,
            a.os,
            a.agent_version,
            now,
            a.cert_serial,
            a.cert_not_after_us
        ],
    )?;
    Ok(())
}

pub fn record_renewal(
    tx: &Admin<'_>,
    agent_id: &str,
    serial: &str,
    not_after_us: i64,
) -> Result<()> {
    let conn = tx.conn;
    conn.execute(
        "UPDATE agents SET prev_cert_serial = cert_serial, cert_serial = ?2, cert_not_after = ?3
         WHERE agent_id = ?1",
        params![agent_id, serial, not_after_us],
    )?;
    Ok(())
}

/// Marks an agent revoked. Returns false if there is no such agent.
pub fn revoke(tx: &Admin<'_>, agent_id: &str) -> Result<bool> {
    let conn = tx.conn;
    let n = conn.execute(
        "UPDATE agents SET revoked_at = COALESCE(revoked_at, ?2) WHERE agent_id = ?1",
        params![agent_id, now_us()],
    )?;
    Ok(n == 1)
}

/// An active agent's group, its current certificate serial and the one it replaced.
pub fn credentials(
    tx: &Admin<'_>,
    agent_id: &str,
) -> Result<Option<(String, String, Option<String>)>> {
    let conn = tx.conn;
    Ok(conn
        .query_row(
            "SELECT grp, cert_serial, prev_cert_serial FROM agents
             WHERE agent_id = ?1 AND revoked_at IS NULL",
            [agent_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?)
}

/// The host name the agent last reported.
pub fn hostname(tx: &Admin<'_>, agent_id: &str) -> Result<Option<String>> {
    let conn = tx.conn;
    Ok(conn
        .query_row(
            "SELECT hostname FROM agents WHERE agent_id = ?1",
            [agent_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// Every agent id that is not allowed in: revoked ones.
pub fn revoked_ids(tx: &Admin<'_>) -> Result<Vec<String>> {
    let conn = tx.conn;
    let mut stmt =
        conn.prepare_cached("SELECT agent_id FROM agents WHERE revoked_at IS NOT NULL")?;
    let ids = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(ids)
}

pub fn write_health<'a>(
    tx: &System<'_>,
    health: impl IntoIterator<Item = (&'a String, &'a AgentHealth)>,
) -> Result<()> {
    // In the committer's order (by agent id), so that the two cannot deadlock on agents' rows.
    let mut health: Vec<_> = health.into_iter().collect();
    health.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let conn = tx.conn;
    let tx = conn.unchecked_transaction()?;
    {
        // `silent_alerted` holds when the silence was alerted on. Several collectors flush what
        // they heard on their own schedules: only contact after that time is the agent's
        // return (a heartbeat heard before it but flushed late would have it alert twice).
        let mut heard = tx.prepare_cached(
            "UPDATE agents SET last_seen = greatest(COALESCE(last_seen, 0), ?2),
                    silent_alerted = CASE WHEN ?2 > silent_alerted THEN 0
                                          ELSE silent_alerted END
             WHERE agent_id = ?1",
        )?;
        let mut said = tx.prepare_cached(
            "UPDATE agents SET hostname = ?2, os = ?3, agent_version = ?4, spool_depth = ?5,
                    dropped_total = ?6, last_seq = ?7, process_source = ?8,
                    process_fallback = ?9, process_seen = ?10, process_dropped = ?11,
                    process_truncated = ?12
             WHERE agent_id = ?1",
        )?;
        for (id, h) in health {
            heard.execute(params![id, h.last_seen_us])?;
            let Some(r) = &h.report else { continue };
            said.execute(params![
                id,
                r.hostname,
                r.os,
                r.agent_version,
                count(r.spool_depth),
                count(r.dropped_total),
                count(r.last_seq),
                r.process_source,
                r.process_fallback,
                count(r.process_stats.seen),
                count(r.process_stats.dropped),
                count(r.process_stats.truncated),
            ])?;
            if let Some(b) = &r.browsers {
                tx.prepare_cached(
                    "UPDATE agents SET browser_posture = ?2, browsers_unseen = ?3,
                            extension_missing = ?4 WHERE agent_id = ?1",
                )?
                .execute(params![id, b.json, b.unseen, b.missing])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// A count a device reported, as SQLite stores it: the device chose the number, so one past
/// i64 is held at the largest, never wrapped to a negative.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Agents last seen before `cutoff_us` that have not been alerted on yet; marks them alerted.
pub fn take_newly_silent(tx: &System<'_>, cutoff_us: i64, now_us: i64) -> Result<Vec<AgentRow>> {
    let conn = tx.conn;
    let tx = conn.unchecked_transaction()?;
    let rows = {
        let mut stmt = tx.prepare(&format!(
            "{SELECT} WHERE revoked_at IS NULL AND silent_alerted = 0 AND last_seen < ?1
             ORDER BY agent_id"
        ))?;
        stmt.query_map([cutoff_us], row)?
            .collect::<Result<Vec<_>, _>>()?
    };
    // Claimed only where still unclaimed: a second collector running the watch at the same
    // moment (see `store::leader`) waits for this row lock and then finds it taken.
    let mut claimed = Vec::with_capacity(rows.len());
    for r in rows {
        let n = tx.execute(
            "UPDATE agents SET silent_alerted = ?2 WHERE agent_id = ?1 AND silent_alerted = 0",
            params![r.agent_id, now_us.max(1)],
        )?;
        if n == 1 {
            claimed.push(r);
        }
    }
    tx.commit()?;
    Ok(claimed)
}

/// Agents whose browsers now let a pupil browse unseen and that have not been alerted on;
/// marks them alerted. An agent whose posture has cleared is unmarked, so it alerts again if
/// the policies go.
pub fn take_newly_unseen(tx: &System<'_>) -> Result<Vec<AgentRow>> {
    take_newly_flagged(tx, "browsers_unseen", "posture_alerted")
}

/// Agents with a browser running without the extension connected, not yet alerted on; as
/// [`take_newly_unseen`].
pub fn take_newly_missing_extension(tx: &System<'_>) -> Result<Vec<AgentRow>> {
    take_newly_flagged(tx, "extension_missing", "extension_alerted")
}

/// Rows whose `flag` text is set and `alerted` is not; marks them, and unmarks cleared ones.
fn take_newly_flagged(
    tx: &System<'_>,
    flag: &'static str,
    alerted: &'static str,
) -> Result<Vec<AgentRow>> {
    let conn = tx.conn;
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        &format!("UPDATE agents SET {alerted} = 0 WHERE {alerted} = 1 AND {flag} = ''"),
        [],
    )?;
    let rows = {
        let mut stmt = tx.prepare(&format!(
            "{SELECT} WHERE revoked_at IS NULL AND {alerted} = 0 AND {flag} != ''
             ORDER BY agent_id"
        ))?;
        stmt.query_map([], row)?.collect::<Result<Vec<_>, _>>()?
    };
    let mut claimed = Vec::with_capacity(rows.len());
    for r in rows {
        let n = tx.execute(
            &format!("UPDATE agents SET {alerted} = 1 WHERE agent_id = ?1 AND {alerted} = 0"),
            [&r.agent_id],
        )?;
        if n == 1 {
            claimed.push(r);
        }
    }
    tx.commit()?;
    Ok(claimed)
}

/// The fleet's health by group and process source, for the metrics: counts and sums only,
/// nothing that names a device.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetRow {
    pub group: String,
    /// As the agents reported it; the metrics hold it to the names they know.
    pub process_source: String,
    pub agents: u64,
    pub silent: u64,
    /// Sums of what the devices reported, as floats: a device may claim any count, and an
    /// integer sum of such claims could overflow.
    pub spool_depth: f64,
    pub dropped: f64,
}

/// Enrolled, unrevoked agents by group and process source; silent = not heard from since
/// `silent_before_us`, or never.
pub fn fleet(tx: &System<'_>, silent_before_us: i64) -> Result<Vec<FleetRow>> {
    let mut stmt = tx.conn.prepare(
        "SELECT grp, process_source, COUNT(*),
                TOTAL(CASE WHEN last_seen IS NULL OR last_seen < ?1 THEN 1 ELSE 0 END),
                TOTAL(spool_depth), TOTAL(dropped_total)
         FROM agents WHERE revoked_at IS NULL GROUP BY grp, process_source ORDER BY grp",
    )?;
    let rows = stmt
        .query_map([silent_before_us], |r| {
            Ok(FleetRow {
                group: r.get(0)?,
                process_source: r.get(1)?,
                agents: r.get::<_, i64>(2)?.max(0) as u64,
                silent: r.get::<_, f64>(3)? as u64,
                spool_depth: r.get(4)?,
                dropped: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn list(tx: &Audited<'_>) -> Result<Vec<AgentRow>> {
    let conn = tx.conn;
    let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY enrolled_at, agent_id"))?;
    let rows = stmt.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

const SELECT: &str = "SELECT agent_id, grp, hostname, os, agent_version, enrolled_at, cert_serial,
    cert_not_after, last_seen, revoked_at, spool_depth, dropped_total, last_seq, process_source,
    silent_alerted, process_fallback, process_seen, process_dropped, process_truncated,
    browser_posture, browsers_unseen, extension_missing FROM agents";

fn row(r: &crate::store::db::Row<'_>) -> crate::store::db::Result<AgentRow> {
    let revoked_at: Option<i64> = r.get(9)?;
    Ok(AgentRow {
        agent_id: r.get(0)?,
        group: r.get(1)?,
        hostname: r.get(2)?,
        os: r.get(3)?,
        agent_version: r.get(4)?,
        enrolled_at: rfc3339(r.get(5)?),
        cert_serial: r.get(6)?,
        cert_not_after: rfc3339(r.get(7)?),
        last_seen: r.get::<_, Option<i64>>(8)?.map(rfc3339),
        revoked: revoked_at.is_some(),
        revoked_at: revoked_at.map(rfc3339),
        spool_depth: r.get::<_, i64>(10)? as u64,
        dropped_total: r.get::<_, i64>(11)? as u64,
        last_seq: r.get::<_, i64>(12)? as u64,
        process_source: r.get(13)?,
        silent: r.get::<_, i64>(14)? != 0,
        process_fallback: r.get(15)?,
        process_stats: ProcessStats {
            seen: r.get::<_, i64>(16)? as u64,
            dropped: r.get::<_, i64>(17)? as u64,
            truncated: r.get::<_, i64>(18)? as u64,
        },
        // Written by the collector from a bounded heartbeat; unreadable is shown as none.
        browsers: serde_json::from_str(&r.get::<_, String>(19)?).unwrap_or(serde_json::json!([])),
        browsers_unseen: r.get(20)?,
        extension_missing: r.get(21)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrol(conn: &crate::store::db::Connection, agent_id: &str, group: &str) {
        let a = NewAgent {
            agent_id,
            group,
            hostname: "h",
            os: "linux",
            agent_version: "0.1.0",
            cert_serial: "01",
            cert_not_after_us: 0,
        };
        insert_agent(&crate::store::Admin::test(conn), &a).unwrap();
    }

    #[test]
    fn enrol_revoke_list() {
        let (_d, conn) = crate::store::test_db();
        enrol(&conn, "a1", "staff");
        let (group, serial, previous) = credentials(&crate::store::Admin::test(&conn), "a1")
            .unwrap()
            .unwrap();
        assert_eq!(
            (group.as_str(), serial.as_str(), previous),
            ("staff", "01", None)
        );
        assert!(revoke(&crate::store::Admin::test(&conn), "a1").unwrap());
        assert!(!revoke(&crate::store::Admin::test(&conn), "nobody").unwrap());
        assert_eq!(
            credentials(&crate::store::Admin::test(&conn), "a1").unwrap(),
            None
        );
        assert_eq!(
            revoked_ids(&crate::store::Admin::test(&conn)).unwrap(),
            vec!["a1".to_string()]
        );
        let listed = list(&crate::store::Audited::test(&conn)).unwrap();
        assert!(listed[0].revoked && listed[0].group == "staff");
    }

    #[test]
    fn the_fleet_is_counted_by_group_and_source_without_overflowing() {
        let (_d, conn) = crate::store::test_db();
        for (id, group) in [("a1", "ks3"), ("a2", "ks3"), ("a3", "staff")] {
            enrol(&conn, id, group);
        }
        let heard = |spool| AgentHealth {
            last_seen_us: crate::store::now_us(),
            report: Some(HealthReport {
                spool_depth: spool,
                process_source: "ebpf".into(),
                ..HealthReport::default()
            }),
        };
        let (a1, a2) = ("a1".to_owned(), "a2".to_owned());
        let (h1, h2) = (heard(u64::MAX), heard(u64::MAX));
        write_health(&crate::store::System::test(&conn), [(&a1, &h1), (&a2, &h2)]).unwrap();
        let rows = fleet(&crate::store::System::test(&conn), 0).unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        let ks3 = &rows[0];
        assert_eq!(
            (ks3.group.as_str(), ks3.process_source.as_str()),
            ("ks3", "ebpf")
        );
        assert_eq!((ks3.agents, ks3.silent), (2, 0));
        assert!(
            ks3.spool_depth > 1.8e19,
            "two claims of i64::MAX, summed without overflow"
        );
        assert_eq!((rows[1].group.as_str(), rows[1].agents), ("staff", 1));
        // Nobody heard from since a cutoff still to come: all silent.
        let later = fleet(&crate::store::System::test(&conn), i64::MAX).unwrap();
        assert_eq!((later[0].silent, later[1].silent), (2, 1));
    }

    #[test]
    fn counts_past_what_sqlite_holds_are_kept_at_the_largest() {
        let (_d, conn) = crate::store::test_db();
        enrol(&conn, "a1", "staff");
        let h = AgentHealth {
            last_seen_us: crate::store::now_us(),
            report: Some(HealthReport {
                spool_depth: u64::MAX,
                process_stats: ProcessStats {
                    seen: u64::MAX,
                    dropped: 7,
                    truncated: 0,
                },
                ..HealthReport::default()
            }),
        };
        write_health(&crate::store::System::test(&conn), [(&"a1".to_owned(), &h)]).unwrap();
        let row = &list(&crate::store::Audited::test(&conn)).unwrap()[0];
        assert_eq!(row.spool_depth, i64::MAX as u64);
        assert_eq!(row.process_stats.seen, i64::MAX as u64);
        assert_eq!(row.process_stats.dropped, 7);
    }

    /// Events heard between heartbeats move `last_seen` on and leave what the last heartbeat
    /// said (it was once written blank by a flush that held no heartbeat).
    #[test]
    fn events_alone_keep_what_the_last_heartbeat_said() {
        let (_d, conn) = crate::store::test_db();
        enrol(&conn, "a1", "staff");
        let sys = crate::store::System::test(&conn);
        let id = "a1".to_owned();
        let t0 = crate::store::now_us();
        let beat = AgentHealth {
            last_seen_us: t0,
            report: Some(HealthReport {
                hostname: "lab-7".into(),
                process_source: "ebpf".into(),
                spool_depth: 3,
                ..HealthReport::default()
            }),
        };
        write_health(&sys, [(&id, &beat)]).unwrap();
        let first_seen = list(&crate::store::Audited::test(&conn)).unwrap()[0]
            .last_seen
            .clone();
        let events_only = AgentHealth {
            last_seen_us: t0 + 5_000_000,
            report: None,
        };
        write_health(&sys, [(&id, &events_only)]).unwrap();
        let row = &list(&crate::store::Audited::test(&conn)).unwrap()[0];
        assert_eq!(
            (
                row.hostname.as_str(),
                row.process_source.as_str(),
                row.spool_depth
            ),
            ("lab-7", "ebpf", 3)
        );
        assert!(
            row.last_seen.is_some() && row.last_seen != first_seen,
            "{row:?}"
        );
    }

    #[test]
    fn a_late_flush_of_an_older_heartbeat_does_not_clear_a_silence() {
        let (_d, conn) = crate::store::test_db();
        enrol(&conn, "a1", "staff");
        let sys = crate::store::System::test(&conn);
        let id = "a1".to_owned();
        // After enrolment, which counts as the first contact.
        let t0 = crate::store::now_us();
        let heard = |at, host: &str| AgentHealth {
            last_seen_us: t0 + at,
            report: Some(HealthReport {
                hostname: host.into(),
                ..HealthReport::default()
            }),
        };
        write_health(&sys, [(&id, &heard(5_000_000, "new"))]).unwrap();
        assert_eq!(
            take_newly_silent(&sys, t0 + 6_000_000, t0 + 9_000_000)
                .unwrap()
                .len(),
            1
        );
        // Another collector flushes what it heard before the alert (at 9 s), after it.
        write_health(&sys, [(&id, &heard(5_500_000, "old"))]).unwrap();
        assert!(
            take_newly_silent(&sys, t0 + 6_000_000, t0 + 9_000_000)
                .unwrap()
                .is_empty(),
            "the silence was alerted twice"
        );
        // A newer report is the agent's return: its next silence alerts again.
        write_health(&sys, [(&id, &heard(10_000_000, "new"))]).unwrap();
        assert_eq!(
            take_newly_silent(&sys, t0 + 12_000_000, t0 + 12_000_000)
                .unwrap()
                .len(),
            1
        );
    }
}
