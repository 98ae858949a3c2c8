//! What the heartbeat says of the browsers: their posture, and, while the extension source
//! runs, the users whose browser has run for `grace` with no extension connected (removed,
//! disabled, or its host unable to reach the agent). The platform says which browsers run as
//! whom (`linux`: /proc; `windows`: the process table), each with the same `report` and
//! `running`.

use crate::sources::extension::{Presence, UserKey, account_name};
use invigilator_proto::v1::BrowserPosture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use super::linux as platform;
#[cfg(windows)]
use super::windows as platform;

pub struct BrowserWatch {
    presence: Option<Arc<Presence>>,
    grace: Duration,
    ids: Vec<String>,
    first_missing: Mutex<HashMap<(&'static str, UserKey), Instant>>,
}

impl BrowserWatch {
    /// `presence` is None when the extension source is off: then nothing is expected of it.
    /// `ids`: the Chromium-family extension ids that count as the extension.
    pub fn new(presence: Option<Arc<Presence>>, grace: Duration, ids: Vec<String>) -> Self {
        Self {
            presence,
            grace,
            ids,
            first_missing: Mutex::new(HashMap::new()),
        }
    }

    /// Reads the policies and the running processes: blocking, for a blocking thread.
    pub fn report(&self) -> Vec<BrowserPosture> {
        let mut all = platform::report(&self.ids);
        if let Some(presence) = &self.presence {
            let running = platform::running();
            let missing = self.missing(&running, |u, b| presence.has(u, b), Instant::now());
            for (browser, user) in missing {
                if let Some(p) = all.iter_mut().find(|p| p.browser == browser) {
                    p.extension_missing_for.push(account_name(&user));
                }
            }
        }
        all
    }

    /// The (browser, user) pairs that have run without their extension for `grace` or longer.
    fn missing(
        &self,
        running: &[(&'static str, UserKey)],
        connected: impl Fn(&UserKey, &str) -> bool,
        now: Instant,
    ) -> Vec<(&'static str, UserKey)> {
        let mut first = self.first_missing.lock().unwrap_or_else(|p| p.into_inner());
        first.retain(|key, _| running.contains(key));
        let mut out = Vec::new();
        for (browser, user) in running {
            let key = (*browser, user.to_owned());
            if connected(user, browser) {
                first.remove(&key);
                continue;
            }
            let since = *first.entry(key).or_insert(now);
            if now.duration_since(since) >= self.grace {
                out.push((*browser, user.to_owned()));
            }
        }
        out.sort();
        out
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_browser_without_its_extension_is_missing_after_the_grace_time_only() {
        let w = BrowserWatch::new(None, Duration::from_secs(60), Vec::new());
        let t0 = Instant::now();
        let running = [("chromium", 1000), ("firefox", 1000), ("chromium", 1001)];
        let connected = |uid: &u32, b: &str| *uid == 1001 && b == "chromium";
        assert!(w.missing(&running, connected, t0).is_empty());
        assert!(
            w.missing(&running, connected, t0 + Duration::from_secs(59))
                .is_empty()
        );
        assert_eq!(
            w.missing(&running, connected, t0 + Duration::from_secs(60)),
            [("chromium", 1000), ("firefox", 1000)]
        );
        // The extension connects: no longer missing; it goes again: the grace starts again.
        let all = |_: &u32, _: &str| true;
        assert!(
            w.missing(&running, all, t0 + Duration::from_secs(61))
                .is_empty()
        );
        let none = |_: &u32, _: &str| false;
        assert!(
            w.missing(&running, none, t0 + Duration::from_secs(62))
                .is_empty()
        );
        assert_eq!(
            w.missing(&running, none, t0 + Duration::from_secs(122))
                .len(),
            3
        );
        // A browser that stops is forgotten.
        assert!(
            w.missing(&[], none, t0 + Duration::from_secs(123))
                .is_empty()
        );
        assert!(
            w.missing(&running, none, t0 + Duration::from_secs(124))
                .is_empty()
        );
    }
}
