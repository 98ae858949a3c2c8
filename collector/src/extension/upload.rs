//! One upload from the extension on a device without an agent: its visits, checked exactly as
//! the agent's native-messaging listener checks them (`invigilator_visits`), become the
//! device's events and go through the agents' admission and committer. The reply names the
//! visits stored (or already stored): the extension forgets those and keeps the rest.
//!
//! The protocol is in `agent/browser-extension/README.md` ("Straight to the collector").

use crate::admission::Limit;
use crate::committer::{Job, NotStored};
use crate::event_time::TimeWindow;
use crate::identity::PeerCert;
use crate::ingest::{credentials, held_back};
use crate::metrics::Refusal;
use crate::state::Shared;
use crate::store::{self, delivery, extension};
use invigilator_proto::v1::{Event, Gap, event::Kind};
use invigilator_visits::extension::{
    Incoming, MAX_DROPPED, RawVisit, Refused as NotAVisit, valid_id,
};
use invigilator_visits::url_clean::truncate;
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;
use tokio::sync::oneshot;
use tonic::Status;

/// Most visits one upload may carry; the extension sends at most this many at a time.
pub const MAX_VISITS: usize = 200;
/// Largest upload body: MAX_VISITS visits of the longest URL and title the extension sends.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Why an upload of more than MAX_VISITS records is refused while it is parsed (`mod.rs`
/// answers it with 413, not 400).
pub const TOO_MANY: &str = "more than 200 visits in one upload";
const _: () = assert!(MAX_VISITS == 200, "TOO_MANY names the limit");
/// Longest user name kept from the extension's claim.
const MAX_USER: usize = 128;

/// An upload as the extension sends it. Unknown fields are ignored (skipped without being
/// kept), so a newer extension keeps working with this collector.
#[derive(Debug, Deserialize)]
pub struct Upload<'a> {
    /// The instance's numbering lane; 0 (or absent) asks for one, and nothing is stored.
    #[serde(default)]
    pub lane: u64,
    /// Who the browser says is signed in: the device's claim, shown as such.
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub hello: Option<Hello>,
    /// Visits, and records of visits the extension had to drop, each numbered in the lane.
    /// Kept as the text they were sent as, at most MAX_VISITS of them, so an upload's memory is
    /// bounded by its size; each is read on its own, and one that cannot be read is refused
    /// alone.
    #[serde(default, borrow, deserialize_with = "at_most_max_visits")]
    pub visits: Vec<&'a RawValue>,
}

/// The hello's fields this collector keeps.
#[derive(Debug, Default, Deserialize)]
pub struct Hello {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub browser: String,
}

fn at_most_max_visits<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<&'de RawValue>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<&'de RawValue>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_VISITS} records")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(r) = seq.next_element::<&'de RawValue>()? {
                if out.len() == MAX_VISITS {
                    return Err(serde::de::Error::custom(TOO_MANY));
                }
                out.push(r);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded)
}

/// The fields of a record that decide what it is, read without keeping anything else.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    n: Option<serde_json::Value>,
    #[serde(default)]
    lost: Option<serde_json::Value>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Reply {
    pub lane: u64,
    /// Ids stored by this upload or an earlier one: the extension forgets them.
    pub acked: Vec<String>,
    /// Ids refused for good, with why: the extension forgets them too.
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Rejected {
    pub id: String,
    pub why: String,
}

/// Why an upload was not taken: an HTTP status and a message naming the problem.
#[derive(Debug)]
pub struct Refused(pub u16, pub String, pub Option<u64>);

impl Refused {
    fn from_status(s: Status) -> Self {
        let code = match s.code() {
            tonic::Code::Unauthenticated => 401,
            tonic::Code::PermissionDenied => 403,
            tonic::Code::InvalidArgument => 400,
            tonic::Code::ResourceExhausted => 429,
            tonic::Code::Aborted => 409,
            _ => 503,
        };
        Self(code, s.message().to_owned(), None)
    }
}

/// The visits of one upload, checked and numbered, as events of the device.
pub struct Checked {
    pub events: Vec<Event>,
    pub ids: Vec<String>,
    pub rejected: Vec<Rejected>,
}

/// Checks and numbers an upload's records: each refused one is named (when its id can be
/// echoed), and what is left is in sequence order, each sequence once.
pub fn check(
    lane: u32,
    records: Vec<&RawValue>,
    hostname: &str,
    user: &str,
    now_us: i64,
) -> Checked {
    let mut numbered: Vec<(u64, String, Event)> = Vec::with_capacity(records.len());
    let mut rejected = Vec::new();
    for record in records {
        let Ok(head) = serde_json::from_str::<Head>(record.get()) else {
            // Not an object: nothing to answer by; the extension never sends one.
            continue;
        };
        // One whose id cannot be echoed cannot be answered: the extension keeps it, and a
        // record from this extension always has one.
        let Some(id) = head.id.filter(|id| valid_id(id)) else {
            continue;
        };
        let refuse = |rejected: &mut Vec<Rejected>, why: String| {
            rejected.push(Rejected {
                id: id.clone(),
                why,
            });
        };
        let n = head
            .n
            .as_ref()
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0);
        if !(n.fract() == 0.0 && (1.0..=f64::from(u32::MAX)).contains(&n)) {
            refuse(
                &mut rejected,
                format!("number {n} is not 1 to {}", u32::MAX),
            );
            continue;
        }
        let seq = (u64::from(lane) << 32) | n as u64;
        let kind = match head.kind.as_deref() {
            Some("gap") => Ok(dropped(head.lost.as_ref())),
            _ => serde_json::from_str::<RawVisit>(record.get())
                .map_err(|e| NotAVisit::Malformed(truncate(&e.to_string(), 200)).to_string())
                .and_then(|raw| raw.check(now_us).map_err(|e| e.to_string()))
                .map(Kind::Browsing),
        };
        match kind {
            Ok(kind) => {
                let observed_at_us = match &kind {
                    Kind::Browsing(v) => v.visit_time_us,
                    _ => now_us,
                };
                let event = Event {
                    seq,
                    observed_at_us,
                    hostname: hostname.to_owned(),
                    user: user.to_owned(),
                    kind: Some(kind),
                    ..Default::default()
                };
                numbered.push((seq, id, event));
            }
            Err(why) => refuse(&mut rejected, why),
        }
    }
    numbered.sort_by_key(|(seq, _, _)| *seq);
    let mut events = Vec::with_capacity(numbered.len());
    let mut ids = Vec::with_capacity(numbered.len());
    let mut last = 0;
    for (seq, id, event) in numbered {
        if seq == last {
            rejected.push(Rejected {
                id,
                why: "another record of this upload has the same number".into(),
            });
            continue;
        }
        last = seq;
        events.push(event);
        ids.push(id);
    }
    Checked {
        events,
        ids,
        rejected,
    }
}

/// A record of visits the extension's full queue dropped while the collector was out of
/// reach: a gap of the browsing source, as the agent records one.
fn dropped(lost: Option<&serde_json::Value>) -> Kind {
    let lost = lost.and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    // `as` saturates and reads NaN as 0.
    let lost = (lost.max(0.0).floor() as u64).min(MAX_DROPPED);
    Kind::Gap(Gap {
        source: "browsing".into(),
        reason: format!(
            "the extension's queue on this device was full while the collector was out of \
             reach: it dropped {lost} visits, the oldest"
        ),
        lost,
    })
}

/// The device the verified certificate names, if it is enrolled and not revoked, and its group:
/// checked before its upload is read.
pub async fn authorise(
    shared: &Arc<Shared>,
    peer: PeerCert,
) -> Result<(Arc<str>, Arc<str>), Refused> {
    let holder = crate::identity::Holder::Device;
    let (peer, group) = credentials(shared, peer, holder, false)
        .await
        .map_err(|s| {
            if s.code() == tonic::Code::PermissionDenied {
                shared.metrics.refused(Refusal::not_authorised);
            }
            Refused::from_status(s)
        })?;
    Ok((peer.agent_id.into(), group.into()))
}

/// Takes one upload from `agent`: stored, then answered.
pub async fn take(
    shared: &Arc<Shared>,
    agent: Arc<str>,
    group: Arc<str>,
    upload: Upload<'_>,
) -> Result<Reply, Refused> {
    let id = agent.to_string();
    let device = shared
        .db(move |c| extension::device(c, &id))
        .await
        .map_err(Refused::from_status)?
        .ok_or_else(|| Refused(403, format!("device {agent} is not enrolled"), None))?;
    // Only a hello reports (the version); other uploads only count as contact, and what the
    // last hello said stays as stored. A report writes every field: the name and OS are the
    // enrolled ones.
    match upload.hello.as_ref().map(hello_version) {
        Some(version) => shared.touch(&agent, |h| {
            h.report = Some(store::agents::HealthReport {
                hostname: device.hostname.clone(),
                os: device.os.clone(),
                agent_version: version,
                ..store::agents::HealthReport::default()
            })
        }),
        None => shared.touch(&agent, |_| {}),
    }
    if upload.lane == 0 {
        // A new lane is a write: rationed as new streams are.
        if !shared.admission.admit(&agent) {
            return Err(Refused(
                429,
                "this device asked for numbering lanes too often; try again later".into(),
                Some(60),
            ));
        }
        let id = agent.to_string();
        let lane = shared
            .db(move |c| extension::new_lane(c, &id))
            .await
            .map_err(Refused::from_status)?
            .ok_or_else(|| {
                Refused(
                    409,
                    "this device has used every numbering lane".into(),
                    None,
                )
            })?;
        tracing::info!(agent_id = %agent, lane, "extension: a new numbering lane");
        return Ok(Reply {
            lane: u64::from(lane),
            ..Reply::default()
        });
    }
    if upload.lane > u64::from(device.lanes) {
        return Err(Refused(
            409,
            format!(
                "lane {} was not given to this device; ask for one (lane 0)",
                upload.lane
            ),
            None,
        ));
    }
    let lane = upload.lane as u32;
    let now = store::now_us();
    let user = clean_user(&upload.user);
    let checked = check(lane, upload.visits, &device.hostname, &user, now);
    let mut reply = Reply {
        lane: upload.lane,
        acked: Vec::new(),
        rejected: checked.rejected,
    };
    if checked.events.is_empty() {
        return Ok(reply);
    }
    within_daily_quota(shared, &agent, now).await?;
    let window = TimeWindow::of(&shared.config.ingest);
    let mut events = checked.events;
    for event in &mut events {
        invigilator_proto::limits::enforce(event);
        window.apply(event, now);
    }
    let bytes: usize = events.iter().map(|e| e.encoded_len()).sum();
    let (wait, rate) = shared.admission.charge(&agent, bytes as u64, now);
    if let Some(wait) = wait {
        // Refused, so not charged: the same upload after Retry-After fits.
        shared.admission.refund(&agent, bytes as u64);
        let per_minute = shared.config.quotas.rate_mib_per_minute;
        held_back(
            shared,
            &agent,
            Limit::Rate,
            format!("over {per_minute} MiB a minute"),
        )
        .await;
        return Err(Refused(
            429,
            "over this device's rate; try again later".into(),
            Some(wait.as_secs_f64().ceil().max(1.0) as u64),
        ));
    }
    // The endpoint lets a device have one upload under way at a time (`mod.rs`); its ticket
    // gives the upload its room in front of the committer, as a stream's batch.
    let ticket = shared.admission.open(&agent);
    let room = shared
        .admission
        .room(ticket.share(), bytes)
        .await
        .ok_or_else(|| Refused(503, "the collector is stopping".into(), None))?;
    let (tx, rx) = oneshot::channel();
    let job = Job {
        agent_id: agent.clone(),
        group,
        events,
        bytes,
        room,
        epoch: device.epoch,
        rate,
        reply: tx,
    };
    if shared.committer.submit(job).await.is_err() {
        return Err(Refused(503, "the collector is stopping".into(), None));
    }
    match rx.await {
        Ok(Ok(stored)) => {
            shared
                .admission
                .note_usage(&agent, stored.committed_at_us, stored.day_bytes);
            reply.acked = checked.ids;
            Ok(reply)
        }
        Ok(Err(e @ NotStored::Superseded)) => Err(Refused(409, e.to_string(), Some(1))),
        Ok(Err(e)) => Err(Refused(
            503,
            format!("collector could not store the visits: {e}"),
            Some(5),
        )),
        Err(_) => Err(Refused(503, "the collector is stopping".into(), Some(5))),
    }
}

/// Refuses while the device is over its daily volume (the agents' quota).
async fn within_daily_quota(
    shared: &Arc<Shared>,
    agent: &Arc<str>,
    now: i64,
) -> Result<(), Refused> {
    if shared.admission.over_daily(agent, now).is_none() {
        let id = agent.clone();
        let used = shared
            .db(move |c| delivery::used_on_day(c, &id, now))
            .await
            .map_err(Refused::from_status)?;
        shared.admission.note_usage(agent, now, used);
    }
    if shared.admission.over_daily(agent, now) == Some(true) {
        let limit = shared.config.quotas.daily_mib;
        held_back(
            shared,
            agent,
            Limit::Daily,
            format!("{limit} MiB stored today"),
        )
        .await;
        let until_tomorrow = (delivery::next_day_us(now) - now).max(0) as u64 / 1_000_000;
        return Err(Refused(
            429,
            format!("this device has stored {limit} MiB today"),
            Some(until_tomorrow.clamp(60, 3600)),
        ));
    }
    Ok(())
}

/// The hello's browser and version, for the device list (bounded as the agent bounds them).
fn hello_version(hello: &Hello) -> String {
    let hello = Incoming::hello(
        hello.version.clone(),
        hello.browser.clone(),
        false,
        &serde_json::Value::Null,
    );
    format!("extension {} ({})", hello.version, hello.browser)
}

/// The signed-in account the browser reports: one line, bounded.
fn clean_user(claim: &str) -> String {
    let line: String = claim.chars().filter(|c| !c.is_control()).collect();
    truncate(line.trim(), MAX_USER)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_780_000_000_000;

    fn upload(json: &str) -> Upload<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn visits_are_numbered_in_their_lane_checked_and_ordered() {
        let text = format!(
            r#"{{"lane": 3, "user": "amy", "visits": [
                {{"n": 2, "id": "b", "url": "https://www.google.com/search?q=vapes", "time": {t}}},
                {{"n": 1, "id": "a", "url": "https://example.org/", "title": "<b>x</b>", "time": {t}}},
                {{"n": 1, "id": "a-again", "url": "https://example.org/", "time": {t}}},
                {{"n": 0, "id": "zero", "url": "https://example.org/", "time": {t}}},
                {{"n": 1.5, "id": "half", "url": "https://example.org/", "time": {t}}},
                {{"n": 4294967296, "id": "too-big", "url": "https://example.org/", "time": {t}}},
                {{"n": 5, "id": "ftp", "url": "ftp://example.org/", "time": {t}}},
                {{"n": 6, "id": "not an id", "url": "https://example.org/", "time": {t}}},
                {{"n": 7, "id": "no-time", "url": "https://example.org/"}},
                {{"n": 8, "id": "gap-1", "type": "gap", "lost": 1e12}},
                "not even an object"
            ]}}"#,
            t = NOW / 1000
        );
        let u = upload(&text);
        let c = check(3, u.visits, "cb-07", "amy", NOW);
        assert_eq!(c.ids, ["a", "b", "gap-1"]);
        let seqs: Vec<u64> = c.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [(3 << 32) | 1, (3 << 32) | 2, (3 << 32) | 8]);
        let Some(Kind::Gap(gap)) = &c.events[2].kind else {
            panic!()
        };
        assert_eq!((gap.source.as_str(), gap.lost), ("browsing", MAX_DROPPED));
        assert!(
            c.events
                .iter()
                .all(|e| e.hostname == "cb-07" && e.user == "amy")
        );
        let Some(Kind::Browsing(v)) = &c.events[1].kind else {
            panic!()
        };
        assert_eq!(
            (v.search_terms.as_str(), v.reporter.as_str()),
            ("vapes", "extension")
        );
        let rejected: Vec<&str> = c.rejected.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            rejected,
            ["zero", "half", "too-big", "ftp", "no-time", "a-again"]
        );
        assert!(
            c.rejected[4].why.contains("missing field `time`"),
            "{:?}",
            c.rejected[4]
        );
        assert!(c.rejected[5].why.contains("same number"));
    }

    #[test]
    fn a_forged_time_is_replaced_and_the_user_is_one_bounded_line() {
        let u = upload(
            r#"{"lane": 1, "visits": [{"n": 1, "id": "a", "url": "https://example.org/", "time": 1e300}]}"#,
        );
        let c = check(1, u.visits, "cb-07", "", NOW);
        assert_eq!(c.events[0].observed_at_us, NOW);
        assert_eq!(clean_user("amy\n\u{1b}[31m@school"), "amy[31m@school");
        assert_eq!(clean_user(&"x".repeat(500)).len(), MAX_USER);
    }

    #[test]
    fn unknown_fields_are_ignored_and_a_missing_lane_asks_for_one() {
        let u = upload(r#"{"future": 1, "visits": []}"#);
        assert_eq!(u.lane, 0);
        assert!(serde_json::from_str::<Upload>(r#"{"lane": -1}"#).is_err());
        // Bounded while parsing: an upload of many tiny records is refused before it is kept.
        let many = format!(
            r#"{{"visits": [{}]}}"#,
            vec!["[]"; MAX_VISITS + 1].join(",")
        );
        let err = serde_json::from_str::<Upload>(&many).unwrap_err();
        assert!(err.to_string().contains("more than 200 visits"), "{err}");
        let hello =
            upload(r#"{"hello": {"browser": "chrome", "huge": [[[[1]]]], "version": "1"}}"#);
        assert_eq!(hello.hello.unwrap().browser, "chrome");
    }
}
