//! The weekly report for the headteacher ("monitored every week by the Headteacher to identify
//! access to websites or internet searches which are a cause for concern"), read by governors
//! too: counts, groups, sites and concerns, never a pupil's name, an address or a search.
//!
//! A week runs from Monday 00:00 to the next Monday 00:00 in the school's zone (Europe/London),
//! so the weeks of the clock changes are 167 or 169 hours long.

use crate::config::ReportsConfig;
use crate::store::audit::{Actor, Audit};
use crate::store::{self, Audited, Leadership, Store, rfc3339};
use arc_swap::ArcSwap;
use chrono::{Datelike, Duration as Days, NaiveDate, TimeZone, Weekday};
use chrono_tz::Europe::London;
use invigilator_policy::Policy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One ISO week in the school's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Week {
    pub monday: NaiveDate,
}

fn local_midnight_us(d: NaiveDate) -> i64 {
    let t = d.and_hms_opt(0, 0, 0).expect("midnight exists");
    // Midnight exists in London on every day (the clocks change at 01:00 and 02:00).
    London
        .from_local_datetime(&t)
        .earliest()
        .expect("London midnight exists")
        .timestamp_micros()
}

impl Week {
    /// "2026-W47".
    pub fn parse(s: &str) -> Option<Self> {
        let (y, w) = s.trim().split_once("-W")?;
        let monday = NaiveDate::from_isoywd_opt(y.parse().ok()?, w.parse().ok()?, Weekday::Mon)?;
        Some(Self { monday })
    }

    /// The week holding the instant `us`.
    pub fn containing(us: i64) -> Self {
        let local = London
            .timestamp_micros(us)
            .single()
            .expect("valid instant")
            .date_naive();
        Self {
            monday: local - Days::days(local.weekday().num_days_from_monday() as i64),
        }
    }

    /// The last week that has ended by `now_us`.
    pub fn last_complete(now_us: i64) -> Self {
        Self::containing(now_us).previous()
    }

    pub fn previous(self) -> Self {
        Self {
            monday: self.monday - Days::days(7),
        }
    }

    pub fn start_us(self) -> i64 {
        local_midnight_us(self.monday)
    }

    pub fn end_us(self) -> i64 {
        local_midnight_us(self.monday + Days::days(7))
    }

    pub fn label(self) -> String {
        let w = self.monday.iso_week();
        format!("{}-W{:02}", w.year(), w.week())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Count {
    pub label: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    pub category: String,
    pub this_week: u64,
    pub previous_week: u64,
    pub change: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Site {
    pub host: String,
    pub alerts: u64,
    /// Occurrences, counting repeats folded into one alert.
    pub visits: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Concern {
    pub category: String,
    pub concern: String,
    pub searches: u64,
    pub page_titles: u64,
}

/// The report. Every count is of alerts (one alert may stand for repeats, see `Site::visits`);
/// illegal-class alerts are counted once, in `illegal_alerts`, and nowhere else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weekly {
    pub week: String,
    pub period_start: String,
    pub period_end: String,
    pub time_zone: String,
    pub alerts: u64,
    pub by_category: Vec<Count>,
    /// By the policy group of the user ("unknown" when the policy cannot place them).
    pub by_group: Vec<Count>,
    pub trend: Vec<Trend>,
    pub sites_of_concern: Vec<Site>,
    pub searches_of_concern: Vec<Concern>,
    pub illegal_alerts: u64,
    pub incidents_opened: u64,
    /// "Agent silent" alerts raised in the week: devices where monitoring may have stopped.
    pub agents_silent: u64,
}

pub const TOP_SITES: usize = 15;

fn is_illegal(a: &store::reports::AlertFacts) -> bool {
    a.severity.class() == invigilator_policy::AlertClass::Illegal
}

fn sorted(m: BTreeMap<String, u64>) -> Vec<Count> {
    let mut v: Vec<Count> = m
        .into_iter()
        .map(|(label, count)| Count { label, count })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
    v
}

/// Builds the report for `week` from what is stored.
pub fn weekly(tx: &Audited<'_>, policy: &Policy, week: Week) -> store::Result<Weekly> {
    let (start, end) = (week.start_us(), week.end_us());
    let this = store::reports::alert_facts(tx, start, end)?;
    let prev = store::reports::alert_facts(tx, week.previous().start_us(), start)?;

    let mut by_category = BTreeMap::new();
    let mut by_group = BTreeMap::new();
    let mut sites: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut concerns: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let (mut illegal, mut silent, mut total) = (0, 0, 0);
    for a in &this {
        if is_illegal(a) {
            illegal += 1;
            continue;
        }
        total += 1;
        if a.rule == invigilator_policy::monitoring::SILENT_RULE {
            silent += 1;
        }
        *by_category.entry(a.category.clone()).or_insert(0) += 1;
        let device = policy.groups.device(&a.group);
        let group = policy
            .groups
            .person(&a.user, &device)
            .group
            .unwrap_or("unknown");
        *by_group.entry(group.to_owned()).or_insert(0) += 1;
        if a.kind != "browsing" {
            continue;
        }
        if a.rule.starts_with("keywords.") {
            // "{concern} terms in a search on {engine}" / "... in a page on {host}": only the
            // concern is kept, never the words.
            let (concern, place) = a
                .summary
                .split_once(" terms in a ")
                .unwrap_or((a.category.as_str(), ""));
            let e = concerns
                .entry((a.category.clone(), concern.to_owned()))
                .or_insert((0, 0));
            if place.starts_with("search") {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        } else if let Some((_, host)) = a.summary.rsplit_once(": ") {
            // Web rules write "{rule summary}: {host}" (policy::browsing::evaluate).
            let e = sites.entry(host.to_owned()).or_insert((0, 0));
            e.0 += 1;
            e.1 += a.count;
        }
    }
    let mut previous = BTreeMap::new();
    for a in prev.iter().filter(|a| !is_illegal(a)) {
        *previous.entry(a.category.clone()).or_insert(0u64) += 1;
    }
    let mut categories: Vec<&String> = by_category.keys().chain(previous.keys()).collect();
    categories.sort();
    categories.dedup();
    let trend = categories
        .into_iter()
        .map(|c| {
            let (now, before) = (
                by_category.get(c).copied().unwrap_or(0),
                previous.get(c).copied().unwrap_or(0),
            );
            Trend {
                category: c.clone(),
                this_week: now,
                previous_week: before,
                change: now as i64 - before as i64,
            }
        })
        .collect();
    let mut sites: Vec<Site> = sites
        .into_iter()
        .map(|(host, (alerts, visits))| Site {
            host,
            alerts,
            visits,
        })
        .collect();
    sites.sort_by(|a, b| b.alerts.cmp(&a.alerts).then_with(|| a.host.cmp(&b.host)));
    sites.truncate(TOP_SITES);
    let mut searches: Vec<Concern> = concerns
        .into_iter()
        .map(|((category, concern), (searches, page_titles))| Concern {
            category,
            concern,
            searches,
            page_titles,
        })
        .collect();
    searches.sort_by(|a, b| {
        (b.searches + b.page_titles)
            .cmp(&(a.searches + a.page_titles))
            .then_with(|| a.category.cmp(&b.category))
    });
    let incidents = store::reports::incidents_opened(tx, start, end)?;
    Ok(Weekly {
        week: week.label(),
        period_start: rfc3339(start),
        period_end: rfc3339(end),
        time_zone: "Europe/London".into(),
        alerts: total,
        by_category: sorted(by_category),
        by_group: sorted(by_group),
        trend,
        sites_of_concern: sites,
        searches_of_concern: searches,
        illegal_alerts: illegal,
        incidents_opened: incidents as u64,
        agents_silent: silent,
    })
}

/// When this week's scheduled run is due.
fn due_us(cfg: &ReportsConfig, now_us: i64) -> Result<i64, String> {
    let week = Week::containing(now_us);
    let day = week.monday + Days::days(cfg.day()?.num_days_from_monday() as i64);
    let at = day.and_time(cfg.at()?);
    // A time the clocks skip runs at the next hour's equivalent: take the latest reading.
    Ok(London
        .from_local_datetime(&at)
        .latest()
        .map(|t| t.timestamp_micros())
        .unwrap_or_else(|| local_midnight_us(day) + 3_600_000_000))
}

/// Stores last week's report if this week's run is due and it is not stored yet (so a collector
/// that was down at the time catches up when it starts). Returns the stored report's id. The
/// collector reads the week's alerts under its own audit entry, as staff would.
pub fn generate_due(
    store: &Store,
    policy: &Policy,
    cfg: &ReportsConfig,
    now_us: i64,
) -> anyhow::Result<Option<i64>> {
    if now_us < due_us(cfg, now_us).map_err(anyhow::Error::msg)? {
        return Ok(None);
    }
    let week = Week::last_complete(now_us);
    let start = week.start_us();
    if store.admin(|a| store::reports::exists(a, "weekly", start))? {
        return Ok(None);
    }
    // Another collector may store it first: then there is nothing to keep or record.
    let stored = store.audited_if(&Actor::system(), |tx| {
        let body = serde_json::to_value(weekly(tx, policy, week)?)
            .map_err(|e| anyhow::anyhow!("encoding the report: {e}"))?;
        let Some(id) = store::reports::insert_once(tx, "weekly", start, "system", &body)? else {
            return Ok(None);
        };
        let entry = Audit::new("report.generate", format!("report:{id}"))
            .detail(format!("weekly {}", week.label()));
        anyhow::Ok(Some((id, entry)))
    })?;
    Ok(stored)
}

/// The scheduled weekly report (spawned by `serve`). Looks once a minute, so a changed clock or
/// a late start still produces the report.
pub async fn run_weekly(
    store: Store,
    cfg: ReportsConfig,
    policy: Arc<ArcSwap<Policy>>,
    leader: Leadership,
) {
    if !cfg.enabled {
        return;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        if !leader.is_leader() {
            continue;
        }
        let (store, cfg, policy) = (store.clone(), cfg.clone(), policy.load_full());
        let done = tokio::task::spawn_blocking(move || {
            generate_due(&store, &policy, &cfg, store::now_us())
        })
        .await;
        match done {
            Ok(Ok(Some(id))) => tracing::info!(report = id, "weekly report stored"),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "weekly report failed; retrying in a minute"),
            Err(e) => tracing::error!(error = %e, "weekly report task failed"),
        }
    }
}

#[cfg(test)]
#[path = "reports_tests.rs"]
mod tests;
