//! Browser posture: what the managed policies on this device leave a pupil able to do unseen.
//!
//! Read from the policy files an administrator deploys (`deploy/browsers/policies`), for each
//! browser installed: whether a private window (incognito, InPrivate, Brave's private and Tor
//! windows, a guest profile) is still available, where neither history nor, in Chromium-family
//! browsers, the extension sees it; whether the extension is force-installed; whether developer
//! mode lets a pupil switch extensions off. Reported with each heartbeat; the collector raises
//! the technician alert.
//!
//! Linux only today: Windows keeps the same policies in the registry, which is not read yet.

use invigilator_proto::v1::BrowserPosture;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The Chromium-family extension's id (`agent/browser-extension/EXTENSION_ID`).
pub const EXTENSION_ID: &str = "mkjmmkmajbhcpdaljidmdhfegfobbiin";
/// Policy files larger than this are not read (and named as a problem).
const MAX_POLICY_BYTES: u64 = 256 * 1024;
/// Policy files read per directory, at most.
const MAX_POLICY_FILES: usize = 32;

#[derive(Clone, Copy)]
enum Family {
    /// Chrome and Chromium: `IncognitoModeAvailability`.
    Chromium,
    /// Edge: `InPrivateModeAvailability`.
    Edge,
    /// Brave: incognito, and private windows with Tor (`TorDisabled`).
    Brave,
}

struct Known {
    browser: &'static str,
    executables: &'static [&'static str],
    policies: &'static [&'static str],
    family: Option<Family>,
}

/// Where each browser is installed and reads its managed policies, on Debian and Ubuntu.
const KNOWN: &[Known] = &[
    Known {
        browser: "chromium",
        executables: &[
            "usr/bin/chromium",
            "usr/bin/chromium-browser",
            "snap/bin/chromium",
        ],
        policies: &[
            "etc/chromium/policies/managed",
            "etc/chromium-browser/policies/managed",
        ],
        family: Some(Family::Chromium),
    },
    Known {
        browser: "chrome",
        executables: &["opt/google/chrome/chrome"],
        policies: &["etc/opt/chrome/policies/managed"],
        family: Some(Family::Chromium),
    },
    Known {
        browser: "edge",
        executables: &["opt/microsoft/msedge/msedge"],
        policies: &["etc/opt/edge/policies/managed"],
        family: Some(Family::Edge),
    },
    Known {
        browser: "brave",
        executables: &["opt/brave.com/brave/brave"],
        policies: &["etc/brave/policies/managed"],
        family: Some(Family::Brave),
    },
    Known {
        browser: "firefox",
        executables: &[
            "usr/lib/firefox-esr/firefox-esr",
            "usr/lib/firefox/firefox",
            "snap/bin/firefox",
        ],
        policies: &[
            "etc/firefox/policies/policies.json",
            "usr/lib/firefox-esr/distribution/policies.json",
            "usr/lib/firefox/distribution/policies.json",
        ],
        family: None,
    },
];

/// The posture of every known browser installed under `root` ("/" on a device).
pub fn read(root: &Path) -> Vec<BrowserPosture> {
    KNOWN
        .iter()
        .filter(|k| k.executables.iter().any(|e| root.join(e).exists()))
        .map(|k| {
            let mut problems = Vec::new();
            let files: Vec<(PathBuf, String)> = k
                .policies
                .iter()
                .flat_map(|p| policy_files(&root.join(p), &mut problems))
                .collect();
            let mut policies = Map::new();
            for (path, text) in files {
                match serde_json::from_str::<Map<String, Value>>(&text) {
                    Ok(map) => policies.extend(map),
                    Err(e) => problems.push(format!("{}: not a JSON object: {e}", path.display())),
                }
            }
            let mut p = match k.family {
                Some(family) => chromium_posture(family, &policies),
                None => firefox_posture(&policies),
            };
            p.browser = k.browser.into();
            p.problems = problems;
            p
        })
        .collect()
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

fn chromium_posture(family: Family, p: &Map<String, Value>) -> BrowserPosture {
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
                e.strip_prefix(EXTENSION_ID)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(';'))
            })
        });
    let forced_by_settings = p
        .get("ExtensionSettings")
        .and_then(|s| s.get(EXTENSION_ID))
        .and_then(|s| s.get("installation_mode"))
        .and_then(Value::as_str)
        == Some("force_installed");
    BrowserPosture {
        private_unseen: !(private_off && guest_off),
        extension_forced: forced_by_list || forced_by_settings,
        developer_mode: int("ExtensionDeveloperModeSettings") != Some(1),
        ..Default::default()
    }
}

fn firefox_posture(file: &Map<String, Value>) -> BrowserPosture {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn install(root: &Path, exe: &str) {
        let p = root.join(exe);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "").unwrap();
    }

    fn shipped(rel: &str) -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/browsers/policies")
                .join(rel),
        )
        .unwrap()
    }

    fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn the_id_is_the_extensions() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser-extension/EXTENSION_ID");
        assert_eq!(std::fs::read_to_string(file).unwrap().trim(), EXTENSION_ID);
    }

    #[test]
    fn only_installed_browsers_are_reported_and_unmanaged_ones_are_open() {
        let root = tempfile::tempdir().unwrap();
        assert!(read(root.path()).is_empty());
        install(root.path(), "usr/bin/chromium");
        install(root.path(), "usr/lib/firefox-esr/firefox-esr");
        let got = read(root.path());
        let names: Vec<&str> = got.iter().map(|p| p.browser.as_str()).collect();
        assert_eq!(names, ["chromium", "firefox"]);
        for p in &got {
            assert!(
                p.private_unseen && !p.extension_forced && p.developer_mode,
                "{p:?}"
            );
            assert!(p.problems.is_empty());
        }
    }

    #[test]
    fn the_shipped_policies_close_every_unseen_window() {
        let root = tempfile::tempdir().unwrap();
        for exe in [
            "usr/bin/chromium",
            "opt/google/chrome/chrome",
            "opt/microsoft/msedge/msedge",
            "opt/brave.com/brave/brave",
            "usr/lib/firefox-esr/firefox-esr",
        ] {
            install(root.path(), exe);
        }
        for dir in [
            "etc/chromium/policies/managed",
            "etc/opt/chrome/policies/managed",
        ] {
            for f in [
                "invigilator-private-browsing.json",
                "invigilator-extension.json",
            ] {
                put(
                    root.path(),
                    &format!("{dir}/{f}"),
                    &shipped(&format!("chromium/{f}")),
                );
            }
        }
        put(
            root.path(),
            "etc/opt/edge/policies/managed/invigilator.json",
            &shipped("edge/invigilator.json"),
        );
        put(
            root.path(),
            "etc/brave/policies/managed/invigilator.json",
            &shipped("brave/invigilator.json"),
        );
        put(
            root.path(),
            "etc/firefox/policies/policies.json",
            &shipped("firefox/policies.json"),
        );
        for p in read(root.path()) {
            assert!(!p.private_unseen && p.extension_forced, "{p:?}");
            assert!(p.problems.is_empty(), "{p:?}");
            assert_eq!(p.developer_mode, p.browser == "firefox", "{p:?}");
        }
        // Chromium's private-window file alone: private windows closed, the extension not forced.
        std::fs::remove_file(
            root.path()
                .join("etc/chromium/policies/managed/invigilator-extension.json"),
        )
        .unwrap();
        let chromium = read(root.path())
            .into_iter()
            .find(|p| p.browser == "chromium")
            .unwrap();
        assert!(!chromium.private_unseen && !chromium.extension_forced);
        // Brave with Tor windows left on is still open.
        put(
            root.path(),
            "etc/brave/policies/managed/zz-tor.json",
            r#"{"TorDisabled": false}"#,
        );
        let brave = read(root.path())
            .into_iter()
            .find(|p| p.browser == "brave")
            .unwrap();
        assert!(brave.private_unseen);
    }

    #[test]
    fn a_broken_policy_file_is_named_and_counts_as_no_policy() {
        let root = tempfile::tempdir().unwrap();
        install(root.path(), "usr/bin/chromium");
        put(
            root.path(),
            "etc/chromium/policies/managed/a.json",
            "{\"IncognitoModeAvailability\": 1,",
        );
        put(
            root.path(),
            "etc/chromium/policies/managed/big.json",
            &" ".repeat(300 * 1024),
        );
        let p = &read(root.path())[0];
        assert!(p.private_unseen);
        assert_eq!(p.problems.len(), 2, "{p:?}");
        assert!(
            p.problems
                .iter()
                .any(|m| m.contains("a.json: not a JSON object")),
            "{p:?}"
        );
        assert!(
            p.problems
                .iter()
                .any(|m| m.contains("big.json: larger than")),
            "{p:?}"
        );
    }
}
