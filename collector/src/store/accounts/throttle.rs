//! Log-in back-off, kept in the database so that it holds when several collectors share one.
//!
//! Failures are counted under three keys: the typed name from one address, the name from
//! anywhere, and the address whatever the name. Each key allows some failures free, then makes
//! the next attempt wait, doubling from `FIRST_WAIT` up to the configured longest wait. While a
//! key waits, attempts are refused before any password is checked, so guessing costs the
//! collector almost nothing. Names that match no account are counted like real ones, so the
//! back-off says nothing about which names exist.
//!
//! The name-and-address key starts first, so a pupil guessing a teacher's password from a
//! classroom machine slows only their own guessing; the teacher, logging in from elsewhere, is
//! held up only once the name as a whole has seen many more failures (a spread-out attack).
//! Names are kept as a digest: what was typed into the name box is sometimes a password.

use crate::store::Admin;
use crate::store::db::{OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::time::Duration;

const FIRST_WAIT: Duration = Duration::from_secs(30);

/// How many failures each key allows before it waits, as a multiple of `max_failed_logins`.
const NAME_ANYWHERE: u32 = 4;
const ADDRESS_ANY_NAME: u32 = 4;

#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Failures of one name from one address before it waits (`console.max_failed_logins`).
    pub free_failures: u32,
    /// The longest wait (`console.lockout`).
    pub longest_wait: Duration,
}

/// One log-in attempt: the typed name and the address it came from.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// None: only the address key is counted ([`Attempt::scoped`]: a single sign-on answer
    /// names nobody before it is checked, and one key shared by every sign-on would let anyone
    /// hold up everyone's).
    name: Option<String>,
    addr: String,
}

impl Attempt {
    pub fn new(typed_name: &str, addr: &str) -> Self {
        Self {
            name: Some(name_digest(typed_name)),
            addr: addr.to_owned(),
        }
    }

    /// An attempt counted only under `scope` from its address, apart from password log-ins
    /// (so a flood of one kind holds up neither the other kind nor other addresses).
    pub fn scoped(scope: &str, addr: &str) -> Self {
        Self {
            name: None,
            addr: format!("{scope} {addr}"),
        }
    }

    /// (name, address, failures allowed) for each key, most specific first.
    fn keys(&self, rules: Rules) -> Vec<(&str, &str, u32)> {
        let free = rules.free_failures.max(1);
        let address = (
            "",
            self.addr.as_str(),
            free.saturating_mul(ADDRESS_ANY_NAME),
        );
        match &self.name {
            Some(name) => vec![
                (name, &self.addr, free),
                (name, "", free.saturating_mul(NAME_ANYWHERE)),
                address,
            ],
            None => vec![address],
        }
    }
}

/// The first 12 hex digits of the SHA-256 of a typed name: enough to see repeated attempts with
/// the same text, too short to confirm a guess at a password typed into the name box.
pub fn name_digest(typed: &str) -> String {
    hex::encode(&Sha256::digest(typed.as_bytes())[..6])
}

/// The wait after `failures` failures on a key that allows `free` of them.
fn wait_after(failures: u32, free: u32, rules: Rules) -> Option<Duration> {
    let over = failures.checked_sub(free)?;
    let wait = FIRST_WAIT.saturating_mul(1u32 << over.min(20));
    Some(wait.min(rules.longest_wait.max(Duration::from_secs(1))))
}

/// Refused before any check: a key is waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub retry_after: Duration,
    /// Which wait refused it: the key and when its wait ends.
    wait: (String, String, i64),
}

/// Whether the attempt may be checked now. Only reads: a flood of refused guesses must not
/// take the database's one writer from staff at work (SQLite's busy wait is not fair, and a
/// write per guess once held a staff request back for seconds). [`Refusals`] counts them.
pub fn admit(
    tx: &Admin<'_>,
    attempt: &Attempt,
    rules: Rules,
    now_us: i64,
) -> crate::store::Result<Result<(), Held>> {
    let conn = tx.conn;
    for (name, addr, _) in attempt.keys(rules) {
        let until: Option<i64> = conn
            .prepare_cached(
                "SELECT until_at FROM login_throttle WHERE name = ?1 AND addr = ?2 AND until_at > ?3",
            )?
            .query_row(params![name, addr, now_us], |r| r.get(0))
            .optional()?;
        if let Some(until) = until {
            return Ok(Err(Held {
                retry_after: Duration::from_micros((until - now_us).max(0) as u64),
                wait: (name.to_owned(), addr.to_owned(), until),
            }));
        }
    }
    Ok(Ok(()))
}

/// Attempts refused unchecked, per waiting key, in this collector's memory: only for sparing
/// the trail (a row at the 1st, 10th, 100th ... refusal of a wait), so a count that restarts
/// with the collector, or is kept apart by each of several, costs a few rows and nothing else.
/// A wait lengthened by a failure checked meanwhile is the same wait: its count goes on.
#[derive(Debug, Default)]
pub struct Refusals {
    /// (name, address) → (refused so far, when the wait ends).
    counts: std::collections::HashMap<(String, String), (u64, i64)>,
}

/// Waiting keys counted at once; past it, ended waits are forgotten, then everything (a flood
/// of distinct keys has already paid a checked failure, and its own audit row, for each).
const MAX_WAITS_COUNTED: usize = 10_000;

impl Refusals {
    /// Counts one refusal of `held`'s wait: how many that wait has refused here, this one
    /// included, and whether this one gets its own audit row.
    pub fn count(&mut self, held: &Held, now_us: i64) -> (u64, bool) {
        let (name, addr, until) = &held.wait;
        let key = (name.clone(), addr.clone());
        if self.counts.len() >= MAX_WAITS_COUNTED && !self.counts.contains_key(&key) {
            self.counts.retain(|_, (_, until)| *until > now_us);
            if self.counts.len() >= MAX_WAITS_COUNTED {
                self.counts.clear();
            }
        }
        let (n, ends) = self.counts.entry(key).or_insert((0, *until));
        if *ends <= now_us {
            *n = 0;
        }
        *n += 1;
        *ends = (*ends).max(*until);
        (*n, crate::sparse_mark(*n))
    }
}

/// Counts a failed check on every key; returns the longest wait it starts, if any.
pub fn failed(
    tx: &Admin<'_>,
    attempt: &Attempt,
    rules: Rules,
    now_us: i64,
) -> crate::store::Result<Option<Duration>> {
    let conn = tx.conn;
    let mut longest: Option<Duration> = None;
    for (name, addr, free) in attempt.keys(rules) {
        let failures: i64 = conn
            .prepare_cached(
                "INSERT INTO login_throttle(name, addr, failures, first_at, last_at, until_at, refused)
                 VALUES (?1, ?2, 1, ?3, ?3, 0, 0)
                 ON CONFLICT(name, addr) DO UPDATE SET failures = login_throttle.failures + 1, last_at = ?3
                 RETURNING failures",
            )?
            .query_row(params![name, addr, now_us], |r| r.get(0))?;
        if let Some(wait) = wait_after(failures.clamp(0, u32::MAX as i64) as u32, free, rules) {
            conn.prepare_cached(
                "UPDATE login_throttle SET until_at = ?3 WHERE name = ?1 AND addr = ?2",
            )?
            .execute(params![
                name,
                addr,
                now_us.saturating_add(wait.as_micros() as i64)
            ])?;
            longest = longest.max(Some(wait));
        }
    }
    Ok(longest)
}

/// A successful log-in clears its name's keys. The address key stays: one right password
/// must not wipe out a spray of guesses at other names from the same address.
pub fn succeeded(tx: &Admin<'_>, attempt: &Attempt) -> crate::store::Result<()> {
    let Some(name) = &attempt.name else {
        return Ok(());
    };
    tx.conn
        .prepare_cached("DELETE FROM login_throttle WHERE name = ?1")?
        .execute([name])?;
    Ok(())
}

/// An administrator's password reset lifts every wait on the account's name.
pub fn clear_name(tx: &Admin<'_>, username: &str) -> crate::store::Result<()> {
    let conn = tx.conn;
    conn.prepare_cached("DELETE FROM login_throttle WHERE name = ?1")?
        .execute([name_digest(username)])?;
    Ok(())
}

/// Forgets keys untouched for a day and no longer waiting.
pub fn prune(tx: &Admin<'_>, now_us: i64) -> crate::store::Result<usize> {
    let conn = tx.conn;
    Ok(conn.execute(
        "DELETE FROM login_throttle WHERE until_at <= ?1 AND last_at < ?1 - 86400000000",
        [now_us],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::Connection;

    const RULES: Rules = Rules {
        free_failures: 3,
        longest_wait: Duration::from_secs(15 * 60),
    };

    fn db() -> (tempfile::TempDir, Connection) {
        crate::store::test_db()
    }

    #[test]
    fn one_name_from_one_address_waits_after_its_free_failures_and_doubles() {
        let (_d, conn) = db();
        let a = Attempt::new("head", "10.0.0.5");
        let mut now = 1_000_000_000;
        for _ in 0..2 {
            assert_eq!(
                failed(&crate::store::Admin::test(&conn), &a, RULES, now).unwrap(),
                None
            );
        }
        assert_eq!(
            failed(&crate::store::Admin::test(&conn), &a, RULES, now).unwrap(),
            Some(FIRST_WAIT)
        );
        let mut refusals = Refusals::default();
        let held = admit(&crate::store::Admin::test(&conn), &a, RULES, now + 1)
            .unwrap()
            .unwrap_err();
        assert!(held.retry_after <= FIRST_WAIT);
        assert_eq!(refusals.count(&held, now + 1), (1, true));
        for n in 2..=100u64 {
            let held = admit(&crate::store::Admin::test(&conn), &a, RULES, now + 2)
                .unwrap()
                .unwrap_err();
            assert_eq!(refusals.count(&held, now + 2), (n, n == 10 || n == 100));
        }
        // The same name from another address is not held: only that address guessed.
        assert!(
            admit(
                &crate::store::Admin::test(&conn),
                &Attempt::new("head", "10.0.0.9"),
                RULES,
                now + 1
            )
            .unwrap()
            .is_ok()
        );
        now += FIRST_WAIT.as_micros() as i64;
        assert!(
            admit(&crate::store::Admin::test(&conn), &a, RULES, now)
                .unwrap()
                .is_ok()
        );
        assert_eq!(
            failed(&crate::store::Admin::test(&conn), &a, RULES, now).unwrap(),
            Some(FIRST_WAIT * 2)
        );
        for _ in 0..30 {
            failed(&crate::store::Admin::test(&conn), &a, RULES, now).unwrap();
        }
        assert_eq!(
            failed(&crate::store::Admin::test(&conn), &a, RULES, now).unwrap(),
            Some(RULES.longest_wait)
        );
        // A reset lifts the name's waits, not the address's: 35 failures came from it.
        clear_name(&crate::store::Admin::test(&conn), "head").unwrap();
        assert!(
            admit(&crate::store::Admin::test(&conn), &a, RULES, now)
                .unwrap()
                .is_err()
        );
        assert!(
            admit(
                &crate::store::Admin::test(&conn),
                &Attempt::new("head", "10.0.0.7"),
                RULES,
                now
            )
            .unwrap()
            .is_ok()
        );
    }

    #[test]
    fn a_spread_attack_holds_the_name_and_a_spray_holds_the_address() {
        let (_d, conn) = db();
        let now = 1_000_000_000;
        // 12 failures on one name from 12 addresses: the name as a whole waits.
        for i in 0..12 {
            failed(
                &crate::store::Admin::test(&conn),
                &Attempt::new("head", &format!("10.0.1.{i}")),
                RULES,
                now,
            )
            .unwrap();
        }
        assert!(
            admit(
                &crate::store::Admin::test(&conn),
                &Attempt::new("head", "10.9.9.9"),
                RULES,
                now
            )
            .unwrap()
            .is_err()
        );
        // 12 names, one failure each, from one address: the address waits, for any name,
        // and unknown names count like real ones.
        for i in 0..12 {
            failed(
                &crate::store::Admin::test(&conn),
                &Attempt::new(&format!("nobody{i}"), "10.0.2.1"),
                RULES,
                now,
            )
            .unwrap();
        }
        assert!(
            admit(
                &crate::store::Admin::test(&conn),
                &Attempt::new("someone-else", "10.0.2.1"),
                RULES,
                now
            )
            .unwrap()
            .is_err()
        );
        // Success clears the name, not the address.
        succeeded(
            &crate::store::Admin::test(&conn),
            &Attempt::new("head", "10.0.1.0"),
        )
        .unwrap();
        assert!(
            admit(
                &crate::store::Admin::test(&conn),
                &Attempt::new("head", "10.9.9.9"),
                RULES,
                now
            )
            .unwrap()
            .is_ok()
        );
        assert!(
            admit(
                &crate::store::Admin::test(&conn),
                &Attempt::new("x", "10.0.2.1"),
                RULES,
                now
            )
            .unwrap()
            .is_err()
        );
        assert_eq!(
            prune(&crate::store::Admin::test(&conn), now + 2 * 86_400_000_000).unwrap(),
            37
        );
    }

    #[test]
    fn names_are_kept_only_as_digests() {
        let (_d, conn) = db();
        failed(
            &crate::store::Admin::test(&conn),
            &Attempt::new("my secret password", "::1"),
            RULES,
            1,
        )
        .unwrap();
        let names: Vec<String> = conn
            .prepare("SELECT name FROM login_throttle")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(names.iter().all(|n| !n.contains("secret")), "{names:?}");
    }

    #[test]
    fn a_lengthened_wait_keeps_its_count_and_a_new_wait_starts_again() {
        let held = |until| Held {
            retry_after: Duration::ZERO,
            wait: ("n".into(), "a".into(), until),
        };
        let mut r = Refusals::default();
        assert_eq!(r.count(&held(100), 10), (1, true));
        for n in 2..=9 {
            assert_eq!(r.count(&held(100), 20), (n, false));
        }
        // A failure checked meanwhile lengthened the wait: still one wait, its 10th refusal.
        assert_eq!(r.count(&held(500), 30), (10, true));
        // That wait ended; the next one starts its own count, with its own first row.
        assert_eq!(r.count(&held(900), 600), (1, true));
    }
}
