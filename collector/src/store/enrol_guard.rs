//! Failed enrolments per source address, in the database so that the limit holds when several
//! collectors share one. After `MAX_FAILURES` failures in a `WINDOW`, an address's further
//! attempts are refused before any token or CSR is looked at, until the window ends.
//! Successes never count: a school enrolling a whole suite from behind one NAT address is normal.

use super::Admin;
use super::Result;
use crate::store::db::{OptionalExtension, params};

pub const WINDOW_US: i64 = 10 * 60 * 1_000_000;
pub const MAX_FAILURES: u32 = 20;

/// Whether an address may try now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Refused unchecked until `until_us`; `refused` attempts so far in this window.
    Closed {
        until_us: i64,
        refused: u64,
    },
}

pub fn gate(tx: &Admin<'_>, addr: &str, now_us: i64) -> Result<Gate> {
    let conn = tx.conn;
    let row: Option<(i64, i64)> = conn
        .prepare_cached("SELECT window_start, failures FROM enrol_failures WHERE addr = ?1")?
        .query_row([addr], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match row {
        Some((start, failures))
            if now_us < start + WINDOW_US && failures >= MAX_FAILURES as i64 =>
        {
            let refused: i64 = conn
                .prepare_cached(
                    "UPDATE enrol_failures SET refused = refused + 1 WHERE addr = ?1
                     RETURNING refused",
                )?
                .query_row([addr], |r| r.get(0))?;
            Ok(Gate::Closed {
                until_us: start + WINDOW_US,
                refused: refused.max(0) as u64,
            })
        }
        _ => Ok(Gate::Open),
    }
}

/// Counts a failure; returns the failures in the address's current window, this one included.
pub fn failed(tx: &Admin<'_>, addr: &str, now_us: i64) -> Result<u32> {
    let conn = tx.conn;
    let failures: i64 = conn
        .prepare_cached(
            "INSERT INTO enrol_failures(addr, window_start, failures, refused) VALUES (?1, ?2, 1, 0)
             ON CONFLICT(addr) DO UPDATE SET
               failures = CASE WHEN enrol_failures.window_start + ?3 <= ?2 THEN 1 ELSE enrol_failures.failures + 1 END,
               refused = CASE WHEN enrol_failures.window_start + ?3 <= ?2 THEN 0 ELSE enrol_failures.refused END,
               window_start = CASE WHEN enrol_failures.window_start + ?3 <= ?2 THEN ?2 ELSE enrol_failures.window_start END
             RETURNING failures",
        )?
        .query_row(params![addr, now_us, WINDOW_US], |r| r.get(0))?;
    Ok(failures.clamp(0, u32::MAX as i64) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_closed_after_its_failures_until_the_window_ends() {
        let (_d, conn) = crate::store::test_db();
        let t = 1_000_000_000;
        for n in 1..=MAX_FAILURES {
            assert_eq!(
                gate(&crate::store::Admin::test(&conn), "10.0.0.1", t).unwrap(),
                Gate::Open
            );
            assert_eq!(
                failed(&crate::store::Admin::test(&conn), "10.0.0.1", t).unwrap(),
                n
            );
        }
        for refused in 1..=3 {
            assert_eq!(
                gate(&crate::store::Admin::test(&conn), "10.0.0.1", t + 1).unwrap(),
                Gate::Closed {
                    until_us: t + WINDOW_US,
                    refused
                }
            );
        }
        assert_eq!(
            gate(&crate::store::Admin::test(&conn), "10.0.0.2", t).unwrap(),
            Gate::Open
        );
        assert_eq!(
            gate(&crate::store::Admin::test(&conn), "10.0.0.1", t + WINDOW_US).unwrap(),
            Gate::Open
        );
        assert_eq!(
            failed(&crate::store::Admin::test(&conn), "10.0.0.1", t + WINDOW_US).unwrap(),
            1
        );
    }
}
