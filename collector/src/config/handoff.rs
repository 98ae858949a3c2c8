//! `[[webhooks]]` in collector.toml: where alerts are handed off (a SIEM, a safeguarding
//! system), and what of them may leave.

use invigilator_policy::Severity;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names the destination in the audit trail, the log and the outbox; letters, digits,
    /// `-` and `_`.
    pub name: String,
    /// `https://` (or `http://` on loopback only) address that receives a POST per alert.
    pub url: String,
    /// A file holding the shared secret the body is signed with (HMAC-SHA256), at least 32
    /// characters; relative to the data directory unless absolute.
    pub secret_file: PathBuf,
    /// Alerts below this severity are not handed off.
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    /// A safeguarding system (CPOMS, MyConcern ...) agreed with the DSL: only then does what
    /// matched (a pupil's search words, the site) leave, and never for the illegal class.
    #[serde(default)]
    pub safeguarding: bool,
    /// PEM certificates the receiver's certificate is checked against instead of the public
    /// roots (a school's or trust's own CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The console's address as staff reach it, for the link in each alert.
    #[serde(default = "default_console_url")]
    pub console_url: String,
    /// A failed delivery is retried after 1 s, doubling to at most this long; alerts behind it
    /// wait, so they arrive in order.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

fn default_min_severity() -> Severity {
    Severity::Inappropriate
}

fn default_console_url() -> String {
    "http://127.0.0.1:8080".into()
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}

impl WebhookConfig {
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(format!(
                "webhooks: name {:?} must be 1 to 64 letters, digits, '-' or '_'",
                self.name
            ));
        }
        let url = url::Url::parse(&self.url)
            .map_err(|e| format!("webhooks.{}: url {:?}: {e}", self.name, self.url))?;
        let loopback = matches!(
            url.host(),
            Some(url::Host::Ipv4(a)) if a.is_loopback()
        ) || matches!(url.host(), Some(url::Host::Ipv6(a)) if a.is_loopback())
            || url.host_str() == Some("localhost");
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            other => {
                return Err(format!(
                    "webhooks.{}: url must be https:// (http:// only to loopback), not {other}://",
                    self.name
                ));
            }
        }
        if self.max_backoff < Duration::from_secs(1) {
            return Err(format!(
                "webhooks.{}: max_backoff must be at least 1s",
                self.name
            ));
        }
        Ok(())
    }

    /// Where this destination's outbox position is kept.
    pub fn outbox_key(&self) -> String {
        format!("webhook:{}:last_alert_id", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(name: &str, url: &str) -> WebhookConfig {
        toml::from_str(&format!(
            "name = {name:?}\nurl = {url:?}\nsecret_file = \"s\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn plain_http_only_to_loopback_and_names_are_plain() {
        assert!(
            hook("siem", "https://siem.trust.example/in")
                .validate()
                .is_ok()
        );
        assert!(hook("local", "http://127.0.0.1:9000/").validate().is_ok());
        let e = hook("siem", "http://siem.trust.example/in")
            .validate()
            .unwrap_err();
        assert!(e.contains("https://"), "{e}");
        let e = hook("a b", "https://x.example/").validate().unwrap_err();
        assert!(e.contains("letters, digits"), "{e}");
        let e = hook("x", "not a url").validate().unwrap_err();
        assert!(e.contains("webhooks.x: url"), "{e}");
    }
}
