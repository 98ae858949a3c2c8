//! One profile: takes a snapshot of its history, checks it against the cursor, and sends the new
//! visits (each with the cursor just past it, so the spool stores both together).

use super::cursor::{self, BadCheckpoint, Cursor};
use super::history::{self, Queries, RawVisit};
use super::profiles::{Browser, Profile};
use super::snapshot::{self, ReadLimits, SnapshotError, Stamp};
use super::url_clean::{MAX_TITLE, clean_url, truncate};
use super::{chromium, firefox, search};
use crate::sources::{Checkpoint, Closed, EventTx, now_us, observed};
use crate::spool::SpoolError;
use invigilator_proto::v1::{BrowsingVisit, Event, event::Kind};
use std::path::Path;
use std::time::Duration;

/// Reads a stored checkpoint back (the spool's, in the agent).
pub type CheckpointReader = Box<dyn Fn(&str) -> Result<Option<String>, SpoolError> + Send>;

/// Visits read per query: bounds memory however much history arrives at once.
const PAGE: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("reading the history copy: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("reading the stored cursor: {0}")]
    Checkpoint(#[from] SpoolError),
    #[error(transparent)]
    Closed(#[from] Closed),
}

/// What every profile's reads share.
pub struct Context<'a> {
    pub hostname: &'a str,
    pub work_dir: &'a Path,
    /// What one read may cost.
    pub limits: ReadLimits,
    /// How far back to report on a profile seen for the first time.
    pub backfill: Duration,
    pub checkpoints: &'a CheckpointReader,
    pub tx: &'a EventTx,
}

pub struct Tracker {
    pub profile: Profile,
    cursor: Option<Cursor>,
    /// The database as last read; the periodic poll reads again only when it differs.
    pub last_stamp: Option<Stamp>,
}

fn queries(browser: Browser) -> &'static Queries {
    match browser {
        Browser::Firefox => &firefox::QUERIES,
        _ => &chromium::QUERIES,
    }
}

impl Tracker {
    pub fn new(profile: Profile) -> Self {
        Self {
            profile,
            cursor: None,
            last_stamp: None,
        }
    }

    /// Sends everything new since the cursor; returns how many visits were sent.
    pub fn sync(&mut self, ctx: &Context) -> Result<usize, SyncError> {
        let q = queries(self.profile.browser);
        let snap = snapshot::take(&self.profile, ctx.work_dir, ctx.limits)?;
        let conn = &snap.conn;
        history::check_tables(conn, q)?;
        let key = self.profile.checkpoint_key();
        let mut cur = match self.cursor {
            Some(c) => c,
            None => match self.stored_cursor(ctx, &key) {
                Some(c) => c,
                None => {
                    // First sight of this profile: report only the recent past (a device
                    // enrolled today does not upload months of history), and store that
                    // decision at once so a restart does not report the same visits again.
                    let cutoff = (q.from_unix_us)(now_us() - ctx.backfill.as_micros() as i64);
                    let id = history::base_after_time(conn, q, cutoff)?;
                    let c = Cursor {
                        id,
                        anchor: history::time_of(conn, q, id)?,
                        watermark: cutoff,
                        file: snap.file,
                    };
                    ctx.tx.blocking_observe(None, Some(checkpoint(&key, &c)))?;
                    tracing::info!(profile = %self.profile.dir.display(), browser = self.profile.browser.as_str(), from_visit = id, "browsing: new profile");
                    c
                }
            },
        };
        self.cursor = Some(cur);

        let max = history::max_id(conn, q)?;
        let anchor_now = match cur.anchor {
            Some(_) => history::time_of(conn, q, cur.id)?,
            None => None,
        };
        if let Some(reset) = cursor::check(&cur, snap.file, max, anchor_now) {
            let id = history::base_after_time(conn, q, cur.watermark)?;
            cur = Cursor {
                id,
                anchor: history::time_of(conn, q, id)?,
                watermark: cur.watermark,
                file: snap.file,
            };
            tracing::warn!(profile = %self.profile.dir.display(), detail = %reset.detail(), "browsing: history reset");
            let ev = self.event(
                ctx,
                BrowsingVisit {
                    action: "history-reset".into(),
                    detail: reset.detail(),
                    ..Default::default()
                },
            );
            ctx.tx
                .blocking_observe(Some(ev), Some(checkpoint(&key, &cur)))?;
            self.cursor = Some(cur);
        }

        let mut sent = 0;
        loop {
            let page = history::visits_after(conn, q, cur.id, PAGE)?;
            for v in &page {
                cur.id = v.id;
                cur.anchor = Some(v.time);
                cur.watermark = cur.watermark.max(v.time);
                let ev = self.visit(ctx, q, v);
                sent += usize::from(ev.is_some());
                ctx.tx.blocking_observe(ev, Some(checkpoint(&key, &cur)))?;
                self.cursor = Some(cur);
            }
            if page.len() < PAGE {
                break;
            }
        }
        self.last_stamp = Some(snap.stamp);
        Ok(sent)
    }

    /// The stored cursor; an unreadable one is treated as absent (and said so).
    fn stored_cursor(&self, ctx: &Context, key: &str) -> Option<Cursor> {
        let text = match (ctx.checkpoints)(key) {
            Ok(t) => t?,
            Err(e) => {
                tracing::warn!(key, error = %e, "browsing: cannot read the stored cursor");
                return None;
            }
        };
        text.parse()
            .map_err(|e: BadCheckpoint| tracing::warn!(key, error = %e, "browsing: ignoring the stored cursor"))
            .ok()
    }

    fn visit(&self, ctx: &Context, q: &Queries, v: &RawVisit) -> Option<Event> {
        // A visit whose URL row is gone is being deleted: nothing to report.
        let raw_url = v.url.as_deref()?;
        let found = search::extract(raw_url);
        Some(self.event(
            ctx,
            BrowsingVisit {
                action: "visit".into(),
                url: clean_url(raw_url),
                title: truncate(v.title.as_deref().unwrap_or(""), MAX_TITLE),
                visit_time_us: (q.to_unix_us)(v.time),
                transition: (q.transition)(v.transition).into(),
                reporter: "history".into(),
                search_terms: found.as_ref().map(|s| s.terms.clone()).unwrap_or_default(),
                search_engine: found.map(|s| s.engine.to_owned()).unwrap_or_default(),
                ..Default::default()
            },
        ))
    }

    fn event(&self, ctx: &Context, mut b: BrowsingVisit) -> Event {
        b.browser = self.profile.browser.as_str().into();
        b.profile = self.profile.dir.display().to_string();
        observed(ctx.hostname, self.profile.user.clone(), Kind::Browsing(b))
    }
}

fn checkpoint(key: &str, c: &Cursor) -> Checkpoint {
    Checkpoint {
        key: key.to_owned(),
        value: c.to_string(),
    }
}
