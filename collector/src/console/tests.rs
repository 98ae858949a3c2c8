//! Handler-level checks of the incident log and the two-person rule, against a real store,
//! the default policy and the audit trail (the access table itself is tested in `routes`).

use super::*;
use crate::store::db::Connection;
use crate::store::incidents::{IncidentRecord, action_options};
use crate::store::{self, accounts::Role};
use invigilator_policy::Alert;
use invigilator_proto::v1::event::Kind;
use invigilator_proto::v1::{BrowsingVisit, Event};

struct Harness {
    _dir: tempfile::TempDir,
    console: Arc<Console>,
}

fn staff(username: &str, role: Role) -> Staff {
    Staff {
        username: username.into(),
        role,
        is_admin: false,
        csrf_token: "t".into(),
        source: "test".into(),
        notices: Vec::new(),
    }
}

const SEARCH: &str = "how to self harm";
const REASON: &str = "third self-harm alert for this pupil this week";

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    drop(crate::store::Store::create(dir.path(), &crate::store::StoreConfig::sqlite()).unwrap());
    let policy = Policy::parse(invigilator_policy::DEFAULT_POLICY).unwrap();
    let console = Console::new(
        crate::store::Store::open(dir.path(), &crate::store::StoreConfig::sqlite()).unwrap(),
        ConsoleConfig {
            reveal_approvers: vec!["head".into()],
            ..Default::default()
        },
        Arc::new(ArcSwap::from_pointee(policy)),
    );
    Harness { _dir: dir, console }
}

impl Harness {
    fn conn(&self) -> Connection {
        crate::store::test_open(self.console.data_dir())
    }

    /// A pupil's search and the alert it raised.
    fn alert(&self, seq: u64, rule: &str, severity: &str) -> i64 {
        let mut conn = self.conn();
        let tx = conn.transaction().unwrap();
        let event = Event {
            truncated: Vec::new(),
            device_time_us: 0,
            seq,
            observed_at_us: 1_000_000,
            hostname: "ict-01".into(),
            user: "y5pupil".into(),
            kind: Some(Kind::Browsing(BrowsingVisit {
                action: "visit".into(),
                url: "https://www.google.com/search?q=how+to+self+harm".into(),
                title: format!("{SEARCH} - Google Search"),
                search_terms: SEARCH.into(),
                ..Default::default()
            })),
        };
        store::events::insert(
            &crate::store::System::test(&tx),
            "agent-1",
            &event,
            1_000_000,
        )
        .unwrap();
        tx.commit().unwrap();
        store::alerts::insert(
            &crate::store::System::test(&conn),
            &Alert {
                agent_id: "agent-1".into(),
                hostname: "ict-01".into(),
                user: "y5pupil".into(),
                kind: "browsing".into(),
                rule: rule.into(),
                category: "self-harm".into(),
                severity: severity.parse().unwrap(),
                summary: "search for self-harm".into(),
                matched: SEARCH.into(),
                observed_at_us: 1_000_000,
                policy_version: "1".into(),
                event_seq: Some(seq),
                response: String::new(),
                aggregate_key: None,
            },
        )
        .unwrap()
    }

    fn last_audit(&self) -> crate::store::audit::Entry {
        let f = crate::store::audit::Filter {
            limit: 1,
            ..Default::default()
        };
        crate::store::audit::list(&crate::store::Audited::test(&self.conn()), &f)
            .unwrap()
            .remove(0)
    }
}

#[tokio::test]
async fn an_approved_reveal_shows_the_dsl_the_search_until_then_it_does_not() {
    let h = harness();
    let c = &h.console;
    let (dsl, head, tech) = (
        staff("dsl1", Role::Dsl),
        staff("head", Role::Leadership),
        staff("tech", Role::Technician),
    );
    let id = h.alert(1, "keywords.self-harm", "serious");
    let view = |who: &Staff| {
        let who = who.clone();
        async move {
            let (d, _) = alert_detail::detail(c, &who, id, reveals::grant_of(&who, id))
                .await
                .unwrap();
            (serde_json::to_string(&d.events).unwrap(), d)
        }
    };
    let (before, d) = view(&dsl).await;
    assert!(
        !before.contains(SEARCH) && before.contains("www.google.com"),
        "{before}"
    );
    assert!(d.revealable);
    assert_eq!(h.last_audit().action, "alert.view");

    let short = reveals::request(c, &dsl, id, "need it".into()).await;
    assert!(matches!(short, Err(ConsoleError::BadRequest(m)) if m.contains("reason")));
    let rid = reveals::request(c, &dsl, id, REASON.into()).await.unwrap();
    let entry = h.last_audit();
    assert_eq!(
        (entry.action.as_str(), entry.purpose.as_str()),
        ("reveal.request", REASON)
    );
    let panel = reveals::alert_panel(c, &dsl, &view(&dsl).await.1)
        .await
        .unwrap();
    assert!(panel.0.contains("waiting for approval"), "{}", panel.0);
    assert!(!view(&dsl).await.0.contains(SEARCH));

    h.conn()
        .execute(
            "INSERT INTO staff(username, role, password_hash, created_at)
             VALUES ('head', 'leadership', 'x', 0)",
            [],
        )
        .unwrap();
    let own = reveals::decide(c, &dsl, rid, true).await.unwrap_err();
    assert!(matches!(own, ConsoleError::Forbidden(_)), "{own}");
    reveals::decide(c, &head, rid, true).await.unwrap();
    assert_eq!(h.last_audit().action, "reveal.approve");

    let (after, d) = view(&dsl).await;
    assert!(after.contains(SEARCH), "{after}");
    assert_eq!(d.content, "full");
    let entry = h.last_audit();
    assert_eq!(
        (entry.action.as_str(), entry.purpose.as_str()),
        ("alert.view.revealed", REASON)
    );
    let panel = reveals::alert_panel(c, &dsl, &d).await.unwrap();
    assert!(panel.0.contains("revealed until"), "{}", panel.0);
    // The grant is the requester's: anyone else still sees the host only.
    assert!(!view(&tech).await.0.contains(SEARCH));
}

#[tokio::test]
async fn an_illegal_alert_cannot_be_requested() {
    let h = harness();
    let id = h.alert(2, "illegal.iwf", "illegal");
    let dsl = staff("dsl1", Role::Dsl);
    let err = reveals::request(&h.console, &dsl, id, REASON.into())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConsoleError::Forbidden(ref m) if m.contains("never shown")),
        "{err}"
    );
    // Nothing was written, not even to the trail.
    assert!(
        crate::store::reveals::latest(&crate::store::Admin::test(&h.conn()), id, "dsl1")
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn governors_get_the_incident_log_without_names() {
    let h = harness();
    let c = &h.console;
    let dsl = staff("dsl1", Role::Dsl);
    let id = h.alert(3, "keywords.self-harm", "serious");
    let actions = action_options(&c.policy.load().responses, "pupil");
    let record = IncidentRecord {
        subject: "y5pupil".into(),
        subject_class: "pupil".into(),
        summary: "Searched for ways to self-harm in ICT".into(),
        occurred_at: "2026-11-20T09:15:00Z".into(),
        category: "self-harm".into(),
        severity: "serious".into(),
        action_taken: vec![actions[0].clone(), "other: y5pupil moved seats".into()],
        status: "open".into(),
        notes: "spoke to y5pupil's mother".into(),
        ..Default::default()
    };
    let inc = incidents::create(c, &dsl, record, vec![id]).await.unwrap();
    assert_eq!(h.last_audit().object, format!("incident:{inc}"));
    let all = incidents::ListFilters::default();
    let governor = staff("gov", Role::Governor);
    let json = serde_json::to_string(&incidents::fetch(c, &governor, &all).await.unwrap()).unwrap();
    assert!(
        !json.contains("y5pupil") && !json.contains("subject"),
        "{json}"
    );
    assert!(
        !json.contains("Searched") && !json.contains("mother"),
        "{json}"
    );
    assert!(json.contains("\"category\":\"self-harm\""), "{json}");
    assert_eq!(h.last_audit().action, "incident.list.summary");
    let head = staff("head", Role::Leadership);
    let json = serde_json::to_string(&incidents::fetch(c, &head, &all).await.unwrap()).unwrap();
    assert!(json.contains("\"subject\":\"y5pupil\""), "{json}");
}

/// Through the real router: routes build without conflicts, the access table applies, and the
/// pages render.
#[tokio::test]
async fn the_pages_render_for_each_role_through_the_router() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt;

    let h = harness();
    let alert = h.alert(4, "keywords.self-harm", "serious");
    let mut cookies = std::collections::HashMap::new();
    {
        let conn = h.conn();
        for (name, role) in [
            ("dsl1", Role::Dsl),
            ("head", Role::Leadership),
            ("gov", Role::Governor),
            ("tech", Role::Technician),
        ] {
            crate::store::accounts::create(
                &crate::store::Admin::test(&conn),
                &crate::store::accounts::NewAccount {
                    username: name,
                    role,
                    is_admin: false,
                    password: "a long enough password 1",
                    display_name: "",
                    email: "",
                    must_change_password: false,
                },
            )
            .unwrap();
            let (token, csrf) = crate::store::accounts::open_session(
                &crate::store::Admin::test(&conn),
                name,
                std::time::Duration::from_secs(600),
                "test",
            )
            .unwrap();
            cookies.insert(name, (token, csrf));
        }
    }
    let app = router(Arc::clone(&h.console));
    let call = |who: &str, method: &str, uri: String, form: Option<String>| {
        let (token, csrf) = cookies[who].clone();
        let app = app.clone();
        let method = method.to_owned();
        async move {
            let mut req = Request::builder().method(method.as_str()).uri(uri).header(
                header::COOKIE,
                format!("{}={token}", routes::SESSION_COOKIE),
            );
            let body = match form {
                Some(f) => {
                    req = req
                        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .header(routes::CSRF_HEADER, csrf);
                    Body::from(f)
                }
                None => Body::empty(),
            };
            let resp = app.oneshot(req.body(body).unwrap()).await.unwrap();
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let (s, body) = call(
        "dsl1",
        "GET",
        format!("/incidents/new?alerts={alert}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(
        body.contains("value=\"y5pupil\"") && body.contains("inform parents"),
        "{body}"
    );
    let form = format!(
        "subject=y5pupil&subject_class=pupil&occurred_at=2026-11-20T09%3A00&category=self-harm\
         &severity=serious&summary=Searched+%3Cb%3Eself-harm%3C%2Fb%3E&action=inform+parents\
         &status=open&notes=&alerts={alert}"
    );
    let (s, body) = call("dsl1", "POST", "/incidents".into(), Some(form)).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    let (s, body) = call("dsl1", "GET", "/incidents/1".into(), None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(
        body.contains("&lt;b&gt;self-harm"),
        "stored text is escaped: {body}"
    );
    let (s, body) = call("dsl1", "GET", format!("/alerts/{alert}"), None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(
        body.contains("Incident #1") && body.contains("name=\"reason\""),
        "{body}"
    );
    let (s, body) = call("head", "GET", "/incidents/1".into(), None).await;
    assert!(
        s == StatusCode::OK && !body.contains("action=\"/incidents/1\""),
        "{body}"
    );
    let (s, body) = call("gov", "GET", "/incidents".into(), None).await;
    assert!(s == StatusCode::OK && !body.contains("y5pupil"), "{body}");
    let (s, _) = call("gov", "GET", "/api/incidents/1".into(), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        "tech",
        "POST",
        format!("/api/alerts/{alert}/reveal"),
        Some(String::new()),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body) = call(
        "dsl1",
        "POST",
        format!("/alerts/{alert}/reveal"),
        Some(format!("reason={}", REASON.replace(' ', "+"))),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    let (s, body) = call("head", "GET", "/reveals".into(), None).await;
    assert!(
        s == StatusCode::OK && body.contains(REASON) && body.contains("Approve"),
        "{body}"
    );
    let (s, body) = call(
        "head",
        "POST",
        "/reveals/1/decide".into(),
        Some("approve=true".into()),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    let (_, body) = call("dsl1", "GET", format!("/alerts/{alert}"), None).await;
    assert!(
        body.contains("revealed until") && body.contains(SEARCH),
        "{body}"
    );
}

#[tokio::test]
async fn a_saved_change_is_not_reported_as_failed_when_the_head_file_cannot_be_written() {
    let h = harness();
    let head = h.console.data_dir().join("audit.head");
    let _ = std::fs::remove_file(&head);
    std::fs::create_dir(&head).unwrap();
    let dsl = staff("dsl1", Role::Dsl);
    let r = h
        .console
        .audited(&dsl, Audit::new("alert.list", "alerts"), |_| Ok(7))
        .await;
    assert_eq!(r.unwrap(), 7);
    assert_eq!(h.last_audit().action, "alert.list");
}
