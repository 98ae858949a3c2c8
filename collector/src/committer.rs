//! Group commit. A committer thread (one on SQLite, which has one writer; a few on PostgreSQL,
//! in lanes by agent) does all of ingest's writing; batches from connected agents queue there
//! and are written together in one transaction, with the alerts they raise, and only then
//! acknowledged. An acknowledgement therefore always means "on disk, with its alerts".

use crate::admission::Room;
use crate::metrics::Metrics;
use crate::serve::SystemKey;
use crate::store::{self, Store, StoredBatch, System, delivery, visits};
use arc_swap::ArcSwap;
use invigilator_policy::{AgentContext, Policy, Severity};
use invigilator_proto::v1::{Event, event::Kind};
use prost::Message;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Everything a stream asks the committer to store.
pub struct Job {
    pub agent_id: Arc<str>,
    pub group: Arc<str>,
    pub events: Vec<Event>,
    /// Encoded size of `events`: commits are bounded in bytes as well as in events.
    pub bytes: usize,
    /// The batch's room in front of the committer, released once the job is done.
    pub room: Room,
    /// Its stream's epoch (`delivery::open_stream`): refused when the agent has a newer stream.
    pub epoch: i64,
    /// The agent's rate allowance once this batch was charged, for the next collector it
    /// streams to (`Admission::seed`).
    pub rate: delivery::Bucket,
    pub reply: oneshot::Sender<Result<StoredBatch, NotStored>>,
}

/// Why a job was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotStored {
    /// The agent opened a newer stream (on this collector or another) since this job's stream
    /// began; it resends on the newer one. The rest of the commit went through.
    #[error("a newer event stream from this agent replaced this one")]
    Superseded,
    /// The commit failed; nothing of it was kept.
    #[error("{0}")]
    Failed(String),
}

/// How much one commit may take.
#[derive(Debug, Clone, Copy)]
pub struct CommitLimits {
    pub events: usize,
    pub bytes: usize,
}

/// The committer's lanes: each a thread with its own connection and queue. An agent always
/// goes to the same lane, so its batches are committed in the order it sent them, and lanes
/// never wait for each other's agents; one lane's fsync overlaps another's work.
#[derive(Clone)]
pub struct Committer {
    lanes: Arc<[mpsc::Sender<Job>]>,
}

/// Each lane's bound on queued jobs; memory is bounded by the admission's byte budget.
const QUEUE: usize = 1024;

impl Committer {
    /// Starts `lanes` committer threads (at least one). They stop when every `Committer`
    /// handle is dropped.
    pub fn spawn(
        store: Store,
        key: SystemKey,
        policy: Arc<ArcSwap<Policy>>,
        limits: CommitLimits,
        metrics: Arc<Metrics>,
        lanes: usize,
    ) -> std::io::Result<(Self, Vec<std::thread::JoinHandle<()>>)> {
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for lane in 0..lanes.max(1) {
            let (tx, rx) = mpsc::channel(QUEUE);
            let (store, key, policy, metrics) = (
                store.clone(),
                key.clone(),
                Arc::clone(&policy),
                Arc::clone(&metrics),
            );
            threads.push(
                std::thread::Builder::new()
                    .name(format!("committer-{lane}"))
                    .spawn(move || run(store, key, rx, policy, limits, &metrics))?,
            );
            senders.push(tx);
        }
        Ok((
            Self {
                lanes: senders.into(),
            },
            threads,
        ))
    }

    /// Batches waiting to be committed, all lanes together.
    pub fn queued(&self) -> usize {
        self.lanes.iter().map(|l| QUEUE - l.capacity()).sum()
    }

    /// Queues a job on its agent's lane; the reply arrives on the job's channel after the
    /// commit.
    pub async fn submit(&self, job: Job) -> Result<(), Job> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(&*job.agent_id);
        let lane = &self.lanes[(hash % self.lanes.len() as u64) as usize];
        lane.send(job).await.map_err(|e| e.0)
    }
}

fn run(
    store: Store,
    key: SystemKey,
    mut rx: mpsc::Receiver<Job>,
    policy: Arc<ArcSwap<Policy>>,
    limits: CommitLimits,
    metrics: &Metrics,
) {
    let mut jobs: Vec<Job> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut total = first.events.len();
        let mut bytes = first.bytes;
        jobs.push(first);
        // Take whatever else is already waiting: the more agents, the bigger each commit.
        while total < limits.events && bytes < limits.bytes {
            match rx.try_recv() {
                Ok(job) => {
                    total += job.events.len();
                    bytes += job.bytes;
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let policy = policy.load();
        let started = Instant::now();
        let attempt = || {
            store.system(&key, |sys| {
                sys.transaction(|sys| commit(sys, &jobs, &policy))
            })
        };
        // A deadlock with another writer (another collector's commit, a health flush) is given
        // up by the server: nothing was kept, and the next try goes through.
        let mut outcome = attempt();
        for _ in 0..3 {
            match &outcome {
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "commit retried");
                    outcome = attempt();
                }
                _ => break,
            }
        }
        match outcome {
            Ok((results, tally)) => {
                metrics.commit_took(started.elapsed(), total);
                tally.count(metrics);
                for (job, result) in jobs.drain(..).zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = total, "commit failed; batches will be resent by their agents");
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(NotStored::Failed(e.to_string())));
                }
            }
        }
    }
}

/// What one commit stored, counted for the metrics only once it is on disk: a rolled-back
/// commit counts nothing. Kept per kind in place, so the hot path allocates nothing.
#[derive(Default)]
struct Tally {
    /// (kind, stored, duplicates), for the handful of kinds there are.
    kinds: Vec<(&'static str, u64, u64)>,
    alerts: Vec<(String, Severity)>,
}

impl Tally {
    fn event(&mut self, event: &Event, stored: bool) {
        let kind = event.kind.as_ref().map(Kind::name).unwrap_or("unknown");
        let i = match self.kinds.iter().position(|k| k.0 == kind) {
            Some(i) => i,
            None => {
                self.kinds.push((kind, 0, 0));
                self.kinds.len() - 1
            }
        };
        if stored {
            self.kinds[i].1 += 1;
        } else {
            self.kinds[i].2 += 1;
        }
    }

    fn count(self, metrics: &Metrics) {
        for (kind, stored, duplicates) in self.kinds {
            metrics.events_stored(kind, stored);
            metrics.events_duplicate(kind, duplicates);
        }
        for (rule, severity) in self.alerts {
            metrics.alert_raised(&rule, severity);
        }
    }
}

fn commit(
    tx: &System<'_>,
    jobs: &[Job],
    policy: &Policy,
) -> store::Result<(Vec<Result<StoredBatch, NotStored>>, Tally)> {
    let mut tally = Tally::default();
    let received_at = store::now_us();
    let window = policy.alerts.aggregate_window.as_micros() as i64;
    let mut results = Vec::with_capacity(jobs.len());
    // Every agent of the group, in one order on every collector: two commits sharing agents
    // then wait for each other rather than deadlock.
    let mut agents: Vec<&str> = jobs.iter().map(|j| &*j.agent_id).collect();
    agents.sort_unstable();
    agents.dedup();
    let mut locked = std::collections::HashMap::with_capacity(agents.len());
    for agent_id in agents {
        let row = delivery::lock(tx, agent_id)?.unwrap_or(delivery::Locked {
            epoch: 0,
            acked_seq: 0,
        });
        locked.insert(agent_id, row);
    }
    for job in jobs {
        let row = locked[&*job.agent_id];
        if row.epoch > job.epoch {
            results.push(Err(NotStored::Superseded));
            continue;
        }
        let mut r = StoredBatch::default();
        let mut stored_bytes = 0u64;
        // Evaluated as received; stored without what nobody may see (illegal-class visits).
        let redacted: Vec<_> = job.events.iter().map(|e| policy.redacted(e)).collect();
        let firsts = store::events::insert_all(tx, &job.agent_id, &redacted, received_at, &row)?;
        for ((event, stored), first_sighting) in job.events.iter().zip(&redacted).zip(firsts) {
            tally.event(event, first_sighting);
            if first_sighting {
                r.stored += 1;
                stored_bytes += stored.encoded_len() as u64;
                let user_logged_on_elsewhere = match &event.kind {
                    Some(Kind::Session(s)) => {
                        store::sessions::apply(tx, &job.agent_id, &job.group, event, s)?
                    }
                    _ => Vec::new(),
                };
                // A USB event names nobody: who is logged on at the device decides.
                let logged_on = match &event.kind {
                    Some(Kind::Usb(_)) if event.user.is_empty() => {
                        store::sessions::logged_on(tx, &job.agent_id, event.observed_at_us)?
                    }
                    _ => Vec::new(),
                };
                let ctx = AgentContext {
                    agent_id: &job.agent_id,
                    group: &job.group,
                    user_logged_on_elsewhere,
                    logged_on,
                };
                // A visit the extension and the history both report links to its first report;
                // a later copy raises only what the visit has not raised yet.
                let visit = match &stored.kind {
                    Some(Kind::Browsing(v)) if v.action == "visit" => Some(visits::link(
                        tx,
                        &visits::Report {
                            agent_id: &job.agent_id,
                            seq: event.seq,
                            user: &event.user,
                            url: &v.url,
                            visit_time_us: v.visit_time_us,
                            reporter: visits::Reporter::from_field(&v.reporter),
                        },
                    )?),
                    _ => None,
                };
                let mut alerts = policy.evaluate(&ctx, event);
                if let Some(first) = &visit {
                    if let Some(first) = first {
                        alerts.retain(|a| !first.rules.contains(&a.rule));
                    }
                    let rules: Vec<&str> = alerts.iter().map(|a| a.rule.as_str()).collect();
                    let at = match first {
                        Some(first) => visits::Raised::First(first.event_id),
                        None => visits::Raised::Own {
                            agent_id: &job.agent_id,
                            seq: event.seq,
                        },
                    };
                    visits::raised(tx, at, &rules)?;
                }
                // Only a first sighting raises alerts, so alerts are exactly-once too.
                for alert in alerts {
                    store::alerts::record(tx, &alert, window)?;
                    r.alerts += 1;
                    tally.alerts.push((alert.rule, alert.severity));
                }
            } else {
                r.duplicates += 1;
            }
        }
        r.committed_at_us = received_at;
        if let Some(last) = job.events.last() {
            r.day_bytes = delivery::record(
                tx,
                &delivery::Committed {
                    agent_id: &job.agent_id,
                    at_us: received_at,
                    bytes: stored_bytes,
                    events: r.stored as u64,
                    up_to_seq: last.seq,
                    rate: job.rate,
                },
            )?;
        }
        results.push(Ok(r));
    }
    Ok((results, tally))
}
