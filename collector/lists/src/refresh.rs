//! Scheduled refresh: `[lists]` in collector.toml names where the lists come from; every
//! `refresh_every` they are imported again (same atomic swap as `lists import`) and the new
//! [`Lists`] is published to the running collector.
//!
//! Sources are local: a UT1 directory or a `.tar.gz` of one (for example kept current by a
//! cron job running `rsync rsync://ftp.ut-capitole.fr/blacklist/`). Fetching over HTTP is left
//! out on purpose: the collector would need an HTTP client and a trust decision on the server.

use super::{ListClass, Lists, ListsError, import};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ListsConfig {
    /// UT1 directory or `.tar.gz` of ordinary lists; relative to the data directory if not
    /// absolute. None: no scheduled refresh of ordinary lists.
    pub source: Option<PathBuf>,
    /// The same for the illegal class (licensed feeds).
    pub illegal_source: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub refresh_every: Duration,
}

impl Default for ListsConfig {
    fn default() -> Self {
        Self {
            source: None,
            illegal_source: None,
            refresh_every: Duration::from_secs(24 * 3600),
        }
    }
}

impl ListsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.refresh_every < Duration::from_secs(60) {
            return Err("lists.refresh_every must be at least 1m".into());
        }
        Ok(())
    }

    fn sources(&self, data_dir: &Path) -> Vec<(ListClass, PathBuf)> {
        [
            (ListClass::Illegal, &self.illegal_source),
            (ListClass::Ordinary, &self.source),
        ]
        .into_iter()
        .filter_map(|(class, s)| s.as_ref().map(|s| (class, data_dir.join(s))))
        .collect()
    }
}

/// Imports every configured source once. Returns the reloaded lists if at least one import
/// succeeded; a failed import keeps that class's previous lists and is logged.
pub fn refresh_once(data_dir: &Path, cfg: &ListsConfig) -> Result<Option<Lists>, ListsError> {
    let mut changed = false;
    for (class, source) in cfg.sources(data_dir) {
        match import(data_dir, &source, class) {
            Ok(report) => {
                tracing::info!(
                    class = class.as_str(),
                    source = %source.display(),
                    categories = report.categories.len(),
                    entries = report.read.entries,
                    skipped = report.read.skipped_total,
                    "lists refreshed"
                );
                changed = true;
            }
            Err(e) => {
                tracing::warn!(
                    class = class.as_str(),
                    "lists refresh failed, keeping the previous lists: {e}"
                );
            }
        }
    }
    if changed {
        Lists::load(data_dir).map(Some)
    } else {
        Ok(None)
    }
}

/// Runs the schedule until the task is dropped: spawn it from `serve`. Imports at once if a
/// configured class has never been imported, then every `refresh_every`. The running policy
/// picks up the new files itself (`crate::reload`).
pub async fn run(data_dir: PathBuf, cfg: ListsConfig) {
    let sources = cfg.sources(&data_dir);
    if sources.is_empty() {
        return;
    }
    let dir = super::store::lists_dir(&data_dir);
    let mut wait = !sources
        .iter()
        .any(|(class, _)| !dir.join(class.file_name()).exists());
    loop {
        if wait {
            tokio::time::sleep(cfg.refresh_every).await;
        }
        wait = true;
        let (d, c) = (data_dir.clone(), cfg.clone());
        match tokio::task::spawn_blocking(move || refresh_once(&d, &c)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("reloading lists after a refresh failed: {e}"),
            Err(e) => tracing::warn!("lists refresh task failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_imports_configured_sources_and_keeps_old_lists_on_failure() {
        let data = tempfile::tempdir().unwrap();
        let src = data.path().join("ut1");
        std::fs::create_dir_all(src.join("games")).unwrap();
        std::fs::write(src.join("games/domains"), "games.example\n").unwrap();
        let cfg = ListsConfig {
            source: Some("ut1".into()),
            ..ListsConfig::default()
        };
        let lists = refresh_once(data.path(), &cfg).unwrap().unwrap();
        assert_eq!(lists.first("http://a.games.example/"), Some("games"));

        std::fs::write(src.join("games/domains"), b"\x00binary").unwrap();
        assert!(refresh_once(data.path(), &cfg).unwrap().is_none());
        let lists = Lists::load(data.path()).unwrap();
        assert_eq!(lists.first("http://a.games.example/"), Some("games"));
    }

    #[tokio::test]
    async fn the_schedule_imports_at_once_when_nothing_was_imported() {
        let data = tempfile::tempdir().unwrap();
        let src = data.path().join("ut1");
        std::fs::create_dir_all(src.join("games")).unwrap();
        std::fs::write(src.join("games/domains"), "games.example\n").unwrap();
        let cfg = ListsConfig {
            source: Some(src),
            ..ListsConfig::default()
        };
        let task = tokio::spawn(run(data.path().to_owned(), cfg));
        let imported = || Lists::load(data.path()).ok().filter(|l| !l.is_empty());
        for _ in 0..200 {
            if imported().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        task.abort();
        let lists = imported().expect("imported within 10 s");
        assert_eq!(lists.first("games.example"), Some("games"));
    }
}
