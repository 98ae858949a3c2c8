//! Alerts the collector raises about its own agents rather than from an event: one that has
//! gone silent, one heard from whose events do not get through, one held back by its quota.
//! They are alerts like any other (triaged, reported, notified), so they are built here, where
//! alerts are defined; the collector decides when.

use crate::{Alert, Severity};
use std::time::Duration;

pub const SILENT_RULE: &str = "agent.silent";
pub const STALLED_RULE: &str = "agent.stalled";
pub const QUOTA_RULE: &str = "agent.quota";
pub const PRIVATE_BROWSING_RULE: &str = "agent.private_browsing";
pub const EXTENSION_MISSING_RULE: &str = "agent.extension_missing";

/// The device an alert is about.
#[derive(Debug, Clone, Copy)]
pub struct Device<'a> {
    pub agent_id: &'a str,
    pub hostname: &'a str,
}

/// Where an agent's delivery stands, for [`stalled`].
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub device: Device<'a>,
    pub acked_seq: u64,
    pub last_seq: u64,
    pub spool_depth: u64,
    /// RFC 3339 time its acknowledged sequence last moved; None if it never did.
    pub acked_at: Option<&'a str>,
}

fn monitoring_alert(d: Device<'_>, rule: &str, now_us: i64, policy_version: &str) -> Alert {
    Alert {
        agent_id: d.agent_id.to_owned(),
        hostname: d.hostname.to_owned(),
        user: String::new(),
        kind: "agent".into(),
        rule: rule.into(),
        category: "monitoring".into(),
        severity: Severity::Serious,
        summary: String::new(),
        matched: String::new(),
        observed_at_us: now_us,
        policy_version: policy_version.to_owned(),
        event_seq: None,
        response: String::new(),
        // Raised once per silent or stalled spell already.
        aggregate_key: None,
    }
}

/// A device where a pupil can browse unseen: `browsers` names each browser whose managed
/// policies leave a private or guest window open that neither its history nor the extension
/// sees (the agent's heartbeat posture).
pub fn private_browsing(d: Device<'_>, browsers: &str, now_us: i64, policy_version: &str) -> Alert {
    Alert {
        summary: format!(
            "on {}, private browsing is not covered in {browsers}: a pupil can browse there unseen",
            d.hostname
        ),
        matched: format!("browser policies on the device: {browsers}"),
        response: "Technical staff: install the browser policies from deploy/browsers/policies \
            (private and guest windows off for Chrome, Chromium, Edge and Brave; the extension \
            forced into private windows for Firefox). The alert is raised again if they go."
            .into(),
        ..monitoring_alert(d, PRIVATE_BROWSING_RULE, now_us, policy_version)
    }
}

/// Browsers running on a device with no extension connected from their user's session for the
/// agent's grace time: removed, disabled, or its native-messaging host unreachable (`missing`:
/// "chromium: amy; firefox: ben").
pub fn extension_missing(d: Device<'_>, missing: &str, now_us: i64, policy_version: &str) -> Alert {
    Alert {
        summary: format!(
            "on {}, a browser runs without the monitoring extension ({missing}): its visits reach \
             the collector only from the history, and private windows not at all",
            d.hostname
        ),
        matched: format!("browsers running without the extension: {missing}"),
        response: "Technical staff: check the extension is force-installed and enabled by policy \
            and that the agent is running; a pupil who removed or disabled it is a matter for \
            the behaviour policy."
            .into(),
        ..monitoring_alert(d, EXTENSION_MISSING_RULE, now_us, policy_version)
    }
}

/// An agent not heard from for `silent_after` (`last_seen`: RFC 3339, or None if never).
pub fn silent(
    d: Device<'_>,
    last_seen: Option<&str>,
    silent_after: Duration,
    now_us: i64,
    policy_version: &str,
) -> Alert {
    let after = humantime::format_duration(silent_after);
    Alert {
        summary: format!(
            "agent on {} has not reported for over {after} (last seen {}): monitoring may have been stopped",
            d.hostname,
            last_seen.unwrap_or("never")
        ),
        matched: format!("no contact for {after}"),
        response: "Technical staff: check the device is powered and the agent running; \
            an agent stopped on purpose is an attempt to avoid monitoring."
            .into(),
        ..monitoring_alert(d, SILENT_RULE, now_us, policy_version)
    }
}

/// An agent heard from whose events have not been acknowledged for `stalled_after`.
pub fn stalled(
    s: Delivery<'_>,
    stalled_after: Duration,
    now_us: i64,
    policy_version: &str,
) -> Alert {
    Alert {
        summary: format!(
            "agent on {} is running but its events are not getting through: {} waiting, \
             nothing acknowledged since {} (last sequence stored {}, agent is at {})",
            s.device.hostname,
            s.spool_depth,
            s.acked_at.unwrap_or("enrolment"),
            s.acked_seq,
            s.last_seq
        ),
        matched: format!(
            "heartbeats, no delivery for {}",
            humantime::format_duration(stalled_after)
        ),
        response: "Technical staff: see the collector's log for why this agent's batches are \
            refused or held (a quota alert, a malformed batch); events stay in the device's \
            spool until they are delivered."
            .into(),
        ..monitoring_alert(s.device, STALLED_RULE, now_us, policy_version)
    }
}

/// An agent held back by its quota (`limit`: rate, daily or stream): a flood from one device is
/// either a fault or an attempt to bury something, or to starve the collector.
pub fn quota(d: Device<'_>, limit: &str, what: &str, now_us: i64, policy_version: &str) -> Alert {
    Alert {
        summary: format!(
            "agent on {} reached its {limit} quota ({what}): its further events wait on the \
             device until the quota allows them",
            d.hostname
        ),
        matched: what.to_owned(),
        response: "Technical staff: find what on the device produces so many events (a \
            runaway program, or a deliberate flood); raise [quotas] in collector.toml only if \
            the volume is legitimate."
            .into(),
        // One alert per agent and limit, counted while it is open.
        aggregate_key: Some(format!("{}|{QUOTA_RULE}|{limit}", d.agent_id)),
        ..monitoring_alert(d, QUOTA_RULE, now_us, policy_version)
    }
}
