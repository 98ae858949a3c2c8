//! What the running collector's services share.

use crate::admission::Admission;
use crate::committer::Committer;
use crate::config::CollectorConfig;
use crate::identity::Revocations;
use crate::metrics::Metrics;
use crate::pki::CertificateAuthority;
use crate::serve::SystemKey;
use crate::store::{AgentHealth, Leadership, Store, System};
use arc_swap::ArcSwap;
use invigilator_policy::Policy;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tonic::Status;

pub struct Shared {
    pub config: CollectorConfig,
    pub ca: CertificateAuthority,
    pub store: Store,
    /// The services' key to the system's own reads and writes (see `store::access`).
    pub key: SystemKey,
    pub committer: Committer,
    /// Per-agent fairness in front of the committer: one stream, byte budgets, quotas.
    pub admission: Arc<Admission>,
    pub policy: Arc<ArcSwap<Policy>>,
    pub revocations: Revocations,
    /// Whether this collector runs the once-only jobs (see `store::leader`).
    pub leader: Leadership,
    /// Latest heartbeat per agent, written to the database every few seconds in one go.
    pub health: Mutex<HashMap<String, AgentHealth>>,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// Runs the system's own store work off the async threads.
    pub async fn db<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&System<'_>) -> crate::store::Result<R> + Send + 'static,
    ) -> Result<R, Status> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            me.store.system(&me.key, f).map_err(|e| {
                tracing::error!(error = %e, "database call failed");
                Status::unavailable(format!("collector storage error: {e}"))
            })
        })
        .await
        .map_err(|e| Status::internal(format!("database task failed: {e}")))?
    }

    /// The heartbeats received since the last call, for writing to the database.
    pub fn take_health(&self) -> HashMap<String, AgentHealth> {
        self.health
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }

    /// Records that an agent was heard from.
    pub fn touch(&self, agent_id: &str, update: impl FnOnce(&mut AgentHealth)) {
        if let Ok(mut map) = self.health.lock() {
            let h = map.entry(agent_id.to_owned()).or_default();
            h.last_seen_us = crate::store::now_us();
            update(h);
        }
    }
}
