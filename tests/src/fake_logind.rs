//! A real private `dbus-daemon`, and a test service on it that plays systemd-logind: the
//! `org.freedesktop.login1` name, the Manager at `/org/freedesktop/login1` and one Session object
//! per session at `/org/freedesktop/login1/session/<escaped id>`, with logind's interface names,
//! method and signal signatures and property names and types. logind itself cannot run here (it
//! needs systemd as PID 1), but everything the agent does over the bus is exercised for real.
//!
//! The service runs on its own Tokio runtime thread so it keeps answering the agent's calls
//! while a test thread sleeps or blocks; its methods are synchronous.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};
use zbus::{Connection, interface};

pub const LOGIND: &str = "org.freedesktop.login1";
pub const MANAGER_PATH: &str = "/org/freedesktop/login1";

/// A private bus: `dbus-daemon --nofork` with a configuration that lets any client own any
/// name (the system bus would only let root own `org.freedesktop.login1`). Killed on drop.
pub struct BusDaemon {
    child: Child,
    dir: tempfile::TempDir,
    /// `unix:path=...`, the form the agent's `[session] bus_address` takes.
    pub address: String,
}

impl BusDaemon {
    pub fn start() -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"))
    }

    /// Listening at `dir/bus`, e.g. where an agent is already trying to connect.
    pub fn start_in(dir: tempfile::TempDir) -> Self {
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>invigilator-test</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("write bus.conf");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Its complaints (e.g. that it may not raise its fd limit) go to a file, not the
            // test output.
            .stderr(std::fs::File::create(dir.path().join("dbus-daemon.log")).expect("log"))
            .spawn()
            .expect("dbus-daemon (Debian package dbus-daemon; tests/setup.sh installs it)");
        // The daemon prints its address once it listens.
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("dbus-daemon address");
        assert!(
            line.starts_with("unix:"),
            "dbus-daemon did not start: {line:?}"
        );
        Self {
            child,
            address: format!("unix:path={}", socket.display()),
            dir,
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for BusDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a session is, as logind would report it.
#[derive(Debug, Clone, Default)]
pub struct SessionSpec {
    pub id: String,
    pub uid: u32,
    pub user: String,
    pub seat: String,
    pub tty: String,
    pub display: String,
    pub remote: bool,
    pub remote_host: String,
    /// "x11", "wayland", "tty", ...
    pub session_type: String,
    /// "user", "greeter", ...
    pub class: String,
}

impl SessionSpec {
    /// A graphical session on seat0.
    pub fn desktop(id: &str, uid: u32, user: &str) -> Self {
        Self {
            id: id.into(),
            uid,
            user: user.into(),
            seat: "seat0".into(),
            tty: "tty2".into(),
            display: ":0".into(),
            session_type: "x11".into(),
            class: "user".into(),
            ..Self::default()
        }
    }

    /// A remote (SSH) session: no seat, a host.
    pub fn ssh(id: &str, uid: u32, user: &str, host: &str) -> Self {
        Self {
            id: id.into(),
            uid,
            user: user.into(),
            tty: "pts/0".into(),
            remote: true,
            remote_host: host.into(),
            session_type: "tty".into(),
            class: "user".into(),
            ..Self::default()
        }
    }
}

/// logind's object path for a session id: the id escaped as systemd's `bus_label_escape` does
/// (every byte other than an ASCII letter, or a digit not in first place, becomes `_xx`), so
/// session "1" lives at `.../session/_31` and "c2" at `.../session/c2`.
pub fn session_path(id: &str) -> OwnedObjectPath {
    let mut label = String::new();
    for (i, b) in id.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()) {
            label.push(b as char);
        } else {
            label.push_str(&format!("_{b:02x}"));
        }
    }
    if label.is_empty() {
        label.push('_');
    }
    OwnedObjectPath::try_from(format!("{MANAGER_PATH}/session/{label}")).expect("valid path")
}

fn user_path(uid: u32) -> OwnedObjectPath {
    OwnedObjectPath::try_from(format!("{MANAGER_PATH}/user/_{uid}")).expect("valid path")
}

type Registry = Arc<Mutex<BTreeMap<String, SessionSpec>>>;

/// org.freedesktop.login1.Manager, the part the agent uses.
struct Manager {
    sessions: Registry,
}

#[interface(name = "org.freedesktop.login1.Manager")]
impl Manager {
    /// a(susso): id, uid, user name, seat, object path.
    async fn list_sessions(&self) -> Vec<(String, u32, String, String, OwnedObjectPath)> {
        self.sessions
            .lock()
            .unwrap()
            .values()
            .map(|s| {
                (
                    s.id.clone(),
                    s.uid,
                    s.user.clone(),
                    s.seat.clone(),
                    session_path(&s.id),
                )
            })
            .collect()
    }

    #[zbus(signal)]
    async fn session_new(
        emitter: &SignalEmitter<'_>,
        id: &str,
        path: ObjectPath<'_>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn session_removed(
        emitter: &SignalEmitter<'_>,
        id: &str,
        path: ObjectPath<'_>,
    ) -> zbus::Result<()>;
}

/// org.freedesktop.login1.Session: the properties and signals the agent uses, typed as logind
/// types them.
struct Session {
    spec: SessionSpec,
    active: bool,
    locked: bool,
    idle: bool,
    idle_since: u64,
}

impl Session {
    fn new(spec: &SessionSpec) -> Self {
        Self {
            spec: spec.clone(),
            active: true,
            locked: false,
            idle: false,
            idle_since: 0,
        }
    }
}

#[interface(name = "org.freedesktop.login1.Session")]
impl Session {
    #[zbus(property)]
    fn id(&self) -> String {
        self.spec.id.clone()
    }

    #[zbus(property)]
    fn name(&self) -> String {
        self.spec.user.clone()
    }

    /// (uo): uid and the user's object path.
    #[zbus(property)]
    fn user(&self) -> (u32, OwnedObjectPath) {
        (self.spec.uid, user_path(self.spec.uid))
    }

    /// (so): seat name and path; ("", "/") for a session without a seat, as logind does.
    #[zbus(property)]
    fn seat(&self) -> (String, OwnedObjectPath) {
        let path = if self.spec.seat.is_empty() {
            OwnedObjectPath::try_from("/").unwrap()
        } else {
            OwnedObjectPath::try_from(format!("{MANAGER_PATH}/seat/{}", self.spec.seat)).unwrap()
        };
        (self.spec.seat.clone(), path)
    }

    #[zbus(property, name = "TTY")]
    fn tty(&self) -> String {
        self.spec.tty.clone()
    }

    #[zbus(property)]
    fn display(&self) -> String {
        self.spec.display.clone()
    }

    #[zbus(property)]
    fn remote(&self) -> bool {
        self.spec.remote
    }

    #[zbus(property)]
    fn remote_host(&self) -> String {
        self.spec.remote_host.clone()
    }

    #[zbus(property, name = "Type")]
    fn session_type(&self) -> String {
        self.spec.session_type.clone()
    }

    #[zbus(property)]
    fn class(&self) -> String {
        self.spec.class.clone()
    }

    #[zbus(property)]
    fn active(&self) -> bool {
        self.active
    }

    #[zbus(property)]
    fn locked_hint(&self) -> bool {
        self.locked
    }

    #[zbus(property)]
    fn idle_hint(&self) -> bool {
        self.idle
    }

    /// t: µs since the epoch (CLOCK_REALTIME).
    #[zbus(property)]
    fn idle_since_hint(&self) -> u64 {
        self.idle_since
    }

    /// Asks the session's screen locker to lock (`loginctl lock-session`).
    #[zbus(signal)]
    async fn lock(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn unlock(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;
}

/// The fake logind, owning `org.freedesktop.login1` on a [`BusDaemon`].
pub struct FakeLogind {
    rt: tokio::runtime::Runtime,
    conn: Connection,
    sessions: Registry,
}

impl FakeLogind {
    pub fn start(bus_address: &str) -> Self {
        Self::start_with(bus_address, &[])
    }

    /// With `sessions` already open when it takes the name, as after a logind restart.
    pub fn start_with(bus_address: &str, sessions: &[SessionSpec]) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let registry = Registry::default();
        let manager = Manager {
            sessions: Arc::clone(&registry),
        };
        let conn = rt
            .block_on(async {
                zbus::connection::Builder::address(bus_address)?
                    .serve_at(MANAGER_PATH, manager)?
                    .build()
                    .await
            })
            .unwrap_or_else(|e| panic!("fake logind on {bus_address}: {e}"));
        for spec in sessions {
            registry
                .lock()
                .unwrap()
                .insert(spec.id.clone(), spec.clone());
            rt.block_on(
                conn.object_server()
                    .at(session_path(&spec.id), Session::new(spec)),
            )
            .expect("session object");
        }
        rt.block_on(conn.request_name(LOGIND))
            .unwrap_or_else(|e| panic!("fake logind cannot own {LOGIND}: {e}"));
        Self {
            rt,
            conn,
            sessions: registry,
        }
    }

    /// The fake's unique name on the bus.
    pub fn unique_name(&self) -> String {
        self.conn.unique_name().expect("unique name").to_string()
    }

    /// Opens a session: its object appears, then SessionNew(s id, o path) is emitted.
    pub fn new_session(&self, spec: &SessionSpec) {
        let path = session_path(&spec.id);
        let session = Session::new(spec);
        self.sessions
            .lock()
            .unwrap()
            .insert(spec.id.clone(), spec.clone());
        self.rt
            .block_on(async {
                self.conn.object_server().at(&path, session).await?;
                let emitter = SignalEmitter::new(&self.conn, MANAGER_PATH)?;
                Manager::session_new(&emitter, &spec.id, path.as_ref()).await
            })
            .expect("new session");
    }

    /// Closes a session: SessionRemoved(s id, o path), and its object goes away.
    pub fn remove_session(&self, id: &str) {
        let path = session_path(id);
        self.sessions.lock().unwrap().remove(id);
        self.rt
            .block_on(async {
                self.conn
                    .object_server()
                    .remove::<Session, _>(&path)
                    .await?;
                let emitter = SignalEmitter::new(&self.conn, MANAGER_PATH)?;
                Manager::session_removed(&emitter, id, path.as_ref()).await
            })
            .expect("remove session");
    }

    /// What a screen locker does: sets LockedHint, which emits PropertiesChanged.
    pub fn set_locked_hint(&self, id: &str, locked: bool) {
        let path = session_path(id);
        self.rt
            .block_on(async {
                let iface = self
                    .conn
                    .object_server()
                    .interface::<_, Session>(&path)
                    .await?;
                let mut session = iface.get_mut().await;
                session.locked = locked;
                session.locked_hint_changed(iface.signal_emitter()).await
            })
            .unwrap_or_else(|e| panic!("session {id}: {e}"));
    }

    /// The session's Lock() or Unlock() signal (logind's request to the screen locker).
    pub fn emit_lock_signal(&self, id: &str, lock: bool) {
        let path = session_path(id);
        self.rt
            .block_on(async {
                let emitter = SignalEmitter::new(&self.conn, path)?;
                if lock {
                    Session::lock(&emitter).await
                } else {
                    Session::unlock(&emitter).await
                }
            })
            .expect("lock signal");
    }

    /// What the desktop does through SetIdleHint: IdleHint and IdleSinceHint change together.
    /// The generated `*_changed` methods send one PropertiesChanged each (logind sends one with
    /// both), so the source has to cope with either.
    pub fn set_idle_hint(&self, id: &str, idle: bool, since_us: u64) {
        let path = session_path(id);
        self.rt
            .block_on(async {
                let iface = self
                    .conn
                    .object_server()
                    .interface::<_, Session>(&path)
                    .await?;
                let mut session = iface.get_mut().await;
                session.idle = idle;
                session.idle_since = since_us;
                session
                    .idle_since_hint_changed(iface.signal_emitter())
                    .await?;
                session.idle_hint_changed(iface.signal_emitter()).await
            })
            .unwrap_or_else(|e| panic!("session {id}: {e}"));
    }

    /// Leaves the bus, as logind does when it stops.
    pub fn stop(self) {
        let FakeLogind { rt, conn, .. } = self;
        rt.block_on(async move {
            let _ = conn.release_name(LOGIND).await;
            let _ = conn.close().await;
        });
    }
}
