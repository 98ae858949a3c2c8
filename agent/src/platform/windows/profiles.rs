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
//! `C:\Users\<user>\AppData\Roaming` for each user. Pure functions on path strings, tested on
//! any platform; `sources::browsing::profiles` lists the folders with them on Windows.

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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn join_normalises_separators() {
        assert_eq!(
            join(r"C:\Users\", &["ada", r"\AppData\", "", "Local"]),
            r"C:\Users\ada\AppData\Local"
        );
        assert_eq!(join("C:/Users/", &["ada"]), r"C:\Users\ada");
    }
}
