//! `collector.toml`: the collector's settings, serde-typed, with documented defaults.
//! `init` writes [`DEFAULT_CONFIG`], which explains every setting; a missing key takes the
//! default shown there.

mod handoff;
mod jobs;
mod roster;
mod sso;

pub use handoff::{Facility, SyslogConfig, WebhookConfig};
pub use jobs::{NotifyConfig, ReportsConfig, RetentionConfig};
pub use roster::{LoginField, RosterConfig};
use serde::Deserialize;
pub use sso::{CALLBACK_PATH, GroupRole, SsoConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file `init` writes. Kept in step with the `Default` impls below by a test.
pub const DEFAULT_CONFIG: &str = include_str!("default_collector.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorConfig {
    pub grpc: GrpcConfig,
    pub store: crate::store::StoreConfig,
    pub http: HttpConfig,
    pub extension: ExtensionConfig,
    pub agents: AgentsConfig,
    pub ingest: IngestConfig,
    pub quotas: QuotaConfig,
    pub lists: invigilator_lists::ListsConfig,
    pub console: ConsoleConfig,
    pub reports: ReportsConfig,
    pub notify: NotifyConfig,
    pub retention: RetentionConfig,
    pub metrics: MetricsConfig,
    /// Where alerts are handed off, each with its own outbox.
    pub webhooks: Vec<WebhookConfig>,
    pub syslog: Vec<SyslogConfig>,
    pub roster: RosterConfig,
}

/// The staff console's log-in rules.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// A log-in lasts at most this long.
    #[serde(with = "humantime_serde")]
    pub session_lifetime: Duration,
    /// A session unused for this long ends.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// This many wrong passwords in a row lock the account ...
    pub max_failed_logins: u32,
    /// ... for this long (an administrator's password reset unlocks it sooner).
    #[serde(with = "humantime_serde")]
    pub lockout: Duration,
    /// Mark the session cookie Secure and send Strict-Transport-Security: set it when the
    /// console is reached over HTTPS (a reverse proxy); browsers then never use plain HTTP.
    pub secure_cookies: bool,
    /// An approved reveal of a pupil's full addresses and searches lasts this long.
    #[serde(with = "humantime_serde")]
    pub reveal_for: Duration,
    /// The staff accounts that may approve a reveal (the two-person rule's second person).
    /// Named here, in a file only someone with the server's files can change, because an
    /// account administrator can create accounts with any role. Changes are audited and
    /// announced to every DSL and leadership account. Empty: no reveal can be approved.
    pub reveal_approvers: Vec<String>,
    /// Staff single sign-on (`[console.sso]`); None: local accounts only.
    pub sso: Option<SsoConfig>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            session_lifetime: Duration::from_secs(12 * 3600),
            idle_timeout: Duration::from_secs(30 * 60),
            max_failed_logins: 5,
            lockout: Duration::from_secs(15 * 60),
            secure_cookies: false,
            reveal_for: Duration::from_secs(24 * 3600),
            reveal_approvers: Vec::new(),
            sso: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    pub listen: SocketAddr,
    /// A TLS handshake that takes longer than this is dropped (slowloris protection).
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

/// The browser extension's own endpoint, for devices without an agent (Chromebooks): HTTPS
/// with a client certificate from `device-cert create`. Off unless a listener is set.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExtensionConfig {
    pub listen: Option<SocketAddr>,
    /// The Chromium extension ids whose uploads are taken (the request's `Origin`, which a web
    /// page cannot forge): this project's build by default; a school's own build adds its id.
    pub extension_ids: Vec<String>,
}

impl Default for ExtensionConfig {
    fn default() -> Self {
        Self {
            listen: None,
            extension_ids: vec![invigilator_visits::extension::CHROMIUM_EXTENSION_ID.to_owned()],
        }
    }
}

/// Prometheus metrics (`/metrics`). Off unless a listener or a token is set.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// A listener serving only `/metrics`, asking no token.
    pub listen: Option<SocketAddr>,
    /// A file holding the bearer token for `/metrics` on the console's listener; relative to
    /// the data directory unless absolute.
    pub token_file: Option<PathBuf>,
    /// How often the fleet's figures (agents per group, silent, spools) are read from the store.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            token_file: None,
            refresh_interval: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// Lifetime of the client certificates issued to agents. Agents renew when a third is left.
    #[serde(with = "humantime_serde")]
    pub cert_validity: Duration,
    /// An agent not heard from for this long raises an "agent silent" alert.
    #[serde(with = "humantime_serde")]
    pub silent_after: Duration,
    /// How often the collector looks for silent agents.
    #[serde(with = "humantime_serde")]
    pub silent_check_interval: Duration,
    /// An agent that keeps sending heartbeats, with events waiting in its spool, but whose
    /// acknowledged sequence has not advanced for this long raises an "agent stalled" alert.
    #[serde(with = "humantime_serde")]
    pub stalled_after: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Most events committed in one database transaction (group commit across agents).
    pub max_commit_events: usize,
    /// ... and at most this many MiB of events.
    pub max_commit_mib: usize,
    /// Events received but not yet committed, all agents together, in MiB. A stream waits for
    /// room before it reads more, so memory stays bounded whatever agents send.
    pub max_pending_mib: usize,
    /// The share of `max_pending_mib` one agent's stream may hold.
    pub max_pending_mib_per_agent: usize,
    /// How far back an event's device time may lie before the receive time (an agent that was
    /// offline delivers late). Older claims are clamped to this bound and flagged.
    #[serde(with = "humantime_serde")]
    pub offline_allowance: Duration,
    /// How far ahead of the collector's clock a device's clock may run. Later claims are
    /// clamped to the receive time plus this and flagged.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// How often agents' health (last seen, spool depth) is written to the database.
    #[serde(with = "humantime_serde")]
    pub health_flush_interval: Duration,
}

/// Per-agent limits. Excess is never dropped: it is not acknowledged, so the agent keeps it in
/// its spool and sends it later; hitting a limit raises an "agent quota" alert.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// Sustained ingest rate one agent may use, in MiB of events per minute ...
    pub rate_mib_per_minute: u64,
    /// ... with bursts of up to this many MiB (a device back from a week offline).
    pub burst_mib: u64,
    /// Events one agent may add to the store in one UTC day, in MiB. Counted in the database,
    /// so it holds when several collectors share one.
    pub daily_mib: u64,
    /// New event streams one agent may open per minute (bursts up to the same number). An
    /// agent reconnects with back-off; one that keeps opening streams is refused.
    pub streams_per_minute: u32,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            rate_mib_per_minute: 16,
            burst_mib: 64,
            daily_mib: 256,
            streams_per_minute: 12,
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:50051".parse().expect("valid address"),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
        }
    }
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            cert_validity: Duration::from_secs(30 * 24 * 3600),
            silent_after: Duration::from_secs(15 * 60),
            silent_check_interval: Duration::from_secs(30),
            stalled_after: Duration::from_secs(10 * 60),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_commit_events: 20_000,
            max_commit_mib: 16,
            max_pending_mib: 64,
            max_pending_mib_per_agent: 8,
            offline_allowance: Duration::from_secs(30 * 24 * 3600),
            clock_skew: Duration::from_secs(5 * 60),
            health_flush_interval: Duration::from_secs(5),
        }
    }
}

/// `collector.toml`'s text with `[store] url` set to `url` (a TOML string, escaped as such):
/// the line replaced where the table has one, the table added where the file has none. The
/// rest of the file, its comments included, is kept as it was.
pub fn with_store_url(config: &str, url: &str) -> String {
    let line = format!("url = {}", toml::Value::String(url.to_owned()));
    let mut out = Vec::new();
    let mut in_store = false;
    let mut done = false;
    for l in config.lines() {
        let t = l.trim_start();
        if t.starts_with('[') {
            if in_store && !done {
                out.push(line.clone());
                done = true;
            }
            in_store = t.starts_with("[store]");
        } else if in_store && !done && (t.starts_with("url ") || t.starts_with("url=")) {
            out.push(line.clone());
            done = true;
            continue;
        }
        out.push(l.to_owned());
    }
    if !done {
        if !in_store {
            out.push(String::new());
            out.push("[store]".into());
        }
        out.push(line);
    }
    out.join("\n") + "\n"
}

impl CollectorConfig {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("collector.toml")
    }

    /// Loads `collector.toml` from the data directory; a missing file means all defaults.
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let cfg: Self = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        cfg.validate()
            .map_err(|message| ConfigError::Invalid { path, message })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        self.store.validate()?;
        if self.extension.listen.is_some() && self.extension.extension_ids.is_empty() {
            return Err("extension.extension_ids must name at least one extension id".into());
        }
        if let Some(id) = self
            .extension
            .extension_ids
            .iter()
            .find(|id| !invigilator_visits::extension::is_chromium_id(id))
        {
            return Err(format!(
                "extension.extension_ids: {id:?} is not a Chromium extension id (32 letters a to p)"
            ));
        }
        if self.metrics.refresh_interval < Duration::from_secs(1) {
            return Err("metrics.refresh_interval must be at least 1s".into());
        }
        if self.agents.cert_validity < Duration::from_secs(10) {
            return Err("agents.cert_validity must be at least 10s".into());
        }
        if self.agents.silent_after.is_zero() || self.agents.silent_check_interval.is_zero() {
            return Err(
                "agents.silent_after and agents.silent_check_interval must be above zero".into(),
            );
        }
        if !(1..=1_000_000).contains(&self.ingest.max_commit_events) {
            return Err("ingest.max_commit_events must be between 1 and 1000000".into());
        }
        let i = &self.ingest;
        if !(1..=1024).contains(&i.max_commit_mib) || !(4..=4096).contains(&i.max_pending_mib) {
            return Err(
                "ingest.max_commit_mib must be 1..=1024 and ingest.max_pending_mib 4..=4096".into(),
            );
        }
        if !(4..=i.max_pending_mib).contains(&i.max_pending_mib_per_agent) {
            return Err("ingest.max_pending_mib_per_agent must be at least 4 (one largest batch) and at most ingest.max_pending_mib".into());
        }
        if i.clock_skew < Duration::from_secs(1) || i.offline_allowance < Duration::from_secs(3600)
        {
            return Err(
                "ingest.clock_skew must be at least 1s and ingest.offline_allowance at least 1h"
                    .into(),
            );
        }
        let q = &self.quotas;
        if q.rate_mib_per_minute == 0
            || q.burst_mib < 4
            || q.daily_mib == 0
            || q.streams_per_minute < 2
        {
            return Err("quotas.rate_mib_per_minute and quotas.daily_mib must be above zero, quotas.burst_mib at least 4 (one largest batch), quotas.streams_per_minute at least 2".into());
        }
        if self.agents.stalled_after < self.agents.silent_check_interval {
            return Err(
                "agents.stalled_after must be at least agents.silent_check_interval".into(),
            );
        }
        self.lists.validate()?;
        self.retention.validate()?;
        if self.console.max_failed_logins == 0 {
            return Err("console.max_failed_logins must be at least 1".into());
        }
        if self.console.idle_timeout.is_zero() || self.console.session_lifetime.is_zero() {
            return Err(
                "console.idle_timeout and console.session_lifetime must be above zero".into(),
            );
        }
        if let Some(sso) = &self.console.sso {
            sso.validate()?;
        }
        self.reports.validate()?;
        self.notify.validate()?;
        self.roster.validate()?;
        let mut names = std::collections::HashSet::new();
        for w in &self.webhooks {
            w.validate()?;
            if !names.insert(&w.name) {
                return Err(format!("webhooks: the name {:?} is used twice", w.name));
            }
        }
        // One namespace: a name is what the audit trail says an alert was handed off to.
        for s in &self.syslog {
            s.validate()?;
            if !names.insert(&s.name) {
                return Err(format!(
                    "syslog: the name {:?} is used twice (webhooks and syslog share names)",
                    s.name
                ));
            }
        }
        if self.console.reveal_for.is_zero() {
            return Err("console.reveal_for must be above zero".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_url_is_set_in_place_or_added_and_nothing_else_changes() {
        let set = with_store_url(DEFAULT_CONFIG, "host=/run/postgresql dbname=\"inv\"");
        let cfg: CollectorConfig = toml::from_str(&set).unwrap();
        assert_eq!(cfg.store.url, "host=/run/postgresql dbname=\"inv\"");
        assert_eq!(set.lines().count(), DEFAULT_CONFIG.lines().count());
        let old = "[grpc]\nlisten = \"0.0.0.0:50051\"\n";
        let added: CollectorConfig =
            toml::from_str(&with_store_url(old, "postgres://x/y")).unwrap();
        assert_eq!(added.store.url, "postgres://x/y");
        assert_eq!(added.grpc.listen.port(), 50051);
        let no_url = "[store]\nmax_idle = 4\n[http]\n";
        let cfg: CollectorConfig =
            toml::from_str(&with_store_url(no_url, "postgres://x/y")).unwrap();
        assert_eq!(
            (cfg.store.url.as_str(), cfg.store.max_idle),
            ("postgres://x/y", 4)
        );
    }

    #[test]
    fn the_written_default_file_says_what_the_code_defaults_to() {
        let parsed: CollectorConfig = toml::from_str(DEFAULT_CONFIG).unwrap();
        assert_eq!(parsed, CollectorConfig::default());
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            CollectorConfig::path(dir.path()),
            "[agents]\nsilent_after = \"soon\"\n",
        )
        .unwrap();
        let err = CollectorConfig::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("collector.toml") && err.contains("silent_after"),
            "{err}"
        );
        std::fs::write(CollectorConfig::path(dir.path()), "[agentz]\n").unwrap();
        let err = CollectorConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("agentz"), "{err}");
    }
}
