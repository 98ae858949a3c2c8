//! Admission: what stands between an agent's event stream and the committer, so that one device
//! (rogue, compromised, or merely broken) cannot starve the others.
//!
//! - One live stream per agent. The newest wins: a new stream ends the older one, so a half-open
//!   connection never locks its agent out, and parallel streams cannot multiply its share. New
//!   streams are themselves rationed (`quotas.streams_per_minute`): an agent that keeps opening
//!   them is refused rather than allowed to churn the collector's decoding without progress.
//! - Bytes, not batches, are what wait for the committer: all agents together may hold
//!   `ingest.max_pending_mib`, one agent `ingest.max_pending_mib_per_agent`. A stream waits for
//!   room before it reads its next message; tokio's semaphore serves waiters in order.
//! - Per-agent quotas: a sustained rate with a burst (token bucket), and a daily volume counted
//!   in the database. Over a quota the stream stops reading: nothing is acknowledged, so the agent
//!   keeps its events and nothing is lost. The first hit of each kind in a day raises an alert.
//! - Several collectors on one database share each agent's quotas through its row: the stream
//!   ration is taken in the database when a stream opens (`delivery::open_stream`), and the rate
//!   bucket each commit leaves is where the next collector's starts (`seed`). The counts kept
//!   here are this collector's view: they spare the database an agent churning streams at one
//!   collector, and charge batches without a round trip.

use crate::config::{IngestConfig, QuotaConfig};
use crate::store::delivery::{self, Bucket, Ration};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

const MIB: u64 = 1024 * 1024;

/// Why an agent's stream is being held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    Rate,
    Daily,
    Streams,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::Rate => "rate",
            Limit::Daily => "daily",
            Limit::Streams => "stream",
        }
    }
}

pub struct Admission {
    quotas: QuotaConfig,
    per_stream_bytes: u32,
    pending: Arc<Semaphore>,
    pending_bytes: u32,
    agents: Mutex<HashMap<Arc<str>, AgentState>>,
    next_stream: AtomicU64,
}

struct AgentState {
    live: Option<(u64, oneshot::Sender<()>)>,
    opens: f64,
    opened: Instant,
    tokens: f64,
    refilled: Instant,
    /// Today's stored bytes as the last commit reported them, and which day that was.
    day: i64,
    used: u64,
    /// The day each limit last raised an alert.
    alerted: HashMap<Limit, i64>,
}

/// One stream's registration. Dropping it (the stream ended) forgets it, unless a newer stream
/// of the same agent has taken its place.
pub struct Ticket {
    admission: Arc<Admission>,
    agent: Arc<str>,
    id: u64,
    /// Fires when a newer stream of the same agent opens.
    pub superseded: oneshot::Receiver<()>,
    share: Share,
}

/// A stream's share of the bytes waiting for the committer.
#[derive(Clone)]
pub struct Share(Arc<Semaphore>);

impl Ticket {
    pub fn share(&self) -> Share {
        self.share.clone()
    }
}

/// Room for one batch in front of the committer; released when the commit is done.
pub struct Room {
    _stream: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

impl Admission {
    pub fn new(ingest: &IngestConfig, quotas: &QuotaConfig) -> Arc<Self> {
        let bytes = |mib: usize| (mib as u64 * MIB).min(u32::MAX as u64) as u32;
        let pending_bytes = bytes(ingest.max_pending_mib);
        Arc::new(Self {
            quotas: quotas.clone(),
            per_stream_bytes: bytes(ingest.max_pending_mib_per_agent),
            pending: Arc::new(Semaphore::new(pending_bytes as usize)),
            pending_bytes,
            agents: Mutex::new(HashMap::new()),
            next_stream: AtomicU64::new(1),
        })
    }

    fn state<R>(&self, agent: &Arc<str>, f: impl FnOnce(&mut AgentState) -> R) -> R {
        let mut map = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        let burst = (self.quotas.burst_mib * MIB) as f64;
        let opens = self.quotas.streams_per_minute as f64;
        let state = map.entry(agent.clone()).or_insert_with(|| AgentState {
            live: None,
            opens,
            opened: Instant::now(),
            tokens: burst,
            refilled: Instant::now(),
            day: i64::MIN,
            used: 0,
            alerted: HashMap::new(),
        });
        f(state)
    }

    /// Takes a new stream from the agent's ration at this collector; false when it has opened
    /// more in the last minute than its quota allows.
    pub fn admit(&self, agent: &Arc<str>) -> bool {
        let per_minute = self.quotas.streams_per_minute as f64;
        self.state(agent, |s| {
            let now = Instant::now();
            let elapsed = now.duration_since(s.opened).as_secs_f64();
            s.opens = (s.opens + elapsed * per_minute / 60.0).min(per_minute);
            s.opened = now;
            if s.opens < 1.0 {
                return false;
            }
            s.opens -= 1.0;
            true
        })
    }

    /// Registers a new stream for `agent`, ending the one it had here.
    pub fn open(self: &Arc<Self>, agent: &Arc<str>) -> Ticket {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Some((_, end)) = self.state(agent, |s| s.live.replace((id, tx))) {
            tracing::info!(agent_id = %agent, "a newer stream replaces this agent's open one");
            let _ = end.send(());
        }
        Ticket {
            admission: Arc::clone(self),
            agent: agent.clone(),
            id,
            superseded: rx,
            share: Share(Arc::new(Semaphore::new(self.per_stream_bytes as usize))),
        }
    }

    /// The stream ration every collector applies in the database.
    pub fn ration(&self) -> Ration {
        let per_minute = self.quotas.streams_per_minute as f64;
        Ration {
            streams: per_minute,
            streams_per_us: per_minute / 60e6,
        }
    }

    /// Bytes a second the rate allowance refills by, and the most it holds.
    fn rate(&self) -> (f64, f64) {
        let rate = (self.quotas.rate_mib_per_minute * MIB) as f64 / 60.0;
        (rate, (self.quotas.burst_mib * MIB) as f64)
    }

    /// Brings the agent's rate allowance down to what the database says the last commit left
    /// (on any collector), refilled since: an agent that moved here brings its debt along.
    pub fn seed(&self, agent: &Arc<str>, left: Option<Bucket>, now_us: i64) {
        let Some(left) = left else { return };
        let (rate, burst) = self.rate();
        let elapsed = now_us.saturating_sub(left.at_us).max(0) as f64 / 1e6;
        let shared = (left.tokens + elapsed * rate).min(burst);
        self.state(agent, |s| {
            refill(s, rate, burst);
            s.tokens = s.tokens.min(shared);
        });
    }

    /// Takes `bytes` from the agent's rate allowance; the time to wait first if it overdrew,
    /// and what is left, for the commit to keep. A batch always fits a full bucket
    /// (burst ≥ the largest message), so waiting suffices.
    pub fn charge(&self, agent: &Arc<str>, bytes: u64, now_us: i64) -> (Option<Duration>, Bucket) {
        let (rate, burst) = self.rate();
        self.state(agent, |s| {
            refill(s, rate, burst);
            s.tokens -= bytes as f64;
            let wait = (s.tokens < 0.0).then(|| Duration::from_secs_f64(-s.tokens / rate));
            let left = Bucket {
                tokens: s.tokens,
                at_us: now_us,
            };
            (wait, left)
        })
    }

    /// Gives back what [`Self::charge`] took for a batch that was then refused, not stored.
    pub fn refund(&self, agent: &Arc<str>, bytes: u64) {
        let (rate, burst) = self.rate();
        self.state(agent, |s| {
            refill(s, rate, burst);
            s.tokens = (s.tokens + bytes as f64).min(burst);
        });
    }

    /// The daily allowance in bytes.
    fn daily_bytes(&self) -> u64 {
        self.quotas.daily_mib.saturating_mul(MIB)
    }

    /// Notes the agent's stored bytes for the day of `now_us`, as a commit or the store said.
    pub fn note_usage(&self, agent: &Arc<str>, now_us: i64, used: u64) {
        let day = delivery::day_of(now_us);
        self.state(agent, |s| {
            if day >= s.day {
                s.day = day;
                s.used = used;
            }
        });
    }

    /// True when the agent has used its daily allowance, as far as this collector knows.
    /// None when it does not know today's figure yet.
    pub fn over_daily(&self, agent: &Arc<str>, now_us: i64) -> Option<bool> {
        let day = delivery::day_of(now_us);
        let limit = self.daily_bytes();
        self.state(agent, |s| (s.day == day).then_some(s.used >= limit))
    }

    /// True the first time in a UTC day that `limit` holds the agent back.
    pub fn first_hit_today(&self, agent: &Arc<str>, limit: Limit, now_us: i64) -> bool {
        let day = delivery::day_of(now_us);
        self.state(agent, |s| s.alerted.insert(limit, day) != Some(day))
    }

    /// Waits for room for `bytes` in front of the committer: first within the stream's share,
    /// then within everyone's.
    pub async fn room(&self, share: Share, bytes: usize) -> Option<Room> {
        let stream_bytes = bytes.clamp(1, self.per_stream_bytes as usize) as u32;
        let all_bytes = bytes.clamp(1, self.pending_bytes as usize) as u32;
        let stream = share.0.acquire_many_owned(stream_bytes).await.ok()?;
        let all = Arc::clone(&self.pending)
            .acquire_many_owned(all_bytes)
            .await
            .ok()?;
        Some(Room {
            _stream: stream,
            _all: all,
        })
    }

    /// Agents with a live event stream to this collector.
    pub fn live_streams(&self) -> usize {
        let map = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        map.values().filter(|s| s.live.is_some()).count()
    }

    /// Bytes currently waiting for the committer, all agents together.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes as usize - self.pending.available_permits()
    }
}

fn refill(s: &mut AgentState, rate: f64, burst: f64) {
    let now = Instant::now();
    let elapsed = now.duration_since(s.refilled).as_secs_f64();
    s.tokens = (s.tokens + elapsed * rate).min(burst);
    s.refilled = now;
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let id = self.id;
        self.admission.state(&self.agent, |s| {
            if s.live.as_ref().is_some_and(|(live, _)| *live == id) {
                s.live = None;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(rate: u64, burst: u64, pending: usize, per_agent: usize) -> Arc<Admission> {
        let ingest = IngestConfig {
            max_pending_mib: pending,
            max_pending_mib_per_agent: per_agent,
            ..Default::default()
        };
        let quotas = QuotaConfig {
            rate_mib_per_minute: rate,
            burst_mib: burst,
            daily_mib: 1,
            streams_per_minute: 3,
        };
        Admission::new(&ingest, &quotas)
    }

    #[tokio::test]
    async fn the_newest_stream_wins() {
        let a = admission(1, 4, 8, 4);
        let agent: Arc<str> = "a".into();
        assert!(a.admit(&agent));
        let mut first = a.open(&agent);
        assert!(a.admit(&agent));
        let mut second = a.open(&agent);
        assert!(
            first.superseded.try_recv().is_ok(),
            "the older stream is told to end"
        );
        // The older one ending must not unregister the newer.
        drop(first);
        assert!(a.admit(&agent));
        let mut third = a.open(&agent);
        assert!(second.superseded.try_recv().is_ok());
        // Three a minute: a fourth is refused, and refusing it ends nothing.
        assert!(!a.admit(&agent));
        assert!(third.superseded.try_recv().is_err());
        assert_eq!(a.live_streams(), 1);
        drop(third);
        let other: Arc<str> = "b".into();
        assert!(a.admit(&other), "rations are per agent");
        let mut unrelated = a.open(&other);
        assert!(unrelated.superseded.try_recv().is_err());
    }

    #[test]
    fn the_rate_allows_a_burst_then_asks_for_waits() {
        let a = admission(60, 4, 8, 4); // 1 MiB/s, 4 MiB burst
        let agent: Arc<str> = "a".into();
        let now = 1_000_000_000;
        for _ in 0..4 {
            assert_eq!(a.charge(&agent, MIB, now).0, None);
        }
        let (wait, left) = a.charge(&agent, MIB, now);
        let wait = wait.expect("the burst is spent");
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(left.tokens < 0.0 && left.at_us == now, "{left:?}");
        let other: Arc<str> = "b".into();
        assert_eq!(a.charge(&other, MIB, now).0, None, "quotas are per agent");
    }

    #[test]
    fn an_agent_that_moved_brings_its_debt_along() {
        let a = admission(60, 4, 8, 4); // 1 MiB/s, 4 MiB burst
        let agent: Arc<str> = "a".into();
        let now = 1_000_000_000;
        // Another collector's last commit left it 2 MiB overdrawn half a second ago.
        let left = Bucket {
            tokens: -2.0 * MIB as f64,
            at_us: now - 500_000,
        };
        a.seed(&agent, Some(left), now);
        let wait = a.charge(&agent, MIB, now).0.expect("still in debt");
        assert!(
            wait > Duration::from_millis(2400) && wait <= Duration::from_millis(2500),
            "{wait:?}"
        );
        // A bucket left long ago is full again, and never fuller than the burst.
        let fresh: Arc<str> = "b".into();
        let long_ago = Bucket {
            tokens: -2.0 * MIB as f64,
            at_us: now - 3_600_000_000,
        };
        a.seed(&fresh, Some(long_ago), now);
        for _ in 0..4 {
            assert_eq!(a.charge(&fresh, MIB, now).0, None);
        }
        assert!(a.charge(&fresh, MIB, now).0.is_some());
    }

    #[test]
    fn the_daily_allowance_follows_the_store_and_alerts_once_a_day() {
        let a = admission(1, 4, 8, 4);
        let agent: Arc<str> = "a".into();
        let day = 20_000 * 86_400_000_000;
        assert_eq!(
            a.over_daily(&agent, day),
            None,
            "unknown until the store says"
        );
        a.note_usage(&agent, day, MIB - 1);
        assert_eq!(a.over_daily(&agent, day), Some(false));
        a.note_usage(&agent, day, MIB);
        assert_eq!(a.over_daily(&agent, day), Some(true));
        assert_eq!(a.over_daily(&agent, day + 86_400_000_000), None);
        assert!(a.first_hit_today(&agent, Limit::Daily, day));
        assert!(!a.first_hit_today(&agent, Limit::Daily, day + 1));
        assert!(a.first_hit_today(&agent, Limit::Rate, day));
        assert!(a.first_hit_today(&agent, Limit::Daily, day + 86_400_000_000));
    }

    #[tokio::test]
    async fn one_agent_cannot_hold_more_than_its_share() {
        let a = admission(1, 4, 8, 4);
        let (x, y): (Arc<str>, Arc<str>) = ("x".into(), "y".into());
        let (tx, ty) = (a.open(&x), a.open(&y));
        let held = a.room(tx.share(), 4 * MIB as usize).await.unwrap();
        assert_eq!(a.pending_bytes(), 4 * MIB as usize);
        // x's share is full: its next batch waits ...
        let blocked = tokio::time::timeout(Duration::from_millis(50), a.room(tx.share(), 1)).await;
        assert!(blocked.is_err());
        // ... while y still gets room at once.
        let other = tokio::time::timeout(
            Duration::from_millis(50),
            a.room(ty.share(), 2 * MIB as usize),
        )
        .await
        .expect("another agent is not held up")
        .unwrap();
        drop((held, other));
        assert_eq!(a.pending_bytes(), 0);
        // A batch larger than the share still gets in, alone.
        assert!(a.room(tx.share(), 64 * MIB as usize).await.is_some());
    }
}
