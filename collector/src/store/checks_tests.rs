use super::*;
use crate::store::{NewAgent, agents, alerts};
use invigilator_policy::{Alert, Severity};
use invigilator_proto::v1::event::Kind;
use invigilator_proto::v1::{BrowsingVisit, Event, ProcessExec, UsbDevice};

const T0: i64 = 1_790_000_000_000_000;
const MIN: i64 = 60_000_000;

fn policy() -> Policy {
    Policy::parse(invigilator_policy::DEFAULT_POLICY).unwrap()
}

fn enrol(conn: &Connection, id: &str, group: &str, host: &str) {
    agents::insert_agent(
        &crate::store::Admin::test(conn),
        &NewAgent {
            agent_id: id,
            group,
            hostname: host,
            os: "linux",
            agent_version: "1",
            cert_serial: "s",
            cert_not_after_us: i64::MAX,
        },
    )
    .unwrap();
}

fn event(seq: u64, at: i64, host: &str, user: &str, kind: Kind) -> Event {
    Event {
        truncated: Vec::new(),
        device_time_us: 0,
        seq,
        observed_at_us: at,
        hostname: host.into(),
        user: user.into(),
        kind: Some(kind),
    }
}

fn visit(url: &str, title: &str) -> Kind {
    Kind::Browsing(BrowsingVisit {
        action: "visit".into(),
        url: url.into(),
        title: title.into(),
        search_terms: "secret search".into(),
        ..Default::default()
    })
}

/// Two devices: a ks2 pupil suite PC and a staff laptop, with a little of everything.
fn store() -> (tempfile::TempDir, Connection) {
    let (d, mut conn) = crate::store::test_db();
    enrol(&conn, "a1", "pupils-ks2-suite", "suite-pc1");
    enrol(&conn, "a2", "staff-laptops", "staff-lt1");
    let tx = conn.transaction().unwrap();
    let evs = [
        (
            "a1",
            event(
                1,
                T0,
                "suite-pc1",
                "y5.sam",
                visit("https://www.bbc.co.uk/news/x?q=1", "Pupil title"),
            ),
        ),
        (
            "a1",
            event(
                2,
                T0 + MIN,
                "suite-pc1",
                "y5.sam",
                Kind::Process(ProcessExec {
                    name: "tor".into(),
                    exe: "/usr/bin/tor".into(),
                    ..Default::default()
                }),
            ),
        ),
        (
            "a1",
            event(
                3,
                T0 + 2 * MIN,
                "suite-pc1",
                "y5.sam",
                Kind::Usb(UsbDevice {
                    action: "add".into(),
                    vendor_id: "0781".into(),
                    product_id: "5567".into(),
                    serial: "SN1".into(),
                    ..Default::default()
                }),
            ),
        ),
        (
            "a2",
            event(
                1,
                T0 + 3 * MIN,
                "staff-lt1",
                "teacher.jo",
                visit("https://example.org/a/b?c=d", "Staff title"),
            ),
        ),
        // Outside the range.
        (
            "a2",
            event(
                2,
                T0 + 100 * MIN,
                "staff-lt1",
                "teacher.jo",
                visit("https://late.example/", ""),
            ),
        ),
    ];
    for (agent, e) in &evs {
        crate::store::events::insert(&crate::store::System::test(&tx), agent, e, T0).unwrap();
    }
    tx.commit().unwrap();
    alerts::insert(
        &crate::store::System::test(&conn),
        &Alert {
            agent_id: "a1".into(),
            hostname: "suite-pc1".into(),
            user: "y5.sam".into(),
            kind: "process".into(),
            rule: "circumvention.tor".into(),
            category: "circumvention".into(),
            severity: Severity::Serious,
            summary: "Tor started".into(),
            matched: "name=tor".into(),
            observed_at_us: T0 + MIN,
            policy_version: "1".into(),
            event_seq: Some(2),
            response: String::new(),
            aggregate_key: None,
        },
    )
    .unwrap();
    (d, conn)
}

fn scope() -> Scope {
    Scope {
        from_us: T0,
        to_us: T0 + 10 * MIN,
        ..Default::default()
    }
}

#[test]
fn the_requester_cannot_run_their_own_check() {
    let (_d, conn) = store();
    let id = request(
        &crate::store::Audited::test(&conn),
        "head",
        "concern raised by parent",
        scope(),
    )
    .unwrap();
    let err = run(&crate::store::Audited::test(&conn), id, "HEAD", &policy()).unwrap_err();
    assert!(matches!(err, CheckError::OwnRequest { .. }));
    assert!(err.to_string().contains("requested by head"), "{err}");
    assert_eq!(
        get(&crate::store::Audited::test(&conn), id)
            .unwrap()
            .unwrap()
            .status,
        "requested"
    );
    run(&crate::store::Audited::test(&conn), id, "tech", &policy()).unwrap();
    let c = get(&crate::store::Audited::test(&conn), id)
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.status.as_str(), c.run_by.as_deref()),
        ("run", Some("tech"))
    );
    assert!(
        matches!(run(&crate::store::Audited::test(&conn), id, "tech2", &policy()), Err(CheckError::AlreadyRun(i)) if i == id)
    );
}

#[test]
fn a_request_needs_a_reason_a_range_and_known_kinds() {
    let (_d, conn) = store();
    assert!(matches!(
        request(&crate::store::Audited::test(&conn), "head", "  ", scope()),
        Err(CheckError::NoReason)
    ));
    let backwards = Scope {
        from_us: T0,
        to_us: T0,
        ..scope()
    };
    assert!(matches!(
        request(&crate::store::Audited::test(&conn), "head", "r", backwards),
        Err(CheckError::EmptyRange)
    ));
    let odd = Scope {
        kinds: vec!["email".into()],
        ..scope()
    };
    assert!(
        matches!(request(&crate::store::Audited::test(&conn), "head", "r", odd), Err(CheckError::BadKind(k)) if k == "email")
    );
}

#[test]
fn the_scope_filters_users_devices_groups_time_and_kinds() {
    let (_d, conn) = store();
    let p = policy();
    let all = produce(&conn, &scope(), &p).unwrap();
    assert_eq!((all.events, all.alerts, all.capped), (4, 1, false));
    assert!(all.rows.windows(2).all(|w| w[0].time <= w[1].time));

    let by_user = Scope {
        users: vec!["TEACHER.JO".into()],
        ..scope()
    };
    let r = produce(&conn, &by_user, &p).unwrap();
    assert_eq!((r.events, r.alerts), (1, 0));

    let by_device = Scope {
        devices: vec!["suite-pc1".into()],
        ..scope()
    };
    assert_eq!(produce(&conn, &by_device, &p).unwrap().rows.len(), 4);

    // A policy user group and an enrolment group both work.
    let ks2 = Scope {
        groups: vec!["ks2".into()],
        ..scope()
    };
    assert_eq!(produce(&conn, &ks2, &p).unwrap().rows.len(), 4);
    let staff = Scope {
        groups: vec!["staff-laptops".into()],
        ..scope()
    };
    assert_eq!(produce(&conn, &staff, &p).unwrap().rows.len(), 1);

    let usb = Scope {
        kinds: vec!["usb".into()],
        ..scope()
    };
    let r = produce(&conn, &usb, &p).unwrap();
    assert_eq!((r.events, r.alerts), (1, 0));
    assert_eq!(r.rows[0].what, "add, vendor 0781, product 5567, serial SN1");

    let late = Scope {
        from_us: T0 + 50 * MIN,
        to_us: T0 + 200 * MIN,
        ..scope()
    };
    assert_eq!(produce(&conn, &late, &p).unwrap().rows.len(), 1);

    let category = Scope {
        categories: vec!["adult".into()],
        kinds: vec!["process".into()],
        ..scope()
    };
    let r = produce(&conn, &category, &p).unwrap();
    assert_eq!((r.events, r.alerts), (1, 0));
}

#[test]
fn browsing_shows_sites_only_and_titles_for_staff_only() {
    let (_d, conn) = store();
    let browsing = Scope {
        kinds: vec!["browsing".into()],
        ..scope()
    };
    let r = produce(&conn, &browsing, &policy()).unwrap();
    let text = serde_json::to_string(&r).unwrap();
    assert!(text.contains("site www.bbc.co.uk\""), "{text}");
    assert!(
        text.contains("site example.org, title Staff title"),
        "{text}"
    );
    for hidden in ["/news", "q=1", "Pupil title", "secret search", "/a/b"] {
        assert!(!text.contains(hidden), "{hidden} in {text}");
    }
}

#[test]
fn a_big_scope_stops_at_the_cap_and_says_so() {
    let (_d, mut conn) = store();
    let tx = conn.transaction().unwrap();
    for seq in 10..(MAX_ROWS as u64 + 20) {
        let e = event(
            seq,
            T0 + 5 * MIN,
            "suite-pc1",
            "y5.sam",
            visit("https://a.example/", ""),
        );
        crate::store::events::insert(&crate::store::System::test(&tx), "a1", &e, T0).unwrap();
    }
    tx.commit().unwrap();
    let r = produce(&conn, &scope(), &policy()).unwrap();
    assert!(r.capped);
    assert_eq!(r.rows.len(), MAX_ROWS);
    assert!(r.note.contains("10000"), "{}", r.note);
}
