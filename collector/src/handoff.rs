//! Hand-off of alerts to the systems a school or trust already runs: a SIEM, a safeguarding
//! system (CPOMS, MyConcern ...). Each `[[webhooks]]` destination gets a POST per alert, in
//! order, signed, at least once.
//!
//! **Durable.** Each destination reads the alerts through its own outbox position in the
//! store (`store::outbox`, key `webhook:NAME:last_alert_id`): an alert counts as handed off
//! only when the receiver answered 2xx, and then its audit entry (`alert.handoff`) and the new
//! position are written in one transaction. A restart or a receiver down for hours loses
//! nothing; alerts behind a failing one wait, so they arrive in order. A crash between the
//! receiver's answer and that commit sends the alert again: the `Invigilator-Delivery` header
//! (destination and alert id) lets a receiver drop the repeat.
//!
//! **Signed.** `Invigilator-Signature: t=UNIX,v1=HEX`, HEX the HMAC-SHA256 of `UNIX.BODY` under
//! the destination's secret: the receiver checks it and refuses an old `t` (a replay).
//!
//! **What leaves** follows the console's privacy rules: the rule, category, severity, summary,
//! device, user, time and a link to the console; what matched (a pupil's search words, the
//! site) only to a destination marked `safeguarding`, and never for the illegal class, whose
//! alerts hold only an address's hash anyway.

use crate::config::WebhookConfig;
use crate::serve::SystemKey;
use crate::store::outbox::{self, Outgoing};
use crate::store::{self, Store, System};
use invigilator_policy::Severity;
use ring::hmac;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("webhook {name}: cannot read the secret {path}: {source}")]
    Secret {
        name: String,
        path: String,
        source: std::io::Error,
    },
    #[error("webhook {name}: the secret in {path} is {len} characters; it must be at least 32")]
    ShortSecret {
        name: String,
        path: String,
        len: usize,
    },
    #[error("webhook {name}: CA file {path}: {message}")]
    Ca {
        name: String,
        path: String,
        message: String,
    },
    #[error("{0}")]
    Delivery(String),
}

/// One destination, ready to send: its settings, key and HTTP client.
pub struct Destination {
    cfg: WebhookConfig,
    key: hmac::Key,
    http: ureq::Agent,
}

impl Destination {
    /// Reads the secret and the CA file now, so that a bad one stops the start with its reason.
    pub fn load(cfg: WebhookConfig, data_dir: &Path) -> Result<Self, HandoffError> {
        let secret_path = data_dir.join(&cfg.secret_file);
        let shown = secret_path.display().to_string();
        let secret =
            std::fs::read_to_string(&secret_path).map_err(|source| HandoffError::Secret {
                name: cfg.name.clone(),
                path: shown.clone(),
                source,
            })?;
        let secret = secret.trim();
        if secret.len() < 32 {
            return Err(HandoffError::ShortSecret {
                name: cfg.name.clone(),
                path: shown,
                len: secret.len(),
            });
        }
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &cfg.ca_file {
            let path = data_dir.join(ca);
            let ca_err = |message: String| HandoffError::Ca {
                name: cfg.name.clone(),
                path: path.display().to_string(),
                message,
            };
            let pem = std::fs::read(&path).map_err(|e| ca_err(e.to_string()))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no certificate in it".into()));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let http = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            cfg,
            http,
        })
    }

    /// POSTs one alert; Ok only for a 2xx answer.
    fn deliver(&self, alert: &Outgoing) -> Result<(), HandoffError> {
        let body = serde_json::to_vec(&payload(alert, &self.cfg)).expect("JSON of plain values");
        let now = chrono::Utc::now().timestamp();
        let delivery = format!("{}-{}", self.cfg.name, alert.id);
        let result = self
            .http
            .post(&self.cfg.url)
            .header("Content-Type", "application/json")
            .header("Invigilator-Delivery", &delivery)
            .header("Invigilator-Signature", &signature(&self.key, now, &body))
            .send(&body[..]);
        match result {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(HandoffError::Delivery(format!(
                "webhook {}: {} answered {} for alert {}",
                self.cfg.name,
                self.cfg.url,
                r.status(),
                alert.id
            ))),
            Err(e) => Err(HandoffError::Delivery(format!(
                "webhook {}: {}: {e} (alert {})",
                self.cfg.name, self.cfg.url, alert.id
            ))),
        }
    }
}

/// `t=UNIX,v1=HEX`: HEX = HMAC-SHA256(secret, "UNIX." + body).
pub fn signature(key: &hmac::Key, unix: i64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(unix.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={unix},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// The JSON a destination receives for one alert.
pub fn payload(a: &Outgoing, cfg: &WebhookConfig) -> serde_json::Value {
    let mut alert = json!({
        "id": a.id,
        "kind": a.kind,
        "rule": a.rule,
        "category": a.category,
        "severity": a.severity.as_str(),
        "summary": a.summary,
        "device": a.hostname,
        "user": a.user,
        "observed_at": store::rfc3339(a.observed_at_us),
        "policy_version": a.policy_version,
        "link": format!("{}/alerts/{}", cfg.console_url.trim_end_matches('/'), a.id),
    });
    if cfg.safeguarding && a.severity != Severity::Illegal {
        alert["matched"] = json!(a.matched);
    }
    json!({ "type": "alert", "source": "invigilator", "alert": alert })
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
pub async fn run(store: Store, key: SystemKey, dest: Destination) {
    let dest = std::sync::Arc::new(dest);
    let okey = dest.cfg.outbox_key();
    let name = dest.cfg.name.clone();
    let mut backoff = Duration::from_secs(1);
    loop {
        let (s, k, o, min) = (
            store.clone(),
            key.clone(),
            okey.clone(),
            dest.cfg.min_severity,
        );
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
                tracing::error!(webhook = %name, error = %e, "hand-off: cannot read the outbox");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let (d, a) = (std::sync::Arc::clone(&dest), alert.clone());
        let sent = tokio::task::spawn_blocking(move || d.deliver(&a))
            .await
            .unwrap_or_else(|e| Err(HandoffError::Delivery(e.to_string())));
        if let Err(e) = sent {
            tracing::warn!(webhook = %name, retry_in = ?backoff, "hand-off failed: {e}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(dest.cfg.max_backoff);
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
            Ok(Ok(())) => tracing::debug!(webhook = %name, alert = id, "handed off"),
            Ok(Err(e)) => not_recorded(&name, id, &e.to_string()).await,
            Err(e) => not_recorded(&name, id, &e.to_string()).await,
        }
    }
}

/// Sent but not recorded: the alert will be sent again, which the delivery id lets the
/// receiver drop.
async fn not_recorded(name: &str, id: i64, error: &str) {
    tracing::error!(webhook = %name, alert = id, error, "hand-off sent but not recorded; it will be sent again");
    tokio::time::sleep(Duration::from_secs(5)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(safeguarding: bool) -> WebhookConfig {
        let mut c: WebhookConfig = toml::from_str(
            "name = \"cpoms\"\nurl = \"https://x.example/\"\nsecret_file = \"s\"\nconsole_url = \"https://console.school/\"\n",
        )
        .unwrap();
        c.safeguarding = safeguarding;
        c
    }

    fn alert(severity: Severity) -> Outgoing {
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
    fn what_matched_leaves_only_for_a_safeguarding_system_and_never_for_the_illegal_class() {
        let siem = payload(&alert(Severity::Serious), &cfg(false));
        assert!(siem["alert"].get("matched").is_none(), "{siem}");
        assert_eq!(siem["alert"]["link"], "https://console.school/alerts/7");
        let dsl = payload(&alert(Severity::Serious), &cfg(true));
        assert_eq!(dsl["alert"]["matched"], "how to hurt myself");
        let illegal = payload(&alert(Severity::Illegal), &cfg(true));
        assert!(illegal["alert"].get("matched").is_none(), "{illegal}");
    }

    #[test]
    fn the_signature_is_the_hmac_of_time_and_body() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef0123456789abcdef");
        let sig = signature(&key, 1_700_000_000, b"{}");
        let hex = sig.strip_prefix("t=1700000000,v1=").unwrap();
        let tag = hex::decode(hex).unwrap();
        assert!(hmac::verify(&key, b"1700000000.{}", &tag).is_ok());
        assert!(hmac::verify(&key, b"1700000001.{}", &tag).is_err());
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
