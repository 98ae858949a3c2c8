//! The source's thread: file-change notifications, debounce, safety-net poll, rediscovery.

use super::BrowsingSourceConfig;
use super::profiles::{self, Profile};
use super::snapshot;
use super::tracker::{CheckpointReader, Context, SyncError, Tracker};
use crate::sources::EventTx;
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest wait between reads of a profile whose reads keep failing.
const MAX_RETRY: Duration = Duration::from_secs(60);

struct Watched {
    tracker: Tracker,
    /// Set while a change waits to be read: (first change, latest change).
    dirty: Option<(Instant, Instant)>,
    last_read: Option<Instant>,
    /// Reads failed in a row (a browser holding the file in a way we cannot share, a
    /// permission): the retries space out, and so do the warnings.
    failures: u32,
}

impl Watched {
    fn mark(&mut self, now: Instant) {
        let first = self.dirty.map_or(now, |(first, _)| first);
        self.dirty = Some((first, now));
    }

    /// When this profile should be read, if it has changed.
    fn due(&self, cfg: &BrowsingSourceConfig) -> Option<Instant> {
        let (first, latest) = self.dirty?;
        let settled = (latest + cfg.debounce).min(first + cfg.max_delay);
        // A failing read (a browser mid-commit for long) is retried, but not in a tight loop:
        // the debounce, doubled at each failure in a row, up to MAX_RETRY.
        let spaced = self
            .last_read
            .map_or(settled, |t| t + self.retry_after(cfg));
        Some(settled.max(spaced))
    }

    fn retry_after(&self, cfg: &BrowsingSourceConfig) -> Duration {
        let doubled = cfg.debounce.saturating_mul(1 << self.failures.min(16));
        doubled.min(MAX_RETRY.max(cfg.debounce))
    }

    /// A read failed: retry later, and say so on the 1st, 2nd, 4th, 8th ... failure in a row.
    fn failed(&mut self, now: Instant, error: &SyncError) {
        self.failures = self.failures.saturating_add(1);
        if self.failures.is_power_of_two() {
            tracing::warn!(
                profile = %self.tracker.profile.dir.display(),
                %error,
                failures = self.failures,
                "browsing: read failed; retrying"
            );
        }
        self.mark(now);
    }

    fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                profile = %self.tracker.profile.dir.display(),
                failures = self.failures,
                "browsing: read again after failures"
            );
            self.failures = 0;
        }
    }
}

/// Is `name` one of the files whose change means new history?
fn relevant(profile: &Profile, name: &OsStr) -> bool {
    let db = profile.browser.db_name();
    let name = name.to_string_lossy();
    name.strip_prefix(db)
        .is_some_and(|rest| matches!(rest, "" | "-wal" | "-journal"))
}

pub fn run(cfg: &BrowsingSourceConfig, checkpoints: &CheckpointReader, tx: &EventTx) {
    let ctx = Context {
        hostname: &cfg.hostname,
        work_dir: &cfg.work_dir,
        limits: cfg.limits,
        backfill: cfg.backfill,
        checkpoints,
        tx,
    };
    let (ntx, nrx) = mpsc::channel();
    let mut watcher = match notify::recommended_watcher(ntx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, poll = ?cfg.poll_interval, "browsing: cannot watch files; polling only");
            None
        }
    };
    let mut watched: BTreeMap<PathBuf, Watched> = BTreeMap::new();
    let mut next_rediscover = Instant::now();
    let mut next_poll = Instant::now() + cfg.poll_interval;
    loop {
        if tx.is_closed() {
            return;
        }
        let now = Instant::now();
        if now >= next_rediscover {
            // Homes are listed again each time: accounts are added during the school year.
            let homes = if cfg.scan_homes {
                profiles::home_dirs()
            } else {
                Vec::new()
            };
            rediscover(
                &mut watched,
                &mut watcher,
                profiles::discover(&homes, &cfg.extra_roots),
                now,
            );
            next_rediscover = now + cfg.rediscover_interval;
        }
        if now >= next_poll {
            // The safety net: a stat per profile, a read only where something changed.
            for w in watched.values_mut() {
                if w.tracker.last_stamp != Some(snapshot::stamp(&w.tracker.profile.db())) {
                    w.mark(now);
                }
            }
            next_poll = now + cfg.poll_interval;
        }
        for w in watched.values_mut() {
            if w.due(cfg).is_some_and(|t| t <= now) {
                w.dirty = None;
                w.last_read = Some(now);
                match w.tracker.sync(&ctx) {
                    Ok(n) => {
                        w.succeeded();
                        if n > 0 {
                            tracing::debug!(profile = %w.tracker.profile.dir.display(), visits = n, "browsing: sent")
                        }
                    }
                    Err(SyncError::Closed(_)) => return,
                    Err(e) => w.failed(now, &e),
                }
            }
        }

        let wake = watched
            .values()
            .filter_map(|w| w.due(cfg))
            .chain([next_poll, next_rediscover])
            .min()
            .unwrap_or(next_poll);
        // Shutdown is noticed at least this often even when nothing happens.
        let timeout = wake
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(5));
        match nrx.recv_timeout(timeout) {
            Ok(first) => {
                let now = Instant::now();
                // Drain what queued up meanwhile: one pass per burst, not per write.
                for res in std::iter::once(first).chain(nrx.try_iter()) {
                    match res {
                        Ok(ev) => on_change(&mut watched, ev, now),
                        Err(e) => tracing::debug!(error = %e, "browsing: watch error"),
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                tracing::warn!("browsing: file watcher stopped; polling only");
                watcher = None;
                std::thread::sleep(timeout);
            }
        }
    }
}

fn on_change(watched: &mut BTreeMap<PathBuf, Watched>, ev: notify::Event, now: Instant) {
    // Opening and reading (our own copies included) change nothing: only writes count.
    if matches!(ev.kind, EventKind::Access(a) if a != notify::event::AccessKind::Close(notify::event::AccessMode::Write))
    {
        return;
    }
    for path in &ev.paths {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            continue;
        };
        if let Some(w) = watched.get_mut(dir)
            && relevant(&w.tracker.profile, name)
        {
            w.mark(now);
        }
    }
}

fn rediscover(
    watched: &mut BTreeMap<PathBuf, Watched>,
    watcher: &mut Option<notify::RecommendedWatcher>,
    found: Vec<Profile>,
    now: Instant,
) {
    let found: BTreeMap<PathBuf, Profile> = found.into_iter().map(|p| (p.dir.clone(), p)).collect();
    watched.retain(|dir, _| {
        let keep = found.contains_key(dir);
        if !keep {
            tracing::info!(profile = %dir.display(), "browsing: profile gone");
            if let Some(w) = watcher.as_mut() {
                let _ = w.unwatch(dir);
            }
        }
        keep
    });
    for (dir, profile) in found {
        if watched.contains_key(&dir) {
            continue;
        }
        if let Some(w) = watcher.as_mut()
            && let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive)
        {
            tracing::warn!(profile = %dir.display(), error = %e, "browsing: cannot watch; the poll covers it");
        }
        tracing::info!(profile = %dir.display(), browser = profile.browser.as_str(), user = %profile.user, "browsing: watching profile");
        let mut w = Watched {
            tracker: Tracker::new(profile),
            dirty: None,
            last_read: None,
            failures: 0,
        };
        // Read at once: catch up on what happened while the agent was not running.
        w.mark(now);
        watched.insert(dir, w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::browsing::Browser;

    #[test]
    fn failing_reads_space_out_to_a_minute() {
        let cfg = BrowsingSourceConfig::default();
        let mut w = Watched {
            tracker: Tracker::new(Profile::at(Browser::Chrome, "/p".into(), String::new())),
            dirty: None,
            last_read: None,
            failures: 0,
        };
        let t0 = Instant::now();
        w.mark(t0);
        w.last_read = Some(t0);
        assert_eq!(
            w.due(&cfg),
            Some(t0 + cfg.debounce),
            "first retry: the debounce"
        );
        let mut waits = Vec::new();
        for _ in 0..12 {
            w.failures += 1;
            waits.push(w.retry_after(&cfg));
        }
        assert_eq!(waits[0], cfg.debounce * 2);
        assert!(waits.windows(2).all(|p| p[0] <= p[1]), "{waits:?}");
        assert_eq!(*waits.last().unwrap(), MAX_RETRY);
        w.succeeded();
        assert_eq!(w.failures, 0);
        assert_eq!(w.retry_after(&cfg), cfg.debounce);
    }

    #[test]
    fn only_the_history_files_matter() {
        let p = |browser| Profile::at(browser, "/p".into(), String::new());
        let c = p(Browser::Chromium);
        for (name, want) in [
            ("History", true),
            ("History-journal", true),
            ("History-wal", true),
            ("Cookies", false),
            ("History Provider Cache", false),
        ] {
            assert_eq!(relevant(&c, OsStr::new(name)), want, "{name}");
        }
        let f = p(Browser::Firefox);
        assert!(relevant(&f, OsStr::new("places.sqlite-wal")));
        assert!(!relevant(&f, OsStr::new("favicons.sqlite-wal")));
    }
}
