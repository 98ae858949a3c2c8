//! Browsing rules end to end: category lists imported with the CLI, visits sent over mTLS by an
//! enrolled identity, alerts read back with the CLI. Covers aggregation of repeats, keyword
//! alerts, a list refreshed while the collector runs, and the illegal class, whose address
//! must appear nowhere: not in the alert, not in the stored event.

use invigilator_proto::v1::{BrowsingVisit, Event, event::Kind};
use invigilator_tests::{Agent, Collector, now_us, output, stream_batches, wait_for};
use std::path::Path;
use std::time::Duration;

fn visit(seq: u64, url: &str, title: &str, search: &str) -> Event {
    Event {
        truncated: Vec::new(),
        device_time_us: 0,
        seq,
        observed_at_us: now_us(),
        hostname: "ict-03".into(),
        user: "y6patel".into(),
        kind: Some(Kind::Browsing(BrowsingVisit {
            action: "visit".into(),
            url: url.into(),
            title: title.into(),
            search_terms: search.into(),
            search_engine: if search.is_empty() { "" } else { "google" }.into(),
            browser: "chromium".into(),
            ..Default::default()
        })),
    }
}

fn list(root: &Path, category: &str, domains: &str) {
    std::fs::create_dir_all(root.join(category)).unwrap();
    std::fs::write(root.join(category).join("domains"), domains).unwrap();
}

fn import(c: &Collector, dir: &Path, illegal: bool) {
    let mut args = vec!["lists", "import", "--format", "ut1"];
    if illegal {
        args.push("--illegal");
    }
    let dir = dir.to_str().unwrap();
    args.push(dir);
    let out = output(&mut c.cli(&args));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn listed_sites_keywords_and_illegal_addresses_raise_the_right_alerts() {
    let c = Collector::start("");
    // Lists imported while the collector runs are picked up by the reload, one at a time.
    let reloads = || c.log().matches("policy reloaded").count();
    let lists = c.dir.path().join("ut1");
    list(&lists, "gambling", "bet-example.com\n");
    import(&c, &lists, false);
    wait_for(Duration::from_secs(20), "the lists to be loaded", || {
        (reloads() >= 1).then_some(())
    });
    let feed = c.dir.path().join("feed");
    list(&feed, "iwf", "abuse-example.test\n");
    let before = reloads();
    import(&c, &feed, true);
    wait_for(
        Duration::from_secs(20),
        "the illegal list to be loaded",
        || (reloads() > before).then_some(()),
    );
    let pc = Agent::enroll_with(&c, &c.token("pupils-ks2", "1h", 1), "");
    let mut batch: Vec<Event> = (1..=30)
        .map(|i| {
            visit(
                i,
                &format!("https://www.bet-example.com/slots/{i}"),
                "Slots",
                "",
            )
        })
        .collect();
    batch.push(visit(
        31,
        "https://www.google.com/search?q=how+to+cut+my+hair",
        "",
        "how to cut my hair",
    ));
    batch.push(visit(
        32,
        "https://www.google.com/search?q=i+want+to+die",
        "",
        "i want to die",
    ));
    batch.push(visit(
        33,
        "https://cdn.abuse-example.test/a/b.jpg",
        "SECRET-TITLE",
        "",
    ));
    stream_batches(&c, &pc, vec![batch]);

    let alerts = c.alerts();
    let by_rule = |rule: &str| {
        alerts
            .iter()
            .filter(|a| a["rule"] == rule)
            .collect::<Vec<_>>()
    };
    let gambling = by_rule("web.gambling");
    assert_eq!(
        gambling.len(),
        1,
        "30 visits to one site are one alert: {alerts:#?}"
    );
    assert_eq!(gambling[0]["count"], 30);
    assert_eq!(gambling[0]["severity"], "serious");
    assert_eq!(
        gambling[0]["matched"],
        "domain \"bet-example.com\" in list \"gambling\""
    );
    assert_eq!(by_rule("keywords.self_harm").len(), 1, "{alerts:#?}");
    assert!(
        alerts
            .iter()
            .all(|a| !a["matched"].as_str().unwrap().contains("hair")),
        "an innocent search raised an alert: {alerts:#?}"
    );
    let illegal = by_rule("illegal.iwf");
    assert_eq!(illegal.len(), 1, "{alerts:#?}");
    assert_eq!(illegal[0]["severity"], "illegal");
    assert!(illegal[0]["response"].as_str().unwrap().contains("police"));
    assert_eq!(alerts.len(), 3, "{alerts:#?}");

    // Nowhere readable holds the address or the title.
    let everything = format!(
        "{}{}",
        serde_json::to_string(&alerts).unwrap(),
        serde_json::to_string(&c.events("browsing")).unwrap()
    );
    assert!(!everything.contains("abuse-example"), "{everything}");
    assert!(!everything.contains("SECRET-TITLE"));
    let db = std::fs::read(c.data_dir().join("invigilator.db")).unwrap();
    let wal = std::fs::read(c.data_dir().join("invigilator.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes
                .windows(b"abuse-example".len())
                .any(|w| w == b"abuse-example"),
            "the address is in the database file"
        );
    }
}
