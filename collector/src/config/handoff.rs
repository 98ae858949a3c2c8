//! `[[webhooks]]` and `[[syslog]]` in collector.toml: where alerts are handed off (a SIEM, a
//! safeguarding system), and what of them may leave.

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
    /// matched (a pupil's search words, the list entry or pattern) leave, and never for the illegal class.
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

fn default_sd_id() -> String {
    "alert@32473".into()
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}

/// A destination's name goes into the audit trail and the outbox key: kept plain.
fn validate_name(list: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{list}: name {name:?} must be 1 to 64 letters, digits, '-' or '_'"
        ))
    }
}

impl WebhookConfig {
    pub fn validate(&self) -> Result<(), String> {
        validate_name("webhooks", &self.name)?;
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
}

/// `[[syslog]]`: RFC 5424 messages over TLS (RFC 5425) to a SIEM's syslog receiver.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// Names the destination in the audit trail, the log and the outbox; letters, digits,
    /// `-` and `_`, and not the name of a webhook.
    pub name: String,
    /// `host:port` of the receiver (6514 is syslog over TLS's port).
    pub address: String,
    /// The name the receiver's certificate must carry; default the host of `address`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM certificates the receiver's certificate is checked against instead of the system's
    /// roots (a trust's own CA, as most SIEM receivers use).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The syslog facility of every message: `local0` to `local7`, `auth`, `authpriv` or
    /// `user` (default `local0`).
    #[serde(default)]
    pub facility: Facility,
    /// The structured-data id the alert's fields go under. The default uses 32473, the private
    /// enterprise number IANA keeps for examples: a trust with its own number sets
    /// `alert@NUMBER`, as its SIEM's parser expects.
    #[serde(default = "default_sd_id")]
    pub sd_id: String,
    /// Alerts below this severity are not handed off.
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    /// Set only for a safeguarding system agreed with the DSL: then what matched leaves, never
    /// for the illegal class. A SIEM is not one.
    #[serde(default)]
    pub safeguarding: bool,
    /// The console's address as staff reach it, for the link in each message.
    #[serde(default = "default_console_url")]
    pub console_url: String,
    /// A failed delivery is retried after 1 s, doubling to at most this long.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

/// The syslog facilities a SIEM is usually told to expect security events under.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    User,
    Auth,
    Authpriv,
    #[default]
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl SyslogConfig {
    pub fn validate(&self) -> Result<(), String> {
        validate_name("syslog", &self.name)?;
        let (host, port) = self.host_port()?;
        if host.is_empty() || port == 0 {
            return Err(format!(
                "syslog.{}: address {:?} must be host:port",
                self.name, self.address
            ));
        }
        rustls_pki_types::ServerName::try_from(self.tls_name()?.to_owned()).map_err(|e| {
            format!(
                "syslog.{}: {:?} cannot name a TLS server: {e}",
                self.name,
                self.tls_name().unwrap_or_default()
            )
        })?;
        // RFC 5424 SD-NAME: 1 to 32 printable ASCII characters but '=', ' ', ']' and '"'.
        let sd_ok = (1..=32).contains(&self.sd_id.len())
            && self.sd_id.contains('@')
            && self
                .sd_id
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"= ]\"".contains(&b));
        if !sd_ok {
            return Err(format!(
                "syslog.{}: sd_id {:?} must be NAME@NUMBER, at most 32 printable characters",
                self.name, self.sd_id
            ));
        }
        if self.max_backoff < Duration::from_secs(1) {
            return Err(format!(
                "syslog.{}: max_backoff must be at least 1s",
                self.name
            ));
        }
        Ok(())
    }

    /// The host and port of `address` (an IPv6 host in brackets).
    pub fn host_port(&self) -> Result<(&str, u16), String> {
        let bad = || {
            format!(
                "syslog.{}: address {:?} must be host:port",
                self.name, self.address
            )
        };
        let (host, port) = self.address.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        Ok((host.trim_start_matches('[').trim_end_matches(']'), port))
    }

    /// The name the receiver's certificate is checked against.
    pub fn tls_name(&self) -> Result<&str, String> {
        match &self.server_name {
            Some(n) => Ok(n),
            None => Ok(self.host_port()?.0),
        }
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

    fn syslog(extra: &str) -> Result<SyslogConfig, String> {
        let c: SyslogConfig =
            toml::from_str(&format!("name = \"siem\"\n{extra}")).map_err(|e| e.to_string())?;
        c.validate().map(|()| c)
    }

    #[test]
    fn a_syslog_receiver_is_host_and_port_with_a_name_tls_can_check() {
        let c = syslog("address = \"siem.trust.example:6514\"").unwrap();
        assert_eq!(c.host_port().unwrap(), ("siem.trust.example", 6514));
        assert_eq!(c.tls_name().unwrap(), "siem.trust.example");
        assert_eq!(c.facility, Facility::Local0);
        let c = syslog("address = \"[::1]:6514\"\nfacility = \"authpriv\"").unwrap();
        assert_eq!(c.tls_name().unwrap(), "::1");
        assert_eq!(c.facility, Facility::Authpriv);
        let e = syslog("address = \"siem.trust.example\"").unwrap_err();
        assert!(e.contains("must be host:port"), "{e}");
        let e = syslog("address = \"a:1\"\nserver_name = \"not a name\"").unwrap_err();
        assert!(e.contains("cannot name a TLS server"), "{e}");
        let e = syslog("address = \"a:1\"\nfacility = \"kern\"").unwrap_err();
        assert!(e.contains("unknown variant"), "{e}");
        let e = syslog("address = \"a:1\"\nsd_id = \"alert x@1\"").unwrap_err();
        assert!(e.contains("NAME@NUMBER"), "{e}");
    }
}
