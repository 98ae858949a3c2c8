//! The records the eBPF exec program (`bpf/exec.bpf.c`) writes to its ring buffer, parsed. Pure
//! and free of libbpf, so it builds everywhere and the fuzzers reach it: the paths and the
//! command line inside are whatever a pupil chose to name and run.

/// Record header size and field offsets: the layout of `struct exec_record` in exec.bpf.c.
const HEADER: usize = 96;
const FLAG_EXE_TRUNCATED: u8 = 1;
const FLAG_ARGV_TRUNCATED: u8 = 2;
const FLAG_CWD_TRUNCATED: u8 = 4;
const FLAG_NO_EXE: u8 = 8;
const FLAG_NO_CWD: u8 = 16;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
