//! Enrolment tokens.
//!
//! A token is `inv1.<id>.<secret>.<ca-sha256-hex>`: the id finds the row in the collector's
//! database, the secret proves possession (the collector keeps only its SHA-256), and the CA
//! fingerprint lets a brand-new agent pin the collector on first contact, before it has any
//! certificate to trust.

use sha2::{Digest, Sha256};
use std::fmt;

const PREFIX: &str = "inv1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("enrolment token is malformed: expected inv1.<id>.<secret>.<ca-fingerprint>, {0}")]
    Malformed(&'static str),
}

#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    pub id: String,
    pub secret: String,
    /// Lower-case hex SHA-256 of the collector CA certificate's DER encoding.
    pub ca_fingerprint: String,
}

impl EnrollmentToken {
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let mut parts = s.trim().split('.');
        if parts.next() != Some(PREFIX) {
            return Err(TokenError::Malformed("it does not start with 'inv1.'"));
        }
        let id = parts
            .next()
            .ok_or(TokenError::Malformed("the id is missing"))?;
        let secret = parts
            .next()
            .ok_or(TokenError::Malformed("the secret is missing"))?;
        let fp = parts
            .next()
            .ok_or(TokenError::Malformed("the CA fingerprint is missing"))?;
        if parts.next().is_some() {
            return Err(TokenError::Malformed("it has too many parts"));
        }
        let is_word = |v: &str| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !is_word(id) {
            return Err(TokenError::Malformed("the id is not a short url-safe word"));
        }
        if !is_word(secret) || secret.len() < 16 {
            return Err(TokenError::Malformed(
                "the secret is too short or has bad characters",
            ));
        }
        if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Malformed(
                "the CA fingerprint is not 64 hex digits",
            ));
        }
        Ok(Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
            ca_fingerprint: fp.to_ascii_lowercase(),
        })
    }

    /// SHA-256 of the secret, the only form in which the collector stores it.
    pub fn secret_hash(&self) -> [u8; 32] {
        Sha256::digest(self.secret.as_bytes()).into()
    }
}

impl fmt::Display for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}.{}.{}.{}",
            self.id, self.secret, self.ca_fingerprint
        )
    }
}

/// Tokens are credentials: never print the secret by accident.
impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("id", &self.id)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish_non_exhaustive()
    }
}

/// The pin both sides compare: lower-case hex SHA-256 of a certificate's DER bytes.
pub fn ca_fingerprint(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EnrollmentToken {
        EnrollmentToken {
            id: "t0k3n1d".into(),
            secret: "abcdefghijklmnopqrstuvwx".into(),
            ca_fingerprint: "ab".repeat(32),
        }
    }

    #[test]
    fn round_trips() {
        let t = sample();
        assert_eq!(EnrollmentToken::parse(&t.to_string()).unwrap(), t);
    }

    #[test]
    fn rejects_each_malformation_with_a_reason() {
        let fp = "ab".repeat(32);
        let cases = [
            ("", "inv1"),
            ("inv2.a.abcdefghijklmnopq.x", "inv1"),
            ("inv1.id", "secret is missing"),
            ("inv1.id.short.", "too short"),
            (
                &*format!("inv1.id.abcdefghijklmnopqrs.{}", &fp[..10]),
                "64 hex",
            ),
            (&*format!("inv1.id.abcdefghijklmnopqrs.{fp}.x"), "too many"),
            (&*format!("inv1.i d.abcdefghijklmnopqrs.{fp}"), "id is not"),
        ];
        for (input, want) in cases {
            let err = EnrollmentToken::parse(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        assert!(!format!("{:?}", sample()).contains("abcdefghijkl"));
    }
}
