//! The USB source: one event per USB device attached, detached, or already present at start.
//! On Linux from the kernel's uevents and sysfs (`linux`); on Windows from Plug and Play
//! readings (`pnp`, whose grouping and comparison build and are tested everywhere).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{SourceConfig, SourceContext, SourceError};

#[cfg(target_os = "linux")]
pub mod linux;
pub mod pnp;

/// `[usb]` in agent.toml.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UsbConfig {
    /// Report USB devices attached, detached and present at start. Default true.
    pub enabled: bool,
    /// Where sysfs is mounted (Linux). Only tests change it (to a fake tree).
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

impl SourceConfig for UsbConfig {
    const NAME: &'static str = "usb";
    type Handle = ();

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn build(&self, cx: &SourceContext) -> Result<(), SourceError> {
        #[cfg(target_os = "linux")]
        let started = linux::spawn(
            linux::UsbSourceConfig {
                hostname: cx.hostname.clone(),
                sysfs_root: self.sysfs_root.clone(),
            },
            cx.events.clone(),
        );
        #[cfg(windows)]
        let started = pnp::spawn(cx.hostname.clone(), cx.events.clone());
        #[cfg(not(any(target_os = "linux", windows)))]
        let started: std::io::Result<()> = {
            let _ = cx;
            Err(std::io::Error::other("no USB source on this platform"))
        };
        started.map_err(SourceError::new::<Self>)
    }
}
