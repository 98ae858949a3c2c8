//! The spool: a durable, bounded, on-disk queue of events waiting for the collector.
//!
//! SQLite in WAL mode with `synchronous=FULL`: an event the spool has accepted survives
//! `kill -9` and power loss. Each event gets the agent's next sequence number here, in the same
//! transaction that stores it, so numbers are never reused. Events leave only when the collector
//! acknowledges them. When the spool is over its size limit the oldest events are dropped, and a
//! `Gap` event saying how many takes their place, so the collector knows.

use crate::sources::{Checkpoint, EventRx};
use invigilator_proto::limits;
use invigilator_proto::v1::{Event, Gap, event::Kind};
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot make {path} the agent's only: {source}")]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool write failed (disk full?): {0}")]
    Sql(#[from] rusqlite::Error),
}

pub type Result<T> = std::result::Result<T, SpoolError>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub depth: u64,
    pub bytes: u64,
    pub dropped_total: u64,
    pub last_seq: u64,
}

struct Inner {
    conn: Connection,
    next_seq: u64,
    bytes: u64,
    depth: u64,
    dropped_total: u64,
}

pub struct Spool {
    inner: Mutex<Inner>,
    max_bytes: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY, bytes INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

fn meta(conn: &Connection, key: &str) -> rusqlite::Result<u64> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?
        .unwrap_or(0) as u64)
}

fn set_meta(conn: &Connection, key: &str, value: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value as i64],
    )?;
    Ok(())
}

impl Spool {
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self> {
        let err = |source| SpoolError::Open {
            path: path.into(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        // What devices' users did, until delivered: the agent's only, whatever mode an existing
        // directory or file had (SQLite gives -wal and -shm the database's mode).
        #[cfg(unix)]
        for (p, mode) in [(path.parent(), 0o700), (Some(path), 0o600)] {
            if let Some(p) = p.filter(|p| !p.as_os_str().is_empty()) {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(
                    |source| SpoolError::Permissions {
                        path: p.into(),
                        source,
                    },
                )?;
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        // A small page cache keeps the agent's memory low; the spool is mostly appended and read once.
        conn.pragma_update(None, "cache_size", -512).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let (bytes, depth, max_seq): (i64, i64, i64) = conn
            .query_row(
                "SELECT COALESCE(SUM(bytes), 0), COUNT(*), COALESCE(MAX(seq), 0) FROM spool",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(err)?;
        let next_seq = meta(&conn, "next_seq")
            .map_err(err)?
            .max(max_seq as u64 + 1)
            .max(1);
        let dropped_total = meta(&conn, "dropped_total").map_err(err)?;
        Ok(Self {
            inner: Mutex::new(Inner {
                conn,
                next_seq,
                bytes: bytes as u64,
                depth: depth as u64,
                dropped_total,
            }),
            max_bytes,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave SQLite inconsistent: carry on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores events durably, giving each the next sequence number, together with the sources'
    /// checkpoints (in one transaction). Returns the last sequence number assigned.
    pub fn append(&self, events: &mut [Event], checkpoints: &[Checkpoint]) -> Result<u64> {
        let mut g = self.lock();
        let inner = &mut *g;
        let tx = inner.conn.transaction()?;
        let mut seq = inner.next_seq;
        let mut added = 0u64;
        {
            let mut stmt =
                tx.prepare_cached("INSERT INTO spool(seq, bytes, payload) VALUES (?1, ?2, ?3)")?;
            for e in events.iter_mut() {
                e.seq = seq;
                // Every source's fields held to their budgets here, in one place, so no event
                // can outgrow a batch, whatever a local user made the source read.
                limits::enforce(e);
                let payload = e.encode_to_vec();
                stmt.execute(params![seq as i64, payload.len() as i64, payload])?;
                added += payload.len() as u64;
                seq += 1;
            }
        }
        let (mut bytes, mut depth) = (inner.bytes + added, inner.depth + (seq - inner.next_seq));
        let mut dropped_now = 0u64;
        if bytes > self.max_bytes {
            // Drop the oldest until there is room for a tenth of the limit, so a full spool
            // does not drop on every single append.
            let target = self.max_bytes - self.max_bytes / 10;
            let mut stmt = tx.prepare_cached("SELECT seq, bytes FROM spool ORDER BY seq")?;
            let mut rows = stmt.query([])?;
            let mut cut_to = 0i64;
            while bytes > target {
                let Some(r) = rows.next()? else { break };
                cut_to = r.get(0)?;
                bytes -= r.get::<_, i64>(1)? as u64;
                depth -= 1;
                dropped_now += 1;
            }
            drop(rows);
            drop(stmt);
            tx.execute("DELETE FROM spool WHERE seq <= ?1", [cut_to])?;
            let gap = Event {
                seq,
                observed_at_us: crate::sources::now_us(),
                kind: Some(Kind::Gap(Gap {
                    source: "spool".into(),
                    reason: format!("spool full ({} bytes): dropped the {dropped_now} oldest events, up to seq {cut_to}", self.max_bytes),
                    lost: dropped_now,
                })),
                ..Default::default()
            }
            .encode_to_vec();
            tx.execute(
                "INSERT INTO spool(seq, bytes, payload) VALUES (?1, ?2, ?3)",
                params![seq as i64, gap.len() as i64, gap],
            )?;
            bytes += gap.len() as u64;
            depth += 1;
            seq += 1;
            set_meta(&tx, "dropped_total", inner.dropped_total + dropped_now)?;
        }
        set_meta(&tx, "next_seq", seq)?;
        for c in checkpoints {
            tx.execute(
                "INSERT INTO checkpoints(key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![c.key, c.value],
            )?;
        }
        tx.commit()?;
        if dropped_now > 0 {
            tracing::warn!(dropped = dropped_now, "spool full: oldest events dropped");
        }
        inner.next_seq = seq;
        inner.bytes = bytes;
        inner.depth = depth;
        inner.dropped_total += dropped_now;
        Ok(seq - 1)
    }

    /// Events with seq > `after`, oldest first: up to `limit` of them and `max_bytes` of encoded
    /// payload (always at least one event, which the budgets keep under
    /// [`limits::MAX_EVENT_BYTES`]). Reads only what it returns.
    pub fn read_after(&self, after: u64, limit: usize, max_bytes: usize) -> Result<Vec<Event>> {
        let g = self.lock();
        let mut stmt = g.conn.prepare_cached(
            "SELECT seq, bytes, payload FROM spool WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![after as i64, limit as i64])?;
        let mut out = Vec::new();
        let mut total = 0usize;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let bytes = usize::try_from(r.get::<_, i64>(1)?).unwrap_or(usize::MAX);
            if !out.is_empty() && total.saturating_add(bytes) > max_bytes {
                break;
            }
            total = total.saturating_add(bytes);
            let payload: Vec<u8> = r.get(2)?;
            match Event::decode(payload.as_slice()) {
                // Every append applies the budgets; only a record spooled before they existed
                // can be too large for a batch, and only that one needs them now.
                Ok(mut e) => {
                    if bytes > limits::MAX_EVENT_BYTES {
                        limits::enforce(&mut e);
                    }
                    out.push(e)
                }
                // A record that no longer decodes is reported rather than blocking the queue.
                Err(e) => out.push(Event {
                    seq: seq as u64,
                    observed_at_us: crate::sources::now_us(),
                    kind: Some(Kind::Gap(Gap {
                        source: "spool".into(),
                        reason: format!("corrupt spool record: {e}"),
                        lost: 1,
                    })),
                    ..Default::default()
                }),
            }
        }
        Ok(out)
    }

    /// The collector has stored everything up to `seq`: forget it.
    pub fn ack(&self, seq: u64) -> Result<()> {
        let mut g = self.lock();
        let (n, b): (i64, i64) = g.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM spool WHERE seq <= ?1",
            [seq as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if n > 0 {
            g.conn
                .execute("DELETE FROM spool WHERE seq <= ?1", [seq as i64])?;
            g.depth -= n as u64;
            g.bytes -= b as u64;
        }
        Ok(())
    }

    /// A source's last stored checkpoint.
    pub fn checkpoint(&self, key: &str) -> Result<Option<String>> {
        let g = self.lock();
        Ok(g.conn
            .query_row("SELECT value FROM checkpoints WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn stats(&self) -> SpoolStats {
        let g = self.lock();
        SpoolStats {
            depth: g.depth,
            bytes: g.bytes,
            dropped_total: g.dropped_total,
            last_seq: g.next_seq - 1,
        }
    }
}

/// Moves events from the sources into the spool, many per transaction, and publishes the last
/// stored seq so the uplink knows there is something to send. Runs on its own thread because
/// every commit waits for the disk.
pub fn run_writer(
    mut rx: EventRx,
    spool: std::sync::Arc<Spool>,
    last_seq: tokio::sync::watch::Sender<u64>,
    once: std::sync::Arc<crate::one_report::OneReport>,
) {
    const MAX_PER_COMMIT: usize = 1000;
    let mut batch = Vec::with_capacity(MAX_PER_COMMIT);
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut waiting = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(obs) = next.take() {
            // A second report of a visit, for a collector that would count it twice, is not
            // kept; its sender is still told it is done.
            batch.extend(obs.event.filter(|e| !once.is_repeat(e)));
            checkpoints.extend(obs.checkpoint);
            waiting.extend(obs.committed);
            if batch.len() < MAX_PER_COMMIT {
                next = rx.try_recv().ok();
            }
        }
        // If the disk is full, keep the events in memory and retry: the sources block behind
        // the bounded channel meanwhile, and report their own overruns as gaps.
        loop {
            match spool.append(&mut batch, &checkpoints) {
                Ok(last) => {
                    if !batch.is_empty() {
                        last_seq.send_replace(last);
                    }
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, events = batch.len(), "cannot write to the spool; retrying");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
        }
        for committed in waiting.drain(..) {
            let _ = committed.send(());
        }
        batch.clear();
        checkpoints.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use invigilator_proto::v1::ProcessExec;

    fn ev(name: &str) -> Event {
        Event {
            observed_at_us: 1,
            kind: Some(Kind::Process(ProcessExec {
                name: name.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn sequence_numbers_survive_reopen_and_acks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let s = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(s.append(&mut [ev("a"), ev("b"), ev("c")], &[]).unwrap(), 3);
        s.ack(3).unwrap();
        assert_eq!(s.stats().depth, 0);
        drop(s);
        // Empty spool, reopened: numbering continues, never reuses 1..3.
        let s = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(s.append(&mut [ev("d")], &[]).unwrap(), 4);
        let got = s.read_after(0, 10, usize::MAX).unwrap();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4]);
    }

    /// For a collector that cannot link them, the writer keeps one report of a visit; the
    /// extension's sender of the second is still told it is done (or it would resend forever).
    #[test]
    fn the_writer_keeps_one_report_of_a_visit_for_an_old_collector() {
        use invigilator_proto::v1::BrowsingVisit;
        let dir = tempfile::tempdir().unwrap();
        let spool = std::sync::Arc::new(Spool::open(&dir.path().join("s.db"), 1 << 20).unwrap());
        let (tx, rx) = crate::sources::channel(8);
        let (seq_tx, _seq_rx) = tokio::sync::watch::channel(0);
        let once = std::sync::Arc::new(crate::one_report::OneReport::default());
        let writer = {
            let spool = std::sync::Arc::clone(&spool);
            std::thread::spawn(move || run_writer(rx, spool, seq_tx, once))
        };
        let visit = |reporter: &str| Event {
            observed_at_us: 1,
            user: "amy".into(),
            kind: Some(Kind::Browsing(BrowsingVisit {
                action: "visit".into(),
                url: "https://example.org/".into(),
                visit_time_us: 1_764_780_000_000_000,
                reporter: reporter.into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            tx.send_committed(visit("extension")).await.unwrap();
            tx.send_committed(visit("history")).await.unwrap();
        });
        drop(tx);
        writer.join().unwrap();
        let kept = spool.read_after(0, 10, usize::MAX).unwrap();
        assert_eq!(kept.len(), 1, "{kept:?}");
    }

    #[test]
    fn checkpoints_commit_with_their_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let s = Spool::open(&path, 1 << 20).unwrap();
        let cp = |v: &str| Checkpoint {
            key: "browsing:p".into(),
            value: v.into(),
        };
        s.append(&mut [ev("a")], &[cp("10")]).unwrap();
        s.append(&mut [], &[cp("11")]).unwrap();
        drop(s);
        let s = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(s.checkpoint("browsing:p").unwrap().as_deref(), Some("11"));
        assert_eq!(s.checkpoint("other").unwrap(), None);
        assert_eq!(
            s.stats().last_seq,
            1,
            "a checkpoint alone takes no sequence number"
        );
    }

    #[test]
    fn reads_resume_after_a_given_seq_in_bounded_pages() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(&dir.path().join("s.db"), 1 << 20).unwrap();
        s.append(
            &mut (0..10).map(|i| ev(&i.to_string())).collect::<Vec<_>>(),
            &[],
        )
        .unwrap();
        let page = s.read_after(4, 3, usize::MAX).unwrap();
        assert_eq!(
            page.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![5, 6, 7]
        );
    }

    #[test]
    fn a_full_spool_drops_oldest_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(&dir.path().join("s.db"), 64 * 1024).unwrap();
        let big = |i: usize| {
            let mut e = ev("big");
            if let Some(Kind::Process(p)) = &mut e.kind {
                p.exe = format!("/{i}-{}", "x".repeat(1000));
            }
            e
        };
        for chunk in 0..10 {
            s.append(
                &mut (0..10).map(|i| big(chunk * 10 + i)).collect::<Vec<_>>(),
                &[],
            )
            .unwrap();
        }
        let st = s.stats();
        assert!(st.bytes <= 64 * 1024, "{st:?}");
        assert!(st.dropped_total > 0);
        let all = s.read_after(0, 1000, usize::MAX).unwrap();
        // Nothing was acknowledged, so every seq before the first survivor was dropped.
        assert_eq!(all[0].seq - 1, st.dropped_total);
        let last_gap = all.iter().rev().find_map(|e| match &e.kind {
            Some(Kind::Gap(g)) => Some(g),
            _ => None,
        });
        assert!(last_gap.unwrap().reason.contains("spool full"));
        // What survives is the newest, still in order.
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(all.last().unwrap().seq, st.last_seq);
    }

    #[test]
    fn batches_are_sized_by_bytes_and_no_event_outgrows_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(&dir.path().join("s.db"), 1 << 30).unwrap();
        // The reported attack: 15 arguments of 131,000 invalid bytes each, converted lossily.
        let huge = |i: usize| {
            let mut e = ev(&i.to_string());
            if let Some(Kind::Process(p)) = &mut e.kind {
                p.argv = vec!["\u{fffd}".repeat(131_000); 15];
            }
            e
        };
        s.append(&mut (0..100).map(huge).collect::<Vec<_>>(), &[])
            .unwrap();
        let mut after = 0;
        let mut pages = 0;
        loop {
            let page = s.read_after(after, 500, 1 << 20).unwrap();
            let Some(last) = page.last() else { break };
            let bytes: usize = page.iter().map(Message::encoded_len).sum();
            assert!(bytes <= 1 << 20 || page.len() == 1, "{bytes} bytes");
            assert!(page.iter().all(|e| e.truncated == ["process.argv"]));
            after = last.seq;
            pages += 1;
        }
        assert_eq!(after, 100);
        assert!(pages > 1, "one page of 100 cut events would be {pages}");
    }
}
