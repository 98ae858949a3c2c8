//! `invigilator-loadgen`: simulates many agents against a running collector, for BENCHMARKS.md.
//!
//!   loadgen enroll      --collector URL --token T --agents N --dir D   # enrols N simulated agents
//!   loadgen ingest      --collector URL --dir D --agents N --events E  # max acknowledged events/s
//!   loadgen latency     --collector URL --dir D --agents N --rate R --seconds S
//!   loadgen connections --collector URL --dir D --agents N --hold S --sources K
//!   loadgen flood       --collector URL --dir D --streams K --honest N --seconds S
//!   loadgen fault       --collector URL[,URL..] --dir D --agents N --rate R --seconds S
//!
//! Every simulated agent is a real enrolled identity with its own key and certificate, on its
//! own mTLS connection, speaking the same protocol as `invigilator-agent`.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use invigilator_agent::identity::StatePaths;
use invigilator_agent::tls;
use invigilator_proto::v1::{
    Event, EventBatch, HeartbeatRequest, ProcessExec, event::Kind,
    telemetry_client::TelemetryClient,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::transport::Channel;

#[path = "loadgen/fault.rs"]
mod fault;
#[path = "loadgen/flood.rs"]
mod flood;

#[derive(Parser)]
#[command(
    name = "invigilator-loadgen",
    about = "Simulated agents for benchmarks"
)]
struct Cli {
    /// https://HOST:PORT of the collector; several, comma-separated, for collectors sharing a
    /// database (each simulated agent starts at a random one and fails over as agents do).
    #[arg(long, global = true, default_value = "https://localhost:50051")]
    collector: String,
    /// Directory holding the simulated agents' state directories.
    #[arg(long, global = true, default_value = "/tmp/invigilator-loadgen")]
    dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Enrol N simulated agents (the token needs N uses).
    Enroll {
        #[arg(long)]
        token: String,
        #[arg(long)]
        agents: usize,
    },
    /// Each agent streams E events as fast as acknowledgements allow.
    Ingest {
        #[arg(long)]
        agents: usize,
        #[arg(long)]
        events: u64,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        #[arg(long, default_value_t = 4)]
        window: usize,
    },
    /// A steady total rate; reports send-to-acknowledgement latency of batches whose events
    /// raise alerts (the acknowledgement follows the commit of the events and their alerts).
    Latency {
        #[arg(long)]
        agents: usize,
        /// Events per second, all agents together.
        #[arg(long)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Batches per second per agent.
        #[arg(long, default_value_t = 10)]
        batches_per_sec: u64,
    },
    /// Opens N agent connections (heartbeat + an open event stream each) and holds them.
    Connections {
        #[arg(long)]
        agents: usize,
        /// The first of the enrolled agents to use (several load generators, each with its
        /// own share of the agents, stay within one process's open files).
        #[arg(long, default_value_t = 0)]
        first: usize,
        #[arg(long, default_value_t = 30)]
        hold: u64,
        /// Spread connections over 127.0.0.1 .. 127.0.0.K as source addresses.
        #[arg(long, default_value_t = 8)]
        sources: u8,
    },
    /// Agents that resend what was not acknowledged after a broken stream, numbering from 1
    /// (use freshly enrolled agents), while collectors are killed under them.
    Fault {
        #[arg(long)]
        agents: usize,
        /// Events per second, all agents together.
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Agent 0 floods from K parallel streams of maximum-size messages; agents 1..=N send
    /// ordinary batches and report their acknowledgement latency.
    Flood {
        #[arg(long, default_value_t = 32)]
        streams: usize,
        #[arg(long, default_value_t = 4)]
        honest: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Enroll { token, agents } => enroll(&cli.collector, &token, &cli.dir, agents).await,
            Cmd::Ingest {
                agents,
                events,
                batch,
                window,
            } => ingest(&cli.collector, &cli.dir, agents, events, batch, window).await,
            Cmd::Latency {
                agents,
                rate,
                seconds,
                batches_per_sec,
            } => {
                latency(
                    &cli.collector,
                    &cli.dir,
                    agents,
                    rate,
                    seconds,
                    batches_per_sec,
                )
                .await
            }
            Cmd::Connections {
                agents,
                first,
                hold,
                sources,
            } => {
                connections(
                    &cli.collector,
                    &cli.dir,
                    first..first + agents,
                    hold,
                    sources,
                )
                .await
            }
            Cmd::Fault {
                agents,
                rate,
                seconds,
            } => fault::run(&cli.collector, &cli.dir, agents, rate, seconds).await,
            Cmd::Flood {
                streams,
                honest,
                seconds,
            } => flood::run(&cli.collector, &cli.dir, streams, honest, seconds).await,
        }
    })
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn agent_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("agent-{i:05}"))
}

async fn enroll(collector: &str, token: &str, dir: &Path, n: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in 0..n {
        let state = agent_dir(dir, i);
        if state.join("agent.toml").exists() {
            continue;
        }
        let (c, t, sem) = (collectors(collector)?, token.to_owned(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            invigilator_agent::enroll::run(&c, &t, &state).await
        }));
    }
    let count = tasks.len();
    for t in tasks {
        t.await??;
    }
    println!("enrolled {count} agents in {:.1?}", start.elapsed());
    Ok(())
}

fn agent_dir_client(
    collector: &str,
    dir: &Path,
    i: usize,
) -> anyhow::Result<TelemetryClient<Channel>> {
    client(collector, dir, i, None)
}

fn client(
    collector: &str,
    dir: &Path,
    i: usize,
    local: Option<std::net::IpAddr>,
) -> anyhow::Result<TelemetryClient<Channel>> {
    let state = agent_dir(dir, i);
    let cfg = tls::mtls_config(&StatePaths::new(&state))
        .with_context(|| format!("agent {}", state.display()))?;
    Ok(
        TelemetryClient::new(tls::channel_from(&collectors(collector)?, cfg, local)?)
            .max_encoding_message_size(invigilator_proto::MAX_MESSAGE_BYTES),
    )
}

fn collectors(list: &str) -> anyhow::Result<invigilator_agent::dial::Collectors> {
    Ok(invigilator_agent::dial::Collectors::new(
        list.split(',').map(str::to_owned),
    )?)
}

/// Sequence numbers above every earlier run's, so repeated runs are not deduplicated away.
fn seq_base() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn now_us() -> i64 {
    seq_base() as i64
}

fn event(seq: u64, i: u64, alert: bool) -> Event {
    let (exe, name) = if alert {
        ("/usr/bin/tor", "tor")
    } else {
        ("/usr/bin/python3", "python3")
    };
    Event {
        seq,
        observed_at_us: now_us(),
        hostname: "loadgen-pc".into(),
        user: "pupil042".into(),
        kind: Some(Kind::Process(ProcessExec {
            pid: 1000 + (i % 30000) as u32,
            ppid: 1,
            exe: exe.into(),
            name: name.into(),
            argv: vec![name.into(), "--worksheet".into(), format!("maths-{i}.py")],
            uid: Some(1000),
            parent_name: "bash".into(),
            unavailable: vec![],
            source: "netlink".into(),
            argv_bytes: 0,
            ..Default::default()
        })),
        truncated: vec![],
        device_time_us: 0,
    }
}

async fn ingest(
    collector: &str,
    dir: &Path,
    agents: usize,
    events: u64,
    batch: usize,
    window: usize,
) -> anyhow::Result<()> {
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..agents {
        let mut c = client(collector, dir, a, None)?;
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let base = seq_base();
            let (tx, rx) = mpsc::channel(window);
            let mut acks = c
                .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            let sender = tokio::spawn(async move {
                let mut sent = 0u64;
                while sent < events {
                    let n = (events - sent).min(batch as u64);
                    let evs = (sent..sent + n)
                        .map(|i| event(base + i, i, i.is_multiple_of(100)))
                        .collect();
                    if tx.send(EventBatch { events: evs }).await.is_err() {
                        break;
                    }
                    sent += n;
                }
            });
            let last = base + events - 1;
            while let Some(ack) = acks.message().await? {
                acked.fetch_add((ack.stored + ack.duplicates) as u64, Ordering::Relaxed);
                if ack.up_to_seq >= last {
                    break;
                }
            }
            sender.abort();
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = acked.load(Ordering::Relaxed);
    println!(
        "ingest: {agents} agents x {events} events, batch {batch}, window {window}: {total} acknowledged in {secs:.2} s = {:.0} events/s",
        total as f64 / secs
    );
    Ok(())
}

async fn latency(
    collector: &str,
    dir: &Path,
    agents: usize,
    rate: u64,
    seconds: u64,
    bps: u64,
) -> anyhow::Result<()> {
    let per_batch = (rate / agents as u64 / bps).max(1);
    let hist = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let all = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let mut tasks = Vec::new();
    for a in 0..agents {
        let mut c = client(collector, dir, a, None)?;
        let (hist, all) = (hist.clone(), all.clone());
        tasks.push(tokio::spawn(async move {
            let base = seq_base();
            let (tx, rx) = mpsc::channel::<EventBatch>(64);
            let mut acks = c
                .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            let sent_at = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::<(
                u64,
                Instant,
                bool,
            )>::new()));
            let sent_at2 = sent_at.clone();
            let sender = tokio::spawn(async move {
                // Spread agents' ticks over the interval so load is even.
                let period = Duration::from_micros(1_000_000 / bps);
                tokio::time::sleep(period.mul_f64(a as f64 / agents as f64)).await;
                let mut tick = tokio::time::interval(period);
                let end = Instant::now() + Duration::from_secs(seconds);
                let mut next = 0u64;
                while Instant::now() < end {
                    tick.tick().await;
                    // One event in a hundred matches a policy rule and raises an alert.
                    let alerting = (next / per_batch).is_multiple_of(10);
                    let evs: Vec<Event> = (next..next + per_batch)
                        .map(|i| event(base + i, i, alerting && i == next))
                        .collect();
                    next += per_batch;
                    sent_at2
                        .lock()
                        .unwrap()
                        .push_back((base + next - 1, Instant::now(), alerting));
                    if tx.send(EventBatch { events: evs }).await.is_err() {
                        break;
                    }
                }
            });
            while let Some(ack) = acks.message().await? {
                let now = Instant::now();
                let mut q = sent_at.lock().unwrap();
                while let Some(&(seq, t, alerting)) = q.front() {
                    if seq > ack.up_to_seq {
                        break;
                    }
                    q.pop_front();
                    let us = now.duration_since(t).as_micros() as u64;
                    all.lock().unwrap().record(us.max(1)).ok();
                    if alerting {
                        hist.lock().unwrap().record(us.max(1)).ok();
                    }
                }
                if sender.is_finished() && q.is_empty() {
                    break;
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let report = |name: &str, h: &Histogram<u64>| {
        println!(
            "{name}: n={} p50={:.1} ms p90={:.1} ms p99={:.1} ms max={:.1} ms",
            h.len(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.9) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        )
    };
    println!(
        "latency: {rate} events/s over {agents} agents ({per_batch} events per batch, {bps} batches/s each), {seconds} s"
    );
    report(
        "event-to-alert (batches raising an alert, send -> committed ack)",
        &hist.lock().unwrap(),
    );
    report("all batches (send -> committed ack)", &all.lock().unwrap());
    Ok(())
}

async fn connections(
    collector: &str,
    dir: &Path,
    range: std::ops::Range<usize>,
    hold: u64,
    sources: u8,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let connected = Arc::new(AtomicU64::new(0));
    let sem = Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = Vec::new();
    let agents = range.len();
    for a in range {
        let local = std::net::IpAddr::V4(std::net::Ipv4Addr::new(
            127,
            0,
            0,
            1 + (a % sources.max(1) as usize) as u8,
        ));
        let mut c = client(collector, dir, a, Some(local))?;
        let (connected, sem) = (connected.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.unwrap();
            c.heartbeat(HeartbeatRequest {
                hostname: format!("loadgen-{a}"),
                ..Default::default()
            })
            .await?;
            let (tx, rx) = mpsc::channel(1);
            let mut acks = c
                .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            tx.send(EventBatch {
                events: vec![event(seq_base(), a as u64, false)],
            })
            .await?;
            acks.message().await?;
            drop(permit);
            connected.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(hold)).await;
            drop(tx);
            Ok::<_, anyhow::Error>(acks)
        }));
    }
    let reporter = {
        let connected = connected.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                eprintln!(
                    "{:>6.1?}: {} connected",
                    start.elapsed(),
                    connected.load(Ordering::Relaxed)
                );
            }
        })
    };
    let mut failures = 0;
    for t in tasks {
        if let Err(e) = t.await? {
            failures += 1;
            if failures <= 3 {
                eprintln!("connection failed: {e:#}");
            }
        }
    }
    reporter.abort();
    println!(
        "connections: {} of {agents} agents connected and held {hold} s ({failures} failed), from {sources} source addresses",
        connected.load(Ordering::Relaxed)
    );
    Ok(())
}
