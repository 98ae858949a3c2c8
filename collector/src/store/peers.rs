//! The collectors sharing the database, as each announces itself: one place where an operator
//! sees them all, and where each can tell that another runs a different configuration or
//! policy (`init --join` copies them once; a later edit must be made on every collector).

use super::db::params;
use super::{Admin, Result, System};
use serde::Serialize;

/// One collector, as it last announced itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// Its host and data directory, hashed: stable across restarts, distinct per collector.
    pub instance: String,
    pub hostname: String,
    pub version: String,
    /// A digest of its effective configuration, less what is its own (listen addresses, the
    /// database's URL).
    pub config_digest: String,
    /// The version of the policy it runs (the file's version and a hash of what it holds).
    pub policy_version: String,
    pub started_at_us: i64,
    pub seen_at_us: i64,
}

/// Records (or refreshes) this collector's entry.
pub fn announce(sys: &System<'_>, p: &Peer) -> Result<()> {
    sys.conn
        .prepare_cached(
            "INSERT INTO collectors(instance, hostname, version, config_digest, policy_version,
                                    started_at, seen_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(instance) DO UPDATE SET
                hostname = excluded.hostname, version = excluded.version,
                config_digest = excluded.config_digest, policy_version = excluded.policy_version,
                started_at = excluded.started_at, seen_at = excluded.seen_at",
        )?
        .execute(params![
            p.instance,
            p.hostname,
            p.version,
            p.config_digest,
            p.policy_version,
            p.started_at_us,
            p.seen_at_us
        ])?;
    Ok(())
}

/// Every collector that has announced itself, the most recently seen first.
pub fn list(admin: &Admin<'_>) -> Result<Vec<Peer>> {
    let mut stmt = admin.conn.prepare_cached(
        "SELECT instance, hostname, version, config_digest, policy_version, started_at, seen_at
         FROM collectors ORDER BY seen_at DESC, instance",
    )?;
    let rows = stmt.query_map((), |r| {
        Ok(Peer {
            instance: r.get(0)?,
            hostname: r.get(1)?,
            version: r.get(2)?,
            config_digest: r.get(3)?,
            policy_version: r.get(4)?,
            started_at_us: r.get(5)?,
            seen_at_us: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(instance: &str, seen: i64, config: &str) -> Peer {
        Peer {
            instance: instance.into(),
            hostname: format!("host-{instance}"),
            version: "0.1.0".into(),
            config_digest: config.into(),
            policy_version: "2026-1#abc".into(),
            started_at_us: 1,
            seen_at_us: seen,
        }
    }

    #[test]
    fn each_collector_has_one_entry_kept_up_to_date() {
        let (_d, conn) = crate::store::test_db();
        let sys = System::test(&conn);
        announce(&sys, &peer("a", 10, "x")).unwrap();
        announce(&sys, &peer("b", 20, "x")).unwrap();
        announce(&sys, &peer("a", 30, "y")).unwrap();
        assert_eq!(
            list(&Admin::test(&conn)).unwrap(),
            [peer("a", 30, "y"), peer("b", 20, "x")]
        );
    }
}
