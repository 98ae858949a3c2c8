//! Checks and the weekly report through the console's router, with real sessions: who may do
//! what, the CSV download, and the audit trail each step leaves.

use crate::console::{Console, router};
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use invigilator_policy::Policy;
use invigilator_proto::v1::event::Kind;
use invigilator_proto::v1::{BrowsingVisit, Event};
use std::sync::Arc;
use tower::ServiceExt;

struct App {
    _dir: tempfile::TempDir,
    app: axum::Router,
    conn: crate::store::db::Connection,
}

const T0: i64 = 1_790_000_000_000_000;

fn app() -> App {
    let (dir, mut conn) = crate::store::test_db();
    for (name, role) in [
        ("head", "leadership"),
        ("deputy", "leadership"),
        ("tech", "technician"),
        ("tech2", "technician"),
        ("gov", "governor"),
        ("dsl", "dsl"),
    ] {
        conn.execute(
            "INSERT INTO staff(username, role, password_hash, created_at) VALUES (?1, ?2, 'x', 0)",
            [name, role],
        )
        .unwrap();
    }
    crate::store::agents::insert_agent(
        &crate::store::Admin::test(&conn),
        &crate::store::NewAgent {
            agent_id: "a2",
            group: "staff-laptops",
            hostname: "staff-lt1",
            os: "linux",
            agent_version: "1",
            cert_serial: "s",
            cert_not_after_us: i64::MAX,
        },
    )
    .unwrap();
    let tx = conn.transaction().unwrap();
    let visit = Event {
        truncated: Vec::new(),
        device_time_us: 0,
        seq: 1,
        observed_at_us: T0,
        hostname: "staff-lt1".into(),
        user: "teacher.jo".into(),
        kind: Some(Kind::Browsing(BrowsingVisit {
            action: "visit".into(),
            url: "https://example.org/x".into(),
            title: "=HYPERLINK(\"http://evil\")".into(),
            ..Default::default()
        })),
    };
    crate::store::events::insert(&crate::store::System::test(&tx), "a2", &visit, T0).unwrap();
    tx.commit().unwrap();
    let policy = Arc::new(ArcSwap::from_pointee(
        Policy::parse(invigilator_policy::DEFAULT_POLICY).unwrap(),
    ));
    let console = Console::new(
        crate::store::Store::test_open(dir.path()),
        Default::default(),
        policy,
    );
    App {
        _dir: dir,
        app: router(console),
        conn,
    }
}

impl App {
    fn session(&self, user: &str) -> (String, String) {
        crate::store::accounts::open_session(
            &crate::store::Admin::test(&self.conn),
            user,
            std::time::Duration::from_secs(3600),
            "test",
        )
        .unwrap()
    }

    async fn call(
        &self,
        user: &str,
        method: &str,
        path: &str,
        json: Option<&str>,
    ) -> (StatusCode, String, Option<String>) {
        let (token, csrf) = self.session(user);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "console")
            .header(
                header::COOKIE,
                format!("{}={token}", crate::console::routes::SESSION_COOKIE),
            );
        if method == "POST" {
            req = req
                .header(crate::console::routes::CSRF_HEADER, csrf)
                .header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Body::from(json.unwrap_or("").to_owned())).unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let disposition = resp
            .headers()
            .get(header::CONTENT_DISPOSITION)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .unwrap();
        (
            status,
            String::from_utf8_lossy(&body).into_owned(),
            disposition,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_is_requested_run_by_another_and_read_with_every_step_audited() {
    let a = app();
    let scope = r#""from": "2026-09-21", "to": "2026-09-22", "users": ["teacher.jo"]"#;
    let (s, body, _) = a
        .call(
            "head",
            "POST",
            "/api/checks",
            Some(&format!(r#"{{"reason": " ", {scope}}}"#)),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("reason"), "{body}");

    let req = format!(r#"{{"reason": "Parent's complaint about staff use", {scope}}}"#);
    let (s, body, _) = a.call("head", "POST", "/api/checks", Some(&req)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap();

    for who in ["head", "dsl", "gov"] {
        let (s, _, _) = a
            .call(who, "POST", &format!("/api/checks/{id}/run"), None)
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{who} ran it");
    }
    let (s, body, _) = a
        .call("deputy", "GET", &format!("/api/checks/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, _, _) = a.call("gov", "GET", "/api/checks", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body, _) = a.call("deputy", "GET", "/api/checks", None).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "[]"));

    // Waiting to be run: any technician may read it, to run it.
    let (s, body, _) = a
        .call("tech2", "GET", &format!("/api/checks/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body, _) = a
        .call("tech", "POST", &format!("/api/checks/{id}/run"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // Once run, what it found is for the requester, the DSL and the technician who ran it.
    for path in [
        format!("/api/checks/{id}"),
        format!("/checks/{id}/csv"),
        format!("/checks/{id}/print"),
    ] {
        let (s, body, _) = a.call("tech2", "GET", &path, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {body}");
    }
    let (s, body, _) = a.call("tech2", "GET", "/api/checks", None).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "[]"));
    let (s, body, _) = a.call("tech", "GET", "/api/checks", None).await;
    assert!(
        s == StatusCode::OK && body.contains("\"run_by\":\"tech\""),
        "{body}"
    );
    let (s, body, _) = a
        .call("tech", "GET", &format!("/api/checks/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let run: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(run["status"], "run");
    assert_eq!(run["result"]["events"], 1);
    let (s, body, _) = a
        .call("tech", "POST", &format!("/api/checks/{id}/run"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");

    let (s, body, disposition) = a
        .call("head", "GET", &format!("/checks/{id}/csv"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        disposition.as_deref(),
        Some(format!("attachment; filename=\"check-{id}.csv\"").as_str())
    );
    assert!(
        body.contains("site example.org, title =HYPERLINK"),
        "{body}"
    );
    assert!(!body.lines().any(|l| l.contains(",=")), "{body}");

    let (s, body, _) = a
        .call("dsl", "GET", &format!("/checks/{id}/print"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.contains("Parent&#39;s complaint") || body.contains("Parent's complaint"),
        "{body}"
    );
    assert!(body.contains("tech on "), "{body}");

    let actions: Vec<String> = a
        .conn
        .prepare("SELECT action || ' ' || actor FROM audit_log WHERE object = ?1 ORDER BY id")
        .unwrap()
        .query_map([format!("check:{id}")], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for want in [
        "check.request head",
        "check.run tech",
        "check.export head",
        "check.view dsl",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} not in {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governors_read_the_weekly_report_with_charts() {
    let a = app();
    let (s, body, _) = a
        .call("gov", "GET", "/reports/weekly?week=2026-W43", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(
        body.contains("<svg") && body.contains("Weekly report 2026-W43"),
        "{body}"
    );
    let (s, body, _) = a
        .call("gov", "GET", "/api/reports/weekly?week=soon", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("soon"), "{body}");
    let (s, _, _) = a.call("tech", "GET", "/api/reports/weekly", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body, _) = a.call("head", "GET", "/api/reports", None).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "[]"));
    let (s, _, _) = a.call("dsl", "GET", "/api/reports/9", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let viewed: i64 = a
        .conn
        .query_row(
            "SELECT count(*) FROM audit_log WHERE action = 'report.view' AND object = 'report:weekly:2026-W43'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(viewed, 1);
}
