//! Alerts: what the policy engine raised, with the reason it fired. Repeats of the same breach
//! (same aggregation key, within the policy's window, while the alert is still new) add to one
//! alert's count instead of making hundreds.

use super::{Audited, System};
use super::{Result, now_us, rfc3339};
use crate::store::db::{OptionalExtension, TurnClass, params};
use invigilator_policy::{Alert, Severity};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct AlertRow {
    pub id: i64,
    pub agent_id: String,
    pub hostname: String,
    pub user: String,
    pub kind: String,
    pub rule: String,
    pub category: String,
    pub severity: Severity,
    pub summary: String,
    pub matched: String,
    pub observed_at: String,
    pub created_at: String,
    pub policy_version: String,
    pub event_seq: Option<u64>,
    pub status: String,
    /// How many occurrences this alert stands for.
    pub count: u64,
    /// The latest occurrence (equal to `observed_at` when `count` is 1).
    pub last_observed_at: String,
    pub response: String,
}

/// What `record` did with an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New(i64),
    /// Counted into an existing alert.
    Repeat(i64),
}

/// Stores a new alert, or counts it into an open alert with the same aggregation key whose last
/// occurrence is no more than `window_us` before this one.
pub fn record(tx: &System<'_>, a: &Alert, window_us: i64) -> Result<Recorded> {
    let conn = tx.conn;
    if let Some(key) = &a.aggregate_key
        && window_us > 0
    {
        // Two commits at once (two collectors, or two lanes of one) could each find no open
        // alert for one key and each insert one.
        conn.take_turns(TurnClass::Aggregation, key)?;
        let open: Option<i64> = conn
            .prepare_cached(
                "SELECT id FROM alerts
                 WHERE aggregate_key = ?1 AND status = 'new'
                   AND last_observed_at >= ?2 AND observed_at <= CAST(?3 AS BIGINT) + ?4
                 ORDER BY last_observed_at DESC LIMIT 1",
            )?
            .query_row(
                params![
                    key,
                    a.observed_at_us - window_us,
                    a.observed_at_us,
                    window_us
                ],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = open {
            conn.prepare_cached(
                "UPDATE alerts SET count = count + 1,
                        last_observed_at = greatest(last_observed_at, ?2),
                        observed_at = least(observed_at, ?2)
                 WHERE id = ?1",
            )?
            .execute(params![id, a.observed_at_us])?;
            return Ok(Recorded::Repeat(id));
        }
    }
    insert(tx, a).map(Recorded::New)
}

/// Stores an alert on its own, whatever its key.
pub fn insert(tx: &System<'_>, a: &Alert) -> Result<i64> {
    let conn = tx.conn;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO alerts(agent_id, hostname, user, kind, rule, category, severity, summary,
                            matched, observed_at, created_at, policy_version, event_seq,
                            count, last_observed_at, aggregate_key, response)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 1, ?10, ?14, ?15)
         RETURNING id",
    )?;
    let id = stmt.query_row(
        params![
            a.agent_id,
            a.hostname,
            a.user,
            a.kind,
            a.rule,
            a.category,
            a.severity.as_str(),
            a.summary,
            a.matched,
            a.observed_at_us,
            now_us(),
            a.policy_version,
            a.event_seq.map(|s| s as i64),
            a.aggregate_key,
            a.response,
        ],
        |r| r.get(0),
    )?;
    Ok(id)
}

#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub since_us: Option<i64>,
    pub limit: Option<u64>,
}

pub fn list(tx: &Audited<'_>, f: &AlertFilter) -> Result<Vec<AlertRow>> {
    let conn = tx.conn;
    let mut stmt = conn.prepare(
        "SELECT id, agent_id, hostname, user, kind, rule, category, severity, summary, matched,
                observed_at, created_at, policy_version, event_seq, status,
                count, coalesce(last_observed_at, observed_at), response
         FROM alerts WHERE (CAST(?1 AS BIGINT) IS NULL OR observed_at >= ?1) ORDER BY id LIMIT ?2",
    )?;
    let limit = f
        .limit
        .map(|l| l.min(i64::MAX as u64) as i64)
        .unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![f.since_us, limit], |r| {
            Ok(AlertRow {
                id: r.get(0)?,
                agent_id: r.get(1)?,
                hostname: r.get(2)?,
                user: r.get(3)?,
                kind: r.get(4)?,
                rule: r.get(5)?,
                category: r.get(6)?,
                severity: super::severity(r, 7)?,
                summary: r.get(8)?,
                matched: r.get(9)?,
                observed_at: rfc3339(r.get(10)?),
                created_at: rfc3339(r.get(11)?),
                policy_version: r.get(12)?,
                event_seq: r.get::<_, Option<i64>>(13)?.map(|s| s as u64),
                status: r.get(14)?,
                count: r.get::<_, i64>(15)?.max(0) as u64,
                last_observed_at: rfc3339(r.get(16)?),
                response: r.get(17)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(at_s: i64) -> Alert {
        Alert {
            agent_id: "a".into(),
            hostname: "h".into(),
            user: "u".into(),
            kind: "process".into(),
            rule: "circumvention.tor".into(),
            category: "circumvention".into(),
            severity: Severity::Serious,
            summary: "s".into(),
            matched: "name=tor".into(),
            observed_at_us: at_s * 1_000_000,
            policy_version: "1".into(),
            event_seq: Some(3),
            response: "talk to them".into(),
            aggregate_key: None,
        }
    }

    #[test]
    fn inserted_alerts_list_in_order_with_since_and_limit() {
        let (_d, conn) = crate::store::test_db();
        insert(&crate::store::System::test(&conn), &alert(1)).unwrap();
        insert(&crate::store::System::test(&conn), &alert(5)).unwrap();
        assert_eq!(
            list(&crate::store::Audited::test(&conn), &AlertFilter::default())
                .unwrap()
                .len(),
            2
        );
        let since = list(
            &crate::store::Audited::test(&conn),
            &AlertFilter {
                since_us: Some(2_000_000),
                limit: None,
            },
        )
        .unwrap();
        assert_eq!(since.len(), 1);
        assert_eq!(since[0].observed_at, "1970-01-01T00:00:05.000000Z");
        assert_eq!(since[0].count, 1);
        assert_eq!(since[0].last_observed_at, since[0].observed_at);
        let limited = AlertFilter {
            since_us: None,
            limit: Some(1),
        };
        assert_eq!(
            list(&crate::store::Audited::test(&conn), &limited)
                .unwrap()
                .len(),
            1
        );
    }

    /// One person's breach reported from two devices, committed at the same moment by two
    /// collectors (or two lanes of one): one alert counting both, not two.
    #[test]
    fn two_commits_of_one_breach_at_once_make_one_alert() {
        let (_d, conn) = crate::store::test_db();
        let window = 600 * 1_000_000;
        let ids: Vec<Recorded> = std::thread::scope(|s| {
            let commits: Vec<_> = [("a", 100), ("b", 101)]
                .into_iter()
                .map(|(agent, at_s)| {
                    let conn = conn.reopen();
                    s.spawn(move || {
                        let tx = conn.unchecked_transaction().unwrap();
                        let a = Alert {
                            agent_id: agent.into(),
                            aggregate_key: Some("user:u|circumvention.tor|tor".into()),
                            ..alert(at_s)
                        };
                        let sys = crate::store::System::test(&tx);
                        // As the committer, which locks the batch's agents first.
                        crate::store::delivery::lock(&sys, agent).unwrap();
                        let r = record(&sys, &a, window).unwrap();
                        // The other commit gets under way before this one ends.
                        std::thread::sleep(std::time::Duration::from_millis(150));
                        tx.commit().unwrap();
                        r
                    })
                })
                .collect();
            commits.into_iter().map(|c| c.join().unwrap()).collect()
        });
        let rows = list(&crate::store::Audited::test(&conn), &AlertFilter::default()).unwrap();
        assert_eq!(rows.len(), 1, "{ids:?}");
        assert_eq!(rows[0].count, 2);
    }

    #[test]
    fn repeats_within_the_window_count_into_one_open_alert() {
        let (_d, conn) = crate::store::test_db();
        let keyed = |at_s, key: &str| Alert {
            aggregate_key: Some(key.into()),
            ..alert(at_s)
        };
        let window = 600 * 1_000_000;
        let first = record(
            &crate::store::System::test(&conn),
            &keyed(100, "u|tor"),
            window,
        )
        .unwrap();
        let Recorded::New(id) = first else {
            panic!("{first:?}")
        };
        assert_eq!(
            record(
                &crate::store::System::test(&conn),
                &keyed(400, "u|tor"),
                window
            )
            .unwrap(),
            Recorded::Repeat(id)
        );
        // The window runs from the latest occurrence, so a steady trickle stays one alert.
        assert_eq!(
            record(
                &crate::store::System::test(&conn),
                &keyed(950, "u|tor"),
                window
            )
            .unwrap(),
            Recorded::Repeat(id)
        );
        // Events arrive out of order from agents that were offline: still the same breach.
        assert_eq!(
            record(
                &crate::store::System::test(&conn),
                &keyed(50, "u|tor"),
                window
            )
            .unwrap(),
            Recorded::Repeat(id)
        );
        assert!(matches!(
            record(
                &crate::store::System::test(&conn),
                &keyed(960, "other|tor"),
                window
            )
            .unwrap(),
            Recorded::New(_)
        ));
        assert!(matches!(
            record(
                &crate::store::System::test(&conn),
                &keyed(2000, "u|tor"),
                window
            )
            .unwrap(),
            Recorded::New(_)
        ));
        let rows = list(&crate::store::Audited::test(&conn), &AlertFilter::default()).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].count, 4);
        assert_eq!(rows[0].observed_at, rfc3339(50_000_000));
        assert_eq!(rows[0].last_observed_at, rfc3339(950_000_000));

        // Once someone has triaged it, a repeat is news again.
        conn.execute("UPDATE alerts SET status = 'triaged' WHERE id = ?1", [id])
            .unwrap();
        assert!(matches!(
            record(
                &crate::store::System::test(&conn),
                &keyed(960, "u|tor"),
                window
            )
            .unwrap(),
            Recorded::New(_)
        ));
        // No key, or no window: never aggregated.
        assert!(matches!(
            record(&crate::store::System::test(&conn), &alert(961), window).unwrap(),
            Recorded::New(_)
        ));
        assert!(matches!(
            record(&crate::store::System::test(&conn), &keyed(962, "u|tor"), 0).unwrap(),
            Recorded::New(_)
        ));
    }
}
