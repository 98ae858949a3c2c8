//! Faults of the machine under the real agent and collector: a full disk under either side's
//! SQLite, a collector that stops answering (SIGSTOP), and a device clock that jumps. After
//! each, the delivery invariant holds: nothing the collector acknowledged is lost, nothing is
//! stored twice, every event the agent had to drop is covered by a gap event it sent, delivery
//! resumes, and neither process died.
//!
//! Real parts: the agent's spool and the collector's store on small tmpfs mounts (root,
//! `mount`), the kernel's proc connector, mutual-TLS gRPC over loopback, job-control signals,
//! libfaketime (`LD_PRELOAD`, tests/setup.sh installs it) on the agent process alone (the
//! machine's clock is never changed), and a slow TCP relay that cuts connections (this kernel
//! has neither netem nor nftables for real packet loss).

use invigilator_proto::v1::{Event, EventBatch, ProcessExec, event::Kind};
use invigilator_tests::{Agent, Collector, now_us, run_as, telemetry, wait_for};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const FAST: &str = "[uplink]\nmax_batch = 500\nwindow = 4\nheartbeat_interval = \"1s\"\n\
                    reconnect_max = \"2s\"\n\n[browsing]\nenabled = false\n";

// ---------------------------------------------------------------------------------------------
// The invariant

/// A spool gap as the collector stored it: its own seq, how many events it says were dropped,
/// and the newest seq it says was dropped (its reason names it).
#[derive(Debug, Clone, Copy)]
struct SpoolGap {
    seq: u64,
    lost: u64,
    up_to: u64,
}

/// The delivery invariant over the seqs stored for one agent whose spool has numbered
/// `1..=last`: no seq twice, none beyond `last`, and every missing seq covered by a spool gap
/// numbered after it that names it as dropped, with at least as many reported lost as missing.
fn check_invariant(seqs: &[u64], last: u64, gaps: &[SpoolGap]) -> Result<(), String> {
    let mut seen = HashSet::new();
    let twice: Vec<u64> = seqs.iter().copied().filter(|s| !seen.insert(*s)).collect();
    if !twice.is_empty() {
        return Err(format!("stored twice: {twice:?}"));
    }
    if let Some(s) = seqs.iter().find(|&&s| s > last) {
        return Err(format!(
            "seq {s} stored but the spool only numbered up to {last}"
        ));
    }
    let missing: Vec<u64> = (1..=last).filter(|s| !seen.contains(s)).collect();
    let silent: Vec<u64> = missing
        .iter()
        .copied()
        .filter(|&s| !gaps.iter().any(|g| s < g.seq && s <= g.up_to))
        .collect();
    if !silent.is_empty() {
        return Err(format!(
            "{} of {last} seqs missing with no gap reporting them (first: {:?})",
            silent.len(),
            &silent[..silent.len().min(10)]
        ));
    }
    let reported: u64 = gaps.iter().map(|g| g.lost).sum();
    if reported < missing.len() as u64 {
        return Err(format!(
            "{} seqs missing but the gaps report only {reported} lost",
            missing.len()
        ));
    }
    Ok(())
}

/// The gap events stored for `agent_id`.
fn gaps_of(c: &Collector, agent_id: &str) -> Vec<Value> {
    c.events("gap")
        .into_iter()
        .filter(|e| e["agent_id"] == agent_id)
        .collect()
}

fn spool_gaps(gaps: &[Value]) -> Vec<SpoolGap> {
    gaps.iter()
        .filter(|g| g["source"] == "spool")
        .map(|g| SpoolGap {
            seq: g["seq"].as_u64().unwrap(),
            lost: g["lost"].as_u64().unwrap_or(0),
            // "... dropped the N oldest events, up to seq M"
            up_to: g["reason"]
                .as_str()
                .and_then(|r| r.rsplit("up to seq ").next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0),
        })
        .collect()
}

/// Asserts the delivery invariant for `a` once the collector has everything its spool ever
/// numbered, and that no process event was stored under two seqs (a re-append of the same
/// observation would keep its pid and time but take a new number). Returns the gap events.
fn assert_delivered_exactly(c: &Collector, a: &Agent) -> Vec<Value> {
    let (seqs, last) = wait_for(
        Duration::from_secs(120),
        "the spool to drain into the collector",
        || {
            let last = a.spool_last_seq();
            let seqs = c.stored_seqs(&a.agent_id);
            (last > 0 && seqs.last() == Some(&last)).then_some((seqs, last))
        },
    );
    let gaps = gaps_of(c, &a.agent_id);
    if let Err(e) = check_invariant(&seqs, last, &spool_gaps(&gaps)) {
        panic!("delivery invariant broken: {e}\ngaps: {gaps:#?}");
    }
    let mut by_observation: HashMap<(u64, String, String), u64> = HashMap::new();
    for e in c.events("process") {
        if e["agent_id"] != a.agent_id.as_str() {
            continue;
        }
        let key = (
            e["pid"].as_u64().unwrap_or(0),
            e["observed_at"].as_str().unwrap_or("").to_owned(),
            e["name"].as_str().unwrap_or("").to_owned(),
        );
        let seq = e["seq"].as_u64().unwrap();
        if let Some(first) = by_observation.insert(key.clone(), seq) {
            panic!("one observation stored twice, as seqs {first} and {seq}: {key:?}");
        }
    }
    gaps
}

#[test]
fn the_invariant_check_catches_duplicates_silent_holes_and_underreported_gaps() {
    let gap = |seq, lost, up_to| SpoolGap { seq, lost, up_to };
    assert!(check_invariant(&[1, 2, 3], 3, &[]).is_ok());
    assert!(
        check_invariant(&[1, 2, 2, 3], 3, &[])
            .unwrap_err()
            .contains("twice")
    );
    assert!(
        check_invariant(&[1, 3], 3, &[])
            .unwrap_err()
            .contains("no gap")
    );
    assert!(
        check_invariant(&[1, 2], 3, &[])
            .unwrap_err()
            .contains("no gap")
    );
    assert!(check_invariant(&[1, 2, 3, 4], 3, &[]).is_err());
    // 1 and 2 dropped, reported by the gap numbered 4.
    assert!(check_invariant(&[3, 4], 4, &[gap(4, 2, 2)]).is_ok());
    // A gap cannot report what was numbered after it, nor fewer than went missing.
    assert!(check_invariant(&[1, 2, 4], 5, &[gap(4, 1, 5)]).is_err());
    assert!(
        check_invariant(&[3, 4], 4, &[gap(4, 1, 2)])
            .unwrap_err()
            .contains("only 1")
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A tmpfs mounted over a directory, keeping what the directory held; unmounted (lazily, so
/// even with a process still inside) when dropped, panic or not. A test process killed outright
/// drops nothing, so each mount is named after the process that made it, and the next one
/// clears those whose process is gone.
struct Tmpfs(PathBuf);

const MOUNT_TAG: &str = "invigilator-faults-";

impl Tmpfs {
    fn over(dir: &Path, size: &str) -> Self {
        Self::sweep();
        let keep = tempfile::tempdir().unwrap();
        sh(Command::new("cp")
            .arg("-a")
            .arg(dir.join("."))
            .arg(keep.path()));
        sh(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg(format!("{MOUNT_TAG}{}", std::process::id()))
            .arg(dir));
        let mount = Self(dir.to_owned());
        sh(Command::new("cp")
            .arg("-a")
            .arg(keep.path().join("."))
            .arg(dir));
        mount
    }

    /// Unmounts the tmpfs left by test processes that no longer exist.
    fn sweep() {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for line in mounts.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let (Some(point), Some(pid)) = (
                left.split(' ').nth(4),
                right
                    .split(' ')
                    .nth(1)
                    .and_then(|source| source.strip_prefix(MOUNT_TAG)),
            ) else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                let _ = Command::new("umount").arg("--lazy").arg(point).status();
            }
        }
    }

    fn free(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.0).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    }

    /// Fills all but `leave` bytes with one file, written for real (tmpfs has no holes to cheat
    /// with), and returns its path.
    fn fill(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let mut left = self.free().saturating_sub(leave);
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
        f.sync_all().unwrap();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.0).status();
    }
}

fn sh(cmd: &mut Command) {
    let out = invigilator_tests::output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Running, not a zombie: a process that crashed is still a child until reaped.
fn alive(pid: Option<u32>) -> bool {
    let Some(pid) = pid else { return false };
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s.rsplit(')').next().unwrap_or("").trim_start();
        !state.starts_with(['Z', 'X'])
    })
}

/// `/bin/true`, one after another, for `secs` seconds, in the background; each one's pid is
/// written to the returned file.
fn exec_storm(secs: u32) -> (Child, tempfile::NamedTempFile) {
    let pids = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "end=$((SECONDS + {secs})); while [ $SECONDS -lt $end ]; do /bin/true & echo $!; wait; done"
        ))
        .stdout(pids.reopen().unwrap())
        .spawn()
        .unwrap();
    (child, pids)
}

fn pids_in(file: &tempfile::NamedTempFile) -> HashSet<u64> {
    std::fs::read_to_string(file.path())
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// The process events `agent_id` stored for programs named `name`.
fn named(c: &Collector, agent_id: &str, name: &str) -> Vec<Value> {
    c.events("process")
        .into_iter()
        .filter(|e| e["agent_id"] == agent_id && e["name"] == name)
        .collect()
}

fn wait_named(c: &Collector, agent_id: &str, name: &str, timeout: Duration) -> Value {
    wait_for(timeout, &format!("the process event of {name}"), || {
        named(c, agent_id, name).into_iter().next()
    })
}

// ---------------------------------------------------------------------------------------------
// 1. The agent's spool on a full filesystem

/// The spool's disk fills while the collector is away: the writer cannot commit and retries,
/// the sources block behind it (the kernel buffers, and may overrun). When the disk has room
/// again and the collector is back, everything that was numbered arrives once, every program
/// that ran meanwhile is stored or a gap says some were lost, and new events flow.
#[test]
fn a_full_disk_under_the_agents_spool_loses_nothing_silently_and_delivery_resumes() {
    let t0 = Instant::now();
    let mut c = Collector::start("");
    let mut a = Agent::enroll(&c, FAST);
    let disk = Tmpfs::over(&a.state_dir(), "4m");
    a.start();
    a.wait_ready();
    run_as("before-full");
    wait_named(&c, &a.agent_id, "before-full", Duration::from_secs(30));

    // With the collector away nothing is acknowledged, so nothing leaves the spool to make room.
    c.kill9();
    let filler = disk.fill(256 * 1024);
    // Long enough, after the disk fills in its first second, for the blocked process source to
    // overrun the kernel's 8 MiB buffer.
    let (mut storm, pid_file) = exec_storm(15);
    wait_for(
        Duration::from_secs(60),
        "the agent to report the full disk",
        || a.log().contains("cannot write to the spool").then_some(()),
    );
    assert!(storm.wait().unwrap().success());
    let pids = pids_in(&pid_file);
    assert!(
        alive(a.pid()),
        "the agent died on a full disk:\n{}",
        a.log()
    );

    // Back while the disk is still full: the agent can send, but not delete what is
    // acknowledged; the collector must treat the resends as the duplicates they are.
    c.restart();
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        alive(a.pid()),
        "the agent died on a full disk:\n{}",
        a.log()
    );
    std::fs::remove_file(&filler).unwrap();

    run_as("after-full");
    wait_named(&c, &a.agent_id, "after-full", Duration::from_secs(60));
    let gaps = assert_delivered_exactly(&c, &a);
    assert!(alive(a.pid()), "{}", a.log());
    assert!(alive(c.pid()), "{}", c.log());
    // The programs that ran while the spool could not take them: each one stored, or the
    // source said it lost some.
    let seen: HashSet<u64> = c
        .events("process")
        .iter()
        .filter(|e| e["agent_id"] == a.agent_id.as_str())
        .filter_map(|e| e["pid"].as_u64())
        .filter(|p| pids.contains(p))
        .collect();
    let overruns = gaps.iter().filter(|g| g["source"] == "process").count();
    assert!(
        seen.len() == pids.len() || overruns > 0,
        "{} of {} programs stored and no gap reported",
        seen.len(),
        pids.len()
    );
    let failures = a.log().matches("cannot write to the spool").count();
    eprintln!(
        "{} of {} programs run on the full disk stored; {} events in all, {failures} failed \
         spool writes, gaps: {:?}; {:?}",
        seen.len(),
        pids.len(),
        c.stored_seqs(&a.agent_id).len(),
        gaps.iter().map(|g| &g["reason"]).collect::<Vec<_>>(),
        t0.elapsed()
    );
    drop(a);
    drop(disk);
}

// ---------------------------------------------------------------------------------------------
// 2. The collector's database on a full filesystem

/// A process event of about 30 KiB (argv), within the budgets so nothing is cut.
fn big_event(seq: u64) -> Event {
    Event {
        seq,
        observed_at_us: now_us(),
        hostname: "full-disk".into(),
        user: "pupil".into(),
        kind: Some(Kind::Process(ProcessExec {
            pid: seq as u32,
            name: "big".into(),
            exe: "/usr/bin/big".into(),
            argv: (0..7)
                .map(|i| format!("{seq:08}-{i}-").repeat(4000 / 11))
                .collect(),
            source: "netlink".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Sends `seqs` as the agent would, `per_batch` events a batch, each batch after the previous
/// one's acknowledgement, on one stream. Returns the highest seq acknowledged (0: none) and the
/// status that ended the stream early, if one did.
fn send_acked(
    c: &Collector,
    a: &Agent,
    seqs: std::ops::RangeInclusive<u64>,
    per_batch: usize,
) -> (u64, Option<tonic::Status>) {
    let events: Vec<Event> = seqs.map(big_event).collect();
    let mut batches = events
        .chunks(per_batch)
        .map(|b| EventBatch { events: b.to_vec() });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let Some(first) = batches.next() else {
            return (0, None);
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(first).await.unwrap();
        let mut client = telemetry(c, a);
        let mut acks = match client
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(status) => return (0, Some(status)),
        };
        let mut acked = 0;
        loop {
            match acks.message().await {
                Ok(Some(ack)) => {
                    acked = acked.max(ack.up_to_seq);
                    let Some(next) = batches.next() else {
                        return (acked, None);
                    };
                    if tx.send(next).await.is_err() {
                        return (acked, Some(tonic::Status::unknown("stream closed")));
                    }
                }
                Ok(None) => return (acked, Some(tonic::Status::unknown("stream ended"))),
                Err(status) => return (acked, Some(status)),
            }
        }
    })
}

/// The store's disk fills mid-stream: the collector refuses the batch it cannot commit (no
/// acknowledgement, so the agent keeps it), stays up, and keeps everything it acknowledged.
/// With room again the refused events are resent and stored exactly once.
#[test]
fn a_full_disk_under_the_collectors_database_refuses_batches_but_keeps_what_it_acknowledged() {
    let t0 = Instant::now();
    let mut c = Collector::start("");
    // Only the identity: this test sends for it, so it controls exactly what is in flight.
    let a = Agent::enroll(&c, "");
    c.kill9();
    let disk = Tmpfs::over(&c.data_dir(), "16m");
    let filler = disk.fill(2 << 20);
    c.restart();

    const PER_BATCH: usize = 4;
    const MOST: u64 = 2000; // about 60 MB, far beyond the room left
    let (acked, refusal) = send_acked(&c, &a, 1..=MOST, PER_BATCH);
    let refusal = refusal.expect("2 MiB of room took 60 MB of events");
    assert!(
        refusal
            .message()
            .contains("collector could not store the batch"),
        "{refusal:?}"
    );
    assert!(acked > 0, "nothing was acknowledged before the disk filled");
    assert!(
        alive(c.pid()),
        "the collector died on a full disk:\n{}",
        c.log()
    );
    let stored = c.stored_seqs(&a.agent_id);
    assert_eq!(
        stored,
        (1..=acked).collect::<Vec<_>>(),
        "stored after the refusal at {acked}"
    );

    // Still full: refused again, not half-stored, and the collector stays up.
    let (again, refusal) = send_acked(&c, &a, acked + 1..=acked + 40, PER_BATCH);
    assert_eq!(again, 0, "acknowledged {again} on a full disk");
    assert!(refusal.is_some());
    assert!(alive(c.pid()), "{}", c.log());
    assert_eq!(c.stored_seqs(&a.agent_id).last(), Some(&acked));

    std::fs::remove_file(&filler).unwrap();
    // Resent from the oldest unacknowledged, with some acknowledged ones again (as after a lost
    // acknowledgement), and new ones after.
    let last = acked + 40;
    let (resent, refusal) = send_acked(&c, &a, acked.saturating_sub(3).max(1)..=last, PER_BATCH);
    assert!(refusal.is_none(), "{refusal:?}\n{}", c.log());
    assert_eq!(resent, last);
    invigilator_tests::assert_exactly_once(&c.stored_seqs(&a.agent_id), last);
    assert!(alive(c.pid()), "{}", c.log());
    // And the store the failed commits left behind is sound, after a crash too.
    c.restart();
    invigilator_tests::assert_exactly_once(&c.stored_seqs(&a.agent_id), last);
    let db = rusqlite::Connection::open(c.data_dir().join("invigilator.db")).unwrap();
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    eprintln!(
        "{acked} events acknowledged before the disk filled ({}), {last} stored after; {:?}",
        refusal_line(&c.log()),
        t0.elapsed()
    );
    drop(c);
    drop(disk);
}

fn refusal_line(log: &str) -> String {
    log.lines()
        .find(|l| l.contains("commit failed"))
        .unwrap_or("no commit failure logged")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// 3. The collector paused

/// The collector stops answering without closing anything (SIGSTOP: a hung host, a VM paused
/// for a snapshot) while the device goes on being used. 20 seconds by default, to spare CI;
/// `INVIGILATOR_PAUSE_SECS` sets it: above 50 s the agent's HTTP/2 keep-alive (30 s + 20 s)
/// gives the connection up and reconnects into the stopped collector, and hours is the soak.
#[test]
fn a_collector_stopped_for_twenty_seconds_gets_every_event_once_and_in_order() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pause = Duration::from_secs(
        std::env::var("INVIGILATOR_PAUSE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    let t0 = Instant::now();
    let c = Collector::start("");
    let mut a = Agent::enroll(&c, FAST);
    a.start();
    a.wait_ready();
    run_as("before-pause");
    wait_named(&c, &a.agent_id, "before-pause", Duration::from_secs(30));

    let collector = Pid::from_raw(c.pid().unwrap() as i32);
    kill(collector, Signal::SIGSTOP).unwrap();
    let paused = Instant::now();
    let mut names = Vec::new();
    while paused.elapsed() < pause {
        let name = format!("paused-{:03}", names.len());
        run_as(&name);
        names.push(name);
        std::thread::sleep(Duration::from_millis(100));
    }
    kill(collector, Signal::SIGCONT).unwrap();
    run_as("after-pause");

    wait_named(&c, &a.agent_id, "after-pause", Duration::from_secs(60));
    let gaps = assert_delivered_exactly(&c, &a);
    let process = c.events("process");
    let seq_of = |name: &str| {
        let mine: Vec<u64> = process
            .iter()
            .filter(|e| e["agent_id"] == a.agent_id.as_str() && e["name"] == name)
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(mine.len(), 1, "{name} stored as seqs {mine:?}");
        mine[0]
    };
    // In the order they ran: the spool numbers them as observed.
    let seqs: Vec<u64> = names
        .iter()
        .map(String::as_str)
        .chain(["after-pause"])
        .map(seq_of)
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "numbered out of order: {seqs:?}"
    );
    // ... and stored in that order (the CLI lists in the order rows were inserted).
    let rows: Vec<u64> = process
        .iter()
        .filter(|e| e["agent_id"] == a.agent_id.as_str())
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(
        rows.windows(2).all(|w| w[0] < w[1]),
        "stored out of order: {rows:?}"
    );
    assert!(alive(a.pid()), "{}", a.log());
    assert!(alive(c.pid()), "{}", c.log());
    eprintln!(
        "{} programs run during a {pause:?} pause all stored once, in order; gaps: {}; {:?}",
        names.len(),
        gaps.len(),
        t0.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A clock jump on the agent

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The agent of `a`'s state directory, run as `Agent::start` runs it but under libfaketime,
/// whose offset (e.g. "+400d") is read from `clock` at every call, so writing the file jumps
/// the agent's clock while it runs. Only the wall clock moves: timers and back-off use the
/// monotonic clock, which a real clock change leaves alone too.
struct FakeTimeAgent {
    child: Child,
    log: PathBuf,
}

impl FakeTimeAgent {
    fn start(a: &Agent, clock: &Path) -> Self {
        let log = a.dir.path().join("faketime-agent.log");
        let child = Command::new(invigilator_tests::bin("invigilator-agent"))
            .arg("run")
            .arg("--state-dir")
            .arg(a.state_dir())
            .env("INVIGILATOR_LOG", "info,invigilator_agent=debug")
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME_TIMESTAMP_FILE", clock)
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let agent = Self { child, log };
        wait_for(
            Duration::from_secs(30),
            "the agent's process source",
            || agent.log().contains("process source running").then_some(()),
        );
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for FakeTimeAgent {
    fn drop(&mut self) {
        invigilator_tests::kill9(&mut self.child);
    }
}

fn us(rfc3339: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().unwrap())
        .unwrap()
        .timestamp_micros()
}

const MINUTE_US: i64 = 60_000_000;
const DAY_US: i64 = 24 * 60 * MINUTE_US;

/// A device clock that jumps 400 days ahead, then 2 days back, while the agent runs: each
/// event is stored with the time clamped into the collector's window around when it arrived
/// (5 minutes ahead, 1 hour back here), with the device's claim kept beside it, and delivery
/// goes on across both jumps.
#[test]
fn an_agent_clock_jumping_ahead_and_back_is_clamped_and_flagged_by_the_collector() {
    let t0 = Instant::now();
    let c = Collector::start("[ingest]\noffline_allowance = \"1h\"\nclock_skew = \"5m\"\n");
    let a = Agent::enroll(&c, FAST);
    let clock = a.dir.path().join("faketime");
    std::fs::write(&clock, "+0\n").unwrap();
    let agent = FakeTimeAgent::start(&a, &clock);

    run_as("clock-right");
    let right = wait_named(&c, &a.agent_id, "clock-right", Duration::from_secs(30));
    assert!(right.get("device_time").is_none(), "{right}");
    assert!(
        (us(&right["observed_at"]) - now_us()).abs() < MINUTE_US,
        "{right}"
    );

    std::fs::write(&clock, "+400d\n").unwrap();
    run_as("clock-ahead");
    let ahead = wait_named(&c, &a.agent_id, "clock-ahead", Duration::from_secs(30));
    let (observed, device) = (us(&ahead["observed_at"]), us(&ahead["device_time"]));
    // Clamped to 5 minutes after it was read off the stream, which was just before its commit
    // (received_at).
    let edge = us(&ahead["received_at"]) + 5 * MINUTE_US;
    assert!((edge - 5_000_000..=edge).contains(&observed), "{ahead}");
    assert!(
        (device - now_us() - 400 * DAY_US).abs() < MINUTE_US,
        "{ahead}"
    );

    std::fs::write(&clock, "-2d\n").unwrap();
    run_as("clock-behind");
    let behind = wait_named(&c, &a.agent_id, "clock-behind", Duration::from_secs(30));
    let (observed, device) = (us(&behind["observed_at"]), us(&behind["device_time"]));
    let edge = us(&behind["received_at"]) - 60 * MINUTE_US;
    assert!((edge - 5_000_000..=edge).contains(&observed), "{behind}");
    assert!(
        (device - now_us() + 2 * DAY_US).abs() < MINUTE_US,
        "{behind}"
    );

    std::fs::write(&clock, "+0\n").unwrap();
    run_as("clock-back");
    let back = wait_named(&c, &a.agent_id, "clock-back", Duration::from_secs(30));
    assert!(back.get("device_time").is_none(), "{back}");
    assert!(
        c.log()
            .contains("event times outside the accepted window were clamped"),
        "{}",
        c.log()
    );
    assert!(alive(Some(agent.child.id())), "{}", agent.log());
    // 400 days ahead, every certificate looks due for renewal: one renewal, not one a heartbeat.
    let renewals = agent.log().matches("client certificate renewed").count();
    assert!(renewals <= 1, "{renewals} renewals:\n{}", agent.log());
    let gaps = assert_delivered_exactly(&c, &a);
    eprintln!(
        "clock jumps clamped; gaps: {}; {:?}",
        gaps.len(),
        t0.elapsed()
    );
}

/// A device whose clock is behind when it connects (a fresh collector's certificates start 5
/// minutes before `init`; a dead CMOS battery puts a clock years back): it must still deliver,
/// with its times clamped. The agent used to check the collector's certificate against its own
/// clock ("certificate not valid yet"), so every new connection failed until the clock was
/// fixed; it now checks a not-yet-valid certificate of its pinned CA at the certificate's start.
#[test]
fn an_agent_whose_clock_is_two_days_behind_still_connects_and_delivers() {
    let c = Collector::start("[ingest]\noffline_allowance = \"1h\"\n");
    let a = Agent::enroll(&c, FAST);
    let clock = a.dir.path().join("faketime");
    std::fs::write(&clock, "-2d\n").unwrap();
    let agent = FakeTimeAgent::start(&a, &clock);
    run_as("behind-start");
    let e = wait_for(
        Duration::from_secs(30),
        "the event of an agent 2 days behind",
        || named(&c, &a.agent_id, "behind-start").into_iter().next(),
    );
    assert!(e.get("device_time").is_some(), "{e}");
    drop(agent);
}

// ---------------------------------------------------------------------------------------------
// 5. A bad network

/// A TCP relay on loopback standing in for a bad school network: every chunk is held back
/// 20-80 ms each way, and every connection is cut (both ways at once, as a Wi-Fi drop or a NAT
/// timeout would) after 1-4 s, whatever is in flight, acknowledgements included. This kernel
/// has no netem and no nftables, so packet loss itself is not simulated: TCP turns it into
/// delay, and a connection that gives up is a cut. `heal` stops the cutting.
struct BadLink {
    port: u16,
    faulty: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cuts: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl BadLink {
    fn to(upstream: std::net::SocketAddr) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let faulty = Arc::new(AtomicBool::new(true));
        let cuts = Arc::new(AtomicU64::new(0));
        let (f, n) = (faulty.clone(), cuts.clone());
        std::thread::spawn(move || {
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = move |lo: u64, hi: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                lo + rng % (hi - lo)
            };
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                let life = Duration::from_millis(next(1000, 4000));
                let delay = Duration::from_millis(next(20, 80));
                let born = Instant::now();
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    let (f, n) = (f.clone(), n.clone());
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        from.set_read_timeout(Some(Duration::from_millis(50)))
                            .unwrap();
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            if f.load(Ordering::Relaxed) && born.elapsed() > life {
                                // Both directions, once: the other pump finds it shut.
                                if from.shutdown(std::net::Shutdown::Both).is_ok() {
                                    let _ = to.shutdown(std::net::Shutdown::Both);
                                    n.fetch_add(1, Ordering::Relaxed);
                                }
                                return;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => {
                                    let _ = to.shutdown(std::net::Shutdown::Write);
                                    return;
                                }
                                Ok(k) => {
                                    if f.load(Ordering::Relaxed) {
                                        std::thread::sleep(delay);
                                    }
                                    if to.write_all(&buf[..k]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
            }
        });
        Self { port, faulty, cuts }
    }

    fn heal(&self) {
        self.faulty
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    fn cuts(&self) -> u64 {
        self.cuts.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Events flow over a link that is slow and cut every few seconds mid-stream (acknowledgements
/// lost with it): each cut means a reconnect and a resend of whatever was unacknowledged, which
/// the collector must recognise; nothing is lost or stored twice, and once the link heals the
/// spool drains.
#[test]
fn a_slow_link_cut_every_few_seconds_loses_and_duplicates_nothing() {
    let t0 = Instant::now();
    // Reconnecting every few seconds is this test's point, not the stream quota's.
    let c = Collector::start("[quotas]\nstreams_per_minute = 1000\n");
    let mut a = Agent::enroll(&c, FAST);
    let link = BadLink::to(c.grpc.parse().unwrap());
    let cfg = a.state_dir().join("agent.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let via = format!("https://localhost:{}", link.port);
    assert!(text.contains(&c.url()), "{text}");
    std::fs::write(&cfg, text.replace(&c.url(), &via)).unwrap();
    a.start();
    a.wait_ready();

    let (mut storm, pid_file) = exec_storm(12);
    assert!(storm.wait().unwrap().success());
    run_as("over-bad-link");
    wait_named(&c, &a.agent_id, "over-bad-link", Duration::from_secs(60));
    let cuts = link.cuts();
    assert!(
        cuts >= 3,
        "only {cuts} cuts: the link was not bad enough to mean anything"
    );
    link.heal();
    let gaps = assert_delivered_exactly(&c, &a);
    let pids = pids_in(&pid_file);
    let seen = c
        .events("process")
        .iter()
        .filter(|e| e["agent_id"] == a.agent_id.as_str())
        .filter_map(|e| e["pid"].as_u64())
        .filter(|p| pids.contains(p))
        .count();
    assert_eq!(seen, pids.len(), "programs run over the bad link");
    assert!(alive(a.pid()), "{}", a.log());
    assert!(alive(c.pid()), "{}", c.log());
    eprintln!(
        "{seen} programs over a link cut {cuts} times, {} reconnects; gaps: {}; {:?}",
        a.log().matches("connected to the collector").count(),
        gaps.len(),
        t0.elapsed()
    );
}
