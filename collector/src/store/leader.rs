//! Leadership: which collector runs the jobs that must happen once however many collectors
//! share the database (the silent-agent and unattended-session watches, retention, weekly
//! reports, e-mail to the safeguarding lead, webhook and syslog hand-off).
//!
//! On SQLite there is one collector, and it always leads. On PostgreSQL the leader is the
//! collector whose dedicated connection holds a session-level advisory lock. The lock is the
//! server's, not a row with a lease: when the leader dies (kill -9, a crash, a lost network)
//! its backend ends and the lock is released at once, and the next collector to ask (every
//! second) takes over. No clock is trusted and nothing needs cleaning up after a death.
//!
//! What leadership does not promise: for the few seconds after a leader loses its database
//! connection without noticing (a half-open TCP connection), two collectors may both run a
//! job. The watches claim their work in the transaction that does it (an agent is marked
//! silent in the transaction that raises its alert), so the second finds nothing left to do;
//! a hand-off may then be sent twice, which its receivers already expect (delivery to them is
//! at least once, each message carrying its alert's id).

use super::Store;
use crate::serve::SystemKey;
use std::time::Duration;
use tokio::sync::watch;

/// PostgreSQL's advisory lock held by the leading collector's own connection: this key with
/// the schema's, so that deployments in two schemas of one database each have a leader.
const TRY_LEAD: &str = "SELECT pg_try_advisory_lock(1966336, hashtext(current_schema()))";
/// How often a follower asks for the lock, and the leader checks it still holds its session.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Whether this collector leads. Cheap to clone; the background check stops when every clone
/// has been dropped.
#[derive(Clone)]
pub struct Leadership(watch::Receiver<bool>);

impl Leadership {
    /// A collector with no peers (SQLite, tests): it always leads.
    pub fn sole() -> Self {
        let (tx, rx) = watch::channel(true);
        // Kept open for the process's life, so `acquired` never sees a closed channel.
        std::mem::forget(tx);
        Self(rx)
    }

    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Returns once this collector leads (at once if it does).
    pub async fn acquired(&mut self) {
        if self.0.wait_for(|leads| *leads).await.is_err() {
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
        let (tx, rx) = watch::channel(false);
        let store = self.clone();
        std::thread::Builder::new()
            .name("leadership".into())
            .spawn(move || hold(&store, &tx))?;
        Ok(Leadership(rx))
    }
}

/// Asks for the lock, then keeps checking the session that holds it, until every
/// [`Leadership`] is dropped. A lost connection gives leadership up and starts again.
fn hold(store: &Store, tx: &watch::Sender<bool>) {
    while !tx.is_closed() {
        let conn = match store.connect() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "leadership: cannot reach the database");
                std::thread::sleep(CHECK_EVERY);
                continue;
            }
        };
        let mut leads = false;
        while !tx.is_closed() {
            let check = if leads {
                conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                    .map(|_| true)
            } else {
                conn.query_row(TRY_LEAD, [], |r| r.get::<_, bool>(0))
            };
            match check {
                Ok(true) if !leads => {
                    leads = true;
                    tx.send_replace(true);
                    tracing::info!("this collector now runs the once-only jobs");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "leadership: lost the database connection");
                    break;
                }
            }
            std::thread::sleep(CHECK_EVERY);
        }
        if leads {
            tx.send_replace(false);
            tracing::warn!("this collector no longer runs the once-only jobs");
        }
        // Dropping the connection ends its session, which releases the lock if still held.
        drop(conn);
        std::thread::sleep(CHECK_EVERY);
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
