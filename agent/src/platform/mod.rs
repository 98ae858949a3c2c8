//! Operating-system specific code, one module per platform. Sources call into these; nothing here
//! knows about events or the spool.

#[cfg(target_os = "linux")]
pub mod linux;
pub mod usb_names;
/// Windows paths, ids and bindings. Its pure parts (paths, device ids, ETW payloads, session
/// bookkeeping) build and are tested on every platform, so the Linux test run checks them too.
pub mod windows;

/// Where the agent keeps its key, certificates, settings and spool when `--state-dir` is not
/// given on Windows: `%ProgramData%\Invigilator`. (On Unix the directory must be named.)
#[cfg(windows)]
pub fn default_state_dir() -> std::path::PathBuf {
    let program_data = std::env::var("ProgramData").ok();
    windows::state_dir(program_data.as_deref()).into()
}
