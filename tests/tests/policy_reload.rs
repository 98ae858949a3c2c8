//! Editing the policy while agents stream: the collector reloads it between two commits, so no
//! event is lost, duplicated or re-ordered, and every alert names the version that raised it.

use invigilator_proto::v1::{Event, ProcessExec, event::Kind};
use invigilator_tests::{Agent, Collector, assert_exactly_once, now_us, stream_batches, wait_for};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const EDITS: u64 = 4;
const BATCHES_PER_ROUND: u64 = 4;
const BATCH: u64 = 250;

fn tor(seq: u64) -> Event {
    Event {
        truncated: Vec::new(),
        device_time_us: 0,
        seq,
        observed_at_us: now_us(),
        hostname: "ict-07".into(),
        user: "y5smith".into(),
        kind: Some(Kind::Process(ProcessExec {
            pid: seq as u32,
            exe: "/usr/bin/tor".into(),
            name: "tor".into(),
            ..Default::default()
        })),
    }
}

/// Writes the policy the way editors do: a new file renamed over the old one.
fn write_policy(c: &Collector, text: &str) {
    let tmp = c.data_dir().join(".policy.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, c.data_dir().join("policy.toml")).unwrap();
}

fn declared(version: &str) -> &str {
    version.split('#').next().unwrap()
}

#[test]
fn policy_edits_under_load_lose_duplicate_and_reorder_nothing() {
    // Each round opens a new stream per agent, far more than an agent that reconnects with
    // back-off would: the stream quota is not what this test is about.
    let mut c = Collector::start("[quotas]\nstreams_per_minute = 100000\n");
    // Every matching event raises its own alert, so alerts can be counted against events.
    c.edit_policy(|p| {
        p.replace("aggregate_window = \"1h\"", "aggregate_window = \"0s\"")
            .replacen("version = \"", "version = \"v0-", 1)
    });
    let base = std::fs::read_to_string(c.data_dir().join("policy.toml")).unwrap();
    let agents: Vec<Agent> = (0..2)
        .map(|_| Agent::enroll_with(&c, &c.token("pupils-ks2", "1h", 1), ""))
        .collect();

    // Agents stream until the editor has made its edits, each one given time to be picked up.
    let done = AtomicBool::new(false);
    let sent: Vec<u64> = std::thread::scope(|s| {
        let streams: Vec<_> = agents
            .iter()
            .map(|agent| {
                let (c, done) = (&c, &done);
                s.spawn(move || {
                    let mut seq = 0;
                    while !done.load(Ordering::SeqCst) {
                        let batches = (0..BATCHES_PER_ROUND)
                            .map(|_| {
                                (0..BATCH)
                                    .map(|_| {
                                        seq += 1;
                                        tor(seq)
                                    })
                                    .collect()
                            })
                            .collect();
                        stream_batches(c, agent, batches);
                    }
                    seq
                })
            })
            .collect();
        for n in 1..=EDITS {
            std::thread::sleep(Duration::from_millis(700));
            write_policy(
                &c,
                &base.replacen("version = \"v0-", &format!("version = \"v{n}-"), 1),
            );
        }
        std::thread::sleep(Duration::from_millis(700));
        done.store(true, Ordering::SeqCst);
        streams.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let total: u64 = sent.iter().sum();
    let alerts = wait_for(Duration::from_secs(30), "every alert", || {
        let a = c.alerts();
        (a.len() as u64 >= total).then_some(a)
    });
    assert_eq!(alerts.len() as u64, total, "one alert per event, no more");

    let mut versions_seen = std::collections::BTreeSet::new();
    for (agent, &per_agent) in agents.iter().zip(&sent) {
        let id = &agent.agent_id;
        assert_exactly_once(&c.stored_seqs(id), per_agent);
        // In event order, versions only move forward: a reload never lands inside a commit
        // and never makes a later event be judged by an older policy.
        let mut mine: Vec<(u64, u64)> = alerts
            .iter()
            .filter(|a| a["agent_id"] == id.as_str())
            .map(|a| {
                let v = declared(a["policy_version"].as_str().unwrap());
                let n: u64 = v
                    .trim_start_matches('v')
                    .split('-')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                (a["event_seq"].as_u64().unwrap(), n)
            })
            .collect();
        mine.sort();
        let seqs: Vec<u64> = mine.iter().map(|m| m.0).collect();
        assert_exactly_once(&seqs, per_agent);
        assert!(
            mine.windows(2).all(|w| w[0].1 <= w[1].1),
            "a version went backwards"
        );
        versions_seen.extend(mine.iter().map(|m| m.1));
    }
    assert!(
        versions_seen.len() as u64 > EDITS,
        "{EDITS} edits during the load, but alerts name only versions {versions_seen:?}: the reloads did not happen under load"
    );
    assert!(c.log().contains("policy reloaded"), "{}", c.log());
}
