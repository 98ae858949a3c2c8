//! Background chores of a running collector: persisting agents' health and picking up
//! revocations made from the CLI.

use crate::state::Shared;
use crate::store;
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
        match shared.db(|c| store::agents::revoked_ids(c)).await {
            Ok(ids) => shared.revocations.replace(ids),
            Err(e) => tracing::error!(error = %e.message(), "could not refresh revocations"),
        }
    }
}
