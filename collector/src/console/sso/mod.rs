//! Staff single sign-on with OpenID Connect: `/login/sso` sends the browser to the school's
//! provider, `/login/sso/callback` takes it back, validates the ID token, decides the account
//! ([`decide`]) and opens an ordinary console session. Local accounts stay for break-glass.
//!
//! Every sign-in, refusal, account created and role changed is in the audit trail. Starts and
//! refusals are held by a back-off of the address they come from, kept apart from password
//! log-ins, so neither the trail nor the table of sign-ins under way can be flooded.

pub mod decide;
pub mod provider;
#[cfg(test)]
mod tests;

use super::auth::{NextQuery, safe_next, session_cookie};
use super::layout::page;
use super::{Console, ConsoleError};
use crate::store::accounts::{self, sso, throttle};
use crate::store::audit::{self, Actor, Audit, Record};
use crate::store::{Admin, Store, now_us};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use decide::Outcome;
use maud::html;
pub use provider::{Identity, Provider, SsoError};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;

/// The cookie binding a sign-in to the browser that began it (SameSite=Lax: the provider's
/// redirect back is a cross-site navigation, which a Strict cookie would not follow).
const BROWSER_COOKIE: &str = "invigilator_sso";
/// Who refusals and sign-on's own changes are recorded as, before an account is known.
const SSO_ACTOR: &str = "(single sign-on)";

fn provider(c: &Console) -> Result<&Arc<Provider>, ConsoleError> {
    c.sso
        .as_ref()
        .ok_or_else(|| ConsoleError::NotFound("single sign-on (console.sso is not set)".into()))
}

/// The console is reached over HTTPS when the provider returns to an https address.
fn sso_over_https(c: &Console) -> bool {
    c.sso
        .as_ref()
        .is_some_and(|p| p.cfg.redirect_url.starts_with("https://"))
}

/// The back-off key of single sign-on from one address, apart from password log-ins.
fn attempt(source: &str) -> throttle::Attempt {
    throttle::Attempt::scoped("sso", source)
}

/// What a visitor is told of a problem on the collector's side: the log has the detail (a
/// file's path is nobody's business on a public page).
fn unavailable(e: SsoError) -> ConsoleError {
    match e {
        SsoError::Secret { .. } | SsoError::Ca { .. } => {
            tracing::error!(error = %e, "single sign-on is not available");
            ConsoleError::Busy(
                "single sign-on is not available: the collector's log says why".into(),
            )
        }
        e => ConsoleError::Busy(e.to_string()),
    }
}

fn browser_cookie(c: &Console, value: &str, max_age: i64) -> String {
    cookie::Cookie::build((BROWSER_COOKIE, value.to_owned()))
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .secure(c.config.secure_cookies || sso_over_https(c))
        .path("/login/sso")
        .max_age(cookie::time::Duration::seconds(max_age))
        .build()
        .to_string()
}

fn refused_page(status: StatusCode, message: &str) -> Response {
    (
        status,
        page(
            None,
            "Sign-in refused",
            html! {
                p.error id="sso-error" { "Single sign-on refused: " (message) }
                p { a href="/login" { "Back to the log-in page" } }
            },
        ),
    )
        .into_response()
}

/// GET /login/sso: records the sign-in under way and sends the browser to the provider.
pub async fn start(
    State(c): State<Arc<Console>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Query(q): Query<NextQuery>,
) -> Response {
    match begin(&c, safe_next(q.next.as_deref()), addr.ip().to_string()).await {
        Ok((to, browser)) => (
            [(
                header::SET_COOKIE,
                browser_cookie(&c, &browser, sso::PENDING_FOR.as_secs() as i64),
            )],
            Redirect::to(to.as_str()),
        )
            .into_response(),
        Err(e) => refused_page(e.status(), &e.to_string()),
    }
}

async fn begin(
    c: &Arc<Console>,
    next: String,
    source: String,
) -> Result<(url::Url, String), ConsoleError> {
    let p = Arc::clone(provider(c)?);
    admit(c, &source).await?;
    let auth = tokio::task::spawn_blocking(move || p.authorize())
        .await
        .map_err(|e| ConsoleError::Internal(e.to_string()))?
        .map_err(unavailable)?;
    let browser = hex::encode(rand::random::<[u8; 32]>());
    let pending = sso::Pending {
        nonce: auth.nonce,
        pkce_verifier: auth.pkce_verifier,
        next,
    };
    let (state, b) = (auth.state, browser.clone());
    let room = c
        .admin(move |conn| Ok(sso::begin(conn, &state, &b, &source, &pending)?))
        .await?;
    if !room {
        return Err(ConsoleError::Busy(
            "too many sign-ins under way; try again in a few minutes".into(),
        ));
    }
    Ok((auth.url, browser))
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// GET /login/sso/callback: the provider's answer.
pub async fn callback(
    State(c): State<Arc<Console>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let source = addr.ip().to_string();
    let browser = super::auth::cookie(&headers, BROWSER_COOKIE).unwrap_or_default();
    let clear = browser_cookie(&c, "", 0);
    match finish(&c, q, &browser, &source).await {
        Ok((token, next)) => {
            // A page, not a redirect: the session cookie is SameSite=Strict, and a redirect
            // chain that began at the provider would not carry it to the next page.
            let mut r = (
                [(header::REFRESH, format!("0; url={next}"))],
                page(
                    None,
                    "Signed in",
                    html! {
                        p { "Signed in. " a id="continue" href=(next) { "Continue to the console" } }
                    },
                ),
            )
                .into_response();
            for cookie in [session_cookie(&c, &token), clear] {
                if let Ok(v) = cookie.parse() {
                    r.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            r
        }
        Err(e) => {
            let mut r = refused_page(e.status(), &e.to_string());
            if let Ok(v) = clear.parse() {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
    }
}

/// Refuses a callback: in the trail, and on the address's single sign-on back-off, so that
/// nobody can write refusals into the trail without limit (a forged answer, a replayed one, or
/// a real person sent round again and again).
async fn refuse(
    c: &Arc<Console>,
    source: &str,
    who: Option<&Identity>,
    reason: String,
) -> ConsoleError {
    let rules = c.throttle_rules();
    let detail = match who {
        Some(w) => format!(
            "single sign-on: {reason}; {} subject {}",
            w.email.as_deref().unwrap_or("(no verified e-mail)"),
            w.subject
        ),
        None => format!("single sign-on: {reason}"),
    };
    let src = source.to_owned();
    let recorded = c
        .admin(move |conn| {
            throttle::failed(conn, &attempt(&src), rules, now_us())?;
            record_refusal(conn, &src, &detail)
        })
        .await;
    if let Err(e) = recorded {
        tracing::error!(error = %e, "could not record a refused sign-on");
    }
    ConsoleError::Forbidden(reason)
}

/// A `login.failed` entry for a sign-on refused before any account is known.
fn record_refusal(conn: &Admin<'_>, source: &str, detail: &str) -> Result<(), ConsoleError> {
    audit::append(
        conn,
        &Actor {
            name: SSO_ACTOR.into(),
            role: "unknown".into(),
            source: source.to_owned(),
        },
        &Record {
            action: "login.failed",
            object: "staff:(sso)",
            detail,
            ..Default::default()
        },
    )?;
    Ok(())
}

async fn finish(
    c: &Arc<Console>,
    q: Callback,
    browser: &str,
    source: &str,
) -> Result<(String, String), ConsoleError> {
    let p = Arc::clone(provider(c)?);
    let cfg = p.cfg.clone();
    admit(c, source).await?;
    let Some(state) = q.state else {
        let reason = "the answer has no state".to_owned();
        return Err(refuse(c, source, None, reason).await);
    };
    let (st, b) = (bounded(&state, 512), browser.to_owned());
    let Some(pending) = c.admin(move |conn| Ok(sso::take(conn, &st, &b)?)).await? else {
        let reason = "this sign-in was already used, has expired (sign-ins last 10 minutes), or \
                      was begun in another browser: start again from the log-in page";
        return Err(refuse(c, source, None, reason.into()).await);
    };
    // The person cancelled, or the provider turned them away: said by the provider itself.
    if let Some(error) = q.error {
        let said = q.error_description.unwrap_or_default();
        let reason = format!(
            "the identity provider said {}{} (as the browser relayed it)",
            bounded(&error, 64),
            if said.is_empty() {
                String::new()
            } else {
                format!(": {}", bounded(&said, 300))
            }
        );
        return Err(refuse(c, source, None, reason).await);
    }
    let Some(code) = q.code else {
        let reason = "the answer has no code".to_owned();
        return Err(refuse(c, source, None, reason).await);
    };
    let code = bounded(&code, 4096);
    let nonce = pending.nonce.clone();
    let checked =
        tokio::task::spawn_blocking(move || p.finish(code, &nonce, pending.pkce_verifier))
            .await
            .map_err(|e| ConsoleError::Internal(e.to_string()))?;
    let who = match checked {
        Ok(who) => who,
        // The provider or its keys out of reach, or the collector's own files: not the
        // visitor's doing, so not counted against their address.
        Err(
            e @ (SsoError::Unavailable(_)
            | SsoError::Discovery { .. }
            | SsoError::Secret { .. }
            | SsoError::Ca { .. }),
        ) => return Err(unavailable(e)),
        Err(e) => return Err(refuse(c, source, None, e.to_string()).await),
    };
    let store = c.store.clone();
    let (w, src) = (who.clone(), source.to_owned());
    let lifetime = c.config.session_lifetime;
    let outcome = super::blocking(move || sign_in(&store, &cfg, &w, &src, lifetime)).await?;
    match outcome {
        Ok(token) => Ok((token, pending.next)),
        Err(reason) => Err(refuse(c, source, Some(&who), reason).await),
    }
}

/// The log-in back-off of the callback's address: while it waits, refused before anything.
async fn admit(c: &Arc<Console>, source: &str) -> Result<(), ConsoleError> {
    let (rules, a) = (c.throttle_rules(), attempt(source));
    let Err(held) = c
        .admin(move |conn| Ok(throttle::admit(conn, &a, rules, now_us())?))
        .await?
    else {
        return Ok(());
    };
    let (refused, audit) = c.count_refusal(&held);
    if audit {
        let detail = format!(
            "single sign-on: {}; {refused} attempt(s) refused since the wait began",
            accounts::LoginRefused::Waiting.reason()
        );
        let src = source.to_owned();
        c.admin(move |conn| record_refusal(conn, &src, &detail))
            .await?;
    }
    Err(ConsoleError::Forbidden(
        "too many failed sign-ins from this address: wait a while and start again".into(),
    ))
}

/// Decides and applies: each change to an account is kept only with its own audit entry, and
/// so is the session. `Ok(Err(reason))`: refused (the caller records it).
fn sign_in(
    store: &Store,
    cfg: &crate::config::SsoConfig,
    who: &Identity,
    source: &str,
    lifetime: std::time::Duration,
) -> Result<Result<String, String>, ConsoleError> {
    let outcome = store.admin(|conn| -> Result<Outcome, ConsoleError> {
        let linked = sso::linked(conn, &who.issuer, &who.subject)?;
        let by_email = match (&linked, &who.email) {
            (None, Some(e)) => sso::unlinked_with_email(conn, e)?,
            _ => Vec::new(),
        };
        Ok(decide::decide(
            cfg,
            who,
            linked.as_ref(),
            &by_email,
            |name| sso::name_taken(conn, name).unwrap_or(true),
        ))
    })?;
    let system = Actor {
        name: SSO_ACTOR.into(),
        role: "system".into(),
        source: source.to_owned(),
    };
    let object = |u: &str| format!("staff:{u}");
    let username = match outcome {
        Outcome::Refuse(reason) => return Ok(Err(reason)),
        Outcome::Create {
            username,
            role,
            group,
        } => {
            let entry = Audit::new("staff.create", object(&username)).detail(format!(
                "{}; by single sign-on from the provider's group {group}",
                super::users::created_detail(role, false)
            ));
            store.audited(&system, |tx| -> Result<_, ConsoleError> {
                let email = who.email.as_deref().unwrap_or_default();
                let (issuer, subject) = (&who.issuer, &who.subject);
                let new = sso::NewLinked {
                    username: &username,
                    display_name: &who.name,
                    email,
                    role,
                    issuer,
                    subject,
                };
                sso::create_linked(&tx.admin(), &new)?;
                Ok(((), entry))
            })?;
            username
        }
        Outcome::SignIn {
            username,
            link,
            role_change,
        } => {
            if link {
                let entry = Audit::new("staff.sso_link", object(&username)).detail(format!(
                    "linked to {} subject {} by its verified e-mail",
                    who.issuer, who.subject
                ));
                store.audited(&system, |tx| -> Result<_, ConsoleError> {
                    sso::link(&tx.admin(), &username, &who.issuer, &who.subject)?;
                    Ok(((), entry))
                })?;
            }
            if let Some((from, to)) = role_change {
                let entry = Audit::new("staff.update", object(&username))
                    .detail(format!("role {from} -> {to} from the provider's groups"));
                store.audited(&system, |tx| -> Result<_, ConsoleError> {
                    sso::set_role_from_groups(&tx.admin(), &username, to)?;
                    Ok(((), entry))
                })?;
            }
            username
        }
    };
    let account = store
        .admin(|conn| accounts::get(conn, &username))?
        .ok_or_else(|| ConsoleError::Internal(format!("account {username} vanished")))?;
    let me = Actor {
        name: username.clone(),
        role: account.role.as_str().into(),
        source: source.to_owned(),
    };
    let entry =
        Audit::new("login", object(&username)).detail(format!("single sign-on: {}", who.issuer));
    let token = store.audited(&me, |tx| -> Result<_, ConsoleError> {
        let (token, _csrf) = accounts::open_session(&tx.admin(), &username, lifetime, source)?;
        Ok((token, entry))
    })?;
    Ok(Ok(token))
}

/// At most `max` bytes of what the provider or the browser sent, without control characters.
pub(crate) fn bounded(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].chars().filter(|c| !c.is_control()).collect()
}
