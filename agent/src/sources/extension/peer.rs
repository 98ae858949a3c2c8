//! Which browser is on the other end of the socket, from the kernel's view of the peer: the
//! native-messaging host is this agent's own program, started by the browser, as the user. A
//! process that merely connects and claims to be a browser's extension is not counted as one.

use std::path::{Path, PathBuf};

/// The browser that started the host process `pid`, when `pid` runs this agent's executable
/// and its parent is a known browser's process of the same user.
pub fn browser_of(pid: i32, uid: u32) -> Option<&'static str> {
    let own = std::env::current_exe().ok()?;
    browser_of_in(Path::new("/proc"), &own, pid, uid)
}

fn browser_of_in(proc: &Path, own: &Path, pid: i32, uid: u32) -> Option<&'static str> {
    let host = proc.join(pid.to_string());
    if exe(&host)? != own {
        return None;
    }
    let status = std::fs::read_to_string(host.join("status")).ok()?;
    let (_, ppid) = crate::platform::linux::procfs::parse_status(&status);
    let parent = proc.join(ppid?.to_string());
    let status = std::fs::read_to_string(parent.join("status")).ok()?;
    let (parent_uid, _) = crate::platform::linux::procfs::parse_status(&status);
    if parent_uid? != uid {
        return None;
    }
    crate::posture::browser_of_exe(&exe(&parent)?)
}

fn exe(dir: &Path) -> Option<PathBuf> {
    std::fs::read_link(dir.join("exe")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(proc: &Path, pid: u32, exe: &str, uid: u32, ppid: u32) {
        let d = proc.join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink(exe, d.join("exe")).unwrap();
        std::fs::write(
            d.join("status"),
            format!("Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nPPid:\t{ppid}\n"),
        )
        .unwrap();
    }

    #[test]
    fn only_the_agents_program_started_by_a_browser_of_the_same_user_counts() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path();
        let own = Path::new("/usr/bin/invigilator-agent");
        process(proc, 100, "/usr/lib/chromium/chromium", 1000, 1);
        process(proc, 101, "/usr/bin/invigilator-agent", 1000, 100);
        process(proc, 102, "/usr/bin/python3", 1000, 100);
        process(proc, 103, "/usr/bin/invigilator-agent", 1000, 104);
        process(proc, 104, "/usr/bin/bash", 1000, 1);
        process(proc, 105, "/usr/lib/firefox-esr/firefox-esr", 0, 1);
        process(proc, 106, "/usr/bin/invigilator-agent", 1000, 105);
        assert_eq!(browser_of_in(proc, own, 101, 1000), Some("chromium"));
        assert_eq!(browser_of_in(proc, own, 102, 1000), None, "not the host");
        assert_eq!(
            browser_of_in(proc, own, 103, 1000),
            None,
            "started by a shell"
        );
        assert_eq!(
            browser_of_in(proc, own, 106, 1000),
            None,
            "another user's browser"
        );
        assert_eq!(browser_of_in(proc, own, 999, 1000), None, "gone");
    }
}
