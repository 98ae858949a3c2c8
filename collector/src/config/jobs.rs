//! The settings of the collector's scheduled work: weekly reports, email notification and
//! retention. Here rather than beside each job so that the configuration depends on nothing
//! else in the collector.

use chrono::{NaiveTime, Weekday};
use invigilator_policy::Severity;
use lettre::message::Mailbox;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[reports]` in collector.toml.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReportsConfig {
    /// Generate and keep last week's report on a schedule.
    pub enabled: bool,
    /// The day of the week it is generated (for the week before).
    pub weekly_day: String,
    /// The local time it is generated, "HH:MM".
    pub weekly_at: String,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            weekly_day: "monday".into(),
            weekly_at: "07:00".into(),
        }
    }
}

impl ReportsConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.day()?;
        self.at()?;
        Ok(())
    }

    pub(crate) fn day(&self) -> Result<Weekday, String> {
        self.weekly_day.parse().map_err(|_| {
            format!(
                "reports.weekly_day {:?} is not a day of the week",
                self.weekly_day
            )
        })
    }

    pub(crate) fn at(&self) -> Result<NaiveTime, String> {
        NaiveTime::parse_from_str(&self.weekly_at, "%H:%M").map_err(|_| {
            format!(
                "reports.weekly_at {:?} is not a time like \"07:00\"",
                self.weekly_at
            )
        })
    }
}

/// `[notify]` in collector.toml.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    pub enabled: bool,
    /// A mail relay that accepts plain SMTP from this host (normally on the host itself).
    pub smtp_host: String,
    pub smtp_port: u16,
    /// Require STARTTLS (rustls on ring). The relay's certificate is checked against the
    /// system's root certificates, or only against `ca_file` (PEM) when it is given.
    pub starttls: bool,
    pub ca_file: Option<PathBuf>,
    pub from: String,
    /// Recipients; when empty, the email addresses of active DSL accounts.
    pub to: Vec<String>,
    pub min_severity: Severity,
    /// The console's address as staff reach it, for the links in the mail.
    pub console_url: String,
    #[serde(with = "humantime_serde")]
    pub poll_every: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            smtp_host: "127.0.0.1".into(),
            smtp_port: 25,
            starttls: false,
            ca_file: None,
            from: "invigilator@localhost".into(),
            to: Vec::new(),
            min_severity: Severity::Serious,
            console_url: "http://127.0.0.1:8080".into(),
            poll_every: Duration::from_secs(10),
        }
    }
}

impl NotifyConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        self.from
            .parse::<Mailbox>()
            .map_err(|e| format!("notify.from {:?}: {e}", self.from))?;
        for to in &self.to {
            to.parse::<Mailbox>()
                .map_err(|e| format!("notify.to {to:?}: {e}"))?;
        }
        if self.poll_every.is_zero() {
            return Err("notify.poll_every must be above zero".into());
        }
        Ok(())
    }
}

/// Below this a typo ("90s" for "90d") would wipe the store on the next run.
const MIN_PERIOD: Duration = Duration::from_secs(24 * 3600);

const DAY: u64 = 24 * 3600;

/// `[retention]` in collector.toml.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Raw events, by when they were observed.
    #[serde(with = "humantime_serde")]
    pub events: Duration,
    /// Alerts with their triage notes and reveal requests, by their latest occurrence.
    #[serde(with = "humantime_serde")]
    pub alerts: Duration,
    /// Incidents, whole, by their latest version.
    #[serde(with = "humantime_serde")]
    pub incidents: Duration,
    /// Checks requested by leadership, with their results.
    #[serde(with = "humantime_serde")]
    pub check_results: Duration,
    #[serde(with = "humantime_serde")]
    pub run_every: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            events: Duration::from_secs(90 * DAY),
            // humantime's "1y" is 365.25 days.
            alerts: humantime::parse_duration("1y").expect("valid"),
            incidents: humantime::parse_duration("6y").expect("valid"),
            check_results: humantime::parse_duration("1y").expect("valid"),
            run_every: Duration::from_secs(DAY),
        }
    }
}

impl RetentionConfig {
    /// The narrower and more serious the record, the longer it may be kept; never the reverse.
    /// Raw events are the widest collection (everything every pupil did), so they must not
    /// outlive the alerts they justify; an alert is evidence for an incident, so alerts must
    /// not be kept longer than incidents (an alert linked to a kept incident is kept anyway).
    pub fn validate(&self) -> Result<(), String> {
        for (name, d) in [
            ("events", self.events),
            ("alerts", self.alerts),
            ("incidents", self.incidents),
            ("check_results", self.check_results),
        ] {
            if d < MIN_PERIOD {
                return Err(format!(
                    "retention.{name} must be at least 1d (a shorter period is almost certainly \
                     a typo, and would delete nearly everything)"
                ));
            }
        }
        if self.alerts < self.events {
            return Err(
                "retention.alerts must not be shorter than retention.events: raw events must not \
                 outlive the alerts they gave rise to"
                    .into(),
            );
        }
        if self.incidents < self.alerts {
            return Err(
                "retention.incidents must not be shorter than retention.alerts: an incident is \
                 the safeguarding record the alerts are evidence for"
                    .into(),
            );
        }
        if self.run_every < Duration::from_secs(60) {
            return Err("retention.run_every must be at least 1m".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_checked() {
        let ok = RetentionConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        let zero = RetentionConfig {
            events: Duration::ZERO,
            ..ok.clone()
        };
        assert!(zero.validate().unwrap_err().contains("retention.events"));
        let typo = RetentionConfig {
            check_results: Duration::from_secs(90),
            ..ok.clone()
        };
        assert!(typo.validate().unwrap_err().contains("check_results"));
        let inverted = RetentionConfig {
            alerts: Duration::from_secs(30 * DAY),
            ..ok.clone()
        };
        assert!(
            inverted
                .validate()
                .unwrap_err()
                .contains("retention.alerts")
        );
        let short_incidents = RetentionConfig {
            incidents: Duration::from_secs(100 * DAY),
            ..ok
        };
        assert!(
            short_incidents
                .validate()
                .unwrap_err()
                .contains("retention.incidents")
        );
    }
}
