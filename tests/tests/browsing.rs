//! Whole system, browsing: Debian's Chromium (headless, its own profile, test host names mapped
//! to a local HTTP server) -> its History database -> the agent's browsing source -> spool ->
//! mTLS -> collector -> `events list --kind browsing`. The browser stays open throughout, the
//! way a pupil's does; the agent is killed with SIGKILL and restarted in the middle.

use invigilator_tests::{Agent, Collector, wait_for};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The page titles the site serves, as HTML (so the browser has to unescape them).
fn title_html(path: &str) -> String {
    if path.starts_with("/maths") {
        "&lt;b&gt;Maths&lt;/b&gt; &lt;script&gt;alert(1)&lt;/script&gt;".into()
    } else if path.starts_with("/search") {
        "Google Search".into()
    } else {
        format!("Page {}", path.trim_start_matches('/'))
    }
}

static FIREFOX_GO: AtomicBool = AtomicBool::new(false);

/// A page that goes on to `next` by script, as a pupil's click would.
fn navigate(title: &str, next: &str) -> String {
    format!(
        "<html><head><title>{title}</title></head><body><script>setTimeout(function() {{ location.href = '{next}' }}, 300)</script></body></html>"
    )
}

/// A tiny HTTP/1.1 server on loopback; every `*.test` name resolves to it.
fn start_site() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

fn serve(mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (status, body) = if path == "/favicon.ico" {
        ("404 Not Found", String::new())
    } else if path == "/ff-wait" {
        // Holds Firefox's first page until the agent watches its profile.
        while !FIREFOX_GO.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        ("200 OK", navigate("Wait", "/ff-start"))
    } else if path == "/ff-start" {
        (
            "200 OK",
            navigate("Start", "/search?q=p%C3%A2te+%2B+fractions&ff=1"),
        )
    } else if path.starts_with("/search") && path.ends_with("&ff=1") {
        ("200 OK", navigate("Google Search", "/maths?ff"))
    } else if path == "/go" {
        // Navigates on by script: Chromium records the next page as a "link" transition.
        (
            "200 OK",
            "<html><head><title>Go</title></head><body><script>location.href='/landed'</script></body></html>".into(),
        )
    } else {
        (
            "200 OK",
            format!(
                "<!doctype html><html><head><title>{}</title></head><body><p>{}</p></body></html>",
                title_html(&path),
                path
            ),
        )
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

struct Chromium {
    child: Child,
    user_data: PathBuf,
    devtools_port: u16,
}

impl Chromium {
    fn start(user_data: &Path, site_port: u16) -> Self {
        let exe = ["chromium", "/usr/bin/chromium"]
            .into_iter()
            .find(|c| {
                Command::new(c)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .expect("Debian's chromium is not installed: run tests/setup.sh");
        let log = std::fs::File::create(user_data.with_extension("log")).unwrap();
        let child = Command::new(exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", user_data.display()))
            .arg(format!(
                "--host-resolver-rules=MAP *.test 127.0.0.1:{site_port}"
            ))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn chromium");
        // Chromium writes the port it chose for DevTools here once it listens.
        let devtools_port = wait_for(Duration::from_secs(30), "chromium's DevTools port", || {
            let text = std::fs::read_to_string(user_data.join("DevToolsActivePort")).ok()?;
            text.lines().next()?.trim().parse().ok()
        });
        Self {
            child,
            user_data: user_data.into(),
            devtools_port,
        }
    }

    /// Opens `url` in a new tab of the running browser (DevTools HTTP endpoint). The endpoint
    /// percent-decodes what follows `/json/new?` and splits it at '&', so both are escaped.
    fn open(&self, url: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.devtools_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let target = url.replace('%', "%25").replace('&', "%26");
        write!(
            s,
            "PUT /json/new?{target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        // DevTools keeps the connection open: read the headers, then Content-Length bytes.
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "opening {url}: {status}"
        );
        let mut len = 0;
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 2 {
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            line.clear();
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
    }

    fn assert_running(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "chromium exited");
    }

    fn committed(&self, scratch: &Path) -> Vec<(String, i64)> {
        committed(
            &self.user_data.join("Default/History"),
            scratch,
            "SELECT u.url, v.transition FROM visits v JOIN urls u ON u.id = v.url ORDER BY v.id",
        )
    }
}

/// (url, raw transition) of every visit a browser has committed, read from a copy of its
/// database with the -wal / -journal, so the test never takes a lock the browser could trip on.
fn committed(db: &Path, scratch: &Path, sql: &str) -> Vec<(String, i64)> {
    let name = db.file_name().unwrap().to_str().unwrap();
    for sfx in ["", "-wal", "-journal", "-shm"] {
        let _ = std::fs::remove_file(scratch.join(format!("{name}{sfx}")));
    }
    for sfx in ["", "-wal", "-journal"] {
        let src = PathBuf::from(format!("{}{sfx}", db.display()));
        if std::fs::copy(&src, scratch.join(format!("{name}{sfx}"))).is_err() && sfx.is_empty() {
            return Vec::new();
        }
    }
    let Ok(conn) = rusqlite::Connection::open(scratch.join(name)) else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(sql) else {
        return Vec::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default()
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn visits(c: &Collector) -> Vec<Value> {
    c.events("browsing")
        .into_iter()
        .filter(|e| e["action"] == "visit")
        .collect()
}

/// CPU seconds (user + system) used so far by a process, and by its "browsing" thread.
fn cpu_seconds(pid: u32) -> (f64, f64) {
    let read = |path: PathBuf| {
        let stat = std::fs::read_to_string(path).unwrap_or_default();
        let Some(close) = stat.rfind(')') else {
            return (String::new(), 0.0);
        };
        let comm = stat[stat.find('(').unwrap() + 1..close].to_owned();
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap();
        (comm, ticks / hz as f64)
    };
    let total = read(PathBuf::from(format!("/proc/{pid}/stat"))).1;
    let browsing = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|t| read(t.path().join("stat")))
        .filter(|(comm, _)| comm == "browsing")
        .map(|(_, s)| s)
        .sum();
    (total, browsing)
}

/// Waits until every URL in `urls` is both committed to History and at the collector; returns
/// the worst delay between the two, as measured by polling both.
fn wait_delivered(
    c: &Collector,
    read_history: impl Fn() -> Vec<(String, i64)>,
    urls: &[String],
) -> Duration {
    let mut committed: BTreeMap<String, Instant> = BTreeMap::new();
    let mut arrived: BTreeMap<String, Instant> = BTreeMap::new();
    let start = Instant::now();
    let mut last_collector_check = Instant::now() - Duration::from_secs(1);
    while arrived.len() < urls.len() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "not delivered: committed {committed:?}, arrived {arrived:?}; at the collector: {:#?}",
            c.events("browsing")
        );
        let now = Instant::now();
        for (url, _) in read_history() {
            committed.entry(url).or_insert(now);
        }
        if now - last_collector_check >= Duration::from_millis(250) {
            last_collector_check = now;
            for e in visits(c) {
                let url = e["url"].as_str().unwrap().to_owned();
                if urls.contains(&url) {
                    arrived.entry(url).or_insert(now);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    urls.iter()
        .map(|u| {
            let seen = committed.get(u).copied().unwrap_or(start);
            arrived[u].saturating_duration_since(seen)
        })
        .max()
        .unwrap()
}

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
    std::fs::create_dir_all(&profile).unwrap();
    // Every host name resolves to the test site; no first-run pages or background traffic.
    std::fs::write(
        profile.join("user.js"),
        [
            r#"user_pref("network.dns.forceResolve", "127.0.0.1");"#,
            r#"user_pref("browser.shell.checkDefaultBrowser", false);"#,
            r#"user_pref("datareporting.policy.dataSubmissionEnabled", false);"#,
            r#"user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);"#,
            r#"user_pref("browser.aboutwelcome.enabled", false);"#,
            r#"user_pref("app.normandy.enabled", false);"#,
            r#"user_pref("browser.safebrowsing.update.enabled", false);"#,
            r#"user_pref("network.captive-portal-service.enabled", false);"#,
        ]
        .join("\n"),
    )
    .unwrap();
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
