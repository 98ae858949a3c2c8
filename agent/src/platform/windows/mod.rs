//! Windows: where things are, and the bindings to what only Windows has. The pure parts (path
//! arithmetic on strings, session-change bookkeeping, the ETW process-start payload, device
//! ids) compile and are unit-tested on Linux as well; `etw`, `service`, `setupapi`, `volumes` and `wts` call
//! Windows and build only there.

pub mod device_id;
#[cfg(windows)]
pub mod etw;
pub mod etw_layout;
pub mod profiles;
#[cfg(windows)]
pub mod service;
pub mod session_change;
#[cfg(windows)]
pub mod setupapi;
#[cfg(windows)]
pub mod volumes;
#[cfg(windows)]
pub mod wts;

pub use profiles::{state_dir, users_dir};

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

/// `icacls` arguments that leave a folder (and, through inheritance, everything created in it)
/// to SYSTEM (S-1-5-18) and the Administrators group (S-1-5-32-544) only: inherited entries
/// removed, full control granted to those two. The Windows counterpart of mode 0700.
pub const ICACLS_SYSTEM_AND_ADMINS_ONLY: [&str; 5] = [
    "/inheritance:r",
    "/grant:r",
    "*S-1-5-18:(OI)(CI)F",
    "/grant:r",
    "*S-1-5-32-544:(OI)(CI)F",
];

/// Where `icacls.exe` is, given `%SystemRoot%` (unset: `C:\Windows`). An absolute path, so a
/// program of that name elsewhere on PATH is never run.
pub fn icacls_path(system_root: Option<&str>) -> String {
    let root = system_root
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or(r"C:\Windows");
    join(root, &["System32", "icacls.exe"])
}

/// Restricts `dir` to SYSTEM and Administrators ([`ICACLS_SYSTEM_AND_ADMINS_ONLY`]), before
/// anything secret is written into it.
#[cfg(windows)]
pub fn restrict_to_system_and_admins(dir: &std::path::Path) -> std::io::Result<()> {
    let icacls = icacls_path(std::env::var("SystemRoot").ok().as_deref());
    let out = std::process::Command::new(&icacls)
        .arg(dir)
        .args(ICACLS_SYSTEM_AND_ADMINS_ONLY)
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "{icacls} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icacls_is_found_under_the_system_root() {
        assert_eq!(icacls_path(None), r"C:\Windows\System32\icacls.exe");
        assert_eq!(
            icacls_path(Some(r"D:\WINDOWS\")),
            r"D:\WINDOWS\System32\icacls.exe"
        );
    }

    #[test]
    fn only_system_and_administrators_keep_access() {
        let args = ICACLS_SYSTEM_AND_ADMINS_ONLY.join(" ");
        assert!(args.starts_with("/inheritance:r "), "{args}");
        let grants: Vec<&str> = ICACLS_SYSTEM_AND_ADMINS_ONLY
            .iter()
            .copied()
            .filter(|a| a.starts_with('*'))
            .collect();
        assert_eq!(grants, ["*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F"]);
    }
}
