//! Exec capture through the kernel's proc connector: every exec is announced as it happens and
//! /proc is read at once, on this thread, before the next message; buffer overruns are reported
//! as gaps and followed by a /proc rescan.

use std::collections::HashMap;
use std::io;
use std::thread;
use std::time::Duration;

use nix::errno::Errno;

use super::{Details, EventTx, ReceiverGone, UserNames, gap_event, send};
use crate::platform::linux::proc_connector::{
    self, Message, ProcConnector, RCVBUF_BYTES, SubscribeError,
};
use crate::platform::linux::procfs::{self, ProcessInfo};

/// Proc connector datagrams are under 100 bytes; this is room for many.
const DATAGRAM_BUF: usize = 64 * 1024;
/// Consecutive receive errors (other than overruns) before the socket is deemed broken.
const MAX_RECV_FAILURES: u32 = 5;
const RECV_RETRY: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX_DELAY: Duration = Duration::from_secs(30);

pub(super) struct NetlinkSource {
    conn: ProcConnector,
    reporter: Reporter,
}

impl NetlinkSource {
    /// Subscribes, then records what already runs: from here on every exec is reported.
    pub(super) fn start(hostname: String) -> Result<Self, SubscribeError> {
        let conn = ProcConnector::subscribe()?;
        let rcvbuf = conn.receive_buffer();
        if rcvbuf < RCVBUF_BYTES {
            tracing::warn!(
                granted = rcvbuf,
                wanted = RCVBUF_BYTES,
                "process source: small netlink receive buffer (raise net.core.rmem_max); \
                 bursts of short-lived processes may overrun it, which is reported as a gap"
            );
        }
        tracing::info!(
            receive_buffer = rcvbuf,
            "process source: netlink proc connector"
        );
        Ok(Self {
            conn,
            reporter: Reporter::new(hostname),
        })
    }

    pub(super) fn run(mut self, tx: &EventTx) {
        if let Err(ReceiverGone) = self.serve(tx) {
            tracing::debug!("process source stopping: the event receiver is gone");
        }
    }

    fn serve(&mut self, tx: &EventTx) -> Result<(), ReceiverGone> {
        let mut buf = vec![0u8; DATAGRAM_BUF];
        let mut failures = 0;
        loop {
            match self.conn.recv(&mut buf) {
                Ok(datagram) => {
                    failures = 0;
                    self.reporter.handle_datagram(datagram, tx)?;
                }
                Err(err) if err.raw_os_error() == Some(Errno::ENOBUFS as i32) => {
                    self.reporter.overrun(tx)?;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    failures += 1;
                    tracing::warn!(
                        error = %err,
                        failures,
                        "process source: netlink receive failed"
                    );
                    if failures >= MAX_RECV_FAILURES {
                        self.resubscribe(&err, tx)?;
                        failures = 0;
                    } else {
                        thread::sleep(RECV_RETRY);
                    }
                }
            }
            if tx.is_closed() {
                return Err(ReceiverGone);
            }
        }
    }

    /// Replaces a socket that keeps failing, retrying with backoff for as long as it takes,
    /// then accounts for the outage: a gap, and a rescan for what started meanwhile.
    fn resubscribe(&mut self, cause: &io::Error, tx: &EventTx) -> Result<(), ReceiverGone> {
        let mut delay = Duration::from_secs(1);
        self.conn = loop {
            match ProcConnector::subscribe() {
                Ok(conn) => break conn,
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        retry_in = ?delay,
                        "process source: cannot re-create the netlink socket"
                    );
                    if tx.is_closed() {
                        return Err(ReceiverGone);
                    }
                    thread::sleep(delay);
                    delay = (delay * 2).min(RESUBSCRIBE_MAX_DELAY);
                }
            }
        };
        tracing::info!("process source: netlink socket re-created");
        let reason = format!("netlink socket failed ({cause}); re-created it and rescanned /proc");
        send(tx, gap_event(&self.reporter.hostname, reason))?;
        self.reporter.rescan(tx)
    }
}

/// Turns proc connector messages, and /proc, into events. Apart from the socket so that the
/// overrun handling can be tested without one.
pub(super) struct Reporter {
    hostname: String,
    users: UserNames,
    /// The live processes already reported, or running when the source started: what a
    /// rescan must not report again. Exits remove entries and every rescan rebuilds it from
    /// /proc, so it stays the size of the process table.
    known: HashMap<u32, Identity>,
    clock: BootClock,
}

impl Reporter {
    pub(super) fn new(hostname: String) -> Self {
        Self {
            hostname,
            users: UserNames::default(),
            known: live_processes(|_, _| {}),
            clock: BootClock::default(),
        }
    }

    fn handle_datagram(&mut self, datagram: &[u8], tx: &EventTx) -> Result<(), ReceiverGone> {
        for message in proc_connector::parse(datagram) {
            match message {
                // A thread that execs takes over its leader's PID first, so a genuine exec has
                // pid == tgid; anything else is not a new program.
                Ok(Message::Exec {
                    pid,
                    tgid,
                    timestamp_ns,
                }) if pid == tgid => self.exec(pid, timestamp_ns, tx)?,
                Ok(Message::Exit { pid, tgid, .. }) if pid == tgid => {
                    self.known.remove(&pid);
                }
                Ok(Message::NetlinkError { errno }) => {
                    tracing::warn!(errno, "process source: netlink error message");
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        "process source: malformed proc connector datagram"
                    );
                }
            }
        }
        Ok(())
    }

    /// Reads /proc at once: a short-lived process may be gone within a millisecond.
    fn exec(&mut self, pid: u32, exec_ns: u64, tx: &EventTx) -> Result<(), ReceiverGone> {
        let mut info = procfs::read_process(pid);
        if info
            .start_ticks
            .is_some_and(|start| self.clock.started_after(start, exec_ns))
        {
            tracing::debug!(
                pid,
                "PID reused before /proc could be read; reporting without details"
            );
            info = ProcessInfo::default();
        }
        if let Some(identity) = Identity::of(&info) {
            self.known.insert(pid, identity);
        }
        self.report(pid, info, "netlink", tx)
    }

    /// The kernel dropped events: say so, then report whatever now runs that we have not
    /// reported (programs that exited meanwhile are lost, hence the gap).
    pub(super) fn overrun(&mut self, tx: &EventTx) -> Result<(), ReceiverGone> {
        tracing::warn!("process source: netlink receive buffer overrun; rescanning /proc");
        let reason = "netlink receive buffer overrun; rescanned /proc".to_owned();
        send(tx, gap_event(&self.hostname, reason))?;
        self.rescan(tx)
    }

    /// Reports, with source "rescan", live processes not already known, or known but since
    /// running another program. Includes processes that forked without exec and programs
    /// that renamed themselves: /proc cannot tell them apart, and reporting too much beats
    /// missing an exec.
    pub(super) fn rescan(&mut self, tx: &EventTx) -> Result<(), ReceiverGone> {
        let mut new = Vec::new();
        let known = std::mem::take(&mut self.known);
        let mut live = live_processes(|pid, identity| {
            if known.get(&pid) != Some(identity) {
                new.push(pid);
            }
        });
        for pid in new {
            let info = procfs::read_process(pid);
            if let Some(identity) = Identity::of(&info) {
                live.insert(pid, identity);
            }
            self.report(pid, info, "rescan", tx)?;
        }
        self.known = live;
        Ok(())
    }

    fn report(
        &mut self,
        pid: u32,
        info: ProcessInfo,
        source: &str,
        tx: &EventTx,
    ) -> Result<(), ReceiverGone> {
        let details = Details {
            exe: info.exe,
            argv: info.argv,
            argv_bytes: info.argv_bytes,
            uid: info.uid,
            ppid: info.ppid,
            name: info.name,
            parent_name: info.parent_name,
            ..Details::default()
        };
        let event = details.into_event(pid, source, &self.hostname, &mut self.users);
        send(tx, event)
    }
}

/// One process running one program: the start time tells a reused PID apart, the name a
/// later exec in the same process (exec renames it).
#[derive(Debug, PartialEq, Eq)]
struct Identity {
    start_ticks: u64,
    comm: String,
}

impl Identity {
    fn of(info: &ProcessInfo) -> Option<Self> {
        Some(Self {
            start_ticks: info.start_ticks?,
            comm: info.name.clone()?,
        })
    }
}

/// Every live process except kernel threads (which never exec), each also shown to `each`.
fn live_processes(mut each: impl FnMut(u32, &Identity)) -> HashMap<u32, Identity> {
    let pids = procfs::list_pids().unwrap_or_else(|err| {
        tracing::warn!(error = %err, "process source: cannot list /proc");
        Vec::new()
    });
    pids.into_iter()
        .filter_map(|pid| {
            let stat = procfs::read_stat(pid).filter(|stat| !stat.kernel_thread)?;
            let identity = Identity {
                start_ticks: stat.start_ticks,
                comm: stat.comm,
            };
            each(pid, &identity);
            Some((pid, identity))
        })
        .collect()
}

/// Tells whether the process now at /proc/PID started after an exec was announced for that
/// PID, i.e. the PID was reused before we could read it. Exec timestamps are
/// `CLOCK_MONOTONIC`, start times `CLOCK_BOOTTIME`: they differ by the time spent suspended,
/// measured when a check first fails.
#[derive(Default)]
struct BootClock {
    suspended_ns: u64,
}

impl BootClock {
    /// Start times and /proc/uptime both have 10 ms resolution.
    const SLACK_NS: u64 = 20_000_000;

    fn started_after(&mut self, start_ticks: u64, exec_ns: u64) -> bool {
        let start_ns = procfs::ticks_to_ns(start_ticks);
        let fits = |suspended_ns: u64| {
            start_ns
                <= exec_ns
                    .saturating_add(suspended_ns)
                    .saturating_add(Self::SLACK_NS)
        };
        if fits(self.suspended_ns) {
            return false;
        }
        // Not measured yet, or the machine slept since. Taking the exec's timestamp for
        // "now" overestimates the offset by our lag, which only makes the check more lenient:
        // it never calls a genuine process stale.
        let Some(uptime_ns) = procfs::uptime_ns() else {
            return false;
        };
        self.suspended_ns = uptime_ns.saturating_sub(exec_ns);
        !fits(self.suspended_ns)
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use invigilator_proto::v1::event::Kind;

    use super::*;

    #[test]
    fn boot_clock_flags_only_processes_younger_than_the_exec() {
        let mut clock = BootClock::default();
        let now_ns = procfs::uptime_ns().unwrap();
        // A process started at boot cannot be stale.
        assert!(!clock.started_after(0, now_ns));
        // One started a minute after the exec was announced is another process.
        let minute_later = (now_ns + 60_000_000_000) / procfs::ticks_to_ns(1);
        assert!(clock.started_after(minute_later, now_ns));
    }

    #[test]
    fn process_overrun_reports_a_gap_then_rescans_what_is_new() {
        let mut reporter = Reporter::new("host-a".into());
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let pid = child.id();
        // posix_spawn returns as soon as the child's exec has replaced its memory, before the
        // kernel has written the new command line: wait for it, as a real rescan would see it.
        for _ in 0..500 {
            match std::fs::read(format!("/proc/{pid}/cmdline")) {
                Ok(raw) if !raw.is_empty() => break,
                _ => std::thread::sleep(std::time::Duration::from_millis(2)),
            }
        }
        let (tx, mut rx) = crate::sources::channel(65536);

        let result = reporter.overrun(&tx);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(result.is_ok());

        let gap = rx.try_recv().unwrap().event.unwrap();
        assert_eq!(gap.hostname, "host-a");
        let Some(Kind::Gap(gap)) = gap.kind else {
            panic!("first event is not a gap: {gap:?}")
        };
        assert_eq!(gap.source, "process");
        assert_eq!(
            gap.reason,
            "netlink receive buffer overrun; rescanned /proc"
        );

        let mut rescanned = Vec::new();
        while let Ok(crate::sources::Observation {
            event: Some(event), ..
        }) = rx.try_recv()
        {
            match event.kind {
                Some(Kind::Process(p)) => rescanned.push(p),
                other => panic!("unexpected event {other:?}"),
            }
        }
        let sleep = rescanned
            .iter()
            .find(|p| p.pid == pid)
            .expect("the child started after the baseline is reported");
        assert_eq!(sleep.source, "rescan");
        assert_eq!(sleep.argv, ["sleep", "5"]);
        assert!(sleep.exe.ends_with("/sleep"), "{sleep:?}");
        assert!(sleep.unavailable.is_empty(), "{sleep:?}");
        // The test harness's own process was in the baseline.
        assert!(!rescanned.iter().any(|p| p.pid == std::process::id()));

        // A second rescan reports nothing already reported.
        reporter.rescan(&tx).unwrap();
        while let Ok(crate::sources::Observation {
            event: Some(event), ..
        }) = rx.try_recv()
        {
            if let Some(Kind::Process(p)) = event.kind {
                assert_ne!(p.pid, pid, "reported twice");
            }
        }
    }

    #[test]
    fn process_rescan_reports_a_known_process_now_running_another_program() {
        let mut reporter = Reporter::new("host-a".into());
        let me = std::process::id();
        // As if this process had exec'd (renaming it) during an overrun.
        reporter.known.get_mut(&me).unwrap().comm = "previous".into();
        let (tx, mut rx) = crate::sources::channel(65536);
        reporter.rescan(&tx).unwrap();
        let mut reported = Vec::new();
        while let Ok(crate::sources::Observation {
            event: Some(event), ..
        }) = rx.try_recv()
        {
            if let Some(Kind::Process(p)) = event.kind {
                reported.push(p.pid);
            }
        }
        assert!(reported.contains(&me));
    }

    #[test]
    fn process_exec_of_a_vanished_pid_is_still_reported() {
        let mut reporter = Reporter::new("host-a".into());
        let (tx, mut rx) = crate::sources::channel(16);
        reporter.exec(u32::MAX, 0, &tx).unwrap();
        let event = rx.try_recv().unwrap().event.unwrap();
        assert_eq!(event.user, "");
        let Some(Kind::Process(p)) = event.kind else {
            panic!("not a process event")
        };
        assert_eq!(p.pid, u32::MAX);
        assert_eq!(p.source, "netlink");
        assert_eq!(
            p.unavailable,
            ["exe", "argv", "uid", "ppid", "name", "parent_name"]
        );
    }

    #[test]
    fn process_exit_of_a_leader_forgets_it() {
        let mut reporter = Reporter::new("host-a".into());
        let me = std::process::id();
        assert!(reporter.known.contains_key(&me));
        let (tx, _rx) = crate::sources::channel(16);
        // An exit message as the kernel lays it out: nlmsghdr, cn_msg, proc_event.
        let exit = |pid: u32, tgid: u32| {
            let mut out = Vec::new();
            out.extend(76u32.to_ne_bytes());
            out.extend(3u16.to_ne_bytes());
            out.extend([0u8; 10]);
            for v in [1u32, 1, 0, 0] {
                out.extend(v.to_ne_bytes());
            }
            out.extend(40u16.to_ne_bytes());
            out.extend(0u16.to_ne_bytes());
            out.extend(0x8000_0000u32.to_ne_bytes());
            out.extend([0u8; 12]);
            out.extend(pid.to_ne_bytes());
            out.extend(tgid.to_ne_bytes());
            out.resize(76, 0);
            out
        };
        // A thread of ours exiting changes nothing; the leader exiting does.
        reporter
            .handle_datagram(&exit(me + 1, me), &tx)
            .ok()
            .unwrap();
        assert!(reporter.known.contains_key(&me));
        reporter.handle_datagram(&exit(me, me), &tx).unwrap();
        assert!(!reporter.known.contains_key(&me));
    }
}
