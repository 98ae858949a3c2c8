//! The access audit trail, for the DSL, leadership and governors: who looked at what, when,
//! from where and why; and the chain check.

use super::layout::{page, when};
use super::{Audit, Console, ConsoleError, Staff};
use crate::store::accounts::Role;
use crate::store::audit::{self, Entry, Filter, Verdict};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/audit", get(page_view))
        .route("/api/audit", get(api))
        .route("/api/audit/verify", get(verify))
}

#[derive(Debug, Default, Deserialize)]
struct Params {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    object: Option<String>,
    #[serde(default)]
    before: Option<i64>,
    /// `1`: also check the whole chain (the page only; it re-hashes every entry).
    #[serde(default)]
    verify: Option<String>,
}

/// What a governor may see of an object: its kind, and its id when that is a number. Anything
/// else after the kind (a user name, a host, a filter) may name a pupil.
fn redact_object(object: &str) -> String {
    let kind_end = object
        .find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
        .unwrap_or(object.len());
    let (kind, rest) = object.split_at(kind_end);
    let mut rest = rest.chars();
    let Some(sep) = rest.next() else {
        return kind.to_owned();
    };
    let id = rest.as_str();
    if sep == ':' && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        object.to_owned()
    } else {
        format!("{kind}{sep}\u{2026}")
    }
}

/// The governors' projection of an entry. Oversight needs who did what and when, so the actor
/// (a member of staff, who is accountable, not a pupil) stays; what names or describes a pupil
/// goes: the object beyond its kind and numeric id, the purpose and the detail. A failed
/// log-in's actor is only what was typed (entries before names were hashed may hold a password
/// typed in the wrong box), so it goes too. The hashes go as well: with everything else known,
/// they would confirm a guessed name.
fn for_governor(mut e: Entry) -> Entry {
    e.object = redact_object(&e.object);
    e.purpose.clear();
    e.detail.clear();
    if e.action == "login.failed" {
        e.actor = "\u{2026}".into();
    }
    e.prev_hash.clear();
    e.hash.clear();
    e
}

async fn fetch(c: &Arc<Console>, staff: &Staff, p: Params) -> Result<Vec<Entry>, ConsoleError> {
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let governor = staff.role == Role::Governor;
    // Otherwise filtering by `user:amy` would say whether anyone looked at amy's activity.
    if governor
        && let Some(o) = p.object.as_deref().filter(|o| !o.is_empty())
        && redact_object(o) != o
    {
        return Err(ConsoleError::BadRequest(
            "governors may filter by an object's kind and number only, such as alert:42".into(),
        ));
    }
    let f = Filter {
        actor: nonempty(p.actor),
        action_prefix: nonempty(p.action),
        object: nonempty(p.object),
        before_id: p.before,
        limit: 200,
    };
    // Reading the trail is itself recorded: who watches the watchers is on the record too.
    let entries = c
        .audited(staff, Audit::new("audit.list", "audit"), move |conn| {
            Ok(audit::list(conn, &f)?)
        })
        .await?;
    Ok(if governor {
        entries.into_iter().map(for_governor).collect()
    } else {
        entries
    })
}

async fn api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Query(p): Query<Params>,
) -> Result<Json<Vec<Entry>>, ConsoleError> {
    fetch(&c, &staff, p).await.map(Json)
}

async fn verify(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
) -> Result<Json<serde_json::Value>, ConsoleError> {
    let v = verify_chain(&c, &staff).await?;
    Ok(Json(match v {
        Verdict::Intact { entries } => serde_json::json!({"intact": true, "entries": entries}),
        Verdict::Broken { id, reason } => {
            serde_json::json!({"intact": false, "first_bad_entry": id, "reason": reason})
        }
    }))
}

/// Reading the whole trail to check it is a read of the trail like any other.
async fn verify_chain(c: &Arc<Console>, staff: &Staff) -> Result<Verdict, ConsoleError> {
    c.audited(staff, Audit::new("audit.verify", "audit_log"), |tx| {
        Ok(audit::verify(tx)?)
    })
    .await
}

async fn page_view(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Query(p): Query<Params>,
) -> Result<Markup, ConsoleError> {
    // Checking the chain re-hashes every entry under the shared database lock: only on request.
    let check = p.verify.as_deref() == Some("1");
    let entries = fetch(&c, &staff, p).await?;
    let verdict = match check {
        true => Some(verify_chain(&c, &staff).await?),
        false => None,
    };
    let older = entries
        .last()
        .map(|e| e.id)
        .filter(|_| entries.len() == 200);
    Ok(page(
        Some(&staff),
        "Access audit trail",
        html! {
            @match &verdict {
                Some(Verdict::Intact { entries }) => p.notice #chain { "Chain intact: " (entries) " entries verified." },
                Some(Verdict::Broken { id, reason }) => p.warning #chain { "Chain broken at entry " (id) ": " (reason) },
                None => p.no-print #chain { a href="/audit?verify=1" { "Check the chain" } },
            }
            form.filters method="get" action="/audit" {
                label { "Who" input name="actor"; }
                label { "Action (prefix)" input name="action" placeholder="alert."; }
                label { "Object" input name="object" placeholder="alert:42"; }
                button type="submit" { "Filter" }
            }
            table #audit {
                thead { tr { th { "#" } th { "When" } th { "Who" } th { "Role" } th { "Action" }
                             th { "Object" } th { "Purpose" } th { "From" } th { "Detail" } } }
                tbody { @for e in &entries { tr {
                    td { (e.id) } td { (when(&e.at)) } td { (e.actor) } td { (e.role) } td { (e.action) }
                    td { (e.object) } td { (e.purpose) } td { (e.source) } td { (e.detail) }
                } } }
            }
            @if let Some(id) = older { div.pager { a href={"/audit?before=" (id)} { "Older entries →" } } }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::{Actor, Record};
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt;

    const PUPIL: &str = "amy.pupil";

    #[test]
    fn objects_keep_their_kind_and_only_a_numeric_id() {
        for (given, shown) in [
            ("alert:42", "alert:42"),
            ("incident:3", "incident:3"),
            ("check:7", "check:7"),
            ("report:weekly:2026-W47", "report:\u{2026}"),
            ("staff:jo.bloggs", "staff:\u{2026}"),
            ("user:amy.pupil", "user:\u{2026}"),
            ("alerts?user=amy.pupil", "alerts?\u{2026}"),
            ("alerts since=2026-11-01", "alerts \u{2026}"),
            ("alert:1,alert:2", "alert:\u{2026}"),
            ("alert:", "alert:\u{2026}"),
            ("GET /api/sar", "GET \u{2026}"),
            ("audit", "audit"),
        ] {
            assert_eq!(redact_object(given), shown, "{given}");
        }
    }

    struct App {
        _dir: tempfile::TempDir,
        app: Router,
        sessions: std::collections::HashMap<&'static str, String>,
    }

    fn app() -> App {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::store::Store::create(dir.path(), &crate::store::StoreConfig::sqlite()).unwrap();
        let conn = crate::store::test_open(dir.path());
        let mut sessions = std::collections::HashMap::new();
        for (name, role) in [("gov", "governor"), ("dsl", "dsl")] {
            conn.execute(
                "INSERT INTO staff(username, role, password_hash, created_at) VALUES (?1, ?2, 'x', 0)",
                [name, role],
            )
            .unwrap();
            let (token, _) = crate::store::accounts::open_session(
                &crate::store::Admin::test(&conn),
                name,
                std::time::Duration::from_secs(600),
                "test",
            )
            .unwrap();
            sessions.insert(name, token);
        }
        let actor = Actor {
            name: "dsl".into(),
            role: "dsl".into(),
            source: "127.0.0.1".into(),
        };
        for rec in [
            Record {
                action: "sar.export",
                object: &format!("user:{PUPIL}"),
                purpose: &format!("request from {PUPIL}'s parents"),
                detail: "{}",
            },
            Record {
                action: "alert.view.revealed",
                object: "alert:42",
                purpose: &format!("third alert for {PUPIL} this week"),
                detail: &format!("searched by {PUPIL}"),
            },
            Record {
                action: "alert.list",
                object: &format!("alerts?user={PUPIL}"),
                ..Default::default()
            },
        ] {
            audit::append(&crate::store::Admin::test(&conn), &actor, &rec).unwrap();
        }
        let policy = invigilator_policy::Policy::parse(invigilator_policy::DEFAULT_POLICY).unwrap();
        let console = Console::new(
            store,
            Default::default(),
            Arc::new(arc_swap::ArcSwap::from_pointee(policy)),
        );
        App {
            _dir: dir,
            app: crate::console::router(console),
            sessions,
        }
    }

    impl App {
        async fn get(&self, who: &str, uri: &str) -> (StatusCode, String) {
            let req = Request::builder()
                .uri(uri)
                .header(
                    header::COOKIE,
                    format!(
                        "{}={}",
                        super::super::routes::SESSION_COOKIE,
                        self.sessions[who]
                    ),
                )
                .body(Body::empty())
                .unwrap();
            let resp = self.app.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 22)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    }

    #[tokio::test]
    async fn governors_read_the_trail_without_pupils_names() {
        let a = app();
        let (s, dsl) = a.get("dsl", "/api/audit").await;
        assert_eq!(s, StatusCode::OK, "{dsl}");
        assert!(dsl.contains(PUPIL), "the DSL sees the whole trail: {dsl}");

        let (s, gov) = a.get("gov", "/api/audit").await;
        assert_eq!(s, StatusCode::OK, "{gov}");
        assert!(!gov.contains(PUPIL), "{gov}");
        let entries: Vec<serde_json::Value> = serde_json::from_str(&gov).unwrap();
        let revealed = entries
            .iter()
            .find(|e| e["action"] == "alert.view.revealed")
            .unwrap();
        assert_eq!(revealed["object"], "alert:42");
        assert_eq!(revealed["actor"], "dsl", "staff stay accountable");
        assert_eq!(
            (&revealed["purpose"], &revealed["detail"]),
            (&"".into(), &"".into())
        );
        assert!(entries.iter().any(|e| e["object"] == "user:\u{2026}"));

        let (s, page) = a.get("gov", "/audit").await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert!(!page.contains(PUPIL), "{page}");
        // Asking whether anyone looked at a named pupil is a question about that pupil.
        let (s, body) = a
            .get("gov", &format!("/api/audit?object=user:{PUPIL}"))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        let (s, body) = a.get("gov", "/api/audit?object=alert:42").await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert!(body.contains("alert.view.revealed"), "{body}");
    }

    #[tokio::test]
    async fn the_page_checks_the_chain_only_when_asked() {
        let a = app();
        let (s, page) = a.get("dsl", "/audit").await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert!(
            !page.contains("Chain intact") && page.contains("/audit?verify=1"),
            "{page}"
        );
        let (_, page) = a.get("dsl", "/audit?verify=1").await;
        assert!(page.contains("Chain intact"), "{page}");
    }
}
