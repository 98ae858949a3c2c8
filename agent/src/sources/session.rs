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

use super::{Closed, EventTx, now_us};

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

/// What the source knows about one session. logind's session object disappears at logoff, so
/// the logoff event is filled from here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SessionInfo {
    id: String,
    user: String,
    uid: Option<u32>,
    seat: String,
    tty: String,
    display: String,
    remote: bool,
    remote_host: String,
    session_type: String,
    session_class: String,
    locked: bool,
    idle: bool,
    /// IdleSinceHint as logind last gave it (µs, CLOCK_REALTIME).
    idle_since_us: u64,
}

/// The session properties the events need, by logind's names.
const LOCKED_HINT: &str = "LockedHint";
const IDLE_HINT: &str = "IdleHint";
const IDLE_SINCE_HINT: &str = "IdleSinceHint";

fn prop<T: TryFrom<OwnedValue>>(props: &HashMap<String, OwnedValue>, name: &str) -> Option<T> {
    props.get(name)?.try_clone().ok()?.try_into().ok()
}

impl SessionInfo {
    /// From the result of `GetAll("org.freedesktop.login1.Session")`. Missing or mistyped
    /// properties stay empty rather than losing the session.
    fn from_properties(id: &str, props: &HashMap<String, OwnedValue>) -> Self {
        let user: Option<(u32, OwnedObjectPath)> = prop(props, "User");
        let seat: Option<(String, OwnedObjectPath)> = prop(props, "Seat");
        let mut info = Self {
            id: prop(props, "Id").unwrap_or_else(|| id.to_owned()),
            user: prop(props, "Name").unwrap_or_default(),
            uid: user.map(|(uid, _)| uid),
            seat: seat.map(|(name, _)| name).unwrap_or_default(),
            tty: prop(props, "TTY").unwrap_or_default(),
            display: prop(props, "Display").unwrap_or_default(),
            remote: prop(props, "Remote").unwrap_or_default(),
            remote_host: prop(props, "RemoteHost").unwrap_or_default(),
            session_type: prop(props, "Type").unwrap_or_default(),
            session_class: prop(props, "Class").unwrap_or_default(),
            ..Self::default()
        };
        info.apply(props);
        info
    }

    /// Applies changed lock and idle properties; returns the actions they amount to, in a fixed
    /// order (logind never changes both in one signal, but the map has no order of its own).
    fn apply(&mut self, changed: &HashMap<String, OwnedValue>) -> Vec<&'static str> {
        let mut actions = Vec::new();
        if let Some(action) =
            prop::<bool>(changed, LOCKED_HINT).and_then(|locked| self.set_locked(locked))
        {
            actions.push(action);
        }
        // Before IdleHint, so the "idle" event carries the time that came with it.
        if let Some(since) = prop::<u64>(changed, IDLE_SINCE_HINT) {
            self.idle_since_us = since;
        }
        if let Some(idle) = prop::<bool>(changed, IDLE_HINT).filter(|&idle| idle != self.idle) {
            self.idle = idle;
            actions.push(if idle { "idle" } else { "active" });
        }
        actions
    }

    /// Both LockedHint and the Lock/Unlock signals lead here, so a desktop that answers the
    /// Lock signal by setting LockedHint yields one "lock", not two.
    fn set_locked(&mut self, locked: bool) -> Option<&'static str> {
        (locked != self.locked).then(|| {
            self.locked = locked;
            if locked { "lock" } else { "unlock" }
        })
    }

    fn event(&self, hostname: &str, action: &str) -> Event {
        Event {
            seq: 0,
            observed_at_us: now_us(),
            hostname: hostname.to_owned(),
            user: self.user.clone(),
            kind: Some(event::Kind::Session(SessionChange {
                action: action.to_owned(),
                session_id: self.id.clone(),
                user: self.user.clone(),
                uid: self.uid,
                seat: self.seat.clone(),
                tty: self.tty.clone(),
                display: self.display.clone(),
                remote: self.remote,
                remote_host: self.remote_host.clone(),
                session_type: self.session_type.clone(),
                session_class: self.session_class.clone(),
                locked: self.locked,
                idle: self.idle,
                idle_since_us: if self.idle {
                    i64::try_from(self.idle_since_us).unwrap_or(i64::MAX)
                } else {
                    0
                },
            })),
        }
    }
}

/// What changed between the sessions the source knew and a fresh listing: `(path, action)`
/// pairs in the order to report them; `known` is updated to `listed`.
fn reconcile(
    known: &mut HashMap<OwnedObjectPath, SessionInfo>,
    listed: Vec<(OwnedObjectPath, SessionInfo)>,
) -> Vec<(SessionInfo, &'static str)> {
    let mut out = Vec::new();
    let listed_paths: Vec<_> = listed.iter().map(|(p, _)| p.clone()).collect();
    let mut gone: Vec<_> = known
        .keys()
        .filter(|p| !listed_paths.contains(p))
        .cloned()
        .collect();
    gone.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    for path in gone {
        if let Some(mut info) = known.remove(&path) {
            info.locked = false;
            info.idle = false;
            out.push((info, "logoff"));
        }
    }
    for (path, info) in listed {
        match known.get_mut(&path) {
            None => {
                out.push((info.clone(), "present"));
                known.insert(path, info);
            }
            Some(old) => {
                let mut changed = HashMap::new();
                changed.insert(LOCKED_HINT.to_owned(), OwnedValue::from(info.locked));
                changed.insert(
                    IDLE_SINCE_HINT.to_owned(),
                    OwnedValue::from(info.idle_since_us),
                );
                changed.insert(IDLE_HINT.to_owned(), OwnedValue::from(info.idle));
                for action in old.apply(&changed) {
                    out.push((old.clone(), action));
                }
            }
        }
    }
    out
}

struct Source {
    cfg: SessionSourceConfig,
    tx: EventTx,
    /// By object path, which is what every signal carries; kept across reconnections.
    sessions: HashMap<OwnedObjectPath, SessionInfo>,
}

/// One connection's worth of following logind.
struct Bus {
    conn: Connection,
    name: String,
    /// The unique name that owns org.freedesktop.login1: the only sender believed.
    owner: String,
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

impl Bus {
    fn call_error(&self, call: &'static str, source: zbus::Error) -> SessionError {
        SessionError::Call {
            bus: self.name.clone(),
            call,
            source,
        }
    }

    /// Every open session with its details; sessions that end while being read are left out.
    async fn list_sessions(&self) -> Result<Vec<(OwnedObjectPath, SessionInfo)>, SessionError> {
        let listing: Vec<(String, u32, String, String, OwnedObjectPath)> = self
            .conn
            .call_method(
                Some(LOGIND),
                MANAGER_PATH,
                Some(MANAGER_IFACE),
                "ListSessions",
                &(),
            )
            .await
            .and_then(|reply| reply.body().deserialize())
            .map_err(|e| self.call_error("ListSessions", e))?;
        let mut out = Vec::with_capacity(listing.len());
        for (id, uid, user, seat, path) in listing {
            match self.session_info(&path, &id).await {
                Ok(info) => out.push((path, info)),
                Err(err) => tracing::debug!(
                    "session source: session {id} ({user}, uid {uid}, seat {seat:?}) not read: {err}"
                ),
            }
        }
        Ok(out)
    }

    async fn session_info(
        &self,
        path: &OwnedObjectPath,
        id: &str,
    ) -> Result<SessionInfo, zbus::Error> {
        let props: HashMap<String, OwnedValue> = self
            .conn
            .call_method(
                Some(LOGIND),
                path,
                Some(PROPERTIES_IFACE),
                "GetAll",
                &SESSION_IFACE,
            )
            .await?
            .body()
            .deserialize()?;
        Ok(SessionInfo::from_properties(id, &props))
    }

    async fn get_property(
        &self,
        path: &OwnedObjectPath,
        property: &str,
    ) -> Result<OwnedValue, zbus::Error> {
        let value: OwnedValue = self
            .conn
            .call_method(
                Some(LOGIND),
                path,
                Some(PROPERTIES_IFACE),
                "Get",
                &(SESSION_IFACE, property),
            )
            .await?
            .body()
            .deserialize()?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::{ObjectPath, Value};

    fn props(pairs: Vec<(&str, Value<'static>)>) -> HashMap<String, OwnedValue> {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), OwnedValue::try_from(v).unwrap()))
            .collect()
    }

    fn path(p: &str) -> OwnedObjectPath {
        OwnedObjectPath::try_from(p).unwrap()
    }

    fn desk() -> HashMap<String, OwnedValue> {
        props(vec![
            ("Id", Value::from("3")),
            ("Name", Value::from("jsmith")),
            (
                "User",
                Value::from((
                    1001u32,
                    ObjectPath::try_from("/org/freedesktop/login1/user/_31001").unwrap(),
                )),
            ),
            (
                "Seat",
                Value::from((
                    "seat0",
                    ObjectPath::try_from("/org/freedesktop/login1/seat/seat0").unwrap(),
                )),
            ),
            ("TTY", Value::from("tty2")),
            ("Display", Value::from(":0")),
            ("Remote", Value::from(false)),
            ("RemoteHost", Value::from("")),
            ("Type", Value::from("x11")),
            ("Class", Value::from("user")),
            ("LockedHint", Value::from(false)),
            ("IdleHint", Value::from(true)),
            ("IdleSinceHint", Value::from(1_700_000_000_000_000u64)),
        ])
    }

    #[test]
    fn properties_with_logind_signatures_fill_every_field() {
        let info = SessionInfo::from_properties("x", &desk());
        assert_eq!(
            info,
            SessionInfo {
                id: "3".into(),
                user: "jsmith".into(),
                uid: Some(1001),
                seat: "seat0".into(),
                tty: "tty2".into(),
                display: ":0".into(),
                remote: false,
                remote_host: String::new(),
                session_type: "x11".into(),
                session_class: "user".into(),
                locked: false,
                idle: true,
                idle_since_us: 1_700_000_000_000_000,
            }
        );
        let Some(event::Kind::Session(s)) = info.event("pc1", "present").kind else {
            panic!("not a session event");
        };
        assert_eq!((s.idle, s.idle_since_us), (true, 1_700_000_000_000_000));
        // Missing properties (a sparse or older logind) leave fields empty, keep the session.
        let sparse = SessionInfo::from_properties("c7", &HashMap::new());
        assert_eq!((sparse.id.as_str(), sparse.uid), ("c7", None));
    }

    #[test]
    fn changes_become_actions_once_and_in_order() {
        let mut info = SessionInfo::from_properties("3", &desk());
        assert!(
            info.apply(&props(vec![("IdleHint", Value::from(true))]))
                .is_empty()
        );
        assert_eq!(
            info.apply(&props(vec![
                ("IdleHint", Value::from(false)),
                ("IdleSinceHint", Value::from(5u64)),
                ("LockedHint", Value::from(true)),
            ])),
            ["lock", "active"]
        );
        // The Lock signal and then LockedHint: one "lock".
        assert_eq!(info.set_locked(true), None);
        assert_eq!(info.set_locked(false), Some("unlock"));
    }

    #[test]
    fn reconcile_reports_gone_new_and_changed_sessions() {
        let mut known = HashMap::new();
        let mut a = SessionInfo::from_properties("a", &desk());
        a.id = "a".into();
        let mut b = a.clone();
        b.id = "b".into();
        known.insert(path("/s/a"), a.clone());
        known.insert(path("/s/b"), b);
        let mut a2 = a.clone();
        a2.locked = true;
        let mut c = a.clone();
        c.id = "c".into();
        let out = reconcile(&mut known, vec![(path("/s/a"), a2), (path("/s/c"), c)]);
        let actions: Vec<_> = out.iter().map(|(i, a)| (i.id.as_str(), *a)).collect();
        assert_eq!(actions, [("b", "logoff"), ("a", "lock"), ("c", "present")]);
        assert_eq!(known.len(), 2);
    }
}
