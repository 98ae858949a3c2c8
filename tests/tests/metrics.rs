//! Prometheus metrics, end to end: Debian's real Prometheus scrapes a real collector on both
//! ways in (its own listener, and the console's listener with the bearer token), and the
//! figures are asserted through Prometheus's own query API. Events are sent over mTLS from an
//! enrolled identity as agents send them; nothing they name may appear in the figures.

use invigilator_proto::v1::{BrowsingVisit, Event, ProcessExec, event::Kind};
use invigilator_tests::{Agent, Collector, free_port, now_us, stream_batches};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PUPIL: &str = "y8.secretname";
const HOST: &str = "HOST-SECRET-17";
const SITE: &str = "secret-site.example";

fn events() -> Vec<Event> {
    let event = |seq: u64, kind: Kind| Event {
        seq,
        observed_at_us: now_us(),
        hostname: HOST.into(),
        user: PUPIL.into(),
        kind: Some(kind),
        ..Default::default()
    };
    let exec = |exe: &str| {
        Kind::Process(ProcessExec {
            exe: exe.into(),
            name: exe.rsplit('/').next().unwrap().into(),
            argv: vec![exe.into(), "--profile".into(), PUPIL.into()],
            ..Default::default()
        })
    };
    vec![
        event(1, exec("/usr/bin/ls")),
        event(2, exec("/home/y8/tor-browser/Browser/tor")),
        event(3, exec("/usr/bin/cat")),
        event(
            4,
            Kind::Browsing(BrowsingVisit {
                url: format!("https://{SITE}/{PUPIL}"),
                title: "<script>alert(1)</script>".into(),
                ..Default::default()
            }),
        ),
    ]
}

struct Prometheus {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        invigilator_tests::kill9(&mut self.child);
    }
}

impl Prometheus {
    /// Scrapes `open` (no token) and `console` (with the token in `token_file`) every second.
    fn start(dir: &Path, open: &str, console: &str, token_file: &Path) -> Self {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n\
                 - job_name: open\n  static_configs: [{{targets: ['{open}']}}]\n\
                 - job_name: console\n  authorization:\n    credentials_file: {}\n  \
                 static_configs: [{{targets: ['{console}']}}]\n",
                token_file.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let log_path = dir.join("prometheus.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (tests/setup.sh installs it)");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log: log_path,
        }
    }

    /// The instant vector for `query`, as (labels, value) pairs; None until Prometheus answers.
    fn query(&self, query: &str) -> Option<Vec<(Value, f64)>> {
        let body: Value = http()
            .get(format!("{}/api/v1/query", self.url))
            .query("query", query)
            .call()
            .ok()?
            .body_mut()
            .read_json()
            .ok()?;
        let result = body["data"]["result"].as_array()?;
        let series = |r: &Value| Some((r["metric"].clone(), r["value"][1].as_str()?.parse().ok()?));
        result.iter().map(series).collect()
    }

    /// Waits until `query` gives one series of value `want`.
    fn expect(&self, query: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.query(query);
            if matches!(&got, Some(g) if g.len() == 1 && g[0].1 == want) {
                return;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("{query}: wanted {want}, Prometheus said {got:?}; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn scrape(url: &str, bearer: Option<&str>) -> (u16, String) {
    let mut req = http().get(url);
    if let Some(t) = bearer {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.call().unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

#[test]
fn prometheus_scrapes_the_figures_and_no_pupil_data_is_in_them() {
    let secrets = tempfile::tempdir().unwrap();
    let token = "0123456789abcdef0123456789abcdef-scrape";
    let token_file = secrets.path().join("metrics.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let c = Collector::start(&format!(
        "[metrics]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\nrefresh_interval = \"1s\"\n",
        token_file.display()
    ));
    let open = c.listening("metrics=");

    // The console's listener asks for the token; the metrics listener does not.
    let on_console = format!("http://{}/metrics", c.http);
    assert_eq!(scrape(&on_console, None).0, 401);
    assert_eq!(
        scrape(&on_console, Some("0123456789abcdef0123456789abcdef")).0,
        401
    );
    assert_eq!(scrape(&on_console, Some(token)).0, 200);
    assert_eq!(scrape(&format!("http://{open}/metrics"), None).0, 200);

    let pc = Agent::enroll_with(&c, &c.token("pupils-ks3", "1h", 1), "");
    stream_batches(&c, &pc, vec![events()]);
    // Again: every event a duplicate.
    stream_batches(&c, &pc, vec![events()]);
    let (_, direct) = scrape(&on_console, Some(token));
    let agent_id = c.agents()[0]["agent_id"].as_str().unwrap().to_owned();
    for secret in [PUPIL, HOST, SITE, "<script>", agent_id.as_str()] {
        assert!(
            !direct.contains(secret),
            "{secret:?} in the metrics:\n{direct}"
        );
    }

    let p = Prometheus::start(secrets.path(), &open, &c.http, &token_file);
    for job in ["open", "console"] {
        p.expect(&format!("up{{job=\"{job}\"}}"), 1.0);
    }
    for (query, want) in [
        (
            "invigilator_events_stored_total{job=\"console\",kind=\"process\"}",
            3.0,
        ),
        (
            "invigilator_events_stored_total{job=\"console\",kind=\"browsing\"}",
            1.0,
        ),
        (
            "invigilator_events_duplicate_total{job=\"console\",kind=\"process\"}",
            3.0,
        ),
        (
            "invigilator_alerts_raised_total{job=\"open\",rule=\"circumvention.tor\",severity=\"serious\"}",
            1.0,
        ),
        ("invigilator_enrolments_total{job=\"open\"}", 1.0),
        ("invigilator_agents{job=\"open\",group=\"pupils-ks3\"}", 1.0),
        (
            "invigilator_commit_duration_seconds_count{job=\"open\"} >= bool 2",
            1.0,
        ),
        ("invigilator_audit_entries{job=\"open\"} > bool 0", 1.0),
    ] {
        p.expect(query, want);
    }
    // Console routes are counted under their templates.
    assert_eq!(scrape(&format!("http://{}/login", c.http), None).0, 200);
    p.expect(
        "sum(invigilator_console_requests_total{job=\"open\",route=\"/login\",status=\"200\"})",
        1.0,
    );

    // Every series Prometheus holds from the collector, label values included: none names
    // the pupil, the device, the site or the agent.
    let all = p
        .query("{__name__=~\"invigilator_.+\"}")
        .expect("Prometheus answers");
    assert!(all.len() > 20, "{all:?}");
    let labels = serde_json::to_string(&all.iter().map(|(l, _)| l).collect::<Vec<_>>()).unwrap();
    for secret in [PUPIL, HOST, SITE, agent_id.as_str()] {
        assert!(!labels.contains(secret), "{secret:?} in {labels}");
    }
}

#[test]
fn a_short_or_missing_token_file_stops_the_start_with_its_reason() {
    let secrets = tempfile::tempdir().unwrap();
    let short = secrets.path().join("short.token");
    std::fs::write(&short, "guessable\n").unwrap();
    for (file, reason) in [
        (short.clone(), "it must be at least 32"),
        (
            secrets.path().join("absent.token"),
            "cannot read the metrics token",
        ),
    ] {
        let c = Collector::init(&format!("[metrics]\ntoken_file = \"{}\"\n", file.display()));
        let stderr = c.serve_refused();
        assert!(stderr.contains(reason), "{reason}: {stderr}");
    }
}
