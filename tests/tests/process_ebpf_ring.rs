//! An undersized eBPF ring buffer forced to drop: every exec the kernel side saw is either
//! delivered as an event or counted as dropped and reported in a gap event with that count,
//! exactly. Alone in its test binary, so no other test's programs start while it counts.
//!
//! The agent is stopped (SIGSTOP) while the storm runs: a one-page ring on a quiet machine
//! can be drained as fast as it fills (CI saw 8,008 execs and no drop), and a reader that is
//! descheduled, swapped or paused is exactly what the accounting has to survive.
//!
//! Real parts: this kernel's `sched_process_exec` tracepoint and BPF ring buffer, bash.

use invigilator_proto::v1::event::Kind;
use invigilator_tests::{Agent, Collector, wait_for};
use std::process::Command;
use std::time::Duration;

#[test]
fn an_undersized_ring_loses_only_what_it_counts_and_reports() {
    let c = Collector::start("");
    // One page: a few dozen records.
    let mut a = Agent::enroll(
        &c,
        "[uplink]\nmax_batch = 1000\nwindow = 8\nheartbeat_interval = \"1s\"\n\n\
         [browsing]\nenabled = false\n\n[usb]\nenabled = false\n\n\
         [process]\nring_buffer_bytes = 4096\n",
    );
    a.start();
    a.wait_ready();
    assert!(a.log().contains("process_source=\"ebpf\""), "{}", a.log());

    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let agent = Pid::from_raw(a.pid().unwrap() as i32);
    kill(agent, Signal::SIGSTOP).unwrap();
    let shells: Vec<_> = (0..4)
        .map(|_| {
            Command::new("bash")
                .arg("-c")
                .arg("for i in $(seq 2000); do /bin/true & done; wait")
                .spawn()
                .unwrap()
        })
        .collect();
    for mut s in shells {
        assert!(s.wait().unwrap().success());
    }
    kill(agent, Signal::SIGCONT).unwrap();

    // Once quiet: seen (the kernel side's count, from the latest heartbeat) equals the eBPF
    // events stored plus the drops, and the gaps carry exactly the drops. Read from the
    // database directly: the CLI would be one more program started while counting.
    let db = rusqlite::Connection::open(c.data_dir().join("invigilator.db")).unwrap();
    let mut last = (0, 0, 0, 0);
    let balanced = wait_for(Duration::from_secs(60), "the counts to balance", || {
        let (seen, dropped): (i64, i64) = db
            .query_row(
                "SELECT process_seen, process_dropped FROM agents WHERE agent_id = ?1",
                [&a.agent_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok()?;
        let events = c.stored_events(&a.agent_id);
        let delivered = events
            .iter()
            .filter(|e| matches!(&e.kind, Some(Kind::Process(p)) if p.source == "ebpf"))
            .count() as u64;
        let gap_lost: u64 = events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(Kind::Gap(g)) if g.source == "process" => Some(g.lost),
                _ => None,
            })
            .sum();
        last = (seen as u64, dropped as u64, delivered, gap_lost);
        if last != (0, 0, 0, 0) {
            eprintln!("seen {seen}, dropped {dropped}, delivered {delivered}, gaps {gap_lost}");
        }
        let (seen, dropped) = (seen as u64, dropped as u64);
        (seen >= 8000 && seen == delivered + dropped && gap_lost == dropped).then_some(last)
    });
    let (seen, dropped, delivered, gap_lost) = balanced;
    println!("seen {seen} = delivered {delivered} + dropped {dropped}; gaps lost {gap_lost}");
    assert!(dropped > 0, "a one-page ring was expected to overflow");
    let gap = c
        .stored_events(&a.agent_id)
        .into_iter()
        .find_map(|e| match e.kind {
            Some(Kind::Gap(g)) if g.source == "process" => Some(g),
            _ => None,
        })
        .unwrap();
    assert!(gap.reason.contains("ring_buffer_bytes"), "{gap:?}");
}
