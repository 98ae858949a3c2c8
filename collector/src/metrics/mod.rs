//! The collector's Prometheus metrics: what a technician graphs and alerts on beside the rest of
//! the school's or the trust's estate.
//!
//! **No pupil data.** No label ever carries a user name, host name, agent id, URL or anything
//! else a device wrote: labels are event kinds, rule ids and severities from the policy, refusal
//! reasons, console routes (their templates, never their ids), agent groups (named by staff when
//! they create enrolment tokens) and the process source, held to the few names the agents use.
//! A device cannot mint a label, so it cannot grow the registry either.
//!
//! Three kinds of figure: counters the services bump as they work ([`Metrics`]' methods), gauges
//! read when scraped ([`Live`]), and the fleet's health per group, read from the store by a
//! system task every `[metrics] refresh_interval` ([`fleet`]).

pub mod fleet;
pub mod http;

use invigilator_policy::Severity;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Why the collector turned a device away or held it back.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the label values, as Prometheus users write them
pub enum Refusal {
    /// A revoked or unknown agent, or a certificate a renewal replaced.
    not_authorised,
    /// More new streams a minute than `[quotas] streams_per_minute`.
    stream_quota,
    /// Over `[quotas] rate_mib_per_minute`.
    rate_quota,
    /// Over `[quotas] daily_mib`.
    daily_quota,
    /// A batch that failed validation.
    malformed,
    /// A newer stream of the same agent replaced this one.
    superseded,
    /// An enrolment with a wrong, used or expired token, or a bad request.
    enrolment,
    /// An enrolment refused unchecked: too many failures from its address.
    enrolment_rationed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    rule: String,
    severity: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: Refusal,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteTimeLabels {
    method: String,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GroupLabels {
    group: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SourceLabels {
    group: String,
    source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

type Seconds = Gauge<f64, AtomicU64>;

/// Commits take milliseconds; console pages a few. From 0.5 ms to about 8 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Every figure, and the registry that writes them out.
pub struct Metrics {
    registry: Registry,
    events: Family<KindLabels, Counter>,
    duplicates: Family<KindLabels, Counter>,
    commit_seconds: Histogram,
    commit_events: Histogram,
    alerts: Family<AlertLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    enrolments: Counter,
    requests: Family<RouteLabels, Counter>,
    request_seconds: Family<RouteTimeLabels, Histogram, fn() -> Histogram>,
    live: LiveGauges,
    pub(crate) fleet: fleet::Gauges,
}

struct LiveGauges {
    connected: Gauge,
    committer_queue: Gauge,
    pending_bytes: Gauge,
    lists_age: Family<ClassLabels, Seconds>,
}

/// What is read at the moment of a scrape, from the running services.
#[derive(Debug, Default, Clone)]
pub struct Live {
    pub connected_agents: usize,
    pub committer_queue: usize,
    pub pending_bytes: usize,
    /// Seconds since each class of category lists was last compiled (absent: none installed).
    pub lists_age: Vec<(&'static str, f64)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("invigilator");
        let m = Self {
            events: Family::default(),
            duplicates: Family::default(),
            commit_seconds: latency(),
            commit_events: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            alerts: Family::default(),
            refusals: Family::default(),
            enrolments: Counter::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency),
            live: LiveGauges {
                connected: Gauge::default(),
                committer_queue: Gauge::default(),
                pending_bytes: Gauge::default(),
                lists_age: Family::default(),
            },
            fleet: fleet::Gauges::default(),
            registry: Registry::default(),
        };
        r.register(
            "events_stored",
            "Events stored, by kind (first sightings only)",
            m.events.clone(),
        );
        r.register(
            "events_duplicate",
            "Events received again and not stored (already held), by kind",
            m.duplicates.clone(),
        );
        r.register(
            "commit_duration_seconds",
            "Time to write one group commit (events, the alerts they raise, fsync)",
            m.commit_seconds.clone(),
        );
        r.register(
            "commit_events",
            "Events per group commit",
            m.commit_events.clone(),
        );
        r.register(
            "alerts_raised",
            "Alerts raised, by rule and severity (repeats folded into an open alert included)",
            m.alerts.clone(),
        );
        r.register(
            "refusals",
            "Devices turned away or held back, by reason",
            m.refusals.clone(),
        );
        r.register("enrolments", "Agents enrolled", m.enrolments.clone());
        r.register(
            "console_requests",
            "Console and API requests, by route template, method and status",
            m.requests.clone(),
        );
        r.register(
            "console_request_duration_seconds",
            "Console and API response times, by route template and method",
            m.request_seconds.clone(),
        );
        r.register(
            "agents_connected",
            "Agents with an open event stream to this collector",
            m.live.connected.clone(),
        );
        r.register(
            "committer_queue_batches",
            "Batches waiting for the committer",
            m.live.committer_queue.clone(),
        );
        r.register(
            "ingest_pending_bytes",
            "Bytes received and waiting to be committed",
            m.live.pending_bytes.clone(),
        );
        r.register(
            "lists_age_seconds",
            "Seconds since the category lists of each class were last compiled",
            m.live.lists_age.clone(),
        );
        m.fleet.register(&mut r);
        Self { registry: r, ..m }
    }

    pub fn events_stored(&self, kind: &'static str, n: u64) {
        self.events.get_or_create(&KindLabels { kind }).inc_by(n);
    }

    pub fn events_duplicate(&self, kind: &'static str, n: u64) {
        self.duplicates
            .get_or_create(&KindLabels { kind })
            .inc_by(n);
    }

    pub fn commit_took(&self, took: Duration, events: usize) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.commit_events.observe(events as f64);
    }

    pub fn alert_raised(&self, rule: &str, severity: Severity) {
        self.alerts
            .get_or_create(&AlertLabels {
                rule: rule.to_owned(),
                severity: severity.as_str(),
            })
            .inc();
    }

    pub fn refused(&self, reason: Refusal) {
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    pub fn enrolled(&self) {
        self.enrolments.inc();
    }

    /// A console request answered. `route` is the matched template (`/alerts/{id}`), never
    /// the path itself, which carries ids.
    pub fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let (method, route) = (method.to_owned(), route.to_owned());
        self.request_seconds
            .get_or_create(&RouteTimeLabels {
                method: method.clone(),
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
        self.requests
            .get_or_create(&RouteLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    /// The OpenMetrics text of every figure, with the live ones as of now.
    pub fn render(&self, live: &Live) -> String {
        let g = &self.live;
        g.connected.set(gauge(live.connected_agents));
        g.committer_queue.set(gauge(live.committer_queue));
        g.pending_bytes.set(gauge(live.pending_bytes));
        g.lists_age.clear();
        for (class, age) in &live.lists_age {
            g.lists_age.get_or_create(&ClassLabels { class }).set(*age);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_written_with_their_labels() {
        let m = Metrics::new();
        m.events_stored("process", 1);
        m.events_stored("process", 1);
        m.events_duplicate("browsing", 1);
        m.alert_raised("web.gambling", Severity::Serious);
        m.refused(Refusal::rate_quota);
        m.request("GET", "/alerts/{id}", 200, Duration::from_millis(3));
        m.commit_took(Duration::from_millis(4), 1000);
        let text = m.render(&Live {
            connected_agents: 3,
            lists_age: vec![("ordinary", 60.0)],
            ..Live::default()
        });
        for line in [
            "invigilator_events_stored_total{kind=\"process\"} 2",
            "invigilator_events_duplicate_total{kind=\"browsing\"} 1",
            "invigilator_alerts_raised_total{rule=\"web.gambling\",severity=\"serious\"} 1",
            "invigilator_refusals_total{reason=\"rate_quota\"} 1",
            "invigilator_console_requests_total{method=\"GET\",route=\"/alerts/{id}\",status=\"200\"} 1",
            "invigilator_agents_connected 3",
            "invigilator_lists_age_seconds{class=\"ordinary\"} 60.0",
            "invigilator_commit_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    /// The shipped Grafana dashboard asks only for figures the collector writes.
    #[test]
    fn the_dashboard_names_only_figures_that_exist() {
        let dashboard: serde_json::Value = serde_json::from_str(include_str!(
            "../../../deploy/grafana/invigilator-collector.json"
        ))
        .unwrap();
        let m = Metrics::new();
        m.events_stored("process", 1);
        m.events_duplicate("process", 1);
        m.alert_raised("r", Severity::Serious);
        m.refused(Refusal::malformed);
        m.request("GET", "/", 200, Duration::ZERO);
        m.fleet.set_for_test();
        let text = m.render(&Live {
            lists_age: vec![("ordinary", 1.0)],
            ..Live::default()
        });
        let names: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let word = regex::Regex::new(r"invigilator_[a-z_]+").unwrap();
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(panels.len() > 10);
        for target in panels.iter().flat_map(|p| p["targets"].as_array().unwrap()) {
            let expr = target["expr"].as_str().unwrap();
            for name in word.find_iter(expr) {
                assert!(
                    names.contains(name.as_str()),
                    "{expr}: no {} in\n{text}",
                    name.as_str()
                );
            }
        }
    }
}
