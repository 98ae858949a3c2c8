//! The USB and session rules, end to end through the real collector: events are sent over mTLS
//! with enrolled identities, exactly as agents send them, and the alerts read back with the CLI.

use invigilator_proto::v1::{Event, SessionChange, UsbDevice, event::Kind};
use invigilator_tests::{Agent, Collector, now_us, stream_batches};
use std::time::Duration;

/// Sends `kinds` as one batch from `agent`'s identity; waits for the acknowledgement.
fn send(c: &Collector, agent: &Agent, first_seq: u64, host: &str, kinds: Vec<Kind>) {
    let events: Vec<Event> = kinds
        .into_iter()
        .enumerate()
        .map(|(i, k)| {
            let user = match &k {
                Kind::Session(s) => s.user.clone(),
                _ => String::new(),
            };
            Event {
                truncated: Vec::new(),
                device_time_us: 0,
                seq: first_seq + i as u64,
                observed_at_us: now_us(),
                hostname: host.into(),
                user,
                kind: Some(k),
            }
        })
        .collect();
    stream_batches(c, agent, vec![events]);
}

fn session(action: &str, id: &str, user: &str) -> Kind {
    Kind::Session(SessionChange {
        action: action.into(),
        session_id: id.into(),
        user: user.into(),
        idle: action == "idle",
        locked: action == "lock",
        idle_since_us: if action == "idle" { now_us() } else { 0 },
        ..Default::default()
    })
}

#[test]
fn usb_storage_on_a_pupil_device_and_a_keyboard_mid_session_raise_alerts() {
    let c = Collector::start("");
    let pupil_pc = Agent::enroll_with(&c, &c.token("pupils-ks2", "1h", 1), "");
    let stick = |action: &str| {
        Kind::Usb(UsbDevice {
            action: action.into(),
            vendor_id: "0781".into(),
            product_id: "5581".into(),
            manufacturer: "SanDisk".into(),
            product: "Ultra <b>USB</b>".into(),
            serial: "4C530001".into(),
            interface_classes: vec!["mass-storage".into()],
            ..Default::default()
        })
    };
    let keyboard = Kind::Usb(UsbDevice {
        action: "attach".into(),
        vendor_id: "05ac".into(),
        product_id: "0227".into(),
        interface_classes: vec!["hid".into()],
        keyboard: true,
        ..Default::default()
    });
    send(
        &c,
        &pupil_pc,
        1,
        "ks2-pc-07",
        vec![stick("attach"), stick("detach"), keyboard],
    );
    let got = c.alert_rules();
    assert_eq!(
        got,
        ["usb.storage_on_pupil_device", "usb.keyboard_attached"],
        "{got:?}"
    );
    let a = &c.alerts()[0];
    assert_eq!(a["kind"], "usb");
    assert_eq!(a["category"], "removable-media");
    assert!(
        a["summary"]
            .as_str()
            .unwrap()
            .contains("SanDisk Ultra <b>USB</b>"),
        "stored as sent; escaping is the viewer's job"
    );
    assert_eq!(c.events("usb").len(), 3);
}

#[test]
fn a_pupil_on_a_staff_laptop_and_one_account_on_two_devices_raise_alerts() {
    let c = Collector::start("");
    let laptop = Agent::enroll_with(&c, &c.token("staff-laptops", "1h", 1), "");
    let lab = Agent::enroll_with(&c, &c.token("pupils-ks2", "1h", 1), "");
    send(
        &c,
        &laptop,
        1,
        "staff-laptop-3",
        vec![session("logon", "c1", "pupil042")],
    );
    assert_eq!(c.alert_rules(), ["session.pupil_on_staff_device"]);
    send(
        &c,
        &lab,
        1,
        "lab-pc-12",
        vec![session("logon", "4", "pupil042")],
    );
    assert_eq!(
        c.alert_rules(),
        ["session.pupil_on_staff_device", "session.concurrent_logon"]
    );
    let a = &c.alerts()[1];
    assert!(
        a["matched"].as_str().unwrap().contains("staff-laptop-3"),
        "{a}"
    );
    // After logging off the laptop, logging on in the lab again is fine.
    send(
        &c,
        &laptop,
        2,
        "staff-laptop-3",
        vec![session("logoff", "c1", "pupil042")],
    );
    send(
        &c,
        &lab,
        2,
        "lab-pc-12",
        vec![
            session("logoff", "4", "pupil042"),
            session("logon", "5", "pupil042"),
        ],
    );
    assert_eq!(c.alert_rules().len(), 2);
    assert_eq!(c.events("session").len(), 5);
}

#[test]
fn a_staff_screen_left_unlocked_and_idle_raises_one_alert_and_locking_it_clears_it() {
    let mut c = Collector::start(
        "[agents]\ncert_validity = \"30d\"\nsilent_after = \"15m\"\nsilent_check_interval = \"1s\"\n",
    );
    c.edit_policy(|p| p.replace("unattended_after = \"10m\"", "unattended_after = \"2s\""));
    let staff = Agent::enroll_with(&c, &c.token("staff", "1h", 1), "");
    let pupil = Agent::enroll_with(&c, &c.token("pupils-ks2", "1h", 1), "");
    send(
        &c,
        &staff,
        1,
        "office-1",
        vec![
            session("logon", "2", "staff.jones"),
            session("idle", "2", "staff.jones"),
        ],
    );
    send(
        &c,
        &pupil,
        1,
        "lab-1",
        vec![
            session("logon", "3", "pupil042"),
            session("idle", "3", "pupil042"),
        ],
    );
    let alert = c.wait_for_alert("session.unattended", Duration::from_secs(15));
    assert_eq!(alert["user"], "staff.jones");
    assert_eq!(alert["hostname"], "office-1");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        c.alert_rules()
            .iter()
            .filter(|r| *r == "session.unattended")
            .count(),
        1,
        "one alert per idle spell, none for pupils"
    );
    send(
        &c,
        &staff,
        3,
        "office-1",
        vec![session("lock", "2", "staff.jones")],
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.alert_rules().len(), 1);
}

fn exec(seq: u64, user: &str, exe: &str, argv: &[&str]) -> Event {
    Event {
        truncated: Vec::new(),
        device_time_us: 0,
        seq,
        observed_at_us: now_us(),
        hostname: "ict-07".into(),
        user: user.into(),
        kind: Some(Kind::Process(invigilator_proto::v1::ProcessExec {
            exe: exe.into(),
            name: exe.rsplit('/').next().unwrap().chars().take(15).collect(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        })),
    }
}

#[test]
fn installing_remote_control_hacking_and_stopping_the_agent_raise_alerts_for_the_right_people() {
    let c = Collector::start("");
    let pc = Agent::enroll_with(&c, &c.token("pupils-ks3", "1h", 1), "");
    stream_batches(
        &c,
        &pc,
        vec![vec![
            exec(
                1,
                "y9smith",
                "/usr/bin/apt-get",
                &["apt-get", "install", "-y", "steam"],
            ),
            // The machine's own update, as root: not a pupil installing software.
            exec(
                2,
                "root",
                "/usr/bin/apt-get",
                &["apt-get", "install", "-y", "tzdata"],
            ),
            exec(3, "y9smith", "/opt/anydesk/anydesk", &["anydesk"]),
            exec(
                4,
                "y9smith",
                "/usr/bin/nmap",
                &["nmap", "-sS", "10.0.0.0/24"],
            ),
            exec(
                5,
                "root",
                "/usr/bin/systemctl",
                &["systemctl", "stop", "invigilator-agent"],
            ),
            exec(
                6,
                "y9smith",
                "/usr/bin/systemctl",
                &["systemctl", "status", "invigilator-agent"],
            ),
        ]],
    );
    let alerts = c.alerts();
    let mut got: Vec<(String, String, String)> = alerts
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap().to_owned();
            (s("rule"), s("user"), s("severity"))
        })
        .collect();
    got.sort();
    let want = |r: &str, u: &str, s: &str| (r.to_owned(), u.to_owned(), s.to_owned());
    assert_eq!(
        got,
        [
            want("hacking.network_tools", "y9smith", "serious"),
            want("install.by_pupil", "y9smith", "inappropriate"),
            want("remote_control.tools", "y9smith", "serious"),
            want("tamper.agent", "root", "serious"),
        ],
        "{alerts:#?}"
    );
    let tamper = alerts.iter().find(|a| a["rule"] == "tamper.agent").unwrap();
    assert!(
        tamper["summary"]
            .as_str()
            .unwrap()
            .contains("technical staff"),
        "{tamper:#?}"
    );
}

fn stick(vendor: &str, product: &str) -> Kind {
    Kind::Usb(UsbDevice {
        action: "attach".into(),
        vendor_id: vendor.into(),
        product_id: product.into(),
        manufacturer: "Kingston".into(),
        interface_classes: vec!["mass-storage".into()],
        ..Default::default()
    })
}

#[test]
fn usb_storage_is_judged_by_who_is_logged_on_not_only_by_the_device() {
    let mut c = Collector::start("");
    // The school's encrypted staff sticks.
    c.edit_policy(|t| {
        t.replace(
            "approved_storage = []",
            "approved_storage = [\"0951:1665\"]",
        )
    });
    let classroom = Agent::enroll_with(&c, &c.token("pupils-ks2", "1h", 1), "");
    let laptop = Agent::enroll_with(&c, &c.token("staff-laptops", "1h", 1), "");
    // A teacher at a classroom PC: the approved stick is fine, any other is not.
    send(
        &c,
        &classroom,
        1,
        "ks2-pc-01",
        vec![
            session("logon", "1", "staff.jones"),
            stick("0951", "1665"),
            stick("0781", "5581"),
        ],
    );
    assert_eq!(c.alert_rules(), ["usb.unapproved_storage"]);
    assert_eq!(c.alerts()[0]["user"], "staff.jones");
    // A pupil at a staff laptop: storage used by a pupil, whatever the stick.
    send(
        &c,
        &laptop,
        1,
        "staff-laptop-9",
        vec![session("logon", "c2", "y6smith"), stick("0951", "1665")],
    );
    let alerts = c.alerts();
    let pupil = alerts
        .iter()
        .find(|a| a["rule"] == "usb.storage_on_pupil_device")
        .unwrap_or_else(|| panic!("{alerts:#?}"));
    assert_eq!(pupil["user"], "y6smith");
    assert!(
        pupil["response"]
            .as_str()
            .unwrap()
            .contains("class teacher"),
        "the pupil response: {pupil:#?}"
    );
}

#[test]
fn a_reboot_without_logoff_does_not_leave_an_account_logged_on_for_ever() {
    let c = Collector::start("");
    let lab = Agent::enroll_with(&c, &c.token("pupils-ks2", "1h", 1), "");
    let other = Agent::enroll_with(&c, &c.token("pupils-ks2", "1h", 1), "");
    let boot = |id: &str| {
        Kind::Session(SessionChange {
            action: "boot".into(),
            boot_id: id.into(),
            ..Default::default()
        })
    };
    send(
        &c,
        &lab,
        1,
        "lab-pc-01",
        vec![boot("b-1"), session("logon", "3", "y5jones")],
    );
    // The power goes off; no logoff. The agent's next start reports a new boot.
    send(&c, &lab, 3, "lab-pc-01", vec![boot("b-2")]);
    send(
        &c,
        &other,
        1,
        "lab-pc-02",
        vec![session("logon", "8", "y5jones")],
    );
    assert!(c.alert_rules().is_empty(), "{:#?}", c.alerts());
    // Control: a session still open elsewhere is a concurrent logon.
    send(
        &c,
        &other,
        2,
        "lab-pc-02",
        vec![session("logon", "9", "y5smith")],
    );
    send(
        &c,
        &lab,
        4,
        "lab-pc-01",
        vec![session("logon", "4", "y5smith")],
    );
    assert_eq!(c.alert_rules(), ["session.concurrent_logon"]);
}
