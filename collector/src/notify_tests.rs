use super::*;
use crate::store::alerts;
use invigilator_policy::Alert;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// Python's stdlib SMTP sink (Debian 12's Python 3.11 still has `smtpd`), printing each mail.
struct Sink {
    child: Child,
    port: u16,
    seen: Arc<Mutex<String>>,
}

impl Sink {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-W",
                "ignore",
                "-m",
                "smtpd",
                "-n",
                "-c",
                "DebuggingServer",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let seen = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().unwrap();
        let into = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                into.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        // Dropping the sink (also on the panic below) stops the server.
        let sink = Self { child, port, seen };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return sink;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the SMTP sink did not start on port {port}");
    }

    /// What the sink has printed once `needle` appears (or after a few seconds).
    fn wait_for(&self, needle: &str) -> String {
        for _ in 0..100 {
            let s = self.seen.lock().unwrap().clone();
            if s.contains(needle) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn alert(severity: &str) -> Alert {
    Alert {
        agent_id: "a1".into(),
        hostname: "suite-pc1".into(),
        user: "y5.alice".into(),
        kind: "browsing".into(),
        rule: "keywords.self-harm".into(),
        category: "self-harm".into(),
        severity: severity.parse().unwrap(),
        summary: "Self-harm terms in a search on www.google.com".into(),
        matched: "how to hurt myself in the search terms".into(),
        observed_at_us: 1_790_000_000_000_000,
        policy_version: "1".into(),
        event_seq: Some(1),
        response: String::new(),
        aggregate_key: None,
    }
}

fn config(port: u16) -> NotifyConfig {
    NotifyConfig {
        enabled: true,
        smtp_port: port,
        to: vec!["dsl@school.example".into()],
        console_url: "https://console.school.example/".into(),
        ..Default::default()
    }
}

#[test]
fn a_serious_alert_is_mailed_without_pupil_content_and_a_lesser_one_is_not() {
    let sink = Sink::start();
    let (_d, conn) = crate::store::test_db();
    let cfg = config(sink.port);
    // An alert from before the notifier's first poll is history: not mailed.
    alerts::insert(&crate::store::System::test(&conn), &alert("illegal")).unwrap();
    assert_eq!(
        poll_once(&crate::store::System::test(&conn), &cfg).unwrap(),
        0
    );

    let low = alerts::insert(&crate::store::System::test(&conn), &alert("inappropriate")).unwrap();
    assert_eq!(
        poll_once(&crate::store::System::test(&conn), &cfg).unwrap(),
        0
    );
    assert_eq!(
        crate::store::outbox::position(
            &crate::store::System::test(&conn),
            crate::store::outbox::NOTIFY
        )
        .unwrap(),
        Some(low),
        "the lesser alert is passed over"
    );

    let id = alerts::insert(&crate::store::System::test(&conn), &alert("serious")).unwrap();
    assert_eq!(
        poll_once(&crate::store::System::test(&conn), &cfg).unwrap(),
        1
    );
    let mail = sink.wait_for(&format!("/alerts/{id}"));
    assert!(
        mail.contains(&format!("Alert #{id} (serious, category self-harm)")),
        "{mail}"
    );
    assert!(
        mail.contains(&format!("https://console.school.example/alerts/{id}")),
        "{mail}"
    );
    assert!(mail.contains("dsl@school.example"), "{mail}");
    for secret in ["hurt myself", "alice", "google"] {
        assert!(!mail.contains(secret), "{secret} in {mail}");
    }
    assert!(!mail.contains(&format!("Alert #{low} ")), "{mail}");
    let audited: String = conn
        .query_row(
            "SELECT actor || ' ' || action || ' ' || object FROM audit_log",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audited, format!("system alert.notify alert:{id}"));
    assert_eq!(
        poll_once(&crate::store::System::test(&conn), &cfg).unwrap(),
        0,
        "sent once"
    );
}

fn notified(conn: &crate::store::db::Connection) -> Vec<String> {
    conn.prepare("SELECT object FROM audit_log WHERE action = 'alert.notify' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_send_is_audited_first_and_a_failed_one_is_not_repeated() {
    let (_d, conn) = crate::store::test_db();
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(port);
    assert_eq!(
        poll_once(&crate::store::System::test(&conn), &cfg).unwrap(),
        0
    );
    assert_eq!(
        crate::store::outbox::position(
            &crate::store::System::test(&conn),
            crate::store::outbox::NOTIFY
        )
        .unwrap(),
        Some(0)
    );
    let id = alerts::insert(&crate::store::System::test(&conn), &alert("serious")).unwrap();
    let err = poll_once(&crate::store::System::test(&conn), &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    // The entry was written before the attempt, and the alert is passed: not mailed again.
    assert_eq!(notified(&conn), [format!("alert:{id}")]);
    assert_eq!(
        crate::store::outbox::position(
            &crate::store::System::test(&conn),
            crate::store::outbox::NOTIFY
        )
        .unwrap(),
        Some(id)
    );

    let sink = Sink::start();
    let cfg = config(sink.port);
    assert_eq!(
        poll_once(&crate::store::System::test(&conn), &cfg).unwrap(),
        0
    );
    let next = alerts::insert(&crate::store::System::test(&conn), &alert("serious")).unwrap();
    assert_eq!(
        poll_once(&crate::store::System::test(&conn), &cfg).unwrap(),
        1
    );
    let mail = sink.wait_for(&format!("Alert #{next}"));
    assert!(mail.contains(&format!("Alert #{next}")), "{mail}");
    assert!(!mail.contains(&format!("Alert #{id} ")), "{mail}");
    assert_eq!(
        notified(&conn),
        [format!("alert:{id}"), format!("alert:{next}")]
    );
}

#[test]
fn bad_settings_fail_before_the_alerts_are_passed() {
    let (_d, conn) = crate::store::test_db();
    let cfg = NotifyConfig {
        to: Vec::new(),
        ..config(1)
    };
    assert_eq!(
        poll_once(&crate::store::System::test(&conn), &cfg).unwrap(),
        0
    );
    alerts::insert(&crate::store::System::test(&conn), &alert("serious")).unwrap();
    assert!(matches!(
        poll_once(&crate::store::System::test(&conn), &cfg),
        Err(NotifyError::NoRecipients)
    ));
    assert_eq!(
        crate::store::outbox::position(
            &crate::store::System::test(&conn),
            crate::store::outbox::NOTIFY
        )
        .unwrap(),
        Some(0)
    );
    assert!(notified(&conn).is_empty());
}

#[test]
fn without_addresses_the_active_dsls_are_mailed() {
    let (_d, conn) = crate::store::test_db();
    let cfg = NotifyConfig {
        to: Vec::new(),
        ..config(1)
    };
    let err = recipients(&crate::store::Admin::test(&conn), &cfg).unwrap_err();
    assert!(matches!(err, NotifyError::NoRecipients));
    conn.execute(
        "INSERT INTO staff(username, email, role, password_hash, created_at, disabled)
         VALUES ('dsl1', 'dsl1@school.example', 'dsl', 'x', 0, 0),
                ('dsl2', 'dsl2@school.example', 'dsl', 'x', 0, 1),
                ('tech', 'tech@school.example', 'technician', 'x', 0, 0)",
        [],
    )
    .unwrap();
    let to = recipients(&crate::store::Admin::test(&conn), &cfg).unwrap();
    assert_eq!(to.len(), 1);
    assert_eq!(to[0].email.to_string(), "dsl1@school.example");
}

#[test]
fn the_default_settings_are_valid_and_bad_addresses_named() {
    assert!(NotifyConfig::default().validate().is_ok());
    let bad = NotifyConfig {
        enabled: true,
        to: vec!["not an address".into()],
        ..Default::default()
    };
    assert!(bad.validate().unwrap_err().contains("not an address"));
}

#[test]
fn starttls_is_required_not_hoped_for() {
    let sink = Sink::start();
    let (_d, conn) = crate::store::test_db();
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["relay.school.example".into()]).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let cfg = NotifyConfig {
        starttls: true,
        ca_file: Some(ca_file),
        ..config(sink.port)
    };
    assert!(cfg.validate().is_ok());
    assert_eq!(
        poll_once(&crate::store::System::test(&conn), &cfg).unwrap(),
        0
    );
    let id = alerts::insert(&crate::store::System::test(&conn), &alert("serious")).unwrap();
    // Python's sink offers no STARTTLS: the mail is not sent in clear (nor again later).
    let err = poll_once(&crate::store::System::test(&conn), &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sending through"), "{err}");
    assert_eq!(
        crate::store::outbox::position(
            &crate::store::System::test(&conn),
            crate::store::outbox::NOTIFY
        )
        .unwrap(),
        Some(id)
    );
    assert!(!sink.wait_for("never").contains(&format!("Alert #{id}")));
    let missing = NotifyConfig {
        ca_file: Some(dir.path().join("missing.pem")),
        ..cfg
    };
    let next = alerts::insert(&crate::store::System::test(&conn), &alert("serious")).unwrap();
    let err = poll_once(&crate::store::System::test(&conn), &missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.pem"), "{err}");
    // A settings error, found before anything was passed: the alert waits for the fix.
    assert_eq!(
        crate::store::outbox::position(
            &crate::store::System::test(&conn),
            crate::store::outbox::NOTIFY
        )
        .unwrap(),
        Some(id)
    );
    assert!(next > id);
}
