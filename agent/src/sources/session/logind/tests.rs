use super::*;
use zbus::zvariant::{ObjectPath, Value};

fn props(pairs: Vec<(&str, Value<'static>)>) -> HashMap<String, OwnedValue> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), OwnedValue::try_from(v).unwrap()))
        .collect()
}

fn path(p: &str) -> OwnedObjectPath {
    OwnedObjectPath::try_from(p).unwrap()
}

fn desk() -> HashMap<String, OwnedValue> {
    props(vec![
        ("Id", Value::from("3")),
        ("Name", Value::from("jsmith")),
        (
            "User",
            Value::from((
                1001u32,
                ObjectPath::try_from("/org/freedesktop/login1/user/_31001").unwrap(),
            )),
        ),
        (
            "Seat",
            Value::from((
                "seat0",
                ObjectPath::try_from("/org/freedesktop/login1/seat/seat0").unwrap(),
            )),
        ),
        ("TTY", Value::from("tty2")),
        ("Display", Value::from(":0")),
        ("Remote", Value::from(false)),
        ("RemoteHost", Value::from("")),
        ("Type", Value::from("x11")),
        ("Class", Value::from("user")),
        ("LockedHint", Value::from(false)),
        ("IdleHint", Value::from(true)),
        ("IdleSinceHint", Value::from(1_700_000_000_000_000u64)),
    ])
}

#[test]
fn properties_with_logind_signatures_fill_every_field() {
    let info = SessionInfo::from_properties("x", &desk());
    assert_eq!(
        info,
        SessionInfo {
            id: "3".into(),
            user: "jsmith".into(),
            uid: Some(1001),
            seat: "seat0".into(),
            tty: "tty2".into(),
            display: ":0".into(),
            remote: false,
            remote_host: String::new(),
            session_type: "x11".into(),
            session_class: "user".into(),
            locked: false,
            idle: true,
            idle_since_us: 1_700_000_000_000_000,
        }
    );
    let Some(event::Kind::Session(s)) = info.event("pc1", "present").kind else {
        panic!("not a session event");
    };
    assert_eq!((s.idle, s.idle_since_us), (true, 1_700_000_000_000_000));
    // Missing properties (a sparse or older logind) leave fields empty, keep the session.
    let sparse = SessionInfo::from_properties("c7", &HashMap::new());
    assert_eq!((sparse.id.as_str(), sparse.uid), ("c7", None));
}

#[test]
fn changes_become_actions_once_and_in_order() {
    let mut info = SessionInfo::from_properties("3", &desk());
    assert!(
        info.apply(&props(vec![("IdleHint", Value::from(true))]))
            .is_empty()
    );
    assert_eq!(
        info.apply(&props(vec![
            ("IdleHint", Value::from(false)),
            ("IdleSinceHint", Value::from(5u64)),
            ("LockedHint", Value::from(true)),
        ])),
        ["lock", "active"]
    );
    // The Lock signal and then LockedHint: one "lock".
    assert_eq!(info.set_locked(true), None);
    assert_eq!(info.set_locked(false), Some("unlock"));
}

#[test]
fn reconcile_reports_gone_new_and_changed_sessions() {
    let mut known = HashMap::new();
    let mut a = SessionInfo::from_properties("a", &desk());
    a.id = "a".into();
    let mut b = a.clone();
    b.id = "b".into();
    known.insert(path("/s/a"), a.clone());
    known.insert(path("/s/b"), b);
    let mut a2 = a.clone();
    a2.locked = true;
    let mut c = a.clone();
    c.id = "c".into();
    let out = reconcile(&mut known, vec![(path("/s/a"), a2), (path("/s/c"), c)]);
    let actions: Vec<_> = out.iter().map(|(i, a)| (i.id.as_str(), *a)).collect();
    assert_eq!(actions, [("b", "logoff"), ("a", "lock"), ("c", "present")]);
    assert_eq!(known.len(), 2);
}
