//! The session source: logons, logoffs, screen locks and idleness, from systemd-logind.
//!
//! logind is the authority on sessions on a systemd machine; it publishes them on the system
//! D-Bus as `org.freedesktop.login1`. The source:
//!
//! 1. subscribes to every signal logind sends under `/org/freedesktop/login1` (one match rule,
//!    so the manager's `SessionNew` / `SessionRemoved`, each session's `PropertiesChanged` and
//!    `Lock` / `Unlock` arrive in one stream, in the order logind sent them);
//! 2. only then lists the sessions already open (`ListSessions`) and reports each as "present",
//!    so that nothing happening between the two steps is lost;
//! 3. follows the stream: "logon" / "logoff", "lock" / "unlock" (`LockedHint`, or the session's
//!    `Lock` / `Unlock` signals), "idle" / "active" (`IdleHint` with `IdleSinceHint`).
//!
//! Signals are accepted only from the connection that currently owns `org.freedesktop.login1`:
//! anyone on the system bus may send a signal addressed to the agent, and a pupil must not be
//! able to forge an "unlock" or a "logoff".
//!
//! If the bus or logind is missing, the source says so in a warning and retries with backoff; it
//! never stops the agent. After a reconnection it compares logind's sessions with the ones it
//! knew and reports the differences (sessions gone: "logoff"; new ones: "present"; lock and idle
//! changes), so an outage hides no state, although the times are those of the reconnection.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use invigilator_proto::v1::{Event, SessionChange, event};
use zbus::message::Type as MessageType;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{Connection, MatchRule, Message, MessageStream};

use crate::sources::{Closed, EventTx, observed};

pub const LOGIND: &str = "org.freedesktop.login1";
pub const MANAGER_PATH: &str = "/org/freedesktop/login1";
pub const MANAGER_IFACE: &str = "org.freedesktop.login1.Manager";
pub const SESSION_IFACE: &str = "org.freedesktop.login1.Session";
const PROPERTIES_IFACE: &str = "org.freedesktop.DBus.Properties";
const DBUS: &str = "org.freedesktop.DBus";

/// First wait before reconnecting; doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Signals queued while the source waits for the spool or for a property read. logind sends a
/// handful per user action, so this only overflows if the spool is stuck for a long time.
const SIGNAL_QUEUE: usize = 4096;
/// How often the source checks whether the agent is shutting down while the bus is quiet.
const CLOSED_CHECK: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default)]
pub struct SessionSourceConfig {
    /// Put on every event.
    pub hostname: String,
    /// A D-Bus address (e.g. `unix:path=/run/dbus/system_bus_socket`) instead of the system bus.
    pub bus_address: Option<String>,
}

impl SessionSourceConfig {
    /// How the bus is named in logs and errors.
    fn bus_name(&self) -> String {
        match &self.bus_address {
            Some(a) => format!("D-Bus address {a:?}"),
            None => "the system D-Bus".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to {bus}: {source}")]
    Connect { bus: String, source: zbus::Error },
    #[error("systemd-logind ({LOGIND}) is not on {bus}: {source} (is this a systemd machine?)")]
    NoLogind { bus: String, source: zbus::Error },
    #[error("D-Bus call {call} to logind on {bus} failed: {source}")]
    Call {
        bus: String,
        call: &'static str,
        source: zbus::Error,
    },
    #[error("systemd-logind left {bus}")]
    LogindGone { bus: String },
    #[error("systemd-logind restarted on {bus}; reading its sessions again")]
    LogindRestarted { bus: String },
    #[error("the connection to {bus} closed")]
    Disconnected { bus: String },
    #[error(transparent)]
    Closed(#[from] Closed),
}

/// Follows logind until the spool closes `tx` (agent shutting down). Never returns early: when
/// the bus or logind is unavailable it warns, naming the bus, and tries again with backoff.
pub async fn run(cfg: SessionSourceConfig, tx: EventTx) {
    // First, which boot this is: spooled ahead of the sessions reported below, it lets the
    // collector close the sessions a power cut left open (no logoff was ever sent for them).
    if let Some(id) = current_boot()
        && tx.send(boot_event(&cfg.hostname, id)).await.is_err()
    {
        return;
    }
    let mut source = Source {
        cfg,
        tx,
        sessions: HashMap::new(),
    };
    let mut backoff = INITIAL_BACKOFF;
    loop {
        if source.tx.is_closed() {
            return;
        }
        match source.follow(&mut backoff).await {
            Ok(()) | Err(SessionError::Closed(_)) => return,
            Err(err) => tracing::warn!("session source: {err}; retrying in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(target_os = "linux")]
fn current_boot() -> Option<String> {
    crate::platform::linux::procfs::boot_id()
}

#[cfg(not(target_os = "linux"))]
fn current_boot() -> Option<String> {
    None
}

/// "boot": the agent started in the boot `id`.
fn boot_event(hostname: &str, id: String) -> Event {
    crate::sources::observed(
        hostname,
        String::new(),
        event::Kind::Session(SessionChange {
            action: "boot".into(),
            boot_id: id,
            ..Default::default()
        }),
    )
}

mod bus;
mod state;

use bus::Bus;
use state::{IDLE_HINT, IDLE_SINCE_HINT, LOCKED_HINT, SessionInfo, reconcile};

struct Source {
    cfg: SessionSourceConfig,
    tx: EventTx,
    /// By object path, which is what every signal carries; kept across reconnections.
    sessions: HashMap<OwnedObjectPath, SessionInfo>,
}

impl Source {
    async fn send(&self, info: &SessionInfo, action: &str) -> Result<(), SessionError> {
        tracing::debug!(session = %info.id, user = %info.user, action, "session change");
        self.tx.send(info.event(&self.cfg.hostname, action)).await?;
        Ok(())
    }

    /// Connects, reports what is open, then follows until the connection or logind goes away
    /// (an error) or the agent shuts down (`Ok`).
    async fn follow(&mut self, backoff: &mut Duration) -> Result<(), SessionError> {
        let name = self.cfg.bus_name();
        let connect = |source| SessionError::Connect {
            bus: name.clone(),
            source,
        };
        let conn = match &self.cfg.bus_address {
            Some(address) => {
                zbus::connection::Builder::address(address.as_str())
                    .map_err(connect)?
                    .build()
                    .await
            }
            None => Connection::system().await,
        }
        .map_err(connect)?;
        let call = |call, source| SessionError::Call {
            bus: name.clone(),
            call,
            source,
        };

        // Subscribe before listing: whatever happens in between is queued, not lost.
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(LOGIND)
            .and_then(|r| r.path_namespace(MANAGER_PATH))
            .map_err(|e| call("AddMatch", e))?
            .build();
        let mut signals = MessageStream::for_match_rule(rule, &conn, Some(SIGNAL_QUEUE))
            .await
            .map_err(|e| call("AddMatch", e))?;
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(DBUS)
            .and_then(|r| r.interface(DBUS))
            .and_then(|r| r.member("NameOwnerChanged"))
            .and_then(|r| r.arg(0, LOGIND))
            .map_err(|e| call("AddMatch", e))?
            .build();
        let mut owners = MessageStream::for_match_rule(rule, &conn, Some(16))
            .await
            .map_err(|e| call("AddMatch", e))?;

        let owner = conn
            .call_method(
                Some(DBUS),
                "/org/freedesktop/DBus",
                Some(DBUS),
                "GetNameOwner",
                &LOGIND,
            )
            .await
            .and_then(|reply| reply.body().deserialize::<String>())
            .map_err(|source| SessionError::NoLogind {
                bus: name.clone(),
                source,
            })?;
        let bus = Bus { conn, name, owner };

        let listed = bus.list_sessions().await?;
        let count = listed.len();
        for (info, action) in reconcile(&mut self.sessions, listed) {
            self.send(&info, action).await?;
        }
        *backoff = INITIAL_BACKOFF;
        tracing::info!(
            sessions = count,
            "session source: watching systemd-logind on {}",
            bus.name
        );

        let mut closed_check = tokio::time::interval(CLOSED_CHECK);
        loop {
            tokio::select! {
                msg = signals.next() => match msg {
                    Some(Ok(msg)) => self.handle(&bus, &msg).await?,
                    Some(Err(err)) => tracing::warn!("session source: unreadable signal from logind: {err}"),
                    None => return Err(SessionError::Disconnected { bus: bus.name }),
                },
                msg = owners.next() => match msg {
                    Some(Ok(msg)) => {
                        let (_, _, new_owner) = msg
                            .body()
                            .deserialize::<(String, String, String)>()
                            .unwrap_or_default();
                        return Err(if new_owner.is_empty() {
                            SessionError::LogindGone { bus: bus.name }
                        } else {
                            SessionError::LogindRestarted { bus: bus.name }
                        });
                    }
                    Some(Err(_)) => {}
                    None => return Err(SessionError::Disconnected { bus: bus.name }),
                },
                _ = closed_check.tick() => if self.tx.is_closed() {
                    return Ok(());
                },
            }
        }
    }

    async fn handle(&mut self, bus: &Bus, msg: &Message) -> Result<(), SessionError> {
        let header = msg.header();
        if header.sender().map(|s| s.as_str()) != Some(bus.owner.as_str()) {
            // A signal addressed to the agent directly by someone else: not logind's word.
            tracing::warn!(
                sender = ?header.sender().map(|s| s.to_string()),
                member = ?header.member().map(|m| m.to_string()),
                "session source: ignoring a signal that did not come from logind"
            );
            return Ok(());
        }
        let (Some(path), Some(iface), Some(member)) =
            (header.path(), header.interface(), header.member())
        else {
            return Ok(());
        };
        let path = OwnedObjectPath::from(path.to_owned());
        match (iface.as_str(), member.as_str()) {
            (MANAGER_IFACE, "SessionNew") => {
                let Ok((id, session)) = msg.body().deserialize::<(String, OwnedObjectPath)>()
                else {
                    return Ok(());
                };
                if self.sessions.contains_key(&session) {
                    // Already reported by the listing that followed the subscription.
                    return Ok(());
                }
                let info = match bus.session_info(&session, &id).await {
                    Ok(info) => info,
                    Err(err) => {
                        // Gone already, or logind is busy: report what the signal says.
                        tracing::warn!("session source: details of new session {id}: {err}");
                        SessionInfo {
                            id,
                            ..SessionInfo::default()
                        }
                    }
                };
                self.send(&info, "logon").await?;
                self.sessions.insert(session, info);
            }
            (MANAGER_IFACE, "SessionRemoved") => {
                let Ok((id, session)) = msg.body().deserialize::<(String, OwnedObjectPath)>()
                else {
                    return Ok(());
                };
                let mut info = self.sessions.remove(&session).unwrap_or(SessionInfo {
                    id,
                    ..SessionInfo::default()
                });
                // The state after the change: there is no session left to be locked or idle.
                info.locked = false;
                info.idle = false;
                self.send(&info, "logoff").await?;
            }
            (PROPERTIES_IFACE, "PropertiesChanged") => {
                let Ok((interface, mut changed, invalidated)) =
                    msg.body()
                        .deserialize::<(String, HashMap<String, OwnedValue>, Vec<String>)>()
                else {
                    return Ok(());
                };
                if interface != SESSION_IFACE || !self.sessions.contains_key(&path) {
                    return Ok(());
                }
                // logind sends IdleHint and IdleSinceHint together; if a sender does not, read
                // the time so the "idle" event does not carry a stale one.
                let mut wanted: Vec<&str> = invalidated
                    .iter()
                    .map(String::as_str)
                    .filter(|p| [LOCKED_HINT, IDLE_HINT, IDLE_SINCE_HINT].contains(p))
                    .collect();
                if changed.contains_key(IDLE_HINT) && !changed.contains_key(IDLE_SINCE_HINT) {
                    wanted.push(IDLE_SINCE_HINT);
                }
                for property in wanted {
                    match bus.get_property(&path, property).await {
                        Ok(value) => {
                            changed.insert(property.to_owned(), value);
                        }
                        Err(err) => tracing::debug!("session source: reading {property}: {err}"),
                    }
                }
                let Some(info) = self.sessions.get_mut(&path) else {
                    return Ok(());
                };
                let actions = info.apply(&changed);
                let info = info.clone();
                for action in actions {
                    self.send(&info, action).await?;
                }
            }
            (SESSION_IFACE, member @ ("Lock" | "Unlock")) => {
                let Some(info) = self.sessions.get_mut(&path) else {
                    return Ok(());
                };
                if let Some(action) = info.set_locked(member == "Lock") {
                    let info = info.clone();
                    self.send(&info, action).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
