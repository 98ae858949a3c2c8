//! `loadgen flood`: finding 4 of issue 13 as a benchmark. Agent 0 floods the collector from many
//! parallel streams with messages as large as the protocol allows; agents 1..=N behave like
//! ordinary devices (a small batch every 200 ms) and measure how long their acknowledgements take.

use super::agent_dir_client;
use hdrhistogram::Histogram;
use invigilator_proto::v1::EventBatch;
use invigilator_tests::flood::{exec, heavy_batch as heavy};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Default)]
struct RogueCounts {
    acked_events: AtomicU64,
    opened: AtomicU64,
    errors: AtomicU64,
}

pub async fn run(
    collector: &str,
    dir: &Path,
    streams: usize,
    honest: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let rogue = Arc::new(RogueCounts::default());
    let base = super::seq_base();
    let mut floods = Vec::new();
    for k in 0..streams {
        let mut client = agent_dir_client(collector, dir, 0)?;
        let (stop, rogue) = (stop.clone(), rogue.clone());
        let mut next = base + k as u64 * 1_000_000_000;
        floods.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (tx, rx) = mpsc::channel(2);
                let first = next;
                let sender = tokio::spawn(async move {
                    let mut seq = first;
                    while tx.send(heavy(seq)).await.is_ok() {
                        seq += 100;
                    }
                });
                next += 10_000_000;
                rogue.opened.fetch_add(1, Ordering::Relaxed);
                match client.stream(ReceiverStream::new(rx)).await {
                    Ok(acks) => {
                        let mut acks = acks.into_inner();
                        loop {
                            match tokio::time::timeout(Duration::from_millis(500), acks.message())
                                .await
                            {
                                Ok(Ok(Some(a))) => {
                                    rogue
                                        .acked_events
                                        .fetch_add(a.stored as u64, Ordering::Relaxed);
                                }
                                Ok(Ok(None)) => break,
                                Ok(Err(_)) => {
                                    rogue.errors.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                                Err(_) if stop.load(Ordering::Relaxed) => break,
                                Err(_) => {}
                            }
                        }
                    }
                    Err(_) => {
                        rogue.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                sender.abort();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    let mut quiet = Vec::new();
    for i in 1..=honest {
        let mut client = agent_dir_client(collector, dir, i)?;
        let stop = stop.clone();
        quiet.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).unwrap();
            let (tx, rx) = mpsc::channel(4);
            let mut acks = client.stream(ReceiverStream::new(rx)).await?.into_inner();
            let mut seq = super::seq_base();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let events = (0..20).map(|j| exec(seq + j, vec!["ls".into()])).collect();
                seq += 20;
                tx.send(EventBatch { events }).await?;
                match acks.message().await? {
                    Some(a) if a.up_to_seq == seq - 1 => {}
                    other => anyhow::bail!("honest agent {i}: unexpected {other:?}"),
                }
                hist.record(sent.elapsed().as_micros() as u64)?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok::<_, anyhow::Error>(hist)
        }));
    }

    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new(3).unwrap();
    for q in quiet {
        all.add(q.await??)?;
    }
    for f in floods {
        f.abort();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "flood: {streams} streams of ~3.9 MB messages from one agent for {seconds} s; \
         rogue: {} streams opened, {} refused or ended, {} events acknowledged; \
         {honest} honest agents: {} acks, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        rogue.opened.load(Ordering::Relaxed),
        rogue.errors.load(Ordering::Relaxed),
        rogue.acked_events.load(Ordering::Relaxed),
        all.len(),
        ms(all.value_at_quantile(0.5)),
        ms(all.value_at_quantile(0.99)),
        ms(all.max()),
    );
    Ok(())
}
