//! `agent.toml` in the state directory: written by `enroll`, read by `run`.
//! The `[agent]` table is the identity enrolment produced; the other tables are settings with
//! documented defaults that an administrator may override.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
}

/// Who this agent is and where it reports. Written once by `enroll`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Enrolment {
    /// https://HOST:PORT of the collector; HOST must be a name in its server certificate.
    pub collector: String,
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessConfig {
    /// Poll /proc instead of using the kernel's eBPF or proc connector (which need root).
    pub force_poll: bool,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Name programs in the kernel with the eBPF exec program where the machine allows it
    /// (BTF, Linux 5.8+, no lockdown at "confidentiality"), else use the proc connector.
    /// Default true.
    pub ebpf: bool,
    /// The eBPF ring buffer in bytes: a power of two of at least 4096. Its pages count in the
    /// agent's memory; a full ring loses records, each loss reported as a gap. Default 1 MiB.
    pub ring_buffer_bytes: u64,
    /// Where the kernel publishes its BTF and its lockdown level. Only tests change them.
    pub btf_path: PathBuf,
    pub lockdown_path: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UsbConfig {
    /// Report USB devices attached, detached and present at start.
    pub enabled: bool,
    /// Where sysfs is mounted. Only tests change it (to a fake tree).
    pub sysfs_root: PathBuf,
}

impl Default for UsbConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sysfs_root: PathBuf::from("/sys"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Report logons, logoffs, screen locks and idleness from systemd-logind.
    pub enabled: bool,
    /// D-Bus address where logind is found (e.g. "unix:path=/run/dbus/system_bus_socket");
    /// unset means the system bus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus_address: Option<String>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bus_address: None,
        }
    }
}

/// The browsing source (see `sources::browsing`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BrowsingConfig {
    pub enabled: bool,
    /// Look for profiles in every user's home directory.
    pub scan_homes: bool,
    /// Quiet time after a history change before it is read.
    #[serde(with = "humantime_serde")]
    pub debounce: Duration,
    /// Safety-net check of every profile, in case a change notification was lost.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often to look for new profiles.
    #[serde(with = "humantime_serde")]
    pub rediscover_interval: Duration,
    /// How much existing history of a newly found profile is reported.
    #[serde(with = "humantime_serde")]
    pub backfill: Duration,
    /// More profile locations, e.g. `[{ browser = "chromium", path = "/srv/kiosk/chromium" }]`.
    pub extra_roots: Vec<crate::sources::browsing::Root>,
    /// Largest history database (or -wal / -journal) copied for reading, in bytes; a larger
    /// one is refused unread and warned about (default 512 MiB).
    pub max_history_bytes: u64,
    /// Longest the queries of one profile's read may run before they are stopped (default 5 s).
    #[serde(with = "humantime_serde")]
    pub read_deadline: Duration,
}

impl Default for BrowsingConfig {
    fn default() -> Self {
        let d = crate::sources::browsing::BrowsingSourceConfig::default();
        Self {
            enabled: true,
            scan_homes: d.scan_homes,
            debounce: d.debounce,
            poll_interval: d.poll_interval,
            rediscover_interval: d.rediscover_interval,
            backfill: d.backfill,
            extra_roots: Vec::new(),
            max_history_bytes: d.limits.max_bytes,
            read_deadline: d.limits.deadline,
        }
    }
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

impl Default for ProcessConfig {
    fn default() -> Self {
        let source = crate::sources::process::ProcessSourceConfig::default();
        Self {
            force_poll: source.force_poll,
            poll_interval: source.poll_interval,
            ebpf: source.ebpf,
            ring_buffer_bytes: source.ring_buffer_bytes,
            btf_path: source.btf_path,
            lockdown_path: source.lockdown_path,
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
        let ring = cfg.process.ring_buffer_bytes;
        if !ring.is_power_of_two() || !(4096..=256 << 20).contains(&ring) {
            return Err(invalid(&format!(
                "process.ring_buffer_bytes must be a power of two from 4096 to 268435456 \
                 (256 MiB), not {ring}"
            )));
        }
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
                collector: "https://localhost:50051".into(),
                agent_id: "a".into(),
                group: "g".into(),
            },
            spool: SpoolConfig::default(),
            uplink: UplinkConfig::default(),
            process: ProcessConfig::default(),
            usb: UsbConfig::default(),
            session: SessionConfig::default(),
            browsing: BrowsingConfig::default(),
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
    }
}
