//! The drop folder: the MIS's scheduled export (or the script that fetches it) writes a OneRoster
//! export into `[roster] drop_dir`, and this job imports it once its files have stopped
//! changing: the same sizes and times on two checks in a row, the newest at least a few seconds
//! old. Times alone would not do: copiers (robocopy, `cp -p`, unzip) keep the source's times,
//! so a half-copied file can look old.
//!
//! An import that changes the roster is audited as `roster.import` (object the roster file,
//! detail the counts); one refused is audited as `roster.rejected` with the reason, once per
//! version of the export, and the old roster stays.

use crate::config::RosterConfig;
use crate::store::Store;
use crate::store::audit::{self, Actor, Audit};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// An export is read only once none of its files has changed for this long.
const SETTLE: Duration = Duration::from_secs(5);

/// The files an import reads, by name, size and modification time: a new export changes it.
type Fingerprint = Vec<(String, u64, SystemTime)>;

/// The export's files, and the policy's: an export refused because of the policy (a group
/// it lacked) is tried again once the policy is mended.
fn fingerprint(dir: &Path, policy: &Path) -> Option<Fingerprint> {
    let mut files: Fingerprint = [
        "manifest.csv",
        "users.csv",
        "classes.csv",
        "enrollments.csv",
    ]
    .into_iter()
    .map(|name| dir.join(name))
    .chain([policy.to_owned()])
    .filter_map(|path| {
        let m = std::fs::metadata(&path).ok()?;
        Some((path.display().to_string(), m.len(), m.modified().ok()?))
    })
    .collect();
    files.sort();
    files
        .iter()
        .any(|(n, _, _)| n.ends_with("users.csv"))
        .then_some(files)
}

fn settled(f: &Fingerprint) -> bool {
    f.iter()
        .all(|(_, _, t)| t.elapsed().is_ok_and(|age| age >= SETTLE))
}

/// Checks the drop folder every `check_interval` (the first check soon after start), for as
/// long as the collector runs.
pub async fn run(store: Store, data_dir: PathBuf, cfg: RosterConfig) {
    let Some(drop_dir) = cfg.drop_dir.as_ref().map(|d| data_dir.join(d)) else {
        return;
    };
    tracing::info!(dir = %drop_dir.display(), "roster: watching the drop folder for MIS exports");
    let first = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut tick = tokio::time::interval_at(first, cfg.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let policy = invigilator_policy::Policy::path(&data_dir);
    // What was imported (or refused) last, and what the previous check saw.
    let mut seen: Option<Fingerprint> = None;
    let mut previous: Option<Fingerprint> = None;
    loop {
        tick.tick().await;
        let Some(now) = fingerprint(&drop_dir, &policy) else {
            continue;
        };
        let steady = previous.as_ref() == Some(&now);
        previous = Some(now.clone());
        if seen.as_ref() == Some(&now) || !steady || !settled(&now) {
            // Done already, or still being written: looked at again at the next check.
            continue;
        }
        let (s, d, dd, c) = (
            store.clone(),
            data_dir.clone(),
            drop_dir.clone(),
            cfg.clone(),
        );
        match tokio::task::spawn_blocking(move || import_once(&s, &d, &dd, &c)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "roster: cannot record the import"),
            Err(e) => tracing::error!(error = %e, "roster: the import task failed"),
        }
        seen = Some(now);
    }
}

/// One import from the drop folder, with its audit entry.
fn import_once(
    store: &Store,
    data_dir: &Path,
    drop_dir: &Path,
    cfg: &RosterConfig,
) -> anyhow::Result<()> {
    let entry = match super::import(data_dir, drop_dir, cfg, false) {
        Ok(o) if o.written => {
            tracing::info!(
                roster = %o.roster_file.display(),
                changes = %o.diff.summary(),
                pupils = o.plan.pupils,
                staff = o.plan.staff,
                "roster: imported the MIS export"
            );
            Audit::new("roster.import", o.roster_file.display().to_string()).detail(format!(
                "{} source={}",
                o.diff.summary(),
                drop_dir.display()
            ))
        }
        Ok(_) => {
            tracing::info!("roster: the MIS export changes nothing");
            return Ok(());
        }
        Err(e) => {
            tracing::error!(error = %e, "roster: the MIS export was refused; the roster is unchanged");
            // The first line only: the rows it goes on to list name pupils, and those stay
            // in the log.
            let reason: String = e
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(500)
                .collect();
            Audit::new("roster.rejected", drop_dir.display().to_string()).detail(reason)
        }
    };
    store.admin(|a| audit::append(a, &Actor::system(), &entry.record()))?;
    Ok(())
}
