//! `loadgen fault`: simulated agents that behave as the real one does when its collector dies.
//! Each numbers its events from 1, keeps every unacknowledged one, and on a broken stream
//! reconnects (the dialler fails over to another collector of `--collector a,b,c`) and sends
//! again from its last acknowledgement. Every 100th event is a breach (a Tor exec), so the
//! alerts can be counted against it. `tests/bench/collectors_fault.sh` kills collectors under
//! it and then checks the database: every agent's sequence exactly 1..=last, one alert per
//! breach.

use super::{agent_dir_client, event};
use invigilator_proto::v1::{Event, EventBatch, telemetry_client::TelemetryClient};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Unacknowledged events an agent keeps before it stops making more (its spool, in memory).
const MAX_UNACKED: usize = 50_000;
const MAX_BATCH: usize = 500;

#[derive(Default)]
struct Totals {
    events: AtomicU64,
    breaches: AtomicU64,
    reconnections: AtomicU64,
    /// Longest time from a broken stream to the next acknowledgement, in ms.
    worst_resume_ms: AtomicU64,
}

pub async fn run(
    collector: &str,
    dir: &Path,
    agents: usize,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<()> {
    let totals = Arc::new(Totals::default());
    let per_agent = (rate / agents as u64).max(1);
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for a in 0..agents {
        let client = agent_dir_client(collector, dir, a)?;
        let totals = Arc::clone(&totals);
        tasks.push(tokio::spawn(agent(client, per_agent, until, totals)));
    }
    let mut unfinished = 0;
    for t in tasks {
        if !t.await? {
            unfinished += 1;
        }
    }
    println!(
        "fault: {agents} agents, {} events, {} breaches, {} reconnections, worst resumption {} ms, {unfinished} agents not fully acknowledged",
        totals.events.load(Ordering::Relaxed),
        totals.breaches.load(Ordering::Relaxed),
        totals.reconnections.load(Ordering::Relaxed),
        totals.worst_resume_ms.load(Ordering::Relaxed),
    );
    Ok(())
}

/// One simulated agent: makes `per_sec` events a second until `until`, then waits (at most a
/// minute) for the last to be acknowledged. True when everything was.
async fn agent(
    mut client: TelemetryClient<Channel>,
    per_sec: u64,
    until: Instant,
    totals: Arc<Totals>,
) -> bool {
    let mut unacked: VecDeque<Event> = VecDeque::new();
    let mut next = 1u64;
    let mut acked = 0u64;
    let mut broke: Option<Instant> = None;
    let give_up = until + Duration::from_secs(60);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let per_tick = per_sec.div_ceil(10);
    loop {
        if Instant::now() >= until && acked + 1 == next {
            return true;
        }
        if Instant::now() >= give_up {
            return false;
        }
        let (tx, rx) = mpsc::channel::<EventBatch>(4);
        let mut acks = match client.stream(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // Everything unacknowledged goes again: the collector stores each sequence once.
        let mut sent = acked;
        loop {
            // `unacked` holds acked+1 .. next-1, in order.
            let unsent = next - 1 - sent;
            tokio::select! {
                ack = acks.message() => match ack {
                    Ok(Some(ack)) => {
                        acked = acked.max(ack.up_to_seq);
                        while unacked.front().is_some_and(|e| e.seq <= acked) {
                            unacked.pop_front();
                        }
                        if let Some(at) = broke.take() {
                            let ms = at.elapsed().as_millis() as u64;
                            totals.worst_resume_ms.fetch_max(ms, Ordering::Relaxed);
                        }
                        if Instant::now() >= until && acked + 1 == next {
                            return true;
                        }
                    }
                    _ => break,
                },
                _ = tick.tick(), if Instant::now() < until && unacked.len() < MAX_UNACKED => {
                    for _ in 0..per_tick {
                        let breach = next.is_multiple_of(100);
                        unacked.push_back(event(next, next, breach));
                        totals.events.fetch_add(1, Ordering::Relaxed);
                        if breach {
                            totals.breaches.fetch_add(1, Ordering::Relaxed);
                        }
                        next += 1;
                    }
                }
                permit = tx.reserve(), if unsent > 0 => {
                    let Ok(permit) = permit else { break };
                    let events: Vec<Event> = unacked
                        .iter()
                        .skip((sent - acked) as usize)
                        .take(MAX_BATCH)
                        .cloned()
                        .collect();
                    sent = events.last().map_or(sent, |e| e.seq);
                    permit.send(EventBatch { events });
                }
                _ = tokio::time::sleep_until(give_up.into()) => return false,
            }
        }
        broke.get_or_insert_with(Instant::now);
        totals.reconnections.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
