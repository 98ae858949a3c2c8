//! Staff accounts for the console: roles, argon2id passwords, optional TOTP, lock-out after
//! repeated failures, and log-in sessions (only a hash of the cookie's token is stored).

pub mod sso;
pub mod throttle;

use crate::store::Admin;
use crate::store::db::{Connection, OptionalExtension, params};
use crate::store::now_us;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What a member of staff does with the system; every console endpoint names the roles it
/// serves (see `console::routes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Technical staff: alerts' metadata, triage, agents' health, runs checks.
    Technician,
    /// Designated Safeguarding Lead / Online Safety Lead: full detail, the incident log.
    Dsl,
    /// Headteacher and senior leaders: reports, requests checks.
    Leadership,
    /// Governors: read-only reports and incident-log summaries.
    Governor,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Technician,
        Role::Dsl,
        Role::Leadership,
        Role::Governor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Technician => "technician",
            Role::Dsl => "dsl",
            Role::Leadership => "leadership",
            Role::Governor => "governor",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Role::Technician => "Technician",
            Role::Dsl => "Designated Safeguarding Lead",
            Role::Leadership => "Leadership",
            Role::Governor => "Governor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AccountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| AccountError::BadRole(s.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0:?} is not a role: use technician, dsl, leadership or governor")]
    BadRole(String),
    #[error(
        "user name {0:?} must be 1 to 64 letters, digits, '.', '-', '_' or '@', starting with a letter or digit"
    )]
    BadUsername(String),
    #[error("the password must be at least {MIN_PASSWORD} characters")]
    WeakPassword,
    #[error("an account named {0:?} already exists")]
    Exists(String),
    #[error("no account named {0:?}")]
    NoSuchUser(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("database error: {0}")]
    Sql(#[from] crate::store::db::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

pub const MIN_PASSWORD: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct Account {
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub role: Role,
    pub is_admin: bool,
    pub must_change_password: bool,
    pub totp_enabled: bool,
    pub disabled: bool,
}

fn check_username(name: &str) -> Result<(), AccountError> {
    if valid_username(name) {
        Ok(())
    } else {
        Err(AccountError::BadUsername(name.to_owned()))
    }
}

/// 1 to 64 ASCII letters, digits, '.', '-', '_' or '@', starting with a letter or digit.
pub fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_@".contains(c))
}

pub fn hash_password(password: &str) -> Result<String, AccountError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(AccountError::WeakPassword);
    }
    let hash: Result<PasswordHash, _> =
        argon2::Argon2::default().hash_password(password.as_bytes());
    hash.map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

fn password_matches(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A password good enough to hand out once (first admin, resets): 20 characters, ~119 bits.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub struct NewAccount<'a> {
    pub username: &'a str,
    pub role: Role,
    pub is_admin: bool,
    pub password: &'a str,
    pub display_name: &'a str,
    pub email: &'a str,
    pub must_change_password: bool,
}

pub fn create(tx: &Admin<'_>, a: &NewAccount<'_>) -> Result<(), AccountError> {
    let conn = tx.conn;
    check_username(a.username)?;
    let hash = hash_password(a.password)?;
    let n = conn.execute(
        "INSERT INTO staff(username, display_name, email, role, is_admin, password_hash,
                           must_change_password, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(username) DO NOTHING",
        params![
            a.username,
            a.display_name,
            a.email,
            a.role.as_str(),
            a.is_admin,
            hash,
            a.must_change_password,
            now_us()
        ],
    )?;
    if n == 0 {
        return Err(AccountError::Exists(a.username.to_owned()));
    }
    Ok(())
}

const ACCOUNT_COLUMNS: &str = "username, display_name, email, role, is_admin,
    must_change_password, totp_secret IS NOT NULL, disabled";

fn account_from(r: &crate::store::db::Row<'_>) -> crate::store::db::Result<Account> {
    let role: String = r.get(3)?;
    Ok(Account {
        username: r.get(0)?,
        display_name: r.get(1)?,
        email: r.get(2)?,
        role: role
            .parse()
            .map_err(|e: AccountError| crate::store::db::Error::decode(3, e))?,
        is_admin: r.get(4)?,
        must_change_password: r.get(5)?,
        totp_enabled: r.get(6)?,
        disabled: r.get(7)?,
    })
}

pub fn get(tx: &Admin<'_>, username: &str) -> Result<Option<Account>, AccountError> {
    let conn = tx.conn;
    Ok(conn
        .query_row(
            &format!("SELECT {ACCOUNT_COLUMNS} FROM staff WHERE username = ?1"),
            [username],
            account_from,
        )
        .optional()?)
}

pub fn list(tx: &Admin<'_>) -> Result<Vec<Account>, AccountError> {
    let conn = tx.conn;
    let mut stmt = conn.prepare(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM staff ORDER BY username"
    ))?;
    let rows = stmt.query_map([], account_from)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Accounts with this role that can log in (e.g. the DSLs to notify).
pub fn active_with_role(tx: &Admin<'_>, role: Role) -> Result<Vec<Account>, AccountError> {
    Ok(list(tx)?
        .into_iter()
        .filter(|a| a.role == role && !a.disabled)
        .collect())
}

fn must_exist(n: usize, username: &str) -> Result<(), AccountError> {
    if n == 0 {
        Err(AccountError::NoSuchUser(username.to_owned()))
    } else {
        Ok(())
    }
}

pub fn set_password(
    tx: &Admin<'_>,
    username: &str,
    password: &str,
    must_change: bool,
) -> Result<(), AccountError> {
    let conn = tx.conn;
    let hash = hash_password(password)?;
    let n = conn.execute(
        "UPDATE staff SET password_hash = ?2, must_change_password = ?3, failed_logins = 0,
                          locked_until = NULL WHERE username = ?1",
        params![username, hash, must_change],
    )?;
    must_exist(n, username)?;
    // An administrator's reset is how a held-up account is let in at once.
    throttle::clear_name(tx, username)?;
    // A new password ends every session the old one opened.
    conn.execute(
        "DELETE FROM console_sessions WHERE username = ?1",
        [username],
    )?;
    Ok(())
}

/// What someone did to an account that matters to the two-person rule.
#[derive(Debug, Clone, Copy)]
pub enum MadeBy {
    Created,
    Reset,
}

/// Records who created an account or reset its password: `by` is a console user name, or
/// "cli" for the command line (someone with the server's files).
pub fn note_made_by(
    tx: &Admin<'_>,
    username: &str,
    what: MadeBy,
    by: &str,
) -> Result<(), AccountError> {
    let conn = tx.conn;
    let column = match what {
        MadeBy::Created => "created_by",
        MadeBy::Reset => "reset_by",
    };
    let n = conn.execute(
        &format!("UPDATE staff SET {column} = ?2 WHERE username = ?1"),
        params![username, by],
    )?;
    must_exist(n, username)
}

pub fn set_role(
    tx: &Admin<'_>,
    username: &str,
    role: Role,
    is_admin: bool,
) -> Result<(), AccountError> {
    let conn = tx.conn;
    let n = conn.execute(
        "UPDATE staff SET role = ?2, is_admin = ?3 WHERE username = ?1",
        params![username, role.as_str(), is_admin],
    )?;
    must_exist(n, username)
}

pub fn set_disabled(tx: &Admin<'_>, username: &str, disabled: bool) -> Result<(), AccountError> {
    let conn = tx.conn;
    let n = conn.execute(
        "UPDATE staff SET disabled = ?2 WHERE username = ?1",
        params![username, disabled],
    )?;
    must_exist(n, username)?;
    if disabled {
        conn.execute(
            "DELETE FROM console_sessions WHERE username = ?1",
            [username],
        )?;
    }
    Ok(())
}

/// Turns TOTP on with a new secret (returned, base32, for the authenticator app) or off.
pub fn set_totp(
    tx: &Admin<'_>,
    username: &str,
    enable: bool,
) -> Result<Option<String>, AccountError> {
    let conn = tx.conn;
    let secret = enable.then(|| totp_rs::Secret::generate().to_base32());
    let n = conn.execute(
        "UPDATE staff SET totp_secret = ?2 WHERE username = ?1",
        params![username, secret],
    )?;
    must_exist(n, username)?;
    Ok(secret)
}

/// RFC 6238 with the parameters every authenticator app uses: SHA-1, 6 digits, 30 s steps,
/// one step of clock skew either way.
pub fn totp_for(secret_b32: &str) -> Option<totp_rs::Totp> {
    let secret = totp_rs::Secret::try_from_base32(secret_b32).ok()?;
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret)
        .build()
        .ok()
}

/// Why a log-in was refused. The console shows one message for all of them (an attacker learns
/// nothing); the audit trail keeps the real reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRefused {
    UnknownUser,
    BadPassword,
    BadTotp,
    Disabled,
    /// Too many failures: the attempt was refused before any check (see [`throttle`]).
    Waiting,
}

impl LoginRefused {
    pub fn reason(&self) -> &'static str {
        match self {
            LoginRefused::UnknownUser => "unknown user",
            LoginRefused::BadPassword => "wrong password",
            LoginRefused::BadTotp => "wrong or missing one-time code",
            LoginRefused::Disabled => "account disabled",
            LoginRefused::Waiting => "refused unchecked: too many failures, waiting",
        }
    }
}

/// What a typed password is checked against: the account's hash, or one nobody knows when
/// there is no usable account, so that every refusal costs one real check and the time taken
/// says nothing about which names exist or are disabled.
pub struct Candidate {
    username: String,
    phc: String,
    totp_secret: Option<String>,
    usable: Result<Account, LoginRefused>,
}

/// Looks up what [`Candidate::password_matches`] needs. Quick: hold the database for this, not
/// for the check itself.
pub fn candidate(tx: &Admin<'_>, username: &str) -> Result<Candidate, AccountError> {
    let conn = tx.conn;
    let row: Option<(String, Option<String>)> = conn
        .query_row(
            "SELECT password_hash, totp_secret FROM staff WHERE username = ?1",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let account = get(tx, username)?;
    let (phc, totp_secret, usable) = match (row, account) {
        (Some((phc, totp)), Some(a)) if !a.disabled => (phc, totp, Ok(a)),
        (Some(_), Some(_)) => (DUMMY_HASH.into(), None, Err(LoginRefused::Disabled)),
        _ => (DUMMY_HASH.into(), None, Err(LoginRefused::UnknownUser)),
    };
    Ok(Candidate {
        username: username.to_owned(),
        phc,
        totp_secret,
        usable,
    })
}

impl Candidate {
    /// The argon2id check (tens of milliseconds and 19 MiB, on purpose): run it off the
    /// database lock and behind a concurrency limit.
    pub fn password_matches(&self, password: &str) -> bool {
        password_matches(&self.phc, password)
    }

    /// Finishes an attempt whose password was checked: then the one-time code, when the
    /// account has one and `totp_code` is asked for (None: a logged-in user confirming their
    /// password, who gave their code at log-in).
    pub fn conclude(
        self,
        tx: &Admin<'_>,
        password_ok: bool,
        totp_code: Option<Option<&str>>,
    ) -> Result<Result<Account, LoginRefused>, AccountError> {
        let conn = tx.conn;
        let account = match self.usable {
            Ok(a) => a,
            Err(refused) => return Ok(Err(refused)),
        };
        if !password_ok {
            return Ok(Err(LoginRefused::BadPassword));
        }
        if let (Some(secret), Some(totp_code)) = (self.totp_secret, totp_code) {
            let step =
                totp_for(&secret).and_then(|t| totp_code.and_then(|c| t.check_current(c.trim())));
            // RFC 6238 5.2: a code is good once; a replayed one is refused like a wrong one.
            let fresh = match step {
                Some(step) => {
                    conn.execute(
                        "UPDATE staff SET totp_last_step = ?2
                         WHERE username = ?1 AND coalesce(totp_last_step, -1) < ?2",
                        params![self.username, step as i64],
                    )? == 1
                }
                None => false,
            };
            // A million codes are fewer than most passwords: a wrong code is a failure like a
            // wrong password, or codes would be guessed without limit once the password is known.
            if !fresh {
                return Ok(Err(LoginRefused::BadTotp));
            }
        }
        Ok(Ok(account))
    }
}

/// The whole check in one call, holding `conn` throughout: for tests and the command line,
/// never for the console, which runs the argon2 step off the lock.
pub fn check(
    tx: &Admin<'_>,
    username: &str,
    password: &str,
    totp_code: Option<Option<&str>>,
) -> Result<Result<Account, LoginRefused>, AccountError> {
    let c = candidate(tx, username)?;
    let ok = c.password_matches(password);
    c.conclude(tx, ok, totp_code)
}

/// argon2id of a random password nobody knows; checked against when the user does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Kq3/5JvKp5DgG0m7Ck0s0gkk6D4Jb3Q0mF1a5x3iMgk";

/// A logged-in session, found from the cookie.
#[derive(Debug, Clone)]
pub struct Session {
    pub account: Account,
    pub csrf_token: String,
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Opens a session; returns the cookie token (shown once, never stored) and the CSRF token.
pub fn open_session(
    tx: &Admin<'_>,
    username: &str,
    lifetime: Duration,
    source: &str,
) -> Result<(String, String), AccountError> {
    let conn = tx.conn;
    let token = random_token();
    let csrf = random_token();
    let now = now_us();
    conn.execute(
        "INSERT INTO console_sessions(token_hash, username, csrf_token, created_at, expires_at,
                                      last_seen, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?4, ?6)",
        params![
            token_hash(&token),
            username,
            csrf,
            now,
            now + lifetime.as_micros() as i64,
            source
        ],
    )?;
    // Expired sessions are of no use to anyone.
    conn.execute("DELETE FROM console_sessions WHERE expires_at < ?1", [now])?;
    Ok((token, csrf))
}

/// The session a cookie token belongs to, if it is live and its account can still log in.
/// Idle sessions end after `idle`.
/// An unexpired session as stored, and whether it has been unused for longer than `idle`.
struct Live {
    username: String,
    csrf_token: String,
    last_seen: i64,
    idle: bool,
}

fn lookup(
    conn: &Connection,
    token: &str,
    idle: Duration,
    now: i64,
) -> Result<Option<Live>, AccountError> {
    Ok(conn
        .query_row(
            "SELECT username, csrf_token, last_seen FROM console_sessions
             WHERE token_hash = ?1 AND expires_at > ?2",
            params![token_hash(token), now],
            |r| {
                let last_seen: i64 = r.get(2)?;
                Ok(Live {
                    username: r.get(0)?,
                    csrf_token: r.get(1)?,
                    last_seen,
                    idle: now - last_seen > idle.as_micros() as i64,
                })
            },
        )
        .optional()?)
}

pub fn find_session(
    tx: &Admin<'_>,
    token: &str,
    idle: Duration,
) -> Result<Option<Session>, AccountError> {
    let conn = tx.conn;
    let now = now_us();
    let Some(live) = lookup(conn, token, idle, now)? else {
        return Ok(None);
    };
    if live.idle {
        close_session(tx, token)?;
        return Ok(None);
    }
    let Some(account) = get(tx, &live.username)?.filter(|a| !a.disabled) else {
        return Ok(None);
    };
    // Touching on every request would make each page view a write; a minute is precise enough.
    if now - live.last_seen > 60_000_000 {
        conn.execute(
            "UPDATE console_sessions SET last_seen = ?2 WHERE token_hash = ?1",
            params![token_hash(token), now],
        )?;
    }
    Ok(Some(Session {
        account,
        csrf_token: live.csrf_token,
    }))
}

/// Whether a session is still live, without counting this as activity (a page's live updates
/// must not keep an idle log-in open for ever). The account's current role is returned.
pub fn live_role(
    tx: &Admin<'_>,
    token: &str,
    idle: Duration,
) -> Result<Option<Role>, AccountError> {
    let conn = tx.conn;
    let Some(live) = lookup(conn, token, idle, now_us())?.filter(|l| !l.idle) else {
        return Ok(None);
    };
    Ok(get(tx, &live.username)?
        .filter(|a| !a.disabled)
        .map(|a| a.role))
}

pub fn close_session(tx: &Admin<'_>, token: &str) -> Result<(), AccountError> {
    let conn = tx.conn;
    conn.execute(
        "DELETE FROM console_sessions WHERE token_hash = ?1",
        [token_hash(token)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db;

    fn add(conn: &Connection, name: &str, role: Role) {
        create(
            &crate::store::Admin::test(conn),
            &NewAccount {
                username: name,
                role,
                is_admin: false,
                password: "correct horse battery",
                display_name: "",
                email: "",
                must_change_password: false,
            },
        )
        .unwrap();
    }

    #[test]
    fn passwords_are_stored_as_argon2id_and_checked() {
        let (_d, conn) = test_db();
        add(&conn, "tech1", Role::Technician);
        let stored: String = conn
            .query_row("SELECT password_hash FROM staff", [], |r| r.get(0))
            .unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains("correct horse"));
        let ok = check(
            &crate::store::Admin::test(&conn),
            "tech1",
            "correct horse battery",
            Some(None),
        );
        assert_eq!(ok.unwrap().unwrap().role, Role::Technician);
        let bad = check(
            &crate::store::Admin::test(&conn),
            "tech1",
            "wrong",
            Some(None),
        )
        .unwrap();
        assert_eq!(bad.unwrap_err(), LoginRefused::BadPassword);
        let nobody = check(&crate::store::Admin::test(&conn), "nobody", "x", Some(None)).unwrap();
        assert_eq!(nobody.unwrap_err(), LoginRefused::UnknownUser);
    }

    #[test]
    fn the_dummy_hash_parses_so_unknown_users_cost_a_real_check() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn bad_names_roles_and_weak_passwords_are_refused_by_name() {
        let (_d, conn) = test_db();
        let mut a = NewAccount {
            username: "<script>",
            role: Role::Dsl,
            is_admin: false,
            password: "long enough password",
            display_name: "",
            email: "",
            must_change_password: false,
        };
        assert!(matches!(
            create(&crate::store::Admin::test(&conn), &a),
            Err(AccountError::BadUsername(_))
        ));
        a.username = "dsl";
        a.password = "short";
        assert!(matches!(
            create(&crate::store::Admin::test(&conn), &a),
            Err(AccountError::WeakPassword)
        ));
        assert!("headteacher".parse::<Role>().is_err());
        a.password = "long enough password";
        create(&crate::store::Admin::test(&conn), &a).unwrap();
        assert!(matches!(
            create(&crate::store::Admin::test(&conn), &a),
            Err(AccountError::Exists(_))
        ));
    }

    #[test]
    fn totp_is_required_once_enabled() {
        let (_d, conn) = test_db();
        add(&conn, "dsl", Role::Dsl);
        let secret = set_totp(&crate::store::Admin::test(&conn), "dsl", true)
            .unwrap()
            .unwrap();
        let pw = "correct horse battery";
        let none = check(&crate::store::Admin::test(&conn), "dsl", pw, Some(None)).unwrap();
        assert_eq!(none.unwrap_err(), LoginRefused::BadTotp);
        let wrong = check(
            &crate::store::Admin::test(&conn),
            "dsl",
            pw,
            Some(Some("000000")),
        )
        .unwrap();
        // One in a million the current code really is 000000; the right code must pass anyway.
        let code = totp_for(&secret).unwrap().generate_current().to_string();
        if code != "000000" {
            assert_eq!(wrong.unwrap_err(), LoginRefused::BadTotp);
        }
        let ok = check(
            &crate::store::Admin::test(&conn),
            "dsl",
            pw,
            Some(Some(&code)),
        )
        .unwrap();
        assert!(ok.unwrap().totp_enabled);
        let replayed = check(
            &crate::store::Admin::test(&conn),
            "dsl",
            pw,
            Some(Some(&code)),
        )
        .unwrap();
        assert_eq!(replayed.unwrap_err(), LoginRefused::BadTotp);
    }

    #[test]
    fn confirming_a_password_asks_no_code() {
        let (_d, conn) = test_db();
        add(&conn, "dsl", Role::Dsl);
        set_totp(&crate::store::Admin::test(&conn), "dsl", true).unwrap();
        assert!(
            check(
                &crate::store::Admin::test(&conn),
                "dsl",
                "correct horse battery",
                None
            )
            .unwrap()
            .is_ok()
        );
        let r = check(&crate::store::Admin::test(&conn), "dsl", "guess", None).unwrap();
        assert_eq!(r.unwrap_err(), LoginRefused::BadPassword);
    }

    #[test]
    fn unknown_and_disabled_accounts_cost_a_password_check_too() {
        let (_d, conn) = test_db();
        add(&conn, "lead", Role::Leadership);
        set_disabled(&crate::store::Admin::test(&conn), "lead", true).unwrap();
        let time = |name: &str| {
            let t = std::time::Instant::now();
            let r = check(
                &crate::store::Admin::test(&conn),
                name,
                "whatever at all",
                Some(None),
            );
            (t.elapsed(), r.unwrap().unwrap_err())
        };
        let (unknown, why) = time("nobody");
        assert_eq!(why, LoginRefused::UnknownUser);
        let (disabled, why) = time("lead");
        assert_eq!(why, LoginRefused::Disabled);
        // An argon2id check (19 MiB, 2 passes) takes milliseconds on any machine; a refusal
        // without one takes microseconds. A busy machine only makes the checks slower, so a
        // fixed floor cannot fail for the wrong reason.
        let floor = std::time::Duration::from_millis(2);
        assert!(
            unknown >= floor && disabled >= floor,
            "{unknown:?} {disabled:?}"
        );
    }

    #[test]
    fn sessions_store_only_a_hash_and_end_with_a_password_change() {
        let (_d, conn) = test_db();
        add(&conn, "gov", Role::Governor);
        let (token, csrf) = open_session(
            &crate::store::Admin::test(&conn),
            "gov",
            Duration::from_secs(3600),
            "::1",
        )
        .unwrap();
        let stored: Vec<u8> = conn
            .query_row("SELECT token_hash FROM console_sessions", [], |r| r.get(0))
            .unwrap();
        assert_ne!(stored, token.as_bytes());
        let s = find_session(
            &crate::store::Admin::test(&conn),
            &token,
            Duration::from_secs(60),
        )
        .unwrap()
        .unwrap();
        assert_eq!((s.account.role, s.csrf_token), (Role::Governor, csrf));
        assert!(
            find_session(
                &crate::store::Admin::test(&conn),
                "forged",
                Duration::from_secs(60)
            )
            .unwrap()
            .is_none()
        );
        set_password(
            &crate::store::Admin::test(&conn),
            "gov",
            "a brand new password",
            false,
        )
        .unwrap();
        assert!(
            find_session(
                &crate::store::Admin::test(&conn),
                &token,
                Duration::from_secs(60)
            )
            .unwrap()
            .is_none()
        );
    }
}
