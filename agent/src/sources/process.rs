//! The process source: one event per program started (exec).
//!
//! On Linux it listens to the kernel's proc connector, which announces every exec as it happens,
//! and reads /proc for the details at once, before the process can exit. Where the kernel will
//! not serve it (before Linux 6.6 it needs root or CAP_NET_ADMIN; inside a container it stays
//! silent) the source falls back to polling the process table, which misses programs that start
//! and finish between two polls; the heartbeat says which mode runs.

use std::collections::HashMap;
use std::io;
use std::thread;
use std::time::Duration;

use invigilator_proto::v1::{Event, Gap, ProcessExec, event};
use nix::unistd::{Uid, User};

use super::{EventTx, now_us};

/// Which mechanism the process source actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The kernel's proc connector: every exec, as it happens.
    Netlink,
    /// Periodic scans of the process table: misses processes shorter than the interval.
    Poll,
}

impl Mode {
    /// The name the heartbeat reports (`process_source`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Netlink => "netlink",
            Mode::Poll => "poll",
        }
    }
}

pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct ProcessSourceConfig {
    /// Put on every event.
    pub hostname: String,
    /// How often the fallback scans the process table.
    pub poll_interval: Duration,
    /// Poll even where the proc connector would work.
    pub force_poll: bool,
}

impl Default for ProcessSourceConfig {
    fn default() -> Self {
        Self {
            hostname: String::new(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            force_poll: false,
        }
    }
}

/// Starts the source on its own OS thread ("proc-source") and returns the mode that runs. When
/// this returns, the source is watching: every program started afterwards is reported.
///
/// Tries the netlink proc connector first; if it cannot be used, says why in a warning and polls
/// instead. The thread ends when the receiving side of `tx` is dropped.
pub fn spawn(cfg: ProcessSourceConfig, tx: EventTx) -> io::Result<Mode> {
    #[cfg(target_os = "linux")]
    if cfg.force_poll {
        tracing::info!("process source: polling, as configured");
    } else {
        match netlink::NetlinkSource::start(cfg.hostname.clone()) {
            Ok(source) => {
                start_thread(move || source.run(&tx))?;
                return Ok(Mode::Netlink);
            }
            Err(err) => tracing::warn!(
                "process source: netlink proc connector unavailable: {err}. Falling back to \
                 polling the process table every {:?}, which misses shorter-lived programs",
                cfg.poll_interval
            ),
        }
    }
    let source = poll::PollSource::start(cfg)?;
    start_thread(move || source.run(&tx))?;
    Ok(Mode::Poll)
}

fn start_thread(body: impl FnOnce() + Send + 'static) -> io::Result<()> {
    thread::Builder::new()
        .name("proc-source".into())
        .spawn(body)
        .map(drop)
}

/// The spool has gone away: the agent is shutting down.
#[derive(Debug)]
struct ReceiverGone;

fn send(tx: &EventTx, event: Event) -> Result<(), ReceiverGone> {
    tx.blocking_send(event).map_err(|_| ReceiverGone)
}

fn gap_event(hostname: &str, reason: String) -> Event {
    Event {
        seq: 0,
        observed_at_us: now_us(),
        hostname: hostname.to_owned(),
        user: String::new(),
        kind: Some(event::Kind::Gap(Gap {
            source: "process".into(),
            reason,
            lost: 0,
        })),
    }
}

/// What could be learnt about a started process; `None` = could not be read.
#[derive(Debug, Default)]
struct Details {
    exe: Option<String>,
    argv: Option<Vec<String>>,
    uid: Option<u32>,
    ppid: Option<u32>,
    name: Option<String>,
    parent_name: Option<String>,
}

impl Details {
    fn into_event(self, pid: u32, source: &str, hostname: &str, users: &mut UserNames) -> Event {
        let mut unavailable = Vec::new();
        let mut missing = |field: &str, absent: bool| {
            if absent {
                unavailable.push(field.to_owned());
            }
        };
        missing("exe", self.exe.is_none());
        missing("argv", self.argv.is_none());
        missing("uid", self.uid.is_none());
        missing("ppid", self.ppid.is_none());
        missing("name", self.name.is_none());
        // PPID 0 means there is no parent (init, kthreadd), not that its name is unknown.
        missing(
            "parent_name",
            self.parent_name.is_none() && self.ppid != Some(0),
        );
        Event {
            seq: 0,
            observed_at_us: now_us(),
            hostname: hostname.to_owned(),
            user: self.uid.and_then(|uid| users.name(uid)).unwrap_or_default(),
            kind: Some(event::Kind::Process(ProcessExec {
                pid,
                ppid: self.ppid.unwrap_or(0),
                exe: self.exe.unwrap_or_default(),
                name: self.name.unwrap_or_default(),
                argv: self.argv.unwrap_or_default(),
                uid: self.uid,
                parent_name: self.parent_name.unwrap_or_default(),
                unavailable,
                source: source.to_owned(),
            })),
        }
    }
}

/// uid → user name. A lookup may go over the network (LDAP or AD through SSSD on school
/// machines), so answers are kept; when full the cache is simply emptied, which is rare and cheap.
#[derive(Default)]
struct UserNames(HashMap<u32, Option<String>>);

impl UserNames {
    const CAPACITY: usize = 1024;

    fn name(&mut self, uid: u32) -> Option<String> {
        if let Some(name) = self.0.get(&uid) {
            return name.clone();
        }
        match User::from_uid(Uid::from_raw(uid)) {
            Ok(user) => {
                if self.0.len() >= Self::CAPACITY {
                    self.0.clear();
                }
                let name = user.map(|user| user.name);
                self.0.insert(uid, name.clone());
                name
            }
            // Not cached: the directory may answer next time.
            Err(err) => {
                tracing::debug!(uid, %err, "user name lookup failed");
                None
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod netlink {
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
            let reason =
                format!("netlink socket failed ({cause}); re-created it and rescanned /proc");
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
                uid: info.uid,
                ppid: info.ppid,
                name: info.name,
                parent_name: info.parent_name,
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
        use tokio::sync::mpsc;

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
            let (tx, mut rx) = mpsc::channel(65536);

            let result = reporter.overrun(&tx);
            child.kill().unwrap();
            child.wait().unwrap();
            assert!(result.is_ok());

            let gap = rx.try_recv().unwrap();
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
            while let Ok(event) = rx.try_recv() {
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
            while let Ok(event) = rx.try_recv() {
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
            let (tx, mut rx) = mpsc::channel(65536);
            reporter.rescan(&tx).unwrap();
            let mut reported = Vec::new();
            while let Ok(event) = rx.try_recv() {
                if let Some(Kind::Process(p)) = event.kind {
                    reported.push(p.pid);
                }
            }
            assert!(reported.contains(&me));
        }

        #[test]
        fn process_exec_of_a_vanished_pid_is_still_reported() {
            let mut reporter = Reporter::new("host-a".into());
            let (tx, mut rx) = mpsc::channel(16);
            reporter.exec(u32::MAX, 0, &tx).unwrap();
            let event = rx.try_recv().unwrap();
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
            let (tx, _rx) = mpsc::channel(16);
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
}

mod poll {
    use std::collections::HashMap;
    use std::io;
    use std::thread;
    use std::time::Duration;

    use sysinfo::{Pid, Process, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

    use super::{Details, EventTx, ProcessSourceConfig, ReceiverGone, UserNames, send};

    pub(super) struct PollSource {
        system: System,
        /// pid → start time (seconds since the epoch) at the last scan.
        seen: HashMap<Pid, u64>,
        hostname: String,
        interval: Duration,
        users: UserNames,
    }

    impl PollSource {
        /// Takes the baseline scan. Processes already running are not reported: the source
        /// reports programs being started, and those started before the agent we did not see
        /// start (an inventory of running processes would be a different kind of event).
        pub(super) fn start(cfg: ProcessSourceConfig) -> io::Result<Self> {
            let mut system = System::new().map_err(io::Error::other)?;
            refresh(&mut system);
            let seen = start_times(&system);
            Ok(Self {
                system,
                seen,
                hostname: cfg.hostname,
                interval: cfg.poll_interval,
                users: UserNames::default(),
            })
        }

        pub(super) fn run(mut self, tx: &EventTx) {
            while !tx.is_closed() {
                thread::sleep(self.interval);
                if let Err(ReceiverGone) = self.scan(tx) {
                    break;
                }
            }
            tracing::debug!("process source stopping: the event receiver is gone");
        }

        fn scan(&mut self, tx: &EventTx) -> Result<(), ReceiverGone> {
            refresh(&mut self.system);
            let processes = self.system.processes();
            let mut new: Vec<&Process> = processes
                .values()
                .filter(|p| is_process(p) && self.seen.get(&p.pid()) != Some(&p.start_time()))
                .collect();
            new.sort_by_key(|p| (p.start_time(), p.pid()));
            for process in new {
                let parent_name = process
                    .parent()
                    .and_then(|ppid| processes.get(&ppid))
                    .map(|parent| parent.name().to_string_lossy().into_owned());
                let details = Details {
                    exe: process.exe().map(|exe| exe.to_string_lossy().into_owned()),
                    argv: Some(process.cmd())
                        .filter(|cmd| !cmd.is_empty())
                        .map(|cmd| {
                            cmd.iter()
                                .map(|a| a.to_string_lossy().into_owned())
                                .collect()
                        }),
                    uid: process.user_id().map(|uid| **uid),
                    ppid: process.parent().map(Pid::as_u32),
                    name: Some(process.name().to_string_lossy().into_owned())
                        .filter(|name| !name.is_empty()),
                    parent_name,
                };
                let pid = process.pid().as_u32();
                send(
                    tx,
                    details.into_event(pid, "poll", &self.hostname, &mut self.users),
                )?;
            }
            self.seen = start_times(&self.system);
            Ok(())
        }
    }

    fn refresh(system: &mut System) {
        let what = ProcessRefreshKind::nothing()
            .without_tasks()
            .with_exe(UpdateKind::OnlyIfNotSet)
            .with_cmd(UpdateKind::OnlyIfNotSet)
            .with_user(UpdateKind::OnlyIfNotSet);
        system.refresh_processes_specifics(ProcessesToUpdate::All, true, what);
    }

    /// Kernel threads never exec; threads are listed only as part of their process.
    fn is_process(process: &Process) -> bool {
        process.thread_kind().is_none()
    }

    fn start_times(system: &System) -> HashMap<Pid, u64> {
        system
            .processes()
            .values()
            .filter(|p| is_process(p))
            .map(|p| (p.pid(), p.start_time()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::process::Command;
    use std::time::Instant;

    use invigilator_proto::v1::event::Kind;
    use tokio::sync::mpsc;

    use super::*;

    /// Process events for the given PIDs, until all are seen or `within` has passed.
    fn collect(
        rx: &mut mpsc::Receiver<Event>,
        pids: &HashSet<u32>,
        within: Duration,
    ) -> (HashMap<u32, (Event, ProcessExec)>, usize) {
        let deadline = Instant::now() + within;
        let mut found = HashMap::new();
        let mut gaps = 0;
        while found.len() < pids.len() && Instant::now() < deadline {
            match rx.try_recv() {
                Ok(event) => match event.kind.clone() {
                    Some(Kind::Process(p)) if pids.contains(&p.pid) => {
                        found.entry(p.pid).or_insert((event, p));
                    }
                    Some(Kind::Gap(_)) => gaps += 1,
                    _ => {}
                },
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
        let (tx, mut rx) = mpsc::channel(65536);
        let cfg = ProcessSourceConfig {
            hostname: "test-host".into(),
            ..ProcessSourceConfig::default()
        };
        assert_eq!(
            spawn(cfg, tx).unwrap(),
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

    #[test]
    fn process_poll_sees_a_process_started_after_the_baseline() {
        let (tx, mut rx) = mpsc::channel(4096);
        let cfg = ProcessSourceConfig {
            hostname: "test-host".into(),
            poll_interval: Duration::from_millis(200),
            force_poll: true,
        };
        assert_eq!(spawn(cfg, tx).unwrap(), Mode::Poll);

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
}
