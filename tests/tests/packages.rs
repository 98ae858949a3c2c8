//! The Debian packages (deploy/debian/build.sh), installed on this machine with dpkg as a
//! technician's fleet tool would: the collector under its own user; the agent silently, from a
//! debconf preseed; a wrong token failing the install cleanly; an upgrade keeping the identity;
//! purge removing state. Both units pass `systemd-analyze verify` once installed.
//!
//! This VM runs no systemd: the maintainer scripts take their no-systemd path (enable through
//! deb-systemd-helper, no start), and the test starts the installed programs itself, the agent
//! with its unit's capability set and no-new-privileges (setpriv) as systemd would.
//!
//! It installs into the real root filesystem, so it is alone in its test binary and purges both
//! packages when it ends, passed or failed.

use invigilator_tests::{as_unit_would, bin, kill9, wait_for};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const AGENT_STATE: &str = "/var/lib/invigilator-agent";
const COLLECTOR_DATA: &str = "/var/lib/invigilator";

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dpkg(args: &[&str]) -> Output {
    run(Command::new("dpkg")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn preseed(question: &str, kind: &str, value: &str) {
    let mut child = Command::new("debconf-set-selections")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(
        child.stdin.take().unwrap(),
        "invigilator-agent invigilator-agent/{question} {kind} {value}"
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

fn build(out: &Path, version: &str) -> (String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/debian/build.sh");
    let dir = bin("invigilator-agent").parent().unwrap().to_path_buf();
    let printed = ok(Command::new(script)
        .arg(out)
        .arg(dir)
        .env("DEB_VERSION", version)
        .env("DEB_COMPRESS", "none"));
    let mut debs = printed.lines().map(str::to_owned);
    (debs.next().unwrap(), debs.next().unwrap())
}

/// Purges both packages and stops what the test started, however it ends.
struct Cleanup(Vec<Child>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.0 {
            kill9(c);
        }
        let _ = dpkg(&["--purge", "invigilator-agent", "invigilator-collector"]);
    }
}

fn installed_collector(cli: &[&str]) -> String {
    ok(Command::new("runuser")
        .args(["-u", "invigilator", "--", "/usr/bin/invigilator-collector"])
        .args(cli)
        .args(["--data-dir", COLLECTOR_DATA]))
}

fn agent_id() -> Option<String> {
    let toml = std::fs::read_to_string(format!("{AGENT_STATE}/agent.toml")).ok()?;
    toml.lines()
        .find_map(|l| l.strip_prefix("agent_id = "))
        .map(|v| v.trim_matches('"').to_owned())
}

#[test]
fn packages_install_silently_upgrade_in_place_and_purge_clean() {
    for tool in [
        "dpkg-deb",
        "debconf-set-selections",
        "deb-systemd-helper",
        "systemd-analyze",
    ] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool} >/dev/null")])
                .status()
                .unwrap()
                .success(),
            "{tool} is missing (tests/setup.sh installs it)"
        );
    }
    let mut cleanup = Cleanup(Vec::new());
    let _ = dpkg(&["--purge", "invigilator-agent", "invigilator-collector"]);
    let debs = tempfile::tempdir().unwrap();
    let (agent_deb, collector_deb) = build(&debs.path().join("v1"), "0.1.0");

    // The collector: its own user, its data initialised and owned by it.
    let out = dpkg(&["-i", &collector_deb]);
    assert!(out.status.success(), "{out:?}");
    let meta = std::fs::metadata(format!("{COLLECTOR_DATA}/collector.toml")).unwrap();
    let user = nix::unistd::User::from_name("invigilator")
        .unwrap()
        .unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.uid(), user.uid.as_raw());
    assert_ne!(user.uid.as_raw(), 0);
    let log = tempfile::NamedTempFile::new().unwrap();
    let collector = Command::new("runuser")
        .args([
            "-u",
            "invigilator",
            "--",
            "/usr/bin/invigilator-collector",
            "serve",
        ])
        .args(["--data-dir", COLLECTOR_DATA, "--grpc-listen", "127.0.0.1:0"])
        .args(["--http-listen", "127.0.0.1:0"])
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    cleanup.0.push(collector);
    let port = wait_for(Duration::from_secs(30), "the installed collector", || {
        let text = std::fs::read_to_string(log.path()).ok()?;
        let line = text
            .lines()
            .find(|l| l.starts_with("invigilator-collector listening:"))?;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("grpc="))
            .and_then(|a| a.rsplit(':').next())
            .map(str::to_owned)
    });
    let serving =
        ok(Command::new("pgrep").args(["-u", "invigilator", "-f", "invigilator-collector serve"]));
    assert!(
        !serving.trim().is_empty(),
        "the collector runs as its own user"
    );
    let url = format!("https://localhost:{port}");
    preseed("collector", "string", &url);

    // A wrong token: the install fails, names the problem, and leaves no identity behind.
    let token = installed_collector(&["token", "create", "--group", "staff"]);
    let token = token.trim();
    let wrong = format!("{}x", &token[..token.len() - 1]);
    preseed("token", "password", &wrong);
    let out = dpkg(&["-i", &agent_deb]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wrong token must fail the install");
    assert!(
        stderr.contains("enrolment with") && stderr.contains("failed"),
        "{stderr}"
    );
    assert!(
        !Path::new(AGENT_STATE).exists(),
        "half-made state left behind"
    );

    // Preseeded right, configured silently: enrolled, enabled, the token forgotten.
    preseed("token", "password", token);
    let out = dpkg(&["--configure", "invigilator-agent"]);
    assert!(out.status.success(), "{out:?}");
    let id = agent_id().expect("enrolled");
    let agents = installed_collector(&["agents", "list", "--json"]);
    assert!(agents.contains(&id), "{agents}");
    assert!(
        Path::new("/etc/systemd/system/multi-user.target.wants/invigilator-agent.service").exists(),
        "the service is enabled"
    );
    let kept = ok(Command::new("sh").args([
        "-c",
        "echo GET invigilator-agent/token | debconf-communicate invigilator-agent",
    ]));
    assert!(
        !kept.contains(token),
        "the spent token stays in debconf: {kept}"
    );
    // The browsers find the extension's host, which is the installed agent; the policies wait
    // for the administrator.
    for manifest in [
        "/etc/chromium/native-messaging-hosts/uk.invigilator.agent.json",
        "/etc/opt/chrome/native-messaging-hosts/uk.invigilator.agent.json",
        "/etc/opt/edge/native-messaging-hosts/uk.invigilator.agent.json",
        "/usr/lib/mozilla/native-messaging-hosts/uk.invigilator.agent.json",
    ] {
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
        assert_eq!(m["path"], "/usr/bin/invigilator-agent", "{manifest}");
        assert_eq!(m["name"], "uk.invigilator.agent", "{manifest}");
    }
    assert!(Path::new("/usr/share/invigilator/invigilator-firefox.xpi").exists());
    assert!(
        Path::new(
            "/usr/share/invigilator/browser-policies/chromium/invigilator-private-browsing.json"
        )
        .exists()
    );
    for unit in ["invigilator-agent", "invigilator-collector"] {
        let out = run(Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("/lib/systemd/system/{unit}.service")));
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{unit}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The installed agent under its unit's capabilities reports, with the eBPF source.
    let unit = std::fs::read_to_string("/lib/systemd/system/invigilator-agent.service").unwrap();
    let wrapper = as_unit_would(&unit);
    let agent = Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .args(["/usr/bin/invigilator-agent", "run"])
        .args(["--state-dir", AGENT_STATE])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    cleanup.0.push(agent);
    wait_for(
        Duration::from_secs(60),
        "the installed agent's heartbeat",
        || {
            let list = installed_collector(&["agents", "list", "--json"]);
            let rows: Vec<serde_json::Value> = serde_json::from_str(&list).ok()?;
            rows.into_iter()
                .find(|r| r["agent_id"] == id.as_str() && r["process_source"] == "ebpf")
        },
    );
    kill9(&mut cleanup.0.pop().unwrap());

    // An upgrade keeps the identity (the token is spent; it is not asked again), and the
    // administrator's edit of a host manifest (a conffile: the school's own extension id).
    let edited = "/etc/opt/edge/native-messaging-hosts/uk.invigilator.agent.json";
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(edited).unwrap()).unwrap();
    m["allowed_origins"]
        .as_array_mut()
        .unwrap()
        .push("chrome-extension://abcdefghijklmnopabcdefghijklmnop/".into());
    std::fs::write(edited, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let conffiles = ok(Command::new("dpkg-query").args([
        "--showformat=${Conffiles}",
        "--show",
        "invigilator-agent",
    ]));
    assert!(conffiles.contains(edited), "{conffiles}");
    let (agent_v2, _) = build(&debs.path().join("v2"), "0.1.0+2");
    let out = dpkg(&["-i", &agent_v2]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(agent_id().as_deref(), Some(id.as_str()));
    assert!(
        std::fs::read_to_string(edited)
            .unwrap()
            .contains("abcdefghijklmnopabcdefghijklmnop"),
        "the upgrade replaced the administrator's edit"
    );

    // Purge: identity, spool and settings gone, the service no longer enabled, debconf clean.
    let out = dpkg(&["--purge", "invigilator-agent"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !Path::new("/etc/chromium/native-messaging-hosts/uk.invigilator.agent.json").exists(),
        "the host manifest goes with the package"
    );
    assert!(!Path::new(AGENT_STATE).exists());
    assert!(
        !Path::new("/etc/systemd/system/multi-user.target.wants/invigilator-agent.service")
            .exists()
    );
    let left = ok(Command::new("debconf-show").arg("invigilator-agent"));
    assert!(left.trim().is_empty(), "{left}");
    for c in &mut cleanup.0 {
        kill9(c);
    }
    let out = dpkg(&["--purge", "invigilator-collector"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!Path::new(COLLECTOR_DATA).exists());
}
