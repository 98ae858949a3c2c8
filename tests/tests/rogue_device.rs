//! A rogue or broken enrolled device against the real collector (issue 13, findings 4 and 11,
//! and the stalled-agent alert): it must not starve other agents, must be held to its quotas
//! without anything being dropped, and cannot place its events outside the accepted time window.

use invigilator_proto::v1::{
    Event, EventBatch, HeartbeatRequest, telemetry_client::TelemetryClient,
};
use invigilator_tests::flood::{exec, heavy_batch};
use invigilator_tests::{Agent, Collector, now_us, telemetry, wait_for};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// One flooding stream: opens, sends heavy batches as fast as the transport takes them, and
/// opens again when the collector ends it. Returns the collector's error messages.
async fn flood(
    mut client: TelemetryClient<Channel>,
    base: u64,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let mut errors = Vec::new();
    let mut next = base;
    while !stop.load(Ordering::Relaxed) {
        let (tx, rx) = mpsc::channel(2);
        let stop_sending = stop.clone();
        let mut seq = next;
        let sender = tokio::spawn(async move {
            while !stop_sending.load(Ordering::Relaxed) {
                if tx.send(heavy_batch(seq)).await.is_err() {
                    break;
                }
                seq += 100;
            }
            seq
        });
        match client.stream(ReceiverStream::new(rx)).await {
            Ok(acks) => {
                let mut acks = acks.into_inner();
                loop {
                    tokio::select! {
                        m = acks.message() => match m {
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(s) => { errors.push(s.message().to_owned()); break; }
                        },
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {
                            if stop.load(Ordering::Relaxed) { break; }
                        }
                    }
                }
            }
            Err(s) => errors.push(s.message().to_owned()),
        }
        sender.abort();
        next = sender.await.unwrap_or(next + 1_000_000);
        next += 1_000;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    errors
}

/// An honest agent's stream: a small batch every 100 ms; returns each batch's time to its ack.
async fn honest(mut client: TelemetryClient<Channel>, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let (tx, rx) = mpsc::channel(16);
    let mut acks = client
        .stream(ReceiverStream::new(rx))
        .await
        .expect("the honest agent's stream opens")
        .into_inner();
    let mut latencies = Vec::new();
    let mut seq = 1;
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let batch = EventBatch {
            events: (0..20).map(|i| exec(seq + i, vec!["ls".into()])).collect(),
        };
        seq += 20;
        tx.send(batch).await.unwrap();
        let ack = tokio::time::timeout(Duration::from_secs(30), acks.message())
            .await
            .expect("an acknowledgement within 30 s under the flood")
            .expect("the honest stream stays up")
            .expect("an ack");
        assert_eq!(ack.up_to_seq, seq - 1);
        latencies.push(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies
}

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024
}

#[test]
fn a_flooding_device_is_held_to_its_quota_while_others_are_served() {
    let c = Collector::start(
        "[quotas]\nrate_mib_per_minute = 60\nburst_mib = 4\ndaily_mib = 8\n\
         [ingest]\nmax_pending_mib = 16\nmax_pending_mib_per_agent = 4\n",
    );
    let rogue = Agent::enroll(&c, "");
    let quiet = Agent::enroll(&c, "");
    let mut real = Agent::enroll(&c, "");
    real.start();
    real.wait_ready();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = (0..16u64)
        .map(|k| {
            let client = rt.block_on(async { telemetry(&c, &rogue) });
            rt.spawn(flood(client, 1 + k * 1_000_000_000, stop.clone()))
        })
        .collect();
    let honest_run = {
        let client = rt.block_on(async { telemetry(&c, &quiet) });
        rt.spawn(honest(client, stop.clone()))
    };

    // Under the flood, a real device's real alert still arrives ...
    std::thread::sleep(Duration::from_secs(3));
    invigilator_tests::run_as("tor");
    wait_for(
        Duration::from_secs(30),
        "the real agent's tor alert",
        || {
            c.alerts()
                .iter()
                .any(|a| {
                    a["rule"] == "circumvention.tor" && a["agent_id"] == real.agent_id.as_str()
                })
                .then_some(())
        },
    );
    // ... and the flooding device is told, once per limit, that it hit its quota.
    let quota = wait_for(
        Duration::from_secs(60),
        "the rogue's daily quota alert",
        || {
            let alerts: Vec<_> = c
                .alerts()
                .into_iter()
                .filter(|a| a["rule"] == "agent.quota" && a["agent_id"] == rogue.agent_id.as_str())
                .collect();
            alerts
                .iter()
                .any(|a| a["summary"].as_str().unwrap_or("").contains("daily quota"))
                .then_some(alerts)
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<String> = floods
        .into_iter()
        .flat_map(|f| rt.block_on(f).unwrap())
        .collect();
    let latencies = rt.block_on(honest_run).unwrap();

    assert!(
        quota.len() <= 3,
        "one alert per limit, aggregated: {quota:#?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("newer event stream")),
        "parallel streams replace each other: {errors:?}"
    );
    assert!(latencies.len() >= 10, "{latencies:?}");
    let worst = latencies.iter().max().unwrap();
    assert!(
        *worst < Duration::from_secs(5),
        "the honest agent kept being acknowledged (worst {worst:?})"
    );

    // What the rogue got stored stays near its daily allowance: what it sent past it is held
    // unacknowledged on its side, not written.
    let db = rusqlite::Connection::open(c.data_dir().join("invigilator.db")).unwrap();
    let stored: i64 = db
        .query_row(
            "SELECT COALESCE(sum(length(payload)), 0) FROM events WHERE agent_id = ?1",
            [&rogue.agent_id],
            |r| r.get(0),
        )
        .unwrap();
    let mib = 1024 * 1024;
    assert!(
        stored >= 4 * mib,
        "the rogue was served up to its quota: {stored}"
    );
    assert!(
        stored <= 8 * mib + 4 * mib + 2 * mib,
        "daily allowance + one agent's pending share + one batch: {stored}"
    );
    let rss = rss_mib(c.pid().unwrap());
    eprintln!(
        "flood: {} honest acks, worst {worst:?}; rogue stored {stored} bytes; {} stream errors; collector peak RSS {rss} MiB; quota alerts {}",
        latencies.len(),
        errors.len(),
        quota.len()
    );
    assert!(rss < 512, "collector peak RSS {rss} MiB");
}

#[test]
fn a_device_clock_cannot_place_events_outside_the_window() {
    let c = Collector::start("[ingest]\noffline_allowance = \"2days\"\nclock_skew = \"1m\"\n");
    let a = Agent::enroll(&c, "");
    let now = now_us();
    let day = 86_400_000_000i64;
    let events = vec![
        Event {
            observed_at_us: i64::MAX,
            ..exec(1, vec!["future".into()])
        },
        Event {
            observed_at_us: 1,
            ..exec(2, vec!["ancient".into()])
        },
        Event {
            observed_at_us: now - day,
            device_time_us: 12345, // only the collector may set it
            ..exec(3, vec!["yesterday".into()])
        },
    ];
    invigilator_tests::stream_batches(&c, &a, vec![events]);
    let stored = c.events("process");
    assert_eq!(stored.len(), 3, "{stored:#?}");
    let time = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp_micros()
    };
    let by_arg = |arg: &str| {
        stored
            .iter()
            .find(|e| e["argv"][0] == arg)
            .unwrap_or_else(|| panic!("{arg}: {stored:#?}"))
    };
    let future = by_arg("future");
    assert!((time(&future["observed_at"]) - (now + 60_000_000)).abs() < 30_000_000);
    assert!(
        future["device_time"]
            .as_str()
            .unwrap()
            .contains("no representable date"),
        "{future}"
    );
    let ancient = by_arg("ancient");
    assert!((time(&ancient["observed_at"]) - (now - 2 * day)).abs() < 30_000_000);
    assert_eq!(ancient["device_time"], "1970-01-01T00:00:00.000001Z");
    let yesterday = by_arg("yesterday");
    assert!((time(&yesterday["observed_at"]) - (now - day)).abs() < 1_000);
    assert!(yesterday.get("device_time").is_none(), "{yesterday}");
}

#[test]
fn an_agent_heard_from_but_not_delivering_raises_a_stalled_alert() {
    let c = Collector::start(
        "[agents]\nsilent_after = \"1h\"\nsilent_check_interval = \"1s\"\nstalled_after = \"3s\"\n",
    );
    let stuck = Agent::enroll(&c, "");
    let fine = Agent::enroll(&c, "");
    invigilator_tests::stream_batches(&c, &fine, vec![vec![exec(1, vec!["ok".into()])]]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    rt.block_on(async {
        let (mut s, mut f) = (telemetry(&c, &stuck), telemetry(&c, &fine));
        // Both keep heartbeating; only `stuck` has events waiting that never arrive.
        while started.elapsed() < Duration::from_secs(8) {
            for (client, depth, last_seq) in [(&mut s, 40, 40), (&mut f, 0, 1)] {
                client
                    .heartbeat(HeartbeatRequest {
                        hostname: "pc".into(),
                        spool_depth: depth,
                        last_seq,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let stalled: Vec<_> = wait_for(Duration::from_secs(20), "the stalled alert", || {
        let a: Vec<_> = c
            .alerts()
            .into_iter()
            .filter(|a| a["rule"] == "agent.stalled")
            .collect();
        (!a.is_empty()).then_some(a)
    });
    assert_eq!(stalled.len(), 1, "{stalled:#?}");
    assert_eq!(stalled[0]["agent_id"], stuck.agent_id.as_str());
    assert!(
        stalled[0]["summary"]
            .as_str()
            .unwrap()
            .contains("40 waiting"),
        "{}",
        stalled[0]
    );
}
