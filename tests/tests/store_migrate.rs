//! `store migrate`: a school's SQLite store moved to PostgreSQL whole, its audit trail still
//! verifying, and its agents delivering on as if nothing had happened.

use invigilator_tests::store::PgServer;
use invigilator_tests::{Agent, Collector, renamed_sleep, run_ok, wait_for};
use std::process::Command;
use std::time::Duration;

const FAST: &str =
    "[uplink]\nmax_batch = 500\nwindow = 4\nheartbeat_interval = \"1s\"\nreconnect_max = \"2s\"\n";

#[test]
fn a_schools_store_moves_to_postgresql_whole_and_the_trail_still_verifies() {
    let pg = PgServer::start();
    let mut c = Collector::start_on_sqlite("");
    let mut a = Agent::enroll(&c, FAST);
    a.start();
    a.wait_ready();
    let dir = tempfile::tempdir().unwrap();
    let tor = renamed_sleep(dir.path(), "tor");
    Command::new(&tor).arg("0.05").status().unwrap();
    c.wait_for_alert("circumvention.tor", Duration::from_secs(30));
    // Staff reads, so the trail has entries of its own to carry over.
    let alerts_before = c.alerts();
    a.kill9();
    c.kill9();
    let seqs_before = c.stored_seqs(&a.agent_id);
    assert!(!seqs_before.is_empty());

    let url = pg.new_database();
    let out = run_ok(&mut c.cli(&["store", "migrate", "--to", &url]));
    assert!(out.contains("audit trail"), "{out}");
    c.store_url = Some(url.clone());
    assert!(
        std::fs::read_to_string(c.data_dir().join("collector.toml"))
            .unwrap()
            .contains(&url),
        "collector.toml names the database now"
    );
    // A second copy into a database that has data is refused, and changes nothing.
    let again = invigilator_tests::output(&mut c.cli(&["store", "migrate", "--to", &url]));
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Nor does another school's store go into a database that holds one already.
    let other = Collector::start_on_sqlite("");
    let refused = invigilator_tests::output(&mut other.cli(&["store", "migrate", "--to", &url]));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && why.contains("already holds data"),
        "{why}"
    );

    c.restart();
    assert!(c.log().contains("listening"));
    run_ok(&mut c.cli(&["audit", "verify"]));
    assert_eq!(c.stored_seqs(&a.agent_id), seqs_before);
    let alerts_after = c.alerts();
    assert_eq!(alerts_after, alerts_before, "the same alerts, ids and all");

    // The agent goes on where it was: its next events continue the sequence, once each, and
    // a new alert is numbered after the old ones.
    a.start();
    a.wait_ready();
    Command::new(&tor).arg("0.05").status().unwrap();
    let last_id = alerts_before
        .iter()
        .filter_map(|x| x["id"].as_i64())
        .max()
        .unwrap();
    wait_for(Duration::from_secs(30), "a new alert on PostgreSQL", || {
        c.alerts()
            .into_iter()
            .find(|x| x["id"].as_i64().unwrap() > last_id)
    });
    let seqs = c.stored_seqs(&a.agent_id);
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "{seqs:?}"
    );
    assert!(seqs.len() > seqs_before.len());
    assert_eq!(
        c.db()
            .count("SELECT count(*) FROM audit_log WHERE action = 'store.migrate'"),
        1
    );
    run_ok(&mut c.cli(&["audit", "verify"]));
}
