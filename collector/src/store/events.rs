//! Events, stored exactly once per (agent_id, seq).

use super::db::Dialect;
use super::delivery::Locked;
use super::{Audited, System};
use super::{Result, StoreError, rfc3339};
use crate::store::db::params;
use invigilator_proto::v1::{Event, event::Kind};
use prost::Message;
use serde::Serialize;
use std::borrow::Borrow;

/// What the committer did with one agent's batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredBatch {
    pub stored: u32,
    pub duplicates: u32,
    pub alerts: u32,
    /// The agent's stored bytes for the UTC day of `committed_at_us`, this batch included
    /// (its daily quota).
    pub day_bytes: u64,
    pub committed_at_us: i64,
}

/// Inserts one event; false if it was already stored (a resend after a lost acknowledgement).
pub fn insert(
    sys: &System<'_>,
    agent_id: &str,
    event: &Event,
    received_at_us: i64,
) -> Result<bool> {
    let tx = sys.conn;
    let kind = event.kind.as_ref().map(Kind::name).unwrap_or("unknown");
    // SQLite's UNIQUE (agent_id, seq) refuses a resend. PostgreSQL's events are partitioned and
    // cannot have that key: the committer holds the agent's row lock (delivery::lock), so the
    // look-up below cannot race another collector storing the same batch.
    let sql = match tx.dialect() {
        Dialect::Sqlite => {
            "INSERT INTO events(agent_id, seq, kind, observed_at, received_at, hostname, user, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(agent_id, seq) DO NOTHING"
        }
        Dialect::Postgres => {
            "INSERT INTO events(agent_id, seq, kind, observed_at, received_at, hostname, user, payload)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
             WHERE NOT EXISTS (SELECT 1 FROM events WHERE agent_id = ?1 AND seq = ?2)"
        }
    };
    let mut stmt = tx.prepare_cached(sql)?;
    let n = stmt.execute(params![
        agent_id,
        event.seq as i64,
        kind,
        event.observed_at_us,
        received_at_us,
        event.hostname,
        event.user,
        event.encode_to_vec()
    ])?;
    Ok(n == 1)
}

/// Inserts one agent's batch, its row locked by the caller (`delivery::lock`); for each event,
/// false if it was already stored. SQLite takes them one statement each (in-process, that is
/// cheapest); PostgreSQL in one statement, as a statement each would be a round trip each: the
/// batch's columns go as one array each and are unnested, so one prepared statement serves
/// every batch size.
pub fn insert_all<E: Borrow<Event>>(
    sys: &System<'_>,
    agent_id: &str,
    events: &[E],
    received_at_us: i64,
    locked: &Locked,
) -> Result<Vec<bool>> {
    if sys.conn.dialect() == Dialect::Sqlite {
        return events
            .iter()
            .map(|e| insert(sys, agent_id, e.borrow(), received_at_us))
            .collect();
    }
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let n = events.len();
    let (mut seqs, mut kinds, mut times) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut hosts, mut users, mut payloads) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for e in events {
        let e: &Event = e.borrow();
        seqs.push(e.seq as i64);
        kinds.push(
            e.kind
                .as_ref()
                .map(Kind::name)
                .unwrap_or("unknown")
                .to_owned(),
        );
        times.push(e.observed_at_us);
        hosts.push(e.hostname.clone());
        users.push(e.user.clone());
        payloads.push(e.encode_to_vec());
    }
    // Everything stored for the agent lies at or below its acknowledged sequence (moved on in
    // the transaction of every commit), and the caller holds the agent's row: above it, an
    // event is new for certain and needs no look-up across every week's index.
    let new: std::collections::HashSet<i64> = sys
        .conn
        .prepare_cached(
            "INSERT INTO events(agent_id, seq, kind, observed_at, received_at, hostname, user, payload)
             SELECT ?1, v.seq, v.kind, v.observed_at, ?2, v.hostname, v.usr, v.payload
             FROM unnest(CAST(?3 AS BIGINT[]), CAST(?4 AS TEXT[]), CAST(?5 AS BIGINT[]),
                         CAST(?6 AS TEXT[]), CAST(?7 AS TEXT[]), CAST(?8 AS BYTEA[]))
                 AS v(seq, kind, observed_at, hostname, usr, payload)
             WHERE v.seq > CAST(?9 AS BIGINT)
                OR NOT EXISTS (SELECT 1 FROM events e WHERE e.agent_id = ?1 AND e.seq = v.seq)
             RETURNING seq",
        )?
        .query_map(
            params![
                agent_id,
                received_at_us,
                seqs,
                kinds,
                times,
                hosts,
                users,
                payloads,
                locked.acked_seq.min(i64::MAX as u64) as i64
            ],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    Ok(events
        .iter()
        .map(|e| new.contains(&(e.borrow().seq as i64)))
        .collect())
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub kind: Option<String>,
    pub since_us: Option<i64>,
    pub agent_id: Option<String>,
    pub limit: Option<u64>,
}

/// An event as the CLI and API show it: common fields, then the kind's own.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub agent_id: String,
    pub seq: u64,
    pub kind: String,
    pub observed_at: String,
    pub received_at: String,
    pub hostname: String,
    pub user: String,
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

pub fn list(tx: &Audited<'_>, f: &EventFilter) -> Result<Vec<EventRow>> {
    let conn = tx.conn;
    let mut stmt = conn.prepare(
        "SELECT agent_id, seq, kind, observed_at, received_at, hostname, user, payload FROM events
         WHERE (CAST(?1 AS TEXT) IS NULL OR kind = ?1)
           AND (CAST(?2 AS BIGINT) IS NULL OR observed_at >= ?2)
           AND (CAST(?3 AS TEXT) IS NULL OR agent_id = ?3)
         ORDER BY id LIMIT ?4",
    )?;
    let limit = f
        .limit
        .map(|l| l.min(i64::MAX as u64) as i64)
        .unwrap_or(i64::MAX);
    let mut rows = stmt.query(params![f.kind, f.since_us, f.agent_id, limit])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(row(&r)?);
    }
    Ok(out)
}

fn details(event: &Event) -> serde_json::Map<String, serde_json::Value> {
    let value = match &event.kind {
        Some(Kind::Process(p)) => serde_json::to_value(p),
        Some(Kind::Gap(g)) => serde_json::to_value(g),
        Some(Kind::Usb(u)) => serde_json::to_value(u),
        Some(Kind::Session(s)) => serde_json::to_value(s),
        Some(Kind::Browsing(b)) => serde_json::to_value(b),
        None => Ok(serde_json::Value::Null),
    };
    let mut map = match value {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    // Which fields the device's budgets cut, so nobody reads a cut command line as whole.
    if !event.truncated.is_empty() {
        map.insert("truncated".into(), event.truncated.clone().into());
    }
    // The device claimed a time outside the accepted window; observed_at is the clamped one.
    if event.device_time_us != 0 {
        let claimed = match chrono::DateTime::from_timestamp_micros(event.device_time_us) {
            Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            None => format!(
                "{} µs since 1970 (no representable date)",
                event.device_time_us
            ),
        };
        map.insert("device_time".into(), claimed.into());
    }
    map
}

/// An agent's events from `seq - before` to `seq + after` (what the device was doing around an
/// alert), found through the (agent_id, seq) key.
pub fn around(
    tx: &Audited<'_>,
    agent_id: &str,
    seq: u64,
    before: u64,
    after: u64,
) -> Result<Vec<EventRow>> {
    let conn = tx.conn;
    let mut stmt = conn.prepare_cached(
        "SELECT agent_id, seq, kind, observed_at, received_at, hostname, user, payload FROM events
         WHERE agent_id = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq",
    )?;
    let lo = seq.saturating_sub(before) as i64;
    let hi = seq.saturating_add(after).min(i64::MAX as u64) as i64;
    let mut rows = stmt.query(params![agent_id, lo, hi])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(row(&r)?);
    }
    Ok(out)
}

/// Every event whose `user` is exactly `user`, in the order stored, handed to `f` one at a
/// time. A full scan on purpose: an index on `user` would cost every ingest commit, and this
/// is only needed for a subject access request.
pub fn for_user(tx: &Audited<'_>, user: &str, mut f: impl FnMut(EventRow)) -> Result<u64> {
    let conn = tx.conn;
    let mut stmt = conn.prepare(
        "SELECT agent_id, seq, kind, observed_at, received_at, hostname, user, payload FROM events
         WHERE user = ?1 ORDER BY id",
    )?;
    let mut rows = stmt.query([user])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        f(row(&r)?);
        n += 1;
    }
    Ok(n)
}

pub(crate) fn row(r: &crate::store::db::Row<'_>) -> Result<EventRow> {
    let agent_id: String = r.get(0)?;
    let seq = r.get::<_, i64>(1)? as u64;
    let payload: Vec<u8> = r.get(7)?;
    let event = Event::decode(payload.as_slice()).map_err(|e| StoreError::Corrupt {
        agent_id: agent_id.clone(),
        seq,
        message: e.to_string(),
    })?;
    Ok(EventRow {
        agent_id,
        seq,
        kind: r.get(2)?,
        observed_at: rfc3339(r.get(3)?),
        received_at: rfc3339(r.get(4)?),
        hostname: r.get(5)?,
        user: r.get(6)?,
        details: details(&event),
    })
}

pub fn replay(
    tx: &Audited<'_>,
    since_us: Option<i64>,
    mut f: impl FnMut(&str, &str, Event),
) -> Result<u64> {
    let conn = tx.conn;
    let mut stmt = conn.prepare(
        "SELECT e.agent_id, coalesce(a.grp, ''), e.seq, e.payload
         FROM events e LEFT JOIN agents a ON a.agent_id = e.agent_id
         WHERE (CAST(?1 AS BIGINT) IS NULL OR e.observed_at >= ?1) ORDER BY e.id",
    )?;
    let mut rows = stmt.query(params![since_us])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let agent_id: String = r.get(0)?;
        let group: String = r.get(1)?;
        let payload: Vec<u8> = r.get(3)?;
        let event = Event::decode(payload.as_slice()).map_err(|e| StoreError::Corrupt {
            agent_id: agent_id.clone(),
            seq: r.get::<_, i64>(2).unwrap_or_default() as u64,
            message: e.to_string(),
        })?;
        n += 1;
        f(&agent_id, &group, event);
    }
    Ok(n)
}

/// Sequence numbers stored for one agent, in order (used by tests and the loss report).
pub fn seqs_for(tx: &System<'_>, agent_id: &str) -> Result<Vec<u64>> {
    let conn = tx.conn;
    let mut stmt = conn.prepare("SELECT seq FROM events WHERE agent_id = ?1 ORDER BY seq")?;
    let v = stmt
        .query_map([agent_id], |r| r.get::<_, i64>(0).map(|s| s as u64))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use invigilator_proto::v1::ProcessExec;

    fn ev(seq: u64) -> Event {
        Event {
            truncated: Vec::new(),
            device_time_us: 0,
            seq,
            observed_at_us: 1_700_000_000_000_000 + seq as i64,
            hostname: "pc1".into(),
            user: "pupil1".into(),
            kind: Some(Kind::Process(ProcessExec {
                pid: 42,
                exe: "/usr/bin/tor".into(),
                name: "tor".into(),
                argv: vec!["tor".into(), "<script>".into()],
                ..Default::default()
            })),
        }
    }

    /// As the committer does it: the agent enrolled, each batch followed by its
    /// acknowledgement. A resend is refused; a sequence the agent skipped and sent later (below
    /// what was acknowledged, yet never stored) is still stored.
    #[test]
    fn a_batch_stores_what_is_new_and_says_which_was() {
        let (_d, mut conn) = crate::store::test_db();
        crate::store::agents::insert_agent(
            &crate::store::Admin::test(&conn),
            &crate::store::NewAgent {
                agent_id: "a",
                group: "default",
                hostname: "pc1",
                os: "Linux",
                agent_version: "0",
                cert_serial: "01",
                cert_not_after_us: i64::MAX,
            },
        )
        .unwrap();
        let tx = conn.transaction().unwrap();
        let sys = crate::store::System::test(&tx);
        let commit = |seqs: &[u64]| {
            let batch: Vec<Event> = seqs.iter().map(|s| ev(*s)).collect();
            let locked = crate::store::delivery::lock(&sys, "a").unwrap().unwrap();
            let stored = insert_all(&sys, "a", &batch, 6, &locked).unwrap();
            crate::store::delivery::record(
                &sys,
                &crate::store::delivery::Committed {
                    agent_id: "a",
                    at_us: 6,
                    bytes: 1,
                    events: 1,
                    up_to_seq: *seqs.last().unwrap(),
                    rate: crate::store::delivery::Bucket {
                        tokens: 0.0,
                        at_us: 6,
                    },
                },
            )
            .unwrap();
            stored
        };
        assert_eq!(commit(&[1, 2]), [true, true]);
        assert_eq!(commit(&[1, 2, 3, 4]), [false, false, true, true]);
        assert_eq!(commit(&[5, 7]), [true, true]);
        assert_eq!(commit(&[6, 7]), [true, false]);
        assert_eq!(
            insert_all::<Event>(
                &sys,
                "a",
                &[],
                7,
                &crate::store::delivery::lock(&sys, "a").unwrap().unwrap()
            )
            .unwrap(),
            Vec::<bool>::new()
        );
        tx.commit().unwrap();
        assert_eq!(
            seqs_for(&crate::store::System::test(&conn), "a").unwrap(),
            [1, 2, 3, 4, 5, 6, 7]
        );
        let all = list(&crate::store::Audited::test(&conn), &EventFilter::default()).unwrap();
        assert_eq!(all[3].user, "pupil1");
        assert_eq!(all[3].details["exe"], "/usr/bin/tor");
    }

    #[test]
    fn each_seq_is_stored_once_and_listed_with_its_fields() {
        let (_d, mut conn) = crate::store::test_db();
        let tx = conn.transaction().unwrap();
        assert!(insert(&crate::store::System::test(&tx), "a", &ev(1), 5).unwrap());
        assert!(!insert(&crate::store::System::test(&tx), "a", &ev(1), 6).unwrap());
        assert!(insert(&crate::store::System::test(&tx), "b", &ev(1), 6).unwrap());
        assert!(insert(&crate::store::System::test(&tx), "a", &ev(2), 7).unwrap());
        tx.commit().unwrap();
        assert_eq!(
            seqs_for(&crate::store::System::test(&conn), "a").unwrap(),
            vec![1, 2]
        );
        let all = list(
            &crate::store::Audited::test(&conn),
            &EventFilter {
                kind: Some("process".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(all.len(), 3);
        let json = serde_json::to_value(&all[0]).unwrap();
        assert_eq!(json["exe"], "/usr/bin/tor");
        assert_eq!(json["seq"], 1);
        assert_eq!(json["argv"][1], "<script>");
        let limited = list(
            &crate::store::Audited::test(&conn),
            &EventFilter {
                limit: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(limited.len(), 1);
        let none = list(
            &crate::store::Audited::test(&conn),
            &EventFilter {
                kind: Some("usb".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(none.is_empty());
    }
}
