//! Windows: where things are, and the bindings to what only Windows has. The pure parts (path
//! arithmetic on strings, the ETW process-start payload, device ids) compile and are
//! unit-tested on Linux as well; `etw`, `pipe`, `setupapi`, `volumes` and `wts` call Windows and build
//! only there. Nothing here knows the sources that use it.

pub mod device_id;
#[cfg(windows)]
pub mod etw;
pub mod etw_layout;
#[cfg(windows)]
pub mod pipe;
pub mod profiles;
#[cfg(windows)]
pub mod setupapi;
#[cfg(windows)]
pub mod volumes;
#[cfg(windows)]
pub mod wts;

pub use profiles::{state_dir, users_dir};

/// What Windows says of a session when asked (`wts::lookup`): its user, empty if Windows no
/// longer has it, and whether the client is remote (Remote Desktop).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionLookup {
    pub user: String,
    pub remote: bool,
}

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

/// Where a system program is, given `%SystemRoot%` (unset: `C:\Windows`): `System32\<file>`. An
/// absolute path, so a program of that name elsewhere on PATH is never run.
pub fn system32(system_root: Option<&str>, file: &str) -> String {
    let root = system_root
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or(r"C:\Windows");
    join(root, &["System32", file])
}

/// [`system32`] under this process's `%SystemRoot%`.
#[cfg(windows)]
pub fn system_program(file: &str) -> String {
    system32(std::env::var("SystemRoot").ok().as_deref(), file)
}

/// A NUL-terminated UTF-16 string (the whole slice when there is no NUL), lossily.
pub fn utf16_z(units: &[u16]) -> String {
    let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
    String::from_utf16_lossy(&units[..end])
}

/// Restricts `dir` to SYSTEM and Administrators ([`ICACLS_SYSTEM_AND_ADMINS_ONLY`]), before
/// anything secret is written into it.
#[cfg(windows)]
pub fn restrict_to_system_and_admins(dir: &std::path::Path) -> std::io::Result<()> {
    let icacls = system_program("icacls.exe");
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
    fn system_programs_are_found_under_the_system_root() {
        assert_eq!(
            system32(None, "icacls.exe"),
            r"C:\Windows\System32\icacls.exe"
        );
        assert_eq!(
            system32(Some(r"D:\WINDOWS\"), "cmd.exe"),
            r"D:\WINDOWS\System32\cmd.exe"
        );
        assert_eq!(
            system32(Some("  "), "cmd.exe"),
            r"C:\Windows\System32\cmd.exe"
        );
    }

    #[test]
    fn utf16_strings_end_at_the_first_nul() {
        let units: Vec<u16> = "ada\0junk".encode_utf16().collect();
        assert_eq!(utf16_z(&units), "ada");
        assert_eq!(
            utf16_z(&"no nul".encode_utf16().collect::<Vec<_>>()),
            "no nul"
        );
        assert_eq!(utf16_z(&[0xD800, 0]), "\u{FFFD}");
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
