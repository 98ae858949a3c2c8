//! What the browser extension may say, checked. Every message is written by a page's
//! navigation and relayed by a host process the pupil runs: untrusted text, bounded and typed
//! here before anything is spooled.
//!
//! One JSON object per line; the protocol is in `agent/browser-extension/README.md`.

use crate::search;
use crate::url_clean::{MAX_TITLE, clean_url, truncate};
use invigilator_proto::v1::BrowsingVisit;
use serde::Deserialize;

/// The Chromium-family extension's id (`agent/browser-extension/EXTENSION_ID`, from its
/// development key): the agent's and the collector's default for the ids they accept.
pub const CHROMIUM_EXTENSION_ID: &str = "mkjmmkmajbhcpdaljidmdhfegfobbiin";

/// True for a Chromium extension id: 32 letters from a to p.
pub fn is_chromium_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| (b'a'..=b'p').contains(&b))
}

/// Longest visit id (the extension sends a UUID, 36 characters).
const MAX_ID: usize = 64;
/// Longest version or browser string kept from a hello.
const MAX_LABEL: usize = 32;
/// How far back a visit's own time may be: the extension keeps what the agent has not
/// acknowledged, across a week's holiday at most.
pub const MAX_AGE_US: i64 = 14 * 24 * 3600 * 1_000_000;
/// How far ahead of the agent's clock a visit's time may be (the two share one clock, so this
/// only absorbs rounding).
pub const MAX_AHEAD_US: i64 = 60 * 1_000_000;

/// A message as the extension sends it. Unknown fields are ignored: a newer extension may add
/// some, and an older agent must keep taking its visits.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Incoming {
    Hello {
        #[serde(default)]
        version: String,
        #[serde(default)]
        browser: String,
        #[serde(default)]
        incognito_access: bool,
        /// Visits the extension's full queue dropped while the agent was unreachable, not yet
        /// recorded. A number; anything else (null, a string) reads as none.
        #[serde(default)]
        dropped: serde_json::Value,
    },
    Visit(RawVisit),
}

/// A visit before it is checked.
#[derive(Debug, Deserialize)]
pub struct RawVisit {
    pub id: String,
    pub url: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub transition: String,
    #[serde(default)]
    pub incognito: bool,
    /// Milliseconds since the Unix epoch, by the browser's clock.
    pub time: f64,
    #[serde(default)]
    pub browser: String,
}

/// Why a message was refused; sent back to the extension, which then drops the visit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a message this agent understands: {0}")]
    Malformed(String),
    #[error("the visit id must be 1 to {MAX_ID} letters, digits or dashes")]
    BadId,
    #[error("only http and https visits are recorded")]
    NotWeb,
    #[error("the visit time is not a time")]
    BadTime,
}

/// Most dropped visits one hello may report: a week's outage of heavy browsing is far below
/// it, and a bounded count keeps a hostile host from writing absurd gaps.
pub const MAX_DROPPED: u64 = 1_000_000;

/// A checked hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: String,
    pub browser: &'static str,
    pub incognito_access: bool,
    /// Visits lost in the extension (0 to MAX_DROPPED).
    pub dropped: u64,
}

/// Parses one line. A visit that fails its checks is refused by id, so the extension can drop
/// it; a line that is not a message at all has no id to answer with.
pub fn parse(line: &[u8]) -> Result<Incoming, Refused> {
    serde_json::from_slice(line).map_err(|e| Refused::Malformed(truncate(&e.to_string(), 200)))
}

impl Incoming {
    pub fn hello(
        version: String,
        browser: String,
        incognito_access: bool,
        dropped: &serde_json::Value,
    ) -> Hello {
        let dropped = dropped.as_f64().unwrap_or(0.0);
        Hello {
            version: truncate(&version, MAX_LABEL),
            browser: browser_name(&browser),
            incognito_access,
            // `as` saturates and reads NaN as 0.
            dropped: (dropped.max(0.0).floor() as u64).min(MAX_DROPPED),
        }
    }
}

/// A visit id the reply may echo: short, and nothing a terminal or a log could misread.
pub fn valid_id(id: &str) -> bool {
    (1..=MAX_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl RawVisit {
    /// The visit as the browsing source reports it, or why not. `now_us` is the agent's clock:
    /// a time outside [now - MAX_AGE_US, now + MAX_AHEAD_US] is replaced by now, so a forged
    /// time cannot move a visit out of the retention window or the school day.
    pub fn check(self, now_us: i64) -> Result<BrowsingVisit, Refused> {
        if !valid_id(&self.id) {
            return Err(Refused::BadId);
        }
        let parsed = url::Url::parse(&self.url).map_err(|_| Refused::NotWeb)?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Refused::NotWeb);
        }
        if !self.time.is_finite() {
            return Err(Refused::BadTime);
        }
        let claimed = (self.time * 1000.0) as i64; // saturating: `as` clamps floats
        let visit_time_us = if (now_us - MAX_AGE_US..=now_us + MAX_AHEAD_US).contains(&claimed) {
            claimed
        } else {
            now_us
        };
        let found = search::extract(&self.url);
        Ok(BrowsingVisit {
            action: "visit".into(),
            url: clean_url(&self.url),
            title: truncate(&self.title, MAX_TITLE),
            visit_time_us,
            transition: transition(&self.transition).into(),
            browser: browser_name(&self.browser).into(),
            profile: String::new(),
            search_terms: found.as_ref().map(|s| s.terms.clone()).unwrap_or_default(),
            search_engine: found.map(|s| s.engine.to_owned()).unwrap_or_default(),
            detail: String::new(),
            incognito: self.incognito,
            reporter: "extension".into(),
        })
    }
}

/// The browser, one of the names the history source uses; anything else is "unknown".
fn browser_name(claim: &str) -> &'static str {
    match claim {
        "chrome" => "chrome",
        "chromium" => "chromium",
        "edge" => "edge",
        "brave" => "brave",
        "firefox" => "firefox",
        _ => "unknown",
    }
}

/// The WebExtensions transition types, in the history source's vocabulary (`start_page` is
/// Chromium's own; Firefox sends the same names).
fn transition(claim: &str) -> &'static str {
    match claim {
        "link" => "link",
        "typed" => "typed",
        "auto_bookmark" => "auto_bookmark",
        "auto_subframe" => "auto_subframe",
        "manual_subframe" => "manual_subframe",
        "generated" => "generated",
        "auto_toplevel" | "start_page" => "auto_toplevel",
        "form_submit" => "form_submit",
        "reload" => "reload",
        "keyword" => "keyword",
        "keyword_generated" => "keyword_generated",
        // A single-page app's history.pushState: the extension's own name, as no browser
        // history records these separately.
        "in_page" => "in_page",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_780_000_000_000;

    fn visit(json: &str) -> Result<BrowsingVisit, Refused> {
        match parse(json.as_bytes())? {
            Incoming::Visit(v) => v.check(NOW),
            other => panic!("not a visit: {other:?}"),
        }
    }

    #[test]
    fn a_visit_becomes_the_browsing_event_with_its_search() {
        let v = visit(
            r#"{"type":"visit","id":"0b6c-11","url":"https://www.google.co.uk/search?q=how+to+make+a+noose","title":"<b>x</b>","transition":"typed","incognito":true,"time":1764779999000,"browser":"brave","extra":1}"#,
        )
        .unwrap();
        assert_eq!(v.search_terms, "how to make a noose");
        assert_eq!(v.search_engine, "google");
        assert_eq!(v.title, "<b>x</b>", "kept as data; escaped where shown");
        assert_eq!(v.transition, "typed");
        assert_eq!(v.browser, "brave");
        assert_eq!(v.reporter, "extension");
        assert!(v.incognito);
        assert_eq!(v.visit_time_us, 1_764_779_999_000_000);
    }

    #[test]
    fn hostile_fields_are_bounded_cleaned_or_refused() {
        let long = "a".repeat(10_000);
        let v = visit(&format!(
            r#"{{"type":"visit","id":"x","url":"https://u:secret@example.com/{long}","title":"{long}","transition":"<script>","time":1,"browser":"netscape"}}"#
        ))
        .unwrap();
        assert!(!v.url.contains("secret"));
        assert!(v.url.len() <= crate::url_clean::MAX_URL);
        assert_eq!(v.title.len(), MAX_TITLE);
        assert_eq!(v.transition, "other");
        assert_eq!(v.browser, "unknown");
        assert_eq!(v.visit_time_us, NOW, "a time from 1970 is replaced by now");

        let far = visit(r#"{"type":"visit","id":"x","url":"http://a.test/","time":1e300}"#);
        assert_eq!(far.unwrap().visit_time_us, NOW, "a time far ahead too");
        for (json, why) in [
            (
                r#"{"type":"visit","id":"x","url":"file:///etc/shadow","time":1}"#,
                Refused::NotWeb,
            ),
            (
                r#"{"type":"visit","id":"x","url":"javascript:alert(1)","time":1}"#,
                Refused::NotWeb,
            ),
            (
                r#"{"type":"visit","id":"a\nb","url":"http://a.test/","time":1}"#,
                Refused::BadId,
            ),
            (
                r#"{"type":"visit","id":"","url":"http://a.test/","time":1}"#,
                Refused::BadId,
            ),
        ] {
            assert_eq!(visit(json).unwrap_err(), why, "{json}");
        }
        for junk in [
            "",
            "[]",
            "{}",
            r#"{"type":"visit"}"#,
            r#"{"type":"visit","id":"x","url":"http://a/","time":"soon"}"#,
            r#"{"type":"rm -rf"}"#,
        ] {
            assert!(
                matches!(parse(junk.as_bytes()), Err(Refused::Malformed(_))),
                "{junk}"
            );
        }
    }

    #[test]
    fn a_hello_is_bounded() {
        let Incoming::Hello {
            version,
            browser,
            incognito_access,
            dropped,
        } = parse(
            br#"{"type":"hello","version":"0.1.0","browser":"firefox","incognito_access":true,"dropped":12}"#,
        )
        .unwrap()
        else {
            panic!("not a hello")
        };
        let h = Incoming::hello(version, browser, incognito_access, &dropped);
        assert_eq!(h.browser, "firefox");
        assert!(h.incognito_access);
        assert_eq!(h.dropped, 12);
        let h = Incoming::hello("9".repeat(500), "x".into(), false, &1e300.into());
        assert_eq!(h.version.len(), MAX_LABEL);
        assert_eq!(h.browser, "unknown");
        assert_eq!(h.dropped, MAX_DROPPED);
        for odd in [
            serde_json::json!(-5.0),
            serde_json::json!(0.4),
            serde_json::json!(null),
            serde_json::json!("12"),
        ] {
            assert_eq!(
                Incoming::hello(String::new(), String::new(), false, &odd).dropped,
                0
            );
        }
        // An older extension says nothing of drops; a null is no reason to refuse a hello.
        for old in [
            &br#"{"type":"hello"}"#[..],
            br#"{"type":"hello","dropped":null}"#,
        ] {
            let Ok(Incoming::Hello { dropped, .. }) = parse(old) else {
                panic!("not a hello")
            };
            assert_eq!(
                Incoming::hello(String::new(), String::new(), false, &dropped).dropped,
                0
            );
        }
    }
}
