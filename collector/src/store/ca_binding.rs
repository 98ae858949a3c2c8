//! The certificate authority a database's agents were issued by, recorded in `meta` by the
//! first collector. Every collector sharing the database must hold that CA (`init --join`
//! copies it): one with another CA would refuse every agent the others enrolled, and the
//! agents it enrolled would be refused by them.

use super::{Admin, Result};
use crate::store::db::OptionalExtension;

const KEY: &str = "ca_fingerprint";

/// The recorded CA's SHA-256 fingerprint, if a collector has recorded one.
pub fn recorded(a: &Admin<'_>) -> Result<Option<String>> {
    Ok(a.conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [KEY], |r| r.get(0))
        .optional()?)
}

/// Records `fingerprint` unless a CA is recorded already; returns the one recorded, which the
/// caller compares with its own.
pub fn bind(a: &Admin<'_>, fingerprint: &str) -> Result<String> {
    a.conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO NOTHING",
        [KEY, fingerprint],
    )?;
    Ok(a.conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [KEY], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db;

    #[test]
    fn the_first_collector_records_its_ca_and_others_are_told_it() {
        let (_dir, conn) = test_db();
        let a = Admin::test(&conn);
        assert_eq!(recorded(&a).unwrap(), None);
        assert_eq!(bind(&a, "aa").unwrap(), "aa");
        assert_eq!(
            bind(&a, "bb").unwrap(),
            "aa",
            "a second CA never replaces it"
        );
        assert_eq!(recorded(&a).unwrap().as_deref(), Some("aa"));
    }
}
