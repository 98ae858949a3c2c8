//! Whole system, browsing: Debian's Chromium and Firefox ESR (headless, profiles of their own,
//! test host names resolved to a local HTTP server) -> their history databases -> the agent's
//! browsing source -> spool -> mTLS -> collector -> `events list --kind browsing`. The browsers
//! stay open throughout, the way a pupil's does; the agent is killed with SIGKILL and restarted
//! in the middle.

#[path = "browsing_support/mod.rs"]
mod support;

use invigilator_tests::{Agent, Collector, wait_for};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::{
    Chromium, FIREFOX_GO, committed, cpu_seconds, firefox_profile, start_site, visits,
    wait_delivered,
};

#[test]
fn chromium_visits_reach_the_collector_once_each_with_the_browser_open() {
    let port = start_site();
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let user_data = tmp.path().join("chromium-profile");
    let mut browser = Chromium::start(&user_data, port);

    let c = Collector::start("");
    let settings = format!(
        "[browsing]\nscan_homes = false\ndebounce = \"200ms\"\nrediscover_interval = \"1s\"\n\
         extra_roots = [{{ browser = \"chromium\", path = \"{}\" }}]\n",
        user_data.display()
    );
    let mut a = Agent::enroll(&c, &settings);
    a.start();
    a.wait_ready();
    wait_for(
        Duration::from_secs(30),
        "the agent to watch the profile",
        || a.log().contains("browsing: watching profile").then_some(()),
    );

    let search = "http://www.google.test/search?q=volcano+%C3%A9ruption+%2B+lava&hl=en".to_owned();
    let maths = "http://school.test/maths".to_owned();
    let go = "http://school.test/go".to_owned();
    let landed = "http://school.test/landed".to_owned();
    let cpu_start = (Instant::now(), cpu_seconds(a.pid().unwrap()));
    for url in [&search, &maths, &go] {
        browser.open(url);
    }
    let worst = wait_delivered(
        &c,
        || browser.committed(&scratch),
        &[search.clone(), maths.clone(), go.clone(), landed.clone()],
    );
    let (total, thread) = cpu_seconds(a.pid().unwrap());
    let secs = cpu_start.0.elapsed().as_secs_f64();
    let (total, thread) = (
        (total - cpu_start.1.0) / secs,
        (thread - cpu_start.1.1) / secs,
    );
    eprintln!(
        "browsing: worst History-commit-to-collector delay {worst:?}; over {secs:.1} s of browsing \
         the agent used {:.2}% of a core, its browsing thread {:.2}% (debug build)",
        total * 100.0,
        thread * 100.0
    );
    // The requirement is under 1%; the bound here leaves room for a loaded test machine.
    assert!(thread < 0.02, "browsing thread CPU {:.2}%", thread * 100.0);
    assert!(
        worst < Duration::from_secs(5),
        "delivered {worst:?} after the commit"
    );
    browser.assert_running();

    let events = visits(&c);
    let by_url = |u: &str| {
        events
            .iter()
            .find(|e| e["url"] == u)
            .unwrap_or_else(|| panic!("{u} missing in {events:?}"))
            .clone()
    };
    let s = by_url(&search);
    assert_eq!(s["search_engine"], "google");
    assert_eq!(s["search_terms"], "volcano éruption + lava");
    assert_eq!(s["title"], "Google Search");
    assert_eq!(s["browser"], "chromium");
    assert_eq!(s["profile"], user_data.join("Default").to_str().unwrap());
    assert_eq!(s["user"], "root");
    let m = by_url(&maths);
    assert_eq!(
        m["title"], "<b>Maths</b> <script>alert(1)</script>",
        "the title unescaped, exactly"
    );
    assert_eq!(m["search_terms"], "");
    // The script navigation is a link; the rest are what Chromium recorded, by the core type.
    assert_eq!(by_url(&landed)["transition"], "link");
    for (url, raw) in browser.committed(&scratch) {
        let want = invigilator_agent::sources::browsing::chromium::transition(raw);
        assert_eq!(by_url(&url)["transition"], want, "{url}");
    }
    // Visit times are the browser's, converted: within the test's run, not 369 years off.
    let t = s["visit_time_us"].as_i64().unwrap();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    assert!(
        (now_us - 120_000_000..=now_us).contains(&t),
        "visit_time_us {t} vs now {now_us}"
    );

    // Kill the agent; a visit is committed while it is down; it starts again; one more visit.
    a.kill9();
    let while_down = "http://school.test/while-down".to_owned();
    browser.open(&while_down);
    wait_for(
        Duration::from_secs(60),
        "the visit made while the agent was down to be committed",
        || {
            browser
                .committed(&scratch)
                .iter()
                .any(|(u, _)| *u == while_down)
                .then_some(())
        },
    );
    a.start();
    let after = "http://school.test/after-restart".to_owned();
    browser.open(&after);
    wait_delivered(
        &c,
        || browser.committed(&scratch),
        &[while_down.clone(), after.clone()],
    );
    // Let any re-sent duplicate arrive before counting.
    std::thread::sleep(Duration::from_secs(3));
    browser.assert_running();

    let committed: Vec<String> = browser
        .committed(&scratch)
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for e in visits(&c) {
        *counts
            .entry(e["url"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    for u in &committed {
        *want.entry(u.clone()).or_default() += 1;
    }
    assert_eq!(
        counts, want,
        "every committed visit exactly once at the collector"
    );
    let expected: BTreeSet<&String> = [&search, &maths, &go, &landed, &while_down, &after]
        .into_iter()
        .collect();
    assert!(
        expected.iter().all(|u| want.get(*u) == Some(&1)),
        "{want:?}"
    );
    assert!(
        c.events("browsing").iter().all(|e| e["action"] == "visit"),
        "no spurious history-reset"
    );
}

/// Firefox ESR, headless, with its own profile; its first page waits for the agent, then the
/// pages navigate on by script (Firefox has no DevTools HTTP endpoint to open tabs with).
#[test]
fn firefox_visits_reach_the_collector_with_the_browser_open() {
    let Some(exe) = ["firefox-esr", "firefox"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }) else {
        eprintln!("SKIPPED: Firefox is not installed (tests/setup.sh installs firefox-esr)");
        return;
    };
    let port = start_site();
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let profile = tmp.path().join("firefox-profile");
    firefox_profile(&profile, &[]);
    let log = std::fs::File::create(tmp.path().join("firefox.log")).unwrap();
    let base = format!("http://www.google.test:{port}");
    let mut firefox = Command::new(exe)
        .args(["--headless", "--no-remote", "--profile"])
        .arg(&profile)
        .arg(format!("{base}/ff-wait"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn firefox");
    struct KillOnDrop<'a>(&'a mut Child);
    impl Drop for KillOnDrop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let firefox = KillOnDrop(&mut firefox);
    let places = profile.join("places.sqlite");
    wait_for(
        Duration::from_secs(60),
        "firefox to create places.sqlite",
        || places.exists().then_some(()),
    );

    let c = Collector::start("");
    let settings = format!(
        "[browsing]\nscan_homes = false\ndebounce = \"200ms\"\nrediscover_interval = \"1s\"\n\
         extra_roots = [{{ browser = \"firefox\", path = \"{}\" }}]\n",
        profile.display()
    );
    let mut a = Agent::enroll(&c, &settings);
    a.start();
    a.wait_ready();
    wait_for(
        Duration::from_secs(30),
        "the agent to watch the profile",
        || a.log().contains("browsing: watching profile").then_some(()),
    );
    FIREFOX_GO.store(true, Ordering::SeqCst);

    let sql = "SELECT p.url, v.visit_type FROM moz_historyvisits v JOIN moz_places p ON p.id = v.place_id ORDER BY v.id";
    let search = format!("{base}/search?q=p%C3%A2te+%2B+fractions&ff=1");
    let maths = format!("{base}/maths?ff");
    let urls = [
        format!("{base}/ff-wait"),
        format!("{base}/ff-start"),
        search.clone(),
        maths.clone(),
    ];
    let worst = wait_delivered(&c, || committed(&places, &scratch, sql), &urls);
    eprintln!("browsing: firefox, worst places.sqlite-commit-to-collector delay {worst:?}");
    assert!(
        worst < Duration::from_secs(5),
        "delivered {worst:?} after the commit"
    );
    assert!(firefox.0.try_wait().unwrap().is_none(), "firefox exited");

    let events = visits(&c);
    let by_url = |u: &str| {
        events
            .iter()
            .find(|e| e["url"] == u)
            .unwrap_or_else(|| panic!("{u} missing in {events:?}"))
            .clone()
    };
    let s = by_url(&search);
    assert_eq!(
        (s["search_engine"].as_str(), s["search_terms"].as_str()),
        (Some("google"), Some("pâte + fractions"))
    );
    assert_eq!(
        (s["browser"].as_str(), s["transition"].as_str()),
        (Some("firefox"), Some("link"))
    );
    assert_eq!(s["profile"], profile.to_str().unwrap());
    assert_eq!(
        by_url(&maths)["title"],
        "<b>Maths</b> <script>alert(1)</script>"
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for e in visits(&c) {
        *counts
            .entry(e["url"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    for (u, _) in committed(&places, &scratch, sql) {
        *want.entry(u).or_default() += 1;
    }
    assert_eq!(
        counts, want,
        "every committed visit exactly once at the collector"
    );
}
