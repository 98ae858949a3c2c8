//! Syslog hand-off, end to end, to Debian's real rsyslog listening with TLS (its gtls driver,
//! installed by tests/setup.sh): rsyslog parses each message as RFC 5424 and writes the fields
//! it found, so a field that reaches the file reached it through a SIEM's own parser. Then the
//! receiver goes down while alerts keep coming and the collector is killed and restarted; then
//! the receiver restarts under a connection the collector holds open. Every alert arrives, in
//! order, none twice, each delivery in the audit trail.

use invigilator_proto::v1::Event;
use invigilator_tests::{Agent, Collector, free_port, stream_batches, tor_started, wait_for};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A CA, and a certificate for `localhost` it signed, as PEM files in `dir`.
fn certificates(dir: &Path) -> PathBuf {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &Issuer::new(ca, ca_key))
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    dir.join("ca.pem")
}

/// rsyslogd in the foreground, TLS on `port`, writing what it parsed of each message to
/// `dir/out.log` as `MSGID|APP|FACILITY|SEVERITY|STRUCTURED-DATA|MSG`.
struct Rsyslog {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Rsyslog {
    fn start(dir: &Path, port: u16) -> Self {
        Self::start_with(dir, port, "anon")
    }

    /// `auth_mode` is gtls's: "anon" takes any client, "x509/name" asks each for a certificate.
    fn start_with(dir: &Path, port: u16, auth_mode: &str) -> Self {
        let d = dir.display();
        let peers = if auth_mode == "anon" {
            ""
        } else {
            r#" permittedPeer=["collector.invalid"]"#
        };
        let conf = format!(
            r#"global(workDirectory="{d}"
       defaultNetstreamDriver="gtls"
       defaultNetstreamDriverCAFile="{d}/ca.pem"
       defaultNetstreamDriverCertFile="{d}/cert.pem"
       defaultNetstreamDriverKeyFile="{d}/key.pem")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="{auth_mode}"{peers})
template(name="fields" type="string"
         string="%msgid%|%app-name%|%syslogfacility-text%|%syslogseverity-text%|%structured-data%|%msg%\n")
ruleset(name="siem") {{ action(type="omfile" file="{d}/out.log" template="fields") }}
input(type="imtcp" port="{port}" ruleset="siem")
"#
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        let rsyslogd = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("rsyslog is not installed: run tests/setup.sh");
        let child = Command::new(rsyslogd)
            .arg("-n")
            .arg("-f")
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        wait_for(Duration::from_secs(15), "rsyslog listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Self {
            dir: dir.to_owned(),
            port,
            child: Some(child),
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
            child.wait().unwrap();
        }
    }

    fn restart(&mut self) {
        self.stop();
        *self = Self::start(&self.dir.clone(), self.port);
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("out.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tors(seqs: std::ops::RangeInclusive<u64>) -> Vec<Event> {
    seqs.map(|s| tor_started(s, &format!("y9pupil{s}")))
        .collect()
}

/// The `id` parameter of each line's structured data, in the order rsyslog wrote them.
fn ids(lines: &[String]) -> Vec<i64> {
    lines
        .iter()
        .map(|l| {
            let at = l.find(" id=\"").expect(l) + 5;
            l[at..l[at..].find('"').unwrap() + at].parse().unwrap()
        })
        .collect()
}

fn syslog_config(port: u16, ca: &Path) -> String {
    format!(
        "[[syslog]]\nname = \"siem\"\naddress = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\nca_file = \"{}\"\nmax_backoff = \"2s\"\nconsole_url = \"https://console.school\"\n",
        ca.display()
    )
}

#[test]
fn alerts_reach_rsyslog_as_rfc5424_in_order_once_through_an_outage_a_crash_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certificates(dir.path());
    let port = free_port();
    let mut rsyslog = Rsyslog::start(dir.path(), port);
    let mut c = Collector::start(&syslog_config(port, &ca));
    let pc = Agent::enroll_with(&c, &c.token("pupils-ks3", "1h", 1), "");
    // The outbox starts at the newest alert when it first runs: let it start before any.
    std::thread::sleep(Duration::from_secs(2));

    // A user name written to break a parser: quotes and the bracket that ends an element.
    let hostile = "y9\"pupil] x=\"1\"";
    stream_batches(
        &c,
        &pc,
        vec![vec![
            tor_started(1, hostile),
            tor_started(2, "y9pupil2"),
            tor_started(3, "y9pupil3"),
        ]],
    );
    wait_for(Duration::from_secs(20), "three messages", || {
        (rsyslog.lines().len() == 3).then_some(())
    });
    let first = rsyslog.lines();
    let fields: Vec<&str> = first[0].splitn(6, '|').collect();
    assert_eq!(
        &fields[..4],
        ["alert", "invigilator", "local0", "err"],
        "{}",
        first[0]
    );
    let sd = fields[4];
    assert!(sd.starts_with("[alert@32473 id=\""), "{sd}");
    assert!(sd.contains(r#" rule="circumvention.tor""#), "{sd}");
    assert!(sd.contains(r#" device="ict-07""#), "{sd}");
    // rsyslog kept the escapes: the hostile name stayed one value inside one element.
    assert!(sd.contains(r#" user="y9\"pupil\] x=\"1\"""#), "{sd}");
    assert!(
        sd.ends_with(']') && sd.matches("[alert@").count() == 1,
        "{sd}"
    );
    assert!(
        !sd.contains("matched="),
        "a SIEM is not a safeguarding system: {sd}"
    );
    assert!(sd.contains("link=\"https://console.school/alerts/"), "{sd}");

    // The receiver goes down; alerts keep coming; the collector is killed mid-retry.
    rsyslog.stop();
    stream_batches(&c, &pc, vec![tors(4..=8)]);
    std::thread::sleep(Duration::from_secs(3));
    c.kill9();
    c.restart();
    stream_batches(&c, &pc, vec![tors(9..=10)]);
    rsyslog = Rsyslog::start(dir.path(), port);
    wait_for(Duration::from_secs(30), "ten messages", || {
        (rsyslog.lines().len() >= 10).then_some(())
    });

    // The receiver restarts under the connection the collector holds: the next alerts must not
    // be written into the dead one.
    rsyslog.restart();
    stream_batches(&c, &pc, vec![tors(11..=12)]);
    wait_for(Duration::from_secs(30), "twelve messages", || {
        (rsyslog.lines().len() >= 12).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));

    c.assert_handed_off_once_each(&ids(&rsyslog.lines()), "siem");
}

/// Two alerts raised while the collector talks to a receiver that will not take them (an
/// rsyslog with `auth_mode`; with `other_ca`, the collector trusts a CA that did not sign the
/// receiver's certificate): none reaches it and none is counted as handed off. Returns the
/// collector, for its log.
fn nothing_is_handed_off(auth_mode: &str, other_ca: bool) -> Collector {
    let dir = tempfile::tempdir().unwrap();
    let mut trusted = certificates(dir.path());
    let other = tempfile::tempdir().unwrap();
    if other_ca {
        trusted = certificates(other.path());
    }
    let port = free_port();
    let rsyslog = Rsyslog::start_with(dir.path(), port, auth_mode);
    let c = Collector::start(&syslog_config(port, &trusted));
    let pc = Agent::enroll_with(&c, &c.token("pupils-ks3", "1h", 1), "");
    std::thread::sleep(Duration::from_secs(2));
    stream_batches(&c, &pc, vec![tors(1..=2)]);
    wait_for(Duration::from_secs(20), "the alerts stored", || {
        (c.alerts().len() == 2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(6));
    assert!(rsyslog.lines().is_empty(), "{:?}", rsyslog.lines());
    let db = rusqlite::Connection::open(c.data_dir().join("invigilator.db")).unwrap();
    let audited: i64 = db
        .query_row(
            "SELECT count(*) FROM audit_log WHERE action = 'alert.handoff'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audited, 0);
    c
}

#[test]
fn a_receiver_whose_certificate_the_ca_did_not_sign_gets_nothing_and_nothing_is_counted() {
    nothing_is_handed_off("anon", true);
}

#[test]
fn a_receiver_that_asks_for_a_client_certificate_refuses_and_nothing_is_counted() {
    // TLS 1.3 lets the client finish its handshake before the server checks the client: the
    // refusal comes after, and must not be taken for a delivery.
    let c = nothing_is_handed_off("x509/name", false);
    assert!(
        c.log()
            .contains("closed the connection after the TLS handshake"),
        "{}",
        c.log()
    );
}

#[test]
fn a_bad_syslog_destination_stops_the_start_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    for (table, reason) in [
        (
            "name = \"siem\"\naddress = \"siem.example\"\n".to_owned(),
            "must be host:port",
        ),
        (
            format!(
                "name = \"siem\"\naddress = \"127.0.0.1:6514\"\nca_file = \"{}\"\n",
                dir.path().join("empty.pem").display()
            ),
            "no certificate",
        ),
        (
            "name = \"siem\"\naddress = \"127.0.0.1:6514\"\n[[webhooks]]\nname = \"siem\"\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"s\"\n".to_owned(),
            "used twice",
        ),
    ] {
        let c = Collector::init(&format!("[[syslog]]\n{table}"));
        let stderr = c.serve_refused();
        assert!(stderr.contains(reason), "{reason}: {stderr}");
    }
}
