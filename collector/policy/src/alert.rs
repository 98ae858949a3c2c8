//! The alert the policy raises. It belongs to the policy, not to the store: the store maps it
//! to rows, and everything that reads alerts back gets the same types.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How serious a breach is; decides who is told and the recommended response.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Informational,
    Inappropriate,
    Serious,
    /// The licensed illegal-content lists (IWF, CTIRU) and nothing else: such an alert never
    /// shows its content to anyone and can never be revealed.
    Illegal,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Informational,
        Severity::Inappropriate,
        Severity::Serious,
        Severity::Illegal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Inappropriate => "inappropriate",
            Severity::Serious => "serious",
            Severity::Illegal => "illegal",
        }
    }

    /// The class an alert of this severity belongs to.
    pub fn class(self) -> AlertClass {
        match self {
            Severity::Illegal => AlertClass::Illegal,
            _ => AlertClass::Ordinary,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity {0:?} (expected informational, inappropriate, serious or illegal)")]
pub struct UnknownSeverity(pub String);

impl std::str::FromStr for Severity {
    type Err = UnknownSeverity;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownSeverity(s.to_owned()))
    }
}

/// Whether an alert may ever show what matched. A type rather than a test of strings, so that
/// every reader (console, reports, reveals, notifications) decides it the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertClass {
    /// Content may be shown to the roles the privacy rules allow, or revealed.
    Ordinary,
    /// Never shown to anyone and never revealable; reported as counts only.
    Illegal,
}

/// One breach, as the policy (or the collector's own monitoring of its agents) raises it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub agent_id: String,
    pub hostname: String,
    pub user: String,
    /// The event kind (`process`, `browsing`, ...), or `agent` for the collector's own checks.
    pub kind: String,
    /// The id of the rule that fired.
    pub rule: String,
    pub category: String,
    pub severity: Severity,
    pub summary: String,
    pub matched: String,
    pub observed_at_us: i64,
    pub policy_version: String,
    pub event_seq: Option<u64>,
    /// The recommended response from the policy's sanctions table.
    pub response: String,
    /// Alerts with the same key within the aggregation window are one alert; None never
    /// aggregates (conditions such as a silent agent are raised once anyway).
    pub aggregate_key: Option<String>,
}

impl Alert {
    pub fn class(&self) -> AlertClass {
        self.severity.class()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_round_trip_through_their_names() {
        for s in Severity::ALL {
            assert_eq!(s.as_str().parse::<Severity>().unwrap(), s);
        }
        let err = "critical".parse::<Severity>().unwrap_err().to_string();
        assert!(err.contains("critical"), "{err}");
    }

    #[test]
    fn only_the_illegal_severity_is_of_the_illegal_class() {
        for s in Severity::ALL {
            assert_eq!(s.class() == AlertClass::Illegal, s == Severity::Illegal);
        }
    }
}
