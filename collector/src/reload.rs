//! Reloads the policy (and what it is built from: roster, category lists) when its files change,
//! while the collector runs. The committer takes the current policy once per transaction, so a
//! swap lands between two commits: no event is dropped, delayed or re-ordered by it, and each
//! alert names the version that raised it. A file that fails to load leaves the running policy
//! in place, with the error in the log.

use arc_swap::ArcSwap;
use invigilator_policy::Policy;
use notify::{RecursiveMode, Watcher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// How long to wait for an editor or an import to finish writing before reading.
const SETTLE: Duration = Duration::from_millis(300);
/// Files are also checked on this period, in case a change notification is missed (network
/// file systems, a watcher that could not start).
const POLL: Duration = Duration::from_secs(5);

/// Builds a policy from its files.
pub type Build = Box<dyn Fn() -> anyhow::Result<Policy> + Send>;

/// Watches `watch` (directories; changes to files named `invigilator.db*` are ignored) and
/// rebuilds with `build` when the files `inputs` names change. Runs on its own thread.
pub fn spawn(
    watch: Vec<PathBuf>,
    inputs: impl Fn(&Policy) -> Vec<PathBuf> + Send + 'static,
    build: Build,
    target: Arc<ArcSwap<Policy>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    // Watching starts, and the baseline is taken, before this returns: a change made meanwhile
    // is still seen as one.
    let (tx, rx) = mpsc::channel::<()>();
    let watcher = watcher(&watch, tx.clone());
    let seen = fingerprint(&inputs(&target.load()));
    std::thread::Builder::new()
        .name("policy-reload".into())
        .spawn(move || {
            // Held so that, with no watcher, the channel stays open and polling goes on.
            let (_watcher, _tx) = (watcher, tx);
            run(rx, inputs, build, target, seen)
        })
}

fn watcher(dirs: &[PathBuf], tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        let ours = ev.paths.iter().any(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("invigilator.db"))
        });
        if ours && !matches!(ev.kind, notify::EventKind::Access(_)) {
            let _ = tx.send(());
        }
    });
    match watcher {
        Ok(mut w) => {
            for dir in dirs {
                if let Err(e) = w.watch(dir, RecursiveMode::Recursive) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch for policy changes; polling");
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch for policy changes; polling");
            None
        }
    }
}

fn run(
    rx: mpsc::Receiver<()>,
    inputs: impl Fn(&Policy) -> Vec<PathBuf>,
    build: Build,
    target: Arc<ArcSwap<Policy>>,
    mut seen: Vec<Option<(u64, SystemTime)>>,
) {
    loop {
        match rx.recv_timeout(POLL) {
            Ok(()) => {
                // Let a burst of writes finish, then take them all as one change; a file that
                // never stops changing is still read every few settle periods.
                let give_up = Instant::now() + SETTLE * 6;
                loop {
                    let quiet_until = (Instant::now() + SETTLE).min(give_up);
                    let Some(left) = quiet_until.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    if rx.recv_timeout(left).is_err() {
                        break;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = fingerprint(&inputs(&target.load()));
        if now == seen {
            continue;
        }
        seen = now;
        match build() {
            Ok(policy) => {
                tracing::info!(from = %target.load().version, to = %policy.version, "policy reloaded");
                target.store(Arc::new(policy));
                // The new policy may read other files (a roster named by the edit).
                seen = fingerprint(&inputs(&target.load()));
            }
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), version = %target.load().version, "policy change not applied; the running policy stays");
            }
        }
    }
}

/// Size and modification time of each input: enough to see a change without reading them.
fn fingerprint(paths: &[PathBuf]) -> Vec<Option<(u64, SystemTime)>> {
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.len(), m.modified().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use invigilator_policy::DEFAULT_POLICY;

    fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn an_edit_is_applied_and_a_broken_edit_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, DEFAULT_POLICY).unwrap();
        let target = Arc::new(ArcSwap::from_pointee(Policy::load(&path).unwrap()));
        let (p2, p3) = (path.clone(), path.clone());
        spawn(
            vec![dir.path().to_path_buf()],
            move |_| vec![p2.clone()],
            Box::new(move || Ok(Policy::load(&p3)?)),
            Arc::clone(&target),
        )
        .unwrap();
        let first = target.load().version.clone();
        // Editors replace the file by renaming a new one over it.
        let edited = DEFAULT_POLICY.replacen("version = \"", "version = \"edited-", 1);
        std::fs::write(dir.path().join(".policy.swp"), &edited).unwrap();
        std::fs::rename(dir.path().join(".policy.swp"), &path).unwrap();
        wait_for("the edit", || target.load().version.starts_with("edited-"));
        assert_ne!(target.load().version, first);

        let good = target.load().version.clone();
        std::fs::write(&path, "version = \"broken\"\n[[process]]\nid = 1\n").unwrap();
        std::thread::sleep(SETTLE * 4);
        assert_eq!(
            target.load().version,
            good,
            "a broken file must not replace the policy"
        );
        // Fixing it is picked up again.
        std::fs::write(&path, edited.replacen("edited-", "fixed-", 1)).unwrap();
        wait_for("the fix", || target.load().version.starts_with("fixed-"));
    }
}
