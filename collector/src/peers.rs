//! This collector among those sharing the database: it announces itself every half minute
//! (`store::peers`), and warns when another collector seen lately runs a different
//! configuration or policy, which otherwise shows only as collectors judging alike events
//! differently. `invigilator-collector collectors` lists them.

use crate::config::CollectorConfig;
use crate::state::Shared;
use crate::store::{self, peers::Peer};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const EVERY: Duration = Duration::from_secs(30);
/// A collector not heard from for this long is not compared (stopped, or gone).
const LIVE_US: i64 = 3 * 30 * 1_000_000;

/// This collector's instance: its host and data directory, hashed.
fn instance(hostname: &str, data_dir: &Path) -> String {
    let dir = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = Sha256::digest(format!("{hostname}\n{}", dir.display()));
    hex(&digest[..8])
}

/// A digest of the configuration collectors must share: everything but each one's own
/// listeners and its way to the database.
pub fn config_digest(config: &CollectorConfig) -> String {
    let mut shared = config.clone();
    let anywhere = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    shared.grpc.listen = anywhere;
    shared.http.listen = anywhere;
    shared.metrics = Default::default();
    shared.store = Default::default();
    hex(&Sha256::digest(format!("{shared:?}"))[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What differs between this collector and a peer, in words; None if nothing does.
fn difference(me: &Peer, other: &Peer) -> Option<String> {
    let mut what = Vec::new();
    if other.config_digest != me.config_digest {
        what.push(format!(
            "collector.toml (settings {} here, {} there)",
            me.config_digest, other.config_digest
        ));
    }
    if other.policy_version != me.policy_version {
        what.push(format!(
            "policy ({} here, {} there)",
            me.policy_version, other.policy_version
        ));
    }
    if other.version != me.version {
        what.push(format!(
            "version ({} here, {} there)",
            me.version, other.version
        ));
    }
    (!what.is_empty()).then(|| what.join(", "))
}

/// This collector as it announces itself, started now.
fn me(config: &CollectorConfig, data_dir: &Path) -> Peer {
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let started = store::now_us();
    Peer {
        instance: instance(&hostname, data_dir),
        hostname,
        version: env!("CARGO_PKG_VERSION").into(),
        config_digest: config_digest(config),
        // Both set at each announcement: the policy may be reloaded meanwhile.
        policy_version: String::new(),
        seen_at_us: started,
        started_at_us: started,
    }
}

/// Announces this collector, then compares it with the others, until the collector stops.
pub async fn run(shared: Arc<Shared>, data_dir: PathBuf) {
    let mut me = me(&shared.config, &data_dir);
    // What was last said about each peer, so that a difference is logged when it appears or
    // changes, not every half minute.
    let mut said: BTreeMap<String, String> = BTreeMap::new();
    loop {
        me.policy_version = shared.policy.load().version.clone();
        me.seen_at_us = store::now_us();
        let announced = me.clone();
        let peers = shared
            .db(move |sys| {
                store::peers::announce(sys, &announced)?;
                store::peers::list(&sys.admin())
            })
            .await;
        match peers {
            Ok(peers) => {
                let mut now = BTreeMap::new();
                for p in peers.iter().filter(|p| {
                    p.instance != me.instance && me.seen_at_us - p.seen_at_us <= LIVE_US
                }) {
                    if let Some(d) = difference(&me, p) {
                        if said.get(&p.instance) != Some(&d) {
                            tracing::warn!(
                                peer = %p.instance,
                                peer_host = %p.hostname,
                                "another collector on this database runs a different {d}: \
                                 copy the files so that all judge alike, and restart"
                            );
                        }
                        now.insert(p.instance.clone(), d);
                    }
                }
                if now.is_empty() && !said.is_empty() {
                    tracing::info!("the collectors on this database agree again");
                }
                said = now;
            }
            Err(e) => tracing::warn!(error = %e.message(), "could not announce this collector"),
        }
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_ignores_what_is_each_collectors_own() {
        let base = CollectorConfig::default();
        let mut own = base.clone();
        own.grpc.listen = "10.0.0.7:50051".parse().unwrap();
        own.store.url = "host=db.trust.example dbname=invigilator".into();
        assert_eq!(config_digest(&base), config_digest(&own));
        let mut other = base.clone();
        other.quotas.daily_mib += 1;
        assert_ne!(config_digest(&base), config_digest(&other));
    }

    #[test]
    fn differences_are_named() {
        let me = Peer {
            instance: "a".into(),
            hostname: "h".into(),
            version: "0.1.0".into(),
            config_digest: "c1".into(),
            policy_version: "p1".into(),
            started_at_us: 0,
            seen_at_us: 0,
        };
        assert_eq!(difference(&me, &me.clone()), None);
        let other = Peer {
            policy_version: "p2".into(),
            ..me.clone()
        };
        assert_eq!(
            difference(&me, &other).unwrap(),
            "policy (p1 here, p2 there)"
        );
    }
}
