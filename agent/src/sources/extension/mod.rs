//! The extension source: visits reported by the managed browser extension, as they happen,
//! private windows included where the browser lets the extension in.
//!
//! extension --native messaging--> host (`invigilator-agent native-host`, run by the browser
//! as the pupil) --local socket--> this source --> spool. The user is the socket peer's uid
//! (`SO_PEERCRED`), never anything the message says: a pupil can forge visits only as
//! themselves. Each visit is acknowledged only once the spool has committed it; the extension
//! keeps, and sends again, what was not acknowledged, and the collector links a resent or
//! history-reported copy to the first report of the visit, so it is counted once.
//!
//! The history-database source stays on beside this one: it is the safety net for a browser
//! without the extension, or with it switched off.

mod conversation;
mod limits;
pub use invigilator_visits::extension as message;
#[cfg(target_os = "linux")]
mod peer;
#[cfg(windows)]
mod pipe;
#[cfg(target_os = "linux")]
mod unix;

use super::{SourceConfig, SourceContext, SourceError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the native-messaging host finds the agent unless `INVIGILATOR_BROWSER_SOCKET` says
/// otherwise. Under /run, which only root can write, so no user can put a socket of their own
/// in its place.
#[cfg(not(windows))]
pub const DEFAULT_SOCKET: &str = "/run/invigilator/browser.sock";
/// On Windows, a local named pipe whose instances only SYSTEM and Administrators may create.
#[cfg(windows)]
pub const DEFAULT_SOCKET: &str = r"\\.\pipe\invigilator-browser";

/// The environment variable that overrides [`DEFAULT_SOCKET`] for the host (tests, and
/// installations that move the agent's runtime directory).
pub const SOCKET_ENV: &str = "INVIGILATOR_BROWSER_SOCKET";

/// `[extension]` in agent.toml.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExtensionConfig {
    /// Take visits from the managed browser extension. Default true.
    pub enabled: bool,
    /// The socket the native-messaging host connects to (default /run/invigilator/browser.sock;
    /// on Windows the named pipe \\.\pipe\invigilator-browser).
    pub socket: PathBuf,
    /// Longest message, in bytes; a longer one closes the connection (default 64 KiB).
    pub max_message_bytes: usize,
    /// Hosts connected at once, in all (default 64) and per user (default 8).
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    /// Visits taken per user per minute (default 600); more wait, unanswered, for the next
    /// minute, and the extension keeps them meanwhile, so a flood slows only its own user.
    pub max_visits_per_minute: u32,
    /// How long a browser may run for a user with no extension connected from it before the
    /// heartbeat reports the extension missing (default 2 minutes: a browser's extensions
    /// start within seconds, and a slow login should not alert).
    #[serde(with = "humantime_serde")]
    pub missing_after: Duration,
    /// The Chromium-family extension ids the school deploys, which the posture counts as the
    /// extension force-installed (default: the project's build, `agent/browser-extension/
    /// EXTENSION_ID`). A school that publishes its own build (a Web Store listing, or one
    /// signed with its own key) adds that id here, and to the host manifest's allowed_origins.
    pub chromium_ids: Vec<String>,
}

/// The Chromium-family extension's id (`agent/browser-extension/EXTENSION_ID`): the default of
/// `chromium_ids`, on every platform.
pub const EXTENSION_ID: &str = invigilator_visits::extension::CHROMIUM_EXTENSION_ID;

impl ExtensionConfig {
    /// Checked at load: a Chromium extension id is 32 letters from a to p.
    pub fn validate(&self) -> Result<(), String> {
        if self.chromium_ids.is_empty() {
            return Err("extension.chromium_ids must name at least one extension id".into());
        }
        for id in &self.chromium_ids {
            if !invigilator_visits::extension::is_chromium_id(id) {
                return Err(format!(
                    "extension.chromium_ids: {id:?} is not a Chromium extension id (32 letters a to p)"
                ));
            }
        }
        Ok(())
    }
}

impl Default for ExtensionConfig {
    fn default() -> Self {
        Self {
            enabled: cfg!(any(target_os = "linux", windows)),
            socket: PathBuf::from(DEFAULT_SOCKET),
            max_message_bytes: 64 * 1024,
            max_connections: 64,
            max_connections_per_user: 8,
            max_visits_per_minute: 600,
            missing_after: Duration::from_secs(120),
            chromium_ids: vec![EXTENSION_ID.to_owned()],
        }
    }
}

/// An account, as the operating system names it to the agent: a uid on Unix, a SID
/// (`S-1-5-21-…`) on Windows.
#[cfg(unix)]
pub type UserKey = u32;
#[cfg(windows)]
pub type UserKey = String;

/// The account's name, or its uid or SID when the system cannot name it. The lookup may go
/// to a directory over the network: blocking, for a blocking thread.
#[cfg(unix)]
pub fn account_name(uid: &UserKey) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

#[cfg(windows)]
pub fn account_name(sid: &UserKey) -> String {
    crate::platform::windows::pipe::account_name(sid).unwrap_or_else(|| sid.clone())
}

/// Which users have the extension connected, from which browser (by its hello): the heartbeat
/// compares it with the browsers running, to tell a removed or disabled extension.
#[derive(Debug, Default)]
pub struct Presence(Mutex<HashMap<(UserKey, &'static str), usize>>);

impl Presence {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(UserKey, &'static str), usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn connected(&self, user: &UserKey, browser: &'static str) {
        *self.map().entry((user.to_owned(), browser)).or_default() += 1;
    }

    pub fn disconnected(&self, user: &UserKey, browser: &'static str) {
        let mut map = self.map();
        let key = (user.to_owned(), browser);
        if let Some(n) = map.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&key);
            }
        }
    }

    /// True while an extension of `browser` is connected from `user`'s session.
    pub fn has(&self, user: &UserKey, browser: &str) -> bool {
        self.map().keys().any(|(u, b)| u == user && *b == browser)
    }
}

impl SourceConfig for ExtensionConfig {
    const NAME: &'static str = "extension";
    /// Who is connected, for the heartbeat's tamper check.
    type Handle = Arc<Presence>;

    fn enabled(&self) -> bool {
        self.enabled
    }

    #[cfg(any(target_os = "linux", windows))]
    fn build(&self, cx: &SourceContext) -> Result<Arc<Presence>, SourceError> {
        let presence = Arc::new(Presence::default());
        #[cfg(target_os = "linux")]
        unix::start(self.clone(), cx, Arc::clone(&presence)).map_err(SourceError::new::<Self>)?;
        #[cfg(windows)]
        pipe::start(self.clone(), cx, Arc::clone(&presence)).map_err(SourceError::new::<Self>)?;
        Ok(presence)
    }

    #[cfg(not(any(target_os = "linux", windows)))]
    fn build(&self, _cx: &SourceContext) -> Result<Arc<Presence>, SourceError> {
        Err(SourceError::new::<Self>(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "the extension's local socket is not built for this platform yet",
        )))
    }
}
