use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Instant;

use invigilator_proto::v1::event::Kind;
use tokio::sync::mpsc;

use super::*;

#[test]
fn the_running_mode_is_shared_with_whoever_reads_it() {
    for mode in Mode::ALL {
        assert_eq!(RunningMode::new(mode).get(), mode);
    }
    // The heartbeat's copy sees the source's fall-back.
    let heartbeat = RunningMode::new(Mode::Etw);
    let source = heartbeat.clone();
    source.set(Mode::Poll);
    assert_eq!(heartbeat.get().as_str(), "poll");
}

/// Process events for the given PIDs, until all are seen or `within` has passed.
fn collect(
    rx: &mut crate::sources::EventRx,
    pids: &HashSet<u32>,
    within: Duration,
) -> (HashMap<u32, (Event, ProcessExec)>, usize) {
    let deadline = Instant::now() + within;
    let mut found = HashMap::new();
    let mut gaps = 0;
    while found.len() < pids.len() && Instant::now() < deadline {
        match rx.try_recv() {
            Ok(crate::sources::Observation {
                event: Some(event), ..
            }) => match event.kind.clone() {
                Some(Kind::Process(p)) if pids.contains(&p.pid) => {
                    found.entry(p.pid).or_insert((event, p));
                }
                Some(Kind::Gap(_)) => gaps += 1,
                _ => {}
            },
            Ok(_) => {}
            Err(mpsc::error::TryRecvError::Empty) => thread::sleep(Duration::from_millis(5)),
            Err(mpsc::error::TryRecvError::Disconnected) => panic!("process source stopped"),
        }
    }
    (found, gaps)
}

#[test]
fn process_details_name_what_is_missing() {
    let mut users = UserNames::default();
    let event = Details {
        exe: Some("/usr/bin/true".into()),
        uid: Some(0),
        ppid: Some(0),
        ..Details::default()
    }
    .into_event(7, "poll", "pc-01", &mut users);
    assert_eq!(event.hostname, "pc-01");
    assert_eq!(event.user, "root");
    assert_eq!(event.seq, 0);
    let Some(Kind::Process(p)) = event.kind else {
        panic!("not a process event")
    };
    assert_eq!((p.pid, p.ppid, p.uid), (7, 0, Some(0)));
    assert_eq!(p.exe, "/usr/bin/true");
    assert_eq!(p.source, "poll");
    // No parent_name: PPID 0 has none to read.
    assert_eq!(p.unavailable, ["argv", "name"]);
}

#[cfg(target_os = "linux")]
#[test]
fn process_netlink_catches_short_lived_processes() {
    // Shows the reason should the source fall back to polling.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root (CAP_NET_ADMIN) to subscribe to the netlink proc connector; \
         run it as root"
    );
    let (tx, mut rx) = crate::sources::channel(65536);
    let netlink = ProcessConfig {
        ebpf: false,
        ..ProcessConfig::default()
    };
    assert_eq!(
        spawn(&netlink, "test-host".into(), tx).unwrap().get(),
        Mode::Netlink,
        "running as root, yet the proc connector could not be used (see the warning)"
    );

    const RUNS: usize = 200;
    let pids: HashSet<u32> = (0..RUNS)
        .map(|_| {
            let mut child = Command::new("/bin/true").spawn().unwrap();
            let pid = child.id();
            assert!(child.wait().unwrap().success());
            pid
        })
        .collect();
    assert_eq!(pids.len(), RUNS);

    let (found, gaps) = collect(&mut rx, &pids, Duration::from_secs(5));
    let with_exe = found.values().filter(|(_, p)| !p.exe.is_empty()).count();
    println!(
        "netlink: {} of {RUNS} /bin/true execs reported, {with_exe} with exe resolved, {gaps} gap(s)",
        found.len()
    );
    for (event, p) in found.values() {
        assert_eq!(event.hostname, "test-host");
        // Whatever was read must be the right process, not a stale or reused one.
        assert!(p.exe.is_empty() || p.exe.ends_with("/true"), "{p:?}");
        assert!(p.name.is_empty() || p.name == "true", "{p:?}");
        assert!(p.argv.is_empty() || p.argv == ["/bin/true"], "{p:?}");
    }
    assert!(
        found.len() * 1000 >= RUNS * 999,
        "only {} of {RUNS} execs seen",
        found.len()
    );
}

/// The acceptance storm: short programs started as background jobs, each named with its
/// executable, full command line and working directory.
#[cfg(all(target_os = "linux", invigilator_bpf))]
#[test]
fn process_ebpf_names_every_short_lived_process() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root (CAP_BPF, CAP_PERFMON) to load the exec program; run it as root"
    );
    let (tx, mut rx) = crate::sources::channel(65536);
    let mode = spawn(&ProcessConfig::default(), "test-host".into(), tx).unwrap();
    assert_eq!(mode.get(), Mode::Ebpf, "fell back: {}", mode.fallback());

    const RUNS: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    // One shell starts them all in the background and prints their PIDs.
    let script = format!(
        "cd {} && for i in $(seq {RUNS}); do /bin/true marker-$i & echo $!; done; wait",
        dir.path().display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let pids: HashSet<u32> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), RUNS);
    let (found, gaps) = collect(&mut rx, &pids, Duration::from_secs(10));
    let cwd = dir.path().canonicalize().unwrap();
    let complete = found
        .values()
        .filter(|(_, p)| {
            p.exe == "/usr/bin/true"
                && p.argv.len() == 2
                && p.argv[0] == "/bin/true"
                && p.argv[1].starts_with("marker-")
                && std::path::Path::new(&p.cwd) == cwd
        })
        .count();
    println!(
        "ebpf: {} of {RUNS} seen, {complete} complete, {gaps} gap(s)",
        found.len()
    );
    let (event, p) = found.values().next().unwrap();
    assert_eq!(
        (event.hostname.as_str(), p.source.as_str()),
        ("test-host", "ebpf")
    );
    assert_eq!(p.name, "true");
    assert_eq!(p.parent_name, "bash");
    assert_eq!(p.uid, Some(0));
    assert!(p.unavailable.is_empty(), "{p:?}");
    // The file itself, whatever it is called: its inode, as stat(2) gives it.
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata("/usr/bin/true").unwrap());
    assert_eq!(p.exe_inode, Some(ino), "{p:?}");
    assert_eq!(complete, RUNS, "every exec named with exe, argv and cwd");
    let stats = mode.stats().expect("counters");
    assert!(stats.seen >= RUNS as u64, "{stats:?}");
    assert_eq!(stats.dropped, 0);
}

#[cfg(target_os = "linux")]
#[test]
fn process_without_btf_falls_back_to_netlink_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = crate::sources::channel(65536);
    let cfg = ProcessConfig {
        btf_path: dir.path().join("no-vmlinux"),
        ..ProcessConfig::default()
    };
    let mode = spawn(&cfg, "test-host".into(), tx).unwrap();
    assert_eq!(mode.get(), Mode::Netlink);
    assert!(mode.fallback().contains("no BTF"), "{}", mode.fallback());
    assert!(
        mode.fallback().contains("no-vmlinux"),
        "{}",
        mode.fallback()
    );
}

#[test]
fn process_poll_sees_a_process_started_after_the_baseline() {
    let (tx, mut rx) = crate::sources::channel(4096);
    let cfg = ProcessConfig {
        poll_interval: Duration::from_millis(200),
        force_poll: true,
        ..ProcessConfig::default()
    };
    assert_eq!(
        spawn(&cfg, "test-host".into(), tx).unwrap().get(),
        Mode::Poll
    );

    let mut child = Command::new("sleep").arg("3").spawn().unwrap();
    let pid = child.id();
    let (mut found, _) = collect(&mut rx, &HashSet::from([pid]), Duration::from_millis(2500));
    child.kill().unwrap();
    child.wait().unwrap();

    let (event, p) = found
        .remove(&pid)
        .expect("poll mode did not report `sleep 3`");
    assert_eq!(event.hostname, "test-host");
    assert_eq!(p.source, "poll");
    assert_eq!(p.name, "sleep");
    assert_eq!(p.argv, ["sleep", "3"]);
    assert!(p.exe.ends_with("/sleep"), "{p:?}");
    assert_eq!(p.ppid, std::process::id());
    assert!(!p.parent_name.is_empty());
    assert_eq!(p.uid, Some(nix::unistd::getuid().as_raw()));
    let me = User::from_uid(nix::unistd::getuid()).unwrap().unwrap();
    assert_eq!(event.user, me.name);
    assert!(p.unavailable.is_empty(), "{p:?}");
}
