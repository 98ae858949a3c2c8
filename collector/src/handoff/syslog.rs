//! `[[syslog]]`: each alert one RFC 5424 message, framed by octet counting (RFC 5425), over
//! TLS to a SIEM's syslog receiver, on one connection kept open between alerts.
//!
//! The alert's fields go in one structured-data element (`[alert@32473 id="..." rule="..."
//! ...]`, the id configurable), which SIEMs parse into fields without a custom parser; the
//! summary is the message. The formatting (priority, escaping of `"`, `\` and `]` in values,
//! the BOM before the message) is `syslog_fmt`'s. Values come from devices (a user or host
//! name, a summary that quotes a page title): control characters are replaced before they are
//! written, so a line-based SIEM parser cannot be handed a forged second record.
//!
//! **Delivery.** TCP carries no acknowledgement from the receiving program, so an alert counts as
//! delivered once written and flushed to a connection the receiver had not closed. Before each
//! write the connection is checked for the receiver's close (a restarted receiver leaves a
//! connection a write would succeed on locally and be lost into): only a receiver that dies
//! holding messages it had not yet read can lose them. The webhook, which waits for a 2xx, is the
//! destination for a system that must not lose one.

use super::{Destination, HandoffError, Route, link, matched_for};
use crate::config::{Facility, SyslogConfig};
use crate::store::{self, outbox::Outgoing};
use invigilator_policy::Severity;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use syslog_fmt::v5424::{Config, Formatter};

/// Connecting, the TLS handshake and each write give up after this long.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The APP-NAME of every message.
const APP_NAME: &str = "invigilator";

/// A connection idle this long is replaced before the next alert: a firewall or a receiver that
/// lost power drops a connection without a word, and a write into it would succeed locally and
/// be lost. Alerts are rare, so this bounds that window rather than the cost.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// How long a fresh connection is watched before its first write: a TLS 1.3 receiver refuses a
/// client it does not accept (a missing client certificate) only after the handshake.
const SETTLE: Duration = Duration::from_millis(300);

/// Longest value of a structured-data parameter, and of the message, in bytes: rsyslog's default
/// limit is 8 KiB a message, and a longer one is cut (or the connection closed by others).
const MAX_VALUE: usize = 256;
const MAX_SUMMARY: usize = 2048;

/// One syslog receiver: its settings, TLS configuration and, between alerts, the connection.
pub struct Syslog {
    cfg: SyslogConfig,
    tls: Arc<ClientConfig>,
    server: ServerName<'static>,
    formatter: Formatter,
    /// The open connection and when it was last written to.
    conn: Option<(StreamOwned<ClientConnection, TcpStream>, Instant)>,
}

impl Syslog {
    /// Reads the CA file (or the system's roots) now, so that a bad one stops the start with
    /// its reason. Connects only when the first alert is due.
    pub fn load(cfg: SyslogConfig, data_dir: &Path) -> Result<Self, HandoffError> {
        let ca = cfg.ca_file.as_ref().map(|ca| data_dir.join(ca));
        let roots = crate::pki::trust_roots(ca.as_deref()).map_err(|message| HandoffError::Ca {
            name: format!("syslog {}", cfg.name),
            path: ca.as_deref().unwrap_or(Path::new("")).display().to_string(),
            message,
        })?;
        let tls = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server = ServerName::try_from(cfg.tls_name().map_err(HandoffError::Delivery)?)
            .map_err(|e| HandoffError::Delivery(format!("syslog {}: {e}", cfg.name)))?
            .to_owned();
        let hostname = own_hostname();
        let formatter = Config {
            facility: facility(cfg.facility),
            hostname: Some(&hostname),
            app_name: Some(APP_NAME),
            proc_id: None,
        }
        .into_formatter();
        Ok(Self {
            cfg,
            tls: Arc::new(tls),
            server,
            formatter,
            conn: None,
        })
    }

    fn fail(&self, what: impl std::fmt::Display) -> HandoffError {
        HandoffError::Delivery(format!(
            "syslog {}: {}: {what}",
            self.cfg.name, self.cfg.address
        ))
    }

    /// A new connection, its handshake done (so a certificate the receiver cannot prove is
    /// reported as such, not as a failed write).
    fn connect(&self) -> Result<StreamOwned<ClientConnection, TcpStream>, HandoffError> {
        let (host, port) = self.cfg.host_port().map_err(HandoffError::Delivery)?;
        let mut last = None;
        let addrs = (host, port).to_socket_addrs().map_err(|e| self.fail(e))?;
        let tcp = addrs
            .into_iter()
            .find_map(|addr| {
                TcpStream::connect_timeout(&addr, IO_TIMEOUT)
                    .map_err(|e| last = Some(e))
                    .ok()
            })
            .ok_or_else(|| match last {
                Some(e) => self.fail(e),
                None => self.fail("the name has no address"),
            })?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| tcp.set_write_timeout(Some(IO_TIMEOUT)))
            .and_then(|()| tcp.set_nodelay(true))
            .map_err(|e| self.fail(e))?;
        let conn = ClientConnection::new(Arc::clone(&self.tls), self.server.clone())
            .map_err(|e| self.fail(e))?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| self.fail(format!("TLS: {e}")))?;
        }
        std::thread::sleep(SETTLE);
        if closed_by_peer(&mut stream) {
            return Err(self.fail(
                "the receiver closed the connection after the TLS handshake (does it require a client certificate?)",
            ));
        }
        Ok(stream)
    }

    /// One alert as a framed message: `LENGTH SP RFC5424-MESSAGE`.
    pub fn frame(&self, a: &Outgoing) -> Vec<u8> {
        let params: Vec<(&str, String)> = [
            ("id", a.id.to_string()),
            ("kind", clean(&a.kind, MAX_VALUE)),
            ("rule", clean(&a.rule, MAX_VALUE)),
            ("category", clean(&a.category, MAX_VALUE)),
            ("severity", a.severity.as_str().to_owned()),
            ("device", clean(&a.hostname, MAX_VALUE)),
            ("user", clean(&a.user, MAX_VALUE)),
            ("observed_at", store::rfc3339(a.observed_at_us)),
            ("policy_version", clean(&a.policy_version, MAX_VALUE)),
            ("link", link(&self.cfg.console_url, a.id)),
            ("delivery", format!("{}-{}", self.cfg.name, a.id)),
        ]
        .into_iter()
        .chain(matched_for(a, self.cfg.safeguarding).map(|m| ("matched", clean(m, MAX_VALUE))))
        .collect();
        let mut message = Vec::with_capacity(512);
        self.formatter
            .write_with_data(
                &mut message,
                severity(a.severity),
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                clean(&a.summary, MAX_SUMMARY),
                Some("alert"),
                [(
                    self.cfg.sd_id.as_str(),
                    params.iter().map(|(k, v)| (*k, v.as_str())),
                )],
            )
            .expect("writing to a Vec cannot fail");
        let mut framed = format!("{} ", message.len()).into_bytes();
        framed.extend_from_slice(&message);
        framed
    }
}

impl Destination for Syslog {
    fn route(&self) -> Route {
        let c = &self.cfg;
        Route::new("syslog", &c.name, c.min_severity, c.max_backoff)
    }

    fn deliver(&mut self, alert: &Outgoing) -> Result<(), HandoffError> {
        let open = self.conn.take().and_then(|(mut s, used)| {
            if used.elapsed() >= MAX_IDLE {
                return None;
            }
            if closed_by_peer(&mut s) {
                tracing::info!(destination = %self.cfg.name, "syslog: the receiver closed the connection; reconnecting");
                return None;
            }
            Some(s)
        });
        let mut stream = match open {
            Some(s) => s,
            None => self.connect()?,
        };
        let framed = self.frame(alert);
        stream
            .write_all(&framed)
            .and_then(|()| stream.flush())
            .map_err(|e| self.fail(format!("alert {}: {e}", alert.id)))?;
        self.conn = Some((stream, Instant::now()));
        Ok(())
    }
}

/// Whether the receiver has closed (or broken) the connection: anything it sent is read now,
/// without waiting. A syslog receiver sends nothing of its own after the handshake, so data,
/// a close_notify or the end of the stream all mean the connection is done.
fn closed_by_peer(s: &mut StreamOwned<ClientConnection, TcpStream>) -> bool {
    if s.sock.set_nonblocking(true).is_err() {
        return true;
    }
    let ended = loop {
        match s.conn.read_tls(&mut s.sock) {
            Ok(0) => break true,
            Ok(_) => {
                if s.conn.process_new_packets().is_err() {
                    break true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    if s.sock.set_nonblocking(false).is_err() || ended {
        return true;
    }
    let mut buf = [0u8; 256];
    !matches!(s.conn.reader().read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A device's string as a value, at most `max` bytes: control and format characters (a newline
/// that would start a forged record in a line-based parser, a line separator, a bidirectional
/// override that reorders what an analyst reads) become spaces.
fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let c = if c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        {
            ' '
        } else {
            c
        };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

fn severity(s: Severity) -> syslog_fmt::Severity {
    match s {
        Severity::Illegal => syslog_fmt::Severity::Crit,
        Severity::Serious => syslog_fmt::Severity::Err,
        Severity::Inappropriate => syslog_fmt::Severity::Warning,
        Severity::Informational => syslog_fmt::Severity::Notice,
    }
}

fn facility(f: Facility) -> syslog_fmt::Facility {
    match f {
        Facility::User => syslog_fmt::Facility::User,
        Facility::Auth => syslog_fmt::Facility::Auth,
        Facility::Authpriv => syslog_fmt::Facility::Authpriv,
        Facility::Local0 => syslog_fmt::Facility::Local0,
        Facility::Local1 => syslog_fmt::Facility::Local1,
        Facility::Local2 => syslog_fmt::Facility::Local2,
        Facility::Local3 => syslog_fmt::Facility::Local3,
        Facility::Local4 => syslog_fmt::Facility::Local4,
        Facility::Local5 => syslog_fmt::Facility::Local5,
        Facility::Local6 => syslog_fmt::Facility::Local6,
        Facility::Local7 => syslog_fmt::Facility::Local7,
    }
}

/// The collector's host name as RFC 5424's HOSTNAME allows it (printable ASCII, at most 255),
/// or the NILVALUE.
fn own_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::tests::alert;

    fn destination(safeguarding: bool) -> Syslog {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg: SyslogConfig = toml::from_str(
            "name = \"siem\"\naddress = \"127.0.0.1:6514\"\nconsole_url = \"https://console.school/\"\n",
        )
        .unwrap();
        cfg.safeguarding = safeguarding;
        Syslog::load(cfg, dir.path()).unwrap()
    }

    fn text(framed: &[u8]) -> String {
        let s = String::from_utf8(framed.to_vec()).unwrap();
        let (len, rest) = s.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), rest.len(), "octet count");
        rest.to_owned()
    }

    #[test]
    fn an_alert_is_one_framed_rfc5424_message_with_its_fields_as_structured_data() {
        let mut a = alert(Severity::Serious);
        a.user = "y9\"smith] \\x".into();
        a.summary = "search\nfor <b>this</b>".into();
        let m = text(&destination(false).frame(&a));
        // local0 (16) * 8 + err (3) = 131.
        assert!(m.starts_with("<131>1 "), "{m}");
        assert!(
            m.contains(" invigilator - alert [alert@32473 id=\"7\" "),
            "{m}"
        );
        assert!(m.contains(r#" user="y9\"smith\] \\x""#), "{m}");
        assert!(
            m.contains(r#" link="https://console.school/alerts/7""#),
            "{m}"
        );
        assert!(m.contains(r#" delivery="siem-7""#), "{m}");
        // The message after the BOM, its newline gone.
        assert!(m.ends_with("] \u{feff}search for <b>this</b>"), "{m}");
        assert!(!m.contains('\n'));
        assert!(!m.contains("matched="), "not a safeguarding system: {m}");
    }

    #[test]
    fn a_device_s_strings_are_bounded_and_lose_their_control_and_format_characters() {
        assert_eq!(clean("a\u{2028}b\u{202E}c\td", 100), "a b c d");
        // Cut at a character boundary.
        assert_eq!(clean("ééé", 5), "éé");
        let mut a = alert(Severity::Serious);
        a.user = "x".repeat(100_000);
        a.summary = "y".repeat(100_000);
        let framed = destination(false).frame(&a);
        assert!(framed.len() < 8192, "{}", framed.len());
    }

    #[test]
    fn what_matched_goes_only_to_a_safeguarding_system_never_for_the_illegal_class() {
        let m = text(&destination(true).frame(&alert(Severity::Serious)));
        assert!(m.contains(r#" matched="how to hurt myself""#), "{m}");
        let m = text(&destination(true).frame(&alert(Severity::Illegal)));
        assert!(!m.contains("matched="), "{m}");
        // crit for the illegal class.
        assert!(m.starts_with("<130>1 "), "{m}");
    }

    #[test]
    fn a_ca_file_without_a_certificate_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        let cfg: SyslogConfig =
            toml::from_str("name = \"siem\"\naddress = \"127.0.0.1:6514\"\nca_file = \"ca.pem\"\n")
                .unwrap();
        let e = Syslog::load(cfg, dir.path()).err().unwrap().to_string();
        assert!(
            e.contains("syslog siem: CA file") && e.contains("no certificate"),
            "{e}"
        );
    }
}
