use super::*;
use crate::store::{alerts, test_db};
use invigilator_policy::Alert;

fn alert(conn: &Connection, user: &str, severity: &str, at: i64) -> i64 {
    alerts::insert(
        &crate::store::System::test(conn),
        &Alert {
            agent_id: "a1".into(),
            hostname: "pc1".into(),
            user: user.into(),
            kind: "browsing".into(),
            rule: "keywords.self-harm".into(),
            category: format!("cat-{severity}"),
            severity: severity.parse().unwrap(),
            summary: "s".into(),
            matched: "m".into(),
            observed_at_us: at,
            policy_version: "1".into(),
            event_seq: Some(1),
            response: String::new(),
            aggregate_key: None,
        },
    )
    .unwrap()
}

fn actions() -> Vec<String> {
    action_options(&ResponsesSpec::default(), "pupil")
}

fn record() -> IncidentRecord {
    IncidentRecord {
        subject: "amy.p ,ben.q".into(),
        subject_class: "pupil".into(),
        summary: "Searched for ways to self-harm during a lesson".into(),
        occurred_at: "2026-11-20T09:15:00+00:00".into(),
        category: "self-harm".into(),
        severity: "serious".into(),
        action_taken: vec![
            actions()[0].clone(),
            "other: spoke to Amy's form tutor".into(),
        ],
        parents_informed: true,
        parents_informed_at: Some("2026-11-20T15:00:00Z".into()),
        police_referral: false,
        referred_to: Some("CAMHS".into()),
        status: "open".into(),
        notes: "Amy's mother called back".into(),
    }
}

#[test]
fn the_sanctions_table_gives_the_options_per_class() {
    let pupil = actions();
    assert!(pupil.iter().any(|o| o == "inform parents"), "{pupil:?}");
    let staff = action_options(&ResponsesSpec::default(), "staff");
    assert!(!staff.iter().any(|o| o == "inform parents"), "{staff:?}");
    assert!(
        staff.iter().any(|o| o.contains("line manager")),
        "{staff:?}"
    );
}

#[test]
fn bad_input_is_refused_naming_the_field() {
    type Edit = Box<dyn Fn(&mut IncidentRecord)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("subject", Box::new(|r| r.subject = " , ".into())),
        (
            "subject_class",
            Box::new(|r| r.subject_class = "parent".into()),
        ),
        ("summary", Box::new(|r| r.summary = "  ".into())),
        (
            "occurred_at",
            Box::new(|r| r.occurred_at = "yesterday".into()),
        ),
        ("severity", Box::new(|r| r.severity = "awful".into())),
        ("action_taken", Box::new(|r| r.action_taken = vec![])),
        (
            "action_taken",
            Box::new(|r| r.action_taken = vec!["expelled".into()]),
        ),
        (
            "action_taken",
            Box::new(|r| r.action_taken = vec!["other:  ".into()]),
        ),
        (
            "parents_informed_at",
            Box::new(|r| r.parents_informed = false),
        ),
        ("status", Box::new(|r| r.status = "pending".into())),
    ];
    for (field, edit) in cases {
        let mut r = record();
        edit(&mut r);
        let err = r.validated(&actions()).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{field}:")), "{field}: {err}");
    }
    let ok = record().validated(&actions()).unwrap();
    assert_eq!(ok.subject, "amy.p, ben.q");
    assert_eq!(ok.occurred_at, "2026-11-20T09:15:00.000000Z");
    assert_eq!(ok.action_taken[1], "other: spoke to Amy's form tutor");
}

#[test]
fn creating_from_alerts_links_and_escalates_them() {
    let (_d, conn) = test_db();
    let a = alert(&conn, "amy.p", "serious", 2_000_000);
    let b = alert(&conn, "ben.q", "inappropriate", 1_000_000);
    let c = alert(&conn, "amy.p", "informational", 3_000_000);
    triage::apply(
        &crate::store::Audited::test(&conn),
        c,
        "dsl",
        &Change {
            status: Some("resolved".into()),
            ..Default::default()
        },
    )
    .unwrap()
    .unwrap();
    let pre = prefill(&crate::store::Audited::test(&conn), &[a, b, c]).unwrap();
    assert_eq!(pre.subject, "amy.p, ben.q");
    assert_eq!(pre.severity, "serious");
    assert_eq!(pre.category, "cat-serious");
    assert_eq!(pre.occurred_at, rfc3339(1_000_000));
    let id = create(
        &crate::store::Audited::test(&conn),
        "dsl",
        record(),
        &[a, b, c],
        &actions(),
    )
    .unwrap();
    assert_eq!(
        triage::get(&crate::store::Audited::test(&conn), a)
            .unwrap()
            .unwrap()
            .status,
        "escalated"
    );
    assert_eq!(
        triage::get(&crate::store::Audited::test(&conn), b)
            .unwrap()
            .unwrap()
            .status,
        "escalated"
    );
    // A closed alert is not reopened by being recorded.
    assert_eq!(
        triage::get(&crate::store::Audited::test(&conn), c)
            .unwrap()
            .unwrap()
            .status,
        "resolved"
    );
    let notes = triage::notes(&crate::store::Audited::test(&conn), a).unwrap();
    assert_eq!(
        notes.last().unwrap().note,
        format!("recorded in incident {id}")
    );
    assert_eq!(
        for_alert(&crate::store::Audited::test(&conn), a).unwrap(),
        vec![(id, "open".to_string())]
    );
    assert_eq!(
        get(&crate::store::Audited::test(&conn), id)
            .unwrap()
            .unwrap()
            .alerts,
        vec![a, b, c]
    );
    assert!(matches!(
        create(
            &crate::store::Audited::test(&conn),
            "dsl",
            record(),
            &[999],
            &actions()
        ),
        Err(IncidentError::NoSuchAlert(999))
    ));
}

#[test]
fn an_edit_appends_a_version_and_the_old_one_stays() {
    let (_d, conn) = test_db();
    let id = create(
        &crate::store::Audited::test(&conn),
        "dsl1",
        record(),
        &[],
        &actions(),
    )
    .unwrap();
    let mut edited = record();
    edited.status = "closed".into();
    edited.notes = "Closed after the review meeting".into();
    assert_eq!(
        update(
            &crate::store::Audited::test(&conn),
            id,
            "dsl2",
            edited.clone(),
            &actions()
        )
        .unwrap(),
        2
    );
    assert!(matches!(
        update(
            &crate::store::Audited::test(&conn),
            id,
            "dsl2",
            edited,
            &actions()
        ),
        Err(IncidentError::Unchanged(2))
    ));
    let inc = get(&crate::store::Audited::test(&conn), id)
        .unwrap()
        .unwrap();
    assert_eq!(inc.current.version, 2);
    assert_eq!(inc.current.record.status, "closed");
    assert_eq!(inc.current.opened_by, "dsl1");
    assert_eq!(inc.current.updated_by, "dsl2");
    assert_eq!(inc.history.len(), 2);
    assert_eq!(inc.history[0].record.status, "open");
    assert_eq!(inc.history[0].record.notes, "Amy's mother called back");
    assert_eq!(inc.history[1].changed, vec!["notes", "status"]);
    assert!(matches!(
        update(
            &crate::store::Audited::test(&conn),
            77,
            "dsl",
            record(),
            &actions()
        ),
        Err(IncidentError::NoSuchIncident(77))
    ));
    // The schema itself refuses to rewrite history.
    let err = conn
        .execute("UPDATE incident_versions SET author = 'x'", [])
        .unwrap_err()
        .to_string();
    assert!(err.contains("append-only"), "{err}");
}

#[test]
fn versions_are_deleted_only_before_the_retention_cut_off() {
    let (_d, conn) = test_db();
    let id = create(
        &crate::store::Audited::test(&conn),
        "dsl",
        record(),
        &[],
        &actions(),
    )
    .unwrap();
    let delete = || conn.execute("DELETE FROM incident_versions WHERE incident_id = ?1", [id]);
    let err = delete().unwrap_err().to_string();
    assert!(err.contains("retention"), "{err}");
    // A cut-off before the version was written still keeps it.
    conn.execute(
        "INSERT INTO meta(key, value) VALUES ('retention_incidents_before', '1')",
        [],
    )
    .unwrap();
    assert!(delete().is_err());
    conn.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'retention_incidents_before'",
        [(now_us() + 1_000_000).to_string()],
    )
    .unwrap();
    assert_eq!(delete().unwrap(), 1);
}

#[test]
fn lists_filter_and_governors_see_no_names() {
    let (_d, conn) = test_db();
    let first = create(
        &crate::store::Audited::test(&conn),
        "dsl",
        record(),
        &[],
        &actions(),
    )
    .unwrap();
    let mut other = record();
    other.category = "bullying".into();
    other.occurred_at = "2026-12-01T10:00:00Z".into();
    other.status = "closed".into();
    let second = create(
        &crate::store::Audited::test(&conn),
        "dsl",
        other,
        &[],
        &actions(),
    )
    .unwrap();
    let ids = |f: Filter| {
        list(&crate::store::Audited::test(&conn), &f)
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(Filter::default()), [second, first]);
    let status = |s: &str| Filter {
        status: Some(s.into()),
        ..Default::default()
    };
    assert_eq!(ids(status("open")), [first]);
    let december = Filter {
        from: Some("2026-12-01T00:00:00.000000Z".into()),
        ..Default::default()
    };
    assert_eq!(ids(december), [second]);
    let summaries: Vec<Summary> = list(&crate::store::Audited::test(&conn), &Filter::default())
        .unwrap()
        .iter()
        .map(Summary::from)
        .collect();
    let json = serde_json::to_string(&summaries).unwrap();
    for secret in [
        "amy",
        "ben",
        "subject",
        "self-harm during",
        "mother",
        "CAMHS",
        "tutor",
    ] {
        assert!(!json.contains(secret), "{secret} in {json}");
    }
    assert!(json.contains("\"police_referral\":false"), "{json}");
    assert!(json.contains("\"other\""), "{json}");
}
