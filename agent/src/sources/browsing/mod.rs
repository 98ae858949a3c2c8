//! The browsing source: one event per page visit, read from the browsers' own history databases
//! (Chrome, Chromium, Edge, Brave: `History`; Firefox: `places.sqlite`).
//!
//! - [`profiles`] finds every user's profiles; new ones are picked up by periodic rediscovery.
//! - [`watch`] wakes on file changes (`notify`: inotify on Linux, ReadDirectoryChangesW on
//!   Windows), waits for the browser's commit
//!   to settle (debounce), and polls slowly as a safety net in case a change notification is
//!   lost. Between changes the thread sleeps: no busy polling.
//! - [`snapshot`] copies a database with its WAL / journal to the agent's own directory, so the
//!   browser is never locked out; [`history`] with [`chromium`] / [`firefox`] reads the copy
//!   incrementally by visit id; [`cursor`] detects a cleared or replaced history.
//! - [`search`] extracts search terms; [`url_clean`] strips credentials and bounds fields.
//!
//! Exactly-once across restarts: each visit event carries the profile's cursor as a checkpoint,
//! which the spool stores in the same transaction as the event; on start the cursor is read back.
//!
//! The same code runs on Windows; only profile discovery (`C:\Users\<user>\AppData\...`, see
//! `platform::windows::profiles`), file identity and the sharing mode of the copy differ.

pub mod chromium;
pub mod cursor;
pub mod firefox;
pub mod history;
pub mod profiles;
pub use invigilator_visits::search;
pub mod snapshot;
pub mod tracker;
pub use invigilator_visits::url_clean;
pub mod watch;
/// Where browsers keep profiles on Windows: built and tested everywhere.
pub mod windows_paths;

pub use profiles::{Browser, Root};
pub use tracker::CheckpointReader;

use super::{EventTx, SourceConfig, SourceContext, SourceError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// `[browsing]` in agent.toml.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BrowsingConfig {
    /// Report visits and searches from browsers' history databases. Default true.
    pub enabled: bool,
    /// Look for profiles in every user's home directory.
    pub scan_homes: bool,
    /// Quiet time after a history change before it is read.
    #[serde(with = "humantime_serde")]
    pub debounce: Duration,
    /// Safety-net check of every profile, in case a change notification was lost.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often to look for new profiles.
    #[serde(with = "humantime_serde")]
    pub rediscover_interval: Duration,
    /// How much existing history of a newly found profile is reported.
    #[serde(with = "humantime_serde")]
    pub backfill: Duration,
    /// More profile locations, e.g. `[{ browser = "chromium", path = "/srv/kiosk/chromium" }]`.
    pub extra_roots: Vec<Root>,
    /// Largest history database (or -wal / -journal) copied for reading, in bytes; a larger
    /// one is refused unread and warned about (default 512 MiB).
    pub max_history_bytes: u64,
    /// Longest the queries of one profile's read may run before they are stopped (default 5 s).
    #[serde(with = "humantime_serde")]
    pub read_deadline: Duration,
}

impl Default for BrowsingConfig {
    fn default() -> Self {
        let d = BrowsingSourceConfig::default();
        Self {
            enabled: true,
            scan_homes: d.scan_homes,
            debounce: d.debounce,
            poll_interval: d.poll_interval,
            rediscover_interval: d.rediscover_interval,
            backfill: d.backfill,
            extra_roots: Vec::new(),
            max_history_bytes: d.limits.max_bytes,
            read_deadline: d.limits.deadline,
        }
    }
}

impl SourceConfig for BrowsingConfig {
    const NAME: &'static str = "browsing";
    type Handle = ();

    fn enabled(&self) -> bool {
        self.enabled
    }

    /// Copies of history databases are read in `browsing/` under the state directory; cursors
    /// come back from the spool.
    fn build(&self, cx: &SourceContext) -> Result<(), SourceError> {
        let settings = BrowsingSourceConfig {
            hostname: cx.hostname.clone(),
            scan_homes: self.scan_homes,
            extra_roots: self.extra_roots.clone(),
            work_dir: cx.state_dir.join("browsing"),
            debounce: self.debounce,
            poll_interval: self.poll_interval,
            rediscover_interval: self.rediscover_interval,
            backfill: self.backfill,
            limits: snapshot::ReadLimits {
                max_bytes: self.max_history_bytes,
                deadline: self.read_deadline,
            },
            ..BrowsingSourceConfig::default()
        };
        let checkpoints = std::sync::Arc::clone(&cx.checkpoints);
        spawn(
            settings,
            Box::new(move |key| checkpoints(key)),
            cx.events.clone(),
        )
        .map_err(SourceError::new::<Self>)
    }
}

/// The running source's settings: `[browsing]`, with where it works and what it is called.
#[derive(Debug, Clone)]
pub struct BrowsingSourceConfig {
    /// Put on every event.
    pub hostname: String,
    /// Look in every user's home directory (off only in tests).
    pub scan_homes: bool,
    /// More places holding profiles (or profile directories themselves).
    pub extra_roots: Vec<Root>,
    /// The agent's private directory for database copies (created 0700).
    pub work_dir: PathBuf,
    /// Quiet time after a change before reading: a commit is many writes.
    pub debounce: Duration,
    /// Longest a profile that keeps changing waits for its read.
    pub max_delay: Duration,
    /// Safety-net poll of every profile's files (reads only if they changed).
    pub poll_interval: Duration,
    /// How often to look for new or removed profiles.
    pub rediscover_interval: Duration,
    /// How much history of a profile seen for the first time is reported.
    pub backfill: Duration,
    /// What one read of a profile may cost (database size, SQL time).
    pub limits: snapshot::ReadLimits,
}

impl Default for BrowsingSourceConfig {
    fn default() -> Self {
        Self {
            hostname: String::new(),
            scan_homes: true,
            extra_roots: Vec::new(),
            work_dir: std::env::temp_dir().join("invigilator-browsing"),
            debounce: Duration::from_millis(300),
            max_delay: Duration::from_secs(2),
            poll_interval: Duration::from_secs(30),
            rediscover_interval: Duration::from_secs(30),
            backfill: Duration::from_secs(3600),
            limits: snapshot::ReadLimits::default(),
        }
    }
}

/// Starts the source on its own OS thread ("browsing"), which ends when the spool writer stops.
/// `checkpoints` reads back the cursors the spool stored.
pub fn spawn(
    cfg: BrowsingSourceConfig,
    checkpoints: CheckpointReader,
    tx: EventTx,
) -> std::io::Result<()> {
    create_private_dir(&cfg.work_dir)?;
    std::thread::Builder::new()
        .name("browsing".into())
        .spawn(move || watch::run(&cfg, &checkpoints, &tx))?;
    Ok(())
}

/// The copies hold users' whole histories: only the agent may read them. A directory that
/// already existed must be a real directory of the agent's own (in a shared place such as /tmp
/// someone else could have made it first, or made it a link); its mode is then set to 0700
/// whatever it was.
#[cfg(unix)]
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_dir() || meta.uid() != me {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory of uid {me} (a link, or someone else's): refusing to copy histories into it",
                dir.display()
            ),
        ));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The copies hold users' whole histories: only the agent may read them. On Windows the work
/// directory is inside the state directory, which `enroll` restricted to SYSTEM and
/// Administrators; what is created in it inherits that.
#[cfg(windows)]
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
