//! Enrolment and identity: tokens, CA pinning, and who the collector believes.

use invigilator_tests::{Agent, Collector};

#[test]
fn an_agent_enrols_and_the_collector_lists_it_in_the_token_group() {
    let c = Collector::start("");
    let token = c.token("pupils-ks2", "1h", 1);
    let a = Agent::enroll_with(&c, &token, "");
    let agents = c.agents();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["agent_id"], a.agent_id.as_str());
    assert_eq!(agents[0]["group"], "pupils-ks2");
    assert!(uuid_like(&a.agent_id), "{}", a.agent_id);
    // The key never leaves the device and is readable by its owner only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(a.state_dir().join("agent.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let key = std::fs::read_to_string(a.state_dir().join("agent.key")).unwrap();
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let db = c.db().dump(&c.data_dir());
    assert!(
        !db.windows(body.len().min(40))
            .any(|w| w == &body.as_bytes()[..body.len().min(40)])
    );
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|&c| c == '-').count() == 4
}

#[test]
fn used_up_expired_and_forged_tokens_are_refused_with_the_reason() {
    let c = Collector::start("");
    let dir = tempfile::tempdir().unwrap();
    let once = c.token("staff", "1h", 1);
    let ok = Agent::try_enroll(&c.url(), &once, &dir.path().join("a"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let again = Agent::try_enroll(&c.url(), &once, &dir.path().join("b"));
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no uses left"),
        "{again:?}"
    );

    let expired = c.token("staff", "1ms", 5);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = Agent::try_enroll(&c.url(), &expired, &dir.path().join("c"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expired"),
        "{out:?}"
    );

    // Right CA fingerprint, made-up id and secret.
    let fp = once.rsplit('.').next().unwrap();
    let forged = format!("inv1.abcdefghijkl.{}.{fp}", "s".repeat(32));
    let out = Agent::try_enroll(&c.url(), &forged, &dir.path().join("d"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown enrolment token"),
        "{out:?}"
    );

    let out = Agent::try_enroll(&c.url(), "not-a-token", &dir.path().join("e"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("malformed"),
        "{out:?}"
    );
    assert_eq!(c.agents().len(), 1, "no refused attempt created an agent");
}

#[test]
fn an_agent_will_not_enrol_with_a_collector_other_than_the_one_its_token_pins() {
    let real = Collector::start("");
    let impostor = Collector::start("");
    let token = real.token("staff", "1h", 1);
    let dir = tempfile::tempdir().unwrap();
    let out = Agent::try_enroll(&impostor.url(), &token, &dir.path().join("s"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pinned"), "{err}");
    assert!(impostor.agents().is_empty());
    // Nothing of the failed attempt is left: no identity, and no orphan key.
    for file in ["agent.toml", "agent.key", "agent.pem", "ca.pem"] {
        assert!(
            !dir.path().join("s").join(file).exists(),
            "{file} left behind"
        );
    }
    // And the same directory enrols with the right collector afterwards.
    let retry = Agent::try_enroll(&real.url(), &token, &dir.path().join("s"));
    assert!(retry.status.success(), "{retry:?}");
    assert!(dir.path().join("s/agent.toml").exists());
}

/// Finding 12 of issue 13: guessing tokens is rationed per address and does not flood the log.
#[test]
fn repeated_failed_enrolments_from_one_address_are_refused_and_logged_sparingly() {
    let c = Collector::start("");
    let dir = tempfile::tempdir().unwrap();
    let fp = c.ca_fingerprint();
    let mut refused_unchecked = 0;
    for i in 0..26 {
        let guess = format!("inv1.abcdefghij{i:02}.{}.{fp}", "s".repeat(32));
        let out = Agent::try_enroll(&c.url(), &guess, &dir.path().join(format!("g{i}")));
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("too many failed enrolments") {
            refused_unchecked += 1;
        } else {
            assert!(err.contains("unknown enrolment token"), "{err}");
        }
    }
    assert_eq!(
        refused_unchecked, 6,
        "20 checked, the rest refused unchecked"
    );
    // While the address is closed, even a good token waits: guessing must not pay off by luck.
    let good = c.token("staff", "1h", 1);
    let out = Agent::try_enroll(&c.url(), &good, &dir.path().join("good"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("too many failed enrolments"));
    let warnings = c
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("enrolment"))
        .count();
    assert!(
        (1..=4).contains(&warnings),
        "{warnings} warning lines for 27 attempts:\n{}",
        c.log()
    );
}

/// Finding 9 of issue 13: directories that already existed, world-readable, become private
/// (0700) with their databases 0600, on the collector and on the agent.
#[test]
fn data_and_state_directories_are_private_whatever_existed_before() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = invigilator_tests::output(
        std::process::Command::new(invigilator_tests::bin("invigilator-collector"))
            .arg("init")
            .arg("--data-dir")
            .arg(&data),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("invigilator.db")), 0o600);

    let c = Collector::start("");
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Agent::try_enroll(&c.url(), &c.token("staff", "1h", 1), &state);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("agent.key")), 0o600);
}
