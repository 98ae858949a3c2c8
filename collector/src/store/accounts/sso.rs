//! What single sign-on keeps: the sign-ins under way (their state, nonce and PKCE verifier,
//! single-use and short-lived) and which staff account a provider's person is.
//!
//! A sign-in under way is found by the SHA-256 of its `state` together with the SHA-256 of the
//! browser's own cookie, so a code and state carried to another browser (a login-CSRF, or a
//! link passed on) find nothing, and using one deletes it: a replayed callback finds nothing.

use super::{Account, AccountError, Role, get, hash_password};
use crate::store::db::{OptionalExtension, params};
use crate::store::{Admin, now_us};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// How long a sign-in may take at the provider.
pub const PENDING_FOR: Duration = Duration::from_secs(10 * 60);
/// Sign-ins under way at once, in all and from one address; past them, new ones are refused
/// until some end or expire (the start page is public: a flood must not grow the database, and
/// one address must not take every place).
const MAX_PENDING: i64 = 20_000;
const MAX_PENDING_PER_ADDRESS: i64 = 500;

/// A sign-in started by [`begin`] and not yet finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub nonce: String,
    pub pkce_verifier: String,
    /// Where the console sends the member of staff once signed in.
    pub next: String,
}

fn digest(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Records a sign-in under way. `Ok(false)`: too many are, try later.
pub fn begin(
    tx: &Admin<'_>,
    state: &str,
    browser: &str,
    source: &str,
    p: &Pending,
) -> Result<bool, AccountError> {
    let conn = tx.conn;
    let now = now_us();
    conn.execute(
        "DELETE FROM sso_logins WHERE created_at < ?1",
        [now - PENDING_FOR.as_micros() as i64],
    )?;
    let (all, here): (i64, i64) = conn.query_row(
        "SELECT count(*), count(*) FILTER (WHERE source = ?1) FROM sso_logins",
        [source],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if all >= MAX_PENDING || here >= MAX_PENDING_PER_ADDRESS {
        return Ok(false);
    }
    conn.execute(
        "INSERT INTO sso_logins(state, browser, source, nonce, pkce_verifier, next, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            digest(state),
            digest(browser),
            source,
            p.nonce,
            p.pkce_verifier,
            p.next,
            now
        ],
    )?;
    Ok(true)
}

/// Takes the sign-in with this state, begun in this browser and not expired: once only.
pub fn take(tx: &Admin<'_>, state: &str, browser: &str) -> Result<Option<Pending>, AccountError> {
    let conn = tx.conn;
    let oldest = now_us() - PENDING_FOR.as_micros() as i64;
    Ok(conn
        .query_row(
            "DELETE FROM sso_logins WHERE state = ?1 AND browser = ?2 AND created_at >= ?3
             RETURNING nonce, pkce_verifier, next",
            params![digest(state), digest(browser), oldest],
            |r| {
                Ok(Pending {
                    nonce: r.get(0)?,
                    pkce_verifier: r.get(1)?,
                    next: r.get(2)?,
                })
            },
        )
        .optional()?)
}

/// An account and how single sign-on knows it.
#[derive(Debug, Clone)]
pub struct Known {
    pub account: Account,
    /// The sign-on created it: its role follows the provider's groups.
    pub role_from_sso: bool,
    /// Linked to a provider's person already (issuer, subject).
    pub linked: bool,
}

fn known(tx: &Admin<'_>, username: &str) -> Result<Option<Known>, AccountError> {
    let flags: Option<(bool, bool)> = tx
        .conn
        .query_row(
            "SELECT role_from_sso, sso_subject IS NOT NULL FROM staff WHERE username = ?1",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((role_from_sso, linked)) = flags else {
        return Ok(None);
    };
    Ok(get(tx, username)?.map(|account| Known {
        account,
        role_from_sso,
        linked,
    }))
}

/// The account linked to this provider's person.
pub fn linked(tx: &Admin<'_>, issuer: &str, subject: &str) -> Result<Option<Known>, AccountError> {
    let name: Option<String> = tx
        .conn
        .query_row(
            "SELECT username FROM staff WHERE sso_issuer = ?1 AND sso_subject = ?2",
            params![issuer, subject],
            |r| r.get(0),
        )
        .optional()?;
    match name {
        Some(n) => known(tx, &n),
        None => Ok(None),
    }
}

/// Accounts with this e-mail (compared without ASCII case) not linked to another person yet.
/// Account administrators and accounts with a one-time code are never among them: they are
/// the break-glass accounts, and signing on would bypass their second factor.
pub fn unlinked_with_email(tx: &Admin<'_>, email: &str) -> Result<Vec<Known>, AccountError> {
    let mut stmt = tx.conn.prepare(
        "SELECT username FROM staff WHERE email <> '' AND lower(email) = lower(?1)
         AND sso_subject IS NULL AND is_admin = 0 AND totp_secret IS NULL ORDER BY username",
    )?;
    let names: Vec<String> = stmt
        .query_map([email], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for n in names {
        out.extend(known(tx, &n)?);
    }
    Ok(out)
}

/// Links an account to the provider's person: from now on found by subject, whatever the
/// e-mail becomes.
pub fn link(
    tx: &Admin<'_>,
    username: &str,
    issuer: &str,
    subject: &str,
) -> Result<(), AccountError> {
    // Never over another person's link (two sign-ins racing for one e-mail).
    let n = tx.conn.execute(
        "UPDATE staff SET sso_issuer = ?2, sso_subject = ?3
         WHERE username = ?1 AND sso_subject IS NULL",
        params![username, issuer, subject],
    )?;
    super::must_exist(n, username)
}

/// Whether any account has this name (a sign-on account must not take a local one's).
pub fn name_taken(tx: &Admin<'_>, username: &str) -> Result<bool, AccountError> {
    Ok(get(tx, username)?.is_some())
}

/// An account the sign-on creates, linked to the provider's person.
pub struct NewLinked<'a> {
    pub username: &'a str,
    pub display_name: &'a str,
    pub email: &'a str,
    pub role: Role,
    pub issuer: &'a str,
    pub subject: &'a str,
}

/// Creates the account of a person the provider's groups give a role. Its password is random
/// and never shown: it signs in only through the provider (an administrator's reset gives it a
/// local password, for break-glass).
pub fn create_linked(tx: &Admin<'_>, a: &NewLinked<'_>) -> Result<(), AccountError> {
    super::check_username(a.username)?;
    let hash = hash_password(&super::generate_password())?;
    let n = tx.conn.execute(
        "INSERT INTO staff(username, display_name, email, role, is_admin, password_hash,
                           must_change_password, created_at, created_by, sso_issuer, sso_subject,
                           role_from_sso)
         VALUES (?1, ?2, ?3, ?4, 0, ?5, 0, ?6, '(single sign-on)', ?7, ?8, 1)
         ON CONFLICT(username) DO NOTHING",
        params![
            a.username,
            a.display_name,
            a.email,
            a.role.as_str(),
            hash,
            now_us(),
            a.issuer,
            a.subject
        ],
    )?;
    if n == 0 {
        return Err(AccountError::Exists(a.username.to_owned()));
    }
    Ok(())
}

/// The role the provider's groups now give an account the sign-on created.
pub fn set_role_from_groups(
    tx: &Admin<'_>,
    username: &str,
    role: Role,
) -> Result<(), AccountError> {
    let n = tx.conn.execute(
        "UPDATE staff SET role = ?2 WHERE username = ?1 AND role_from_sso = 1",
        params![username, role.as_str()],
    )?;
    super::must_exist(n, username)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(next: &str) -> Pending {
        Pending {
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            next: next.into(),
        }
    }

    #[test]
    fn a_sign_in_is_taken_once_and_only_by_the_browser_that_began_it() {
        let (_d, conn) = crate::store::test_db();
        let tx = Admin::test(&conn);
        assert!(begin(&tx, "state-1", "browser-a", "10.0.0.1", &pending("/alerts")).unwrap());
        assert_eq!(take(&tx, "state-1", "browser-b").unwrap(), None);
        assert_eq!(
            take(&tx, "state-1", "browser-a").unwrap(),
            Some(pending("/alerts"))
        );
        assert_eq!(take(&tx, "state-1", "browser-a").unwrap(), None, "replayed");
        // Expired: begun longer ago than a sign-in may take.
        assert!(begin(&tx, "state-2", "browser-a", "10.0.0.1", &pending("/")).unwrap());
        conn.execute(
            "UPDATE sso_logins SET created_at = created_at - 601000000",
            [],
        )
        .unwrap();
        assert_eq!(take(&tx, "state-2", "browser-a").unwrap(), None);
        // Nothing secret is kept in a form a database reader could replay.
        let stored: String = conn
            .query_row("SELECT string_agg(state, ',') FROM sso_logins", [], |r| {
                r.get::<_, Option<String>>(0).map(Option::unwrap_or_default)
            })
            .unwrap();
        assert!(!stored.contains("state-"));
    }

    #[test]
    fn accounts_are_found_by_subject_then_by_unlinked_email() {
        let (_d, conn) = crate::store::test_db();
        let tx = Admin::test(&conn);
        super::super::create(
            &tx,
            &super::super::NewAccount {
                username: "bob",
                role: Role::Leadership,
                is_admin: false,
                password: "a long enough password",
                display_name: "",
                email: "Bob@School.example",
                must_change_password: false,
            },
        )
        .unwrap();
        super::super::create(
            &tx,
            &super::super::NewAccount {
                username: "break-glass",
                role: Role::Technician,
                is_admin: true,
                password: "a long enough password",
                display_name: "",
                email: "bob@school.example",
                must_change_password: false,
            },
        )
        .unwrap();
        // The administrator with the same e-mail is never signed on to: only bob.
        let found = unlinked_with_email(&tx, "bob@school.example").unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].account.username, "bob");
        assert!(!found[0].role_from_sso && !found[0].linked);
        link(&tx, "bob", "https://idp", "sub-1").unwrap();
        assert!(
            link(&tx, "bob", "https://idp", "sub-9").is_err(),
            "a link is never replaced"
        );
        assert!(
            unlinked_with_email(&tx, "bob@school.example")
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            linked(&tx, "https://idp", "sub-1")
                .unwrap()
                .unwrap()
                .account
                .username,
            "bob"
        );
        assert!(linked(&tx, "https://other", "sub-1").unwrap().is_none());

        let amy = NewLinked {
            username: "amy@school.example",
            display_name: "Amy",
            email: "amy@school.example",
            role: Role::Dsl,
            issuer: "https://idp",
            subject: "sub-2",
        };
        create_linked(&tx, &amy).unwrap();
        let amy = linked(&tx, "https://idp", "sub-2").unwrap().unwrap();
        assert!(amy.role_from_sso && !amy.account.is_admin);
        set_role_from_groups(&tx, "amy@school.example", Role::Technician).unwrap();
        // A pre-created account's role is the administrator's, never the groups'.
        assert!(set_role_from_groups(&tx, "bob", Role::Dsl).is_err());
        assert_eq!(get(&tx, "bob").unwrap().unwrap().role, Role::Leadership);
    }
}
