//! Subject access (UK GDPR Art. 15): everything the collector holds about one user, as JSON.
//!
//! The export is the raw material of a response, not the response itself: it can name other
//! people (staff notes, incidents about several pupils) and a safeguarding exemption may apply,
//! so the data protection lead reviews it before anything is disclosed (see [`NOTES`]).
//!
//! A user is matched by the exact account name the agents reported. Events are found by a full
//! scan of the events table: there is deliberately no index on `events.user` (ingest pays for
//! every index on every commit), and a request like this is rare.

use crate::store::audit::Entry;
use crate::store::db::{Connection, OptionalExtension, params};
use crate::store::triage::{self, Listed, Note};
use crate::store::{self, Audited, EventRow, Scan, Sealed, StoreError, rfc3339};
use serde::Serialize;
use std::collections::BTreeSet;

/// What the export says about itself, for whoever prepares the response.
pub const NOTES: &[&str] = &[
    "Scope: rows whose user is exactly this account name (case and domain prefix included). \
     If the person used other account names, export each of them as well.",
    "events: every stored event (processes, USB, login sessions, browsing, gaps) recorded under \
     this user. Visits to illegal-content addresses were redacted when they were received: the \
     address was never stored, so it cannot be included.",
    "alerts: alerts raised about this user, with their triage history and any requests to \
     reveal masked detail. An illegal-content alert holds only a hash of the address.",
    "incidents: incident-log entries whose subject names this user in any version, with their \
     whole history. They may name other pupils: review them before disclosure.",
    "login_sessions: sessions currently open (or last reported) under this user.",
    "access_log: entries of the access audit trail that name this user, their alerts or their \
     incidents, including the names and roles of the staff who viewed or changed the data, as \
     the subject is entitled to know the recipients of their data (Art. 15(1)(c)). Views of \
     lists that showed this user's alerts among others without naming them are not \
     attributable to one person and are not included.",
    "Not included: data deleted under the retention periods in collector.toml [retention]; \
     events recorded with no user or under another account on a shared device; staff account \
     records; backups and copies held outside the collector.",
    "Before disclosure: remove or redact information about other people, and consider the \
     exemptions of the Data Protection Act 2018 (e.g. Schedule 3 Part 3 where disclosure would \
     be likely to cause serious harm to the child or another person). The purposes of \
     processing, the retention periods and the right to complain to the ICO are set out in \
     the school's privacy notice.",
];

#[derive(Debug, Clone, Serialize)]
pub struct SubjectExport {
    pub generated_at: String,
    pub user: String,
    pub counts: Counts,
    pub events: Vec<EventRow>,
    pub alerts: Vec<AlertHeld>,
    pub incidents: Vec<IncidentHeld>,
    pub login_sessions: Vec<LoginSession>,
    pub access_log: Vec<Entry>,
    pub notes: Vec<&'static str>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub events: u64,
    pub alerts: u64,
    pub incidents: u64,
    pub login_sessions: u64,
    pub access_log: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertHeld {
    #[serde(flatten)]
    pub alert: Listed,
    pub history: Vec<Note>,
    pub reveal_requests: Vec<RevealRequest>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RevealRequest {
    pub requested_by: String,
    pub reason: String,
    pub requested_at: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub decision: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IncidentHeld {
    pub id: i64,
    pub created_at: String,
    pub created_by: String,
    /// Every version, oldest first, with the record as it was stored.
    pub versions: Vec<IncidentVersion>,
    pub alert_ids: Vec<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IncidentVersion {
    pub version: i64,
    pub at: String,
    pub author: String,
    pub record: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoginSession {
    pub agent_id: String,
    pub session_id: String,
    pub hostname: String,
    pub group: String,
    pub locked: bool,
    pub idle_since: Option<String>,
    pub opened_at: String,
    pub updated_at: String,
}

/// Everything held about `user`, read in one snapshot (a read transaction, which does not
/// block ingest).
/// Everything held about `user`, read in one snapshot outside any write transaction (it scans
/// every event), and sealed until an audited transaction releases it.
pub fn export(scan: &Scan<'_>, user: &str) -> Result<Sealed<SubjectExport>, StoreError> {
    let tx = scan.conn.unchecked_transaction()?;
    let mut events = Vec::new();
    store::events::for_user(&Audited { conn: &tx }, user, |e| events.push(e))?;
    let alerts = alerts_of(&tx, user)?;
    let incidents = incidents_of(&tx, user)?;
    let login_sessions = sessions_of(&tx, user)?;
    let alert_ids: BTreeSet<i64> = alerts.iter().map(|a| a.alert.id).collect();
    let incident_ids: BTreeSet<i64> = incidents.iter().map(|i| i.id).collect();
    let access_log = access_of(&tx, user, &alert_ids, &incident_ids)?;
    tx.commit()?;
    Ok(Sealed(SubjectExport {
        generated_at: rfc3339(store::now_us()),
        user: user.to_owned(),
        counts: Counts {
            events: events.len() as u64,
            alerts: alerts.len() as u64,
            incidents: incidents.len() as u64,
            login_sessions: login_sessions.len() as u64,
            access_log: access_log.len() as u64,
        },
        events,
        alerts,
        incidents,
        login_sessions,
        access_log,
        notes: NOTES.to_vec(),
    }))
}

impl Sealed<SubjectExport> {
    /// How much the export holds, what its entry records.
    pub fn counts(&self) -> &Counts {
        &self.0.counts
    }
}

fn alerts_of(conn: &Connection, user: &str) -> Result<Vec<AlertHeld>, StoreError> {
    let ids: Vec<i64> = conn
        .prepare("SELECT id FROM alerts WHERE user = ?1 ORDER BY id")?
        .query_map([user], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut reveals = conn.prepare(
        "SELECT requested_by, reason, requested_at, decided_by, decided_at, decision
         FROM reveal_requests WHERE alert_id = ?1 ORDER BY id",
    )?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(alert) = triage::get(&Audited { conn }, id)? else {
            continue;
        };
        let reveal_requests = reveals
            .query_map([id], |r| {
                Ok(RevealRequest {
                    requested_by: r.get(0)?,
                    reason: r.get(1)?,
                    requested_at: rfc3339(r.get(2)?),
                    decided_by: r.get(3)?,
                    decided_at: r.get::<_, Option<i64>>(4)?.map(rfc3339),
                    decision: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        out.push(AlertHeld {
            history: triage::notes(&Audited { conn }, id)?,
            alert,
            reveal_requests,
        });
    }
    Ok(out)
}

/// Whether a comma-separated list of names holds `user` as one whole name.
pub fn names_include(list: &str, user: &str) -> bool {
    list.split(',').any(|n| n.trim() == user)
}

fn incidents_of(conn: &Connection, user: &str) -> Result<Vec<IncidentHeld>, StoreError> {
    // instr() narrows the scan cheaply; the whole-name test on the parsed subject decides.
    let mut stmt = conn.prepare(
        "SELECT incident_id, record FROM incident_versions WHERE instr(record, ?1) > 0
         ORDER BY incident_id",
    )?;
    let mut found = BTreeSet::new();
    let mut rows = stmt.query([user])?;
    while let Some(r) = rows.next()? {
        let record: String = r.get(1)?;
        let subject = serde_json::from_str::<serde_json::Value>(&record)
            .ok()
            .and_then(|v| v.get("subject").and_then(|s| s.as_str()).map(str::to_owned));
        if subject.is_some_and(|s| names_include(&s, user)) {
            found.insert(r.get::<_, i64>(0)?);
        }
    }
    let mut out = Vec::with_capacity(found.len());
    for id in found {
        let head: Option<(i64, String)> = conn
            .query_row(
                "SELECT created_at, created_by FROM incidents WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((created_at, created_by)) = head else {
            continue;
        };
        let versions = conn
            .prepare(
                "SELECT version, at, author, record FROM incident_versions
                 WHERE incident_id = ?1 ORDER BY version",
            )?
            .query_map([id], |r| {
                let record: String = r.get(3)?;
                Ok(IncidentVersion {
                    version: r.get(0)?,
                    at: rfc3339(r.get(1)?),
                    author: r.get(2)?,
                    // Kept as stored if it is not JSON, rather than dropped.
                    record: serde_json::from_str(&record)
                        .unwrap_or(serde_json::Value::String(record)),
                })
            })?
            .collect::<Result<_, _>>()?;
        let alert_ids = conn
            .prepare("SELECT alert_id FROM incident_alerts WHERE incident_id = ?1 ORDER BY 1")?
            .query_map([id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        out.push(IncidentHeld {
            id,
            created_at: rfc3339(created_at),
            created_by,
            versions,
            alert_ids,
        });
    }
    Ok(out)
}

fn sessions_of(conn: &Connection, user: &str) -> Result<Vec<LoginSession>, StoreError> {
    let rows = conn
        .prepare(
            "SELECT agent_id, session_id, hostname, grp, locked, idle_since, opened_at, updated_at
             FROM sessions WHERE user = ?1 ORDER BY opened_at",
        )?
        .query_map([user], |r| {
            Ok(LoginSession {
                agent_id: r.get(0)?,
                session_id: r.get(1)?,
                hostname: r.get(2)?,
                group: r.get(3)?,
                locked: r.get::<_, i64>(4)? != 0,
                idle_since: r.get::<_, Option<i64>>(5)?.map(rfc3339),
                opened_at: rfc3339(r.get(6)?),
                updated_at: rfc3339(r.get(7)?),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Whether an audit entry's object names this user or one of their alerts or incidents.
/// Objects are `kind:id` (comma-separated for bulk actions) or a filter such as
/// `alerts?user=amy&severity=serious`.
fn object_mentions(
    object: &str,
    user: &str,
    alerts: &BTreeSet<i64>,
    incidents: &BTreeSet<i64>,
) -> bool {
    if let Some((_, query)) = object.split_once('?') {
        return url::form_urlencoded::parse(query.as_bytes())
            .any(|(k, v)| matches!(k.as_ref(), "user" | "subject") && names_include(&v, user));
    }
    object.split(',').any(|part| {
        let part = part.trim();
        match part.split_once(':') {
            Some(("user", name)) => name == user,
            Some(("alert", id)) => id.parse().is_ok_and(|id| alerts.contains(&id)),
            Some(("incident", id)) => id.parse().is_ok_and(|id| incidents.contains(&id)),
            _ => false,
        }
    })
}

fn access_of(
    conn: &Connection,
    user: &str,
    alerts: &BTreeSet<i64>,
    incidents: &BTreeSet<i64>,
) -> Result<Vec<Entry>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, at, actor, role, action, object, purpose, source, detail, prev_hash, hash
         FROM audit_log
         WHERE instr(object, ?1) > 0 OR instr(object, 'alert:') > 0
            OR instr(object, 'incident:') > 0 OR instr(object, '?') > 0
         ORDER BY id",
    )?;
    let mut rows = stmt.query(params![user])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let object: String = r.get(5)?;
        if !object_mentions(&object, user, alerts, incidents) {
            continue;
        }
        out.push(Entry {
            id: r.get(0)?,
            at: rfc3339(r.get(1)?),
            actor: r.get(2)?,
            role: r.get(3)?,
            action: r.get(4)?,
            object,
            purpose: r.get(6)?,
            source: r.get(7)?,
            detail: r.get(8)?,
            prev_hash: r.get(9)?,
            hash: r.get(10)?,
        });
    }
    Ok(out)
}

/// A file name for the export: `sar-<user>.json` with anything but letters, digits, `.`, `-`
/// and `_` replaced, so a user name cannot break out of the header or the directory.
pub fn file_name(user: &str) -> String {
    let mut safe: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    // No hidden files and no `..`.
    while safe.starts_with('.') {
        safe.replace_range(..1, "_");
    }
    if safe.is_empty() {
        safe.push_str("user");
    }
    format!("sar-{safe}.json")
}

/// Reasons a request for an export is refused before anything is read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SarError {
    #[error("a user name is required")]
    NoUser,
    #[error(
        "a purpose is required: say why this export is made (e.g. \"subject access request \
         received 2026-11-20, ref 123\"); it is recorded in the access audit trail"
    )]
    NoPurpose,
}

/// Checks a request and returns the user and purpose, trimmed.
pub fn check_request<'a>(user: &'a str, purpose: &'a str) -> Result<(&'a str, &'a str), SarError> {
    let (user, purpose) = (user.trim(), purpose.trim());
    if user.is_empty() {
        return Err(SarError::NoUser);
    }
    if purpose.is_empty() {
        return Err(SarError::NoPurpose);
    }
    Ok((user, purpose))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::audit::{self, Actor, Record};
    use crate::store::{alerts, test_db};
    use invigilator_policy::{Alert, Severity};
    use invigilator_proto::v1::{BrowsingVisit, Event, ProcessExec, SessionChange, event::Kind};

    pub(crate) fn put_event(conn: &mut Connection, seq: u64, user: &str, kind: Kind) {
        let tx = conn.transaction().unwrap();
        let e = Event {
            truncated: Vec::new(),
            device_time_us: 0,
            seq,
            observed_at_us: 1_700_000_000_000_000 + seq as i64,
            hostname: "pc1".into(),
            user: user.into(),
            kind: Some(kind),
        };
        store::events::insert(&crate::store::System::test(&tx), "a1", &e, 0).unwrap();
        tx.commit().unwrap();
    }

    fn put_alert(conn: &Connection, user: &str, summary: &str) -> i64 {
        alerts::insert(
            &crate::store::System::test(conn),
            &Alert {
                agent_id: "a1".into(),
                hostname: "pc1".into(),
                user: user.into(),
                kind: "browsing".into(),
                rule: "web.gambling".into(),
                category: "gambling".into(),
                severity: Severity::Inappropriate,
                summary: summary.into(),
                matched: "m".into(),
                observed_at_us: 1_700_000_000_000_000,
                policy_version: "1".into(),
                event_seq: Some(1),
                response: String::new(),
                aggregate_key: None,
            },
        )
        .unwrap()
    }

    fn put_incident(conn: &Connection, subjects: &[&str], alert: Option<i64>) -> i64 {
        let id = conn
            .query_row(
                "INSERT INTO incidents(created_at, created_by) VALUES (1, 'dsl1') RETURNING id",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap();
        for (n, s) in subjects.iter().enumerate() {
            let record = serde_json::json!({"subject": s, "title": "<script>alert(1)</script>"});
            conn.execute(
                "INSERT INTO incident_versions(incident_id, version, at, author, record)
                 VALUES (?1, ?2, ?3, 'dsl1', ?4)",
                params![id, n as i64 + 1, n as i64 + 1, record.to_string()],
            )
            .unwrap();
        }
        if let Some(a) = alert {
            conn.execute(
                "INSERT INTO incident_alerts(incident_id, alert_id) VALUES (?1, ?2)",
                params![id, a],
            )
            .unwrap();
        }
        id
    }

    fn session(conn: &Connection, agent: &str, user: &str) {
        let s = SessionChange {
            action: "logon".into(),
            session_id: "1".into(),
            user: user.into(),
            ..Default::default()
        };
        let e = Event {
            hostname: "pc1".into(),
            observed_at_us: 5,
            kind: Some(Kind::Session(s.clone())),
            ..Default::default()
        };
        store::sessions::apply(&crate::store::System::test(conn), agent, "pupils", &e, &s).unwrap();
    }

    fn proc(name: &str) -> Kind {
        Kind::Process(ProcessExec {
            name: name.into(),
            argv: vec![name.into(), "<script>x</script>".into()],
            ..Default::default()
        })
    }

    #[test]
    fn finds_one_users_data_and_nothing_of_similar_names() {
        let (_d, mut conn) = test_db();
        put_event(&mut conn, 1, "amy", proc("tor"));
        put_event(&mut conn, 2, "amy2", proc("steam"));
        put_event(&mut conn, 3, "xamy", proc("steam"));
        put_event(
            &mut conn,
            4,
            "amy",
            Kind::Browsing(BrowsingVisit {
                action: "visit".into(),
                url: "https://example.org/".into(),
                title: "<script>alert('title')</script>".into(),
                ..Default::default()
            }),
        );
        let mine = put_alert(&conn, "amy", "<script>alert('t')</script> casino");
        let theirs = put_alert(&conn, "amy2", "other");
        conn.execute(
            "INSERT INTO alert_notes(alert_id, at, author, status_from, status_to, note)
             VALUES (?1, 1, 'dsl1', 'new', 'triaged', 'spoke to amy')",
            [mine],
        )
        .unwrap();
        let both = put_incident(&conn, &["ben", "ben, amy"], Some(mine));
        put_incident(&conn, &["amy2, ramy"], Some(theirs));
        let was = put_incident(&conn, &["amy", "ben"], None);
        session(&conn, "a1", "amy");
        session(&conn, "a2", "amy2");

        let actor = Actor {
            name: "dsl1".into(),
            role: "dsl".into(),
            source: "10.0.0.1".into(),
        };
        for object in [
            format!("alert:{mine}"),
            format!("alert:{theirs}"),
            format!("alert:{theirs},alert:{mine}"),
            "user:amy".into(),
            "user:amy2".into(),
            "alerts?user=amy&severity=serious".into(),
            "alerts?user=amy2".into(),
            format!("incident:{both}"),
            "alerts?severity=serious".into(),
        ] {
            let rec = Record {
                action: "alert.view",
                object: &object,
                ..Default::default()
            };
            audit::append(&crate::store::Admin::test(&conn), &actor, &rec).unwrap();
        }

        let x = export(&crate::store::Scan::test(&conn), "amy").unwrap().0;
        assert_eq!(x.user, "amy");
        assert_eq!(
            x.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 4],
            "events of amy only"
        );
        assert!(x.events.iter().all(|e| e.user == "amy"));
        assert_eq!(x.alerts.len(), 1);
        assert_eq!(x.alerts[0].alert.id, mine);
        assert_eq!(x.alerts[0].history[0].note, "spoke to amy");
        assert_eq!(
            x.incidents.iter().map(|i| i.id).collect::<Vec<_>>(),
            [both, was],
            "named in the current or a past subject, as a whole name"
        );
        assert_eq!(x.incidents[0].versions.len(), 2);
        assert_eq!(x.incidents[0].alert_ids, [mine]);
        assert_eq!(x.login_sessions.len(), 1);
        assert_eq!(x.login_sessions[0].agent_id, "a1");
        let objects: Vec<&str> = x.access_log.iter().map(|e| e.object.as_str()).collect();
        assert_eq!(
            objects,
            [
                format!("alert:{mine}").as_str(),
                &format!("alert:{theirs},alert:{mine}"),
                "user:amy",
                "alerts?user=amy&severity=serious",
                &format!("incident:{both}"),
            ]
        );
        assert_eq!(x.access_log[0].actor, "dsl1", "recipients are named");
        assert_eq!(x.counts.events, 2);
        assert!(!x.notes.is_empty());

        // Hostile text is carried as data, unchanged, and survives a JSON round trip.
        let json = serde_json::to_value(&x).unwrap();
        assert_eq!(
            json["alerts"][0]["summary"],
            "<script>alert('t')</script> casino"
        );
        assert_eq!(json["events"][0]["argv"][1], "<script>x</script>");
        assert_eq!(
            json["events"][1]["title"],
            "<script>alert('title')</script>"
        );
        assert_eq!(
            json["incidents"][0]["versions"][0]["record"]["title"],
            "<script>alert(1)</script>"
        );

        let other = export(&crate::store::Scan::test(&conn), "amy2").unwrap().0;
        assert_eq!(other.events.len(), 1);
        assert_eq!(other.alerts[0].alert.id, theirs);
        assert_eq!(other.incidents.len(), 1);
        assert!(
            export(&crate::store::Scan::test(&conn), "am")
                .unwrap()
                .0
                .events
                .is_empty()
        );
        assert!(
            export(&crate::store::Scan::test(&conn), "nobody")
                .unwrap()
                .0
                .incidents
                .is_empty()
        );
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(file_name("amy"), "sar-amy.json");
        assert_eq!(file_name("SCHOOL\\amy"), "sar-SCHOOL_amy.json");
        assert_eq!(file_name("../../etc/passwd"), "sar-_._.._etc_passwd.json");
        assert_eq!(file_name("a\"; x=\r\n"), "sar-a___x___.json");
        assert_eq!(file_name(""), "sar-user.json");
        assert!(file_name(&"é".repeat(500)).len() < 80);
    }

    #[test]
    fn a_purpose_is_required() {
        assert_eq!(check_request("amy", " "), Err(SarError::NoPurpose));
        assert_eq!(check_request("", "SAR 12"), Err(SarError::NoUser));
        assert_eq!(check_request(" amy ", " SAR 12 "), Ok(("amy", "SAR 12")));
    }

    /// How long the full scan takes: 1,000,000 events, 1,000 of them the subject's.
    /// `cargo test -p invigilator-collector --lib sar::tests::scan_1m -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check: fills a database with a million events"]
    fn scan_1m_events() {
        let (_d, mut conn) = test_db();
        let started = std::time::Instant::now();
        let tx = conn.transaction().unwrap();
        for seq in 0..1_000_000u64 {
            let user = if seq % 1000 == 0 {
                "amy".to_owned()
            } else {
                format!("pupil{}", seq % 900)
            };
            let e = Event {
                truncated: Vec::new(),
                device_time_us: 0,
                seq,
                observed_at_us: 1_700_000_000_000_000 + seq as i64 * 1000,
                hostname: format!("pc{}", seq % 300),
                user,
                kind: Some(Kind::Process(ProcessExec {
                    pid: seq as u32,
                    exe: "/usr/bin/firefox".into(),
                    name: "firefox".into(),
                    argv: vec!["firefox".into(), "--new-window".into()],
                    ..Default::default()
                })),
            };
            store::events::insert(&crate::store::System::test(&tx), "a1", &e, 0).unwrap();
        }
        tx.commit().unwrap();
        let size = std::fs::metadata(store::db_path(_d.path())).unwrap().len();
        eprintln!(
            "filled 1M events in {:?}, file {} MiB",
            started.elapsed(),
            size >> 20
        );
        for round in 0..3 {
            let t = std::time::Instant::now();
            let mut n = 0;
            store::events::for_user(&crate::store::Audited::test(&conn), "amy", |_| n += 1)
                .unwrap();
            let scan = t.elapsed();
            let t = std::time::Instant::now();
            let x = export(&crate::store::Scan::test(&conn), "amy").unwrap().0;
            eprintln!(
                "round {round}: scan {scan:?} ({n} rows), whole export {:?} ({} events)",
                t.elapsed(),
                x.events.len()
            );
            assert_eq!(n, 1000);
        }
    }
}
