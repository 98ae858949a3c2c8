//! Checking a log-in: back-off first, the argon2 check off the database lock, then the
//! counters, the session and the audit row.
//!
//! Guessing must not degrade the console for everyone else: the slow check never holds the
//! database, only a few run at once, and an attempt that has to wait is refused before any
//! check at all. The trail records every checked failure, but attempts refused while waiting
//! only at the 1st, 10th, 100th ... so a flood of guesses cannot flood the trail.

use super::{Console, ConsoleError};
use crate::store::accounts::{self, LoginRefused, throttle};
use crate::store::audit::{self, Actor, Record};
use crate::store::{Admin, now_us};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Deserialize)]
pub struct LoginForm {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub totp: Option<String>,
    #[serde(default)]
    pub next: Option<String>,
}

pub const LOGIN_REFUSED: &str = "Wrong user name, password or one-time code, or too many \
    failed attempts: after several, further attempts must wait a while \u{2014} an administrator's \
    password reset lets the account in at once.";

/// How long a log-in waits for one of the argon2 slots before it is turned away.
const CHECK_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// Checks credentials, audits the attempt either way, and opens a session. Returns the account,
/// the session token and the CSRF token.
pub async fn log_in(
    c: &Arc<Console>,
    form: LoginForm,
    source: String,
) -> Result<(accounts::Account, String, String), ConsoleError> {
    let rules = c.throttle_rules();
    let attempt = throttle::Attempt::new(&form.username, &source);
    let LoginForm {
        username,
        password,
        totp,
        ..
    } = form;

    let (candidate, password_ok) = match c.admit_and_check(&attempt, &username, password).await? {
        Ok(checked) => checked,
        Err(held) => {
            let (refused, audit) = c.count_refusal(&held);
            if audit {
                let detail = format!(
                    "{}; {} attempt(s) refused since the wait began; retry after {}",
                    LoginRefused::Waiting.reason(),
                    refused,
                    humantime::format_duration(Duration::from_secs(held.retry_after.as_secs()))
                );
                let (name, src) = (username.clone(), source.clone());
                c.admin(move |conn| audit_failure(conn, &name, &src, &detail))
                    .await?;
            }
            return Err(ConsoleError::Forbidden(LOGIN_REFUSED.into()));
        }
    };

    let lifetime = c.config.session_lifetime;
    c.admin(move |conn| {
        let totp = totp.as_deref().filter(|t| !t.is_empty());
        match candidate.conclude(conn, password_ok, Some(totp))? {
            Ok(account) => {
                throttle::succeeded(conn, &attempt)?;
                let (token, csrf) =
                    accounts::open_session(conn, &account.username, lifetime, &source)?;
                audit::append(
                    conn,
                    &Actor {
                        name: account.username.clone(),
                        role: account.role.as_str().into(),
                        source: source.clone(),
                    },
                    &Record {
                        action: "login",
                        object: &format!("staff:{}", account.username),
                        ..Default::default()
                    },
                )?;
                Ok((account, token, csrf))
            }
            Err(refused) => {
                let wait = throttle::failed(conn, &attempt, rules, now_us())?;
                let detail = match wait {
                    Some(w) => format!(
                        "{}; further attempts wait {}",
                        refused.reason(),
                        humantime::format_duration(w)
                    ),
                    None => refused.reason().to_owned(),
                };
                audit_failure(conn, &username, &source, &detail)?;
                // One message for every refusal: which names exist, or are disabled or waiting,
                // is nobody's business before logging in. The trail keeps the real reason.
                Err(ConsoleError::Forbidden(LOGIN_REFUSED.into()))
            }
        }
    })
    .await
}

/// A `login.failed` row. A name that matches no account is often a password typed into the
/// wrong box, and the trail is append-only: it keeps only a short digest of such a name, enough
/// to see repeated attempts with the same text.
fn audit_failure(
    conn: &Admin<'_>,
    typed_name: &str,
    source: &str,
    detail: &str,
) -> Result<(), ConsoleError> {
    let known = accounts::get(conn, typed_name)?.is_some();
    let (actor, object, detail) = if known {
        (
            Actor {
                name: typed_name.to_owned(),
                role: "unknown".into(),
                source: source.to_owned(),
            },
            format!("staff:{typed_name}"),
            detail.to_owned(),
        )
    } else {
        (
            Actor {
                name: "(unknown)".into(),
                role: "unknown".into(),
                source: source.to_owned(),
            },
            "staff:(unknown)".to_owned(),
            format!(
                "{detail}; name sha256:{}",
                throttle::name_digest(typed_name)
            ),
        )
    };
    audit::append(
        conn,
        &actor,
        &Record {
            action: "login.failed",
            object: &object,
            detail: &detail,
            ..Default::default()
        },
    )?;
    Ok(())
}

impl Console {
    /// Counts an attempt refused while its key waits: how many that wait has refused, and
    /// whether this one gets its own audit row.
    pub(crate) fn count_refusal(&self, held: &throttle::Held) -> (u64, bool) {
        self.refusals
            .lock()
            .map_or((0, true), |mut r| r.count(held, now_us()))
    }

    /// The first two steps of every password check, log-in or confirmation: quickly, under the
    /// database lock, whether the attempt must wait (refused before any check, `Err`) and what
    /// it is checked against; then the argon2 check itself, off the lock. The caller concludes
    /// (one-time code, counters, audit).
    pub(crate) async fn admit_and_check(
        self: &Arc<Self>,
        attempt: &throttle::Attempt,
        username: &str,
        password: String,
    ) -> Result<Result<(accounts::Candidate, bool), throttle::Held>, ConsoleError> {
        let rules = self.throttle_rules();
        let (a, name) = (attempt.clone(), username.to_owned());
        let admitted = self
            .admin(
                move |conn| match throttle::admit(conn, &a, rules, now_us())? {
                    Ok(()) => Ok(Ok(accounts::candidate(conn, &name)?)),
                    Err(held) => Ok(Err(held)),
                },
            )
            .await?;
        match admitted {
            Ok(candidate) => Ok(Ok(self.check_password(candidate, password).await?)),
            Err(held) => Ok(Err(held)),
        }
    }

    /// Runs the argon2 check on a blocking thread, one per core at a time; a check that waits
    /// too long for a slot is turned away rather than queued without end.
    async fn check_password(
        self: &Arc<Self>,
        candidate: accounts::Candidate,
        password: String,
    ) -> Result<(accounts::Candidate, bool), ConsoleError> {
        let slot = tokio::time::timeout(
            CHECK_QUEUE_WAIT,
            Arc::clone(&self.password_checks).acquire_owned(),
        )
        .await
        .map_err(|_| ConsoleError::Busy("too many log-ins at once; try again shortly".into()))?
        .map_err(|_| ConsoleError::Internal("password checks closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let ok = candidate.password_matches(&password);
            drop(slot);
            (candidate, ok)
        })
        .await
        .map_err(|e| ConsoleError::Internal(format!("password check failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::accounts::{NewAccount, Role};

    fn console(max_failed_logins: u32) -> (tempfile::TempDir, Arc<Console>) {
        let dir = tempfile::tempdir().unwrap();
        drop(
            crate::store::Store::create(dir.path(), &crate::store::StoreConfig::sqlite()).unwrap(),
        );
        let policy = invigilator_policy::Policy::parse(invigilator_policy::DEFAULT_POLICY).unwrap();
        let config = crate::config::ConsoleConfig {
            max_failed_logins,
            ..Default::default()
        };
        let c = Console::new(
            crate::store::Store::open(dir.path(), &crate::store::StoreConfig::sqlite()).unwrap(),
            config,
            Arc::new(arc_swap::ArcSwap::from_pointee(policy)),
        );
        (dir, c)
    }

    fn add(c: &Console, name: &str) {
        let conn = crate::store::test_open(c.data_dir());
        accounts::create(
            &crate::store::Admin::test(&conn),
            &NewAccount {
                username: name,
                role: Role::Dsl,
                is_admin: false,
                password: "a long enough password",
                display_name: "",
                email: "",
                must_change_password: false,
            },
        )
        .unwrap();
    }

    fn form(username: &str, password: &str) -> LoginForm {
        LoginForm {
            username: username.into(),
            password: password.into(),
            totp: None,
            next: None,
        }
    }

    fn trail(c: &Console) -> Vec<audit::Entry> {
        let conn = crate::store::test_open(c.data_dir());
        let f = audit::Filter {
            limit: 1000,
            ..Default::default()
        };
        audit::list(&crate::store::Audited::test(&conn), &f).unwrap()
    }

    #[tokio::test]
    async fn every_refusal_reads_the_same_and_the_trail_keeps_the_reason() {
        let (_d, c) = console(3);
        add(&c, "jo");
        add(&c, "sam");
        {
            let conn = crate::store::test_open(c.data_dir());
            accounts::set_disabled(&crate::store::Admin::test(&conn), "sam", true).unwrap();
        }
        let mut messages = Vec::new();
        // Wrong passwords until the name waits, the right one while it waits, a disabled
        // account, an unknown name.
        let attempts = (0..3).map(|_| form("jo", "not the password")).chain([
            form("jo", "a long enough password"),
            form("sam", "a long enough password"),
            form("nobody", "x"),
        ]);
        for f in attempts {
            let err = log_in(&c, f, "192.0.2.1".into()).await.unwrap_err();
            messages.push(err.to_string());
        }
        messages.dedup();
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(messages[0].contains(LOGIN_REFUSED), "{}", messages[0]);
        let reasons: Vec<String> = trail(&c).into_iter().map(|e| e.detail).collect();
        for r in [
            "wrong password; further attempts wait 30s",
            "refused unchecked",
            "account disabled",
            "unknown user",
        ] {
            assert!(reasons.iter().any(|d| d.contains(r)), "{r}: {reasons:#?}");
        }
        // From another address, the right password gets in: one address guessing does not
        // lock the account for everyone.
        assert!(
            log_in(&c, form("jo", "a long enough password"), "192.0.2.7".into())
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_flood_of_guesses_is_refused_unchecked_and_audited_sparingly() {
        let (_d, c) = console(2);
        add(&c, "head");
        for _ in 0..2 {
            log_in(&c, form("head", "guess"), "192.0.2.1".into())
                .await
                .unwrap_err();
        }
        let before = trail(&c).len();
        let started = std::time::Instant::now();
        for _ in 0..200 {
            log_in(&c, form("head", "guess"), "192.0.2.1".into())
                .await
                .unwrap_err();
        }
        // 200 attempts without one argon2 check between them (each takes tens of ms).
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let added = trail(&c).len() - before;
        assert_eq!(added, 3, "rows at the 1st, 10th and 100th refused attempt");
    }

    #[tokio::test]
    async fn a_password_typed_as_a_user_name_is_not_kept() {
        let (_d, c) = console(5);
        let typed = "Tr0ub4dor&3-secret";
        let err = log_in(&c, form(typed, "x"), "192.0.2.1".into())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(LOGIN_REFUSED));
        let e = trail(&c).remove(0);
        assert_eq!(
            (e.action.as_str(), e.object.as_str()),
            ("login.failed", "staff:(unknown)")
        );
        let all = serde_json::to_string(&e).unwrap();
        assert!(!all.contains(typed), "{all}");
        let digest = throttle::name_digest(typed);
        assert_eq!(digest.len(), 12);
        assert!(e.detail.contains(&digest), "{}", e.detail);
        // The same text gives the same digest, so repeated attempts can be matched up.
        log_in(&c, form(typed, "y"), "192.0.2.1".into())
            .await
            .unwrap_err();
        assert_eq!(trail(&c).remove(0).detail, e.detail);
    }
}
