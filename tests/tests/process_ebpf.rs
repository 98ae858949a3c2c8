//! The eBPF exec source through the real agent and collector: storms of programs too short for
//! /proc, each named with its executable, full command line and working directory; and every
//! reason it cannot run ending in the proc connector, with the reason logged and reported.
//!
//! Real parts: this kernel's BTF and `sched_process_exec` tracepoint (root, CAP_BPF), bash
//! starting `/bin/true` as background jobs, setpriv for a capability set without BPF. Kernel
//! age is checked by a unit test (exec_bpf.rs): this kernel cannot be made older.

use invigilator_proto::v1::event::Kind;
use invigilator_tests::{Agent, Collector, wait_for};
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const FAST: &str = "[uplink]\nmax_batch = 1000\nwindow = 8\nheartbeat_interval = \"1s\"\n\n\
                    [browsing]\nenabled = false\n\n[usb]\nenabled = false\n";

/// Starts `ways` shells at once, each running `per_way` `/bin/true <tag>-<way>-<i>` as
/// background jobs in `dir`; returns the markers.
fn storm(dir: &Path, tag: &str, ways: usize, per_way: usize) -> HashSet<String> {
    let shells: Vec<_> = (0..ways)
        .map(|w| {
            let script = format!(
                "cd '{}' && for i in $(seq {per_way}); do /bin/true {tag}-{w}-$i & done; wait",
                dir.display()
            );
            Command::new("bash").arg("-c").arg(script).spawn().unwrap()
        })
        .collect();
    for mut s in shells {
        assert!(s.wait().unwrap().success());
    }
    (0..ways)
        .flat_map(|w| (1..=per_way).map(move |i| format!("{tag}-{w}-{i}")))
        .collect()
}

/// Markers of the storm that reached the collector named in full: executable, both arguments
/// and the working directory, from the eBPF source.
fn named_in_full(c: &Collector, agent_id: &str, dir: &Path, tag: &str) -> HashSet<String> {
    let cwd = dir.canonicalize().unwrap();
    c.stored_events(agent_id)
        .into_iter()
        .filter_map(|e| match e.kind {
            Some(Kind::Process(p))
                if p.source == "ebpf"
                    && p.exe == "/usr/bin/true"
                    && p.argv.len() == 2
                    && p.argv[0] == "/bin/true"
                    && p.argv[1].starts_with(tag)
                    && Path::new(&p.cwd) == cwd =>
            {
                Some(p.argv[1].clone())
            }
            _ => None,
        })
        .collect()
}

/// Waits until every marker is named or none has arrived for 5 s; asserts at least 99.9%.
fn settle(c: &Collector, a: &Agent, dir: &Path, expected: &HashSet<String>, tag: &str) {
    let mut named = HashSet::new();
    let mut last_growth = std::time::Instant::now();
    while named.len() < expected.len() && last_growth.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(250));
        let now = named_in_full(c, &a.agent_id, dir, tag);
        if now.len() > named.len() {
            last_growth = std::time::Instant::now();
        }
        named = now;
    }
    println!("{tag}: named in full {} of {}", named.len(), expected.len());
    assert!(named.is_subset(expected));
    assert!(
        named.len() * 1000 >= expected.len() * 999,
        "only {} of {} named with exe, argv and cwd",
        named.len(),
        expected.len()
    );
}

fn ebpf_agent(c: &Collector, extra: &str) -> Agent {
    let mut a = Agent::enroll(c, &format!("{FAST}{extra}"));
    a.start();
    a.wait_ready();
    assert!(
        a.log().contains("process_source=\"ebpf\"") || a.log().contains("process_source=ebpf"),
        "the agent did not run the eBPF source:\n{}",
        a.log()
    );
    a
}

fn agent_row(c: &Collector, agent_id: &str) -> serde_json::Value {
    c.agents()
        .into_iter()
        .find(|a| a["agent_id"] == agent_id)
        .expect("the agent is listed")
}

#[test]
fn a_storm_of_two_thousand_background_programs_is_named_in_full() {
    let c = Collector::start("");
    let a = ebpf_agent(&c, "");
    let dir = tempfile::tempdir().unwrap();
    let expected = storm(dir.path(), "bg", 1, 2000);
    settle(&c, &a, dir.path(), &expected, "bg");
    // The heartbeat carries the kernel side's counters.
    let row = wait_for(Duration::from_secs(10), "counters in the heartbeat", || {
        let row = agent_row(&c, &a.agent_id);
        (row["process_stats"]["seen"].as_u64() >= Some(2000)).then_some(row)
    });
    assert_eq!(row["process_source"], "ebpf", "{row}");
    assert_eq!(row["process_fallback"], "", "{row}");
    assert_eq!(row["process_stats"]["dropped"], 0, "{row}");
}

#[test]
fn ten_thousand_programs_four_at_a_time_are_named_in_full() {
    let c = Collector::start("");
    let a = ebpf_agent(&c, "");
    let dir = tempfile::tempdir().unwrap();
    let expected = storm(dir.path(), "four", 4, 2500);
    settle(&c, &a, dir.path(), &expected, "four");
}

#[test]
fn a_long_command_line_and_a_deep_directory_arrive_marked_as_cut() {
    let c = Collector::start("");
    let a = ebpf_agent(&c, "");
    // 60 levels (the kernel side walks 48) and 20 KiB of arguments (it reads 8 KiB).
    let dir = tempfile::tempdir().unwrap();
    let mut deep = dir.path().to_path_buf();
    for i in 0..60 {
        deep.push(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    let long = "x".repeat(20 * 1024);
    let ran = Command::new("/bin/true")
        .arg("cut-marker")
        .arg(&long)
        .current_dir(&deep)
        .status()
        .unwrap();
    assert!(ran.success());
    let (event, p) = wait_for(Duration::from_secs(30), "the cut program", || {
        c.stored_events(&a.agent_id)
            .into_iter()
            .find_map(|e| match e.kind.clone() {
                Some(Kind::Process(p)) if p.argv.get(1).is_some_and(|m| m == "cut-marker") => {
                    Some((e, p))
                }
                _ => None,
            })
    });
    assert_eq!(p.source, "ebpf");
    assert_eq!(p.exe, "/usr/bin/true");
    // The full length is kept: both arguments, the program and their NULs.
    assert_eq!(p.argv_bytes, (10 + 11 + long.len() + 1) as u64, "{p:?}");
    assert!(
        event.truncated.contains(&"process.argv".to_owned()),
        "{event:?}"
    );
    assert!(
        event.truncated.contains(&"process.cwd".to_owned()),
        "{event:?}"
    );
    // What was kept of the directory is its deepest part.
    assert!(p.cwd.ends_with("/d58/d59"), "{}", p.cwd);
}

/// Each reason the eBPF source cannot run ends in the proc connector, with the reason in the
/// agent's log and in `agents list`.
#[test]
fn every_fallback_reason_ends_in_the_proc_connector_and_is_reported() {
    let c = Collector::start("");
    let dir = tempfile::tempdir().unwrap();
    let lockdown = dir.path().join("lockdown");
    std::fs::write(&lockdown, "none integrity [confidentiality]\n").unwrap();
    let cases: [(&str, String, Option<Vec<String>>); 3] = [
        (
            "no BTF",
            format!(
                "[process]\nbtf_path = \"{}\"\n",
                dir.path().join("vmlinux").display()
            ),
            None,
        ),
        (
            "confidentiality",
            format!("[process]\nlockdown_path = \"{}\"\n", lockdown.display()),
            None,
        ),
        (
            "loading the BPF program failed",
            String::new(),
            // Root, but without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN: the kernel refuses.
            Some(vec![
                "setpriv".into(),
                "--bounding-set=-bpf,-perfmon,-sys_admin".into(),
                "--inh-caps=-all".into(),
                "--".into(),
            ]),
        ),
    ];
    for (reason, settings, wrapper) in cases {
        let mut a = Agent::enroll(&c, &format!("{FAST}{settings}"));
        a.start_under(wrapper.as_deref().unwrap_or(&[]));
        a.wait_ready();
        let log = a.log();
        assert!(
            log.contains("process_source=\"netlink\"") || log.contains("process_source=netlink"),
            "{reason}: {log}"
        );
        assert!(
            log.contains("eBPF exec program unavailable") && log.contains(reason),
            "{reason}: {log}"
        );
        let row = wait_for(
            Duration::from_secs(15),
            "the fallback in agents list",
            || {
                let row = agent_row(&c, &a.agent_id);
                row["process_fallback"]
                    .as_str()
                    .is_some_and(|f| f.contains(reason))
                    .then_some(row)
            },
        );
        assert_eq!(row["process_source"], "netlink", "{row}");
    }
}
