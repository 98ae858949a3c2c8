//! Session rules: a pupil logging on to a staff device, one account logged on at two devices
//! at once, and staff screens left unlocked and unattended (checked on a timer by the collector,
//! since "idle for ten minutes" is not an event).

use super::Verdict;
use super::groups::Class;
use super::setting::Setting;
use invigilator_proto::v1::SessionChange;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSpec {
    /// A staff session unlocked and idle for longer than `unattended_after`.
    pub unattended: Setting,
    #[serde(with = "humantime_serde")]
    pub unattended_after: Duration,
    /// The same account logged on at two devices at once (shared or stolen credentials).
    pub concurrent_logons: Setting,
    /// A pupil account logging on to a staff device.
    pub pupil_on_staff_device: Setting,
}

impl Default for SessionSpec {
    fn default() -> Self {
        Self {
            unattended: Setting::On(super::Severity::Inappropriate),
            unattended_after: Duration::from_secs(10 * 60),
            concurrent_logons: Setting::On(super::Severity::Inappropriate),
            pupil_on_staff_device: Setting::On(super::Severity::Serious),
        }
    }
}

impl SessionSpec {
    /// `elsewhere`: host names where the same user already has a session open.
    pub fn evaluate(
        &self,
        device: Class,
        user: Class,
        s: &SessionChange,
        elsewhere: &[String],
    ) -> Vec<Verdict> {
        let mut out = Vec::new();
        if s.action != "logon" || s.user.is_empty() {
            return out;
        }
        if device == Class::Staff && user == Class::Pupil {
            out.extend(Verdict::new(
                "session.pupil_on_staff_device",
                "account-misuse",
                self.pupil_on_staff_device,
                format!("pupil account {:?} logged on to a staff device", s.user),
                format!("user {:?} is a pupil; device group is staff", s.user),
            ));
        }
        if !elsewhere.is_empty() {
            out.extend(Verdict::new(
                "session.concurrent_logon",
                "account-misuse",
                self.concurrent_logons,
                format!(
                    "{:?} is logged on at {} other device(s) at once",
                    s.user,
                    elsewhere.len()
                ),
                format!("also logged on at {}", elsewhere.join(", ")),
            ));
        }
        out
    }

    /// The alert for a session found unlocked and idle too long.
    pub fn unattended_verdict(
        &self,
        user: &str,
        hostname: &str,
        session_id: &str,
        idle_for: Duration,
    ) -> Option<Verdict> {
        Verdict::new(
            "session.unattended",
            "unattended-screen",
            self.unattended,
            format!(
                "staff session of {user:?} left unlocked and unattended for {} on {hostname}",
                humantime::format_duration(Duration::from_secs(idle_for.as_secs()))
            ),
            format!(
                "idle for more than {} (session {session_id})",
                humantime::format_duration(self.unattended_after)
            ),
        )
    }
}
