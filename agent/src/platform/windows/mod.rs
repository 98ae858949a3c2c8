//! Windows: where things are. Everything here is pure string arithmetic on Windows paths (no
//! OS calls), so it compiles and is unit-tested on Linux as well.
//!
//! The Windows process source is the sysinfo poller in `sources::process::poll`, which is the
//! only mode on Windows (see `deploy/windows/NOTES.md` for what comes next).

pub mod profiles;

pub use profiles::{HistoryDb, discover_history, state_dir, users_dir};

/// Joins Windows path components with single backslashes, whatever separators (`\` or `/`)
/// the parts carry: `join("C:\\Users\\", &["ada", "AppData"])` is `C:\Users\ada\AppData`.
pub fn join(base: &str, parts: &[&str]) -> String {
    let mut out = base.replace('/', "\\").trim_end_matches('\\').to_owned();
    for part in parts {
        let part = part.replace('/', "\\");
        let part = part.trim_matches('\\');
        if part.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('\\');
        }
        out.push_str(part);
    }
    out
}
