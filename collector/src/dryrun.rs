//! `policy test`: replays stored events against a candidate policy and the current one, and
//! reports which alerts the candidate would add, remove or change. It writes nothing.
//!
//! Alerts are compared one occurrence at a time (before repeats are counted into one alert),
//! keyed by event and rule. Rules that depend on state over time (concurrent log-ons, an
//! unattended screen) are not replayed: both policies see each event on its own.

use crate::store::{self, Audited};
use invigilator_policy::Alert;
use invigilator_policy::{AgentContext, Policy};
use serde::Serialize;
use std::collections::BTreeMap;

/// One alert that differs, shown without its content for the illegal class.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Difference {
    /// "added", "removed", or "changed" (same event and rule, other severity or match).
    pub change: &'static str,
    pub rule: String,
    pub severity: String,
    /// The current policy's severity, for a change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was: Option<String>,
    pub agent_id: String,
    pub hostname: String,
    pub user: String,
    pub event_seq: Option<u64>,
    pub observed_at: String,
    pub matched: String,
    pub summary: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub events: u64,
    pub current_version: String,
    pub candidate_version: String,
    pub current_alerts: u64,
    pub candidate_alerts: u64,
    /// Per rule: alerts under the current policy and under the candidate.
    pub by_rule: BTreeMap<String, (u64, u64)>,
    pub differences: Vec<Difference>,
}

type Key = (String, Option<u64>, String);

/// Replays every stored event since `since_us` under both policies.
pub fn compare(
    tx: &Audited<'_>,
    current: &Policy,
    candidate: &Policy,
    since_us: Option<i64>,
) -> store::Result<Report> {
    let mut by_rule = BTreeMap::<String, (u64, u64)>::new();
    let mut differences = Vec::new();
    let events = store::events::replay(tx, since_us, |agent_id, group, event| {
        let ctx = AgentContext {
            agent_id,
            group,
            user_logged_on_elsewhere: Vec::new(),
            logged_on: Vec::new(),
        };
        let before = keyed(current.evaluate(&ctx, &event));
        let after = keyed(candidate.evaluate(&ctx, &event));
        for a in before.values() {
            by_rule.entry(a.rule.clone()).or_default().0 += 1;
        }
        for a in after.values() {
            by_rule.entry(a.rule.clone()).or_default().1 += 1;
        }
        for (key, a) in &after {
            match before.get(key) {
                None => differences.push(difference("added", a, None)),
                Some(b) if b.severity != a.severity || b.matched != a.matched => {
                    differences.push(difference("changed", a, Some(b)))
                }
                Some(_) => {}
            }
        }
        for (key, b) in &before {
            if !after.contains_key(key) {
                differences.push(difference("removed", b, None));
            }
        }
    })?;
    Ok(Report {
        events,
        current_version: current.version.clone(),
        candidate_version: candidate.version.clone(),
        current_alerts: by_rule.values().map(|c| c.0).sum(),
        candidate_alerts: by_rule.values().map(|c| c.1).sum(),
        by_rule,
        differences,
    })
}

fn keyed(alerts: Vec<Alert>) -> BTreeMap<Key, Alert> {
    alerts
        .into_iter()
        .map(|a| ((a.agent_id.clone(), a.event_seq, a.rule.clone()), a))
        .collect()
}

fn difference(change: &'static str, a: &Alert, was: Option<&Alert>) -> Difference {
    Difference {
        change,
        rule: a.rule.clone(),
        severity: a.severity.to_string(),
        was: was.map(|b| b.severity.to_string()),
        agent_id: a.agent_id.clone(),
        hostname: a.hostname.clone(),
        user: a.user.clone(),
        event_seq: a.event_seq,
        observed_at: store::rfc3339(a.observed_at_us),
        matched: a.matched.clone(),
        summary: a.summary.clone(),
    }
}

impl Report {
    /// The human-readable report. Names, hosts and matches come from monitored devices and the
    /// web: they are printed with control characters escaped.
    pub fn render(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(out, "replayed {} stored events", self.events)?;
        writeln!(
            out,
            "current   {}: {} alerts",
            self.current_version, self.current_alerts
        )?;
        writeln!(
            out,
            "candidate {}: {} alerts",
            self.candidate_version, self.candidate_alerts
        )?;
        let added = self
            .differences
            .iter()
            .filter(|d| d.change == "added")
            .count();
        let removed = self
            .differences
            .iter()
            .filter(|d| d.change == "removed")
            .count();
        let changed = self.differences.len() - added - removed;
        writeln!(out, "{added} added, {removed} removed, {changed} changed")?;
        writeln!(out)?;
        for (rule, (before, after)) in &self.by_rule {
            if before != after {
                writeln!(out, "  {rule:<40} {before:>7} -> {after}")?;
            }
        }
        if !self.differences.is_empty() {
            writeln!(out)?;
        }
        for d in &self.differences {
            let sign = match d.change {
                "added" => "+",
                "removed" => "-",
                _ => "~",
            };
            let severity = match &d.was {
                Some(was) => format!("{was}->{}", d.severity),
                None => d.severity.clone(),
            };
            writeln!(
                out,
                "{sign} {} {} {} {}@{} seq {} matched {}",
                d.observed_at,
                d.rule,
                severity,
                d.user.escape_debug(),
                d.hostname.escape_debug(),
                d.event_seq.map_or("-".into(), |s| s.to_string()),
                d.matched.escape_debug(),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use invigilator_policy::DEFAULT_POLICY;
    use invigilator_proto::v1::{Event, ProcessExec, event::Kind};

    /// Monday 23 November 2026, 10:00 in London (lesson time), plus `seq` seconds.
    const LESSON_US: i64 = 1_795_428_000_000_000;

    fn exec(seq: u64, name: &str) -> Event {
        Event {
            truncated: Vec::new(),
            device_time_us: 0,
            seq,
            observed_at_us: LESSON_US + seq as i64 * 1_000_000,
            hostname: "ict-01".into(),
            user: "y5smith".into(),
            kind: Some(Kind::Process(ProcessExec {
                exe: format!("/usr/bin/{name}"),
                name: name.into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_candidate_shows_what_it_adds_removes_and_changes() {
        let (_d, mut conn) = store::test_db();
        let tx = conn.transaction().unwrap();
        for (seq, name) in [(1, "tor"), (2, "steam"), (3, "bash"), (4, "qbittorrent")] {
            store::events::insert(
                &crate::store::System::test(&tx),
                "agent-1",
                &exec(seq, name),
                0,
            )
            .unwrap();
        }
        tx.commit().unwrap();
        let current = Policy::parse(DEFAULT_POLICY).unwrap();
        // The candidate renames the games rule, lowers P2P to "informational" and
        // adds a rule for bash.
        let text = DEFAULT_POLICY
            .replace("id = \"games.non_educational\"", "id = \"games.renamed\"")
            .replace(
                "id = \"filesharing.p2p\"\ncategory = \"filesharing\"\nseverity = \"serious\"",
                "id = \"filesharing.p2p\"\ncategory = \"filesharing\"\nseverity = \"informational\"",
            )
            + "\n[[process]]\nid = \"shell\"\ncategory = \"c\"\nseverity = \"informational\"\nsummary = \"s\"\nnames = [\"bash\"]\n";
        let candidate = Policy::parse(&text).unwrap();
        let r = compare(
            &crate::store::Audited::test(&conn),
            &current,
            &candidate,
            None,
        )
        .unwrap();
        assert_eq!(r.events, 4);
        assert_eq!((r.current_alerts, r.candidate_alerts), (3, 4));
        let summary: Vec<_> = r
            .differences
            .iter()
            .map(|d| (d.change, d.rule.as_str(), d.event_seq))
            .collect();
        assert!(
            summary.contains(&("added", "games.renamed", Some(2))),
            "{summary:?}"
        );
        assert!(summary.contains(&("removed", "games.non_educational", Some(2))));
        assert!(summary.contains(&("changed", "filesharing.p2p", Some(4))));
        assert!(summary.contains(&("added", "shell", Some(3))));
        assert_eq!(summary.len(), 4, "tor is unchanged: {summary:?}");
        let mut text = Vec::new();
        r.render(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("~ ") && text.contains("serious->informational"),
            "{text}"
        );

        let same = compare(
            &crate::store::Audited::test(&conn),
            &current,
            &current,
            None,
        )
        .unwrap();
        assert!(same.differences.is_empty());
        let since = compare(
            &crate::store::Audited::test(&conn),
            &current,
            &candidate,
            Some(LESSON_US + 3_000_000),
        )
        .unwrap();
        assert_eq!(since.events, 2);
    }
}
