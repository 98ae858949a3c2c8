//! The collector's watches: agents that have gone silent or whose events do not get through,
//! and staff sessions left unlocked. The alerts themselves are built by the policy crate.

use crate::state::Shared;
use crate::store;
use invigilator_policy::monitoring::{self, Delivery, Device};
use std::sync::Arc;
use std::time::Duration;

/// Every `check_interval`, raises one alert per agent that has not been heard from for
/// `silent_after`. The agent's next contact clears the flag so a later silence alerts again.
pub async fn watch_silent_agents(shared: Arc<Shared>) {
    let cfg = shared.config.agents.clone();
    let mut tick = tokio::time::interval(cfg.silent_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Heartbeats are flushed by every collector (`flush_health`); the watch runs once.
        if !shared.leader.is_leader() {
            continue;
        }
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
                let silent = store::agents::take_newly_silent(c, cutoff, now)?;
                for a in &silent {
                    // Nothing a silent device reported can be trusted to be still open.
                    store::sessions::close_device(c, &a.agent_id)?;
                    let device = Device {
                        agent_id: &a.agent_id,
                        hostname: &a.hostname,
                    };
                    let alert = monitoring::silent(
                        device,
                        a.last_seen.as_deref(),
                        silent_after,
                        now,
                        &policy_version,
                    );
                    store::alerts::insert(c, &alert)?;
                }
                let no_progress_since = now - stalled_after.as_micros() as i64;
                let stalled = store::delivery::take_newly_stalled(c, cutoff, no_progress_since)?;
                for s in &stalled {
                    let acked_at = s.acked_at_us.map(store::rfc3339);
                    let delivery = Delivery {
                        device: Device {
                            agent_id: &s.agent_id,
                            hostname: &s.hostname,
                        },
                        acked_seq: s.acked_seq,
                        last_seq: s.last_seq,
                        spool_depth: s.spool_depth,
                        acked_at: acked_at.as_deref(),
                    };
                    let alert = monitoring::stalled(delivery, stalled_after, now, &policy_version);
                    store::alerts::insert(c, &alert)?;
                }
                for a in store::agents::take_newly_unseen(c)? {
                    let device = Device {
                        agent_id: &a.agent_id,
                        hostname: &a.hostname,
                    };
                    let alert = monitoring::private_browsing(
                        device,
                        &a.browsers_unseen,
                        now,
                        &policy_version,
                    );
                    store::alerts::insert(c, &alert)?;
                }
                for a in store::agents::take_newly_missing_extension(c)? {
                    let device = Device {
                        agent_id: &a.agent_id,
                        hostname: &a.hostname,
                    };
                    let alert = monitoring::extension_missing(
                        device,
                        &a.extension_missing,
                        now,
                        &policy_version,
                    );
                    store::alerts::insert(c, &alert)?;
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

/// Heartbeats come every 30 s by default: an agent heard from within this is up to date.
const HEARD_LATELY_US: i64 = 2 * 60 * 1_000_000;

/// Every `check_interval`, raises one alert per staff session left unlocked and idle for
/// longer than the policy's `session.unattended_after` ("screens are locked when they are left
/// unattended"). Pupil sessions are left to classroom supervision.
pub async fn watch_unattended_sessions(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.agents.silent_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !shared.leader.is_leader() {
            continue;
        }
        let policy = shared.policy.load_full();
        if policy.session.unattended.severity().is_none() {
            continue;
        }
        let result = shared
            .db(move |c| {
                let now = store::now_us();
                let idle_for = policy.session.unattended_after.as_micros() as i64;
                // An agent heard from this recently, with nothing in its spool, is caught up.
                let heard_since = now - HEARD_LATELY_US;
                let mut raised = 0;
                for s in store::sessions::take_unattended(c, idle_for, now, heard_since)? {
                    let device = policy.groups.device(&s.group);
                    let person = policy.groups.person(&s.user, &device);
                    let staff = person.class == invigilator_policy::Class::Staff
                        || device.owner == invigilator_policy::Class::Staff;
                    if !staff {
                        continue;
                    }
                    // Measured to what the device last told us, not to now.
                    let idle_for =
                        Duration::from_micros((s.as_of_us - s.idle_since_us).max(0) as u64);
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
                        observed_at_us: s.as_of_us,
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
