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
use support::{Chromium, start_site, visits};

fn extension_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/browser-extension")
}

fn extension_id() -> String {
    std::fs::read_to_string(extension_dir().join("EXTENSION_ID"))
        .unwrap()
        .trim()
        .to_owned()
}

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

#[test]
fn a_chromebooks_extension_reports_straight_to_the_collector_with_its_device_certificate() {
    let site = start_site();
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = free_port();
    let mut c = Collector::start(&format!("[extension]\nlisten = \"127.0.0.1:{endpoint}\"\n"));
    assert_eq!(c.listening("extension="), format!("127.0.0.1:{endpoint}"));

    // The administrator makes the device's certificate ...
    let certs = tmp.path().join("cb-07");
    let device = run(c
        .cli(&["device-cert", "create"])
        .args(["--group", "chromebooks", "--name", "cb-07", "--out"])
        .arg(&certs))
    .trim()
    .to_owned();
    let listed = c.agents();
    let row = listed
        .iter()
        .find(|a| a["agent_id"] == device.as_str())
        .unwrap_or_else(|| panic!("{device} not in {listed:#?}"));
    assert_eq!(
        (row["hostname"].as_str(), row["group"].as_str()),
        (Some("cb-07"), Some("chromebooks"))
    );

    // ... and device management installs it: here, the profile owner's NSS database, with the
    // collector's CA trusted for servers.
    let p12 = tmp.path().join("cb-07.p12");
    run(Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", "pass:", "-in"])
        .arg(certs.join("cb-07.crt.pem"))
        .arg("-inkey")
        .arg(certs.join("cb-07.key.pem"))
        .arg("-out")
        .arg(&p12));
    let home = tmp.path().join("home");
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
    let _policy = Policy::install(
        "invigilator-chromebook-test.json",
        &serde_json::json!({
            "AutoSelectCertificateForUrls": [
                serde_json::json!({ "pattern": collector_url, "filter": {} }).to_string()
            ],
            "3rdparty": { "extensions": { extension_id(): { "collector_url": collector_url } } },
        }),
    );
    let user_data = tmp.path().join("chromium-profile");
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
