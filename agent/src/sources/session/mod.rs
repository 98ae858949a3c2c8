//! The session source: logons, logoffs, screen locks and idleness.
//!
//! On Linux they come from systemd-logind over D-Bus (`logind`). On Windows they reach the
//! service from the service control manager (`crate::service`), and `windows` turns them into
//! the same events; that bookkeeping is pure and built and tested everywhere.

use serde::{Deserialize, Serialize};

use super::{SourceConfig, SourceContext, SourceError};

#[cfg(unix)]
pub mod logind;
pub mod windows;

/// `[session]` in agent.toml.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Report logons, logoffs, screen locks and idleness. Default true.
    pub enabled: bool,
    /// D-Bus address where logind is found (e.g. "unix:path=/run/dbus/system_bus_socket");
    /// unset means the system bus. Linux only.
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

impl SourceConfig for SessionConfig {
    const NAME: &'static str = "session";
    type Handle = ();

    fn enabled(&self) -> bool {
        self.enabled
    }

    /// On Linux, follows logind on a task of its own (it retries while logind is away, so it
    /// never fails to start). On Windows the service delivers session changes; `run` from a
    /// console has none.
    fn build(&self, cx: &SourceContext) -> Result<(), SourceError> {
        #[cfg(unix)]
        {
            use tracing::Instrument;
            let settings = logind::SessionSourceConfig {
                hostname: cx.hostname.clone(),
                bus_address: self.bus_address.clone(),
            };
            tokio::spawn(logind::run(settings, cx.events.clone()).in_current_span());
        }
        #[cfg(not(unix))]
        let _ = cx;
        Ok(())
    }
}
