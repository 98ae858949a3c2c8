//! Hand-off of alerts to the systems a school or trust already runs: a SIEM, a safeguarding
//! system (CPOMS, MyConcern ...). A `[[webhooks]]` destination gets a signed POST per alert
//! ([`webhook`]); a `[[syslog]]` destination an RFC 5424 message over TLS ([`syslog`]). Both
//! run the same loop, [`run`], over a [`Destination`].
//!
//! **Durable.** Each destination reads the alerts through its own outbox position in the
//! store (`store::outbox`, key `webhook:NAME:last_alert_id` or `syslog:NAME:...`): an alert
//! counts as handed off only once the destination says it was delivered, and then its audit
//! entry (`alert.handoff`, detail the destination's name) and the new position are written in
//! one transaction. A restart or a receiver down for hours loses nothing; alerts behind a failing
//! one wait, so they arrive in order. A crash between delivery and that commit sends the alert
//! again: each message carries the destination and alert id, for a receiver to drop the repeat.
//!
//! **What leaves** follows the console's privacy rules: the rule, category, severity, summary
//! (which names a category rule's site by its host, as the console's alert list does), device,
//! user, time and a link to the console; what matched (a pupil's search words, the list entry or
//! pattern that fired) only to a destination marked `safeguarding`, and never for the illegal
//! class, whose alerts hold only an address's hash anyway ([`matched_for`]).

pub mod syslog;
pub mod webhook;

pub use syslog::Syslog;
pub use webhook::Webhook;

use crate::serve::SystemKey;
use crate::store::outbox::{self, Outgoing};
use crate::store::{self, Leadership, Store, System};
use invigilator_policy::Severity;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("{name}: cannot read the secret {path}: {source}")]
    Secret {
        name: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{name}: the secret in {path} is {len} characters; it must be at least 32")]
    ShortSecret {
        name: String,
        path: String,
        len: usize,
    },
    #[error("{name}: CA file {path}: {message}")]
    Ca {
        name: String,
        path: String,
        message: String,
    },
    #[error("{0}")]
    Delivery(String),
}

/// What the hand-off loop knows of a destination, whatever its kind.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its name in the audit trail and the log.
    pub name: String,
    /// Where its outbox position is kept: `KIND:NAME:last_alert_id`.
    pub outbox_key: String,
    /// Alerts below this are passed over.
    pub min_severity: Severity,
    /// Longest wait between retries.
    pub max_backoff: Duration,
}

impl Route {
    pub fn new(kind: &str, name: &str, min_severity: Severity, max_backoff: Duration) -> Self {
        Self {
            name: name.to_owned(),
            outbox_key: format!("{kind}:{name}:last_alert_id"),
            min_severity,
            max_backoff,
        }
    }
}

/// One place alerts are handed off to.
pub trait Destination: Send + 'static {
    fn route(&self) -> Route;
    /// Delivers one alert (blocking; run off the async threads); Ok only once it is the
    /// receiver's.
    fn deliver(&mut self, alert: &Outgoing) -> Result<(), HandoffError>;
}

/// What matched, where it may leave: only to a safeguarding system, never for the illegal
/// class.
pub fn matched_for(a: &Outgoing, safeguarding: bool) -> Option<&str> {
    (safeguarding && a.severity != Severity::Illegal).then_some(a.matched.as_str())
}

/// The console's page for an alert.
pub fn link(console_url: &str, id: i64) -> String {
    format!("{}/alerts/{id}", console_url.trim_end_matches('/'))
}

/// The next alert due to `key`'s destination, moving the position past those below
/// `min` (they are not for it). A new destination starts at the newest alert.
fn next_due(sys: &System<'_>, key: &str, min: Severity) -> store::Result<Option<Outgoing>> {
    let Some(last) = outbox::position(sys, key)? else {
        outbox::start_at_newest(sys, key)?;
        return Ok(None);
    };
    let scanned = outbox::after(sys, last, 200)?;
    let furthest = scanned.last().map(|a| a.id);
    match scanned.into_iter().find(|a| a.severity >= min) {
        Some(a) => {
            if a.id > last + 1 {
                outbox::set_position(sys, key, a.id - 1)?;
            }
            Ok(Some(a))
        }
        None => {
            if let Some(f) = furthest {
                outbox::set_position(sys, key, f)?;
            }
            Ok(None)
        }
    }
}

/// Hands off every due alert to `dest`, for as long as the collector runs.
pub async fn run<D: Destination>(store: Store, key: SystemKey, dest: D, mut leader: Leadership) {
    let Route {
        name,
        outbox_key: okey,
        min_severity: min,
        max_backoff,
    } = dest.route();
    let dest = Arc::new(Mutex::new(dest));
    let mut backoff = Duration::from_secs(1);
    loop {
        leader.acquired().await;
        let (s, k, o) = (store.clone(), key.clone(), okey.clone());
        let next = tokio::task::spawn_blocking(move || s.system(&k, |sys| next_due(sys, &o, min)))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let alert = match next {
            Ok(Some(a)) => a,
            Ok(None) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                tracing::error!(destination = %name, error = %e, "hand-off: cannot read the outbox");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let (d, a) = (Arc::clone(&dest), alert.clone());
        let sent = tokio::task::spawn_blocking(move || {
            d.lock().unwrap_or_else(|p| p.into_inner()).deliver(&a)
        })
        .await
        .unwrap_or_else(|e| Err(HandoffError::Delivery(e.to_string())));
        if let Err(e) = sent {
            tracing::warn!(destination = %name, retry_in = ?backoff, "hand-off failed: {e}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(max_backoff);
            continue;
        }
        backoff = Duration::from_secs(1);
        let (s, k, o, n, id) = (
            store.clone(),
            key.clone(),
            okey.clone(),
            name.clone(),
            alert.id,
        );
        let recorded = tokio::task::spawn_blocking(move || {
            s.system(&k, |sys| outbox::handed_off(sys, &o, &n, id))
        })
        .await;
        match recorded {
            Ok(Ok(())) => tracing::debug!(destination = %name, alert = id, "handed off"),
            Ok(Err(e)) => not_recorded(&name, id, &e.to_string()).await,
            Err(e) => not_recorded(&name, id, &e.to_string()).await,
        }
    }
}

/// Sent but not recorded: the alert will be sent again, which its id lets the receiver drop.
async fn not_recorded(name: &str, id: i64, error: &str) {
    tracing::error!(destination = %name, alert = id, error, "hand-off sent but not recorded; it will be sent again");
    tokio::time::sleep(Duration::from_secs(5)).await;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn alert(severity: Severity) -> Outgoing {
        Outgoing {
            id: 7,
            kind: "browsing".into(),
            rule: "keywords.self_harm".into(),
            category: "self_harm".into(),
            severity,
            summary: "self_harm terms in a search".into(),
            hostname: "ict-07".into(),
            user: "y9smith".into(),
            matched: "how to hurt myself".into(),
            observed_at_us: 0,
            policy_version: "1".into(),
        }
    }

    #[test]
    fn alerts_below_the_destination_s_severity_are_passed_over() {
        let (_d, conn) = crate::store::test_db();
        let sys = System::test(&conn);
        let key = "webhook:t:last_alert_id";
        assert!(next_due(&sys, key, Severity::Serious).unwrap().is_none());
        outbox::tests::record(&sys, "r0", Severity::Informational);
        outbox::tests::record(&sys, "r1", Severity::Serious);
        let due = next_due(&sys, key, Severity::Serious).unwrap().unwrap();
        assert_eq!(due.rule, "r1");
        outbox::handed_off(&sys, key, "t", due.id).unwrap();
        assert!(next_due(&sys, key, Severity::Serious).unwrap().is_none());
        assert_eq!(outbox::position(&sys, key).unwrap(), Some(due.id));
    }
}
