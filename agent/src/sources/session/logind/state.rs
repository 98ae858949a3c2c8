//! A session as logind describes it, and how changes to it become events.

use super::*;

/// What the source knows about one session. logind's session object disappears at logoff, so
/// the logoff event is filled from here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct SessionInfo {
    pub(super) id: String,
    pub(super) user: String,
    pub(super) uid: Option<u32>,
    pub(super) seat: String,
    pub(super) tty: String,
    pub(super) display: String,
    pub(super) remote: bool,
    pub(super) remote_host: String,
    pub(super) session_type: String,
    pub(super) session_class: String,
    pub(super) locked: bool,
    pub(super) idle: bool,
    /// IdleSinceHint as logind last gave it (µs, CLOCK_REALTIME).
    pub(super) idle_since_us: u64,
}

/// The session properties the events need, by logind's names.
pub(super) const LOCKED_HINT: &str = "LockedHint";
pub(super) const IDLE_HINT: &str = "IdleHint";
pub(super) const IDLE_SINCE_HINT: &str = "IdleSinceHint";

pub(super) fn prop<T: TryFrom<OwnedValue>>(
    props: &HashMap<String, OwnedValue>,
    name: &str,
) -> Option<T> {
    props.get(name)?.try_clone().ok()?.try_into().ok()
}

impl SessionInfo {
    /// From the result of `GetAll("org.freedesktop.login1.Session")`. Missing or mistyped
    /// properties stay empty rather than losing the session.
    pub(super) fn from_properties(id: &str, props: &HashMap<String, OwnedValue>) -> Self {
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
    pub(super) fn apply(&mut self, changed: &HashMap<String, OwnedValue>) -> Vec<&'static str> {
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
    pub(super) fn set_locked(&mut self, locked: bool) -> Option<&'static str> {
        (locked != self.locked).then(|| {
            self.locked = locked;
            if locked { "lock" } else { "unlock" }
        })
    }

    pub(super) fn event(&self, hostname: &str, action: &str) -> Event {
        observed(
            hostname,
            self.user.clone(),
            event::Kind::Session(SessionChange {
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
                boot_id: String::new(),
            }),
        )
    }
}

/// What changed between the sessions the source knew and a fresh listing: `(path, action)`
/// pairs in the order to report them; `known` is updated to `listed`.
pub(super) fn reconcile(
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
