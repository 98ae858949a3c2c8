//! Operating-system specific code, one module per platform. Sources call into these; nothing here
//! knows about events or the spool.

#[cfg(target_os = "linux")]
pub mod linux;
pub mod usb_names;
/// Windows paths, ids and bindings. Its pure parts (paths, device ids, ETW payloads) build and
/// are tested on every platform, so the Linux test run checks them too.
pub mod windows;

/// Where the agent keeps its key, certificates, settings and spool when `--state-dir` is not
/// given on Windows: `%ProgramData%\Invigilator`. (On Unix the directory must be named.)
#[cfg(windows)]
pub fn default_state_dir() -> std::path::PathBuf {
    let program_data = std::env::var("ProgramData").ok();
    windows::state_dir(program_data.as_deref()).into()
}

#[cfg(test)]
mod tests {
    /// The direction is sources → platform, never back: a binding that needed a source's type
    /// would tie the OS layer to what is built on it.
    #[test]
    fn no_platform_binding_imports_a_source() {
        fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (n, line) in text.lines().enumerate() {
                        if line.contains("crate::sources") || line.contains("crate::spool") {
                            found.push(format!("{}:{}: {line}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
        let mut found = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/platform"),
            &mut found,
        );
        // This test's own source names the paths it looks for.
        found.retain(|l| !l.contains("platform/mod.rs"));
        assert!(found.is_empty(), "platform/ imports sources: {found:#?}");
    }
}
