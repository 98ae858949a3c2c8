//! The page shell, the navigation each role sees, static files, and the headers every response
//! carries. Pages are maud templates: every string is escaped when rendered, so page titles,
//! addresses and names written by strangers are shown as text.

use super::Staff;
use super::error::ShownError;
use super::routes::{self, Access};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use maud::{DOCTYPE, Markup, html};
use std::sync::Arc;

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");

/// Scripts only from our own origin and no inline script at all: even if an escape were missed,
/// an injected `<script>` would not run.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The menu: (path, label). An entry shows when the user's role may open it.
const MENU: &[(&str, &str)] = &[
    ("/alerts", "Alerts"),
    ("/incidents", "Incident log"),
    ("/reveals", "Reveal requests"),
    ("/checks", "Checks"),
    ("/reports/weekly", "Weekly report"),
    ("/agents", "Agents"),
    ("/audit", "Audit trail"),
    ("/sar", "Subject access"),
    ("/users", "Accounts"),
];

pub fn page(staff: Option<&Staff>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en-GB" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Invigilator" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                @if let Some(s) = staff {
                    @for n in &s.notices {
                        div.notice role="status" { strong { "Notice " (n.at.get(..10).unwrap_or("")) ": " } (n.text) }
                    }
                }
                header.top {
                    a.brand href="/" { "Invigilator" }
                    @if let Some(s) = staff {
                        nav {
                            @for (path, label) in MENU {
                                @if routes::find("GET", path).is_some_and(|r| r.access.allows(s.role, s.is_admin)) {
                                    a href=(path) { (label) }
                                }
                            }
                        }
                        div.who {
                            a href="/account" { (s.username) }
                            " (" (s.role.title()) ") "
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(s.csrf_token);
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
                footer { "Every view of monitored data is recorded in the access audit trail." }
            }
        }
    }
}

/// The hidden field every form posts back (CSRF).
pub fn csrf_field(staff: &Staff) -> Markup {
    html! { input type="hidden" name="csrf" value=(staff.csrf_token); }
}

pub async fn home(Extension(staff): Extension<Staff>) -> Response {
    // Straight to the page the role works in.
    let first = MENU.iter().find(|(path, _)| {
        routes::find("GET", path)
            .is_some_and(|r| r.access != Access::Public && r.access.allows(staff.role, false))
    });
    match first {
        Some((path, _)) => Redirect::to(path).into_response(),
        None => page(
            Some(&staff),
            "Invigilator",
            html! { p { "Nothing to show for this role." } },
        )
        .into_response(),
    }
}

pub async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS)
}

pub async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JS,
    )
}

pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

pub async fn openapi() -> impl IntoResponse {
    Json(routes::openapi())
}

/// Headers for every response, and errors on HTML routes shown as a page rather than JSON.
pub async fn security_headers(
    State(c): State<Arc<super::Console>>,
    req: Request,
    next: Next,
) -> Response {
    let is_api = req.uri().path().starts_with("/api/");
    let mut resp = next.run(req).await;
    if !is_api && let Some(ShownError(message)) = resp.extensions().get::<ShownError>().cloned() {
        let status = resp.status();
        let staff = resp.extensions().get::<Staff>().cloned();
        let title = status.canonical_reason().unwrap_or("Error");
        resp = (
            status,
            page(staff.as_ref(), title, html! { p.error { (message) } }),
        )
            .into_response();
    }
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Monitored data must not linger in browser or proxy caches.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Served over HTTPS (a reverse proxy): browsers must never come back over plain HTTP.
    if c.config.secure_cookies {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    resp
}

/// Shows a UTC time from the store as a short local-looking text (the school is in one zone).
pub fn when(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono_tz::Europe::London)
                .format("%a %d %b %Y %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_owned())
}
