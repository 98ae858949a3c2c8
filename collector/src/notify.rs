//! Email to the safeguarding lead when an alert at or above a severity is raised. The mail says
//! only that there is an alert, how serious, its category, the device and the time, with a link
//! to the console: nothing a pupil did (no address, search, title or name) leaves the collector
//! by email.
//!
//! Where it got to is kept by the store's outbox (`store::outbox`): a restart neither repeats
//! nor skips alerts.

use crate::config::NotifyConfig;
use crate::serve::SystemKey;
use crate::store::accounts::{self, Role};
use crate::store::outbox::{self, Outgoing};
use crate::store::{self, Admin, Leadership, Store, System, audit};
use lettre::message::{Mailbox, header::ContentType};
use lettre::{Message, SmtpTransport, Transport};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    #[error(transparent)]
    Accounts(#[from] accounts::AccountError),
    #[error("no one to notify: set notify.to, or give the DSL accounts email addresses")]
    NoRecipients,
    #[error("building the mail: {0}")]
    Mail(String),
    #[error("sending through {host}:{port}: {message}")]
    Send {
        host: String,
        port: u16,
        message: String,
    },
}

/// Up to this many alerts in one poll get a mail each; more make one digest.
const SINGLE_MAILS: usize = 3;
const BATCH: i64 = 200;

fn line(a: &Outgoing, console_url: &str) -> String {
    let at = chrono::DateTime::from_timestamp_micros(a.observed_at_us)
        .unwrap_or_default()
        .with_timezone(&chrono_tz::Europe::London)
        .format("%a %d %b %Y %H:%M %Z");
    format!(
        "Alert #{} ({}, category {}) on device {} at {} - open {}/alerts/{}",
        a.id,
        a.severity,
        a.category,
        a.hostname,
        at,
        console_url.trim_end_matches('/'),
        a.id
    )
}

/// One poll: finds new alerts at or above the severity, audits each and moves the position on,
/// then mails them. The first poll of a new install only records where alerts stand now.
/// Returns how many alerts were notified; an error before the audit leaves the alerts for the
/// next poll, a failed send does not.
pub fn poll_once(sys: &System<'_>, cfg: &NotifyConfig) -> Result<usize, NotifyError> {
    let Some(last) = outbox::position(sys, outbox::NOTIFY)? else {
        outbox::start_at_newest(sys, outbox::NOTIFY)?;
        return Ok(0);
    };
    let scanned = outbox::after(sys, last, BATCH)?;
    let Some(furthest) = scanned.last().map(|a| a.id) else {
        return Ok(0);
    };
    let due: Vec<&Outgoing> = scanned
        .iter()
        .filter(|a| a.severity >= cfg.min_severity)
        .collect();
    if due.is_empty() {
        outbox::set_position(sys, outbox::NOTIFY, furthest)?;
        return Ok(0);
    }
    // Everything that can fail without the network (addresses, the relay's CA) fails here,
    // before the alerts are passed, so that fixing the settings sends them.
    let mail = prepare(&sys.admin(), cfg, &due)?;
    outbox::pass(sys, &due, furthest)?;
    // Audited and passed first, so no mail leaves without its entry. A failed send is not
    // retried: a lost mail is better than a mail storm (a relay that takes the message and then
    // times out would have it sent again at every poll), and the console still shows the alert.
    if let Err(e) = mail.send() {
        tracing::error!(
            error = %e,
            first = due[0].id,
            last = furthest,
            "notify: mail not sent; these alerts are not sent again, see the console"
        );
        return Err(e);
    }
    Ok(due.len())
}

fn recipients(admin: &Admin<'_>, cfg: &NotifyConfig) -> Result<Vec<Mailbox>, NotifyError> {
    let addresses: Vec<String> = if cfg.to.is_empty() {
        accounts::active_with_role(admin, Role::Dsl)?
            .into_iter()
            .map(|a| a.email)
            .filter(|e| !e.trim().is_empty())
            .collect()
    } else {
        cfg.to.clone()
    };
    let boxes: Vec<Mailbox> = addresses
        .iter()
        .filter_map(|a| match a.parse() {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(address = %a, error = %e, "notify: skipping an address that is not one");
                None
            }
        })
        .collect();
    if boxes.is_empty() {
        return Err(NotifyError::NoRecipients);
    }
    Ok(boxes)
}

/// Mails ready to go, with the relay to send them through.
struct Outbox {
    transport: SmtpTransport,
    messages: Vec<Message>,
    host: String,
    port: u16,
}

impl Outbox {
    fn send(&self) -> Result<(), NotifyError> {
        for msg in &self.messages {
            self.transport.send(msg).map_err(|e| NotifyError::Send {
                host: self.host.clone(),
                port: self.port,
                message: e.to_string(),
            })?;
        }
        Ok(())
    }
}

fn prepare(
    admin: &Admin<'_>,
    cfg: &NotifyConfig,
    due: &[&Outgoing],
) -> Result<Outbox, NotifyError> {
    let to = recipients(admin, cfg)?;
    let from: Mailbox = cfg
        .from
        .parse()
        .map_err(|e| NotifyError::Mail(format!("from {:?}: {e}", cfg.from)))?;
    let mails: Vec<(String, String)> = if due.len() <= SINGLE_MAILS {
        due.iter()
            .map(|a| {
                (
                    format!(
                        "Invigilator: alert #{} ({}, {})",
                        a.id, a.severity, a.category
                    ),
                    format!("{}\n", line(a, &cfg.console_url)),
                )
            })
            .collect()
    } else {
        let body: String = due
            .iter()
            .map(|a| line(a, &cfg.console_url) + "\n")
            .collect();
        vec![(format!("Invigilator: {} new alerts", due.len()), body)]
    };
    let messages = mails
        .into_iter()
        .map(|(subject, body)| {
            let mut m = Message::builder().from(from.clone()).subject(subject);
            for t in &to {
                m = m.to(t.clone());
            }
            m.header(ContentType::TEXT_PLAIN)
                .body(body)
                .map_err(|e| NotifyError::Mail(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    Ok(Outbox {
        transport: transport(cfg)?,
        messages,
        host: cfg.smtp_host.clone(),
        port: cfg.smtp_port,
    })
}

fn transport(cfg: &NotifyConfig) -> Result<SmtpTransport, NotifyError> {
    use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
    let builder = SmtpTransport::builder_dangerous(&cfg.smtp_host)
        .port(cfg.smtp_port)
        .timeout(Some(Duration::from_secs(30)));
    if !cfg.starttls {
        return Ok(builder.build());
    }
    let tls_err = |e: &dyn std::fmt::Display| NotifyError::Mail(format!("STARTTLS: {e}"));
    let mut params = TlsParameters::builder(cfg.smtp_host.clone());
    if let Some(path) = cfg.ca_file.as_deref() {
        let pem = std::fs::read(path).map_err(|e| tls_err(&format!("{}: {e}", path.display())))?;
        let ca = Certificate::from_pem(&pem).map_err(|e| tls_err(&e))?;
        params = params
            .certificate_store(CertificateStore::None)
            .add_root_certificate(ca);
    }
    let params = params.build_rustls().map_err(|e| tls_err(&e))?;
    // Required, not opportunistic: a relay that stops offering TLS gets no mail in clear.
    Ok(builder.tls(Tls::Required(params)).build())
}

/// The notifier (spawned by `serve`).
pub async fn run(store: Store, key: SystemKey, cfg: NotifyConfig, leader: Leadership) {
    if !cfg.enabled {
        return;
    }
    let mut tick = tokio::time::interval(cfg.poll_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !leader.is_leader() {
            continue;
        }
        let (store, key, cfg) = (store.clone(), key.clone(), cfg.clone());
        let done =
            tokio::task::spawn_blocking(move || store.system(&key, |sys| poll_once(sys, &cfg)))
                .await;
        match done {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(alerts = n, "safeguarding lead notified"),
            Ok(Err(e)) => tracing::error!(error = %e, "notify failed"),
            Err(e) => tracing::error!(error = %e, "notify task failed"),
        }
    }
}

#[cfg(test)]
#[path = "notify_tests.rs"]
mod tests;
