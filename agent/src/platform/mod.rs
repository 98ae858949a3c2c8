//! Operating-system specific code, one module per platform. Sources call into these; nothing here
//! knows about events or the spool.

#[cfg(target_os = "linux")]
pub mod linux;
