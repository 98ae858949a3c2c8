//! What /proc says about a process. Every read can fail on its own (the process has exited, or
//! belongs to another user and we are not root), so every field is optional and callers report
//! the missing ones rather than drop the process.

use invigilator_proto::limits;
use std::fs;
use std::io::{self, Read};
use std::sync::OnceLock;

/// One process as /proc showed it. `None` means that detail could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Absolute path of the executable (`/proc/PID/exe`).
    pub exe: Option<String>,
    /// `None` also when the command line is empty, as it is for zombies. Within the argument
    /// budgets of `invigilator_proto::limits`.
    pub argv: Option<Vec<String>>,
    /// The command line's full length in bytes when `argv` was cut to its budget.
    pub argv_bytes: Option<u64>,
    /// Real user id.
    pub uid: Option<u32>,
    pub ppid: Option<u32>,
    /// `comm`: at most 15 bytes.
    pub name: Option<String>,
    pub parent_name: Option<String>,
    /// With the PID, identifies this process across PID reuse.
    pub start_ticks: Option<u64>,
}

/// `/proc/PID/stat` fields the process source needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// As in /proc/PID/comm: exec sets it to the new program's name.
    pub comm: String,
    /// Start time in clock ticks since boot (`CLOCK_BOOTTIME`).
    pub start_ticks: u64,
    pub kernel_thread: bool,
}

/// `PF_KTHREAD` in the `flags` field of /proc/PID/stat.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Reads everything about `pid`, most perishable first: a short-lived process may be gone
/// half-way through, and its executable and command line matter most. `stat` is read after the
/// process's own files so that, if its start time is the exec's, those earlier reads are known to
/// be of the same process (a PID cannot be reused while its process lives).
pub fn read_process(pid: u32) -> ProcessInfo {
    let dir = format!("/proc/{pid}");
    let exe = fs::read_link(format!("{dir}/exe"))
        .ok()
        .map(|path| path.to_string_lossy().into_owned());
    let (argv, argv_bytes) = match read_bounded(&format!("{dir}/cmdline"), limits::ARGV_TOTAL) {
        Ok((raw, full)) => {
            let (argv, cut) = parse_cmdline(&raw).map_or((None, false), |(a, c)| (Some(a), c));
            let cut = cut || full > raw.len() as u64;
            (argv, cut.then_some(full))
        }
        Err(_) => (None, None),
    };
    let (uid, ppid) = fs::read_to_string(format!("{dir}/status"))
        .map(|status| parse_status(&status))
        .unwrap_or_default();
    let name = read_comm(pid);
    let start_ticks = read_stat(pid).map(|stat| stat.start_ticks);
    // PID 0 is no process: init and kthreadd have no parent to name.
    let parent_name = ppid.filter(|&ppid| ppid != 0).and_then(read_comm);
    ProcessInfo {
        exe,
        argv,
        argv_bytes,
        uid,
        ppid,
        name,
        parent_name,
        start_ticks,
    }
}

pub fn read_comm(pid: u32) -> Option<String> {
    let comm = fs::read(format!("/proc/{pid}/comm")).ok()?;
    let comm = comm.strip_suffix(b"\n").unwrap_or(&comm);
    Some(String::from_utf8_lossy(comm).into_owned())
}

pub fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The numeric entries of /proc: every process (not thread) now alive.
pub fn list_pids() -> io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc")? {
        if let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// The kernel's id of the current boot: a new one after every reboot, the same across agent
/// restarts. None where /proc does not say (not Linux, or a restricted container).
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    // A UUID: anything else is not what the kernel writes there.
    (id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .then(|| id.to_owned())
}

/// Time since boot including suspend (`CLOCK_BOOTTIME`, the clock of `start_ticks`), from
/// /proc/uptime: to 10 ms.
pub fn uptime_ns() -> Option<u64> {
    parse_uptime(&fs::read_to_string("/proc/uptime").ok()?)
}

/// Converts /proc/PID/stat clock ticks (`USER_HZ`) to nanoseconds.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    let ns = u128::from(ticks) * 1_000_000_000 / u128::from(clock_ticks_per_second());
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// `USER_HZ`, which the kernel hands every process in its auxiliary vector (`AT_CLKTCK`); read
/// from there because `sysconf` is not reachable without unsafe code here. 100 on every
/// mainstream architecture, hence the fallback.
fn clock_ticks_per_second() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| {
        fs::read("/proc/self/auxv")
            .ok()
            .and_then(|auxv| parse_auxv_clktck(&auxv))
            .filter(|&hz| hz > 0)
            .unwrap_or(100)
    })
}

fn parse_auxv_clktck(auxv: &[u8]) -> Option<u64> {
    const AT_CLKTCK: u64 = 17;
    const WORD: usize = size_of::<usize>();
    let word =
        |bytes: &[u8]| -> Option<u64> { Some(usize::from_ne_bytes(bytes.try_into().ok()?) as u64) };
    auxv.chunks_exact(2 * WORD)
        .find_map(|pair| (word(&pair[..WORD])? == AT_CLKTCK).then(|| word(&pair[WORD..]))?)
}

/// The first `keep` bytes of a file, and its whole length. A command line can be megabytes (a
/// pupil's `execve` with huge arguments): only the budget is kept in memory, the rest is counted
/// in small reads (up to `COUNT_AT_MOST`, beyond which the length is reported as that).
fn read_bounded(path: &str, keep: usize) -> io::Result<(Vec<u8>, u64)> {
    const COUNT_AT_MOST: u64 = 64 * 1024 * 1024;
    let file = fs::File::open(path)?;
    let mut head = Vec::new();
    let mut reader = file.take(COUNT_AT_MOST);
    (&mut reader).take(keep as u64).read_to_end(&mut head)?;
    let rest = io::copy(&mut reader, &mut io::sink())?;
    let full = head.len() as u64 + rest;
    Ok((head, full))
}

/// NUL-separated arguments; the last one is NUL-terminated too. Each argument is cut to its
/// budget before the lossy conversion. True if anything was cut.
#[doc(hidden)]
pub fn parse_cmdline(raw: &[u8]) -> Option<(Vec<String>, bool)> {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    if raw.is_empty() {
        return None;
    }
    let (argv, full) = limits::argv(raw.split(|&b| b == 0));
    Some((argv, full.is_some()))
}

/// `(real uid, ppid)` from the `Uid:` (real, effective, saved, filesystem) and `PPid:` lines.
#[doc(hidden)]
pub fn parse_status(status: &str) -> (Option<u32>, Option<u32>) {
    let mut uid = None;
    let mut ppid = None;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("Uid:") {
            uid = rest.split_whitespace().next().and_then(|v| v.parse().ok());
        } else if let Some(rest) = line.strip_prefix("PPid:") {
            ppid = rest.trim().parse().ok();
        }
    }
    (uid, ppid)
}

/// `pid (comm) state ppid ...`: comm may contain spaces and parentheses, so fields are counted
/// from the last `)`. After it, field 3 (state) is index 0.
#[doc(hidden)]
pub fn parse_stat(stat: &str) -> Option<Stat> {
    let (before, after_comm) = stat.rsplit_once(')')?;
    let (_, comm) = before.split_once('(')?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        comm: comm.to_owned(),
        start_ticks: field(22)?,
        kernel_thread: field(9)? & PF_KTHREAD != 0,
    })
}

/// First field of /proc/uptime, `SECONDS.CENTISECONDS`.
fn parse_uptime(uptime: &str) -> Option<u64> {
    let first = uptime.split_whitespace().next()?;
    let (secs, frac) = first.split_once('.').unwrap_or((first, "0"));
    let secs: u64 = secs.parse().ok()?;
    let frac_digits = frac.len().min(9);
    let frac: u64 = frac.get(..frac_digits)?.parse().ok()?;
    let frac_ns = frac * 10u64.pow(9 - frac_digits as u32);
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = read_process(std::process::id());
        let exe = me.exe.expect("own exe");
        assert_eq!(
            std::path::Path::new(&exe),
            std::env::current_exe().unwrap().as_path()
        );
        let argv = me.argv.expect("own argv");
        assert_eq!(argv, std::env::args().collect::<Vec<_>>());
        assert_eq!(me.uid, Some(nix::unistd::getuid().as_raw()));
        assert_eq!(me.ppid, Some(nix::unistd::getppid().as_raw() as u32));
        assert!(me.name.is_some_and(|n| !n.is_empty() && n.len() <= 15));
        assert!(me.parent_name.is_some_and(|n| !n.is_empty()));
        let start = me.start_ticks.expect("own start time");
        // Started before now, on the same clock /proc/uptime reports.
        assert!(ticks_to_ns(start) <= uptime_ns().unwrap() + 10_000_000);
    }

    #[test]
    fn missing_process_has_nothing() {
        // Above any pid_max the kernel allows.
        assert_eq!(read_process(u32::MAX), ProcessInfo::default());
        assert_eq!(read_stat(u32::MAX), None);
    }

    #[test]
    fn lists_own_pid() {
        assert!(list_pids().unwrap().contains(&std::process::id()));
    }

    #[test]
    fn kernel_threads_are_flagged() {
        // kthreadd is PID 2 on every Linux since 2.6.
        if let Some(stat) = read_stat(2) {
            assert!(stat.kernel_thread);
        }
        assert!(!read_stat(std::process::id()).unwrap().kernel_thread);
    }

    #[test]
    fn parses_stat_with_awkward_comm() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 \
                    10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                comm: "a) b (c)".into(),
                start_ticks: 98765,
                kernel_thread: false
            })
        );
        assert_eq!(parse_stat("42 (truncated"), None);
    }

    #[test]
    fn parses_cmdline() {
        assert_eq!(
            parse_cmdline(b"/bin/sh\0-c\0echo hi\0").map(|(a, _)| a),
            Some(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(parse_cmdline(b""), None);
        assert_eq!(
            parse_cmdline(b"rewritten title"),
            Some((vec!["rewritten title".into()], false))
        );
    }

    #[test]
    fn a_huge_command_line_of_invalid_bytes_stays_in_budget() {
        let mut raw = b"sleep\x003\x00".to_vec();
        for _ in 0..15 {
            raw.extend(std::iter::repeat_n(0xffu8, 131_000));
            raw.push(0);
        }
        let (argv, cut) = parse_cmdline(&raw[..limits::ARGV_TOTAL]).unwrap();
        assert!(cut);
        assert_eq!(&argv[..2], ["sleep", "3"]);
        assert!(argv.iter().map(String::len).sum::<usize>() <= limits::ARGV_TOTAL);
    }

    #[test]
    fn a_bounded_read_keeps_the_head_and_counts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmdline");
        std::fs::write(&path, vec![b'a'; 100_000]).unwrap();
        let (head, full) = read_bounded(path.to_str().unwrap(), 1000).unwrap();
        assert_eq!((head.len(), full), (1000, 100_000));
    }

    #[test]
    fn parses_status() {
        let status = "Name:\tbash\nPPid:\t77\nTracerPid:\t0\nUid:\t1000\t0\t0\t0\n";
        assert_eq!(parse_status(status), (Some(1000), Some(77)));
        assert_eq!(parse_status("Name:\tx\n"), (None, None));
    }

    #[test]
    fn parses_uptime() {
        assert_eq!(
            parse_uptime("350735.47 234388.90\n"),
            Some(350_735_470_000_000)
        );
        assert_eq!(parse_uptime("12 3"), Some(12_000_000_000));
        assert_eq!(parse_uptime("x"), None);
    }

    #[test]
    fn clock_ticks_come_from_auxv() {
        let mut auxv = Vec::new();
        for (key, value) in [(6usize, 4096usize), (17, 250), (0, 0)] {
            auxv.extend(key.to_ne_bytes());
            auxv.extend(value.to_ne_bytes());
        }
        assert_eq!(parse_auxv_clktck(&auxv), Some(250));
        assert_eq!(parse_auxv_clktck(&auxv[..16]), None);
        assert_eq!(clock_ticks_per_second(), 100);
    }
}
