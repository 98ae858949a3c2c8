//! The shipped systemd units, held to what they claim: the agent runs with exactly the unit's
//! capability bounding set and `NoNewPrivileges`, and each source that needs a capability
//! still works (finding 14 of issue 13). systemd itself is not running here; `setpriv` applies
//! the same kernel settings.

use invigilator_tests::{
    Agent, Collector, as_unit_would, chromium_history, renamed_sleep, wait_for,
};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

#[test]
fn the_agent_works_within_its_units_capabilities() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/systemd/invigilator-agent.service"),
    )
    .unwrap();
    assert!(unit.contains("\nNoNewPrivileges=yes"));

    // A pupil's profile in a directory only its owner may enter.
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let home = tempfile::tempdir().unwrap();
    let profile = home.path().join("Default");
    std::fs::create_dir(&profile).unwrap();
    chromium_history(&profile.join("History"), "http://private.test/homework");
    for p in [home.path(), &profile, &profile.join("History")] {
        nix::unistd::chown(p, Some(nobody.uid), Some(nobody.gid)).unwrap();
    }
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();

    let c = Collector::start("");
    let mut a = Agent::enroll(
        &c,
        &format!(
            "[browsing]\nscan_homes = false\ndebounce = \"200ms\"\nextra_roots = [{{ browser = \
             \"chromium\", path = \"{}\" }}]\n",
            home.path().display()
        ),
    );
    a.start_under(&as_unit_would(&unit));
    a.wait_ready();
    let status = std::fs::read_to_string(format!("/proc/{}/status", a.pid().unwrap())).unwrap();
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    // CAP_BPF and CAP_PERFMON: the eBPF exec program loads, rather than falling back.
    assert!(
        a.log().contains("process_source=\"ebpf\""),
        "the unit's capabilities did not let the eBPF source run:\n{}",
        a.log()
    );

    // Another user's renamed program: the exe path needs CAP_SYS_PTRACE.
    let bin_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tor = renamed_sleep(bin_dir.path(), "tor");
    let ran = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&tor)
        .arg("0.3")
        .status()
        .unwrap();
    assert!(ran.success());
    let exec = wait_for(Duration::from_secs(30), "nobody's tor event", || {
        c.events("process")
            .into_iter()
            .find(|e| e["name"] == "tor" && e["uid"] == nobody.uid.as_raw())
    });
    assert_eq!(exec["exe"], tor.to_str().unwrap(), "{exec}");
    // The 0700 profile: CAP_DAC_READ_SEARCH.
    wait_for(
        Duration::from_secs(30),
        "the private profile's visit",
        || {
            c.events("browsing")
                .iter()
                .any(|e| e["url"] == "http://private.test/homework")
                .then_some(())
        },
    );
}
