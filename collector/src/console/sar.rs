//! Subject access export for the DSL: a form, and the JSON download it leads to.

use super::layout::page;
use super::{Audit, Console, ConsoleError, Staff};
use crate::store::sar;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/sar", get(form))
        .route("/api/sar", get(download))
}

async fn form(Extension(staff): Extension<Staff>) -> Markup {
    page(
        Some(&staff),
        "Subject access export",
        html! {
            p {
                "Everything the collector holds about one user (UK GDPR Art. 15), as JSON. "
                "Review it before disclosure: it can name other people, and an exemption may apply. "
                "The export and its purpose are recorded in the access audit trail."
            }
            form.stack method="get" action="/api/sar" {
                label { "User (the account name exactly as recorded)" input name="user" required; }
                label { "Purpose (e.g. the request's reference)" input name="purpose" required; }
                button type="submit" { "Download export" }
            }
        },
    )
}

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default)]
    user: String,
    #[serde(default)]
    purpose: String,
}

async fn download(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Query(p): Query<Params>,
) -> Result<Response, ConsoleError> {
    let (user, purpose) = sar::check_request(&p.user, &p.purpose)
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .map_err(|e| ConsoleError::BadRequest(e.to_string()))?;
    // The export scans every event (0.1-0.2 s per million with the file cached, far more from
    // a cold disk): it reads a snapshot outside any write transaction, so neither ingest nor
    // other staff wait for it, and it is released only with its entry written.
    let who = user.clone();
    let sealed = c.scan(move |scan| Ok(sar::export(scan, &who)?)).await?;
    let detail = serde_json::to_string(sealed.counts()).unwrap_or_default();
    let entry = Audit::new("sar.export", format!("user:{user}"))
        .purpose(purpose)
        .detail(detail);
    let (name, body) = c
        .audited(&staff, entry, move |tx| {
            let export = tx.unseal(sealed);
            let body = serde_json::to_vec_pretty(&export)
                .map_err(|e| ConsoleError::Internal(format!("encoding the export: {e}")))?;
            Ok((sar::file_name(&user), body))
        })
        .await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/json; charset=utf-8".to_owned(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::accounts::Role;
    use crate::store::{self, audit};
    use axum::http::StatusCode;

    fn staff(role: Role) -> Staff {
        Staff {
            username: "dsl1".into(),
            role,
            is_admin: false,
            csrf_token: "t".into(),
            source: "10.0.0.1".into(),
            notices: Vec::new(),
        }
    }

    /// The handler itself, as a logged-in DSL (the log-in check and the access table have
    /// their own tests).
    async fn call(dir: &std::path::Path, query: &str) -> Response {
        let policy = invigilator_policy::Policy::parse(invigilator_policy::DEFAULT_POLICY).unwrap();
        let console = Console::new(
            crate::store::Store::test_open(dir),
            Default::default(),
            Arc::new(arc_swap::ArcSwap::from_pointee(policy)),
        );
        let uri: axum::http::Uri = format!("/api/sar?{query}").parse().unwrap();
        let Query(params) = Query::<Params>::try_from_uri(&uri).unwrap();
        match download(State(console), Extension(staff(Role::Dsl)), Query(params)).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    #[tokio::test]
    async fn the_export_downloads_and_is_audited_with_its_purpose() {
        let (dir, mut conn) = store::test_db();
        crate::store::sar::tests::put_event(
            &mut conn,
            1,
            "amy",
            invigilator_proto::v1::event::Kind::Process(Default::default()),
        );
        let resp = call(dir.path(), "user=amy&purpose=SAR%20ref%2042").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[header::CONTENT_DISPOSITION],
            "attachment; filename=\"sar-amy.json\""
        );
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["user"], "amy");
        assert_eq!(json["counts"]["events"], 1);
        let entries = audit::list(
            &crate::store::Audited::test(&conn),
            &audit::Filter {
                action_prefix: Some("sar.".into()),
                limit: 5,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            (
                entries[0].actor.as_str(),
                entries[0].object.as_str(),
                entries[0].purpose.as_str()
            ),
            ("dsl1", "user:amy", "SAR ref 42")
        );
        assert_eq!(
            audit::verify(&crate::store::Audited::test(&conn)).unwrap(),
            audit::Verdict::Intact { entries: 1 }
        );
    }

    #[tokio::test]
    async fn no_purpose_no_export() {
        let (dir, conn) = store::test_db();
        for uri in ["user=amy", "user=amy&purpose=%20%20", "purpose=x"] {
            let resp = call(dir.path(), uri).await;
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{uri}");
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains("required"), "{text}");
        }
        let n: i64 = conn
            .query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "nothing was read");
    }

    #[tokio::test]
    async fn a_hostile_user_name_cannot_shape_the_header() {
        let (dir, _conn) = store::test_db();
        let resp = call(dir.path(), "user=a%22%3B%20filename%3D..%2Fx&purpose=p").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[header::CONTENT_DISPOSITION],
            "attachment; filename=\"sar-a___filename_.._x.json\""
        );
    }

    #[test]
    fn only_the_dsl_may_export() {
        use super::super::routes::find;
        for (method, path) in [("GET", "/sar"), ("GET", "/api/sar")] {
            let r = find(method, path).expect("listed");
            for role in Role::ALL {
                assert_eq!(
                    r.access.allows(role, true),
                    role == Role::Dsl,
                    "{path} {role:?}"
                );
            }
        }
    }
}
