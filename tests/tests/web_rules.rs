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
    let db = c.db().dump(&c.data_dir());
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

/// The default policy with its term dates and closures removed (every week a school week), so
/// a lesson falls within the last week whenever the test runs: the latest lesson-time minute
/// before now (the collector accepts event times up to 30 days old).
fn latest_lesson_time(c: &mut Collector) -> i64 {
    let mut text = String::new();
    c.edit_policy(|t| {
        // Only in [school_times]: the keyword libraries have `terms` too.
        let start = t.find("[school_times]").expect("a [school_times] table");
        let end = t[start + 1..]
            .find("\n[")
            .map_or(t.len(), |i| start + 1 + i);
        let mut table = String::new();
        let mut skipping = false;
        for line in t[start..end].lines() {
            if line.starts_with("terms = [") || line.starts_with("non_teaching_days = [") {
                table.push_str(&line[..line.find('[').unwrap()]);
                table.push_str("[]\n");
                skipping = !line.trim_end().ends_with(']');
                continue;
            }
            if skipping {
                skipping = line.trim() != "]";
                continue;
            }
            table.push_str(line);
            table.push('\n');
        }
        text = format!("{}{table}{}", &t[..start], &t[end..]);
        text.clone()
    });
    let policy = invigilator_policy::Policy::parse(&text).unwrap();
    let minute = 60_000_000;
    (1..7 * 24 * 60)
        .map(|m| now_us() - m * minute)
        .find(|&at| policy.schedule.is_lesson_time(at))
        .expect("a lesson in the last week of a term-less school year")
}

#[test]
fn homework_platforms_are_exempt_and_a_visit_listed_twice_is_one_alert() {
    let mut c = Collector::start("");
    let lesson = latest_lesson_time(&mut c);
    let lists = c.dir.path().join("ut1");
    // As UT1 files them: homework platforms and bookmakers among the games.
    list(
        &lists,
        "games",
        "ttrockstars.com\nbet-example.com\ngames-example.net\n",
    );
    list(&lists, "gambling", "bet-example.com\n");
    list(&lists, "chat", "teams.microsoft.com\n");
    import(&c, &lists, false);
    c.restart();
    let pc = Agent::enroll_with(&c, &c.token("pupils-ks2", "1h", 1), "");
    let at = |seq, url: &str| Event {
        observed_at_us: lesson,
        ..visit(seq, url, "", "")
    };
    stream_batches(
        &c,
        &pc,
        vec![vec![
            at(1, "https://play.ttrockstars.com/garage"),
            at(2, "https://teams.microsoft.com/v2/"),
            at(3, "https://www.bet-example.com/slots"),
            // Control: an ordinary game in the same lesson is an alert.
            at(4, "https://games-example.net/play"),
        ]],
    );
    let alerts = c.alerts();
    let rules: Vec<&str> = alerts.iter().map(|a| a["rule"].as_str().unwrap()).collect();
    assert_eq!(
        rules
            .iter()
            .filter(|r| **r == "web.games_in_lessons")
            .count(),
        1,
        "only the ordinary game is a games alert: {alerts:#?}"
    );
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    let gambling = alerts.iter().find(|a| a["rule"] == "web.gambling").unwrap();
    assert!(
        gambling["matched"]
            .as_str()
            .unwrap()
            .ends_with("also listed in games"),
        "{gambling:#?}"
    );
    assert!(
        !serde_json::to_string(&alerts)
            .unwrap()
            .contains("ttrockstars"),
        "{alerts:#?}"
    );
    // The education list is in the policy file, which `policy check` describes.
    let check = output(&mut c.cli(&[
        "policy",
        "check",
        c.data_dir().join("policy.toml").to_str().unwrap(),
    ]));
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(said.contains("on the education list"), "{said}");
}
