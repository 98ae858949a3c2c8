//! Alerts the collector raises on its own, not from an event: agents that have gone silent, that
//! are heard from but whose events do not get through, or that hit their quota.

use crate::admission::Limit;
use crate::state::Shared;
use crate::store;
use invigilator_policy::{Alert, Severity};
use std::sync::Arc;
use std::time::Duration;

pub const SILENT_RULE: &str = "agent.silent";
pub const STALLED_RULE: &str = "agent.stalled";
pub const QUOTA_RULE: &str = "agent.quota";

/// Every `check_interval`, raises one alert per agent that has not been heard from for
/// `silent_after`. The agent's next contact clears the flag so a later silence alerts again.
pub async fn watch_silent_agents(shared: Arc<Shared>) {
    let cfg = shared.config.agents.clone();
    let mut tick = tokio::time::interval(cfg.silent_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let policy_version = shared.policy.load().version.clone();
        let silent_after = cfg.silent_after;
        // Heartbeats not yet flushed count: without them a live agent could look silent.
        let pending = shared.take_health();
        let stalled_after = cfg.stalled_after;
        let result = shared
            .db(move |c| {
                store::agents::write_health(c, &pending)?;
                let now = store::now_us();
                let cutoff = now - silent_after.as_micros() as i64;
                let silent = store::agents::take_newly_silent(c, cutoff)?;
                for a in &silent {
                    store::alerts::insert(c, &silent_alert(a, silent_after, &policy_version))?;
                }
                let no_progress_since = now - stalled_after.as_micros() as i64;
                let stalled = store::delivery::take_newly_stalled(c, cutoff, no_progress_since)?;
                for s in &stalled {
                    store::alerts::insert(c, &stalled_alert(s, stalled_after, &policy_version))?;
                }
                Ok((silent.len(), stalled.len()))
            })
            .await;
        match result {
            Ok((0, 0)) => {}
            Ok((silent, stalled)) => {
                tracing::warn!(silent, stalled, "agents have gone silent or stalled")
            }
            Err(e) => tracing::error!(error = %e.message(), "silent-agent check failed"),
        }
    }
}

fn silent_alert(a: &store::AgentRow, silent_after: Duration, policy_version: &str) -> Alert {
    Alert {
        agent_id: a.agent_id.clone(),
        hostname: a.hostname.clone(),
        user: String::new(),
        kind: "agent".into(),
        rule: SILENT_RULE.into(),
        category: "monitoring".into(),
        severity: Severity::Serious,
        summary: format!(
            "agent on {} has not reported for over {} (last seen {}): monitoring may have been stopped",
            a.hostname,
            humantime::format_duration(silent_after),
            a.last_seen.as_deref().unwrap_or("never")
        ),
        matched: format!(
            "no contact for {}",
            humantime::format_duration(silent_after)
        ),
        observed_at_us: store::now_us(),
        policy_version: policy_version.to_owned(),
        event_seq: None,
        response: "Technical staff: check the device is powered and the agent running; \
            an agent stopped on purpose is an attempt to avoid monitoring."
            .into(),
        // Raised once per silent spell already.
        aggregate_key: None,
    }
}

fn stalled_alert(
    s: &store::delivery::Stalled,
    stalled_after: Duration,
    policy_version: &str,
) -> Alert {
    let since = s
        .acked_at_us
        .map(store::rfc3339)
        .unwrap_or_else(|| "enrolment".into());
    Alert {
        agent_id: s.agent_id.clone(),
        hostname: s.hostname.clone(),
        user: String::new(),
        kind: "agent".into(),
        rule: STALLED_RULE.into(),
        category: "monitoring".into(),
        severity: Severity::Serious,
        summary: format!(
            "agent on {} is running but its events are not getting through: {} waiting, \
             nothing acknowledged since {since} (last sequence stored {}, agent is at {})",
            s.hostname, s.spool_depth, s.acked_seq, s.last_seq
        ),
        matched: format!(
            "heartbeats, no delivery for {}",
            humantime::format_duration(stalled_after)
        ),
        observed_at_us: store::now_us(),
        policy_version: policy_version.to_owned(),
        event_seq: None,
        response: "Technical staff: see the collector's log for why this agent's batches are \
            refused or held (a quota alert, a malformed batch); events stay in the device's \
            spool until they are delivered."
            .into(),
        aggregate_key: None,
    }
}

/// The alert for an agent held back by its quota: a flood from one device is either a fault or
/// an attempt to bury something, or to starve the collector.
pub fn quota_alert(
    agent_id: &str,
    hostname: &str,
    limit: Limit,
    what: &str,
    policy_version: &str,
) -> Alert {
    Alert {
        agent_id: agent_id.to_owned(),
        hostname: hostname.to_owned(),
        user: String::new(),
        kind: "agent".into(),
        rule: QUOTA_RULE.into(),
        category: "monitoring".into(),
        severity: Severity::Serious,
        summary: format!(
            "agent on {hostname} reached its {} quota ({what}): its further events wait on the \
             device until the quota allows them",
            limit.name()
        ),
        matched: what.to_owned(),
        observed_at_us: store::now_us(),
        policy_version: policy_version.to_owned(),
        event_seq: None,
        response: "Technical staff: find what on the device produces so many events (a \
            runaway program, or a deliberate flood); raise [quotas] in collector.toml only if \
            the volume is legitimate."
            .into(),
        aggregate_key: Some(format!("{agent_id}|{QUOTA_RULE}|{}", limit.name())),
    }
}

/// Every `check_interval`, raises one alert per staff session left unlocked and idle for
/// longer than the policy's `session.unattended_after` ("screens are locked when they are left
/// unattended"). Pupil sessions are left to classroom supervision.
pub async fn watch_unattended_sessions(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.agents.silent_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let policy = shared.policy.load_full();
        if policy.session.unattended.severity().is_none() {
            continue;
        }
        let result = shared
            .db(move |c| {
                let now = store::now_us();
                let cutoff = now - policy.session.unattended_after.as_micros() as i64;
                let mut raised = 0;
                for s in store::sessions::take_unattended(c, cutoff)? {
                    let device = policy.groups.device(&s.group);
                    let person = policy.groups.person(&s.user, &device);
                    let staff = person.class == invigilator_policy::Class::Staff
                        || device.owner == invigilator_policy::Class::Staff;
                    if !staff {
                        continue;
                    }
                    let idle_for = Duration::from_micros((now - s.idle_since_us).max(0) as u64);
                    let Some(verdict) = policy.session.unattended_verdict(
                        &s.user,
                        &s.hostname,
                        &s.session_id,
                        idle_for,
                    ) else {
                        continue;
                    };
                    let subject = invigilator_policy::Subject {
                        agent_id: &s.agent_id,
                        hostname: &s.hostname,
                        user: &s.user,
                        class: person.class,
                        kind: "session",
                        observed_at_us: now,
                        event_seq: None,
                    };
                    let alert = policy.raise(subject, verdict);
                    store::alerts::insert(c, &alert)?;
                    raised += 1;
                }
                Ok(raised)
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e.message(), "unattended-session check failed");
        }
    }
}
