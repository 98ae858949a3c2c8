//! Browser posture on Windows: each browser installed under Program Files, judged from its
//! machine policy key under `HKLM\SOFTWARE\Policies` (where Group Policy and Intune write it;
//! a pupil can write the user's own key, which cannot loosen a machine policy, so it is not
//! read), and for Firefox, failing a key, `distribution\policies.json` beside `firefox.exe`.

use super::registry::{RegData, policies};
use super::{Family, chromium_posture, firefox_posture, read_policy_files};
use invigilator_proto::v1::BrowserPosture;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use winreg::enums::{HKEY_LOCAL_MACHINE, KEY_READ, RegType};
use winreg::types::FromRegValue;
use winreg::{RegKey, RegValue};

/// Values read from one key at most: a policy key holds a few dozen.
const MAX_VALUES: usize = 512;
/// The list policies judged here, read from subkeys.
const LISTS: &[&str] = &["ExtensionInstallForcelist"];

struct Known {
    browser: &'static str,
    /// Relative to a Program Files folder.
    executables: &'static [&'static str],
    key: &'static str,
    family: Option<Family>,
}

const KNOWN: &[Known] = &[
    Known {
        browser: "chrome",
        executables: &["Google\\Chrome\\Application\\chrome.exe"],
        key: "SOFTWARE\\Policies\\Google\\Chrome",
        family: Some(Family::Chromium),
    },
    Known {
        browser: "edge",
        executables: &["Microsoft\\Edge\\Application\\msedge.exe"],
        key: "SOFTWARE\\Policies\\Microsoft\\Edge",
        family: Some(Family::Edge),
    },
    Known {
        browser: "brave",
        executables: &["BraveSoftware\\Brave-Browser\\Application\\brave.exe"],
        key: "SOFTWARE\\Policies\\BraveSoftware\\Brave",
        family: Some(Family::Brave),
    },
    Known {
        browser: "firefox",
        executables: &["Mozilla Firefox\\firefox.exe"],
        key: "SOFTWARE\\Policies\\Mozilla\\Firefox",
        family: None,
    },
];

/// The posture of every known browser installed. Blocking: for a blocking thread.
pub fn report(ids: &[String]) -> Vec<BrowserPosture> {
    let dirs = program_files();
    KNOWN
        .iter()
        .filter_map(|k| {
            let exe = dirs.iter().find_map(|d| {
                k.executables
                    .iter()
                    .map(|e| d.join(e))
                    .find(|p| p.is_file())
            })?;
            let mut problems = Vec::new();
            let (values, lists) = read_key(k.key, &mut problems);
            let empty = values.is_empty() && lists.is_empty();
            let map = policies(values, lists, &mut problems);
            let mut p = match k.family {
                Some(family) => chromium_posture(family, &map, ids),
                None => {
                    // Firefox reads policies.json only where no Group Policy is set.
                    let file = if empty {
                        distribution_policies(&exe, &mut problems)
                    } else {
                        Map::from_iter([("policies".to_owned(), Value::Object(map))])
                    };
                    firefox_posture(&file)
                }
            };
            p.browser = k.browser.into();
            p.problems = problems;
            Some(p)
        })
        .collect()
}

/// Every (browser, account SID) with a process running.
pub fn running() -> Vec<(&'static str, String)> {
    use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};
    let Ok(mut sys) = System::new() else {
        return Vec::new();
    };
    let kind = ProcessRefreshKind::nothing()
        .with_exe(UpdateKind::Always)
        .with_user(UpdateKind::Always);
    sys.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
    let mut found = Vec::new();
    for p in sys.processes().values() {
        let (Some(exe), Some(user)) = (p.exe(), p.user_id()) else {
            continue;
        };
        if let Some(browser) = browser_of_exe(exe) {
            let key = (browser, user.to_string());
            if !found.contains(&key) {
                found.push(key);
            }
        }
    }
    found
}

/// The known browser whose program `exe` is, wherever it is installed (Program Files, or a
/// user's own AppData, where Chrome's per-user install goes).
pub fn browser_of_exe(exe: &Path) -> Option<&'static str> {
    let exe = exe.to_string_lossy().to_ascii_lowercase();
    KNOWN
        .iter()
        .find(|k| {
            k.executables
                .iter()
                .any(|e| exe.ends_with(&format!("\\{}", e.to_ascii_lowercase())))
        })
        .map(|k| k.browser)
}

/// The Program Files folders (64-bit, then 32-bit), from the environment a service has.
fn program_files() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for var in ["ProgramW6432", "ProgramFiles", "ProgramFiles(x86)"] {
        if let Some(d) = std::env::var_os(var).map(PathBuf::from)
            && !dirs.contains(&d)
        {
            dirs.push(d);
        }
    }
    if dirs.is_empty() {
        dirs.push(PathBuf::from("C:\\Program Files"));
    }
    dirs
}

/// The key's values, and its list subkeys' values. A missing key is no policy, not a problem.
#[allow(clippy::type_complexity)]
fn read_key(
    path: &str,
    problems: &mut Vec<String>,
) -> (
    Vec<(String, RegData)>,
    Vec<(String, Vec<(String, RegData)>)>,
) {
    let key = match RegKey::predef(HKEY_LOCAL_MACHINE).open_subkey_with_flags(path, KEY_READ) {
        Ok(k) => k,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), Vec::new()),
        Err(e) => {
            problems.push(format!("HKLM\\{path}: {e}"));
            return (Vec::new(), Vec::new());
        }
    };
    let values = values_of(&key, path, problems);
    let lists = LISTS
        .iter()
        .filter_map(|name| {
            let sub = key.open_subkey_with_flags(name, KEY_READ).ok()?;
            Some(((*name).to_owned(), values_of(&sub, path, problems)))
        })
        .collect();
    (values, lists)
}

fn values_of(key: &RegKey, path: &str, problems: &mut Vec<String>) -> Vec<(String, RegData)> {
    let mut out = Vec::new();
    for (i, item) in key.enum_values().enumerate() {
        if i == MAX_VALUES {
            problems.push(format!(
                "HKLM\\{path}: more than {MAX_VALUES} values; the rest not read"
            ));
            break;
        }
        match item {
            Ok((name, value)) => out.push((name, data(&value))),
            Err(e) => problems.push(format!("HKLM\\{path}: {e}")),
        }
    }
    out
}

fn data(v: &RegValue) -> RegData {
    let read = match v.vtype {
        RegType::REG_DWORD => u32::from_reg_value(v).map(RegData::Dword),
        RegType::REG_SZ | RegType::REG_EXPAND_SZ => String::from_reg_value(v).map(RegData::Sz),
        RegType::REG_MULTI_SZ => Vec::<String>::from_reg_value(v).map(RegData::MultiSz),
        _ => Ok(RegData::Other),
    };
    read.unwrap_or(RegData::Other)
}

/// `distribution\policies.json` beside `firefox.exe`, as a policies file.
fn distribution_policies(exe: &Path, problems: &mut Vec<String>) -> Map<String, Value> {
    let dir = exe
        .parent()
        .map(|d| d.join("distribution").join("policies.json"));
    read_policy_files(dir, problems)
}
