//! Sessions and screen lock against a real `dbus-daemon` and a test service that speaks
//! systemd-logind's D-Bus interfaces (tests/src/fake_logind.rs): first the agent's session source
//! in-process, event by event; then the real agent binary, end to end to the collector.

use std::time::Duration;

use invigilator_agent::sources::session::logind::{self as session, SessionSourceConfig};
use invigilator_agent::sources::{self, EventRx};
use invigilator_proto::v1::{Event, SessionChange, event};
use invigilator_tests::fake_logind::{BusDaemon, FakeLogind, SessionSpec, session_path};
use invigilator_tests::{Agent, Collector, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

/// The session source running on a runtime of its own, as in the agent.
struct Source {
    rt: tokio::runtime::Runtime,
    rx: EventRx,
}

impl Source {
    fn start(bus_address: &str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = sources::channel(64);
        let cfg = SessionSourceConfig {
            hostname: "pc-test".into(),
            bus_address: Some(bus_address.into()),
        };
        rt.spawn(session::run(cfg, tx));
        let mut src = Self { rt, rx };
        // First, always, which boot this is: the kernel's own id, which a reboot changes.
        let boot = src.next_event();
        let Some(event::Kind::Session(b)) = boot.kind else {
            panic!("not a session event: {boot:?}");
        };
        let kernel = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        assert_eq!(
            (b.action.as_str(), b.boot_id.as_str(), boot.user.as_str()),
            ("boot", kernel.trim(), "")
        );
        src
    }

    fn next_event(&mut self) -> Event {
        let rx = &mut self.rx;
        let obs = self
            .rt
            .block_on(async { tokio::time::timeout(WAIT, rx.recv()).await })
            .expect("a session event within 15 s")
            .expect("the source is running");
        obs.event.expect("an event")
    }

    /// The next change, checked to be `action` on session `id`.
    fn expect(&mut self, action: &str, id: &str) -> SessionChange {
        let ev = self.next_event();
        assert_eq!(ev.hostname, "pc-test");
        let Some(event::Kind::Session(s)) = ev.kind else {
            panic!("not a session event: {ev:?}");
        };
        assert_eq!(
            (s.action.as_str(), s.session_id.as_str()),
            (action, id),
            "{s:?}"
        );
        assert_eq!(ev.user, s.user, "Event.user is the session's user");
        s
    }

    fn expect_nothing(&mut self, for_how_long: Duration) {
        let rx = &mut self.rx;
        let got = self
            .rt
            .block_on(async { tokio::time::timeout(for_how_long, rx.recv()).await });
        if let Ok(Some(obs)) = got {
            panic!("unexpected event: {:?}", obs.event);
        }
    }
}

fn pupil_desktop() -> SessionSpec {
    SessionSpec::desktop("1", 1001, "pupil1")
}

#[test]
fn source_follows_logind_sessions_locks_and_idleness_in_order() {
    let bus = BusDaemon::start();
    let logind = FakeLogind::start(&bus.address);
    logind.new_session(&pupil_desktop());
    assert_eq!(
        session_path("1").as_str(),
        "/org/freedesktop/login1/session/_31"
    );

    let mut src = Source::start(&bus.address);
    // Open before the agent started.
    let s = src.expect("present", "1");
    assert_eq!(
        s,
        SessionChange {
            action: "present".into(),
            session_id: "1".into(),
            user: "pupil1".into(),
            uid: Some(1001),
            seat: "seat0".into(),
            tty: "tty2".into(),
            display: ":0".into(),
            remote: false,
            remote_host: String::new(),
            session_type: "x11".into(),
            session_class: "user".into(),
            locked: false,
            idle: false,
            idle_since_us: 0,
            boot_id: String::new(),
        }
    );

    // A remote logon: no seat, the host it came from.
    logind.new_session(&SessionSpec::ssh("c2", 1002, "teacher", "10.0.0.5"));
    let s = src.expect("logon", "c2");
    assert_eq!(
        (s.user.as_str(), s.uid, s.seat.as_str(), s.tty.as_str()),
        ("teacher", Some(1002), "", "pts/0")
    );
    assert!(s.remote);
    assert_eq!(
        (s.remote_host.as_str(), s.session_type.as_str()),
        ("10.0.0.5", "tty")
    );

    // The screen locker sets LockedHint.
    logind.set_locked_hint("1", true);
    assert!(src.expect("lock", "1").locked);
    logind.set_locked_hint("1", false);
    assert!(!src.expect("unlock", "1").locked);

    // `loginctl lock-session`: logind's Lock() signal, then the locker's LockedHint: one event
    // each way, not two.
    logind.emit_lock_signal("1", true);
    assert!(src.expect("lock", "1").locked);
    logind.set_locked_hint("1", true);
    logind.emit_lock_signal("1", false);
    assert!(!src.expect("unlock", "1").locked);
    logind.set_locked_hint("1", false);

    // Idle since a given time (CLOCK_REALTIME µs), then active again.
    let since = 1_767_000_000_000_000u64;
    logind.set_idle_hint("1", true, since);
    let s = src.expect("idle", "1");
    assert_eq!(
        (s.idle, s.idle_since_us, s.locked),
        (true, since as i64, false)
    );
    logind.set_idle_hint("1", false, since + 60_000_000);
    let s = src.expect("active", "1");
    assert_eq!((s.idle, s.idle_since_us), (false, 0));

    // Logoff: the session object is gone; the event is filled from what the logon said.
    logind.remove_session("c2");
    let s = src.expect("logoff", "c2");
    assert_eq!(
        (
            s.user.as_str(),
            s.uid,
            s.remote_host.as_str(),
            s.tty.as_str()
        ),
        ("teacher", Some(1002), "10.0.0.5", "pts/0")
    );
    src.expect_nothing(Duration::from_millis(300));
}

/// Another bus client forges logind's signals, broadcast and addressed to the agent directly.
#[test]
fn signals_not_sent_by_logind_are_ignored() {
    let bus = BusDaemon::start();
    let logind = FakeLogind::start(&bus.address);
    logind.new_session(&pupil_desktop());
    let mut src = Source::start(&bus.address);
    src.expect("present", "1");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let forger = zbus::connection::Builder::address(bus.address.as_str())
            .unwrap()
            .build()
            .await
            .unwrap();
        let me = forger.unique_name().unwrap().to_string();
        let names: Vec<String> = forger
            .call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "ListNames",
                &(),
            )
            .await
            .unwrap()
            .body()
            .deserialize()
            .unwrap();
        let mut targets: Vec<Option<String>> = names
            .into_iter()
            .filter(|n| n.starts_with(':') && *n != me && *n != logind.unique_name())
            .map(Some)
            .collect();
        assert!(!targets.is_empty(), "the agent's connection is on the bus");
        targets.push(None);
        let changed =
            std::collections::HashMap::from([("LockedHint", zbus::zvariant::Value::from(true))]);
        let path = session_path("1");
        for dest in &targets {
            forger
                .emit_signal(
                    dest.as_deref(),
                    &path,
                    "org.freedesktop.DBus.Properties",
                    "PropertiesChanged",
                    &(
                        "org.freedesktop.login1.Session",
                        &changed,
                        Vec::<String>::new(),
                    ),
                )
                .await
                .unwrap();
            forger
                .emit_signal(
                    dest.as_deref(),
                    "/org/freedesktop/login1",
                    "org.freedesktop.login1.Manager",
                    "SessionRemoved",
                    &("1", &path),
                )
                .await
                .unwrap();
        }
    });
    src.expect_nothing(Duration::from_millis(500));
    // Still following the real logind.
    logind.set_locked_hint("1", true);
    src.expect("lock", "1");
}

/// No bus yet, then a bus; logind stops and another starts with other sessions.
#[test]
fn source_waits_for_the_bus_and_reconciles_after_logind_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:path={}", dir.path().join("bus").display());
    let mut src = Source::start(&address);
    src.expect_nothing(Duration::from_millis(1500));

    let bus = BusDaemon::start_in(dir);
    let logind = FakeLogind::start_with(&bus.address, &[pupil_desktop()]);
    src.expect("present", "1");
    logind.set_locked_hint("1", true);
    src.expect("lock", "1");

    // logind goes away; a new one has session 1 gone and session 3 open.
    logind.stop();
    let _logind =
        FakeLogind::start_with(&bus.address, &[SessionSpec::desktop("3", 1003, "pupil3")]);
    let s = src.expect("logoff", "1");
    assert_eq!((s.user.as_str(), s.locked), ("pupil1", false));
    let s = src.expect("present", "3");
    assert_eq!(s.user, "pupil3");
}

fn session_settings(address: &str) -> String {
    format!("[session]\nbus_address = \"{address}\"\n")
}

#[test]
fn session_events_reach_the_collector_from_the_real_agent() {
    let c = Collector::start("");
    let bus = BusDaemon::start();
    let logind = FakeLogind::start_with(&bus.address, &[pupil_desktop()]);
    let mut a = Agent::enroll(&c, &session_settings(&bus.address));
    a.start();
    wait_for(WAIT, "the agent's session source", || {
        a.log().contains("session source: watching").then_some(())
    });

    logind.set_locked_hint("1", true);
    logind.set_locked_hint("1", false);
    logind.set_idle_hint("1", true, 1_767_000_000_000_000);
    logind.new_session(&SessionSpec::ssh("c2", 1002, "teacher", "10.0.0.5"));
    // A session closed before the agent has read its details would leave the logon (and so the
    // logoff) with the id alone: a real session lasts longer than that.
    let at_collector = |n: usize| {
        wait_for(
            WAIT,
            &format!("{n} session events at the collector"),
            || {
                let ev = c.events("session");
                (ev.len() >= n).then_some(ev)
            },
        )
    };
    at_collector(6);
    logind.remove_session("c2");

    // First the boot the agent runs in (spooled ahead of the sessions it reports).
    let expected = [
        "boot", "present", "lock", "unlock", "idle", "logon", "logoff",
    ];
    let events = at_collector(expected.len());
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, expected, "{events:#?}\n{}", a.log());
    for e in &events {
        assert_eq!(e["kind"], "session");
        assert_eq!(e["agent_id"], Value::from(a.agent_id.as_str()));
        assert_eq!(e["hostname"], Value::from(invigilator_agent::hostname()));
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(events[0]["boot_id"], Value::from(kernel.trim()));
    let present = &events[1];
    assert_eq!(
        (&present["session_id"], &present["user"], &present["uid"]),
        (
            &Value::from("1"),
            &Value::from("pupil1"),
            &Value::from(1001)
        )
    );
    assert_eq!(
        (&present["seat"], &present["display"]),
        (&Value::from("seat0"), &Value::from(":0"))
    );
    assert_eq!(events[2]["locked"], true);
    assert_eq!(events[4]["idle_since_us"], 1_767_000_000_000_000i64);
    let logoff = &events[6];
    assert_eq!(
        (
            &logoff["session_id"],
            &logoff["user"],
            &logoff["remote"],
            &logoff["remote_host"]
        ),
        (
            &Value::from("c2"),
            &Value::from("teacher"),
            &Value::from(true),
            &Value::from("10.0.0.5")
        )
    );
}

#[test]
fn bad_bus_addresses_are_named() {
    let c = Collector::start("");

    // Not a D-Bus address at all: the agent refuses to start and says which setting is wrong.
    let mut a = Agent::enroll(&c, &session_settings("nonsense"));
    a.start();
    wait_for(WAIT, "the agent to reject session.bus_address", || {
        a.log()
            .contains("session.bus_address \"nonsense\" is not a D-Bus address")
            .then_some(())
    });

    // A valid address with nothing there: a warning naming it, and the agent keeps running.
    let missing = "unix:path=/nonexistent/invigilator-test/bus";
    let mut a = Agent::enroll(&c, &session_settings(missing));
    a.start();
    a.wait_ready();
    wait_for(WAIT, "a warning naming the bus address", || {
        a.log()
            .lines()
            .find(|l| {
                l.contains("WARN")
                    && l.contains(&format!("cannot connect to D-Bus address \"{missing}\""))
            })
            .map(str::to_owned)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !a.log().contains("panicked"),
        "the agent survives a missing bus:\n{}",
        a.log()
    );
    let pid = a.pid().expect("started");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.split_whitespace()
            .nth(2)
            .is_some_and(|state| state != "Z"),
        "the agent is still running: {stat:?}\n{}",
        a.log()
    );
}
