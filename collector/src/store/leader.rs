//! Leadership: which collector runs the jobs that must happen once however many collectors
//! share the database (the silent-agent and unattended-session watches, retention, weekly
//! reports, e-mail to the safeguarding lead, webhook and syslog hand-off).
//!
//! On SQLite there is one collector, and it always leads. On PostgreSQL the leader is the
//! collector whose dedicated connection holds a session-level advisory lock. The lock is the
//! server's, not a row with a lease: when the leader dies (kill -9, a crash) its backend ends
//! and the lock is released at once, and the next collector to ask (every second) takes over.
//! No clock is compared between machines and nothing needs cleaning up after a death.
//!
//! A leader cut off from the database without its connection breaking (a half-open TCP
//! connection: a cable pulled, a network partition) must not run jobs alongside its
//! successor. Each successful check makes this collector the leader for a short lease
//! ([`LEASE`]); a check that does not answer within it ends the leadership here, whatever the
//! socket says. The leader's session tells the server to drop it, and with it the lock, only
//! after a longer silence ([`SESSION`]): by then the lease has lapsed, so the old leader has
//! stopped before another can take over. The watches also claim their work in the transaction
//! that does it, so even a job that overran its lease finds nothing left to do twice.

use super::Store;
use crate::serve::SystemKey;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// PostgreSQL's advisory lock held by the leading collector's own connection: this key with
/// the schema's, so that deployments in two schemas of one database each have a leader.
const TRY_LEAD: &str = "SELECT pg_try_advisory_lock(1966336, hashtext(current_schema()))";
/// How often a follower asks for the lock, and the leader checks it still holds its session.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a successful check keeps this collector the leader.
const LEASE: Duration = Duration::from_secs(3);
/// The leader's session on the server: a client that stops answering is dropped after about
/// 8 s of silence (keepalives after 4 s, every 2 s; data unacknowledged for 8 s), well after
/// its lease has lapsed. (Ignored on a Unix socket, where a lost client is seen at once.)
const SESSION: &str = "SET tcp_keepalives_idle = 4; SET tcp_keepalives_interval = 2;
                       SET tcp_keepalives_count = 3; SET tcp_user_timeout = 8000";

/// Whether this collector leads, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lead {
    No,
    Until(Instant),
    Always,
}

impl Lead {
    fn now(self) -> bool {
        match self {
            Lead::No => false,
            Lead::Until(t) => Instant::now() < t,
            Lead::Always => true,
        }
    }
}

/// Whether this collector leads. Cheap to clone; the background check stops when every clone
/// has been dropped.
#[derive(Clone)]
pub struct Leadership(watch::Receiver<Lead>);

impl Leadership {
    /// A collector with no peers (SQLite, tests): it always leads.
    pub fn sole() -> Self {
        let (tx, rx) = watch::channel(Lead::Always);
        // Kept open for the process's life, so `acquired` never sees a closed channel.
        std::mem::forget(tx);
        Self(rx)
    }

    pub fn is_leader(&self) -> bool {
        self.0.borrow().now()
    }

    /// Returns once this collector leads (at once if it does).
    pub async fn acquired(&mut self) {
        if self.0.wait_for(|lead| lead.now()).await.is_err() {
            // The check stopped (the store is gone): never lead again.
            std::future::pending::<()>().await;
        }
    }
}

impl Store {
    /// This collector's leadership among those sharing the database. The key keeps it to the
    /// services `serve` starts: only they run the once-only jobs.
    pub fn leadership(&self, _key: &SystemKey) -> std::io::Result<Leadership> {
        self.watch_leadership()
    }

    fn watch_leadership(&self) -> std::io::Result<Leadership> {
        if !self.is_postgres() {
            return Ok(Leadership::sole());
        }
        let (tx, rx) = watch::channel(Lead::No);
        let (checks, results) = mpsc::channel();
        let store = self.clone();
        let stop = tx.clone();
        std::thread::Builder::new()
            .name("leadership-check".into())
            .spawn(move || check(&store, &checks, &stop))?;
        std::thread::Builder::new()
            .name("leadership".into())
            .spawn(move || hold(&results, &tx))?;
        Ok(Leadership(rx))
    }
}

/// What one check found: whether this collector holds the lock (false too when the connection
/// was lost), and when the check was asked.
type Checked = (bool, Instant);

/// Asks for the lock, then keeps checking the session that holds it, reporting each answer,
/// until every [`Leadership`] is dropped. A lost connection is reported and replaced.
fn check(store: &Store, results: &mpsc::Sender<Checked>, stop: &watch::Sender<Lead>) {
    while !stop.is_closed() {
        let conn = match store.connect() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "leadership: cannot reach the database");
                std::thread::sleep(CHECK_EVERY);
                continue;
            }
        };
        if let Err(e) = conn.execute_batch(SESSION) {
            tracing::error!(error = %e, "leadership: cannot set up the session");
            std::thread::sleep(CHECK_EVERY);
            continue;
        }
        let mut holds = false;
        while !stop.is_closed() {
            let asked = Instant::now();
            let answer = if holds {
                conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                    .map(|_| true)
            } else {
                conn.query_row(TRY_LEAD, [], |r| r.get::<_, bool>(0))
            };
            match answer {
                Ok(h) => {
                    holds |= h;
                    if results.send((holds, asked)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "leadership: lost the database connection");
                    let _ = results.send((false, asked));
                    break;
                }
            }
            std::thread::sleep(CHECK_EVERY);
        }
        // Dropping the connection ends its session, which releases the lock if still held.
        drop(conn);
        std::thread::sleep(CHECK_EVERY);
    }
}

/// Turns the checks' answers into leases: each answer that this collector holds the lock makes
/// it the leader until [`LEASE`] after the check was asked; no answer in time ends it.
fn hold(results: &mpsc::Receiver<Checked>, tx: &watch::Sender<Lead>) {
    let mut leads = false;
    loop {
        let next = match results.recv_timeout(LEASE) {
            Ok((true, asked)) => Lead::Until(asked + LEASE),
            Ok((false, _)) | Err(mpsc::RecvTimeoutError::Timeout) => Lead::No,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        tx.send_replace(next);
        match (leads, next != Lead::No) {
            (false, true) => tracing::info!("this collector now runs the once-only jobs"),
            (true, false) => tracing::warn!(
                "this collector no longer runs the once-only jobs (the database did not confirm its lead in time)"
            ),
            _ => {}
        }
        leads = next != Lead::No;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{test_config_of, test_db};

    async fn leads_within(l: &mut Leadership, secs: u64) -> bool {
        tokio::time::timeout(Duration::from_secs(secs), l.acquired())
            .await
            .is_ok()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_collector_leads_and_another_takes_over_when_it_goes() {
        let (dir, _conn) = test_db();
        let open = || Store::open(dir.path(), &test_config_of(dir.path())).unwrap();
        let (a, b) = (open(), open());
        let mut first = a.watch_leadership().unwrap();
        assert!(
            leads_within(&mut first, 5).await,
            "nobody else asked: it leads"
        );
        let mut second = b.watch_leadership().unwrap();
        if !a.is_postgres() {
            // One collector per SQLite file: each store leads itself.
            assert!(second.is_leader());
            return;
        }
        assert!(
            !leads_within(&mut second, 3).await,
            "two collectors led at once"
        );
        // The leader goes: its check stops and its session, and with it the lock, ends.
        drop(first);
        assert!(leads_within(&mut second, 5).await, "no one took over");
    }
}
