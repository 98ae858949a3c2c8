//! The monitored are the adversary: what a pupil did on a monitored device to blind the agent
//! (issue 13, findings 1-3), reproduced against the real agent (as root, proc connector) and
//! collector. Each attack must leave delivery running, with the rest of the device's data
//! arriving, and the attempt visible.

use invigilator_tests::{Agent, Collector, chromium_history as history, wait_for};
use std::process::Command;
use std::time::Duration;

/// Finding 1: one `execve` with 15 arguments of 131,000 invalid bytes each. Before the byte
/// budgets its event outgrew the 4 MiB message limit and stopped delivery for good.
#[test]
fn a_huge_command_line_is_cut_and_delivery_goes_on() {
    let c = Collector::start("");
    let mut a = Agent::enroll(&c, "[browsing]\nenabled = false\n");
    a.start();
    a.wait_ready();

    let status = Command::new("python3")
        .args([
            "-c",
            "import os, sys\n\
             if os.fork() == 0:\n    \
                 os.execv('/bin/sleep', [b'sleep', b'0.2'] + [b'\\xff' * 131000] * 15)\n\
             os.wait()",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    // After it, an ordinary program must still reach the collector and alert.
    invigilator_tests::run_as("tor");
    wait_for(
        Duration::from_secs(30),
        "the tor alert after the attack",
        || {
            c.alerts()
                .iter()
                .any(|a| a["rule"] == "circumvention.tor")
                .then_some(())
        },
    );
    let events = c.events("process");
    let cut = events
        .iter()
        .find(|e| {
            e["truncated"]
                .as_array()
                .is_some_and(|t| t.iter().any(|f| f == "process.argv"))
        })
        .unwrap_or_else(|| panic!("no process event marked as cut: {events:#?}"));
    let argv_len: usize = cut["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().len())
        .sum();
    assert!(argv_len <= 32 * 1024, "stored argv of {argv_len} bytes");
    assert!(cut["argv_bytes"].as_u64().unwrap() > 1_900_000, "{cut}");
    assert_eq!(cut["argv"][0], "sleep");
}

/// Every stored visit's address.
fn browsing_urls(c: &Collector) -> Vec<String> {
    c.events("browsing")
        .iter()
        .filter_map(|e| e["url"].as_str().map(str::to_owned))
        .collect()
}

/// Findings 2 and 3: a FIFO as the journal, a sparse 3 GB History and a `visits` view over an
/// endless recursive query, each in a profile of its own beside an honest profile. The honest
/// profile's visit arrives; the hostile ones are refused, named in the agent's log, and nothing
/// large is written to the agent's state directory.
#[test]
fn hostile_history_files_neither_hang_the_reader_nor_fill_the_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let root = |name: &str| {
        let p = tmp.path().join(name).join("Default");
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    let fifo = root("fifo");
    history(&fifo.join("History"), "http://fifo.test/");
    nix::unistd::mkfifo(
        &fifo.join("History-journal"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let sparse = root("sparse");
    std::fs::File::create(sparse.join("History"))
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    let view = root("view");
    history(&view.join("History"), "http://view.test/");
    rusqlite::Connection::open(view.join("History"))
        .unwrap()
        .execute_batch(
            "DROP TABLE visits;
             CREATE VIEW visits AS WITH RECURSIVE n(id) AS (SELECT 1 UNION ALL SELECT id + 1 FROM n)
             SELECT id, 1 AS url, 0 AS visit_time, 0 AS transition FROM n;",
        )
        .unwrap();
    let honest = root("honest");

    let roots: Vec<String> = ["fifo", "sparse", "view", "honest"]
        .iter()
        .map(|n| {
            format!(
                "{{ browser = \"chromium\", path = \"{}\" }}",
                tmp.path().join(n).display()
            )
        })
        .collect();
    let c = Collector::start("");
    let mut a = Agent::enroll(
        &c,
        &format!(
            "[browsing]\nscan_homes = false\ndebounce = \"200ms\"\nrediscover_interval = \"1s\"\n\
             extra_roots = [{}]\n",
            roots.join(", ")
        ),
    );
    a.start();
    a.wait_ready();
    // The honest profile appears after the hostile ones are already being read.
    wait_for(
        Duration::from_secs(30),
        "the hostile profiles to be tried",
        || {
            let log = a.log();
            (log.contains("not a regular file")
                && log.contains("above the limit")
                && log.contains("`visits` is view"))
            .then_some(())
        },
    );
    history(&honest.join("History"), "http://honest.test/maths");
    wait_for(
        Duration::from_secs(30),
        "the honest profile's visit beside the hostile ones",
        || {
            c.events("browsing")
                .iter()
                .any(|e| e["url"] == "http://honest.test/maths")
                .then_some(())
        },
    );
    let urls = browsing_urls(&c);
    assert!(
        !urls
            .iter()
            .any(|u| u.contains("fifo.test") || u.contains("view.test")),
        "{urls:?}"
    );
    let used = Command::new("du")
        .args(["-sk"])
        .arg(a.state_dir())
        .output()
        .unwrap();
    let kib: u64 = String::from_utf8_lossy(&used.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        kib < 64 * 1024,
        "the agent's state directory holds {kib} KiB"
    );
    assert!(a.pid().is_some());
}

/// Finding 5: a pupil's profile whose `History` is a link to a root-only file. The agent must not
/// follow it (it used to copy the target as root and store its visits as the pupil's), while
/// an honest profile beside it is read as usual.
#[test]
fn a_link_to_a_file_the_pupil_cannot_read_is_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let secret_dir = tmp.path().join("root-only");
    std::fs::create_dir(&secret_dir).unwrap();
    history(&secret_dir.join("History"), "http://root-only.test/secret");
    std::fs::set_permissions(&secret_dir, std::fs::Permissions::from_mode(0o700)).unwrap();

    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let pupil = tmp.path().join("pupil");
    std::fs::create_dir_all(pupil.join("Default")).unwrap();
    std::os::unix::fs::symlink(secret_dir.join("History"), pupil.join("Default/History")).unwrap();
    for p in [pupil.clone(), pupil.join("Default")] {
        nix::unistd::chown(&p, Some(nobody.uid), Some(nobody.gid)).unwrap();
    }
    let honest = tmp.path().join("honest");
    std::fs::create_dir_all(honest.join("Default")).unwrap();

    let c = Collector::start("");
    let mut a = Agent::enroll(
        &c,
        &format!(
            "[browsing]\nscan_homes = false\ndebounce = \"200ms\"\nrediscover_interval = \"1s\"\n\
             extra_roots = [{{ browser = \"chromium\", path = \"{}\" }}, \
             {{ browser = \"chromium\", path = \"{}\" }}]\n",
            pupil.display(),
            honest.display()
        ),
    );
    a.start();
    a.wait_ready();
    history(&honest.join("Default/History"), "http://honest.test/linked");
    wait_for(
        Duration::from_secs(30),
        "the honest profile's visit",
        || {
            c.events("browsing")
                .iter()
                .any(|e| e["url"] == "http://honest.test/linked")
                .then_some(())
        },
    );
    // Two more rediscovery rounds: the linked profile has had every chance to be read.
    std::thread::sleep(Duration::from_secs(3));
    let urls = browsing_urls(&c);
    assert!(
        !urls.iter().any(|u| u.contains("root-only.test")),
        "{urls:?}\n{}",
        a.log()
    );
    assert!(a.pid().is_some());
}
