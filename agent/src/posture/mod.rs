//! Browser posture: what the managed policies on this device leave a pupil able to do unseen.
//!
//! Read from the policy files an administrator deploys (`deploy/browsers/policies`), for each
//! browser installed: whether a private window (incognito, InPrivate, Brave's private and Tor
//! windows, a guest profile) is still available, where neither history nor, in Chromium-family
//! browsers, the extension sees it; whether the extension is force-installed; whether developer
//! mode lets a pupil switch extensions off. Reported with each heartbeat; the collector raises
//! the technician alert.
//!
//! The same policies are files on Linux (`linux`) and registry keys on Windows (`windows`, read
//! through `registry`): both become the JSON map each browser's policy documentation describes,
//! judged here.

use invigilator_proto::v1::BrowserPosture;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

pub use crate::sources::extension::EXTENSION_ID;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::browser_of_exe;
pub mod registry;
#[cfg(any(target_os = "linux", windows))]
mod watch;
#[cfg(any(target_os = "linux", windows))]
pub use watch::BrowserWatch;
#[cfg(windows)]
pub mod windows;
#[cfg(windows)]
pub use windows::browser_of_exe;

/// Policy files larger than this are not read (and named as a problem).
const MAX_POLICY_BYTES: u64 = 256 * 1024;
/// Policy files read per directory, at most.
const MAX_POLICY_FILES: usize = 32;

/// The policies in `paths` (each a managed-policy directory or one file), merged in order as
/// the browsers merge them; what could not be read or parsed is named in `problems`.
pub(crate) fn read_policy_files(
    paths: impl IntoIterator<Item = PathBuf>,
    problems: &mut Vec<String>,
) -> Map<String, Value> {
    let mut policies = Map::new();
    for path in paths {
        for (file, text) in policy_files(&path, problems) {
            match serde_json::from_str::<Map<String, Value>>(&text) {
                Ok(map) => policies.extend(map),
                Err(e) => problems.push(format!("{}: not a JSON object: {e}", file.display())),
            }
        }
    }
    policies
}

/// A managed-policy directory's `*.json` files in name order (as Chromium reads them), or the
/// one file Firefox reads; missing is no policy, not a problem.
fn policy_files(path: &Path, problems: &mut Vec<String>) -> Vec<(PathBuf, String)> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        if v.len() > MAX_POLICY_FILES {
            problems.push(format!(
                "{}: more than {MAX_POLICY_FILES} policy files; the rest not read",
                path.display()
            ));
            v.truncate(MAX_POLICY_FILES);
        }
        v
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        return Vec::new();
    };
    files
        .into_iter()
        .filter_map(|f| {
            let read = std::fs::metadata(&f).and_then(|m| {
                if m.len() > MAX_POLICY_BYTES {
                    Err(std::io::Error::other(format!(
                        "larger than {MAX_POLICY_BYTES} bytes"
                    )))
                } else {
                    std::fs::read_to_string(&f)
                }
            });
            match read {
                Ok(text) => Some((f, text)),
                Err(e) => {
                    problems.push(format!("{}: {e}", f.display()));
                    None
                }
            }
        })
        .collect()
}

#[derive(Clone, Copy)]
pub(crate) enum Family {
    /// Chrome and Chromium: `IncognitoModeAvailability`.
    Chromium,
    /// Edge: `InPrivateModeAvailability`.
    Edge,
    /// Brave: incognito, and private windows with Tor (`TorDisabled`).
    Brave,
}

pub(crate) fn chromium_posture(
    family: Family,
    p: &Map<String, Value>,
    ids: &[String],
) -> BrowserPosture {
    let int = |k: &str| p.get(k).and_then(Value::as_i64);
    let off = |k: &str| p.get(k).and_then(Value::as_bool) == Some(false);
    let private_off = match family {
        Family::Chromium => int("IncognitoModeAvailability") == Some(1),
        Family::Edge => int("InPrivateModeAvailability") == Some(1),
        Family::Brave => {
            int("IncognitoModeAvailability") == Some(1)
                && p.get("TorDisabled").and_then(Value::as_bool) == Some(true)
        }
    };
    // A guest profile keeps no history and runs no extension: as unseen as incognito.
    let guest_off = off("BrowserGuestModeEnabled");
    let forced_by_list = p
        .get("ExtensionInstallForcelist")
        .and_then(Value::as_array)
        .is_some_and(|l| {
            l.iter().filter_map(Value::as_str).any(|e| {
                ids.iter().any(|id| {
                    e.strip_prefix(id.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(';'))
                })
            })
        });
    let forced_by_settings = ids.iter().any(|id| {
        p.get("ExtensionSettings")
            .and_then(|s| s.get(id))
            .and_then(|s| s.get("installation_mode"))
            .and_then(Value::as_str)
            == Some("force_installed")
    });
    BrowserPosture {
        private_unseen: !(private_off && guest_off),
        extension_forced: forced_by_list || forced_by_settings,
        developer_mode: int("ExtensionDeveloperModeSettings") != Some(1),
        ..Default::default()
    }
}

pub(crate) fn firefox_posture(file: &Map<String, Value>) -> BrowserPosture {
    let p = file.get("policies").cloned().unwrap_or_default();
    let ours = p
        .get("ExtensionSettings")
        .and_then(|s| s.get(crate::native_host::FIREFOX_ID));
    let forced = ours
        .and_then(|s| s.get("installation_mode"))
        .and_then(Value::as_str)
        == Some("force_installed");
    let in_private = ours
        .and_then(|s| s.get("private_browsing"))
        .and_then(Value::as_bool)
        == Some(true);
    let private_disabled = p.get("DisablePrivateBrowsing").and_then(Value::as_bool) == Some(true);
    BrowserPosture {
        // Firefox lets a policy take the extension into private windows, which are then seen.
        private_unseen: !(private_disabled || (forced && in_private)),
        extension_forced: forced,
        developer_mode: p.get("DisableDeveloperTools").and_then(Value::as_bool) != Some(true),
        ..Default::default()
    }
}
