//! Browser posture on Linux: the managed-policy files of each browser installed, and which
//! browsers run, as whom (from /proc).

use super::{Family, chromium_posture, firefox_posture, read_policy_files};
use invigilator_proto::v1::BrowserPosture;
use std::path::Path;

struct Known {
    browser: &'static str,
    executables: &'static [&'static str],
    /// What /proc/PID/exe shows for its processes (launchers like /usr/bin/chromium are
    /// scripts).
    processes: &'static [&'static str],
    policies: &'static [&'static str],
    family: Option<Family>,
}

/// Where each browser is installed and reads its managed policies, on Debian and Ubuntu.
const KNOWN: &[Known] = &[
    Known {
        browser: "chromium",
        processes: &[
            "/usr/lib/chromium/chromium",
            "/usr/lib/chromium-browser/chromium-browser",
        ],
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
        processes: &["/opt/google/chrome/chrome"],
        executables: &["opt/google/chrome/chrome"],
        policies: &["etc/opt/chrome/policies/managed"],
        family: Some(Family::Chromium),
    },
    Known {
        browser: "edge",
        processes: &["/opt/microsoft/msedge/msedge"],
        executables: &["opt/microsoft/msedge/msedge"],
        policies: &["etc/opt/edge/policies/managed"],
        family: Some(Family::Edge),
    },
    Known {
        browser: "brave",
        processes: &["/opt/brave.com/brave/brave"],
        executables: &["opt/brave.com/brave/brave"],
        policies: &["etc/brave/policies/managed"],
        family: Some(Family::Brave),
    },
    Known {
        browser: "firefox",
        processes: &[
            "/usr/lib/firefox-esr/firefox-esr",
            "/usr/lib/firefox/firefox",
        ],
        executables: &[
            "usr/lib/firefox-esr/firefox-esr",
            "usr/lib/firefox/firefox",
            "snap/bin/firefox",
        ],
        policies: &[
            // Debian's ESR reads this one too (checked: not /etc/firefox-esr).
            "etc/firefox/policies/policies.json",
            "usr/lib/firefox-esr/distribution/policies.json",
            "usr/lib/firefox/distribution/policies.json",
        ],
        family: None,
    },
];

/// The browser whose process runs `exe`, if any.
pub fn browser_of_exe(exe: &Path) -> Option<&'static str> {
    KNOWN
        .iter()
        .find(|k| k.processes.iter().any(|p| Path::new(p) == exe))
        .map(|k| k.browser)
}

/// The posture of every known browser installed. Blocking: for a blocking thread.
pub fn report(ids: &[String]) -> Vec<BrowserPosture> {
    read(Path::new("/"), ids)
}

/// Every (browser, uid) with a process running.
pub fn running() -> Vec<(&'static str, u32)> {
    running_in(Path::new("/proc"))
}

/// The posture of every known browser installed under `root` ("/" on a device).
/// `ids`: the Chromium-family extension ids that count as the extension.
fn read(root: &Path, ids: &[String]) -> Vec<BrowserPosture> {
    KNOWN
        .iter()
        .filter(|k| k.executables.iter().any(|e| root.join(e).exists()))
        .map(|k| {
            let mut problems = Vec::new();
            // Chromium merges every file of its directories; Firefox reads only the first
            // policies.json that exists (/etc first), and ignores the others.
            let sources: Vec<&str> = match k.family {
                Some(_) => k.policies.to_vec(),
                None => k
                    .policies
                    .iter()
                    .find(|p| root.join(p).is_file())
                    .into_iter()
                    .copied()
                    .collect(),
            };
            let policies = read_policy_files(sources.iter().map(|p| root.join(p)), &mut problems);
            let mut p = match k.family {
                Some(family) => chromium_posture(family, &policies, ids),
                None => firefox_posture(&policies),
            };
            p.browser = k.browser.into();
            p.problems = problems;
            p
        })
        .collect()
}

/// Every (browser, uid) with a process running, from `proc` (/proc on a device).
fn running_in(proc: &Path) -> Vec<(&'static str, u32)> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir(proc) else {
        return found;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        let Some(browser) = browser_of_exe(&exe) else {
            continue;
        };
        let uid = std::fs::read_to_string(entry.path().join("status"))
            .ok()
            .and_then(|s| crate::platform::linux::procfs::parse_status(&s).0);
        if let Some(uid) = uid
            && !found.contains(&(browser, uid))
        {
            found.push((browser, uid));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::posture::EXTENSION_ID;

    fn ids() -> Vec<String> {
        vec![EXTENSION_ID.to_owned()]
    }

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
    fn running_browsers_are_found_by_their_executable() {
        // This test's own process is not a browser; a fake /proc with a link to the chromium
        // path is.
        let root = tempfile::tempdir().unwrap();
        let proc = root.path().join("proc");
        for (pid, exe, uid) in [
            ("10", "/usr/lib/chromium/chromium", 1000),
            ("11", "/usr/lib/chromium/chromium", 1000),
            ("12", "/usr/bin/bash", 1000),
            ("13", "/usr/lib/firefox-esr/firefox-esr", 0),
        ] {
            let d = proc.join(pid);
            std::fs::create_dir_all(&d).unwrap();
            std::os::unix::fs::symlink(exe, d.join("exe")).unwrap();
            std::fs::write(
                d.join("status"),
                format!("Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nPPid:\t1\n"),
            )
            .unwrap();
        }
        std::fs::create_dir_all(proc.join("self")).unwrap();
        let mut found = running_in(&proc);
        found.sort();
        assert_eq!(found, [("chromium", 1000), ("firefox", 0)]);
    }

    #[test]
    fn the_id_is_the_extensions() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser-extension/EXTENSION_ID");
        assert_eq!(std::fs::read_to_string(file).unwrap().trim(), EXTENSION_ID);
    }

    #[test]
    fn only_installed_browsers_are_reported_and_unmanaged_ones_are_open() {
        let root = tempfile::tempdir().unwrap();
        assert!(read(root.path(), &ids()).is_empty());
        install(root.path(), "usr/bin/chromium");
        install(root.path(), "usr/lib/firefox-esr/firefox-esr");
        let got = read(root.path(), &ids());
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

    /// A school's own build (a store listing, its own signing key) has another id: it counts
    /// as the extension once `extension.chromium_ids` names it, and not before.
    #[test]
    fn a_schools_own_extension_id_counts_once_configured() {
        let root = tempfile::tempdir().unwrap();
        install(root.path(), "usr/bin/chromium");
        let own = "abcdefghijklmnopabcdefghijklmnop";
        put(
            root.path(),
            "etc/chromium/policies/managed/school.json",
            &format!(
                r#"{{"ExtensionInstallForcelist": ["{own};https://clients2.google.com/service/update2/crx"]}}"#
            ),
        );
        assert!(!read(root.path(), &ids())[0].extension_forced);
        let both = vec![EXTENSION_ID.to_owned(), own.to_owned()];
        assert!(read(root.path(), &both)[0].extension_forced);
        put(
            root.path(),
            "etc/chromium/policies/managed/school.json",
            &format!(
                r#"{{"ExtensionSettings": {{"{own}": {{"installation_mode": "force_installed"}}}}}}"#
            ),
        );
        assert!(read(root.path(), &both)[0].extension_forced);
        assert!(!read(root.path(), &ids())[0].extension_forced);
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
            // Debian's ESR reads this one too (checked: not /etc/firefox-esr).
            "etc/firefox/policies/policies.json",
            &shipped("firefox/policies.json"),
        );
        for p in read(root.path(), &ids()) {
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
        let chromium = read(root.path(), &ids())
            .into_iter()
            .find(|p| p.browser == "chromium")
            .unwrap();
        assert!(!chromium.private_unseen && !chromium.extension_forced);
        // Firefox ignores the installation's file when /etc has one.
        put(
            root.path(),
            "usr/lib/firefox-esr/distribution/policies.json",
            r#"{"policies": {"DisablePrivateBrowsing": true}}"#,
        );
        put(
            root.path(),
            "etc/firefox/policies/policies.json",
            r#"{"policies": {}}"#,
        );
        let firefox = read(root.path(), &ids())
            .into_iter()
            .find(|p| p.browser == "firefox")
            .unwrap();
        assert!(
            firefox.private_unseen && !firefox.extension_forced,
            "{firefox:?}"
        );
        std::fs::remove_file(root.path().join("etc/firefox/policies/policies.json")).unwrap();
        let firefox = read(root.path(), &ids())
            .into_iter()
            .find(|p| p.browser == "firefox")
            .unwrap();
        assert!(!firefox.private_unseen, "{firefox:?}");
        // Brave with Tor windows left on is still open.
        put(
            root.path(),
            "etc/brave/policies/managed/zz-tor.json",
            r#"{"TorDisabled": false}"#,
        );
        let brave = read(root.path(), &ids())
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
        let p = &read(root.path(), &ids())[0];
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
