//! Windows session changes, as the agent's session events. The service receives
//! `SERVICE_CONTROL_SESSIONCHANGE` with a `WTS_*` reason code and a session id; this module
//! turns them into "logon" / "logoff" / "lock" / "unlock" / "present" events and keeps each
//! session's user and lock state, so a logoff still names the user Windows has already
//! forgotten. It also decides "idle" / "active" from each session's last input time, read
//! every [`IDLE_CHECK`]. Pure (no OS calls): built and unit-tested on every platform.

use std::collections::HashMap;
use std::time::Duration;

use invigilator_proto::v1::{Event, SessionChange, event};

pub use crate::platform::windows::SessionLookup as Lookup;
use crate::sources::observed;

/// The `wParam` codes of `WM_WTSSESSION_CHANGE` / `SERVICE_CONTROL_SESSIONCHANGE` (winuser.h).
pub mod reason {
    pub const CONSOLE_CONNECT: u32 = 1;
    pub const CONSOLE_DISCONNECT: u32 = 2;
    pub const REMOTE_CONNECT: u32 = 3;
    pub const REMOTE_DISCONNECT: u32 = 4;
    pub const SESSION_LOGON: u32 = 5;
    pub const SESSION_LOGOFF: u32 = 6;
    pub const SESSION_LOCK: u32 = 7;
    pub const SESSION_UNLOCK: u32 = 8;
    pub const SESSION_REMOTE_CONTROL: u32 = 9;
    pub const SESSION_CREATE: u32 = 10;
    pub const SESSION_TERMINATE: u32 = 11;
}

/// The event action for a reason code, or `None` for the ones the policy has no use for
/// (connects and disconnects of the console or of a remote client, remote control, creation
/// and termination of the session object, which bracket logon and logoff).
pub fn action(reason: u32) -> Option<&'static str> {
    match reason {
        reason::SESSION_LOGON => Some("logon"),
        reason::SESSION_LOGOFF => Some("logoff"),
        reason::SESSION_LOCK => Some("lock"),
        reason::SESSION_UNLOCK => Some("unlock"),
        _ => None,
    }
}

/// A session without keyboard or mouse input for this long is reported "idle" (with the time
/// of the last input); the collector decides from there whether a screen was left unattended.
/// About what a desktop's own idle timeout is (GNOME's is 5 minutes, and logind's idle hint
/// follows it on Linux).
pub const IDLE_AFTER: Duration = Duration::from_secs(5 * 60);
/// How often the service reads each session's last input time.
pub const IDLE_CHECK: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Known {
    user: String,
    remote: bool,
    locked: bool,
    /// Since when (µs since the Unix epoch), while reported idle.
    idle_since_us: Option<i64>,
}

/// Each session's user and lock state, as learnt from notifications and lookups.
#[derive(Debug, Default)]
pub struct Sessions {
    hostname: String,
    known: HashMap<u32, Known>,
}

impl Sessions {
    pub fn new(hostname: impl Into<String>) -> Self {
        Sessions {
            hostname: hostname.into(),
            known: HashMap::new(),
        }
    }

    /// A session open when the agent started: "present", if someone is logged on to it.
    pub fn present(&mut self, session_id: u32, found: Lookup) -> Option<Event> {
        if found.user.is_empty() {
            return None;
        }
        let known = Known {
            user: found.user,
            remote: found.remote,
            ..Known::default()
        };
        let event = self.event(session_id, &known, "present");
        self.known.insert(session_id, known);
        Some(event)
    }

    /// A notification: the event to report, if any. `found` is what a lookup gives now; a
    /// session already known keeps the user it had (at logoff Windows may have dropped it).
    pub fn notify(&mut self, reason: u32, session_id: u32, found: Lookup) -> Option<Event> {
        let action = action(reason)?;
        let mut known = self.known.remove(&session_id).unwrap_or_default();
        if known.user.is_empty() {
            known.user = found.user;
        }
        known.remote |= found.remote;
        match action {
            "lock" => known.locked = true,
            "unlock" | "logon" => {
                known.locked = false;
                known.idle_since_us = None; // someone is at the keyboard
            }
            _ => {}
        }
        let event = self.event(session_id, &known, action);
        if action != "logoff" {
            self.known.insert(session_id, known);
        }
        Some(event)
    }

    /// The sessions with someone logged on, for the idle check.
    pub fn ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.known.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The idle check for one session: `last_input_us` is when Windows last saw keyboard or
    /// mouse input in it (`None` when it does not say, as for some console sessions), `now_us`
    /// the time now. "idle" once the input is [`IDLE_AFTER`] old, "active" at the next input.
    pub fn idle_check(
        &mut self,
        session_id: u32,
        last_input_us: Option<i64>,
        now_us: i64,
    ) -> Option<Event> {
        let last = last_input_us.filter(|t| *t > 0)?;
        let mut known = self.known.remove(&session_id)?;
        let quiet = now_us.saturating_sub(last) >= IDLE_AFTER.as_micros() as i64;
        let action = match (known.idle_since_us, quiet) {
            (None, true) => {
                known.idle_since_us = Some(last);
                Some("idle")
            }
            (Some(since), _) if last > since => {
                known.idle_since_us = None;
                Some("active")
            }
            _ => None,
        };
        let event = action.map(|a| self.event(session_id, &known, a));
        self.known.insert(session_id, known);
        event
    }

    fn event(&self, session_id: u32, known: &Known, action: &str) -> Event {
        observed(
            &self.hostname,
            known.user.clone(),
            event::Kind::Session(SessionChange {
                action: action.to_owned(),
                session_id: session_id.to_string(),
                user: known.user.clone(),
                uid: None,
                remote: known.remote,
                session_type: "windows".into(),
                session_class: "user".into(),
                locked: known.locked,
                idle: known.idle_since_us.is_some(),
                idle_since_us: known.idle_since_us.unwrap_or(0),
                ..Default::default()
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(e: &Event) -> &SessionChange {
        match e.kind.as_ref() {
            Some(event::Kind::Session(s)) => s,
            other => panic!("not a session event: {other:?}"),
        }
    }

    fn user(name: &str) -> Lookup {
        Lookup {
            user: name.into(),
            remote: false,
        }
    }

    #[test]
    fn reason_codes_map_to_the_linux_actions() {
        assert_eq!(action(reason::SESSION_LOGON), Some("logon"));
        assert_eq!(action(reason::SESSION_LOGOFF), Some("logoff"));
        assert_eq!(action(reason::SESSION_LOCK), Some("lock"));
        assert_eq!(action(reason::SESSION_UNLOCK), Some("unlock"));
        for quiet in [
            reason::CONSOLE_CONNECT,
            reason::CONSOLE_DISCONNECT,
            reason::REMOTE_CONNECT,
            reason::REMOTE_DISCONNECT,
            reason::SESSION_REMOTE_CONTROL,
            reason::SESSION_CREATE,
            reason::SESSION_TERMINATE,
            0,
            12,
            u32::MAX,
        ] {
            assert_eq!(action(quiet), None, "reason {quiet}");
        }
    }

    #[test]
    fn a_day_at_a_shared_computer() {
        let mut s = Sessions::new("ICT-07");
        let logon = s.notify(reason::SESSION_LOGON, 2, user("ada")).unwrap();
        assert_eq!(logon.hostname, "ICT-07");
        assert_eq!(logon.user, "ada");
        let c = change(&logon);
        assert_eq!((c.action.as_str(), c.session_id.as_str()), ("logon", "2"));
        assert!(!c.locked);

        let lock = s.notify(reason::SESSION_LOCK, 2, user("ada")).unwrap();
        assert!(change(&lock).locked);
        // Connects carry no action and change nothing.
        assert!(
            s.notify(reason::CONSOLE_DISCONNECT, 2, user("ada"))
                .is_none()
        );
        let unlock = s.notify(reason::SESSION_UNLOCK, 2, user("ada")).unwrap();
        assert!(!change(&unlock).locked);

        // At logoff Windows has already dropped the user: the one learnt at logon is reported.
        let logoff = s
            .notify(reason::SESSION_LOGOFF, 2, Lookup::default())
            .unwrap();
        assert_eq!(logoff.user, "ada");
        assert_eq!(change(&logoff).action, "logoff");

        // The next person in the same session number is not mistaken for ada.
        let next = s.notify(reason::SESSION_LOGON, 2, user("ben")).unwrap();
        assert_eq!(next.user, "ben");
    }

    #[test]
    fn idle_after_five_quiet_minutes_active_at_the_next_input() {
        const MIN: i64 = 60_000_000;
        let t0 = 1_795_000_000_000_000;
        let mut s = Sessions::new("h");
        s.notify(reason::SESSION_LOGON, 1, user("ms.jones"))
            .unwrap();
        assert_eq!(s.ids(), [1]);
        // Typing a minute ago: nothing to say.
        assert!(s.idle_check(1, Some(t0 - MIN), t0).is_none());
        // Five minutes without input: idle, since the last input.
        let idle = s.idle_check(1, Some(t0), t0 + 5 * MIN).unwrap();
        let c = change(&idle);
        assert_eq!(
            (c.action.as_str(), c.idle, c.idle_since_us),
            ("idle", true, t0)
        );
        assert!(
            !c.locked,
            "unlocked and idle: what the collector's unattended rule looks for"
        );
        // Still quiet: said once only.
        assert!(s.idle_check(1, Some(t0), t0 + 20 * MIN).is_none());
        // Input again: active.
        let active = s.idle_check(1, Some(t0 + 21 * MIN), t0 + 21 * MIN).unwrap();
        let c = change(&active);
        assert_eq!(
            (c.action.as_str(), c.idle, c.idle_since_us),
            ("active", false, 0)
        );
        // Windows giving no input time, or an unknown session: nothing.
        assert!(s.idle_check(1, None, t0 + 60 * MIN).is_none());
        assert!(s.idle_check(1, Some(0), t0 + 60 * MIN).is_none());
        assert!(s.idle_check(9, Some(t0), t0 + 60 * MIN).is_none());
    }

    #[test]
    fn unlocking_clears_idleness() {
        let mut s = Sessions::new("h");
        s.notify(reason::SESSION_LOGON, 1, user("ada")).unwrap();
        s.idle_check(1, Some(1), 1 + IDLE_AFTER.as_micros() as i64)
            .unwrap();
        let lock = s
            .notify(reason::SESSION_LOCK, 1, Lookup::default())
            .unwrap();
        assert!(change(&lock).idle && change(&lock).locked);
        let unlock = s
            .notify(reason::SESSION_UNLOCK, 1, Lookup::default())
            .unwrap();
        assert!(!change(&unlock).idle && !change(&unlock).locked);
    }

    #[test]
    fn present_sessions_need_a_user() {
        let mut s = Sessions::new("h");
        // Session 0 (services) and an empty logon screen have no user.
        assert!(s.present(0, Lookup::default()).is_none());
        let e = s
            .present(
                3,
                Lookup {
                    user: "teacher".into(),
                    remote: true,
                },
            )
            .unwrap();
        let c = change(&e);
        assert_eq!((c.action.as_str(), c.remote), ("present", true));
        let lock = s
            .notify(reason::SESSION_LOCK, 3, Lookup::default())
            .unwrap();
        assert_eq!(lock.user, "teacher");
        assert!(change(&lock).remote);
    }
}
