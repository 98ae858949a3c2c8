//! The reader end to end inside the agent: real-schema databases -> snapshot -> tracker ->
//! channel -> a real spool (whose stored checkpoints a "restarted" tracker reads back).

use super::fixtures::{ChromiumDb, FirefoxDb};
use super::profiles::{Browser, Profile};
use super::tracker::{CheckpointReader, Context, Tracker};
use crate::sources::{EventRx, EventTx, channel, now_us};
use crate::spool::Spool;
use invigilator_proto::v1::{BrowsingVisit, event::Kind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

struct Harness {
    _dir: tempfile::TempDir,
    profile_dir: PathBuf,
    work: PathBuf,
    spool: Arc<Spool>,
    reader: CheckpointReader,
    tx: EventTx,
    rx: EventRx,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let profile_dir = dir.path().join("Default");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&profile_dir).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let spool = Arc::new(Spool::open(&dir.path().join("spool.db"), 1 << 24).unwrap());
        let s = Arc::clone(&spool);
        let (tx, rx) = channel(10_000);
        Self {
            _dir: dir,
            profile_dir,
            work,
            spool,
            reader: Box::new(move |k| s.checkpoint(k)),
            tx,
            rx,
        }
    }

    fn tracker(&self, browser: Browser) -> Tracker {
        Tracker::new(Profile::at(
            browser,
            self.profile_dir.clone(),
            "pupil".into(),
        ))
    }

    /// One read; what it sent, after storing it in the spool as the writer would.
    fn sync(&mut self, t: &mut Tracker) -> Vec<BrowsingVisit> {
        let ctx = Context {
            hostname: "ict-07",
            work_dir: &self.work,
            limits: Default::default(),
            backfill: Duration::from_secs(3600),
            checkpoints: &self.reader,
            tx: &self.tx,
        };
        t.sync(&ctx).unwrap();
        let (mut events, mut cps) = (Vec::new(), Vec::new());
        while let Ok(o) = self.rx.try_recv() {
            events.extend(o.event);
            cps.extend(o.checkpoint);
        }
        self.spool.append(&mut events, &cps).unwrap();
        // The copy is gone: users' histories do not linger in the agent's directory.
        assert_eq!(std::fs::read_dir(&self.work).unwrap().count(), 0);
        events
            .into_iter()
            .map(|e| {
                assert_eq!((e.hostname.as_str(), e.user.as_str()), ("ict-07", "pupil"));
                match e.kind {
                    Some(Kind::Browsing(b)) => b,
                    k => panic!("not browsing: {k:?}"),
                }
            })
            .collect()
    }
}

fn urls(v: &[BrowsingVisit]) -> Vec<&str> {
    v.iter()
        .map(|b| {
            if b.action == "visit" {
                b.url.as_str()
            } else {
                b.action.as_str()
            }
        })
        .collect()
}

#[test]
fn chromium_history_incremental_restart_clear_and_replace() {
    let mut h = Harness::new();
    let db = ChromiumDb::create(&h.profile_dir.join("History"));
    let now = now_us();
    // Older than the backfill: a profile seen for the first time does not report it.
    db.visit("http://old.test/", "old", now - 2 * 3600 * 1_000_000, 1);
    db.visit(
        "https://www.google.co.uk/search?q=volcano+eruption+%C3%A9t%C3%A9",
        "volcano - Google",
        now - 5_000_000,
        0x3000_0001,
    );
    db.visit(
        "https://alice:pw@intranet.test/grades",
        "<b>Maths</b> <script>alert(1)</script>",
        now - 4_000_000,
        0,
    );
    let mut t = h.tracker(Browser::Chromium);
    let got = h.sync(&mut t);
    assert_eq!(
        urls(&got),
        [
            "https://www.google.co.uk/search?q=volcano+eruption+%C3%A9t%C3%A9",
            "https://intranet.test/grades"
        ]
    );
    let g = &got[0];
    assert_eq!(
        (
            g.search_engine.as_str(),
            g.search_terms.as_str(),
            g.transition.as_str()
        ),
        ("google", "volcano eruption été", "typed")
    );
    assert_eq!(
        (g.browser.as_str(), g.profile.as_str()),
        ("chromium", h.profile_dir.to_str().unwrap())
    );
    assert_eq!(g.visit_time_us, now - 5_000_000);
    assert_eq!(got[1].title, "<b>Maths</b> <script>alert(1)</script>");
    assert_eq!(
        (got[1].transition.as_str(), got[1].search_terms.as_str()),
        ("link", "")
    );

    // Nothing new: nothing sent. New visits: only they.
    assert!(h.sync(&mut t).is_empty());
    db.visit("http://a.test/", "a", now, 1);
    db.visit("http://a.test/", "a", now + 1, 8);
    let got = h.sync(&mut t);
    assert_eq!(urls(&got), ["http://a.test/", "http://a.test/"]);
    assert_eq!(got[1].transition, "reload");

    // A restarted agent: the cursor comes back from the spool; nothing re-sent, nothing skipped.
    db.visit("http://b.test/", "b", now + 2, 1);
    let mut t = h.tracker(Browser::Chromium);
    assert_eq!(urls(&h.sync(&mut t)), ["http://b.test/"]);

    // Cleared, and browsing resumed before the agent looked: ids continue (AUTOINCREMENT) past
    // the cursor, but the anchor visit is gone. One reset event, then only the new visit.
    db.0.execute_batch("DELETE FROM visits; DELETE FROM urls;")
        .unwrap();
    db.visit("http://c.test/", "c", now + 3, 1);
    db.visit("http://d.test/", "d", now + 4, 1);
    let got = h.sync(&mut t);
    assert_eq!(
        urls(&got),
        ["history-reset", "http://c.test/", "http://d.test/"]
    );
    assert!(got[0].detail.starts_with("cleared"), "{}", got[0].detail);
    assert_eq!(got[0].browser, "chromium");

    // Replaced by another file holding an old visit and a new one: only the new one is sent.
    let new_path = h.profile_dir.join("History.new");
    let other = ChromiumDb::create(&new_path);
    other.visit("http://a.test/", "a", now, 1);
    other.visit("http://e.test/", "e", now + 5, 1);
    drop(other);
    std::fs::rename(&new_path, h.profile_dir.join("History")).unwrap();
    let got = h.sync(&mut t);
    assert_eq!(urls(&got), ["history-reset", "http://e.test/"]);
    assert!(got[0].detail.starts_with("replaced"), "{}", got[0].detail);
    // And the reset itself is remembered across a restart.
    let mut t = h.tracker(Browser::Chromium);
    assert!(h.sync(&mut t).is_empty());
}

#[test]
fn firefox_places_read_through_the_uncheckpointed_wal() {
    let mut h = Harness::new();
    let db = FirefoxDb::create(&h.profile_dir.join("places.sqlite"));
    let now = now_us();
    db.visit(
        "https://duckduckgo.com/?q=caf%C3%A9+cr%C3%A8me&ia=web",
        "café crème at DuckDuckGo",
        now - 1000,
        2,
    );
    db.visit(
        "https://www.youtube.com/results?search_query=minecraft+tips",
        "YouTube",
        now - 500,
        1,
    );
    db.visit("http://x.test/f.pdf", "", now, 7);
    // The browser still has the database open and everything is still in the -wal.
    assert!(
        std::fs::metadata(h.profile_dir.join("places.sqlite-wal"))
            .unwrap()
            .len()
            > 0
    );
    let mut t = h.tracker(Browser::Firefox);
    let got = h.sync(&mut t);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(
        (
            got[0].search_engine.as_str(),
            got[0].search_terms.as_str(),
            got[0].transition.as_str()
        ),
        ("duckduckgo", "café crème", "typed")
    );
    assert_eq!(
        (got[1].search_engine.as_str(), got[1].search_terms.as_str()),
        ("youtube", "minecraft tips")
    );
    assert_eq!(
        (
            got[2].transition.as_str(),
            got[2].visit_time_us,
            got[2].browser.as_str()
        ),
        ("download", now, "firefox")
    );
    db.visit("http://y.test/", "y", now + 1, 9);
    let mut t = h.tracker(Browser::Firefox);
    let got = h.sync(&mut t);
    assert_eq!(urls(&got), ["http://y.test/"]);
    assert_eq!(got[0].transition, "reload");
    // Firefox's "Forget about this site" / clear history deletes visits: said, not hidden.
    db.0.execute_batch("DELETE FROM moz_historyvisits; DELETE FROM moz_places;")
        .unwrap();
    assert_eq!(urls(&h.sync(&mut t)), ["history-reset"]);
}

/// What a pupil can leave in their own profile; each read fails with an error that names the
/// problem, at once, and copies nothing.
#[cfg(target_os = "linux")]
mod hostile {
    use super::*;
    use crate::sources::browsing::tracker::SyncError;
    use std::time::Instant;

    fn sync_err(h: &Harness) -> SyncError {
        let mut t = h.tracker(Browser::Chromium);
        let ctx = Context {
            hostname: "ict-07",
            work_dir: &h.work,
            limits: Default::default(),
            backfill: Duration::from_secs(3600),
            checkpoints: &h.reader,
            tx: &h.tx,
        };
        let started = Instant::now();
        let err = t.sync(&ctx).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(std::fs::read_dir(&h.work).unwrap().count(), 0);
        err
    }

    #[test]
    fn a_fifo_journal_neither_blocks_nor_is_read() {
        let h = Harness::new();
        let db = ChromiumDb::create(&h.profile_dir.join("History"));
        db.visit("http://school.test/", "school", now_us(), 1);
        nix::unistd::mkfifo(
            &h.profile_dir.join("History-journal"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let err = sync_err(&h).to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_sparse_history_is_refused_unread() {
        let h = Harness::new();
        let f = std::fs::File::create(h.profile_dir.join("History")).unwrap();
        f.set_len(3 << 30).unwrap();
        let err = sync_err(&h).to_string();
        assert!(err.contains("above the limit"), "{err}");
    }

    #[test]
    fn a_link_to_a_file_the_pupil_cannot_read_is_refused() {
        let h = Harness::new();
        std::os::unix::fs::symlink("/etc/shadow", h.profile_dir.join("History")).unwrap();
        let err = sync_err(&h).to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }

    #[test]
    fn visits_as_an_endless_view_is_refused_and_runaway_sql_is_stopped() {
        let h = Harness::new();
        let db = ChromiumDb::create(&h.profile_dir.join("History"));
        db.0.execute_batch(
            "DROP TABLE visits;
             CREATE VIEW visits AS WITH RECURSIVE n(id) AS (SELECT 1 UNION ALL SELECT id + 1 FROM n)
             SELECT id, 1 AS url, 0 AS visit_time, 0 AS transition FROM n;",
        )
        .unwrap();
        drop(db);
        let err = sync_err(&h).to_string();
        assert!(err.contains("`visits` is view"), "{err}");

        // Any statement on a hostile copy stops at the deadline, whatever it is.
        let h = Harness::new();
        ChromiumDb::create(&h.profile_dir.join("History"));
        let profile = Profile::at(Browser::Chromium, h.profile_dir.clone(), String::new());
        let limits = crate::sources::browsing::snapshot::ReadLimits {
            max_bytes: 1 << 20,
            deadline: Duration::from_millis(300),
        };
        let snap = crate::sources::browsing::snapshot::take(&profile, &h.work, limits).unwrap();
        let started = Instant::now();
        let r: rusqlite::Result<i64> = snap.conn.query_row(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n",
            [],
            |r| r.get(0),
        );
        assert!(r.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let trusted: i64 = snap
            .conn
            .query_row("PRAGMA trusted_schema", [], |r| r.get(0))
            .unwrap();
        assert_eq!(trusted, 0);
    }
}
