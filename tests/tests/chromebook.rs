//! Whole system, a device with no agent (a Chromebook): the managed extension sends its visits
//! straight to the collector's extension endpoint over HTTPS. Real Chromium (headless) stands in
//! for ChromeOS: the device certificate from `device-cert create` is in the profile's NSS
//! database and the browser presents it by the `AutoSelectCertificateForUrls` policy, as
//! ChromeOS presents a certificate from its platform keys; the collector's address comes from
//! the extension's managed storage ("3rdparty" policy), as Google Admin would set it.

#[allow(dead_code)]
#[path = "browsing_support/mod.rs"]
mod support;

use invigilator_tests::{Collector, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{Chromium, extension_dir, extension_id, start_site, visits};

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (tests/setup.sh installs libnss3-tools)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A policy file in Chromium's managed directory (the machine's own: Chromium reads no other),
/// removed when the test ends, however it ends. Test binaries run one at a time, and this is
/// the only test in this one.
struct Policy(PathBuf);

impl Policy {
    fn install(name: &str, policy: &Value) -> Self {
        let dir = Path::new("/etc/chromium/policies/managed");
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(policy).unwrap()).unwrap();
        Self(path)
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn from_the_device<'a>(events: &'a [Value], url: &str, device: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["url"] == url && e["agent_id"] == device)
        .collect()
}

/// A Chromebook as the school sets it up: the device certificate made on the collector,
/// installed in the profile owner's NSS database (the collector's CA trusted for servers), the
/// policies in place, and Chromium started with the extension. The device's agent id.
struct Chromebook {
    device: String,
    browser: Chromium,
    _policy: Policy,
}

impl Chromebook {
    fn set_up(c: &Collector, endpoint: u16, site: u16, tmp: &Path) -> Self {
        let certs = tmp.join("cb-07");
        let device = run(c
            .cli(&["device-cert", "create"])
            .args(["--group", "chromebooks", "--name", "cb-07", "--out"])
            .arg(&certs))
        .trim()
        .to_owned();
        let p12 = tmp.join("cb-07.p12");
        run(Command::new("openssl")
            .args(["pkcs12", "-export", "-passout", "pass:", "-in"])
            .arg(certs.join("cb-07.crt.pem"))
            .arg("-inkey")
            .arg(certs.join("cb-07.key.pem"))
            .arg("-out")
            .arg(&p12));
        let home = tmp.join("home");
        let nssdb = home.join(".pki/nssdb");
        std::fs::create_dir_all(&nssdb).unwrap();
        let db = format!("sql:{}", nssdb.display());
        run(Command::new("certutil").args(["-N", "--empty-password", "-d", &db]));
        run(Command::new("certutil")
            .args(["-A", "-n", "invigilator-ca", "-t", "C,,", "-d", &db, "-i"])
            .arg(certs.join("invigilator-ca.pem")));
        run(Command::new("pk12util")
            .args(["-W", "", "-d", &db, "-i"])
            .arg(&p12));

        let collector_url = format!("https://localhost:{endpoint}");
        let policy = Policy::install(
            "invigilator-chromebook-test.json",
            &serde_json::json!({
                "AutoSelectCertificateForUrls": [
                    serde_json::json!({ "pattern": collector_url, "filter": {} }).to_string()
                ],
                "3rdparty": { "extensions": { extension_id(): { "collector_url": collector_url } } },
            }),
        );
        let user_data = tmp.join("chromium-profile");
        std::fs::create_dir_all(&user_data).unwrap();
        let browser = Chromium::launch(
            &user_data,
            site,
            &["www.google.com"],
            &[
                format!("--load-extension={}", extension_dir().display()),
                "about:blank".to_owned(),
            ],
            &[("HOME", home.as_path())],
        );
        Self {
            device,
            browser,
            _policy: policy,
        }
    }
}

#[test]
fn a_chromebooks_extension_reports_straight_to_the_collector_with_its_device_certificate() {
    let site = start_site();
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = free_port();
    let mut c = Collector::start(&format!("[extension]\nlisten = \"127.0.0.1:{endpoint}\"\n"));
    assert_eq!(c.listening("extension="), format!("127.0.0.1:{endpoint}"));
    let Chromebook {
        device,
        browser,
        _policy,
    } = Chromebook::set_up(&c, endpoint, site, tmp.path());
    let listed = c.agents();
    let row = listed
        .iter()
        .find(|a| a["agent_id"] == device.as_str())
        .unwrap_or_else(|| panic!("{device} not in {listed:#?}"));
    assert_eq!(
        (row["hostname"].as_str(), row["group"].as_str()),
        (Some("cb-07"), Some("chromebooks"))
    );

    // A search raises its keyword alert on the device, within seconds of the navigation.
    let search = "http://www.google.com/search?q=how+to+bypass+school+filter".to_owned();
    let opened = Instant::now();
    browser.open(&search);
    let took = wait_for(
        Duration::from_secs(60),
        "the visit from the Chromebook",
        || (!from_the_device(&visits(&c), &search, &device).is_empty()).then(|| opened.elapsed()),
    );
    eprintln!("chromebook: navigation to stored at the collector in {took:?}");
    let events = visits(&c);
    let stored = from_the_device(&events, &search, &device);
    assert_eq!(stored.len(), 1, "{events:#?}");
    assert_eq!(stored[0]["reporter"], "extension");
    assert_eq!(
        stored[0]["hostname"], "cb-07",
        "the device's name, not a claim"
    );
    assert_eq!(stored[0]["search_terms"], "how to bypass school filter");
    let seq = stored[0]["seq"].as_u64().unwrap();
    assert_eq!(seq >> 32, 1, "the profile's first numbering lane: {seq}");
    let alert = c.wait_for_alert("keywords.circumvention", Duration::from_secs(30));
    assert_eq!(alert["agent_id"], device.as_str(), "{alert:#}");

    // A hostile title is carried as data.
    let maths = "http://school.test/maths".to_owned();
    browser.open(&maths);
    let title = wait_for(Duration::from_secs(30), "the titled page", || {
        from_the_device(&visits(&c), &maths, &device)
            .first()
            .map(|e| e["title"].as_str().unwrap_or("").to_owned())
            .filter(|t| !t.is_empty())
    });
    assert_eq!(title, "<b>Maths</b> <script>alert(1)</script>");
    // The device list shows the extension's version from its hello, and keeps it through the
    // uploads after it, which carry none (health is flushed every 5 s).
    let version = || {
        c.agents()
            .into_iter()
            .find(|a| a["agent_id"] == device.as_str())
            .and_then(|a| a["agent_version"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let said = wait_for(Duration::from_secs(30), "the extension's version", || {
        Some(version()).filter(|v| v.starts_with("extension 0.1.0"))
    });
    assert_eq!(said, "extension 0.1.0 (chromium)");
    browser.open("http://school.test/after-the-hello");
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(version(), said, "kept without a hello");

    // The collector is down: the extension keeps the visit and sends it once it is back, once.
    c.kill9();
    let while_down = "http://school.test/while-the-collector-is-down".to_owned();
    browser.open(&while_down);
    std::thread::sleep(Duration::from_secs(3));
    c.restart();
    wait_for(
        Duration::from_secs(90),
        "the visit made while the collector was down",
        || (!from_the_device(&visits(&c), &while_down, &device).is_empty()).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(2));
    let events = visits(&c);
    for url in [&search, &maths, &while_down] {
        assert_eq!(
            from_the_device(&events, url, &device).len(),
            1,
            "{url}: {events:#?}"
        );
    }

    // Revoked: the device is refused, and says so in the collector's log.
    run(&mut c.cli(&["agents", "revoke", &device]));
    let after = "http://school.test/after-revocation".to_owned();
    std::thread::sleep(Duration::from_secs(3));
    browser.open(&after);
    std::thread::sleep(Duration::from_secs(5));
    assert!(from_the_device(&visits(&c), &after, &device).is_empty());
}

/// A TLS client for the endpoint, as a device (or anything else on the network) would be.
mod client {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use serde_json::Value;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    pub fn config(ca: &Path, identity: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        Arc::new(match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(cert)
                        .unwrap()
                        .collect::<Result<_, _>>()
                        .unwrap(),
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        })
    }

    /// The extension's origin, as the browser sends it with the extension's uploads.
    pub fn extension_origin() -> String {
        format!("chrome-extension://{}", super::extension_id())
    }

    /// POSTs `body` to the upload path as the extension would (its origin, JSON): the status
    /// and the JSON answer, or why no answer came.
    pub fn post(
        port: u16,
        tls: &Arc<rustls::ClientConfig>,
        body: &[u8],
    ) -> Result<(u16, Value), String> {
        post_from(port, tls, Some(&extension_origin()), body)
    }

    /// As `post`, from `origin` (None: no Origin header, as a program sends).
    pub fn post_from(
        port: u16,
        tls: &Arc<rustls::ClientConfig>,
        origin: Option<&str>,
        body: &[u8],
    ) -> Result<(u16, Value), String> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let conn = rustls::ClientConnection::new(
            Arc::clone(tls),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let head = format!(
            "POST /extension/v1/visits HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{}Content-Length: {}\r\nConnection: close\r\n\r\n",
            origin
                .map(|o| format!("Origin: {o}\r\n"))
                .unwrap_or_default(),
            body.len()
        );
        s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
        // A body the server refuses part-way may not be read in full: that is its answer.
        let _ = s.write_all(body);
        let mut out = Vec::new();
        match s.read_to_end(&mut out) {
            Ok(_) => {}
            Err(e) if !out.is_empty() => eprintln!("after the answer: {e}"),
            Err(e) => return Err(e.to_string()),
        }
        let text = String::from_utf8_lossy(&out);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or(format!("no answer: {text:?}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or(format!("no status: {head:?}"))?;
        Ok((
            status,
            serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
        ))
    }
}

#[test]
fn the_extension_endpoint_refuses_strangers_and_bad_uploads_and_keeps_one_device_from_delaying_another()
 {
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = free_port();
    let c = Collector::start(&format!(
        "[grpc]\nhandshake_timeout = \"2s\"\n[extension]\nlisten = \"127.0.0.1:{endpoint}\"\n"
    ));
    let make = |name: &str| {
        let out = tmp.path().join(name);
        let id = run(c
            .cli(&["device-cert", "create"])
            .args(["--group", "chromebooks", "--name", name, "--out"])
            .arg(&out))
        .trim()
        .to_owned();
        let tls = client::config(
            &out.join("invigilator-ca.pem"),
            Some((
                &out.join(format!("{name}.crt.pem")),
                &out.join(format!("{name}.key.pem")),
            )),
        );
        (id, tls, out.join("invigilator-ca.pem"))
    };
    let (device, tls, ca) = make("cb-01");
    let (_other, other_tls, _) = make("cb-02");
    let post = |tls: &_, body: &str| client::post(endpoint, tls, body.as_bytes());

    // No certificate, or one from another CA: no TLS session at all.
    let anonymous = client::config(&ca, None);
    let err = post(&anonymous, r#"{"lane":0}"#).unwrap_err();
    eprintln!("without a certificate: {err}");
    let stranger_dir = tmp.path().join("stranger");
    std::fs::create_dir_all(&stranger_dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, device.as_str());
    let forged = params.self_signed(&key).unwrap();
    std::fs::write(stranger_dir.join("c.pem"), forged.pem()).unwrap();
    std::fs::write(stranger_dir.join("k.pem"), key.serialize_pem()).unwrap();
    let forger = client::config(
        &ca,
        Some((&stranger_dir.join("c.pem"), &stranger_dir.join("k.pem"))),
    );
    let err = post(&forger, r#"{"lane":0}"#).unwrap_err();
    eprintln!("a self-made certificate naming the device: {err}");

    // An enrolled agent's certificate is an agent's: taken by Telemetry, not here.
    let agent = invigilator_tests::Agent::enroll(&c, "");
    let paths = invigilator_agent::identity::StatePaths::new(&agent.state_dir());
    let agent_tls = client::config(&ca, Some((&paths.cert(), &paths.key())));
    let (status, reply) = post(&agent_tls, r#"{"lane":0}"#).unwrap();
    assert_eq!(status, 403, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("an agent's"),
        "{reply}"
    );

    // A device that opens a connection and says nothing delays nobody, and is cut off.
    let idle = std::net::TcpStream::connect(("127.0.0.1", endpoint)).unwrap();
    let started = Instant::now();
    let (status, reply) = post(&other_tls, r#"{"lane":0}"#).unwrap();
    assert_eq!((status, reply["lane"].as_u64()), (200, Some(1)), "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 1];
    let cut = std::io::Read::read(&mut &idle, &mut buf);
    assert!(matches!(cut, Ok(0) | Err(_)), "{cut:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // Only the school's extension: a web page the pupil opens would present the same
    // certificate, but its origin is its own; a program sends none.
    for origin in [
        Some("https://evil.example"),
        Some("chrome-extension://abcdefghijklmnopabcdefghijklmnop"),
        None,
    ] {
        let (status, reply) = client::post_from(endpoint, &tls, origin, br#"{"lane":0}"#).unwrap();
        assert_eq!(status, 403, "{origin:?}: {reply}");
        assert!(
            reply["error"]
                .as_str()
                .unwrap()
                .contains("school's extension"),
            "{reply}"
        );
    }

    // Bad uploads are refused with a reason, and nothing of them is stored.
    let (status, reply) = post(&tls, r#"{"lane":0}"#).unwrap();
    assert_eq!(
        (status, reply["lane"].as_u64()),
        (200, Some(1)),
        "each device its own lanes"
    );
    let (status, reply) = post(&tls, "{not json").unwrap();
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("not an upload"),
        "{reply}"
    );
    let (status, reply) = post(&tls, r#"{"lane": 7, "visits": []}"#).unwrap();
    assert_eq!(status, 409, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("lane 7"),
        "{reply}"
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let visit = |n: u32, url: &str, title: &str| {
        serde_json::json!({"type": "visit", "n": n, "id": format!("v-{n}"), "url": url,
            "title": title, "time": now_ms as f64, "transition": "typed", "browser": "chrome"})
    };
    let many: Vec<Value> = (1..=201)
        .map(|n| visit(n, "https://example.org/", ""))
        .collect();
    let (status, reply) = post(
        &tls,
        &serde_json::json!({"lane": 1, "visits": many}).to_string(),
    )
    .unwrap();
    assert_eq!(status, 413, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("more than 200 visits"),
        "{reply}"
    );
    let huge = format!(
        r#"{{"lane": 1, "user": "{}"}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    let (status, _) = post(&tls, &huge).unwrap();
    assert_eq!(status, 413);
    assert!(visits(&c).iter().all(|e| e["agent_id"] != device.as_str()));

    // Hostile fields: a script address refused alone, a title carried as data, a forged time
    // replaced, a user name of control characters cleaned; sent twice, stored once.
    let title = "<img src=x onerror=alert(1)>\u{1b}[31m";
    let upload = serde_json::json!({"lane": 1, "user": "amy\n<b>", "visits": [
        visit(1, "javascript:alert(1)", ""),
        visit(2, "https://example.org/page?q=1", title),
        {"type": "visit", "n": 3, "id": "v-3", "url": "https://example.org/old", "time": 1.0},
    ]})
    .to_string();
    for _ in 0..2 {
        let (status, reply) = post(&tls, &upload).unwrap();
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["acked"], serde_json::json!(["v-2", "v-3"]), "{reply}");
        assert_eq!(reply["rejected"][0]["id"], "v-1", "{reply}");
    }
    let stored: Vec<Value> = visits(&c)
        .into_iter()
        .filter(|e| e["agent_id"] == device.as_str())
        .collect();
    assert_eq!(stored.len(), 2, "{stored:#?}");
    assert_eq!(stored[0]["title"], title);
    assert_eq!(stored[0]["user"], "amy<b>");
    assert_eq!(stored[0]["hostname"], "cb-01");
    let old = stored[1]["observed_at"].as_str().unwrap();
    assert!(old.starts_with("20"), "{old}");
    assert!(!old.starts_with("1970"), "a forged time is replaced: {old}");

    // Revoked: refused, with the reason.
    run(&mut c.cli(&["agents", "revoke", &device]));
    let refused = wait_for(Duration::from_secs(10), "the revocation", || {
        let (status, reply) = post(&tls, r#"{"lane": 1, "visits": []}"#).unwrap();
        (status == 403).then_some(reply)
    });
    assert!(
        refused["error"].as_str().unwrap().contains("revoked"),
        "{refused}"
    );
}

/// Benchmark (tests/bench/extension.sh): how long a visit takes from a Chromebook's browser to
/// an alert at the collector, straight to the collector's endpoint, over 50 searches. Prints
/// percentiles; asserts nothing about them (a loaded machine is slower).
#[test]
#[ignore]
fn bench_visit_to_alert_straight_to_the_collector() {
    let site = start_site();
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = free_port();
    let c = Collector::start(&format!("[extension]\nlisten = \"127.0.0.1:{endpoint}\"\n"));
    let book = Chromebook::set_up(&c, endpoint, site, tmp.path());
    let warm = "http://school.test/warm-up".to_owned();
    book.browser.open(&warm);
    wait_for(Duration::from_secs(60), "the first upload", || {
        (!from_the_device(&visits(&c), &warm, &book.device).is_empty()).then_some(())
    });
    let n = 50;
    let mut took = Vec::new();
    for i in 0..n {
        let url = format!("http://www.google.com/search?q=how+to+kill+myself+{i}");
        let opened = Instant::now();
        book.browser.open(&url);
        loop {
            assert!(
                opened.elapsed() < Duration::from_secs(60),
                "{url} never arrived"
            );
            if !from_the_device(&visits(&c), &url, &book.device).is_empty() {
                took.push(opened.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let raised: u64 = c
        .alerts()
        .iter()
        .filter(|a| a["rule"] == "keywords.self_harm")
        .map(|a| a["count"].as_u64().unwrap())
        .sum();
    assert_eq!(raised, n);
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    println!(
        "chromebook, straight to the collector (visit to alert): visits {}, p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        took.len(),
        at(0.5).as_secs_f64() * 1000.0,
        at(0.95).as_secs_f64() * 1000.0,
        took.last().unwrap().as_secs_f64() * 1000.0
    );
}
