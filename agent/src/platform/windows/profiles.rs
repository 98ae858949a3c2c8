//! Browser history databases on Windows, for every user under `C:\Users`.
//!
//! | browser | history database |
//! |---|---|
//! | Chrome  | `%LOCALAPPDATA%\Google\Chrome\User Data\<Profile>\History` |
//! | Edge    | `%LOCALAPPDATA%\Microsoft\Edge\User Data\<Profile>\History` |
//! | Brave   | `%LOCALAPPDATA%\BraveSoftware\Brave-Browser\User Data\<Profile>\History` |
//! | Firefox | `%APPDATA%\Mozilla\Firefox\Profiles\<profile>\places.sqlite` |
//!
//! with `%LOCALAPPDATA%` = `C:\Users\<user>\AppData\Local` and `%APPDATA%` =
//! `C:\Users\<user>\AppData\Roaming` for each user. Pure functions: directory listings come in
//! through a closure, so the whole search runs in tests on any platform.

use super::join;
use crate::sources::browsing::Browser;

/// Where the agent keeps its state on Windows, given `%ProgramData%` (unset: the default
/// `C:\ProgramData`).
pub fn state_dir(program_data: Option<&str>) -> String {
    let base = program_data
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .unwrap_or(r"C:\ProgramData");
    join(base, &["Invigilator"])
}

/// The folder holding every user's profile, given `%SystemDrive%` (unset: `C:`).
pub fn users_dir(system_drive: Option<&str>) -> String {
    let drive = system_drive
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or("C:");
    join(drive, &["Users"])
}

/// Entries of `C:\Users` that are not people.
const NOT_USERS: &[&str] = &[
    "all users",
    "default",
    "default user",
    "public",
    "desktop.ini",
];

pub fn is_user_profile(name: &str) -> bool {
    !name.is_empty() && !NOT_USERS.contains(&name.to_ascii_lowercase().as_str())
}

/// The browsers looked for on Windows, in reporting order.
pub const BROWSERS: [Browser; 5] = [
    Browser::Chrome,
    Browser::Edge,
    Browser::Brave,
    Browser::Chromium,
    Browser::Firefox,
];

/// The folder holding `browser`'s profiles for the user whose home is `home`
/// (`C:\Users\<user>`).
pub fn profiles_root(browser: Browser, home: &str) -> String {
    const LOCAL: [&str; 2] = ["AppData", "Local"];
    const ROAMING: [&str; 2] = ["AppData", "Roaming"];
    let (base, rest): ([&str; 2], &[&str]) = match browser {
        Browser::Chrome => (LOCAL, &["Google", "Chrome", "User Data"]),
        Browser::Edge => (LOCAL, &["Microsoft", "Edge", "User Data"]),
        Browser::Brave => (LOCAL, &["BraveSoftware", "Brave-Browser", "User Data"]),
        Browser::Chromium => (LOCAL, &["Chromium", "User Data"]),
        Browser::Firefox => (ROAMING, &["Mozilla", "Firefox", "Profiles"]),
    };
    join(&join(home, &base), rest)
}

/// Whether `name`, an entry of [`profiles_root`], is a profile whose history is read. Chromium
/// browsers keep people's profiles in `Default` and `Profile N`; `Guest Profile` and `System
/// Profile` hold no lasting history. Every Firefox profile folder counts.
pub fn is_profile(browser: Browser, name: &str) -> bool {
    match browser {
        Browser::Firefox => !name.is_empty() && !name.starts_with('.'),
        _ => {
            name == "Default"
                || name
                    .strip_prefix("Profile ")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        }
    }
}

/// One history database to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryDb {
    pub browser: Browser,
    /// The Windows user whose profile it is (the folder name under `C:\Users`).
    pub user: String,
    /// The browser profile's folder name (`Default`, `Profile 1`, `abcd1234.default-release`).
    pub profile: String,
    pub path: String,
}

/// Every browser profile of every user under `users_dir`. `list_dir(path)` returns the names
/// of the entries of a folder (empty when it does not exist or cannot be read). Whether the
/// database file exists is left to the caller: a profile may be created before its first visit.
pub fn discover_history(users_dir: &str, list_dir: impl Fn(&str) -> Vec<String>) -> Vec<HistoryDb> {
    let users_dir = join(users_dir, &[]);
    let users_dir = users_dir.as_str();
    let mut users = list_dir(users_dir);
    users.retain(|u| is_user_profile(u));
    users.sort();
    let mut found = Vec::new();
    for user in users {
        let home = join(users_dir, &[&user]);
        for browser in BROWSERS {
            let root = profiles_root(browser, &home);
            let mut profiles = list_dir(&root);
            profiles.retain(|p| is_profile(browser, p));
            profiles.sort();
            for profile in profiles {
                let path = join(&root, &[&profile, browser.db_name()]);
                found.push(HistoryDb {
                    browser,
                    user: user.clone(),
                    profile,
                    path,
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn state_dir_is_under_program_data() {
        assert_eq!(
            state_dir(Some(r"C:\ProgramData")),
            r"C:\ProgramData\Invigilator"
        );
        assert_eq!(state_dir(Some(r"D:\Data\")), r"D:\Data\Invigilator");
        assert_eq!(state_dir(None), r"C:\ProgramData\Invigilator");
        assert_eq!(state_dir(Some("  ")), r"C:\ProgramData\Invigilator");
    }

    #[test]
    fn users_dir_follows_the_system_drive() {
        assert_eq!(users_dir(None), r"C:\Users");
        assert_eq!(users_dir(Some("D:")), r"D:\Users");
    }

    #[test]
    fn profile_roots() {
        let home = r"C:\Users\ada";
        assert_eq!(
            profiles_root(Browser::Chrome, home),
            r"C:\Users\ada\AppData\Local\Google\Chrome\User Data"
        );
        assert_eq!(
            profiles_root(Browser::Edge, home),
            r"C:\Users\ada\AppData\Local\Microsoft\Edge\User Data"
        );
        assert_eq!(
            profiles_root(Browser::Brave, home),
            r"C:\Users\ada\AppData\Local\BraveSoftware\Brave-Browser\User Data"
        );
        assert_eq!(
            profiles_root(Browser::Chromium, home),
            r"C:\Users\ada\AppData\Local\Chromium\User Data"
        );
        assert_eq!(
            profiles_root(Browser::Firefox, home),
            r"C:\Users\ada\AppData\Roaming\Mozilla\Firefox\Profiles"
        );
    }

    #[test]
    fn chromium_profiles_are_default_and_numbered() {
        for yes in ["Default", "Profile 1", "Profile 12"] {
            assert!(is_profile(Browser::Chrome, yes), "{yes}");
        }
        for no in [
            "Guest Profile",
            "System Profile",
            "Profile ",
            "Profile x",
            "Crashpad",
            "Local State",
            "",
        ] {
            assert!(!is_profile(Browser::Edge, no), "{no}");
        }
        assert!(is_profile(Browser::Firefox, "x1y2z3.default-release"));
        assert!(!is_profile(Browser::Firefox, ""));
    }

    #[test]
    fn not_every_users_folder_is_a_person() {
        for no in [
            "Public",
            "Default",
            "Default User",
            "All Users",
            "desktop.ini",
            "PUBLIC",
        ] {
            assert!(!is_user_profile(no), "{no}");
        }
        assert!(is_user_profile("ada"));
        assert!(is_user_profile("j.smith.SCHOOL"));
    }

    #[test]
    fn discovers_every_users_profiles() {
        let tree: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
            (
                r"C:\Users",
                vec!["Public", "ada", "Default", "bob", "desktop.ini"],
            ),
            (
                r"C:\Users\ada\AppData\Local\Google\Chrome\User Data",
                vec![
                    "Default",
                    "Profile 2",
                    "Guest Profile",
                    "Local State",
                    "Crashpad",
                ],
            ),
            (
                r"C:\Users\ada\AppData\Roaming\Mozilla\Firefox\Profiles",
                vec!["k3j.default-release"],
            ),
            (
                r"C:\Users\bob\AppData\Local\Microsoft\Edge\User Data",
                vec!["Default"],
            ),
            (
                r"C:\Users\bob\AppData\Local\BraveSoftware\Brave-Browser\User Data",
                vec!["Profile 1"],
            ),
            // Ignored: the Default user's template profile.
            (
                r"C:\Users\Default\AppData\Local\Google\Chrome\User Data",
                vec!["Default"],
            ),
        ]);
        let list = |dir: &str| {
            tree.get(dir)
                .map(|names| names.iter().map(|n| n.to_string()).collect())
                .unwrap_or_default()
        };
        let found: Vec<(Browser, String, String)> = discover_history(r"C:\Users\", list)
            .into_iter()
            .map(|db| (db.browser, db.user, db.path))
            .collect();
        assert_eq!(
            found,
            vec![
                (
                    Browser::Chrome,
                    "ada".into(),
                    r"C:\Users\ada\AppData\Local\Google\Chrome\User Data\Default\History".into()
                ),
                (
                    Browser::Chrome,
                    "ada".into(),
                    r"C:\Users\ada\AppData\Local\Google\Chrome\User Data\Profile 2\History".into()
                ),
                (
                    Browser::Firefox,
                    "ada".into(),
                    r"C:\Users\ada\AppData\Roaming\Mozilla\Firefox\Profiles\k3j.default-release\places.sqlite"
                        .into()
                ),
                (
                    Browser::Edge,
                    "bob".into(),
                    r"C:\Users\bob\AppData\Local\Microsoft\Edge\User Data\Default\History".into()
                ),
                (
                    Browser::Brave,
                    "bob".into(),
                    r"C:\Users\bob\AppData\Local\BraveSoftware\Brave-Browser\User Data\Profile 1\History".into()
                ),
            ]
        );
    }

    #[test]
    fn join_normalises_separators() {
        assert_eq!(
            join(r"C:\Users\", &["ada", r"\AppData\", "", "Local"]),
            r"C:\Users\ada\AppData\Local"
        );
        assert_eq!(join("C:/Users/", &["ada"]), r"C:\Users\ada");
    }
}
