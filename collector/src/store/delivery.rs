//! Delivery progress per agent: what it added to the store each day (the daily quota) and how far
//! its acknowledged sequence has come (the "agent stalled" alert). Both live in the database, so
//! they hold when several collectors share it.

use super::Result;
use super::System;
use super::db::Dialect;
use crate::store::db::{OptionalExtension, params};

const DAY_US: i64 = 86_400_000_000;

/// Days since the Unix epoch (UTC) of a time in microseconds.
pub fn day_of(us: i64) -> i64 {
    us.div_euclid(DAY_US)
}

/// The start of the UTC day after the one `us` falls in.
pub fn next_day_us(us: i64) -> i64 {
    (day_of(us) + 1) * DAY_US
}

/// One agent's share of a commit.
pub struct Committed<'a> {
    pub agent_id: &'a str,
    pub at_us: i64,
    /// Encoded size and number of the events newly stored (not the duplicates).
    pub bytes: u64,
    pub events: u64,
    /// The highest sequence in the batch: everything up to it is now acknowledged.
    pub up_to_seq: u64,
    /// The agent's rate allowance after this batch was charged to it.
    pub rate: Bucket,
}

/// An agent's allowances, kept in its row so that they hold across every collector sharing the
/// database: an agent hopping from one to another gets one quota, not one each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ration {
    /// New streams an agent may open at once ...
    pub streams: f64,
    /// ... refilled at this many a microsecond.
    pub streams_per_us: f64,
}

/// A rate allowance (token bucket) as a collector last left it: so many bytes at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub tokens: f64,
    pub at_us: i64,
}

/// A stream the agent was allowed to open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Opened {
    /// The stream's epoch, which its batches carry to the commit.
    pub epoch: i64,
    /// The agent's rate allowance as the last commit on any collector left it.
    pub rate: Option<Bucket>,
}

/// Makes a new event stream of the agent its newest, on every collector sharing the database,
/// if the agent has a new stream left in its ration; None when it has opened too many lately
/// (or is not enrolled). A refusal changes nothing: the allowance refills from when the last
/// stream was allowed, which is what a bucket refilling all along would hold.
pub fn open_stream(
    sys: &System<'_>,
    agent_id: &str,
    now_us: i64,
    ration: &Ration,
) -> Result<Option<Opened>> {
    // The casts tell PostgreSQL the parameters' types (it would guess an integer).
    const LEFT: &str = "least(CAST(?2 AS DOUBLE PRECISION), coalesce(stream_allowance, ?2)
        + greatest(0, ?3 - coalesce(stream_allowance_at, ?3)) * CAST(?4 AS DOUBLE PRECISION))";
    let sql = format!(
        "UPDATE agents SET stream_epoch = stream_epoch + 1,
                stream_allowance = {LEFT} - 1, stream_allowance_at = ?3
         WHERE agent_id = ?1 AND {LEFT} >= 1
         RETURNING stream_epoch, rate_tokens, rate_tokens_at"
    );
    Ok(sys
        .conn
        .prepare_cached(&sql)?
        .query_row(
            params![agent_id, ration.streams, now_us, ration.streams_per_us],
            |r| {
                let tokens: Option<f64> = r.get(1)?;
                let at_us: Option<i64> = r.get(2)?;
                Ok(Opened {
                    epoch: r.get(0)?,
                    rate: tokens
                        .zip(at_us)
                        .map(|(tokens, at_us)| Bucket { tokens, at_us }),
                })
            },
        )
        .optional()?)
}

/// The agent's delivery row as [`lock`] found it, locked until the transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    /// The epoch of the agent's newest stream: a batch of an older one is not stored.
    pub epoch: i64,
    /// Everything stored for the agent is at or below this; above it, an event is new.
    pub acked_seq: u64,
}

/// Locks the agent's delivery row until the commit ends, so that two collectors committing
/// batches of one agent (it reconnected to another while the first was still committing) take
/// turns: the second sees what the first stored (SQLite's one writer does this by itself).
/// None when the agent is not enrolled.
pub fn lock(sys: &System<'_>, agent_id: &str) -> Result<Option<Locked>> {
    let sql = match sys.conn.dialect() {
        Dialect::Postgres => {
            "SELECT stream_epoch, acked_seq FROM agents WHERE agent_id = ?1 FOR UPDATE"
        }
        // A write, though it changes nothing: the transaction takes SQLite's write lock before
        // it reads (a read first could find its snapshot stale when it then writes).
        Dialect::Sqlite => {
            "UPDATE agents SET stream_epoch = stream_epoch WHERE agent_id = ?1
             RETURNING stream_epoch, acked_seq"
        }
    };
    Ok(sys
        .conn
        .prepare_cached(sql)?
        .query_row([agent_id], |r| {
            Ok(Locked {
                epoch: r.get(0)?,
                acked_seq: r.get::<_, i64>(1)?.max(0) as u64,
            })
        })
        .optional()?)
}

/// Adds a commit to the agent's usage for the day and moves its acknowledged sequence on;
/// returns the agent's total bytes for the day, this commit included.
pub fn record(sys: &System<'_>, c: &Committed<'_>) -> Result<u64> {
    let tx = sys.conn;
    let total: i64 = tx
        .prepare_cached(
            "INSERT INTO agent_usage(agent_id, day, bytes, events) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(agent_id, day) DO UPDATE
               SET bytes = agent_usage.bytes + excluded.bytes,
                   events = agent_usage.events + excluded.events
             RETURNING bytes",
        )?
        .query_row(
            params![c.agent_id, day_of(c.at_us), c.bytes as i64, c.events as i64],
            |r| r.get(0),
        )?;
    tx.prepare_cached(
        "UPDATE agents SET acked_seq = greatest(acked_seq, ?2), acked_at = ?3, stalled_alerted = 0,
                rate_tokens = ?4, rate_tokens_at = ?5
         WHERE agent_id = ?1",
    )?
    .execute(params![
        c.agent_id,
        c.up_to_seq.min(i64::MAX as u64) as i64,
        c.at_us,
        c.rate.tokens,
        c.rate.at_us
    ])?;
    Ok(total.max(0) as u64)
}

/// Bytes the agent has added to the store on the UTC day of `now_us`.
pub fn used_on_day(tx: &System<'_>, agent_id: &str, now_us: i64) -> Result<u64> {
    let conn = tx.conn;
    let bytes: Option<i64> = conn
        .prepare_cached("SELECT bytes FROM agent_usage WHERE agent_id = ?1 AND day = ?2")?
        .query_row(params![agent_id, day_of(now_us)], |r| r.get(0))
        .optional()?;
    Ok(bytes.unwrap_or(0).max(0) as u64)
}

/// An agent that is heard from but whose events are not getting through.
#[derive(Debug, Clone)]
pub struct Stalled {
    pub agent_id: String,
    pub hostname: String,
    pub acked_seq: u64,
    pub last_seq: u64,
    pub spool_depth: u64,
    /// When its acknowledged sequence last moved; None if it never did.
    pub acked_at_us: Option<i64>,
}

/// Agents heard from since `heard_since_us`, with events in their spool beyond what has been
/// acknowledged, whose acknowledged sequence has not moved since `progress_before_us`; marks
/// them alerted (the next commit for the agent clears the mark).
pub fn take_newly_stalled(
    tx: &System<'_>,
    heard_since_us: i64,
    progress_before_us: i64,
) -> Result<Vec<Stalled>> {
    let conn = tx.conn;
    let tx = conn.unchecked_transaction()?;
    let rows = {
        let mut stmt = tx.prepare(
            "SELECT agent_id, hostname, acked_seq, last_seq, spool_depth, acked_at FROM agents
             WHERE revoked_at IS NULL AND stalled_alerted = 0 AND last_seen >= ?1
               AND spool_depth > 0 AND last_seq > acked_seq
               AND COALESCE(acked_at, enrolled_at) < ?2
             ORDER BY agent_id",
        )?;
        stmt.query_map(params![heard_since_us, progress_before_us], |r| {
            Ok(Stalled {
                agent_id: r.get(0)?,
                hostname: r.get(1)?,
                acked_seq: r.get::<_, i64>(2)?.max(0) as u64,
                last_seq: r.get::<_, i64>(3)?.max(0) as u64,
                spool_depth: r.get::<_, i64>(4)?.max(0) as u64,
                acked_at_us: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?
    };
    let mut claimed = Vec::with_capacity(rows.len());
    for s in rows {
        let n = tx.execute(
            "UPDATE agents SET stalled_alerted = 1 WHERE agent_id = ?1 AND stalled_alerted = 0",
            [&s.agent_id],
        )?;
        if n == 1 {
            claimed.push(s);
        }
    }
    tx.commit()?;
    Ok(claimed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::Connection;
    use crate::store::{self, AgentHealth, NewAgent, agents};

    fn enrol(conn: &Connection, id: &str) {
        agents::insert_agent(
            &crate::store::Admin::test(conn),
            &NewAgent {
                agent_id: id,
                group: "default",
                hostname: "pc-1",
                os: "Linux",
                agent_version: "0",
                cert_serial: "01",
                cert_not_after_us: i64::MAX,
            },
        )
        .unwrap();
    }

    fn heartbeat(conn: &mut Connection, id: &str, at: i64, spool_depth: u64, last_seq: u64) {
        let h = AgentHealth {
            last_seen_us: at,
            report: Some(agents::HealthReport {
                hostname: "pc-1".into(),
                spool_depth,
                last_seq,
                ..Default::default()
            }),
        };
        agents::write_health(&crate::store::System::test(conn), [(&id.to_owned(), &h)]).unwrap();
    }

    fn commit(conn: &mut Connection, id: &str, at: i64, bytes: u64, up_to: u64) -> u64 {
        let tx = conn.unchecked_transaction().unwrap();
        let total = record(
            &crate::store::System::test(&tx),
            &Committed {
                agent_id: id,
                at_us: at,
                bytes,
                events: 1,
                up_to_seq: up_to,
                rate: Bucket {
                    tokens: bytes as f64,
                    at_us: at,
                },
            },
        )
        .unwrap();
        tx.commit().unwrap();
        total
    }

    /// An agent reconnected to a second collector while the first was still committing its
    /// batch: both commit the same events at once, on connections of their own. Each event is
    /// stored once, and the two commits together store each once. (Without the row lock,
    /// PostgreSQL stored 84 of 50.)
    #[test]
    fn two_commits_of_one_batch_at_once_store_it_once() {
        let (_d, conn) = store::test_db();
        enrol(&conn, "a");
        let stored: Vec<u64> = std::thread::scope(|s| {
            let commits: Vec<_> = (0..2)
                .map(|_| {
                    let conn = conn.reopen();
                    s.spawn(move || {
                        let tx = conn.unchecked_transaction().unwrap();
                        let sys = crate::store::System::test(&tx);
                        let locked = lock(&sys, "a").unwrap().unwrap();
                        // As the committer: half the batch, a pause while the other
                        // commit gets under way, the rest, then the acknowledgement.
                        let batch: Vec<_> = (1..=50u64)
                            .map(|seq| invigilator_proto::v1::Event {
                                seq,
                                observed_at_us: 1_700_000_000_000_000,
                                kind: Some(invigilator_proto::v1::event::Kind::Gap(
                                    Default::default(),
                                )),
                                ..Default::default()
                            })
                            .collect();
                        let mut n = 0;
                        for half in batch.chunks(25) {
                            let stored =
                                store::events::insert_all(&sys, "a", half, 1, &locked).unwrap();
                            n += stored.iter().filter(|s| **s).count() as u64;
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                        record(
                            &sys,
                            &Committed {
                                agent_id: "a",
                                at_us: 1,
                                bytes: 1,
                                events: n,
                                up_to_seq: 50,
                                rate: Bucket {
                                    tokens: 0.0,
                                    at_us: 1,
                                },
                            },
                        )
                        .unwrap();
                        tx.commit().unwrap();
                        n
                    })
                })
                .collect();
            commits.into_iter().map(|c| c.join().unwrap()).collect()
        });
        assert_eq!(stored.iter().sum::<u64>(), 50, "{stored:?}");
        assert_eq!(
            store::events::seqs_for(&crate::store::System::test(&conn), "a").unwrap(),
            (1..=50).collect::<Vec<u64>>()
        );
    }

    /// Collectors share an agent's quotas through its row: the ration of new streams holds
    /// whichever collector they are opened at, and the rate allowance a commit leaves is what
    /// the next stream finds.
    #[test]
    fn quotas_are_kept_in_the_agents_row() {
        let (_d, mut conn) = store::test_db();
        enrol(&conn, "a");
        enrol(&conn, "b");
        let other = conn.reopen();
        let ration = Ration {
            streams: 3.0,
            streams_per_us: 3.0 / 60e6,
        };
        let t = 1_700_000_000_000_000;
        let open = |c: &Connection, id: &str, at: i64| {
            open_stream(&crate::store::System::test(c), id, at, &ration).unwrap()
        };
        let first = open(&conn, "a", t).expect("a full ration");
        assert_eq!(first.rate, None, "no commit yet: a full bucket");
        assert!(open(&other, "a", t).is_some());
        assert!(open(&conn, "a", t + 1).is_some());
        // Three at once across the two; the fourth is refused on either, for this agent only.
        assert_eq!(open(&other, "a", t + 2), None);
        assert_eq!(open(&conn, "a", t + 2), None);
        assert!(open(&other, "b", t + 2).is_some());
        // A refusal moves nothing on: the epoch is the third stream's, and the ration refills
        // at 3 a minute, so 20 s after the third stream there is one more.
        let third = lock(&crate::store::System::test(&conn), "a")
            .unwrap()
            .unwrap()
            .epoch;
        assert_eq!(third, first.epoch + 2);
        assert_eq!(open(&other, "a", t + 19_000_000), None);
        let fourth = open(&other, "a", t + 20_000_001).expect("refilled");
        assert_eq!(fourth.epoch, third + 1);

        commit(&mut conn, "a", t + 5, 1234, 1);
        let after = open(&other, "a", t + 60_000_000).unwrap();
        assert_eq!(
            after.rate,
            Some(Bucket {
                tokens: 1234.0,
                at_us: t + 5
            })
        );
    }

    #[test]
    fn usage_adds_up_per_utc_day() {
        let (_d, mut conn) = store::test_db();
        enrol(&conn, "a");
        let day2 = 20_000 * DAY_US;
        assert_eq!(commit(&mut conn, "a", day2 - 1, 100, 1), 100);
        assert_eq!(commit(&mut conn, "a", day2, 40, 2), 40);
        assert_eq!(commit(&mut conn, "a", day2 + 5, 2, 3), 42);
        assert_eq!(
            used_on_day(&crate::store::System::test(&conn), "a", day2 + DAY_US - 1).unwrap(),
            42
        );
        assert_eq!(
            used_on_day(&crate::store::System::test(&conn), "a", day2 - 1).unwrap(),
            100
        );
        assert_eq!(
            used_on_day(&crate::store::System::test(&conn), "b", day2).unwrap(),
            0
        );
        assert_eq!(next_day_us(day2 + 5), day2 + DAY_US);
        assert_eq!(day_of(-1), -1);
    }

    #[test]
    fn stalled_means_heard_from_with_a_backlog_and_no_progress() {
        let (_d, mut conn) = store::test_db();
        let now = store::now_us();
        for id in ["stuck", "idle", "moving", "gone"] {
            enrol(&conn, id);
        }
        let long_ago = now - 3_600_000_000;
        commit(&mut conn, "stuck", long_ago, 1, 10);
        heartbeat(&mut conn, "stuck", now, 50, 60);
        commit(&mut conn, "idle", long_ago, 1, 10);
        heartbeat(&mut conn, "idle", now, 0, 10);
        commit(&mut conn, "moving", now, 1, 50);
        heartbeat(&mut conn, "moving", now, 5, 55);
        commit(&mut conn, "gone", long_ago, 1, 10);
        heartbeat(&mut conn, "gone", long_ago, 50, 60);
        // Enrolment counts as contact; this one has not been heard from since.
        conn.execute(
            "UPDATE agents SET last_seen = ?1 WHERE agent_id = 'gone'",
            [long_ago],
        )
        .unwrap();

        let cutoff = now - 600_000_000;
        let stalled =
            take_newly_stalled(&crate::store::System::test(&conn), cutoff, cutoff).unwrap();
        let ids: Vec<_> = stalled.iter().map(|s| s.agent_id.as_str()).collect();
        assert_eq!(ids, ["stuck"]);
        assert_eq!((stalled[0].acked_seq, stalled[0].last_seq), (10, 60));
        // Once per stall ...
        assert!(
            take_newly_stalled(&crate::store::System::test(&conn), cutoff, cutoff)
                .unwrap()
                .is_empty()
        );
        // ... and a commit re-arms it.
        commit(&mut conn, "stuck", long_ago + 1, 1, 11);
        assert_eq!(
            take_newly_stalled(&crate::store::System::test(&conn), cutoff, cutoff)
                .unwrap()
                .len(),
            1
        );
    }
}
