//! The eBPF exec program (`bpf/exec.bpf.c`): loads it, attaches it at `sched_process_exec`, and
//! hands each record it writes to the ring buffer over as an [`ExecRecord`]. Every program start
//! is named inside the kernel, so a process that exits within a microsecond is still reported
//! with its executable, command line and working directory.
//!
//! Only this module and the generated skeleton touch libbpf. The preflight checks say in words
//! why eBPF cannot run on a machine (no BTF, an old kernel, lockdown) before libbpf is asked.

use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject, RingBuffer, RingBufferBuilder};

// The skeleton libbpf-cargo generated from the C program (build.rs): the object's bytes and
// the FFI calls that open, load and attach it. Generated code, so its `unsafe` blocks carry no
// SAFETY notes of ours; libbpf-rs documents their contracts.
#[allow(unsafe_code, clippy::all, clippy::pedantic)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/exec.skel.rs"));
}
use skel::{ExecSkel, ExecSkelBuilder};

/// The oldest kernel with everything the program uses: the ring buffer (5.8) and `bpf_loop`
/// (5.17), which walks paths.
const MIN_KERNEL: (u32, u32) = (5, 17);
/// Record header size and field offsets: the layout of `struct exec_record` in exec.bpf.c.
const HEADER: usize = 96;
const FLAG_EXE_TRUNCATED: u8 = 1;
const FLAG_ARGV_TRUNCATED: u8 = 2;
const FLAG_CWD_TRUNCATED: u8 = 4;
const FLAG_NO_EXE: u8 = 8;
const FLAG_NO_CWD: u8 = 16;

/// Why the eBPF program cannot be used here; the process source says so and falls back.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("the kernel publishes no BTF type information at {0} (CONFIG_DEBUG_INFO_BTF)")]
    NoBtf(PathBuf),
    #[error("kernel {0} is older than 5.17 (the BPF ring buffer came in 5.8, bpf_loop in 5.17)")]
    OldKernel(String),
    #[error("kernel lockdown is at \"{0}\", which forbids reading kernel memory from BPF")]
    Lockdown(String),
    #[error("the ring buffer size {0} bytes is not a power of two of at least 4096")]
    RingSize(u64),
    #[error("loading the BPF program failed: {0}")]
    Load(#[source] libbpf_rs::Error),
}

/// Where the preflight looks; tests point these at files of their own.
#[derive(Debug, Clone)]
pub struct Preflight {
    pub btf: PathBuf,
    pub lockdown: PathBuf,
    /// `uname -r`, e.g. "6.18.44".
    pub release: String,
}

impl Preflight {
    pub const BTF: &str = "/sys/kernel/btf/vmlinux";
    pub const LOCKDOWN: &str = "/sys/kernel/security/lockdown";

    pub fn this_machine() -> Self {
        Self {
            btf: Self::BTF.into(),
            lockdown: Self::LOCKDOWN.into(),
            release: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    pub fn check(&self) -> Result<(), Unavailable> {
        if !self.btf.exists() {
            return Err(Unavailable::NoBtf(self.btf.clone()));
        }
        if release_before(&self.release, MIN_KERNEL) {
            return Err(Unavailable::OldKernel(self.release.clone()));
        }
        // No lockdown file: the LSM is not built in, so nothing is locked down.
        if let Ok(text) = fs::read_to_string(&self.lockdown)
            && let Some(level) = active_lockdown(&text)
            && level == "confidentiality"
        {
            return Err(Unavailable::Lockdown(level.to_owned()));
        }
        Ok(())
    }
}

/// True when `release` ("5.4.0-150-generic") is older than `(major, minor)`. A release that
/// cannot be read is not taken to be old: loading will tell.
fn release_before(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(ma), Some(mi)) => (ma, mi) < (major, minor),
        _ => false,
    }
}

/// The bracketed level of `/sys/kernel/security/lockdown`: "none [integrity] confidentiality".
fn active_lockdown(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(&text[start..end])
}

/// One program start, as the kernel saw it at `sched_process_exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRecord {
    /// CLOCK_MONOTONIC, nanoseconds.
    pub ktime_ns: u64,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// The audit login uid: who logged in, whatever they became since. `None` when unset.
    pub login_uid: Option<u32>,
    pub session_id: Option<u32>,
    /// Absolute path; `None` when the task had no executable file (a kernel thread's helper).
    pub exe: Option<Vec<u8>>,
    pub exe_inode: u64,
    pub exe_dev: u32,
    /// The command line as the kernel keeps it: arguments each followed by a NUL.
    pub argv: Vec<u8>,
    /// The command line's full length in bytes, also when `argv` holds less.
    pub argv_full: u64,
    pub cwd: Option<Vec<u8>>,
    pub comm: Vec<u8>,
    pub parent_comm: Vec<u8>,
    /// Which of "exe", "argv", "cwd" the kernel side cut to its bounds.
    pub truncated: Vec<&'static str>,
}

/// Malformed ring-buffer record: the C program and this parser disagree, a bug to report.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed exec record ({0} bytes): {1}")]
pub struct Malformed(usize, &'static str);

impl ExecRecord {
    /// Parses one record (header, then exe, argv and cwd in that order; see exec.bpf.c).
    pub fn parse(raw: &[u8]) -> Result<Self, Malformed> {
        let bad = |why| Malformed(raw.len(), why);
        let header = raw
            .get(..HEADER)
            .ok_or_else(|| bad("shorter than its header"))?;
        let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap());
        let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap());
        let u16_at =
            |at: usize| u16::from_le_bytes(header[at..at + 2].try_into().unwrap()) as usize;
        let (exe_len, argv_len, cwd_len) = (u16_at(52), u16_at(54), u16_at(56));
        let flags = header[58];
        let data = &raw[HEADER..];
        if data.len() < exe_len + argv_len + cwd_len {
            return Err(bad("section lengths exceed the record"));
        }
        let (exe, rest) = data.split_at(exe_len);
        let (argv, rest) = rest.split_at(argv_len);
        let cwd = &rest[..cwd_len];
        let unset = |v: u32| (v != u32::MAX).then_some(v);
        let truncated = [
            (FLAG_EXE_TRUNCATED, "exe"),
            (FLAG_ARGV_TRUNCATED, "argv"),
            (FLAG_CWD_TRUNCATED, "cwd"),
        ]
        .into_iter()
        .filter(|(flag, _)| flags & flag != 0)
        .map(|(_, name)| name)
        .collect();
        Ok(Self {
            ktime_ns: u64_at(0),
            exe_inode: u64_at(8),
            argv_full: u64_at(16),
            pid: u32_at(24),
            ppid: u32_at(28),
            uid: u32_at(32),
            gid: u32_at(36),
            login_uid: unset(u32_at(40)),
            session_id: unset(u32_at(44)),
            exe_dev: u32_at(48),
            exe: (flags & FLAG_NO_EXE == 0).then(|| join_path(exe)),
            argv: argv.to_vec(),
            cwd: (flags & FLAG_NO_CWD == 0).then(|| join_path(cwd)),
            comm: c_string(&header[64..80]),
            parent_comm: c_string(&header[80..96]),
            truncated,
        })
    }
}

/// Components leaf first, each NUL-terminated, into an absolute path.
fn join_path(components: &[u8]) -> Vec<u8> {
    let parts: Vec<&[u8]> = components
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return b"/".to_vec();
    }
    let mut path = Vec::with_capacity(components.len() + 1);
    for part in parts.iter().rev() {
        path.push(b'/');
        path.extend_from_slice(part);
    }
    path
}

fn c_string(raw: &[u8]) -> Vec<u8> {
    raw.split(|&b| b == 0).next().unwrap_or_default().to_vec()
}

/// The program's own counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// Execs the program ran for.
    pub seen: u64,
    /// Records the ring buffer had no room for: lost.
    pub dropped: u64,
    /// Records with a field cut to the kernel side's bounds.
    pub truncated: u64,
}

/// Which hook the program runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `tp_btf/sched_process_exec`: needs CAP_BPF and CAP_PERFMON only.
    BtfTracepoint,
    /// `tp/sched/sched_process_exec`, where the first is refused.
    Tracepoint,
}

/// The loaded, attached program and its ring buffer.
pub struct ExecProbe {
    skel: ExecSkel<'static>,
    ring: RingBuffer<'static>,
    records: mpsc::Receiver<Vec<u8>>,
    pub hook: Hook,
}

impl ExecProbe {
    /// Checks the machine, then loads and attaches the program with a ring buffer of
    /// `ring_bytes` (a power of two, at least a page).
    pub fn load(preflight: &Preflight, ring_bytes: u64) -> Result<Self, Unavailable> {
        preflight.check()?;
        if !ring_bytes.is_power_of_two() || ring_bytes < 4096 || ring_bytes > u32::MAX as u64 {
            return Err(Unavailable::RingSize(ring_bytes));
        }
        let skel = match open_and_load(ring_bytes as u32, Hook::BtfTracepoint) {
            Ok(skel) => (skel, Hook::BtfTracepoint),
            Err(btf_err) => {
                tracing::info!(error = %btf_err, "exec program: the BTF tracepoint was refused; trying the classic one");
                let skel = open_and_load(ring_bytes as u32, Hook::Tracepoint)
                    .map_err(|_| Unavailable::Load(btf_err))?;
                (skel, Hook::Tracepoint)
            }
        };
        let (skel, hook) = skel;
        let (tx, records) = mpsc::channel();
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&skel.maps.events, move |data: &[u8]| {
                // The receiver lives as long as the ring: a send cannot fail before drop.
                let _ = tx.send(data.to_vec());
                0
            })
            .map_err(Unavailable::Load)?;
        let ring = builder.build().map_err(Unavailable::Load)?;
        Ok(Self {
            skel,
            ring,
            records,
            hook,
        })
    }

    /// Waits up to `timeout` for records and returns those that came (possibly none).
    pub fn poll(&self, timeout: Duration) -> io::Result<Vec<Vec<u8>>> {
        self.ring
            .poll(timeout)
            .map_err(|err| io::Error::other(format!("polling the exec ring buffer: {err}")))?;
        Ok(self.records.try_iter().collect())
    }

    /// The program's counters now.
    pub fn stats(&self) -> io::Result<ExecStats> {
        let per_cpu = self
            .skel
            .maps
            .stats
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(|err| io::Error::other(format!("reading the exec counters: {err}")))?
            .unwrap_or_default();
        let mut sum = ExecStats::default();
        for cpu in per_cpu {
            let field = |i: usize| {
                cpu.get(i * 8..i * 8 + 8)
                    .map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap()))
            };
            sum.seen += field(0);
            sum.dropped += field(1);
            sum.truncated += field(2);
        }
        Ok(sum)
    }
}

fn open_and_load(ring_bytes: u32, hook: Hook) -> Result<ExecSkel<'static>, libbpf_rs::Error> {
    // The skeleton borrows its object for as long as it lives, and the probe lives as long as
    // the source: one small allocation per load, kept.
    let object: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
    let mut open = ExecSkelBuilder::default().open(object)?;
    open.maps.events.set_max_entries(ring_bytes)?;
    let cpus = libbpf_rs::num_possible_cpus()?;
    open.maps
        .scratch
        .set_max_entries(u32::try_from(cpus).unwrap_or(u32::MAX))?;
    open.progs
        .exec_btf
        .set_autoload(hook == Hook::BtfTracepoint);
    open.progs.exec_tp.set_autoload(hook == Hook::Tracepoint);
    let mut skel = open.load()?;
    skel.attach()?;
    Ok(skel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn components(parts: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts.iter().rev() {
            out.extend_from_slice(p.as_bytes());
            out.push(0);
        }
        out
    }

    fn record(exe: &[&str], argv: &[u8], cwd: &[&str], flags: u8) -> Vec<u8> {
        let (exe, cwd) = (components(exe), components(cwd));
        let (exe_len, argv_len, cwd_len) = (exe.len(), argv.len(), cwd.len());
        let mut raw = vec![0u8; HEADER];
        raw[0..8].copy_from_slice(&7u64.to_le_bytes());
        raw[8..16].copy_from_slice(&1234u64.to_le_bytes());
        raw[16..24].copy_from_slice(&(argv_len as u64).to_le_bytes());
        raw[24..28].copy_from_slice(&42u32.to_le_bytes());
        raw[28..32].copy_from_slice(&1u32.to_le_bytes());
        raw[32..36].copy_from_slice(&1000u32.to_le_bytes());
        raw[36..40].copy_from_slice(&1000u32.to_le_bytes());
        raw[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        raw[44..48].copy_from_slice(&3u32.to_le_bytes());
        raw[52..54].copy_from_slice(&(exe_len as u16).to_le_bytes());
        raw[54..56].copy_from_slice(&(argv_len as u16).to_le_bytes());
        raw[56..58].copy_from_slice(&(cwd_len as u16).to_le_bytes());
        raw[58] = flags;
        raw[64..67].copy_from_slice(b"tor");
        raw[80..84].copy_from_slice(b"bash");
        raw.extend_from_slice(&exe);
        raw.extend_from_slice(argv);
        raw.extend_from_slice(&cwd);
        raw
    }

    #[test]
    fn a_record_gives_paths_root_first_and_the_raw_command_line() {
        let raw = record(
            &["home", "pupil", "tor-browser", "start"],
            b"./tor-browser/start\0--detach\0",
            &["home", "pupil"],
            0,
        );
        let r = ExecRecord::parse(&raw).unwrap();
        assert_eq!(
            r.exe.as_deref(),
            Some(&b"/home/pupil/tor-browser/start"[..])
        );
        assert_eq!(r.cwd.as_deref(), Some(&b"/home/pupil"[..]));
        assert_eq!(r.argv, b"./tor-browser/start\0--detach\0");
        assert_eq!((r.pid, r.ppid, r.uid, r.exe_inode), (42, 1, 1000, 1234));
        assert_eq!((r.login_uid, r.session_id), (None, Some(3)));
        assert_eq!(
            (r.comm.as_slice(), r.parent_comm.as_slice()),
            (&b"tor"[..], &b"bash"[..])
        );
        assert!(r.truncated.is_empty());
    }

    #[test]
    fn flags_say_what_was_cut_or_absent() {
        let raw = record(
            &[],
            b"",
            &[],
            FLAG_ARGV_TRUNCATED | FLAG_NO_EXE | FLAG_CWD_TRUNCATED,
        );
        let r = ExecRecord::parse(&raw).unwrap();
        assert_eq!(r.exe, None);
        // A cwd at the root has no components.
        assert_eq!(r.cwd.as_deref(), Some(&b"/"[..]));
        assert_eq!(r.truncated, ["argv", "cwd"]);
    }

    #[test]
    fn a_record_shorter_than_it_claims_is_refused() {
        let mut raw = record(&["bin", "true"], b"true\0", &["tmp"], 0);
        raw.truncate(raw.len() - 2);
        let err = ExecRecord::parse(&raw).unwrap_err();
        assert!(err.to_string().contains("exceed"), "{err}");
        assert!(ExecRecord::parse(&raw[..10]).is_err());
    }

    #[test]
    fn preflight_names_each_reason() {
        let dir = tempfile::tempdir().unwrap();
        let btf = dir.path().join("vmlinux");
        fs::write(&btf, b"").unwrap();
        let lockdown = dir.path().join("lockdown");
        let pf = |release: &str, btf: &Path| Preflight {
            btf: btf.to_path_buf(),
            lockdown: lockdown.clone(),
            release: release.into(),
        };
        assert!(pf("6.18.44-fc", &btf).check().is_ok(), "no lockdown file");
        let missing = dir.path().join("absent");
        assert!(matches!(
            pf("6.1.0", &missing).check(),
            Err(Unavailable::NoBtf(_))
        ));
        assert!(matches!(
            pf("5.4.0-150-generic", &btf).check(),
            Err(Unavailable::OldKernel(_))
        ));
        assert!(matches!(
            pf("5.10.0", &btf).check(),
            Err(Unavailable::OldKernel(_))
        ));
        assert!(pf("5.17.0", &btf).check().is_ok());
        fs::write(&lockdown, "none [integrity] confidentiality\n").unwrap();
        assert!(
            pf("6.1.0", &btf).check().is_ok(),
            "integrity allows BPF reads"
        );
        fs::write(&lockdown, "none integrity [confidentiality]\n").unwrap();
        let err = pf("6.1.0", &btf).check().unwrap_err();
        assert!(err.to_string().contains("confidentiality"), "{err}");
    }
}
