//! Logging in and out, the session cookie, CSRF, and the access check every route passes.

use super::layout::{csrf_field, page};
use super::login::{LoginForm, log_in};
use super::routes::{self, Access};
use super::routes::{CSRF_HEADER, SESSION_COOKIE};
use super::{Console, ConsoleError, Staff};
use crate::store::accounts;
use crate::store::audit::{self, Record};
use crate::store::now_us;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form, Json};
use maud::html;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;

const MAX_FORM_BYTES: usize = 1 << 20;

fn source_of(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn session_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
}

/// The value of the request's cookie with this name.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// A request started by another site's page is refused before anything else (SameSite cookies
/// already keep the session out of such requests; this is the second lock on the door).
/// Browsers say where a request comes from in `Sec-Fetch-Site`, which page scripts cannot set;
/// without it (older browsers, API clients) the `Origin` header, when present, must be ours.
fn foreign_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        let foreign = !matches!(site, "same-origin" | "none");
        if foreign {
            tracing::warn!(site, "refused a state change started by another site");
        }
        return foreign;
    }
    let Some(origin) = text(header::ORIGIN) else {
        return false;
    };
    let host = text(header::HOST).unwrap_or("");
    let origin_host = url::Url::parse(origin).ok().and_then(|u| {
        u.host_str().map(|h| match u.port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_owned(),
        })
    });
    let foreign = origin_host.as_deref() != Some(host);
    if foreign {
        tracing::warn!(origin, host, "refused a state change from another origin");
    }
    foreign
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let err = match status {
        StatusCode::UNAUTHORIZED => ConsoleError::Unauthenticated,
        _ => ConsoleError::Forbidden(message.to_owned()),
    };
    err.into_response()
}

/// Pages a user who must change their password may still open.
const WHILE_PASSWORD_EXPIRED: &[&str] = &[
    "/account",
    "/account/password",
    "/api/account/password",
    "/logout",
    "/api/logout",
    "/api/me",
];

/// The access check: finds the route in [`routes::ROUTES`] (a route missing there is refused,
/// never served), the session from its cookie, the role's permission and, for anything that
/// changes state, the CSRF token.
pub async fn enforce(State(c): State<Arc<Console>>, req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let is_api = path.starts_with("/api/");
    // OPTIONS says what the path allows (the access table is public, as /api/openapi.json).
    if req.method() == Method::OPTIONS {
        let mut allow: Vec<&str> = routes::ROUTES
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.method)
            .collect();
        if allow.contains(&"GET") {
            allow.push("HEAD");
        }
        allow.push("OPTIONS");
        return (StatusCode::NO_CONTENT, [(header::ALLOW, allow.join(", "))]).into_response();
    }
    // HEAD is GET without the body, under GET's rule.
    let method = if req.method() == Method::HEAD {
        "GET"
    } else {
        req.method().as_str()
    };
    let Some(route) = routes::find(method, &path) else {
        tracing::error!(method = %req.method(), path, "route missing from the access table");
        return refuse(StatusCode::FORBIDDEN, "this endpoint has no access rule");
    };
    let changes_state = req.method() != Method::GET && req.method() != Method::HEAD;
    if changes_state && foreign_origin(req.headers()) {
        let _ = axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES).await;
        return refuse(StatusCode::FORBIDDEN, "request from another site refused");
    }
    if route.access == Access::Public {
        return next.run(req).await;
    }
    let source = source_of(&req);
    let token = session_token(req.headers());
    let idle = c.config.idle_timeout;
    let session = match token {
        Some(t) => c
            .admin(move |conn| {
                let Some(session) = accounts::find_session(conn, &t, idle)? else {
                    return Ok(None);
                };
                let notices = if routes::SENIOR.contains(&session.account.role) {
                    crate::store::approvers::recent(conn)?
                } else {
                    Vec::new()
                };
                Ok(Some((session, notices)))
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "session lookup failed");
                None
            }),
        None => None,
    };
    let Some((session, notices)) = session else {
        if is_api {
            return refuse(StatusCode::UNAUTHORIZED, "not logged in");
        }
        let next_path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let target = format!(
            "/login?next={}",
            percent_encoding::utf8_percent_encode(next_path, percent_encoding::NON_ALPHANUMERIC)
        );
        return Redirect::to(&target).into_response();
    };
    let staff = Staff {
        username: session.account.username.clone(),
        role: session.account.role,
        is_admin: session.account.is_admin,
        csrf_token: session.csrf_token,
        source,
        notices,
    };
    if !route.access.allows(staff.role, staff.is_admin) {
        let object = format!("{} {}", req.method(), req.uri().path());
        let actor = staff.actor();
        let _ = c
            .admin(move |conn| {
                let rec = Record {
                    action: "access.denied",
                    object: &object,
                    ..Default::default()
                };
                Ok(audit::append(conn, &actor, &rec)?)
            })
            .await;
        let mut resp = refuse(
            StatusCode::FORBIDDEN,
            &format!("the {} role may not do this", staff.role.as_str()),
        );
        resp.extensions_mut().insert(staff);
        return resp;
    }
    if session.account.must_change_password && !WHILE_PASSWORD_EXPIRED.contains(&path.as_str()) {
        if is_api {
            return refuse(StatusCode::FORBIDDEN, "the password must be changed first");
        }
        return Redirect::to("/account").into_response();
    }
    let mut req = req;
    if changes_state {
        let (ok, rebuilt) = csrf_ok(req, &staff.csrf_token).await;
        let Some(rebuilt) = rebuilt else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            );
        };
        req = rebuilt;
        if !ok {
            return refuse(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
        }
    }
    req.extensions_mut().insert(staff.clone());
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(staff);
    resp
}

/// Checks the CSRF token from the header or, for a form, its `csrf` field (reading the body
/// and putting it back for the handler).
async fn csrf_ok(req: Request, expected: &str) -> (bool, Option<Request>) {
    let same = |given: &str| bool::from(given.as_bytes().ct_eq(expected.as_bytes()));
    // The body is read whatever the verdict: answering before the client has finished sending
    // makes some clients see a reset instead of the 403.
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return (false, None);
    };
    let header = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let ok = match header {
        Some(given) => same(given),
        None if is_form => {
            url::form_urlencoded::parse(&bytes).any(|(k, v)| k == "csrf" && same(&v))
        }
        None => false,
    };
    (ok, Some(Request::from_parts(parts, Body::from(bytes))))
}

pub(super) fn session_cookie(c: &Console, token: &str) -> String {
    cookie::Cookie::build((SESSION_COOKIE, token.to_owned()))
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(c.config.secure_cookies)
        .path("/")
        .max_age(cookie::time::Duration::seconds(
            c.config.session_lifetime.as_secs() as i64,
        ))
        .build()
        .to_string()
}

fn cleared_cookie() -> String {
    cookie::Cookie::build((SESSION_COOKIE, ""))
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .path("/")
        .max_age(cookie::time::Duration::ZERO)
        .build()
        .to_string()
}

#[derive(Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    pub(super) next: Option<String>,
}

/// Only paths on this site: `next` must never send anyone elsewhere. Browsers drop tabs and
/// newlines from a `Location` and read `\` as `/`, so `/\t/evil.example` is `//evil.example`
/// to them: only visible ASCII is accepted, and nothing that could start a second slash.
pub(super) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && n.bytes().all(|b| (0x21..=0x7e).contains(&b))
                && !matches!(n.as_bytes().get(1), Some(b'/' | b'\\'))
                && !n.contains('\\') =>
        {
            n.to_owned()
        }
        _ => "/".into(),
    }
}

fn login_markup(c: &Console, next: &str, message: Option<&str>) -> maud::Markup {
    let sso = c.config.sso.as_ref().filter(|_| c.sso.is_some());
    page(
        None,
        "Log in",
        html! {
            @if let Some(m) = message { p.error id="login-error" { (m) } }
            @if let Some(s) = sso {
                p { a.button id="sso" href={ "/login/sso?next=" (percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC)) } { (s.button) } }
                p.muted { "Or with a console account:" }
            }
            form.stack method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label { "User name" input name="username" autocomplete="username" required autofocus; }
                label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                label { "One-time code (if you use one)" input name="totp" inputmode="numeric" autocomplete="one-time-code"; }
                button type="submit" { "Log in" }
            }
        },
    )
}

pub async fn login_page(State(c): State<Arc<Console>>, Query(q): Query<NextQuery>) -> maud::Markup {
    login_markup(&c, &safe_next(q.next.as_deref()), None)
}

pub async fn login_form(
    State(c): State<Arc<Console>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    match log_in(&c, form, addr.ip().to_string()).await {
        Ok((_, token, _)) => (
            [(header::SET_COOKIE, session_cookie(&c, &token))],
            Redirect::to(&next),
        )
            .into_response(),
        Err(e) => (e.status(), login_markup(&c, &next, Some(&e.to_string()))).into_response(),
    }
}

pub async fn login_api(
    State(c): State<Arc<Console>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Json(form): Json<LoginForm>,
) -> Result<Response, ConsoleError> {
    let (account, token, csrf) = log_in(&c, form, addr.ip().to_string()).await?;
    Ok((
        [(header::SET_COOKIE, session_cookie(&c, &token))],
        Json(serde_json::json!({
            "username": account.username,
            "role": account.role,
            "is_admin": account.is_admin,
            "must_change_password": account.must_change_password,
            "csrf_token": csrf,
        })),
    )
        .into_response())
}

async fn end_session(c: &Arc<Console>, staff: &Staff, headers: &HeaderMap) {
    let token = session_token(headers);
    let actor = staff.actor();
    let _ = c
        .admin(move |conn| {
            if let Some(t) = token {
                accounts::close_session(conn, &t)?;
            }
            let object = format!("staff:{}", actor.name);
            audit::append(
                conn,
                &actor,
                &Record {
                    action: "logout",
                    object: &object,
                    ..Default::default()
                },
            )?;
            Ok(())
        })
        .await;
}

pub async fn logout(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    headers: HeaderMap,
) -> Response {
    end_session(&c, &staff, &headers).await;
    (
        [(header::SET_COOKIE, cleared_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}

pub async fn logout_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    headers: HeaderMap,
) -> Response {
    end_session(&c, &staff, &headers).await;
    (
        [(header::SET_COOKIE, cleared_cookie())],
        Json(serde_json::json!({"logged_out": true})),
    )
        .into_response()
}

pub async fn me(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
) -> Result<Json<serde_json::Value>, ConsoleError> {
    let name = staff.username.clone();
    let account = c
        .admin(move |conn| Ok(accounts::get(conn, &name)?))
        .await?
        .ok_or_else(|| ConsoleError::NotFound("account".into()))?;
    Ok(Json(serde_json::json!({
        "username": account.username,
        "role": account.role,
        "is_admin": account.is_admin,
        "totp_enabled": account.totp_enabled,
        "must_change_password": account.must_change_password,
        "csrf_token": staff.csrf_token,
        "notices": staff.notices,
    })))
}

pub async fn account_page(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
) -> Result<maud::Markup, ConsoleError> {
    let name = staff.username.clone();
    let account = c
        .admin(move |conn| Ok(accounts::get(conn, &name)?))
        .await?
        .ok_or_else(|| ConsoleError::NotFound("account".into()))?;
    Ok(account_markup(&staff, &account, None))
}

fn account_markup(
    staff: &Staff,
    account: &accounts::Account,
    notice: Option<maud::Markup>,
) -> maud::Markup {
    page(
        Some(staff),
        "Your account",
        html! {
            @if let Some(n) = notice { div.notice { (n) } }
            @if account.must_change_password {
                p.warning { "Choose a new password before going on." }
            }
            dl.facts {
                dt { "User name" } dd { (account.username) }
                dt { "Role" } dd { (account.role.title()) }
                dt { "Account administrator" } dd { (if account.is_admin { "yes" } else { "no" }) }
                dt { "One-time codes" } dd { (if account.totp_enabled { "on" } else { "off" }) }
            }
            h2 { "Change password" }
            form.stack method="post" action="/account/password" {
                (csrf_field(staff))
                label { "Current password" input type="password" name="current" autocomplete="current-password" required; }
                label { "New password (at least " (accounts::MIN_PASSWORD) " characters)"
                    input type="password" name="new" autocomplete="new-password" required; }
                button type="submit" { "Change password" }
            }
            h2 { "One-time codes (TOTP)" }
            form.stack method="post" action="/account/totp" {
                (csrf_field(staff))
                label { "Current password" input type="password" name="current" autocomplete="current-password" required; }
                input type="hidden" name="enable" value=(if account.totp_enabled { "false" } else { "true" });
                button type="submit" { (if account.totp_enabled { "Turn off one-time codes" } else { "Turn on one-time codes" }) }
            }
        },
    )
}

#[derive(Deserialize)]
pub struct PasswordForm {
    current: String,
    new: String,
}

/// Checks a logged-in user's current password before a change to their own account, off the
/// database lock like a log-in. A wrong one counts like a failed log-in (a session left open
/// must not become a way to guess the password without limit).
async fn confirm_password(
    c: &Arc<Console>,
    staff: &Staff,
    current: String,
) -> Result<(), ConsoleError> {
    let rules = c.throttle_rules();
    let attempt = accounts::throttle::Attempt::new(&staff.username, &staff.source);
    let wrong = || ConsoleError::Forbidden("the current password is wrong".into());
    let (candidate, ok) = c
        .admit_and_check(&attempt, &staff.username, current)
        .await?
        .map_err(|_| {
            ConsoleError::Forbidden("too many wrong passwords: wait a while and try again".into())
        })?;
    c.admin(move |conn| match candidate.conclude(conn, ok, None)? {
        Ok(_) => Ok(()),
        Err(_) => {
            accounts::throttle::failed(conn, &attempt, rules, now_us())?;
            Err(wrong())
        }
    })
    .await
}

/// Checks the current password, sets the new one and opens a fresh session (a password change
/// ends every session, this one included). Returns the new cookie token and CSRF token.
async fn replace_password(
    c: &Arc<Console>,
    staff: &Staff,
    form: PasswordForm,
) -> Result<(String, String), ConsoleError> {
    let name = staff.username.clone();
    let actor = staff.actor();
    let lifetime = c.config.session_lifetime;
    confirm_password(c, staff, form.current).await?;
    c.admin(move |conn| {
        accounts::set_password(conn, &name, &form.new, false)?;
        audit::append(
            conn,
            &actor,
            &Record {
                action: "account.password",
                object: &format!("staff:{name}"),
                ..Default::default()
            },
        )?;
        Ok(accounts::open_session(
            conn,
            &name,
            lifetime,
            &actor.source,
        )?)
    })
    .await
}

pub async fn change_password(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Form(form): Form<PasswordForm>,
) -> Result<Response, ConsoleError> {
    let (token, _) = replace_password(&c, &staff, form).await?;
    Ok((
        [(header::SET_COOKIE, session_cookie(&c, &token))],
        Redirect::to("/account"),
    )
        .into_response())
}

pub async fn change_password_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Json(form): Json<PasswordForm>,
) -> Result<Response, ConsoleError> {
    let (token, csrf) = replace_password(&c, &staff, form).await?;
    Ok((
        [(header::SET_COOKIE, session_cookie(&c, &token))],
        Json(serde_json::json!({ "csrf_token": csrf })),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct TotpForm {
    current: String,
    enable: bool,
}

pub async fn set_totp(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Form(form): Form<TotpForm>,
) -> Result<maud::Markup, ConsoleError> {
    let name = staff.username.clone();
    let actor = staff.actor();
    confirm_password(&c, &staff, form.current).await?;
    let enable = form.enable;
    let (account, secret) = c
        .admin(move |conn| {
            let secret = accounts::set_totp(conn, &name, enable)?;
            audit::append(
                conn,
                &actor,
                &Record {
                    action: if enable {
                        "account.totp.on"
                    } else {
                        "account.totp.off"
                    },
                    object: &format!("staff:{name}"),
                    ..Default::default()
                },
            )?;
            let account = accounts::get(conn, &name)?
                .ok_or_else(|| ConsoleError::NotFound("account".into()))?;
            Ok((account, secret))
        })
        .await?;
    let notice = secret.map(|s| {
        let account_name = percent_encoding::utf8_percent_encode(
            &account.username,
            percent_encoding::NON_ALPHANUMERIC,
        );
        let uri =
            format!("otpauth://totp/Invigilator:{account_name}?secret={s}&issuer=Invigilator");
        html! {
            p { "Add this key to your authenticator app now; it is not shown again." }
            p { "Key: " code id="totp-secret" { (s) } }
            p.no-print { "Or as a link: " code { (uri) } }
        }
    });
    Ok(account_markup(&staff, &account, notice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        for hostile in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "//evil.example",
            "/\\evil.example",
            "/\\/evil.example",
            "/ /evil.example",
            "/\u{a0}/evil.example",
            "/\u{2028}/evil.example",
            "https://evil.example",
            "evil.example",
            "\t//evil.example",
            "/alerts\0",
            "",
        ] {
            assert_eq!(safe_next(Some(hostile)), "/", "{hostile:?}");
        }
        assert_eq!(safe_next(None), "/");
        for fine in [
            "/",
            "/alerts/42",
            "/audit?before=10&actor=dsl1",
            "/checks/3/print",
        ] {
            assert_eq!(safe_next(Some(fine)), fine);
        }
    }
}
