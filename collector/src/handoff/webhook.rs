//! `[[webhooks]]`: a POST of one alert's JSON per alert, signed.
//!
//! **Signed.** `Invigilator-Signature: t=UNIX,v1=HEX`, HEX the HMAC-SHA256 of `UNIX.BODY` under
//! the destination's secret: the receiver checks it and refuses an old `t` (a replay).
//! `Invigilator-Delivery: NAME-ALERTID` lets a receiver drop a repeat.

use super::{Destination, HandoffError, Route, link, matched_for};
use crate::config::WebhookConfig;
use crate::store::{self, outbox::Outgoing};
use ring::hmac;
use serde_json::json;
use std::path::Path;

/// One destination, ready to send: its settings, key and HTTP client.
pub struct Webhook {
    cfg: WebhookConfig,
    key: hmac::Key,
    http: ureq::Agent,
}

impl Webhook {
    /// Reads the secret and the CA file now, so that a bad one stops the start with its reason.
    pub fn load(cfg: WebhookConfig, data_dir: &Path) -> Result<Self, HandoffError> {
        let secret_path = data_dir.join(&cfg.secret_file);
        let shown = secret_path.display().to_string();
        let secret =
            std::fs::read_to_string(&secret_path).map_err(|source| HandoffError::Secret {
                name: format!("webhook {}", cfg.name),
                path: shown.clone(),
                source,
            })?;
        let secret = secret.trim();
        if secret.len() < 32 {
            return Err(HandoffError::ShortSecret {
                name: format!("webhook {}", cfg.name),
                path: shown,
                len: secret.len(),
            });
        }
        let ca = cfg.ca_file.as_ref().map(|ca| data_dir.join(ca));
        let http = crate::outbound::client(ca.as_deref()).map_err(|message| HandoffError::Ca {
            name: format!("webhook {}", cfg.name),
            path: ca
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            message,
        })?;
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            cfg,
            http,
        })
    }
}

impl Destination for Webhook {
    fn route(&self) -> Route {
        let c = &self.cfg;
        Route::new("webhook", &c.name, c.min_severity, c.max_backoff)
    }

    /// POSTs one alert; Ok only for a 2xx answer.
    fn deliver(&mut self, alert: &Outgoing) -> Result<(), HandoffError> {
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
        "link": link(&cfg.console_url, a.id),
    });
    if let Some(matched) = matched_for(a, cfg.safeguarding) {
        alert["matched"] = json!(matched);
    }
    json!({ "type": "alert", "source": "invigilator", "alert": alert })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::tests::alert;
    use invigilator_policy::Severity;

    fn cfg(safeguarding: bool) -> WebhookConfig {
        let mut c: WebhookConfig = toml::from_str(
            "name = \"cpoms\"\nurl = \"https://x.example/\"\nsecret_file = \"s\"\nconsole_url = \"https://console.school/\"\n",
        )
        .unwrap();
        c.safeguarding = safeguarding;
        c
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
}
