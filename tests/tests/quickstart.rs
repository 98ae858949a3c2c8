//! The README's run command, as a new user runs it: `deploy/quickstart.sh` brings up a collector
//! and an agent, a program named `tor` shows up in `alerts list`, and so does a visit in a real
//! Chromium to a gambling site from the UT1 snapshot the quickstart imports by itself.

// Only the browser and the local site of the browsing support are used here.
#[allow(dead_code)]
#[path = "browsing_support/mod.rs"]
mod support;

use invigilator_tests::{bin, free_port, wait_for};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A home under /home that the agent's profile discovery scans, removed when dropped.
struct PupilHome(PathBuf);

impl Drop for PupilHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn alerts(data: &std::path::Path) -> Option<String> {
    let out = Command::new(bin("invigilator-collector"))
        .args(["alerts", "list", "--json", "--data-dir"])
        .arg(data)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_quickstart_runs_the_system_and_tor_and_gambling_alerts_appear() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let home = tempfile::tempdir().unwrap();
    // A browser profile in a home the agent finds on its own (the default `scan_homes`), made
    // before the quickstart starts so the agent's first discovery sees it.
    let pupil = PupilHome(PathBuf::from(format!(
        "/home/invigilator-quickstart-{}",
        std::process::id()
    )));
    let user_data = pupil.0.join(".config/chromium");
    std::fs::create_dir_all(&user_data).unwrap();
    let site = support::start_site();
    // bet365.com is in deploy/lists/ut1/gambling/domains.
    let browser = support::Chromium::start_resolving(&user_data, site, &["bet365.com"]);
    let mut script = Command::new(root.join("deploy/quickstart.sh"))
        .env("INVIGILATOR_HOME", home.path())
        .env("INVIGILATOR_PROFILE", "debug") // the test runner has built these already
        .env("GRPC_PORT", free_port().to_string())
        .env("HTTP_PORT", free_port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let stdout = BufReader::new(script.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut text = String::new();
    // The first run builds, then imports the UT1 snapshot with a debug build (minutes here).
    wait_for(Duration::from_secs(600), "the quickstart banner", || {
        while let Ok(l) = rx.try_recv() {
            text.push_str(&l);
            text.push('\n');
        }
        text.contains("Ctrl-C stops both").then_some(())
    });
    let data = home.path().join("collector");
    assert!(
        text.contains(data.to_str().unwrap()),
        "says where the data is:\n{text}"
    );
    assert!(
        text.contains("alerts list"),
        "says how to see alerts:\n{text}"
    );

    let agent_log = home.path().join("agent.log");
    wait_for(Duration::from_secs(30), "the agent", || {
        std::fs::read_to_string(&agent_log)
            .ok()?
            .contains("connected to the collector")
            .then_some(())
    });
    invigilator_tests::run_as("tor");
    wait_for(
        Duration::from_secs(30),
        "a tor alert from the quickstart system",
        || alerts(&data)?.contains("circumvention.tor").then_some(()),
    );
    assert!(
        text.contains("gambling site"),
        "says a gambling visit raises an alert:\n{text}"
    );
    wait_for(
        Duration::from_secs(60),
        "the agent to watch the pupil's Chromium profile",
        || {
            std::fs::read_to_string(&agent_log)
                .ok()?
                .contains(user_data.to_str()?)
                .then_some(())
        },
    );
    browser.open("http://bet365.com/");
    // Chromium commits its History about 10 s after a visit.
    let listed = wait_for(
        Duration::from_secs(90),
        "a web.gambling alert for the visit",
        || {
            let all = alerts(&data)?;
            all.contains("web.gambling").then_some(all)
        },
    );
    assert!(
        listed.contains("bet365.com"),
        "the alert names the site:\n{listed}"
    );
    drop(browser);
    // Ctrl-C stops both processes.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(script.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_for(Duration::from_secs(20), "the quickstart to stop", || {
        script.try_wait().unwrap()
    });
    let _ = status;
    let leftover = Command::new("pgrep")
        .arg("-f")
        .arg(home.path().to_str().unwrap())
        .output()
        .unwrap();
    assert!(
        leftover.stdout.is_empty(),
        "processes left running: {}",
        String::from_utf8_lossy(&leftover.stdout)
    );
}
