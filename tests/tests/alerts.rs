//! Alerts from real activity: a circumvention tool starting, an agent going silent, and
//! certificates renewing without re-enrolment.

use invigilator_tests::{Agent, Collector, renamed_sleep, wait_for};
use std::process::Command;
use std::time::Duration;

const FAST: &str =
    "[uplink]\nmax_batch = 500\nwindow = 4\nheartbeat_interval = \"1s\"\nreconnect_max = \"2s\"\n";

#[test]
fn running_a_program_named_tor_raises_a_circumvention_alert() {
    let c = Collector::start("");
    let mut a = Agent::enroll(&c, FAST);
    a.start();
    a.wait_ready();
    let dir = tempfile::tempdir().unwrap();
    let tor = renamed_sleep(dir.path(), "tor");
    Command::new(&tor).arg("0.05").status().unwrap();
    let alert = wait_for(Duration::from_secs(30), "the tor alert", || {
        c.alerts()
            .into_iter()
            .find(|x| x["rule"] == "circumvention.tor")
    });
    for field in [
        "id",
        "agent_id",
        "hostname",
        "user",
        "kind",
        "rule",
        "category",
        "severity",
        "summary",
        "observed_at",
        "policy_version",
    ] {
        assert!(!alert[field].is_null(), "alert lacks {field}: {alert}");
    }
    assert_eq!(alert["agent_id"], a.agent_id.as_str());
    assert_eq!(alert["severity"], "serious");
    assert_eq!(alert["user"], "root");
    assert!(
        alert["matched"].as_str().unwrap().contains("tor"),
        "{alert}"
    );
    assert!(
        alert["summary"]
            .as_str()
            .unwrap()
            .contains(tor.to_str().unwrap()),
        "{alert}"
    );
    assert!(chrono_like(alert["observed_at"].as_str().unwrap()));
    // Exactly once, even though the agent keeps running and resending is possible.
    std::thread::sleep(Duration::from_secs(2));
    let count = c
        .alerts()
        .iter()
        .filter(|x| x["rule"] == "circumvention.tor" && x["agent_id"] == a.agent_id.as_str())
        .count();
    assert_eq!(count, 1);
}

fn chrono_like(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes()[4] == b'-' && s.contains('T') && s.ends_with('Z')
}

#[test]
fn an_agent_that_stops_reporting_raises_an_agent_silent_alert() {
    let c = Collector::start(
        "[agents]\ncert_validity = \"30d\"\nsilent_after = \"4s\"\nsilent_check_interval = \"1s\"\n",
    );
    let mut a = Agent::enroll(&c, FAST);
    a.start();
    a.wait_ready();
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        c.alerts().iter().all(|x| x["rule"] != "agent.silent"),
        "a heartbeating agent is not silent"
    );
    a.kill9();
    let alert = wait_for(Duration::from_secs(30), "the agent-silent alert", || {
        c.alerts().into_iter().find(|x| x["rule"] == "agent.silent")
    });
    assert_eq!(alert["agent_id"], a.agent_id.as_str());
    assert_eq!(alert["kind"], "agent");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        c.alerts()
            .iter()
            .filter(|x| x["rule"] == "agent.silent")
            .count(),
        1,
        "one alert per silence"
    );
}

#[test]
fn certificates_renew_before_expiry_and_the_agent_keeps_reporting_past_the_old_expiry() {
    let c = Collector::start(
        "[agents]\ncert_validity = \"30s\"\nsilent_after = \"15m\"\nsilent_check_interval = \"30s\"\n",
    );
    let mut a = Agent::enroll(&c, FAST);
    let first = c.agents()[0]["cert_serial"].as_str().unwrap().to_owned();
    let first_expiry = std::time::Instant::now() + Duration::from_secs(30);
    a.start();
    a.wait_ready();
    let second = wait_for(Duration::from_secs(40), "a renewed certificate", || {
        let s = c.agents()[0]["cert_serial"].as_str().unwrap().to_owned();
        (s != first).then_some(s)
    });
    assert_eq!(c.agents().len(), 1, "renewal is not re-enrolment");
    std::thread::sleep(
        first_expiry.saturating_duration_since(std::time::Instant::now()) + Duration::from_secs(2),
    );
    let dir = tempfile::tempdir().unwrap();
    let prog = renamed_sleep(dir.path(), "after-expiry-marker");
    Command::new(&prog).arg("0.05").status().unwrap();
    wait_for(
        Duration::from_secs(30),
        "an event after the first certificate expired",
        || {
            c.events("process")
                .iter()
                .any(|e| e["exe"].as_str() == prog.to_str())
                .then_some(())
        },
    );
    assert!(a.log().contains("client certificate renewed"), "{second}");
}
