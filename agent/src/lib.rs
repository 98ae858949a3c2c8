//! Invigilator agent: sources observe the device, the spool keeps what they saw on disk, the
//! uplink delivers it to the collector over mutual TLS.
// `deny`, not `forbid`: the thin OS binding modules (`platform::windows::{etw, setupapi,
// volumes, wts}`, and the libbpf skeleton generated for `platform::linux::exec_bpf`) opt back
// in with `#![allow(unsafe_code)]`, each block carrying a SAFETY note (the generated one, the
// notes of libbpf-rs).
// Nothing else may.
#![deny(unsafe_code)]

pub mod config;
pub mod dial;
pub mod enroll;
pub mod heartbeat;
pub mod identity;
pub mod native_host;
pub mod one_report;
pub mod platform;
pub mod posture;
pub mod run;
/// The Windows service host: the agent under the service control manager.
#[cfg(windows)]
pub mod service;
pub mod sources;
pub mod spool;
pub mod tls;
pub mod uplink;

/// This device's host name, as reported with every event.
#[cfg(unix)]
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// This device's host name, as reported with every event.
#[cfg(windows)]
pub fn hostname() -> String {
    sysinfo::System::host_name().unwrap_or_else(|_| "unknown".into())
}

/// e.g. "Linux (Debian GNU/Linux 12) 6.1.0".
pub fn os_description() -> String {
    let name = sysinfo::System::long_os_version().unwrap_or_else(|_| std::env::consts::OS.into());
    match sysinfo::System::kernel_version() {
        Ok(k) => format!("{name} {k}"),
        Err(_) => name,
    }
}
