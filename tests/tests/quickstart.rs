//! The README's run command, as a new user runs it: `deploy/quickstart.sh` brings up a collector
//! and an agent, and a program named `tor` shows up in `alerts list`.

use invigilator_tests::{bin, wait_for};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_quickstart_runs_the_system_and_a_tor_alert_appears() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let home = tempfile::tempdir().unwrap();
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
    wait_for(Duration::from_secs(300), "the quickstart banner", || {
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
    let dir = tempfile::tempdir().unwrap();
    let tor = dir.path().join("tor");
    std::fs::copy("/bin/sleep", &tor).unwrap();
    Command::new(&tor).arg("0.05").status().unwrap();
    wait_for(
        Duration::from_secs(30),
        "a tor alert from the quickstart system",
        || {
            let out = Command::new(bin("invigilator-collector"))
                .args(["alerts", "list", "--json", "--data-dir"])
                .arg(&data)
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("circumvention.tor")
                .then_some(())
        },
    );
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
