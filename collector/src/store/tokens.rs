//! Enrolment tokens: created by an administrator, consumed by agents' first contact.

use super::Admin;
use super::{Result, now_us};
use crate::store::db::{OptionalExtension, TransactionBehavior, params};
use invigilator_proto::EnrollmentToken;
use rand::distr::{Alphanumeric, SampleString};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Why a token was refused. The agent is told which, so a technician can act on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("unknown enrolment token")]
    Unknown,
    #[error("enrolment token has expired")]
    Expired,
    #[error("enrolment token has no uses left")]
    UsedUp,
}

/// Creates a token bound to `group`, valid for `ttl`, usable `uses` times.
pub fn create_token(
    tx: &Admin<'_>,
    group: &str,
    ttl: Duration,
    uses: u32,
    ca_fingerprint: &str,
) -> Result<EnrollmentToken> {
    let conn = tx.conn;
    let mut rng = rand::rng();
    let token = EnrollmentToken {
        id: Alphanumeric.sample_string(&mut rng, 12),
        secret: Alphanumeric.sample_string(&mut rng, 32),
        ca_fingerprint: ca_fingerprint.to_owned(),
    };
    let now = now_us();
    conn.execute(
        "INSERT INTO enrollment_tokens(token_id, secret_hash, grp, created_at, expires_at, uses_left)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            token.id,
            token.secret_hash().to_vec(),
            group,
            now,
            now.saturating_add(ttl.as_micros() as i64),
            uses
        ],
    )?;
    Ok(token)
}

/// Checks a presented token and takes one use from it, atomically. Returns its group.
pub fn consume_token(
    tx: &Admin<'_>,
    token: &EnrollmentToken,
) -> Result<std::result::Result<String, TokenRejection>> {
    let conn = tx.conn;
    let tx = crate::store::db::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let row: Option<(Vec<u8>, String, i64, i64)> = tx
        .query_row(
            "SELECT secret_hash, grp, expires_at, uses_left FROM enrollment_tokens WHERE token_id = ?1",
            [&token.id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((hash, group, expires_at, uses_left)) = row else {
        return Ok(Err(TokenRejection::Unknown));
    };
    // A wrong secret for a known id looks exactly like an unknown token.
    if !bool::from(hash.as_slice().ct_eq(&token.secret_hash())) {
        return Ok(Err(TokenRejection::Unknown));
    }
    if expires_at <= now_us() {
        return Ok(Err(TokenRejection::Expired));
    }
    if uses_left <= 0 {
        return Ok(Err(TokenRejection::UsedUp));
    }
    tx.execute(
        "UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE token_id = ?1",
        [&token.id],
    )?;
    tx.commit()?;
    Ok(Ok(group))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn a_token_is_good_for_its_uses_then_refused() {
        let (_d, conn) = crate::store::test_db();
        let t = create_token(
            &crate::store::Admin::test(&conn),
            "staff",
            Duration::from_secs(60),
            2,
            FP,
        )
        .unwrap();
        assert_eq!(
            consume_token(&crate::store::Admin::test(&conn), &t).unwrap(),
            Ok("staff".into())
        );
        assert_eq!(
            consume_token(&crate::store::Admin::test(&conn), &t).unwrap(),
            Ok("staff".into())
        );
        assert_eq!(
            consume_token(&crate::store::Admin::test(&conn), &t).unwrap(),
            Err(TokenRejection::UsedUp)
        );
    }

    #[test]
    fn wrong_secret_and_expiry_are_refused() {
        let (_d, conn) = crate::store::test_db();
        let mut t = create_token(
            &crate::store::Admin::test(&conn),
            "staff",
            Duration::from_secs(60),
            1,
            FP,
        )
        .unwrap();
        let good = t.secret.clone();
        t.secret = "x".repeat(32);
        assert_eq!(
            consume_token(&crate::store::Admin::test(&conn), &t).unwrap(),
            Err(TokenRejection::Unknown)
        );
        t.secret = good;
        let expired = create_token(
            &crate::store::Admin::test(&conn),
            "staff",
            Duration::ZERO,
            1,
            FP,
        )
        .unwrap();
        assert_eq!(
            consume_token(&crate::store::Admin::test(&conn), &expired).unwrap(),
            Err(TokenRejection::Expired)
        );
        assert_eq!(
            consume_token(&crate::store::Admin::test(&conn), &t).unwrap(),
            Ok("staff".into())
        );
    }
}
