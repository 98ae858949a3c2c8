//! Wake-ups for the console's live alert stream. The stream reads new alerts with a catch-up
//! query (under its audit entry, see `console::alerts`); this only says when to run it.
//!
//! On PostgreSQL, alerts committed by any collector sharing the database wake it at once: a
//! trigger notifies `invigilator_alerts` at each commit that inserted alerts (migration 0002),
//! and one connection per collector listens. The notification carries nothing, so a missed one
//! (the listening connection lost and made again) costs only a delay: the stream also runs its
//! query every few seconds. On SQLite the alerts are this collector's own, and the stream polls
//! every second, as cheaply.

use super::Store;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const CHANNEL: &str = "invigilator_alerts";
/// However many alerts are committed, one open stream queries at most this often.
const MIN_SPACING: Duration = Duration::from_millis(250);

/// When to look for new alerts. Each clone waits on its own.
#[derive(Clone)]
pub struct AlertWakeups {
    rx: watch::Receiver<u64>,
    /// The query runs at least this often, woken or not.
    poll: Duration,
    last: Option<Instant>,
}

impl AlertWakeups {
    /// Returns when alerts may have been committed since the last call, or when the poll
    /// interval has passed. The first call returns at once: a stream starts with a query.
    pub async fn next(&mut self) {
        if let Some(last) = self.last {
            tokio::time::sleep_until((last + MIN_SPACING).into()).await;
            let _ = tokio::time::timeout(self.poll, self.rx.changed()).await;
        }
        self.last = Some(Instant::now());
    }
}

impl Store {
    /// This collector's wake-ups (one listening connection, made at the first call).
    pub fn alert_wakeups(&self) -> AlertWakeups {
        self.wakeups_cell()
            .get_or_init(|| {
                let (tx, rx) = watch::channel(0);
                if !self.is_postgres() {
                    // Never sent: the stream polls.
                    std::mem::forget(tx);
                    return AlertWakeups {
                        rx,
                        poll: Duration::from_secs(1),
                        last: None,
                    };
                }
                let store = self.clone();
                if let Err(e) = std::thread::Builder::new()
                    .name("alert-wakeups".into())
                    .spawn(move || listen(&store, &tx))
                {
                    tracing::error!(error = %e, "cannot start listening for alerts; polling");
                }
                AlertWakeups {
                    rx,
                    poll: Duration::from_secs(5),
                    last: None,
                }
            })
            .clone()
    }
}

fn listen(store: &Store, tx: &watch::Sender<u64>) {
    let wake = || tx.send_modify(|n| *n = n.wrapping_add(1));
    loop {
        let listening = store.connect().and_then(|c| {
            c.execute_batch(&format!("LISTEN {CHANNEL}"))
                .map(|()| c)
                .map_err(Into::into)
        });
        let conn = match listening {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for alerts; the live stream polls");
                std::thread::sleep(Duration::from_secs(5));
                continue;
            }
        };
        // Whatever was committed while nobody listened is found by the streams' next query.
        wake();
        loop {
            match conn.notified(Duration::from_secs(30)) {
                Ok(true) => wake(),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "lost the connection listening for alerts");
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{test_config_of, test_db};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_alert_committed_elsewhere_wakes_the_stream() {
        let (dir, conn) = test_db();
        let store = Store::open(dir.path(), &test_config_of(dir.path())).unwrap();
        let mut w = store.alert_wakeups();
        w.next().await;
        if !store.is_postgres() {
            let t = Instant::now();
            w.next().await;
            assert!(
                t.elapsed() >= Duration::from_millis(900),
                "SQLite polls each second"
            );
            return;
        }
        // The listener's first wake-up, once it listens.
        tokio::time::timeout(Duration::from_secs(5), w.rx.changed())
            .await
            .unwrap()
            .unwrap();
        // Another connection (another collector) commits an alert.
        conn.execute(
            "INSERT INTO alerts(agent_id, hostname, user, kind, rule, category, severity,
                                summary, matched, observed_at, created_at, policy_version)
             VALUES ('a', 'h', 'u', 'process', 'r', 'c', 'high', 's', 'm', 1, 1, 'v')",
            (),
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(3), w.rx.changed())
            .await
            .expect("no wake-up within 3 s of the commit")
            .unwrap();
    }
}
