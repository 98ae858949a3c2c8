//! Support for the browsing whole-system tests: a local web site every test host name resolves
//! to, a headless Chromium driven through its DevTools HTTP endpoint, and readers of what the
//! browsers committed and what the collector received.

use invigilator_tests::{Collector, wait_for};
use serde_json::Value;
use std::collections::BTreeMap;
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

pub static FIREFOX_GO: AtomicBool = AtomicBool::new(false);

/// Every path the site has served, so a test can tell a page loaded even where nothing else
/// records it (a private window).
pub static SERVED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A page that goes on to `next` by script, as a pupil's click would.
fn navigate(title: &str, next: &str) -> String {
    format!(
        "<html><head><title>{title}</title></head><body><script>setTimeout(function() {{ location.href = '{next}' }}, 300)</script></body></html>"
    )
}

/// A tiny HTTP/1.1 server on loopback; every `*.test` name resolves to it.
/// A Firefox profile in `dir` where every host name resolves to the test site, with no first-run
/// pages or background traffic; `extra` preferences (whole `user_pref(...);` lines) are added.
pub fn firefox_profile(dir: &Path, extra: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let prefs = [
        r#"user_pref("network.dns.forceResolve", "127.0.0.1");"#,
        r#"user_pref("browser.shell.checkDefaultBrowser", false);"#,
        r#"user_pref("datareporting.policy.dataSubmissionEnabled", false);"#,
        r#"user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);"#,
        r#"user_pref("browser.aboutwelcome.enabled", false);"#,
        r#"user_pref("app.normandy.enabled", false);"#,
        r#"user_pref("browser.safebrowsing.update.enabled", false);"#,
        r#"user_pref("network.captive-portal-service.enabled", false);"#,
    ];
    let text: Vec<&str> = prefs.iter().chain(extra).copied().collect();
    std::fs::write(dir.join("user.js"), text.join("\n")).unwrap();
}

pub fn start_site() -> u16 {
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
    SERVED.lock().unwrap().push(path.clone());
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
    } else if path == "/spa" {
        // A single-page app: it moves to a search without loading a page, then names it.
        (
            "200 OK",
            "<html><head><title>App</title></head><body><script>setTimeout(function() { history.pushState({}, '', '/search?q=how+to+hurt+myself&spa=1'); document.title = 'how to hurt myself - App'; }, 300)</script></body></html>".into(),
        )
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

pub struct Chromium {
    child: Child,
    user_data: PathBuf,
    devtools_port: u16,
}

impl Chromium {
    pub fn start(user_data: &Path, site_port: u16) -> Self {
        Self::start_resolving(user_data, site_port, &[])
    }

    /// As `start`, with `hosts` (real names, e.g. a listed gambling site) also resolved to the
    /// local site.
    pub fn start_resolving(user_data: &Path, site_port: u16, hosts: &[&str]) -> Self {
        Self::launch(user_data, site_port, hosts, &[], &[])
    }

    /// As `start_resolving`, with more arguments (the first page last, in place of
    /// about:blank) and environment variables for the browser and what it starts.
    pub fn launch(
        user_data: &Path,
        site_port: u16,
        hosts: &[&str],
        args: &[String],
        env: &[(&str, &Path)],
    ) -> Self {
        let rules: String = std::iter::once("*.test")
            .chain(hosts.iter().copied())
            .map(|h| format!("MAP {h} 127.0.0.1:{site_port}"))
            .collect::<Vec<_>>()
            .join(", ");
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
            .arg(format!("--host-resolver-rules={rules}"))
            .args(args)
            .args(args.is_empty().then_some("about:blank"))
            .envs(env.iter().copied())
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
    pub fn open(&self, url: &str) {
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

    pub fn assert_running(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "chromium exited");
    }

    pub fn committed(&self, scratch: &Path) -> Vec<(String, i64)> {
        committed(
            &self.user_data.join("Default/History"),
            scratch,
            "SELECT u.url, v.transition FROM visits v JOIN urls u ON u.id = v.url ORDER BY v.id",
        )
    }
}

/// (url, raw transition) of every visit a browser has committed, read from a copy of its
/// database with the -wal / -journal, so the test never takes a lock the browser could trip on.
pub fn committed(db: &Path, scratch: &Path, sql: &str) -> Vec<(String, i64)> {
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

pub fn visits(c: &Collector) -> Vec<Value> {
    c.events("browsing")
        .into_iter()
        .filter(|e| e["action"] == "visit")
        .collect()
}

/// CPU seconds (user + system) used so far by a process, and by its "browsing" thread.
pub fn cpu_seconds(pid: u32) -> (f64, f64) {
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
pub fn wait_delivered(
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

/// The browser extension's source tree (`agent/browser-extension`), loadable unpacked.
#[allow(dead_code)] // the extension's and the Chromebook's tests, not the history's
pub fn extension_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/browser-extension")
}

/// The Chromium extension id its development key gives.
#[allow(dead_code)] // the extension's and the Chromebook's tests, not the history's
pub fn extension_id() -> String {
    std::fs::read_to_string(extension_dir().join("EXTENSION_ID"))
        .unwrap()
        .trim()
        .to_owned()
}
