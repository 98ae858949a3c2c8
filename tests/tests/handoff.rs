//! Webhook hand-off, end to end: the real collector POSTs alerts to a receiver here, which
//! checks each signature as a SIEM or safeguarding system would. Then the receiver goes down
//! while alerts keep coming and the collector is killed and restarted: once the receiver is back,
//! every alert arrives, in order, none twice, each delivery in the audit trail.

use invigilator_proto::v1::Event;
use invigilator_tests::{Agent, Collector, now_us, stream_batches, tor_started, wait_for};
use ring::hmac;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "a-shared-secret-of-more-than-32-characters";

#[derive(Default)]
struct Received {
    /// (delivery id, body) of every request whose signature held.
    good: Vec<(String, Value)>,
    bad_signatures: usize,
    refused: usize,
}

/// A minimal HTTP/1.1 receiver: one request per connection. While `up` is false it answers
/// 503, as a receiver being restarted does.
struct Receiver {
    addr: String,
    up: Arc<AtomicBool>,
    got: Arc<Mutex<Received>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let got = Arc::new(Mutex::new(Received::default()));
        let (u, g) = (Arc::clone(&up), Arc::clone(&got));
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(": ") {
                        headers.push((k.to_ascii_lowercase(), v.to_owned()));
                    }
                }
                let header = |k: &str| {
                    headers
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let len: usize = header("content-length").parse().unwrap_or(0);
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let status = if !u.load(Ordering::SeqCst) {
                    g.lock().unwrap().refused += 1;
                    "503 Service Unavailable"
                } else if verify(&key, &header("invigilator-signature"), &body) {
                    let json = serde_json::from_slice(&body).unwrap();
                    g.lock()
                        .unwrap()
                        .good
                        .push((header("invigilator-delivery"), json));
                    "200 OK"
                } else {
                    g.lock().unwrap().bad_signatures += 1;
                    "401 Unauthorized"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Self { addr, up, got }
    }

    fn deliveries(&self) -> Vec<(String, Value)> {
        self.got.lock().unwrap().good.clone()
    }
}

/// As a receiver checks it: the HMAC of `t.body`, with `t` no older than five minutes.
fn verify(key: &hmac::Key, header: &str, body: &[u8]) -> bool {
    let Some((t, sig)) = header.strip_prefix("t=").and_then(|h| h.split_once(",v1=")) else {
        return false;
    };
    let Ok(t) = t.parse::<i64>() else {
        return false;
    };
    if (now_us() / 1_000_000 - t).abs() > 300 {
        return false;
    }
    let Ok(tag) = hex::decode(sig) else {
        return false;
    };
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(body);
    hmac::verify(key, &msg, &tag).is_ok()
}

/// A pupil starting Tor: one serious alert each.
fn tor(seq: u64) -> Event {
    tor_started(seq, &format!("y9pupil{seq}"))
}

fn alert_ids(deliveries: &[(String, Value)]) -> Vec<i64> {
    deliveries
        .iter()
        .map(|(_, v)| v["alert"]["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn alerts_reach_the_receiver_signed_in_order_once_through_an_outage_and_a_crash() {
    let receiver = Receiver::start();
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("siem.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let mut c = Collector::start(&format!(
        "[[webhooks]]\nname = \"siem\"\nurl = \"http://{}/in\"\nsecret_file = \"{}\"\nmax_backoff = \"2s\"\n",
        receiver.addr,
        secret_file.display()
    ));
    let pc = Agent::enroll_with(&c, &c.token("pupils-ks3", "1h", 1), "");
    // The outbox starts at the newest alert when it first runs: let it start before any.
    std::thread::sleep(Duration::from_secs(2));

    stream_batches(&c, &pc, vec![(1..=3).map(tor).collect()]);
    wait_for(Duration::from_secs(20), "three deliveries", || {
        (receiver.deliveries().len() == 3).then_some(())
    });
    let first = receiver.deliveries();
    let alert = &first[0].1["alert"];
    assert_eq!(alert["rule"], "circumvention.tor");
    assert_eq!(alert["device"], "ict-07");
    assert!(
        alert.get("matched").is_none(),
        "not a safeguarding system: {alert}"
    );
    assert!(first[0].0.starts_with("siem-"), "{first:?}");

    // The receiver goes down; alerts keep coming; the collector is killed mid-retry.
    receiver.up.store(false, Ordering::SeqCst);
    stream_batches(&c, &pc, vec![(4..=8).map(tor).collect()]);
    wait_for(Duration::from_secs(20), "refused deliveries", || {
        (receiver.got.lock().unwrap().refused >= 2).then_some(())
    });
    c.kill9();
    c.restart();
    stream_batches(&c, &pc, vec![(9..=10).map(tor).collect()]);
    receiver.up.store(true, Ordering::SeqCst);
    wait_for(Duration::from_secs(30), "every alert delivered", || {
        (receiver.deliveries().len() >= 10).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));

    assert_eq!(receiver.got.lock().unwrap().bad_signatures, 0);
    c.assert_handed_off_once_each(&alert_ids(&receiver.deliveries()), "siem");
}

#[test]
fn a_bad_secret_or_url_stops_the_start_with_its_reason() {
    let secrets = tempfile::tempdir().unwrap();
    let short = secrets.path().join("short.secret");
    std::fs::write(&short, "guessable").unwrap();
    for (url, file, reason) in [
        ("http://127.0.0.1:9/in", short.clone(), "at least 32"),
        (
            "http://127.0.0.1:9/in",
            secrets.path().join("absent"),
            "cannot read the secret",
        ),
        (
            "http://siem.example/in",
            short.clone(),
            "http:// only to loopback",
        ),
    ] {
        let c = Collector::init(&format!(
            "[[webhooks]]\nname = \"siem\"\nurl = \"{url}\"\nsecret_file = \"{}\"\n",
            file.display()
        ));
        let stderr = c.serve_refused();
        assert!(stderr.contains(reason), "{reason}: {stderr}");
    }
}
