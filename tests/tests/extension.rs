//! Whole system, the managed browser extension: Debian's Chromium (headless) loads
//! `agent/browser-extension`, which reports each navigation through the native-messaging host
//! (`invigilator-agent`, started by the browser from the host manifest) to the running agent's
//! socket, then spool -> mTLS -> collector. The history source runs beside it, so each visit is
//! reported twice and must be counted once.

// Shared with the history tests, which use the rest of it.
#[allow(dead_code)]
#[path = "browsing_support/mod.rs"]
mod support;

use invigilator_tests::{Agent, Collector, bin, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{Chromium, extension_dir, extension_id, firefox_profile, start_site, visits};

/// One browser test at a time: they run Chromium or Firefox as the same user, the tamper check
/// counts every browser process of that user, and two of them change files under /etc.
static ONE_BROWSER_TEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_BROWSER_TEST.lock().unwrap_or_else(|p| p.into_inner())
}

/// The host manifest as `deploy/` ships it, pointing at this build's agent, in the profile's
/// own NativeMessagingHosts directory (where Chromium looks for a user-level host).
fn install_host(user_data: &Path) {
    let dir = user_data.join("NativeMessagingHosts");
    std::fs::create_dir_all(&dir).unwrap();
    let shipped: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/browsers/native-messaging/chromium/uk.invigilator.agent.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut manifest = shipped.clone();
    manifest["path"] = bin("invigilator-agent").display().to_string().into();
    assert_eq!(
        shipped["allowed_origins"][0],
        format!("chrome-extension://{}/", extension_id()),
        "the shipped manifest allows the extension's id"
    );
    std::fs::write(
        dir.join("uk.invigilator.agent.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

fn chromium_with_extension(user_data: &Path, port: u16, socket: &Path, args: &[&str]) -> Chromium {
    install_host(user_data);
    let mut all = vec![format!("--load-extension={}", extension_dir().display())];
    all.extend(args.iter().map(|a| a.to_string()));
    Chromium::launch(
        user_data,
        port,
        &[],
        &all,
        &[("INVIGILATOR_BROWSER_SOCKET", socket)],
    )
}

fn reported_by<'a>(events: &'a [Value], url: &str, reporter: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["url"] == url && e["reporter"] == reporter)
        .collect()
}

/// The extension's own tests (queue, acknowledgements, reconnection, bounds), under node's test
/// runner with a fake browser API; run here so that `cargo test` covers them.
#[test]
fn the_extensions_unit_tests_pass_under_node() {
    let out = std::process::Command::new("node")
        .arg("--test")
        .arg(extension_dir().join("test/queue.test.mjs"))
        .output()
        .expect("node (tests/setup.sh installs Debian's nodejs)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("# fail 0"), "{text}");
}

#[test]
fn extension_visits_arrive_at_once_survive_an_agent_kill_and_count_once() {
    let _one = one_at_a_time();
    let port = start_site();
    let tmp = tempfile::tempdir().unwrap();
    let user_data = tmp.path().join("chromium-profile");
    std::fs::create_dir_all(&user_data).unwrap();
    let socket = tmp.path().join("browser.sock");

    let c = Collector::start("[agents]\nsilent_check_interval = \"1s\"\n");
    let settings = format!(
        "[browsing]\nscan_homes = false\ndebounce = \"200ms\"\nrediscover_interval = \"1s\"\n\
         extra_roots = [{{ browser = \"chromium\", path = \"{}\" }}]\n\
         [extension]\nsocket = \"{}\"\nmissing_after = \"15s\"\n\
         [uplink]\nheartbeat_interval = \"1s\"\n",
        user_data.display(),
        socket.display()
    );
    let mut a = Agent::enroll(&c, &settings);
    a.start();
    a.wait_ready();
    let mut browser = chromium_with_extension(&user_data, port, &socket, &["about:blank"]);
    wait_for(
        Duration::from_secs(60),
        "the extension's host to say hello to the agent",
        || a.log().contains("extension: connected").then_some(()),
    );
    assert!(
        a.log().contains("browser=\"chromium\"") || a.log().contains("browser=chromium"),
        "{}",
        a.log()
    );

    let search = "http://www.google.test/search?q=how+to+kill+myself".to_owned();
    let opened = Instant::now();
    browser.open(&search);
    let took = wait_for(Duration::from_secs(30), "the extension's report", || {
        (!reported_by(&visits(&c), &search, "extension").is_empty()).then(|| opened.elapsed())
    });
    eprintln!("extension: navigation to stored at the collector in {took:?}");
    // The history source's copy arrives after Chromium commits its database.
    wait_for(Duration::from_secs(60), "the history's report", || {
        (!reported_by(&visits(&c), &search, "history").is_empty()).then_some(())
    });
    let events = visits(&c);
    let ext = reported_by(&events, &search, "extension");
    assert_eq!(ext.len(), 1, "{events:#?}");
    assert_eq!(ext[0]["search_terms"], "how to kill myself");
    assert_eq!(ext[0]["search_engine"], "google");
    assert_eq!(ext[0]["incognito"], false);
    assert_eq!(ext[0]["browser"], "chromium");
    assert_eq!(ext[0]["user"], "root", "the socket peer's user");
    let self_harm: Vec<Value> = c
        .alerts()
        .into_iter()
        .filter(|a| a["rule"] == "keywords.self_harm")
        .collect();
    assert_eq!(self_harm.len(), 1, "{self_harm:#?}");
    assert_eq!(
        self_harm[0]["count"], 1,
        "two reports, one visit: {self_harm:#?}"
    );

    // A hostile title is carried as data.
    let maths = "http://school.test/maths".to_owned();
    browser.open(&maths);
    wait_for(Duration::from_secs(30), "the titled page", || {
        reported_by(&visits(&c), &maths, "extension")
            .first()
            .filter(|e| !e["title"].as_str().unwrap_or("").is_empty())
            .map(|e| e["title"].clone())
    });
    let events = visits(&c);
    assert_eq!(
        reported_by(&events, &maths, "extension")[0]["title"],
        "<b>Maths</b> <script>alert(1)</script>"
    );

    // A single-page app's move (history.pushState) is a visit of its own, with its search.
    browser.open("http://www.google.test/spa");
    let moved = "http://www.google.test/search?q=how+to+hurt+myself&spa=1".to_owned();
    let in_page = wait_for(Duration::from_secs(30), "the in-page visit", || {
        reported_by(&visits(&c), &moved, "extension")
            .first()
            .map(|e| (*e).clone())
    });
    assert_eq!(in_page["transition"], "in_page", "{in_page:#}");
    assert_eq!(in_page["search_terms"], "how to hurt myself");
    assert_eq!(in_page["title"], "how to hurt myself - App");

    // The agent is killed: the extension keeps the visit made meanwhile and sends it once the
    // agent is back.
    a.kill9();
    let while_down = "http://school.test/while-the-agent-is-down".to_owned();
    browser.open(&while_down);
    std::thread::sleep(Duration::from_secs(2));
    a.start();
    wait_for(
        Duration::from_secs(90),
        "the visit made while the agent was down, from the extension",
        || (!reported_by(&visits(&c), &while_down, "extension").is_empty()).then_some(()),
    );
    browser.assert_running();
    drop(browser);
    // No browser of this user runs now (the tests take turns): nothing to alert on.
    std::thread::sleep(Duration::from_secs(17));
    assert!(
        c.alerts()
            .iter()
            .all(|a| a["rule"] != "agent.extension_missing"),
        "{:#?}",
        c.alerts()
    );

    // The same user's browser without the extension (removed, disabled, or its host gone):
    // after missing_after, the technician's alert names the browser and the user.
    let bare = tmp.path().join("no-extension");
    std::fs::create_dir_all(&bare).unwrap();
    let _bare = Chromium::launch(&bare, port, &[], &[], &[]);
    let alert = c.wait_for_alert("agent.extension_missing", Duration::from_secs(60));
    assert!(
        alert["summary"]
            .as_str()
            .unwrap()
            .contains("chromium: root"),
        "{alert:#}"
    );
}

/// The shipped private-window policy in Chromium's managed directory, which is the machine's
/// own (Chromium reads no other): removed again when the test ends, however it ends. Only this
/// test writes there, and no other test opens a private window.
struct PolicyInstalled(PathBuf);

impl PolicyInstalled {
    fn new() -> Self {
        let dir = Path::new("/etc/chromium/policies/managed");
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("invigilator-private-browsing.json");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/browsers/policies/chromium/invigilator-private-browsing.json"),
            &path,
        )
        .unwrap();
        Self(path)
    }
}

impl Drop for PolicyInstalled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn chromium_posture(c: &Collector) -> Option<Value> {
    c.agents().first()?["browsers"]
        .as_array()?
        .iter()
        .find(|b| b["browser"] == "chromium")
        .cloned()
}

#[test]
fn a_private_window_is_unseen_and_alerted_until_the_shipped_policy_closes_it() {
    let _one = one_at_a_time();
    let stale = Path::new("/etc/chromium/policies/managed/invigilator-private-browsing.json");
    let _ = std::fs::remove_file(stale);
    let port = start_site();
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("browser.sock");
    let c = Collector::start("[agents]\nsilent_check_interval = \"1s\"\n");
    let settings = format!(
        "[browsing]\nscan_homes = false\ndebounce = \"200ms\"\nrediscover_interval = \"1s\"\n\
         extra_roots = [{{ browser = \"chromium\", path = \"{}\" }}, {{ browser = \"chromium\", path = \"{}\" }}]\n\
         [extension]\nsocket = \"{}\"\n[uplink]\nheartbeat_interval = \"1s\"\n",
        tmp.path().join("open").display(),
        tmp.path().join("closed").display(),
        socket.display()
    );
    let mut a = Agent::enroll(&c, &settings);
    a.start();
    a.wait_ready();

    // No policy: the device is reported open and alerted; a private window is seen by nothing.
    let alert = c.wait_for_alert("agent.private_browsing", Duration::from_secs(30));
    assert!(
        alert["summary"].as_str().unwrap().contains("chromium"),
        "{alert:#}"
    );
    assert_eq!(chromium_posture(&c).unwrap()["private_unseen"], true);
    let open = tmp.path().join("open");
    std::fs::create_dir_all(&open).unwrap();
    let hidden = "http://school.test/private-window-unseen".to_owned();
    // As a pupil would start it: the page given with --incognito opens in a private window
    // (pages opened through DevTools would go to a normal one).
    let browser = chromium_with_extension(&open, port, &socket, &["--incognito", &hidden]);
    wait_for(
        Duration::from_secs(30),
        "the private window's page to load",
        || {
            support::SERVED
                .lock()
                .unwrap()
                .iter()
                .any(|p| p == "/private-window-unseen")
                .then_some(())
        },
    );
    // The extension would report within a second and the history within a few: give both
    // far longer, then check that nothing came.
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        visits(&c).iter().all(|e| e["url"] != hidden),
        "a private window's visit arrived without the policy: the test no longer shows the gap"
    );
    drop(browser);

    // The shipped policy: the same private window opens as a normal one, and is seen.
    let _policy = PolicyInstalled::new();
    wait_for(Duration::from_secs(30), "the posture to clear", || {
        (chromium_posture(&c)?["private_unseen"] == false).then_some(())
    });
    let closed = tmp.path().join("closed");
    std::fs::create_dir_all(&closed).unwrap();
    let seen = "http://school.test/private-window-refused".to_owned();
    let _browser = chromium_with_extension(&closed, port, &socket, &["--incognito", &seen]);
    let report = wait_for(
        Duration::from_secs(30),
        "the visit from the extension",
        || {
            reported_by(&visits(&c), &seen, "extension")
                .first()
                .map(|e| (*e).clone())
        },
    );
    assert_eq!(report["incognito"], false, "opened in a normal window");
    wait_for(
        Duration::from_secs(60),
        "the visit from the history",
        || (!reported_by(&visits(&c), &seen, "history").is_empty()).then_some(()),
    );
    assert!(
        !c.agents()[0]["browsers_unseen"]
            .as_str()
            .unwrap()
            .contains("chromium")
    );
    let raised = c
        .alerts()
        .into_iter()
        .filter(|a| a["rule"] == "agent.private_browsing")
        .count();
    assert_eq!(raised, 1, "raised once, not again while nothing changed");
}

/// Benchmark (tests/bench/extension.sh): how long a visit takes from the browser to an alert at
/// the collector, reported by the extension and by the history source, over 50 searches in one
/// browser. Prints percentiles; asserts nothing about them (a loaded machine is slower).
#[test]
#[ignore]
fn bench_visit_to_alert() {
    let _one = one_at_a_time();
    let port = start_site();
    let tmp = tempfile::tempdir().unwrap();
    let user_data = tmp.path().join("chromium-profile");
    std::fs::create_dir_all(&user_data).unwrap();
    let socket = tmp.path().join("browser.sock");
    let c = Collector::start("");
    let settings = format!(
        "[browsing]\nscan_homes = false\nrediscover_interval = \"1s\"\n\
         extra_roots = [{{ browser = \"chromium\", path = \"{}\" }}]\n\
         [extension]\nsocket = \"{}\"\n",
        user_data.display(),
        socket.display()
    );
    let mut a = Agent::enroll(&c, &settings);
    a.start();
    a.wait_ready();
    let browser = chromium_with_extension(&user_data, port, &socket, &["about:blank"]);
    wait_for(Duration::from_secs(60), "the extension to connect", || {
        a.log().contains("extension: connected").then_some(())
    });
    let n = 50;
    let (mut ext, mut hist) = (Vec::new(), Vec::new());
    for i in 0..n {
        let url = format!("http://www.google.test/search?q=how+to+kill+myself+{i}");
        let opened = Instant::now();
        browser.open(&url);
        let (mut e, mut h) = (None, None);
        while h.is_none() || e.is_none() {
            assert!(
                opened.elapsed() < Duration::from_secs(60),
                "{url} never arrived"
            );
            let events = visits(&c);
            if e.is_none() && !reported_by(&events, &url, "extension").is_empty() {
                e = Some(opened.elapsed());
            }
            if h.is_none() && !reported_by(&events, &url, "history").is_empty() {
                h = Some(opened.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        ext.push(e.unwrap());
        hist.push(h.unwrap());
    }
    // Every visit raised (or added to) the one aggregated alert once: count = n.
    let alerts = c.alerts();
    let self_harm: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule"] == "keywords.self_harm")
        .collect();
    let raised: u64 = self_harm.iter().map(|a| a["count"].as_u64().unwrap()).sum();
    assert_eq!(raised, n, "{self_harm:#?}");
    let show = |name: &str, v: &mut Vec<Duration>| {
        v.sort();
        let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).saturating_sub(1)];
        println!(
            "{name}: visits {}, p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
            v.len(),
            at(0.5).as_secs_f64() * 1000.0,
            at(0.95).as_secs_f64() * 1000.0,
            v.last().unwrap().as_secs_f64() * 1000.0
        );
    };
    show("extension (visit to alert)", &mut ext);
    show("history source (visit to stored)", &mut hist);
}

/// A file put in place of the machine's own for one test (Firefox reads its policies from
/// /etc only), and the original put back however the test ends.
struct Replaced {
    path: PathBuf,
    original: Option<Vec<u8>>,
}

impl Replaced {
    fn new(path: &Path, text: &str) -> Self {
        let original = std::fs::read(path).ok();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        Self {
            path: path.into(),
            original,
        }
    }
}

impl Drop for Replaced {
    fn drop(&mut self) {
        match &self.original {
            Some(bytes) => {
                let _ = std::fs::write(&self.path, bytes);
            }
            None => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Firefox lets a policy take an extension into private windows: with the shipped policy
/// (the XPI's address made local), Firefox ESR force-installs the extension, and a private
/// window's visits, which write no history, arrive from it marked as private.
#[test]
fn firefox_private_window_visits_arrive_through_the_extension() {
    let _one = one_at_a_time();
    let exe = ["firefox-esr", "firefox"]
        .into_iter()
        .find(|c| {
            std::process::Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Firefox ESR is not installed: run tests/setup.sh");
    let build = std::process::Command::new(extension_dir().join("build.sh"))
        .output()
        .unwrap();
    assert!(build.status.success(), "{build:?}");
    let xpi = extension_dir().join("dist/invigilator-firefox.xpi");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/browsers/policies/firefox/policies.json"),
    )
    .unwrap()
    .replace(
        "file:///usr/share/invigilator/invigilator-firefox.xpi",
        &format!("file://{}", xpi.display()),
    );
    let _policy = Replaced::new(Path::new("/etc/firefox/policies/policies.json"), &shipped);

    let port = start_site();
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("browser.sock");
    let home = tmp.path().join("home");
    let hosts = home.join(".mozilla/native-messaging-hosts");
    std::fs::create_dir_all(&hosts).unwrap();
    let mut host: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/browsers/native-messaging/firefox/uk.invigilator.agent.json"),
        )
        .unwrap(),
    )
    .unwrap();
    host["path"] = bin("invigilator-agent").display().to_string().into();
    std::fs::write(hosts.join("uk.invigilator.agent.json"), host.to_string()).unwrap();
    let profile = tmp.path().join("firefox-profile");
    // The test's XPI is not signed by Mozilla; ESR honours this, release does not.
    firefox_profile(
        &profile,
        &[r#"user_pref("xpinstall.signatures.required", false);"#],
    );

    let c = Collector::start("");
    let settings = format!(
        "[browsing]\nscan_homes = false\ndebounce = \"200ms\"\nrediscover_interval = \"1s\"\n\
         extra_roots = [{{ browser = \"firefox\", path = \"{}\" }}]\n\
         [extension]\nsocket = \"{}\"\n[uplink]\nheartbeat_interval = \"1s\"\n",
        profile.display(),
        socket.display()
    );
    let mut a = Agent::enroll(&c, &settings);
    a.start();
    a.wait_ready();
    let base = format!("http://www.google.test:{port}");
    let log = std::fs::File::create(tmp.path().join("firefox.log")).unwrap();
    let mut firefox = std::process::Command::new(exe)
        .args(["--headless", "--no-remote", "--profile"])
        .arg(&profile)
        .arg("--private-window")
        .arg(format!("{base}/ff-wait"))
        .env("HOME", &home)
        .env("INVIGILATOR_BROWSER_SOCKET", &socket)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn firefox");
    struct KillOnDrop<'a>(&'a mut std::process::Child);
    impl Drop for KillOnDrop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _firefox = KillOnDrop(&mut firefox);
    wait_for(
        Duration::from_secs(90),
        "Firefox's extension to connect",
        || {
            let log = a.log();
            log.lines()
                .any(|l| l.contains("extension: connected") && l.contains("firefox"))
                .then_some(())
        },
    );
    // The first page waited for the extension; the private window now browses on by script.
    support::FIREFOX_GO.store(true, std::sync::atomic::Ordering::SeqCst);
    let search = format!("{base}/search?q=p%C3%A2te+%2B+fractions&ff=1");
    let report = wait_for(
        Duration::from_secs(60),
        "the private window's search",
        || {
            reported_by(&visits(&c), &search, "extension")
                .first()
                .map(|e| (*e).clone())
        },
    );
    assert_eq!(report["incognito"], true, "{report:#}");
    assert_eq!(report["browser"], "firefox");
    assert_eq!(report["search_terms"], "pâte + fractions");
    let posture = wait_for(Duration::from_secs(30), "Firefox's posture", || {
        c.agents().first()?["browsers"]
            .as_array()?
            .iter()
            .find(|b| b["browser"] == "firefox")
            .cloned()
    });
    assert_eq!(posture["private_unseen"], false, "{posture:#}");
    assert_eq!(posture["extension_forced"], true, "{posture:#}");
    // Private windows write no history: the extension is the only witness.
    std::thread::sleep(Duration::from_secs(3));
    assert!(reported_by(&visits(&c), &search, "history").is_empty());
}
