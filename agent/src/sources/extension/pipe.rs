//! The extension's transport on Windows: a local named pipe (`\\.\pipe\invigilator-browser`)
//! that every signed-in user may open to read and write, the user being the account of the
//! client process's token, and the browser the host's parent (through the `cmd.exe` Chrome
//! starts hosts with).
//!
//! Squatting: only SYSTEM and Administrators may create instances of the pipe (the descriptor
//! gives users no `FILE_CREATE_PIPE_INSTANCE`), so once the agent holds the name no user can
//! put an instance of their own beside it to catch another user's host. A user who takes the
//! name first (while the agent is stopped) makes the agent's first instance fail: the source
//! does not start, says why, and the heartbeat reports the extension missing for each browser
//! that runs without it connected.

use super::conversation::{self, Shared};
use super::{ExtensionConfig, Presence};
use crate::platform::windows::pipe::{self, PipeSecurity};
use crate::sources::SourceContext;
use std::ffi::OsString;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};
use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};

/// SYSTEM and Administrators: everything; authenticated users: read, write and read the
/// attributes of the pipe (0x12018b: no FILE_CREATE_PIPE_INSTANCE). `P`: not inherited.
const SDDL: &str = "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;0x12018b;;;AU)";

/// Creates the pipe's first instance (failing if anyone else holds the name) and starts
/// accepting.
pub(super) fn start(
    cfg: ExtensionConfig,
    cx: &SourceContext,
    presence: Arc<Presence>,
) -> io::Result<()> {
    let name = cfg.socket.clone().into_os_string();
    let security = PipeSecurity::from_sddl(SDDL)?;
    let mut options = ServerOptions::new();
    options.reject_remote_clients(true);
    let first = pipe::create_server(options.clone().first_pipe_instance(true), &name, &security)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create the pipe {} (another process may hold its name): {e}",
                    name.to_string_lossy()
                ),
            )
        })?;
    tracing::info!(pipe = %name.to_string_lossy(), "extension: listening for the browser extension's host");
    let listener = Listener {
        name,
        options,
        security,
    };
    tokio::spawn(listener.accept(first, Arc::new(Shared::new(cfg, cx, presence))));
    Ok(())
}

struct Listener {
    name: OsString,
    options: ServerOptions,
    security: PipeSecurity,
}

impl Listener {
    /// Another instance, for the next client: retried, since hosts wait while none is free.
    async fn next_instance(&self) -> NamedPipeServer {
        loop {
            match pipe::create_server(&self.options, &self.name, &self.security) {
                Ok(server) => return server,
                Err(e) => {
                    tracing::warn!(error = %e, "extension: cannot create a pipe instance");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn accept(self, mut server: NamedPipeServer, shared: Arc<Shared>) {
        loop {
            let connected = server.connect().await;
            // The next client connects to a fresh instance while this one is served.
            let stream = std::mem::replace(&mut server, self.next_instance().await);
            if let Err(e) = connected {
                tracing::debug!(error = %e, "extension: a client left before it was accepted");
                continue;
            }
            if shared.closed() {
                return;
            }
            let client = match pipe::client(&stream, SystemTime::now()) {
                Ok(client) => client,
                Err(e) => {
                    tracing::warn!(error = %e, "extension: cannot tell who opened the pipe; connection dropped");
                    continue;
                }
            };
            let sid = client.sid.clone();
            // The extension counts as present for the browser that started the host, found
            // from the host's process, never from what the hello says.
            let who = async move {
                let pipe::Client { pid, sid } = client;
                let fallback = sid.clone();
                tokio::task::spawn_blocking(move || {
                    let browser = browser_of(pid, &sid);
                    (super::account_name(&sid), browser)
                })
                .await
                .unwrap_or_else(|_| (fallback, None))
            };
            conversation::admit(stream, sid, who, &shared);
        }
    }
}

/// The browser that started the host process `pid`: `pid` runs this agent's executable, and
/// its parent (or, for Chrome, which starts hosts through `cmd.exe`, that one's parent) is a
/// known browser run by the same account.
fn browser_of(pid: u32, sid: &str) -> Option<&'static str> {
    let own = std::env::current_exe().ok()?;
    let mut sys = System::new().ok()?;
    let kind = ProcessRefreshKind::nothing()
        .with_exe(UpdateKind::Always)
        .with_user(UpdateKind::Always);
    let mut look = |pid: Pid| {
        sys.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), true, kind);
        let p = sys.process(pid)?;
        Some((
            p.exe()?.to_path_buf(),
            p.parent(),
            p.user_id().map(|u| u.to_string()),
        ))
    };
    let (exe, mut parent, _) = look(Pid::from_u32(pid))?;
    if !same_file(&exe, &own) {
        return None;
    }
    for _ in 0..2 {
        let (exe, grandparent, user) = look(parent?)?;
        if user.as_deref() != Some(sid) {
            return None;
        }
        if let Some(browser) = crate::posture::browser_of_exe(&exe) {
            return Some(browser);
        }
        let is_cmd = exe
            .file_name()
            .is_some_and(|n| n.eq_ignore_ascii_case("cmd.exe"));
        if !is_cmd {
            return None;
        }
        parent = grandparent;
    }
    None
}

/// Windows paths compare without regard to case.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    a.as_os_str().eq_ignore_ascii_case(b.as_os_str())
}
