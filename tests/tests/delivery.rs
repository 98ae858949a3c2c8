//! Delivery guarantees with real processes: every exec captured, nothing lost or duplicated
//! across `kill -9` of either side, and spooled events delivered after an outage.

use invigilator_tests::{Agent, Collector, assert_exactly_once, renamed_sleep, wait_for};
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FAST: &str =
    "[uplink]\nmax_batch = 500\nwindow = 4\nheartbeat_interval = \"1s\"\nreconnect_max = \"2s\"\n";

fn started_agent(c: &Collector) -> Agent {
    let mut a = Agent::enroll(c, FAST);
    a.start();
    a.wait_ready();
    assert!(
        a.log().contains("process_source=\"ebpf\""),
        "the eBPF exec source needs root (CAP_BPF); these tests must run as root:\n{}",
        a.log()
    );
    a
}

/// `n` runs of /bin/true from a shell loop, in the background.
fn exec_storm(n: u32) -> Child {
    Command::new("bash")
        .arg("-c")
        .arg(format!("for i in $(seq {n}); do /bin/true; done"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until the collector has everything the agent's spool ever numbered.
fn drained(c: &Collector, a: &Agent) -> (Vec<u64>, u64) {
    wait_for(
        Duration::from_secs(120),
        "the spool to drain into the collector",
        || {
            let last = a.spool_last_seq();
            let seqs = c.stored_seqs(&a.agent_id);
            (last > 0 && seqs.last() == Some(&last)).then_some((seqs, last))
        },
    )
}

#[test]
fn short_lived_processes_started_as_fast_as_a_script_can_are_all_captured() {
    let c = Collector::start("");
    let a = started_agent(&c);
    // Background jobs: the shell does not wait for one before starting the next.
    let out = Command::new("bash")
        .arg("-c")
        .arg("for i in $(seq 2000); do /bin/true & echo $!; done; wait")
        .output()
        .unwrap();
    let pids: HashSet<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2000);
    let need = 1998; // 99.9%
    let (seen, with_exe) = wait_for(Duration::from_secs(60), "the process events", || {
        let events = c.events("process");
        let mine: Vec<_> = events
            .iter()
            .filter(|e| pids.contains(&e["pid"].as_u64().unwrap_or(0)))
            .collect();
        let seen: HashSet<u64> = mine.iter().map(|e| e["pid"].as_u64().unwrap()).collect();
        let with_exe = mine.iter().filter(|e| e["exe"] == "/usr/bin/true").count();
        (seen.len() >= need).then_some((seen.len(), with_exe))
    });
    eprintln!("captured {seen} of 2000 execs; {with_exe} with the executable path resolved");
    drop(a);
}

#[test]
fn kill_9_of_the_agent_twenty_times_during_a_storm_loses_and_duplicates_nothing() {
    let c = Collector::start("");
    let mut a = started_agent(&c);
    let mut storm = exec_storm(10_000);
    let mut rng_state = 0x9e3779b97f4a7c15u64;
    for _ in 0..20 {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        std::thread::sleep(Duration::from_millis(150 + rng_state % 350));
        a.kill9();
        a.start();
    }
    storm.wait().unwrap();
    let (seqs, last) = drained(&c, &a);
    eprintln!("{} events stored across 20 agent kills", seqs.len());
    assert!(
        seqs.len() > 1000,
        "the storm produced too few events to mean anything: {}",
        seqs.len()
    );
    assert_exactly_once(&seqs, last);
}

#[test]
fn kill_9_of_the_collector_mid_ingest_loses_and_duplicates_nothing() {
    let mut c = Collector::start("");
    let a = started_agent(&c);
    let mut storm = exec_storm(6_000);
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(700));
        c.restart();
    }
    storm.wait().unwrap();
    let (seqs, last) = drained(&c, &a);
    assert!(seqs.len() > 1000, "{}", seqs.len());
    assert_exactly_once(&seqs, last);
}

#[test]
fn events_spooled_while_the_collector_is_down_arrive_when_it_returns() {
    let mut c = Collector::start("");
    let a = started_agent(&c);
    c.kill9();
    let dir = tempfile::tempdir().unwrap();
    // Long enough for /proc to be read, so the event names the program.
    let prog = renamed_sleep(dir.path(), "outage-marker-prog");
    for _ in 0..25 {
        Command::new(&prog).arg("0.05").status().unwrap();
    }
    std::thread::sleep(Duration::from_secs(3));
    let start = Instant::now();
    c.restart();
    let n = wait_for(
        Duration::from_secs(60),
        "spooled events after the outage",
        || {
            let n = c
                .events("process")
                .iter()
                .filter(|e| e["exe"].as_str() == prog.to_str())
                .count();
            (n == 25).then_some(n)
        },
    );
    eprintln!(
        "{n} spooled events delivered {:?} after the collector came back",
        start.elapsed()
    );
    let (seqs, last) = drained(&c, &a);
    assert_exactly_once(&seqs, last);
}
