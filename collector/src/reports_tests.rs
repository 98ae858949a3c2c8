use super::*;
use crate::store::db::Connection;
use crate::store::{NewAgent, agents, alerts};
use invigilator_policy::Alert;

fn us(rfc: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc)
        .unwrap()
        .timestamp_micros()
}

fn policy() -> Policy {
    Policy::parse(invigilator_policy::DEFAULT_POLICY).unwrap()
}

fn alert(at: &str, user: &str, rule: &str, category: &str, severity: &str, summary: &str) -> Alert {
    Alert {
        agent_id: "a1".into(),
        hostname: "suite-pc1".into(),
        user: user.into(),
        kind: if rule.starts_with("agent.") {
            "agent"
        } else {
            "browsing"
        }
        .into(),
        rule: rule.into(),
        category: category.into(),
        severity: severity.parse().unwrap(),
        summary: summary.into(),
        matched: "how to hurt myself in the search terms".into(),
        observed_at_us: us(at),
        policy_version: "1".into(),
        event_seq: None,
        response: String::new(),
        aggregate_key: None,
    }
}

fn store() -> (tempfile::TempDir, Connection) {
    let (d, conn) = crate::store::test_db();
    agents::insert_agent(
        &crate::store::Admin::test(&conn),
        &NewAgent {
            agent_id: "a1",
            group: "pupils-ks2-suite",
            hostname: "suite-pc1",
            os: "linux",
            agent_version: "1",
            cert_serial: "s",
            cert_not_after_us: i64::MAX,
        },
    )
    .unwrap();
    (d, conn)
}

#[test]
fn weeks_run_monday_to_monday_in_london_across_the_clock_change() {
    let w = Week::parse("2026-W43").unwrap();
    assert_eq!(w.monday.to_string(), "2026-10-19");
    // Monday 00:00 BST is Sunday 23:00 UTC; the next Monday 00:00 is GMT.
    assert_eq!(rfc3339(w.start_us()), "2026-10-18T23:00:00.000000Z");
    assert_eq!(rfc3339(w.end_us()), "2026-10-26T00:00:00.000000Z");
    assert_eq!((w.end_us() - w.start_us()) / 3_600_000_000, 169);
    assert_eq!(Week::containing(us("2026-10-18T23:30:00Z")), w);
    assert_eq!(Week::containing(us("2026-10-18T22:30:00Z")), w.previous());
    assert_eq!(Week::containing(us("2026-10-25T23:59:00Z")), w);
    assert_eq!(
        Week::containing(us("2026-10-26T00:00:00Z")).label(),
        "2026-W44"
    );
    assert_eq!(Week::last_complete(us("2026-10-26T09:00:00Z")), w);
    assert_eq!(Week::parse("2026-W99"), None);
    assert_eq!(Week::parse("2026-12-01"), None);
}

#[test]
fn the_report_counts_groups_trends_sites_and_concerns_without_names() {
    let (_d, conn) = store();
    let p = policy();
    let web = |at, user| {
        alert(
            at,
            user,
            "web.adult",
            "adult",
            "serious",
            "Adult site: bad.example",
        )
    };
    for a in [
        // The week before: one adult alert.
        web("2026-10-14T10:00:00Z", "y5.alice"),
        // This week (2026-W43), including both edges of the clock change.
        web("2026-10-18T23:30:00Z", "y5.alice"),
        web("2026-10-25T23:30:00Z", "teacher.bob"),
        alert(
            "2026-10-20T10:00:00Z",
            "y6.carol",
            "keywords.self-harm",
            "self-harm",
            "serious",
            "Self-harm terms in a search on www.google.com",
        ),
        alert(
            "2026-10-20T11:00:00Z",
            "y6.carol",
            "keywords.self-harm",
            "self-harm",
            "serious",
            "Self-harm terms in a page on forum.example",
        ),
        alert(
            "2026-10-21T10:00:00Z",
            "y6.carol",
            "illegal.iwf",
            "iwf",
            "illegal",
            "Visit to an address on the illegal-content list",
        ),
        alert(
            "2026-10-22T10:00:00Z",
            "",
            "agent.silent",
            "monitoring",
            "serious",
            "agent on suite-pc1 has not reported",
        ),
        // Next week: not counted.
        web("2026-10-26T00:30:00Z", "y5.alice"),
    ] {
        alerts::insert(&crate::store::System::test(&conn), &a).unwrap();
    }
    conn.execute(
        "INSERT INTO incidents(created_at, created_by) VALUES (?1, 'dsl'), (?2, 'dsl')",
        [us("2026-10-21T09:00:00Z"), us("2026-10-27T09:00:00Z")],
    )
    .unwrap();
    let r = weekly(
        &crate::store::Audited::test(&conn),
        &p,
        Week::parse("2026-W43").unwrap(),
    )
    .unwrap();
    assert_eq!(r.alerts, 5);
    assert_eq!(r.illegal_alerts, 1);
    assert_eq!(r.incidents_opened, 1);
    assert_eq!(r.agents_silent, 1);
    let count = |v: &[Count], l: &str| v.iter().find(|c| c.label == l).map(|c| c.count);
    assert_eq!(count(&r.by_category, "adult"), Some(2));
    assert_eq!(count(&r.by_category, "self-harm"), Some(2));
    assert_eq!(
        count(&r.by_category, "iwf"),
        None,
        "illegal is a count only"
    );
    assert_eq!(count(&r.by_group, "ks2"), Some(3));
    assert_eq!(count(&r.by_group, "staff"), Some(1));
    // The silent-agent alert has no user: placed as the device's usual users (ks2) would be
    // wrong, so the policy's answer for an empty name is "unknown".
    assert_eq!(count(&r.by_group, "unknown"), Some(1));
    let adult = r.trend.iter().find(|t| t.category == "adult").unwrap();
    assert_eq!(
        (adult.this_week, adult.previous_week, adult.change),
        (2, 1, 1)
    );
    assert_eq!(r.sites_of_concern[0].host, "bad.example");
    assert_eq!(r.sites_of_concern[0].alerts, 2);
    assert_eq!(r.searches_of_concern.len(), 1);
    let c = &r.searches_of_concern[0];
    assert_eq!(
        (c.concern.as_str(), c.searches, c.page_titles),
        ("Self-harm", 1, 1)
    );

    let json = serde_json::to_string(&r).unwrap();
    for secret in [
        "alice",
        "bob",
        "carol",
        "y5.",
        "teacher",
        "hurt myself",
        "suite-pc1",
    ] {
        assert!(!json.contains(secret), "{secret} in {json}");
    }
}

#[test]
fn the_scheduled_run_stores_last_weeks_report_once_when_due() {
    let (d, conn) = store();
    let s = crate::store::Store::test_open(d.path());
    let p = policy();
    let cfg = ReportsConfig::default();
    // Monday 26 October 2026, 06:59 GMT: not yet.
    assert_eq!(
        generate_due(&s, &p, &cfg, us("2026-10-26T06:59:00Z")).unwrap(),
        None
    );
    let id = generate_due(&s, &p, &cfg, us("2026-10-26T07:00:00Z"))
        .unwrap()
        .unwrap();
    assert_eq!(
        generate_due(&s, &p, &cfg, us("2026-10-27T07:00:00Z")).unwrap(),
        None
    );
    let stored = store::reports::get(&crate::store::Audited::test(&conn), id)
        .unwrap()
        .unwrap();
    assert_eq!(stored.generated_by, "system");
    assert_eq!(stored.body.unwrap()["week"], "2026-W43");
    let audited: String = conn
        .query_row(
            "SELECT actor || ' ' || action || ' ' || object FROM audit_log",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audited, format!("system report.generate report:{id}"));
}

#[test]
fn the_schedule_settings_are_checked() {
    let bad = ReportsConfig {
        weekly_day: "someday".into(),
        ..Default::default()
    };
    assert!(bad.validate().unwrap_err().contains("someday"));
    let bad = ReportsConfig {
        weekly_at: "7am".into(),
        ..Default::default()
    };
    assert!(bad.validate().unwrap_err().contains("7am"));
    assert!(ReportsConfig::default().validate().is_ok());
}
