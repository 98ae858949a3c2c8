//! One visit, reported more than once, counted once.
//!
//! A browser with the managed extension reports each visit twice: the extension at once, the
//! history database seconds later (or first, when the extension's host could not reach the
//! agent for a while). An extension resend after a lost acknowledgement is a third copy. Every
//! copy is stored (each is what a device said), and linked here to the visit's first report;
//! the committer then raises, for a later copy, only alerts the visit has not raised yet, so
//! alerts and the reports built from them count the visit once.
//!
//! Two reports are one visit when they come from the same agent and user, for the same URL as
//! stored, with browser times at most [`SAME_VISIT_US`] apart, one from each reporter, each
//! linked at most once (two reloads of a page are two visits); or, from the extension, at the
//! very same time (a resend carries its original's time).

use super::{Result, System};
use crate::store::db::{OptionalExtension, params};
use sha2::{Digest, Sha256};

/// How far apart the extension's and the history's times for one visit may be. Both are the
/// browser's clock at the navigation's commit; they differ by milliseconds.
pub const SAME_VISIT_US: i64 = 5_000_000;

/// Who reported a visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    History,
    Extension,
}

impl Reporter {
    /// From the event's `reporter` field; an older agent sends none, and only had history.
    pub fn from_field(field: &str) -> Self {
        if field == "extension" {
            Self::Extension
        } else {
            Self::History
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::History => "history",
            Self::Extension => "extension",
        }
    }

    fn other(self) -> Self {
        match self {
            Self::History => Self::Extension,
            Self::Extension => Self::History,
        }
    }
}

/// A stored visit event's report.
pub struct Report<'a> {
    pub agent_id: &'a str,
    pub seq: u64,
    pub user: &'a str,
    /// The URL as stored (an illegal-class visit's is already redacted to its hash).
    pub url: &'a str,
    pub visit_time_us: i64,
    pub reporter: Reporter,
}

/// The first report of the same visit, with the alert rules it has raised so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstReport {
    pub event_id: i64,
    pub rules: Vec<String>,
}

/// Records `r` (whose event was just stored) and returns the visit's first report when `r` is
/// a later copy of it.
pub fn link(sys: &System<'_>, r: &Report<'_>) -> Result<Option<FirstReport>> {
    let conn = sys.conn;
    let hash = Sha256::digest(r.url.as_bytes()).to_vec();
    let event_id: i64 = conn
        .prepare_cached("SELECT id FROM events WHERE agent_id = ?1 AND seq = ?2")?
        .query_row(params![r.agent_id, r.seq as i64], |row| row.get(0))?;
    let resent = || -> crate::store::db::Result<Option<i64>> {
        conn.prepare_cached(
            "SELECT coalesce(same_as, event_id) FROM visit_reports
             WHERE agent_id = ?1 AND url_hash = ?2 AND visit_time = ?3 AND user = ?4
               AND reporter = 'extension' AND event_id != ?5
             LIMIT 1",
        )?
        .query_row(
            params![r.agent_id, hash, r.visit_time_us, r.user, event_id],
            |row| row.get(0),
        )
        .optional()
    };
    let first = match r.reporter {
        Reporter::Extension => resent()?,
        Reporter::History => None,
    };
    let first = match first {
        Some(id) => Some(id),
        None => conn
            .prepare_cached(
                "SELECT v.event_id FROM visit_reports v
                 WHERE v.agent_id = ?1 AND v.url_hash = ?2
                   AND v.visit_time BETWEEN CAST(?3 AS BIGINT) - ?4 AND CAST(?3 AS BIGINT) + ?4
                   AND v.user = ?5 AND v.reporter = ?6 AND v.same_as IS NULL
                   AND NOT EXISTS (SELECT 1 FROM visit_reports m
                                   WHERE m.same_as = v.event_id AND m.reporter = ?7)
                 ORDER BY abs(v.visit_time - ?3) LIMIT 1",
            )?
            .query_row(
                params![
                    r.agent_id,
                    hash,
                    r.visit_time_us,
                    SAME_VISIT_US,
                    r.user,
                    r.reporter.other().as_str(),
                    r.reporter.as_str()
                ],
                |row| row.get(0),
            )
            .optional()?,
    };
    conn.prepare_cached(
        "INSERT INTO visit_reports(event_id, agent_id, user, url_hash, visit_time, reporter, same_as)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        event_id,
        r.agent_id,
        r.user,
        hash,
        r.visit_time_us,
        r.reporter.as_str(),
        first
    ])?;
    let Some(first) = first else {
        return Ok(None);
    };
    let rules: Option<String> = conn
        .prepare_cached("SELECT rules FROM visit_reports WHERE event_id = ?1")?
        .query_row([first], |row| row.get(0))
        .optional()?;
    // Not there only if the first went in this very transaction's retention race: then this
    // copy stands alone.
    let Some(rules) = rules else {
        return Ok(None);
    };
    Ok(Some(FirstReport {
        event_id: first,
        rules: rules
            .split('\n')
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect(),
    }))
}

/// Notes alert rules the visit has now raised, on its first report: `first` is the visit's
/// first report's event id, or the report's own (agent, seq) when it is the first.
pub fn raised(sys: &System<'_>, first: Raised<'_>, rules: &[&str]) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let conn = sys.conn;
    let event_id: i64 = match first {
        Raised::First(id) => id,
        Raised::Own { agent_id, seq } => conn
            .prepare_cached("SELECT id FROM events WHERE agent_id = ?1 AND seq = ?2")?
            .query_row(params![agent_id, seq as i64], |row| row.get(0))?,
    };
    let mut stmt =
        conn.prepare_cached("UPDATE visit_reports SET rules = rules || ?2 WHERE event_id = ?1")?;
    for rule in rules {
        stmt.execute(params![event_id, format!("{rule}\n")])?;
    }
    Ok(())
}

/// Where [`raised`] notes the rules.
pub enum Raised<'a> {
    First(i64),
    Own { agent_id: &'a str, seq: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{System, events};
    use invigilator_proto::v1::{BrowsingVisit, Event, event::Kind};

    fn store(
        sys: &System<'_>,
        seq: u64,
        url: &str,
        at: i64,
        reporter: Reporter,
    ) -> Option<FirstReport> {
        let e = Event {
            seq,
            observed_at_us: at,
            user: "amy".into(),
            kind: Some(Kind::Browsing(BrowsingVisit {
                action: "visit".into(),
                url: url.into(),
                visit_time_us: at,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert!(events::insert(sys, "a1", &e, at).unwrap());
        link(
            sys,
            &Report {
                agent_id: "a1",
                seq,
                user: "amy",
                url,
                visit_time_us: at,
                reporter,
            },
        )
        .unwrap()
    }

    #[test]
    fn each_copy_links_to_the_first_report_once() {
        let (_d, mut conn) = crate::store::test_db();
        let tx = conn.transaction().unwrap();
        let sys = System::test(&tx);
        let t = 1_764_780_000_000_000;
        // The extension first, its rules noted.
        assert_eq!(
            store(&sys, 1, "http://a.test/", t, Reporter::Extension),
            None
        );
        raised(
            &sys,
            Raised::Own {
                agent_id: "a1",
                seq: 1,
            },
            &["keywords.self_harm"],
        )
        .unwrap();
        // A reload two seconds later: a second visit.
        assert_eq!(
            store(
                &sys,
                2,
                "http://a.test/",
                t + 2_000_000,
                Reporter::Extension
            ),
            None
        );
        // History reports both, a few milliseconds off: each links to its own.
        let h1 = store(&sys, 3, "http://a.test/", t + 3_000, Reporter::History).unwrap();
        assert_eq!(h1.rules, ["keywords.self_harm"]);
        let h2 = store(&sys, 4, "http://a.test/", t + 2_004_000, Reporter::History).unwrap();
        assert!(h2.rules.is_empty());
        assert_ne!(h1.event_id, h2.event_id);
        // A third history copy has nothing left to link to; another URL neither.
        assert_eq!(
            store(&sys, 5, "http://a.test/", t + 1_000, Reporter::History),
            None
        );
        assert_eq!(store(&sys, 6, "http://b.test/", t, Reporter::History), None);
        // An extension resend (the same time exactly) links to the first, through the history
        // copy's link or directly.
        let resend = store(&sys, 7, "http://a.test/", t, Reporter::Extension).unwrap();
        assert_eq!(resend.event_id, h1.event_id);
        raised(&sys, Raised::First(resend.event_id), &["web.gambling"]).unwrap();
        let again = store(&sys, 8, "http://a.test/", t, Reporter::Extension).unwrap();
        assert_eq!(again.rules, ["keywords.self_harm", "web.gambling"]);
        // Another user's visit to the same page at the same time is theirs.
        let e = Event {
            seq: 9,
            user: "ben".into(),
            ..Default::default()
        };
        assert!(events::insert(&sys, "a1", &e, t).unwrap());
        let ben = Report {
            agent_id: "a1",
            seq: 9,
            user: "ben",
            url: "http://a.test/",
            visit_time_us: t,
            reporter: Reporter::History,
        };
        assert_eq!(link(&sys, &ben).unwrap(), None);
    }

    #[test]
    fn a_copy_outliving_its_first_report_stands_alone() {
        let (_d, mut conn) = crate::store::test_db();
        let tx = conn.transaction().unwrap();
        let sys = System::test(&tx);
        let t = 1_764_780_000_000_000;
        store(&sys, 1, "http://a.test/", t, Reporter::Extension);
        assert!(store(&sys, 2, "http://a.test/", t, Reporter::History).is_some());
        // Retention takes the first (its event is older by the collector's clock).
        tx.execute("DELETE FROM events WHERE seq = 1", []).unwrap();
        let same_as: Option<i64> = tx
            .query_row("SELECT same_as FROM visit_reports", [], |r| r.get(0))
            .unwrap();
        assert_eq!(same_as, None);
        // A resend of the same visit links to the surviving copy; nothing points at nothing.
        let resend = store(&sys, 3, "http://a.test/", t, Reporter::Extension).unwrap();
        let survivor: i64 = tx
            .query_row("SELECT id FROM events WHERE seq = 2", [], |r| r.get(0))
            .unwrap();
        assert_eq!(resend.event_id, survivor);
    }

    #[test]
    fn a_report_goes_with_its_event() {
        let (_d, mut conn) = crate::store::test_db();
        let tx = conn.transaction().unwrap();
        let sys = System::test(&tx);
        store(&sys, 1, "http://a.test/", 5, Reporter::Extension);
        tx.execute("DELETE FROM events", []).unwrap();
        let n: i64 = tx
            .query_row("SELECT count(*) FROM visit_reports", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }
}
