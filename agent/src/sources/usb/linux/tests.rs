use std::sync::atomic::Ordering;
use std::sync::mpsc;

use invigilator_proto::v1::event::Kind;
use netlink_sys::protocols::NETLINK_KOBJECT_UEVENT;
use netlink_sys::{Socket, SocketAddr};

use super::*;
use crate::platform::linux::sysfs_usb::tests::{FakeSysfs, XHCI};

/// The uevents of a fixture file, as the exact bytes the kernel sends (see its README).
fn fixture(text: &str) -> Vec<Vec<u8>> {
    text.split("\n\n")
        .map(|block| {
            let mut datagram = Vec::new();
            for line in block.trim().lines() {
                datagram.extend(line.as_bytes());
                datagram.push(0);
            }
            datagram
        })
        .collect()
}

const STICK: &str = include_str!("../../../../tests/fixtures/uevent/sandisk-stick.uevents");
const PHONE: &str = include_str!("../../../../tests/fixtures/uevent/samsung-phone-mtp.uevents");
const KEYBOARD: &str = include_str!("../../../../tests/fixtures/uevent/logitech-keyboard.uevents");

fn parsed(text: &str) -> Vec<Uevent> {
    fixture(text)
        .iter()
        .map(|d| uevent::parse(d).unwrap_or_else(|e| panic!("{e}: {d:?}")))
        .collect()
}

fn usb(event: &Event) -> &UsbDevice {
    match &event.kind {
        Some(Kind::Usb(u)) => u,
        other => panic!("not a usb event: {other:?}"),
    }
}

fn tracker(fake: &FakeSysfs) -> Tracker {
    Tracker::new(UsbSourceConfig {
        hostname: "pc-07".into(),
        sysfs_root: fake.root().to_owned(),
    })
}

#[test]
fn fixtures_parse_in_the_kernel_format() {
    let stick = parsed(STICK);
    assert_eq!(stick.len(), 24);
    assert_eq!(
        stick[0].vars[..3],
        [
            ("ACTION".to_owned(), "add".to_owned()),
            ("DEVPATH".to_owned(), format!("{XHCI}/usb1/1-2")),
            ("SUBSYSTEM".to_owned(), "usb".to_owned()),
        ]
    );
    let disk = &stick[11];
    assert_eq!(
        (disk.subsystem(), disk.devtype(), disk.get("DEVNAME")),
        (Some("block"), Some("disk"), Some("sdb"))
    );
    // Sequence numbers only grow.
    for seq in [stick, parsed(PHONE), parsed(KEYBOARD)] {
        let nums: Vec<u64> = seq.iter().map(|e| e.seqnum().unwrap()).collect();
        assert!(nums.windows(2).all(|w| w[0] < w[1]), "{nums:?}");
    }
    // An empty value (HID_UNIQ=) is a value, not an error.
    assert_eq!(parsed(KEYBOARD)[2].get("HID_UNIQ"), Some(""));
}

/// Replays a fixture into a tracker, changing the fake sysfs as the kernel would have
/// before each uevent (`before(i, uevent)`); returns the events with the index of the uevent
/// that produced each.
fn replay(
    t: &mut Tracker,
    text: &str,
    start: Instant,
    mut before: impl FnMut(usize, &Uevent),
) -> Vec<(usize, Event)> {
    let mut out = Vec::new();
    for (i, ev) in parsed(text).iter().enumerate() {
        before(i, ev);
        // 50 ms between uevents: well within the settle time.
        let now = start + Duration::from_millis(50 * i as u64);
        out.extend(t.handle(ev, now).into_iter().map(|e| (i, e)));
        out.extend(t.tick(now).into_iter().map(|e| (i, e)));
    }
    out
}

#[test]
fn a_usb_stick_is_one_attach_with_its_disk_then_one_detach() {
    let fake = FakeSysfs::new();
    fake.root_hub(1);
    let mut t = tracker(&fake);
    let present = t.present();
    assert_eq!(present.len(), 1, "only the root hub");
    let stick = format!("{XHCI}/usb1/1-2");
    let start = Instant::now();
    let events = replay(&mut t, STICK, start, |i, ev| match (i, ev.action.clone()) {
        // sysfs at each step as the kernel builds it: the device (configuration not yet
        // chosen), then the interface, then the disk.
        (0, _) => fake.device(
            &stick,
            &[
                ("idVendor", "0781"),
                ("idProduct", "5581"),
                ("manufacturer", " SanDisk'"),
                ("product", " SanDisk 3.2Gen1"),
                ("serial", "4C530001230517117452"),
                ("busnum", "1"),
                ("devnum", "5"),
                ("bDeviceClass", "00"),
            ],
        ),
        (1, _) => {
            fake.attrs(&stick, &[("bNumInterfaces", " 1")]);
            fake.interface(&stick, 0, (8, 6, 0x50));
        }
        (11, _) => {
            fake.disk(&format!("{stick}/1-2:1.0"), 0, "sdb", &["sdb1"]);
        }
        (_, Action::Remove) if ev.devpath == stick => fake.remove(&stick),
        _ => {}
    });
    let summary: Vec<(usize, &str)> = events
        .iter()
        .map(|(i, e)| (*i, usb(e).action.as_str()))
        .collect();
    // Attach exactly when the disk appeared (uevent 11), detach at the device's removal.
    assert_eq!(summary, [(11, "attach"), (23, "detach")]);
    let attach = &events[0].1;
    assert_eq!(attach.hostname, "pc-07");
    assert_eq!(attach.user, "");
    assert!(attach.observed_at_us > 1_600_000_000_000_000);
    let expected = UsbDevice {
        action: "attach".into(),
        vendor_id: "0781".into(),
        product_id: "5581".into(),
        manufacturer: " SanDisk'".into(),
        product: " SanDisk 3.2Gen1".into(),
        serial: "4C530001230517117452".into(),
        interface_classes: vec!["mass-storage".into()],
        keyboard: false,
        block_devices: vec!["sdb".into()],
        devpath: stick.clone(),
        busnum: 1,
        devnum: 5,
    };
    assert_eq!(usb(attach), &expected);
    // sysfs was gone at removal: the detach is filled from what the attach saw.
    assert_eq!(
        usb(&events[1].1),
        &UsbDevice {
            action: "detach".into(),
            ..expected
        }
    );
    assert!(!t.known.contains_key(&stick) && t.pending.is_empty());
}

#[test]
fn a_stick_whose_disk_never_comes_is_reported_after_the_settle_time() {
    let fake = FakeSysfs::new();
    let mut t = tracker(&fake);
    let stick = fake.sandisk();
    // usb-storage is blacklisted: no disk will ever appear.
    fake.remove(&format!("{stick}/1-2:1.0/host0"));
    let start = Instant::now();
    let add = parsed(STICK).remove(0);
    assert!(t.handle(&add, start).is_empty());
    assert_eq!(
        t.next_deadline(),
        Some(start + ATTACH_SETTLE),
        "held back, for a bounded time"
    );
    assert!(
        t.tick(start + ATTACH_SETTLE - Duration::from_millis(1))
            .is_empty()
    );
    let events = t.tick(start + ATTACH_SETTLE);
    assert_eq!(events.len(), 1);
    let u = usb(&events[0]);
    assert_eq!(
        (
            u.action.as_str(),
            u.vendor_id.as_str(),
            &u.interface_classes[..]
        ),
        ("attach", "0781", &["mass-storage".to_owned()][..])
    );
    assert!(u.block_devices.is_empty());
    assert_eq!(t.next_deadline(), None);
}

#[test]
fn a_device_pulled_out_before_it_settled_is_attached_then_detached() {
    let fake = FakeSysfs::new();
    let mut t = tracker(&fake);
    let start = Instant::now();
    let uevents = parsed(STICK);
    // Pulled out so fast that sysfs was never readable: only the uevents speak.
    assert!(t.handle(&uevents[0], start).is_empty());
    assert!(t.handle(&uevents[1], start).is_empty());
    let events = t.handle(uevents.last().unwrap(), start + Duration::from_millis(100));
    let actions: Vec<_> = events.iter().map(|e| usb(e).action.clone()).collect();
    assert_eq!(actions, ["attach", "detach"]);
    for e in &events {
        let u = usb(e);
        assert_eq!(
            (u.vendor_id.as_str(), u.product_id.as_str()),
            ("0781", "5581")
        );
        assert_eq!((u.busnum, u.devnum), (1, 5));
        assert_eq!(
            u.interface_classes,
            ["mass-storage"],
            "from INTERFACE=8/6/80"
        );
    }
}

#[test]
fn a_phone_in_mtp_mode_with_usb_debugging() {
    let fake = FakeSysfs::new();
    let mut t = tracker(&fake);
    let phone = format!("{XHCI}/usb1/1-3");
    let events = replay(&mut t, PHONE, Instant::now(), |i, ev| match i {
        0 => fake.device(
            &phone,
            &[
                ("idVendor", "04e8"),
                ("idProduct", "6860"),
                ("manufacturer", "SAMSUNG"),
                ("product", "SAMSUNG_Android"),
                ("serial", "R58M3299ZXK"),
                ("busnum", "1"),
                ("devnum", "7"),
                ("bDeviceClass", "00"),
                ("bNumInterfaces", " 2"),
            ],
        ),
        1 => {
            fake.interface(&phone, 0, (6, 1, 1));
        }
        2 => {
            fake.interface(&phone, 1, (0xff, 0x42, 1));
        }
        _ if ev.action == Action::Remove && ev.devpath == phone => fake.remove(&phone),
        _ => {}
    });
    let summary: Vec<(usize, &str)> = events
        .iter()
        .map(|(i, e)| (*i, usb(e).action.as_str()))
        .collect();
    // Complete once both interfaces exist: no disk to wait for.
    assert_eq!(summary, [(2, "attach"), (7, "detach")]);
    let u = usb(&events[0].1);
    assert_eq!(u.interface_classes, ["still-image", "vendor-specific"]);
    assert_eq!(
        (u.manufacturer.as_str(), u.serial.as_str()),
        ("SAMSUNG", "R58M3299ZXK")
    );
    assert!(!u.keyboard && u.block_devices.is_empty());
    assert_eq!(usb(&events[1].1).serial, "R58M3299ZXK");
}

#[test]
fn a_keyboard_is_flagged() {
    let fake = FakeSysfs::new();
    let mut t = tracker(&fake);
    let kb = format!("{XHCI}/usb1/1-4");
    let events = replay(&mut t, KEYBOARD, Instant::now(), |i, ev| match i {
        0 => fake.device(
            &kb,
            &[
                ("idVendor", "046d"),
                ("idProduct", "c31c"),
                ("manufacturer", "Logitech"),
                ("product", "USB Keyboard"),
                ("busnum", "1"),
                ("devnum", "8"),
                ("bNumInterfaces", " 2"),
            ],
        ),
        1 => {
            fake.interface(&kb, 0, (3, 1, 1));
        }
        7 => {
            fake.interface(&kb, 1, (3, 0, 0));
        }
        _ if ev.action == Action::Remove && ev.devpath == kb => fake.remove(&kb),
        _ => {}
    });
    let summary: Vec<(usize, &str)> = events
        .iter()
        .map(|(i, e)| (*i, usb(e).action.as_str()))
        .collect();
    assert_eq!(summary, [(7, "attach"), (12, "detach")]);
    for (_, e) in &events {
        let u = usb(e);
        assert!(u.keyboard, "{u:?}");
        assert_eq!(u.interface_classes, ["hid"]);
        // No serial number: empty, not invented.
        assert_eq!(u.serial, "");
        assert_eq!((u.vendor_id.as_str(), u.devnum), ("046d", 8));
    }
}

#[test]
fn present_devices_are_enumerated_and_not_reported_twice() {
    let fake = FakeSysfs::new();
    fake.root_hub(1);
    let stick = fake.sandisk();
    let mut t = tracker(&fake);
    let present = t.present();
    let got: Vec<(&str, &str, &[String], &[String])> = present
        .iter()
        .map(usb)
        .map(|u| {
            (
                u.action.as_str(),
                u.vendor_id.as_str(),
                &u.interface_classes[..],
                &u.block_devices[..],
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("present", "1d6b", &["hub".to_owned()][..], &[][..]),
            (
                "present",
                "0781",
                &["mass-storage".to_owned()][..],
                &["sdb".to_owned()][..]
            ),
        ]
    );
    // The stick's add was queued on the socket during the enumeration: same device number,
    // so nothing new. A different number is a new device (remove lost): detach + attach.
    let now = Instant::now();
    let add = parsed(STICK).remove(0);
    assert!(t.handle(&add, now).is_empty());
    let mut again = add.clone();
    for (k, v) in &mut again.vars {
        if k == "DEVNUM" {
            *v = "009".into();
        }
    }
    fake.attrs(&stick, &[("devnum", "9")]);
    let events = t.handle(&again, now);
    let summary: Vec<_> = events
        .iter()
        .map(|e| (usb(e).action.clone(), usb(e).devnum))
        .collect();
    assert_eq!(summary, [("detach".into(), 5), ("attach".into(), 9)]);
}

#[test]
fn a_disk_belongs_to_the_stick_not_to_the_hub_it_is_plugged_into() {
    let fake = FakeSysfs::new();
    let mut t = tracker(&fake);
    let now = Instant::now();
    let hub = format!("{XHCI}/usb1/1-2");
    let stick = format!("{hub}/1-2.1");
    let add = |devpath: &str, devnum: &str| {
        uevent::parse(&crate::platform::linux::uevent::tests::kernel_datagram(
            "add",
            devpath,
            &[
                ("SUBSYSTEM", "usb"),
                ("DEVTYPE", "usb_device"),
                ("BUSNUM", "001"),
                ("DEVNUM", devnum),
            ],
        ))
        .unwrap()
    };
    // Both still waiting: the hub's configuration is not set yet either.
    assert!(t.handle(&add(&hub, "004"), now).is_empty());
    assert!(t.handle(&add(&stick, "005"), now).is_empty());
    let disk = format!("{stick}/1-2.1:1.0/host3/target3:0:0/3:0:0:0/block/sdc");
    let disk_add = uevent::parse(&crate::platform::linux::uevent::tests::kernel_datagram(
        "add",
        &disk,
        &[
            ("SUBSYSTEM", "block"),
            ("DEVTYPE", "disk"),
            ("DEVNAME", "sdc"),
        ],
    ))
    .unwrap();
    assert!(t.handle(&disk_add, now).is_empty());
    let mut events = t.tick(now + ATTACH_SETTLE);
    events.sort_by_key(|e| usb(e).devpath.len());
    let disks: Vec<_> = events
        .iter()
        .map(|e| (usb(e).devpath.clone(), usb(e).block_devices.clone()))
        .collect();
    assert_eq!(disks, [(hub, vec![]), (stick, vec!["sdc".to_owned()])]);
}

#[test]
fn resync_after_an_overrun_reports_the_difference_and_a_gap() {
    let fake = FakeSysfs::new();
    let stick = fake.sandisk();
    let mut t = tracker(&fake);
    assert_eq!(t.present().len(), 1);
    fake.remove(&stick);
    fake.root_hub(2);
    let events = t.resync("uevent receive buffer overrun");
    assert!(matches!(&events[0].kind, Some(Kind::Gap(g)) if g.source == "usb"));
    let rest: Vec<_> = events[1..]
        .iter()
        .map(|e| (usb(e).action.clone(), usb(e).vendor_id.clone()))
        .collect();
    assert_eq!(
        rest,
        [
            ("detach".into(), "0781".into()),
            ("attach".into(), "1d6b".into())
        ]
    );
}

/// Writes a synthetic uevent request to a real device's `uevent` file; the kernel then
/// multicasts `ACTION@DEVPATH` with `SYNTH_UUID=<uuid>`, which identifies it exactly.
fn trigger_kernel_uevent(uuid: &str) -> String {
    let file = "/sys/class/mem/null/uevent";
    std::fs::write(file, format!("change {uuid}"))
        .unwrap_or_else(|e| panic!("writing {file} (needs root): {e}"));
    "/devices/virtual/mem/null".to_owned()
}

fn uuid() -> String {
    let r: u128 = rand::random();
    let h = format!("{r:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// A forged kernel-format "add" of a USB device, unicast from our own netlink socket to
/// `port`.
fn forge(port: u32, devpath: &str) -> Socket {
    let mut sender = Socket::new(NETLINK_KOBJECT_UEVENT).unwrap();
    sender.bind_auto().unwrap();
    let datagram = crate::platform::linux::uevent::tests::kernel_datagram(
        "add",
        devpath,
        &[
            ("SUBSYSTEM", "usb"),
            ("DEVTYPE", "usb_device"),
            ("PRODUCT", "781/5581/100"),
            ("BUSNUM", "001"),
            ("DEVNUM", "005"),
            ("SEQNUM", "1"),
        ],
    );
    let sent = sender
        .send_to(&datagram, &SocketAddr::new(port, 0), 0)
        .expect("unicast to the uevent socket");
    assert_eq!(sent, datagram.len());
    sender
}

#[test]
fn live_kernel_uevents_are_accepted_and_forged_ones_dropped() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test writes to /sys/class/mem/null/uevent: run it as root"
    );
    // A fake sysfs in which the forged device really exists: were the datagram accepted,
    // the source would report a SanDisk stick (checked below, without the socket).
    let fake = FakeSysfs::new();
    let hub = fake.root_hub(1);
    let stick = format!("{XHCI}/usb1/1-2");
    let socket = UeventSocket::open().unwrap();
    let port = socket.port_id();
    let foreign = socket.foreign_dropped();
    let (tx, mut rx) = crate::sources::channel(1024);
    let (tap_tx, tap) = mpsc::channel();
    let runner = Runner::new(tracker(&fake), Some(socket), Some(tap_tx));
    thread::spawn(move || runner.run(&tx));

    // Once the enumeration is over (it finds the root hub), the stick appears in sysfs.
    let first = loop {
        if let Ok(o) = rx.try_recv() {
            break o.event.unwrap();
        }
        thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(
        (usb(&first).action.as_str(), usb(&first).devpath.as_str()),
        ("present", hub.as_str())
    );
    fake.sandisk();
    let _sender = forge(port, &stick);
    // Sent after the forgery: by the time the kernel's uevent is accepted, the forged
    // datagram ahead of it in the queue has been read and judged.
    let id = uuid();
    let devpath = trigger_kernel_uevent(&id);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    let kernel = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tap.recv_timeout(left).unwrap_or_else(|_| {
            panic!("the kernel's uevent for {devpath} never arrived; saw {seen:?}")
        });
        if ev.get("SYNTH_UUID") == Some(id.as_str()) {
            break ev;
        }
        seen.push(format!("{}@{}", ev.action, ev.devpath));
    };
    println!(
        "kernel uevent accepted: {}@{} {:?}",
        kernel.action, kernel.devpath, kernel.vars
    );
    assert_eq!(kernel.action, Action::Change);
    assert_eq!(kernel.devpath, devpath);
    assert_eq!(kernel.subsystem(), Some("mem"));
    assert!(
        seen.iter().all(|s| !s.contains("/usb1/1-2")),
        "forged uevent reached the source: {seen:?}"
    );
    assert_eq!(
        foreign.load(Ordering::Relaxed),
        1,
        "the forgery was not dropped"
    );
    // No attach for the forgery. (Had it been accepted, the stick being complete in sysfs,
    // the attach would have been sent before the kernel's uevent was even read: see the
    // control below.)
    thread::sleep(Duration::from_millis(200));
    let mut events = Vec::new();
    while let Ok(o) = rx.try_recv() {
        events.extend(o.event);
    }
    assert!(events.is_empty(), "{events:?}");

    // Control: the very same datagram, if it were accepted, would be reported.
    let forged = uevent::parse(&crate::platform::linux::uevent::tests::kernel_datagram(
        "add",
        &stick,
        &[
            ("SUBSYSTEM", "usb"),
            ("DEVTYPE", "usb_device"),
            ("PRODUCT", "781/5581/100"),
        ],
    ))
    .unwrap();
    let out = tracker(&fake).handle(&forged, Instant::now());
    assert_eq!(out.len(), 1);
    assert_eq!(usb(&out[0]).action, "attach");
    assert_eq!(usb(&out[0]).block_devices, ["sdb"]);
}

#[test]
fn spawn_reports_what_this_machine_has() {
    // Whatever /sys holds here (this VM: no USB controller at all), the source starts and
    // its present events agree with /sys/bus/usb/devices.
    let expected = Sysfs::default().list_devices().unwrap();
    let (tx, mut rx) = crate::sources::channel(1024);
    spawn(
        UsbSourceConfig {
            hostname: "h".into(),
            ..UsbSourceConfig::default()
        },
        tx,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < expected.len() && Instant::now() < deadline {
        match rx.try_recv() {
            Ok(o) => got.extend(o.event.map(|e| usb(&e).devpath.clone())),
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
    println!("/sys/bus/usb/devices: {expected:?}");
    assert_eq!(got, expected);
}
