//! Background chores of a running collector: persisting agents' health, picking up
//! revocations made from the CLI, and the retention schedule.

use crate::config::RetentionConfig;
use crate::state::Shared;
use crate::store::{self, Leadership, Store, audit::Actor};
use std::sync::Arc;
use std::time::Duration;

/// Writes the heartbeat map to the database every `interval`.
pub async fn flush_health(shared: Arc<Shared>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let batch = shared.take_health();
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = shared
            .db(move |c| store::agents::write_health(c, &batch))
            .await
        {
            tracing::error!(error = %e.message(), "could not record agents' health");
        }
    }
}

/// Reloads the revoked set every `interval`, so CLI revocations reach open streams.
pub async fn refresh_revocations(shared: Arc<Shared>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        match shared.db(|c| store::agents::revoked_ids(&c.admin())).await {
            Ok(ids) => shared.revocations.replace(ids),
            Err(e) => tracing::error!(error = %e.message(), "could not refresh revocations"),
        }
    }
}

/// The retention schedule: first a minute after start (not during start-up's own work), then
/// every `run_every`.
pub async fn retention(store: Store, cfg: RetentionConfig, mut leader: Leadership) {
    let first = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut tick = tokio::time::interval_at(first, cfg.run_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A follower that takes over runs the day's pass at once rather than a day late.
        leader.acquired().await;
        let (store, cfg) = (store.clone(), cfg.clone());
        let run = move || store.retention(&cfg, false, &Actor::system());
        match tokio::task::spawn_blocking(run).await {
            Ok(Ok(r)) => tracing::info!(
                events = r.events.deleted,
                alerts = r.alerts.deleted,
                incidents = r.incidents.deleted,
                check_results = r.check_results.deleted,
                elapsed_ms = r.elapsed_ms,
                "retention run"
            ),
            Ok(Err(e)) => tracing::error!(error = %e, "retention run failed"),
            Err(e) => tracing::error!(error = %e, "retention task failed"),
        }
    }
}
