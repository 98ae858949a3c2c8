//! The policy end to end: the default policy file, evaluated against events.

use super::*;
use invigilator_proto::v1::ProcessExec;

fn exec(exe: &str, name: &str, argv: &[&str]) -> Event {
    Event {
        seq: 7,
        observed_at_us: 1,
        hostname: "ict-01".into(),
        user: "pupil".into(),
        kind: Some(Kind::Process(ProcessExec {
            exe: exe.into(),
            name: name.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })),
    }
}

const CTX: AgentContext<'static> = AgentContext {
    agent_id: "a",
    group: "pupils",
    user_logged_on_elsewhere: Vec::new(),
};

#[test]
fn the_default_policy_catches_circumvention_p2p_and_games_and_not_ordinary_programs() {
    let p = Policy::parse(DEFAULT_POLICY).unwrap();
    let fired = |e: Event| {
        p.evaluate(&CTX, &e)
            .into_iter()
            .map(|a| a.rule)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        fired(exec("/usr/bin/tor", "tor", &["tor"])),
        ["circumvention.tor"]
    );
    assert_eq!(
        fired(exec("", "tor", &[])),
        ["circumvention.tor"],
        "comm alone is enough"
    );
    assert_eq!(
        fired(exec(
            "C:\\Users\\p\\Desktop\\Psiphon3.exe",
            "Psiphon3.exe",
            &[]
        )),
        ["circumvention.psiphon"]
    );
    assert_eq!(
        fired(exec(
            "/usr/sbin/openvpn",
            "openvpn",
            &["openvpn", "--config", "x"]
        )),
        ["circumvention.vpn"]
    );
    assert_eq!(
        fired(exec("/usr/bin/qbittorrent", "qbittorrent", &[])),
        ["filesharing.p2p"]
    );
    assert_eq!(
        fired(exec("/usr/games/steam", "steam", &[])),
        ["games.non_educational"]
    );
    for benign in [
        exec("/usr/bin/bash", "bash", &["bash"]),
        exec("/usr/bin/torsocks-docs-viewer", "torsocks-docs-v", &[]),
        exec(
            "/usr/bin/python3",
            "python3",
            &["python3", "history_of_tortoises.py"],
        ),
        exec(
            "/opt/minecraft-education/Minecraft.Education",
            "Minecraft.Educat",
            &[],
        ),
    ] {
        assert!(fired(benign.clone()).is_empty(), "{benign:?}");
    }
}

#[test]
fn an_alert_says_which_rule_what_matched_and_which_policy() {
    let p = Policy::parse(DEFAULT_POLICY).unwrap();
    let a = &p.evaluate(
        &CTX,
        &exec(
            "/home/p/tor-browser/Browser/firefox.real",
            "firefox.real",
            &[],
        ),
    )[0];
    assert_eq!(a.rule, "circumvention.tor");
    assert!(a.matched.contains("path"), "{}", a.matched);
    assert!(
        a.policy_version
            .starts_with(p.version.split('#').next().unwrap())
    );
    assert_eq!(a.severity, "serious");
    assert_eq!(a.event_seq, Some(7));
}

fn usb(action: &str, classes: &[&str], keyboard: bool) -> Event {
    Event {
        seq: 9,
        observed_at_us: 1,
        hostname: "pc".into(),
        kind: Some(Kind::Usb(invigilator_proto::v1::UsbDevice {
            action: action.into(),
            vendor_id: "0781".into(),
            product_id: "5581".into(),
            product: "Ultra".into(),
            serial: "4C53".into(),
            interface_classes: classes.iter().map(|c| c.to_string()).collect(),
            keyboard,
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[test]
fn usb_rules_depend_on_the_device_group_and_the_approved_list() {
    let p = Policy::parse(DEFAULT_POLICY).unwrap();
    let on = |group: &str, e: Event| {
        let ctx = AgentContext {
            agent_id: "a",
            group,
            user_logged_on_elsewhere: vec![],
        };
        p.evaluate(&ctx, &e)
            .into_iter()
            .map(|a| a.rule)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        on("pupils-ks2", usb("attach", &["mass-storage"], false)),
        ["usb.storage_on_pupil_device"]
    );
    assert_eq!(
        on("staff", usb("attach", &["mass-storage"], false)),
        ["usb.unapproved_storage"]
    );
    assert!(on("staff", usb("detach", &["mass-storage"], false)).is_empty());
    assert_eq!(
        on("staff", usb("attach", &["hid"], true)),
        ["usb.keyboard_attached"]
    );
    assert!(
        on("staff", usb("present", &["hid"], true)).is_empty(),
        "keyboards there at start-up are not mid-session"
    );
    let approved = DEFAULT_POLICY.replace(
        "approved_storage = []",
        "approved_storage = [\"0781:5581\"]",
    );
    let p2 = Policy::parse(&approved).unwrap();
    let ctx = AgentContext {
        agent_id: "a",
        group: "staff",
        user_logged_on_elsewhere: vec![],
    };
    assert!(
        p2.evaluate(&ctx, &usb("attach", &["mass-storage"], false))
            .is_empty()
    );
    let bad = DEFAULT_POLICY.replace("approved_storage = []", "approved_storage = [\"sandisk\"]");
    assert!(
        Policy::parse(&bad)
            .unwrap_err()
            .contains("approved_storage")
    );
}

#[test]
fn session_rules_catch_a_pupil_on_a_staff_laptop_and_double_logons() {
    let p = Policy::parse(DEFAULT_POLICY).unwrap();
    let logon = |user: &str| Event {
        seq: 1,
        observed_at_us: 1,
        user: user.into(),
        kind: Some(Kind::Session(invigilator_proto::v1::SessionChange {
            action: "logon".into(),
            user: user.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let rules = |group: &str, elsewhere: Vec<String>, user: &str| {
        let ctx = AgentContext {
            agent_id: "a",
            group,
            user_logged_on_elsewhere: elsewhere,
        };
        p.evaluate(&ctx, &logon(user))
            .into_iter()
            .map(|a| a.rule)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        rules("staff-laptops", vec![], "pupil042"),
        ["session.pupil_on_staff_device"]
    );
    assert!(rules("pupils-ks2", vec![], "pupil042").is_empty());
    assert!(
        rules("pupils-ks2", vec![], "staff.jones").is_empty(),
        "teachers help at pupils' desks"
    );
    assert_eq!(
        rules("pupils-ks2", vec!["lab-1".into()], "pupil042"),
        ["session.concurrent_logon"]
    );
}

#[test]
fn errors_point_at_the_line_and_field() {
    let bad = "version = \"1\"\n\n[[process]]\nid = \"x\"\ncategory = \"c\"\nseverity = \"catastrophic\"\nsummary = \"s\"\nnames = [\"a\"]\n";
    let err = Policy::parse(bad).unwrap_err();
    assert!(
        err.contains("line 6") && err.contains("catastrophic"),
        "{err}"
    );
    let bad_regex = "version = \"1\"\n[[process]]\nid = \"x\"\ncategory = \"c\"\nseverity = \"serious\"\nsummary = \"s\"\ncmdline = [\"(\"]\n";
    let err = Policy::parse(bad_regex).unwrap_err();
    assert!(
        err.contains("rule \"x\"") && err.contains("cmdline"),
        "{err}"
    );
    let empty = "version = \"1\"\n[[process]]\nid = \"x\"\ncategory = \"c\"\nseverity = \"serious\"\nsummary = \"s\"\n";
    assert!(
        Policy::parse(empty)
            .unwrap_err()
            .contains("matches nothing")
    );
}
