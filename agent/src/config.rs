//! `agent.toml` in the state directory: written by `enroll`, read by `run`.
//! The `[agent]` table is the identity enrolment produced; the other tables are settings with
//! documented defaults that an administrator may override.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

// Each source's table is the source's own type, kept beside it.
pub use crate::sources::browsing::BrowsingConfig;
pub use crate::sources::extension::ExtensionConfig;
pub use crate::sources::process::ProcessConfig;
pub use crate::sources::session::SessionConfig;
pub use crate::sources::usb::UsbConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path} not found: enrol this device first with `invigilator-agent enroll`")]
    NotEnrolled { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub agent: Enrolment,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub uplink: UplinkConfig,
    #[serde(default)]
    pub process: ProcessConfig,
    #[serde(default)]
    pub usb: UsbConfig,
    pub session: SessionConfig,
    pub browsing: BrowsingConfig,
    /// Added after agents were deployed: an agent.toml without it takes the defaults.
    #[serde(default)]
    pub extension: ExtensionConfig,
}

/// Who this agent is and where it reports. Written once by `enroll`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Enrolment {
    /// https://HOST:PORT of the collector (HOST must be a name in its server certificate), or
    /// a list of them: collectors sharing one database, any of which takes this agent's events.
    pub collector: crate::dial::Collectors,
    pub agent_id: String,
    pub group: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Largest total size of undelivered events kept on disk. When full, the oldest are dropped
    /// and the count is reported to the collector.
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UplinkConfig {
    /// Most events in one batch sent to the collector.
    pub max_batch: usize,
    /// Most bytes of encoded events in one batch (at least one event is always sent; each is
    /// under 64 KiB). Far below the 4 MiB message limit, so that no batch is ever refused.
    pub max_batch_bytes: usize,
    /// Batches sent but not yet acknowledged, at most.
    pub window: usize,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Longest wait between reconnection attempts (the wait grows to this, with jitter).
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Default for UplinkConfig {
    fn default() -> Self {
        Self {
            max_batch: 500,
            max_batch_bytes: 1024 * 1024,
            window: 4,
            heartbeat_interval: Duration::from_secs(30),
            reconnect_max: Duration::from_secs(60),
        }
    }
}

impl AgentConfig {
    /// A freshly enrolled agent's configuration: every setting at its default.
    pub fn new(agent: Enrolment) -> Self {
        Self {
            agent,
            spool: SpoolConfig::default(),
            uplink: UplinkConfig::default(),
            process: ProcessConfig::default(),
            usb: UsbConfig::default(),
            session: SessionConfig::default(),
            browsing: BrowsingConfig::default(),
            extension: ExtensionConfig::default(),
        }
    }

    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("agent.toml")
    }

    pub fn load(state_dir: &Path) -> Result<Self, ConfigError> {
        let path = Self::path(state_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotEnrolled { path });
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let cfg: Self = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let invalid = |message: &str| ConfigError::Invalid {
            path: path.clone(),
            message: message.into(),
        };
        if !(1..=invigilator_proto::MAX_BATCH_EVENTS).contains(&cfg.uplink.max_batch) {
            return Err(invalid("uplink.max_batch must be between 1 and 2000"));
        }
        let most = invigilator_proto::MAX_MESSAGE_BYTES / 2;
        if !(invigilator_proto::limits::MAX_EVENT_BYTES..=most)
            .contains(&cfg.uplink.max_batch_bytes)
        {
            return Err(invalid(&format!(
                "uplink.max_batch_bytes must be between {} and {most}",
                invigilator_proto::limits::MAX_EVENT_BYTES
            )));
        }
        if cfg.uplink.window == 0 || cfg.uplink.heartbeat_interval.is_zero() {
            return Err(invalid(
                "uplink.window and uplink.heartbeat_interval must be above zero",
            ));
        }
        if cfg.spool.max_bytes < 64 * 1024 {
            return Err(invalid("spool.max_bytes must be at least 65536"));
        }
        cfg.process.validate().map_err(|m| invalid(&m))?;
        cfg.extension.validate().map_err(|m| invalid(&m))?;
        #[cfg(unix)]
        if let Some(address) = &cfg.session.bus_address {
            // Caught here rather than as a warning every minute from a source that cannot start.
            if let Err(e) = address.parse::<zbus::Address>() {
                return Err(invalid(&format!(
                    "session.bus_address {address:?} is not a D-Bus address: {e}"
                )));
            }
        }
        Ok(cfg)
    }

    /// The file `enroll` writes: identity plus every default, commented.
    pub fn render(&self) -> String {
        format!(
            "# Invigilator agent state. Written by `invigilator-agent enroll`.\n\
             # [agent] is this device's identity: do not edit it. The other tables are settings;\n\
             # the values shown are the defaults.\n\n{}",
            toml::to_string(self).expect("config serialises")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_then_load_round_trips_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AgentConfig {
            agent: Enrolment {
                collector: crate::dial::Collectors::new(["https://localhost:50051".into()])
                    .unwrap(),
                agent_id: "a".into(),
                group: "g".into(),
            },
            spool: SpoolConfig::default(),
            uplink: UplinkConfig::default(),
            process: ProcessConfig::default(),
            usb: UsbConfig::default(),
            session: SessionConfig::default(),
            browsing: BrowsingConfig::default(),
            extension: ExtensionConfig::default(),
        };
        std::fs::write(AgentConfig::path(dir.path()), cfg.render()).unwrap();
        assert_eq!(AgentConfig::load(dir.path()).unwrap(), cfg);
        std::fs::write(
            AgentConfig::path(dir.path()),
            cfg.render().replace("max_batch = 500", "max_batch = 0"),
        )
        .unwrap();
        let err = AgentConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("max_batch"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        assert!(
            AgentConfig::load(empty.path())
                .unwrap_err()
                .to_string()
                .contains("enrol")
        );
        std::fs::write(
            AgentConfig::path(dir.path()),
            cfg.render()
                .replace("[session]\n", "[session]\nbus_address = \"nonsense\"\n"),
        )
        .unwrap();
        let err = AgentConfig::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("session.bus_address \"nonsense\" is not a D-Bus address"),
            "{err}"
        );
        std::fs::write(
            AgentConfig::path(dir.path()),
            cfg.render().replace(
                crate::sources::extension::EXTENSION_ID,
                "chrome-extension://mkjmmkmajbhcpdaljidmdhfegfobbiin/",
            ),
        )
        .unwrap();
        let err = AgentConfig::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("extension.chromium_ids") && err.contains("32 letters a to p"),
            "{err}"
        );
    }
}
