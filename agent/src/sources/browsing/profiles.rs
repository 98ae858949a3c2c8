//! Finding browser profiles: every user's home directory, each browser's usual location, and
//! extra roots from the configuration.
//!
//! - Unix: homes from /etc/passwd and /home, browsers' native, snap and flatpak locations; the
//!   user is the home's owner.
//! - Windows: homes are the folders under `C:\Users`, browsers' locations under `AppData`
//!   (`platform::windows::profiles`); the user is the folder's name.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Browser {
    Chrome,
    Chromium,
    Edge,
    Brave,
    Firefox,
}

impl Browser {
    /// The name events carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Browser::Chrome => "chrome",
            Browser::Chromium => "chromium",
            Browser::Edge => "edge",
            Browser::Brave => "brave",
            Browser::Firefox => "firefox",
        }
    }

    /// The history database's file name inside a profile directory.
    pub fn db_name(self) -> &'static str {
        match self {
            Browser::Firefox => "places.sqlite",
            _ => "History",
        }
    }
}

/// A directory holding profiles (or itself one), e.g. a test's `--user-data-dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    pub browser: Browser,
    pub path: PathBuf,
}

/// One browser profile with a history database.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Profile {
    pub browser: Browser,
    /// The profile directory, e.g. /home/pupil/.config/chromium/Default.
    pub dir: PathBuf,
    /// The OS user the history belongs to (owner of the home directory, or of the profile
    /// directory for extra roots); empty when the owner has no account name.
    pub user: String,
    /// The directory the database is opened beneath, following no link on the way: the home
    /// (whose owner controls everything below it) or the extra root.
    pub anchor: PathBuf,
    /// Unix: the uid the database files must belong to (or root); `None` accepts any owner.
    pub owner: Option<u32>,
}

impl Profile {
    /// A profile opened beneath its own directory, of any owner (tests, extra roots).
    pub fn at(browser: Browser, dir: PathBuf, user: String) -> Self {
        Self {
            browser,
            anchor: dir.clone(),
            dir,
            user,
            owner: None,
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.join(self.browser.db_name())
    }

    /// The database's path relative to the anchor.
    pub fn db_beneath(&self) -> PathBuf {
        self.db()
            .strip_prefix(&self.anchor)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| self.browser.db_name().into())
    }

    /// The spool checkpoint key of this profile's cursor.
    pub fn checkpoint_key(&self) -> String {
        format!("browsing:{}", self.dir.display())
    }
}

/// Where each browser keeps its profiles, relative to a home directory.
#[cfg(unix)]
const HOME_ROOTS: &[(Browser, &str)] = &[
    (Browser::Chrome, ".config/google-chrome"),
    (Browser::Chrome, ".config/google-chrome-beta"),
    (Browser::Chromium, ".config/chromium"),
    (Browser::Chromium, "snap/chromium/common/chromium"),
    (Browser::Edge, ".config/microsoft-edge"),
    (Browser::Brave, ".config/BraveSoftware/Brave-Browser"),
    (Browser::Firefox, ".mozilla/firefox"),
    (Browser::Firefox, "snap/firefox/common/.mozilla/firefox"),
    (
        Browser::Firefox,
        ".var/app/org.mozilla.firefox/.mozilla/firefox",
    ),
];

/// Home directories of every account in /etc/passwd, plus /home/* and /root (accounts from a
/// directory service are not in /etc/passwd but their homes are usually under /home).
#[cfg(unix)]
pub fn home_dirs() -> Vec<PathBuf> {
    let mut homes = BTreeSet::new();
    if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
        for line in passwd.lines() {
            if let Some(home) = line.split(':').nth(5) {
                // System accounts have "/" or /nonexistent; neither can hold a profile.
                if home.len() > 1 {
                    homes.insert(PathBuf::from(home));
                }
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/home") {
        homes.extend(entries.flatten().map(|e| e.path()));
    }
    homes.insert(PathBuf::from("/root"));
    homes.into_iter().filter(|h| h.is_dir()).collect()
}

/// Each browser's profile folders under a home directory.
#[cfg(unix)]
fn roots_in_home(home: &Path) -> Vec<(Browser, PathBuf)> {
    HOME_ROOTS
        .iter()
        .map(|(browser, rel)| (*browser, home.join(rel)))
        .collect()
}

/// Each browser's profile folders under `C:\Users\<user>`.
#[cfg(windows)]
fn roots_in_home(home: &Path) -> Vec<(Browser, PathBuf)> {
    use super::windows_paths::{BROWSERS, profiles_root};
    let home = home.to_string_lossy();
    BROWSERS
        .iter()
        .map(|b| (*b, PathBuf::from(profiles_root(*b, &home))))
        .collect()
}

/// Whose the profiles under a home are.
#[cfg(unix)]
fn home_user(home: &Path) -> Option<String> {
    owner_name(home)
}

/// Whose the profiles under a home are: on Windows, the profile folder's name.
#[cfg(windows)]
fn home_user(home: &Path) -> Option<String> {
    home.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Every user's profile folder under `C:\Users` (`%SystemDrive%`), without the shared ones
/// (Public, Default ...).
#[cfg(windows)]
pub fn home_dirs() -> Vec<PathBuf> {
    use crate::platform::windows::profiles::{is_user_profile, users_dir};
    let users = PathBuf::from(users_dir(std::env::var("SystemDrive").ok().as_deref()));
    let Ok(entries) = std::fs::read_dir(&users) else {
        return Vec::new();
    };
    let mut homes: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| is_user_profile(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    homes.sort();
    homes
}

/// Every profile under `homes` and `extra`, sorted, without duplicates. Nothing reached through
/// a symbolic link counts: a home's owner could point one anywhere (another user's history, a
/// root-only file), and the visits would be stored as theirs.
pub fn discover(homes: &[PathBuf], extra: &[Root]) -> Vec<Profile> {
    let mut found = BTreeSet::new();
    for home in homes {
        let user = home_user(home);
        let owner = owner_uid(home);
        for (browser, root) in roots_in_home(home) {
            let whose = Whose {
                anchor: home,
                user: user.as_deref(),
                owner,
            };
            scan_root(browser, &root, &whose, &mut found);
        }
    }
    for root in extra {
        let whose = Whose {
            anchor: &root.path,
            user: None,
            owner: None,
        };
        scan_root(root.browser, &root.path, &whose, &mut found);
    }
    found.into_iter().collect()
}

/// Whose the profiles under a root are, and what they are opened beneath.
struct Whose<'a> {
    anchor: &'a Path,
    /// `None`: the owner of each profile directory.
    user: Option<&'a str>,
    owner: Option<u32>,
}

/// True if no component of `path` below `anchor` is a symbolic link (and `path` is below it).
fn no_link_below(anchor: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(anchor) else {
        return false;
    };
    let mut at = anchor.to_path_buf();
    rel.components().all(|c| {
        at.push(c);
        std::fs::symlink_metadata(&at).is_ok_and(|m| !m.file_type().is_symlink())
    })
}

/// Profiles directly in `root` (Default, Profile 1, abcd.default-esr ...), or `root` itself.
fn scan_root(browser: Browser, root: &Path, whose: &Whose, out: &mut BTreeSet<Profile>) {
    let mut add = |dir: PathBuf| {
        let db = dir.join(browser.db_name());
        let is_file = std::fs::symlink_metadata(&db).is_ok_and(|m| m.file_type().is_file());
        if is_file && no_link_below(whose.anchor, &db) {
            let user = match whose.user {
                Some(u) => u.to_owned(),
                None => owner_name(&dir).unwrap_or_default(),
            };
            out.insert(Profile {
                browser,
                dir,
                user,
                anchor: whose.anchor.to_path_buf(),
                owner: whose.owner,
            });
        }
    };
    add(root.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                add(entry.path());
            }
        }
    }
}

/// The uid owning a home directory: its files must be that user's (or root's).
#[cfg(unix)]
fn owner_uid(home: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(home).ok().map(|m| m.uid())
}

#[cfg(windows)]
fn owner_uid(_home: &Path) -> Option<u32> {
    None
}

/// Account name of the owner of `path`.
#[cfg(unix)]
fn owner_name(path: &Path) -> Option<String> {
    use nix::unistd::{Uid, User};
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(path).ok()?.uid();
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// Owners are not looked up on Windows (that needs the file's security descriptor): a profile
/// found under an extra root, outside `C:\Users`, has no user.
#[cfg(windows)]
fn owner_name(_path: &Path) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_chromium_family_and_firefox_profiles_with_a_database() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let mk = |rel: &str, file: &str| {
            std::fs::create_dir_all(h.join(rel)).unwrap();
            std::fs::write(h.join(rel).join(file), b"").unwrap();
        };
        mk(".config/google-chrome/Default", "History");
        mk(".config/google-chrome/Profile 2", "History");
        mk(".config/chromium/Default", "History");
        mk(".config/BraveSoftware/Brave-Browser/Default", "History");
        mk(".config/microsoft-edge/Default", "History");
        mk(".mozilla/firefox/ab12cd.default-esr", "places.sqlite");
        // Not profiles: no history database, or the wrong one.
        mk(".config/google-chrome/System Profile", "Preferences");
        mk(".mozilla/firefox/Crash Reports", "History");
        let extra_dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(extra_dir.path().join("Default")).unwrap();
        std::fs::write(extra_dir.path().join("Default/History"), b"").unwrap();
        let extra = [Root {
            browser: Browser::Chromium,
            path: extra_dir.path().into(),
        }];

        let found = discover(&[h.to_path_buf()], &extra);
        let got: Vec<(&str, PathBuf)> = found
            .iter()
            .map(|p| (p.browser.as_str(), p.dir.clone()))
            .collect();
        let me = owner_name(h).unwrap();
        assert!(found.iter().all(|p| p.user == me), "{found:?}");
        let want = [
            ("chrome", h.join(".config/google-chrome/Default")),
            ("chrome", h.join(".config/google-chrome/Profile 2")),
            ("chromium", h.join(".config/chromium/Default")),
            ("edge", h.join(".config/microsoft-edge/Default")),
            (
                "brave",
                h.join(".config/BraveSoftware/Brave-Browser/Default"),
            ),
            ("firefox", h.join(".mozilla/firefox/ab12cd.default-esr")),
            ("chromium", extra_dir.path().join("Default")),
        ];
        for w in &want {
            assert!(got.contains(w), "missing {w:?} in {got:?}");
        }
        assert_eq!(got.len(), want.len(), "{got:?}");
        assert_eq!(
            found[0].checkpoint_key(),
            format!("browsing:{}", found[0].dir.display())
        );
    }

    #[cfg(unix)]
    #[test]
    fn profiles_behind_symbolic_links_are_not_discovered() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(elsewhere.path().join("Default")).unwrap();
        std::fs::write(elsewhere.path().join("Default/History"), b"").unwrap();
        // The whole browser folder a link, and a profile whose History is a link.
        std::fs::create_dir_all(h.join(".config")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), h.join(".config/chromium")).unwrap();
        std::fs::create_dir_all(h.join(".config/google-chrome/Default")).unwrap();
        std::os::unix::fs::symlink(
            elsewhere.path().join("Default/History"),
            h.join(".config/google-chrome/Default/History"),
        )
        .unwrap();
        std::fs::create_dir_all(h.join(".config/microsoft-edge/Default")).unwrap();
        std::fs::write(h.join(".config/microsoft-edge/Default/History"), b"").unwrap();
        let found = discover(&[h.to_path_buf()], &[]);
        let dirs: Vec<_> = found.iter().map(|p| p.dir.clone()).collect();
        assert_eq!(dirs, [h.join(".config/microsoft-edge/Default")]);
        assert_eq!(found[0].anchor, h);
        assert_eq!(
            found[0].db_beneath(),
            Path::new(".config/microsoft-edge/Default/History")
        );
    }

    #[test]
    fn homes_include_root_and_passwd_accounts() {
        let homes = home_dirs();
        assert!(homes.contains(&PathBuf::from("/root")) || !Path::new("/root").is_dir());
    }
}
