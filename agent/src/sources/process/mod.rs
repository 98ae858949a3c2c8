//! The process source: one event per program started (exec).
//!
//! On Linux it runs a BPF program at the kernel's `sched_process_exec` tracepoint, which reads
//! the new program's path, command line and working directory before the process can exit
//! (`ebpf.rs`). Where that cannot run (no BTF, a kernel before 5.17, lockdown, a refused load, or
//! an agent built without clang) it listens to the kernel's proc connector, which announces every
//! exec as it happens, and reads /proc for the details at once; a program that exits first is
//! reported without its name. Where the kernel will not serve that either (before Linux 6.6 it
//! needs root or CAP_NET_ADMIN; inside a container it stays silent) the source polls the process
//! table, which misses programs that start and finish between two polls. The heartbeat says
//! which mode runs and why it is not the first.
//!
//! On Windows the same role is played by ETW (the `Microsoft-Windows-Kernel-Process`
//! provider), with the same fallback to polling.

#[cfg(unix)]
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread;
use std::time::Duration;

use invigilator_proto::v1::{Event, ProcessExec, ProcessSourceStats, event};
#[cfg(unix)]
use nix::unistd::{Uid, User};

use serde::{Deserialize, Serialize};

use super::{EventTx, SourceConfig, SourceContext, SourceError, observed};

/// Which mechanism the process source actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A BPF program at `sched_process_exec`: every exec, named inside the kernel.
    Ebpf,
    /// The kernel's proc connector: every exec, as it happens, named from /proc afterwards.
    Netlink,
    /// Windows' kernel process provider (ETW): every process start, as it happens.
    Etw,
    /// Periodic scans of the process table: misses processes shorter than the interval.
    Poll,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::Ebpf, Mode::Netlink, Mode::Etw, Mode::Poll];

    /// The name the heartbeat reports (`process_source`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ebpf => "ebpf",
            Mode::Netlink => "netlink",
            Mode::Etw => "etw",
            Mode::Poll => "poll",
        }
    }
}

/// What the process source is doing now, shared with the heartbeat: which mode runs (a source
/// that has to fall back while running, like ETW whose session is stopped under it, updates
/// it), why it is not the preferred one, and the eBPF program's counters.
#[derive(Debug, Clone)]
pub struct RunningMode(std::sync::Arc<Status>);

#[derive(Debug, Default)]
struct Status {
    mode: AtomicU8,
    fallback: std::sync::Mutex<String>,
    stats: std::sync::Mutex<Option<ProcessSourceStats>>,
}

impl RunningMode {
    fn new(mode: Mode) -> Self {
        let status = Status::default();
        status.mode.store(mode as u8, Ordering::Relaxed);
        Self(std::sync::Arc::new(status))
    }

    pub fn get(&self) -> Mode {
        let m = self.0.mode.load(Ordering::Relaxed);
        Mode::ALL
            .into_iter()
            .find(|mode| *mode as u8 == m)
            .unwrap_or(Mode::Poll)
    }

    #[cfg_attr(not(windows), allow(dead_code))]
    fn set(&self, mode: Mode) {
        self.0.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// Why the preferred source is not running; empty when it is.
    pub fn fallback(&self) -> String {
        self.0
            .fallback
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default()
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn set_fallback(&self, reason: String) {
        if let Ok(mut f) = self.0.fallback.lock() {
            *f = reason;
        }
    }

    /// The eBPF program's counters, where it runs.
    pub fn stats(&self) -> Option<ProcessSourceStats> {
        self.0.stats.lock().ok().and_then(|s| *s)
    }

    #[cfg_attr(not(invigilator_bpf), allow(dead_code))]
    fn set_stats(&self, stats: ProcessSourceStats) {
        if let Ok(mut s) = self.0.stats.lock() {
            *s = Some(stats);
        }
    }
}

pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// 1 MiB: a storm of 2,000 short programs fits with room to spare (BENCHMARKS.md), and the
/// pages count in the agent's memory.
pub const DEFAULT_RING_BUFFER_BYTES: u64 = 1 << 20;

/// `[process]` in agent.toml.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessConfig {
    /// Poll the process table instead of using the kernel's eBPF or proc connector (which need
    /// root). Default false.
    pub force_poll: bool,
    /// How often the fallback scans the process table. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Name programs in the kernel with the eBPF exec program where the machine allows it
    /// (BTF, Linux 5.17+, lockdown below "confidentiality"), else use the proc connector.
    /// Default true.
    pub ebpf: bool,
    /// The eBPF ring buffer in bytes: a power of two from 4096 to 256 MiB. Its pages count in
    /// the agent's memory; a full ring loses records, each loss reported as a gap. Default 1 MiB.
    pub ring_buffer_bytes: u64,
    /// Where the kernel publishes its BTF and its lockdown level. Only tests change them.
    pub btf_path: std::path::PathBuf,
    pub lockdown_path: std::path::PathBuf,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            force_poll: false,
            poll_interval: DEFAULT_POLL_INTERVAL,
            ebpf: true,
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
            btf_path: "/sys/kernel/btf/vmlinux".into(),
            lockdown_path: "/sys/kernel/security/lockdown".into(),
        }
    }
}

impl ProcessConfig {
    /// Settings that cannot work, named; checked when agent.toml is read.
    pub fn validate(&self) -> Result<(), String> {
        let ring = self.ring_buffer_bytes;
        if !ring.is_power_of_two() || !(4096..=256 << 20).contains(&ring) {
            return Err(format!(
                "process.ring_buffer_bytes must be a power of two from 4096 to 268435456 \
                 (256 MiB), not {ring}"
            ));
        }
        if self.poll_interval.is_zero() {
            return Err("process.poll_interval must be above zero".into());
        }
        Ok(())
    }
}

impl SourceConfig for ProcessConfig {
    const NAME: &'static str = "process";
    type Handle = RunningMode;

    /// The process source always runs: it is what the policy most relies on.
    fn enabled(&self) -> bool {
        true
    }

    fn build(&self, cx: &SourceContext) -> Result<RunningMode, SourceError> {
        spawn(self, cx.hostname.clone(), cx.events.clone()).map_err(SourceError::new::<Self>)
    }
}

/// Starts the source on its own OS thread ("proc-source") and returns the mode that runs (and
/// keeps it current, see [`RunningMode`]). When
/// this returns, the source is watching: every program started afterwards is reported.
///
/// On Linux tries the eBPF exec program, then the netlink proc connector; on Windows ETW. If the
/// preferred one cannot be used it says why in a warning (and in the heartbeat) and takes the
/// next, polling last. The thread ends when the receiving side of `tx` is dropped.
pub fn spawn(cfg: &ProcessConfig, hostname: String, tx: EventTx) -> io::Result<RunningMode> {
    #[cfg(target_os = "linux")]
    if cfg.force_poll {
        tracing::info!("process source: polling, as configured");
    } else {
        let mut fallback = String::new();
        if cfg.ebpf {
            match start_ebpf(cfg, &hostname, &tx)? {
                Ok(mode) => return Ok(mode),
                Err(reason) => {
                    tracing::warn!(
                        "process source: eBPF exec program unavailable: {reason}. Falling back \
                         to the netlink proc connector, which misses the names of programs \
                         that exit before /proc is read"
                    );
                    fallback = format!("ebpf: {reason}");
                }
            }
        } else {
            tracing::info!("process source: eBPF off, as configured");
        }
        match netlink::NetlinkSource::start(hostname.clone()) {
            Ok(source) => {
                start_thread(move || source.run(&tx))?;
                let mode = RunningMode::new(Mode::Netlink);
                mode.set_fallback(fallback);
                return Ok(mode);
            }
            Err(err) => tracing::warn!(
                "process source: netlink proc connector unavailable: {err}. Falling back to \
                 polling the process table every {:?}, which misses shorter-lived programs",
                cfg.poll_interval
            ),
        }
    }
    #[cfg(windows)]
    if cfg.force_poll {
        tracing::info!("process source: polling, as configured");
    } else {
        match etw::EtwSource::start(cfg.clone(), hostname.clone()) {
            Ok(source) => {
                let mode = RunningMode::new(Mode::Etw);
                let current = mode.clone();
                start_thread(move || source.run(&tx, &current))?;
                return Ok(mode);
            }
            Err(err) => tracing::warn!(
                "process source: ETW unavailable: {err}. Falling back to polling the process \
                 table every {:?}, which misses shorter-lived programs",
                cfg.poll_interval
            ),
        }
    }
    let source = poll::PollSource::start(cfg.poll_interval, hostname)?;
    start_thread(move || source.run(&tx))?;
    Ok(RunningMode::new(Mode::Poll))
}

/// Starts the eBPF source on its thread; `Ok(Err(reason))` when it cannot run here.
#[cfg(all(target_os = "linux", invigilator_bpf))]
fn start_ebpf(
    cfg: &ProcessConfig,
    hostname: &str,
    tx: &EventTx,
) -> io::Result<Result<RunningMode, String>> {
    let source = match ebpf::EbpfSource::start(cfg, hostname.to_owned()) {
        Ok(source) => source,
        Err(err) => return Ok(Err(err.to_string())),
    };
    let mode = RunningMode::new(Mode::Ebpf);
    let (status, tx) = (mode.clone(), tx.clone());
    start_thread(move || source.run(&tx, &status))?;
    Ok(Ok(mode))
}

#[cfg(all(target_os = "linux", not(invigilator_bpf)))]
fn start_ebpf(_: &ProcessConfig, _: &str, _: &EventTx) -> io::Result<Result<RunningMode, String>> {
    Ok(Err(
        "this agent was built without its eBPF exec program (no clang at build \
            time, or without the `ebpf` feature)"
            .into(),
    ))
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

#[cfg(any(target_os = "linux", windows))]
fn gap_event(hostname: &str, reason: String) -> Event {
    observed(
        hostname,
        String::new(),
        event::Kind::Gap(invigilator_proto::v1::Gap {
            source: "process".into(),
            reason,
            lost: 0,
        }),
    )
}

/// What could be learnt about a started process; `None` = could not be read.
#[derive(Debug, Default)]
struct Details {
    exe: Option<String>,
    argv: Option<Vec<String>>,
    /// The command line's full length when `argv` was cut to its budget.
    argv_bytes: Option<u64>,
    uid: Option<u32>,
    ppid: Option<u32>,
    name: Option<String>,
    parent_name: Option<String>,
    /// Only the eBPF source reads these.
    cwd: Option<String>,
    /// The executable's (inode, device).
    exe_file: Option<(u64, u32)>,
    login_uid: Option<u32>,
    session_id: Option<u32>,
    gid: Option<u32>,
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
        observed(
            hostname,
            self.uid.and_then(|uid| users.name(uid)).unwrap_or_default(),
            event::Kind::Process(ProcessExec {
                pid,
                ppid: self.ppid.unwrap_or(0),
                exe: self.exe.unwrap_or_default(),
                name: self.name.unwrap_or_default(),
                argv: self.argv.unwrap_or_default(),
                argv_bytes: self.argv_bytes.unwrap_or(0),
                uid: self.uid,
                parent_name: self.parent_name.unwrap_or_default(),
                unavailable,
                source: source.to_owned(),
                cwd: self.cwd.unwrap_or_default(),
                login_uid: self.login_uid,
                session_id: self.session_id,
                gid: self.gid,
                exe_inode: self.exe_file.map(|(ino, _)| ino),
                exe_dev: self.exe_file.map(|(_, dev)| dev),
            }),
        )
    }
}

/// uid → user name. A lookup may go over the network (LDAP or AD through SSSD on school
/// machines), so answers are kept; when full the cache is simply emptied, which is rare and cheap.
#[cfg(unix)]
#[derive(Default)]
struct UserNames(HashMap<u32, Option<String>>);

/// Windows has no numeric uid (sysinfo gives a SID there, and `uid` stays unset), so there is
/// nothing to look up yet.
#[cfg(not(unix))]
#[derive(Default)]
struct UserNames;

#[cfg(not(unix))]
impl UserNames {
    fn name(&mut self, _uid: u32) -> Option<String> {
        None
    }
}

#[cfg(unix)]
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

#[cfg(all(target_os = "linux", invigilator_bpf))]
mod ebpf;
#[cfg(windows)]
mod etw;
#[cfg(target_os = "linux")]
mod netlink;
mod poll;

#[cfg(test)]
mod tests;
