//! One report per visit for a collector that cannot count two as one.
//!
//! A browser with the extension reports each visit twice (the extension at once, the history
//! seconds later), and the extension sends again what an outage left unacknowledged. Current
//! collectors store every copy and link them, so a visit alerts once (`store::visits` there).
//! A collector from before the extension does not: it would alert on each copy. The heartbeat's
//! answer says which kind the collector is (`links_visits`); until one says it links, the spool
//! writer keeps only the first report of each visit, by the collector's own rule: the same
//! user and URL, one report from each reporter with browser times at most
//! [`SAME_VISIT_US`] apart, each paired once; or, from the extension, the very same time (a
//! resend keeps its original's time).
//!
//! What is remembered is bounded ([`MAX_REMEMBERED`] reports, [`REMEMBER_US`] of browser
//! time), and forgotten at a restart: a copy sent after either still reaches an old collector.

use invigilator_proto::v1::{Event, event::Kind};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// How far apart the extension's and the history's times for one visit may be (the
/// collector's `SAME_VISIT_US`).
pub const SAME_VISIT_US: i64 = 5_000_000;
/// Reports remembered at most.
pub const MAX_REMEMBERED: usize = 4096;
/// How long a report is remembered, in browser time.
pub const REMEMBER_US: i64 = 600_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
    user: String,
    url: String,
    time_us: i64,
    from_extension: bool,
    paired: bool,
}

#[derive(Debug, Default)]
pub struct OneReport {
    /// The collector said it links reports (false until a heartbeat's answer says so).
    links: AtomicBool,
    recent: Mutex<VecDeque<Report>>,
}

impl OneReport {
    /// What the collector last said, from each heartbeat's answer.
    pub fn collector_links(&self, links: bool) {
        if self.links.swap(links, Ordering::Relaxed) != links {
            tracing::info!(
                links,
                "the collector {} the reports of one visit",
                if links { "links" } else { "does not link" }
            );
        }
    }

    /// True when `event` is a second report of a visit the collector cannot link, so it must
    /// not be sent; anything else is kept (and, while the collector cannot link, remembered).
    pub fn is_repeat(&self, event: &Event) -> bool {
        if self.links.load(Ordering::Relaxed) {
            return false;
        }
        let Some(Kind::Browsing(b)) = &event.kind else {
            return false;
        };
        if b.action != "visit" {
            return false;
        }
        let report = Report {
            user: event.user.clone(),
            url: b.url.clone(),
            time_us: b.visit_time_us,
            from_extension: b.reporter == "extension",
            paired: false,
        };
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let newest = recent.iter().map(|r| r.time_us).max().unwrap_or(i64::MIN);
        recent.retain(|r| r.time_us >= newest.max(report.time_us) - REMEMBER_US);
        let same = |r: &Report| r.user == report.user && r.url == report.url;
        if report.from_extension
            && recent
                .iter()
                .any(|r| same(r) && r.from_extension && r.time_us == report.time_us)
        {
            return true;
        }
        if let Some(other) = recent.iter_mut().find(|r| {
            same(r)
                && r.from_extension != report.from_extension
                && !r.paired
                && (r.time_us - report.time_us).abs() <= SAME_VISIT_US
        }) {
            other.paired = true;
            return true;
        }
        if recent.len() == MAX_REMEMBERED {
            recent.pop_front();
        }
        recent.push_back(report);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use invigilator_proto::v1::BrowsingVisit;

    fn visit(reporter: &str, url: &str, time_us: i64) -> Event {
        Event {
            user: "amy".into(),
            kind: Some(Kind::Browsing(BrowsingVisit {
                action: "visit".into(),
                url: url.into(),
                visit_time_us: time_us,
                reporter: reporter.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    const T: i64 = 1_764_780_000_000_000;

    #[test]
    fn an_old_collector_gets_one_report_of_each_visit() {
        let once = OneReport::default();
        let a = "https://example.org/a";
        assert!(!once.is_repeat(&visit("extension", a, T)), "first report");
        assert!(
            once.is_repeat(&visit("extension", a, T)),
            "a resend keeps its time"
        );
        assert!(
            once.is_repeat(&visit("history", a, T + 3_000)),
            "the history's copy"
        );
        // A reload two seconds later is another visit, reported by both.
        assert!(!once.is_repeat(&visit("extension", a, T + 2_000_000)));
        assert!(once.is_repeat(&visit("history", a, T + 2_000_100)));
        // The history first (the extension's host was down), then the extension.
        let b = "https://example.org/b";
        assert!(!once.is_repeat(&visit("history", b, T)));
        assert!(once.is_repeat(&visit("extension", b, T + 1_000)));
        // Another user's, another page's, or far apart: not the same visit.
        let mut other = visit("history", a, T);
        other.user = "ben".into();
        assert!(!once.is_repeat(&other));
        assert!(!once.is_repeat(&visit("history", "https://example.org/c", T)));
        assert!(!once.is_repeat(&visit("history", a, T + 60_000_000)));
        // Not a visit: never held back.
        assert!(!once.is_repeat(&Event::default()));
    }

    #[test]
    fn a_collector_that_links_gets_every_report_and_nothing_is_remembered() {
        let once = OneReport::default();
        once.collector_links(true);
        let a = "https://example.org/a";
        assert!(!once.is_repeat(&visit("extension", a, T)));
        assert!(!once.is_repeat(&visit("history", a, T)));
        assert!(once.recent.lock().unwrap().is_empty());
        // Told otherwise (the agent now reports to an older collector): from then on.
        once.collector_links(false);
        assert!(!once.is_repeat(&visit("extension", a, T)));
        assert!(once.is_repeat(&visit("history", a, T)));
    }

    #[test]
    fn what_is_remembered_is_bounded() {
        let once = OneReport::default();
        for i in 0..(MAX_REMEMBERED as i64 + 100) {
            once.is_repeat(&visit(
                "extension",
                &format!("https://example.org/{i}"),
                T + i,
            ));
        }
        assert_eq!(once.recent.lock().unwrap().len(), MAX_REMEMBERED);
        once.is_repeat(&visit(
            "history",
            "https://example.org/x",
            T + REMEMBER_US * 2,
        ));
        assert_eq!(
            once.recent.lock().unwrap().len(),
            1,
            "the old ones forgotten"
        );
    }
}
