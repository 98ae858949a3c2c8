//! The fleet's health per agent group, read from the store by a system task: how many agents,
//! how many silent, what their spools hold and what they dropped, which process source they run,
//! and the audit trail's length. Per group, never per device or pupil.

use crate::state::Shared;
use crate::store;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::{GroupLabels, SourceLabels};

/// The process sources agents run; anything else a device claims is counted as `other`, so a
/// device cannot add a label.
const SOURCES: [&str; 4] = ["ebpf", "netlink", "poll", "etw"];

fn source_name(reported: &str) -> &'static str {
    SOURCES
        .iter()
        .find(|s| **s == reported)
        .copied()
        .unwrap_or(if reported.is_empty() { "none" } else { "other" })
}

#[derive(Default)]
pub(crate) struct Gauges {
    agents: Family<GroupLabels, Gauge>,
    silent: Family<GroupLabels, Gauge>,
    spool: Family<GroupLabels, Gauge<f64, AtomicU64>>,
    dropped: Family<GroupLabels, Gauge<f64, AtomicU64>>,
    sources: Family<SourceLabels, Gauge>,
    audit_entries: Gauge,
}

impl Gauges {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "agents",
            "Enrolled agents not revoked, by group",
            self.agents.clone(),
        );
        r.register(
            "agents_silent",
            "Agents not heard from within [agents] silent_after, by group",
            self.silent.clone(),
        );
        r.register(
            "agent_spool_events",
            "Events waiting in agents' spools as their last heartbeats said, summed by group",
            self.spool.clone(),
        );
        r.register(
            "agent_dropped_events",
            "Events agents reported dropping since they started, summed by group",
            self.dropped.clone(),
        );
        r.register(
            "agents_by_process_source",
            "Agents by group and the process source they run (ebpf, netlink, poll, etw)",
            self.sources.clone(),
        );
        r.register(
            "audit_entries",
            "Entries in the audit trail",
            self.audit_entries.clone(),
        );
    }

    #[cfg(test)]
    pub(super) fn set_for_test(&self) {
        self.set(&[tests::row("ks3", "ebpf", 1, 0)], 1);
    }

    fn set(&self, rows: &[store::agents::FleetRow], audit_entries: i64) {
        let mut by_group: BTreeMap<&str, (i64, i64, f64, f64)> = BTreeMap::new();
        let mut by_source: BTreeMap<(&str, &'static str), i64> = BTreeMap::new();
        for r in rows {
            let g = by_group.entry(&r.group).or_default();
            g.0 += r.agents as i64;
            g.1 += r.silent as i64;
            g.2 += r.spool_depth;
            g.3 += r.dropped;
            *by_source
                .entry((&r.group, source_name(&r.process_source)))
                .or_default() += r.agents as i64;
        }
        // A group that lost its last agent disappears rather than reading 0 for ever.
        for f in [&self.agents, &self.silent] {
            f.clear();
        }
        self.spool.clear();
        self.dropped.clear();
        self.sources.clear();
        for (group, (agents, silent, spool, dropped)) in by_group {
            let l = GroupLabels {
                group: group.to_owned(),
            };
            self.agents.get_or_create(&l).set(agents);
            self.silent.get_or_create(&l).set(silent);
            self.spool.get_or_create(&l).set(spool);
            self.dropped.get_or_create(&l).set(dropped);
        }
        for ((group, source), n) in by_source {
            let l = SourceLabels {
                group: group.to_owned(),
                source,
            };
            self.sources.get_or_create(&l).set(n);
        }
        self.audit_entries.set(audit_entries);
    }
}

/// Reads the fleet's figures every `[metrics] refresh_interval`.
pub async fn run(shared: Arc<Shared>) {
    let every = shared.config.metrics.refresh_interval;
    let silent_after = shared.config.agents.silent_after;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let cutoff = store::now_us() - silent_after.as_micros() as i64;
        let read = shared
            .db(move |c| {
                let rows = store::agents::fleet(c, cutoff)?;
                let audit = store::audit::length(c)?;
                Ok((rows, audit))
            })
            .await;
        match read {
            Ok((rows, audit)) => shared.metrics.fleet.set(&rows, audit),
            Err(e) => tracing::warn!(error = %e.message(), "could not read the fleet's metrics"),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::metrics::{Live, Metrics};
    use store::agents::FleetRow;

    pub(super) fn row(group: &str, source: &str, agents: u64, silent: u64) -> FleetRow {
        FleetRow {
            group: group.into(),
            process_source: source.into(),
            agents,
            silent,
            spool_depth: 10.0,
            dropped: 1.0,
        }
    }

    #[test]
    fn groups_are_summed_and_a_device_cannot_name_a_source() {
        let m = Metrics::new();
        m.fleet.set(
            &[
                row("ks3", "ebpf", 20, 1),
                row("ks3", "netlink", 2, 0),
                row("ks3", "<script>pwned", 1, 1),
            ],
            42,
        );
        let text = m.render(&Live::default());
        for line in [
            "invigilator_agents{group=\"ks3\"} 23",
            "invigilator_agents_silent{group=\"ks3\"} 2",
            "invigilator_agent_spool_events{group=\"ks3\"} 30.0",
            "invigilator_agents_by_process_source{group=\"ks3\",source=\"ebpf\"} 20",
            "invigilator_agents_by_process_source{group=\"ks3\",source=\"other\"} 1",
            "invigilator_audit_entries 42",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("pwned"));
        // The group is gone once its agents are.
        m.fleet.set(&[row("staff", "etw", 1, 0)], 43);
        let text = m.render(&Live::default());
        assert!(!text.contains("ks3") && text.contains("group=\"staff\""));
    }
}
