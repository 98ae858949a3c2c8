//! Alerts: what the policy engine raised, with the reason it fired.

use super::{Result, now_us, rfc3339};
use rusqlite::{Connection, params};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    pub agent_id: String,
    pub hostname: String,
    pub user: String,
    pub kind: String,
    pub rule: String,
    pub category: String,
    pub severity: String,
    pub summary: String,
    pub matched: String,
    pub observed_at_us: i64,
    pub policy_version: String,
    pub event_seq: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertRow {
    pub id: i64,
    pub agent_id: String,
    pub hostname: String,
    pub user: String,
    pub kind: String,
    pub rule: String,
    pub category: String,
    pub severity: String,
    pub summary: String,
    pub matched: String,
    pub observed_at: String,
    pub created_at: String,
    pub policy_version: String,
    pub event_seq: Option<u64>,
    pub status: String,
}

pub fn insert(conn: &Connection, a: &NewAlert) -> Result<i64> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO alerts(agent_id, hostname, user, kind, rule, category, severity, summary,
                            matched, observed_at, created_at, policy_version, event_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    stmt.execute(params![
        a.agent_id,
        a.hostname,
        a.user,
        a.kind,
        a.rule,
        a.category,
        a.severity,
        a.summary,
        a.matched,
        a.observed_at_us,
        now_us(),
        a.policy_version,
        a.event_seq.map(|s| s as i64)
    ])?;
    Ok(conn.last_insert_rowid())
}

#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub since_us: Option<i64>,
    pub limit: Option<u64>,
}

pub fn list(conn: &Connection, f: &AlertFilter) -> Result<Vec<AlertRow>> {
    let mut stmt = conn.prepare(
        "SELECT id, agent_id, hostname, user, kind, rule, category, severity, summary, matched,
                observed_at, created_at, policy_version, event_seq, status
         FROM alerts WHERE (?1 IS NULL OR observed_at >= ?1) ORDER BY id LIMIT ?2",
    )?;
    let limit = f.limit.map(|l| l.min(i64::MAX as u64) as i64).unwrap_or(-1);
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
                severity: r.get(7)?,
                summary: r.get(8)?,
                matched: r.get(9)?,
                observed_at: rfc3339(r.get(10)?),
                created_at: rfc3339(r.get(11)?),
                policy_version: r.get(12)?,
                event_seq: r.get::<_, Option<i64>>(13)?.map(|s| s as u64),
                status: r.get(14)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserted_alerts_list_in_order_with_since_and_limit() {
        let (_d, conn) = crate::store::test_db();
        let mut a = NewAlert {
            agent_id: "a".into(),
            hostname: "h".into(),
            user: "u".into(),
            kind: "process".into(),
            rule: "circumvention.tor".into(),
            category: "circumvention".into(),
            severity: "serious".into(),
            summary: "s".into(),
            matched: "name=tor".into(),
            observed_at_us: 1_000_000,
            policy_version: "1".into(),
            event_seq: Some(3),
        };
        insert(&conn, &a).unwrap();
        a.observed_at_us = 5_000_000;
        insert(&conn, &a).unwrap();
        assert_eq!(list(&conn, &AlertFilter::default()).unwrap().len(), 2);
        let since = list(
            &conn,
            &AlertFilter {
                since_us: Some(2_000_000),
                limit: None,
            },
        )
        .unwrap();
        assert_eq!(since.len(), 1);
        assert_eq!(since[0].observed_at, "1970-01-01T00:00:05.000000Z");
        assert_eq!(
            list(
                &conn,
                &AlertFilter {
                    since_us: None,
                    limit: Some(1)
                }
            )
            .unwrap()
            .len(),
            1
        );
    }
}
