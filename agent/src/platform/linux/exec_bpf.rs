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

pub use super::exec_record::{ExecRecord, Malformed};
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
    /// Looks at `btf` and `lockdown` (the process source's settings, `/sys/kernel/...` by
    /// default) and at this machine's kernel release.
    pub fn new(btf: PathBuf, lockdown: PathBuf) -> Self {
        Self {
            btf,
            lockdown,
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
