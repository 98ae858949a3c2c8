//! Where things are on Windows: the agent's state folder, the users' profile folders, and (for
//! the browsing source, which names the browsers) the folders browsers keep their profiles in.
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

/// `%LOCALAPPDATA%` and `%APPDATA%` of the user whose home is `home` (`C:\Users\<user>`).
pub fn local_app_data(home: &str) -> String {
    join(home, &["AppData", "Local"])
}

pub fn roaming_app_data(home: &str) -> String {
    join(home, &["AppData", "Roaming"])
}

pub fn is_user_profile(name: &str) -> bool {
    !name.is_empty() && !NOT_USERS.contains(&name.to_ascii_lowercase().as_str())
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
