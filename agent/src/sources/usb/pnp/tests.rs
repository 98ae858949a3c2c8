use super::*;

fn node(id: &str, parent: Option<&str>, compatible: &[&str], mfg: &str, desc: &str) -> DevNode {
    DevNode {
        instance_id: id.into(),
        parent_id: parent.map(String::from),
        compatible_ids: compatible.iter().map(|s| s.to_string()).collect(),
        manufacturer: mfg.into(),
        description: desc.into(),
        friendly_name: String::new(),
        volumes: Vec::new(),
    }
}

const HUB: &str = r"USB\ROOT_HUB30\4&1B2C3D4E&0&0";
const STICK: &str = r"USB\VID_0781&PID_5567\4C530001231120115142";
const DISK: &str = r"USBSTOR\Disk&Ven_SanDisk&Prod_Cruzer_Blade&Rev_1.00\4C530001231120115142&0";
const DUCKY: &str = r"USB\VID_03EB&PID_2403\6&1A2B3C4D&0&2";

/// A root hub, a USB stick whose disk has appeared, and a composite "rubber ducky" (keyboard +
/// mass storage) whose manufacturer string tries to look like something else.
fn scene(with_disk: bool) -> Vec<DevNode> {
    let mut nodes = vec![
        node(
            HUB,
            None,
            &[r"USB\ROOT_HUB30"],
            "(Standard USB HUBs)",
            "USB Root Hub (USB 3.0)",
        ),
        node(
            STICK,
            Some(HUB),
            &[
                r"USB\Class_08&SubClass_06&Prot_50",
                r"USB\Class_08&SubClass_06",
                r"USB\Class_08",
            ],
            "(Standard USB Host Controller)",
            "USB Mass Storage Device",
        ),
        node(
            DUCKY,
            Some(HUB),
            &[r"USB\DevClass_00&SubClass_00&Prot_00", r"USB\COMPOSITE"],
            "Micro\u{202E}soft\r\n",
            "Keyboard",
        ),
        node(
            r"USB\VID_03EB&PID_2403&MI_00\7&2A5B1C&0&0000",
            Some(DUCKY),
            &[
                r"USB\Class_03&SubClass_01&Prot_01",
                r"USB\Class_03&SubClass_01",
                r"USB\Class_03",
            ],
            "(Standard system devices)",
            "USB Input Device",
        ),
        node(
            r"USB\VID_03EB&PID_2403&MI_01\7&2A5B1C&0&0001",
            Some(DUCKY),
            &[r"USB\Class_08&SubClass_06&Prot_50"],
            "(Standard USB Host Controller)",
            "USB Mass Storage Device",
        ),
    ];
    if with_disk {
        let mut disk = node(
            DISK,
            Some(STICK),
            &[r"USBSTOR\Disk", r"GenDisk"],
            "(Standard disk drives)",
            "Disk drive",
        );
        disk.friendly_name = "SanDisk Cruzer Blade USB Device".into();
        nodes.push(disk);
    }
    nodes
}

fn usb(e: &Event) -> &UsbDevice {
    match e.kind.as_ref() {
        Some(event::Kind::Usb(u)) => u,
        other => panic!("not a usb event: {other:?}"),
    }
}

fn actions(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (usb(e).action.clone(), usb(e).devpath.clone()))
        .collect()
}

#[test]
fn devices_fold_interfaces_and_disks_into_their_device() {
    let found = devices(&scene(true));
    assert_eq!(found.keys().collect::<Vec<_>>(), vec![DUCKY, STICK]); // no hub, no interfaces
    let stick = &found[STICK];
    assert_eq!(
        (stick.vendor_id.as_str(), stick.product_id.as_str()),
        ("0781", "5567")
    );
    assert_eq!(stick.serial, "4C530001231120115142");
    assert_eq!(stick.interface_classes, ["mass-storage"]);
    assert_eq!(stick.block_devices, ["SanDisk Cruzer Blade USB Device"]);
    assert!(!stick.keyboard);

    let ducky = &found[DUCKY];
    assert_eq!(ducky.interface_classes, ["hid", "mass-storage"]);
    assert!(ducky.keyboard, "a HID keyboard interface marks the device");
    assert_eq!(
        ducky.serial, "",
        "Windows made its instance id up: no serial"
    );
    assert_eq!(
        ducky.manufacturer, "Microsoft",
        "controls and bidi overrides removed"
    );
}

#[test]
fn present_then_attach_after_one_scan_then_detach() {
    let mut t = Tracker::new("ICT-07");
    let start: Vec<DevNode> = scene(false)
        .into_iter()
        .filter(|n| !n.instance_id.contains("0781"))
        .collect();
    let events = t.present(devices(&start));
    assert_eq!(actions(&events), [("present".into(), DUCKY.into())]);
    assert_eq!(events[0].hostname, "ICT-07");

    // The stick appears without its disk: nothing yet.
    assert!(t.update(devices(&scene(false))).is_empty());
    // Next scan: its disk is there, and the attach carries it.
    let events = t.update(devices(&scene(true)));
    assert_eq!(actions(&events), [("attach".into(), STICK.into())]);
    assert_eq!(
        usb(&events[0]).block_devices,
        ["SanDisk Cruzer Blade USB Device"]
    );
    // Nothing changes: nothing reported.
    assert!(t.update(devices(&scene(true))).is_empty());
    // Both removed: two detaches, the stick's still naming its disk.
    let events = t.update(BTreeMap::new());
    let mut got = actions(&events);
    got.sort();
    assert_eq!(
        got,
        [
            ("detach".into(), DUCKY.into()),
            ("detach".into(), STICK.into())
        ]
    );
    let stick = events.iter().map(usb).find(|u| u.devpath == STICK).unwrap();
    assert_eq!(stick.block_devices, ["SanDisk Cruzer Blade USB Device"]);
}

#[test]
fn a_device_in_and_out_between_scans_is_still_reported() {
    let mut t = Tracker::new("h");
    t.present(BTreeMap::new());
    assert!(t.update(devices(&scene(false))).is_empty());
    let events = t.update(BTreeMap::new());
    let got = actions(&events);
    assert_eq!(got.len(), 4);
    for dev in [STICK, DUCKY] {
        let mine: Vec<&str> = got
            .iter()
            .filter(|(_, d)| d == dev)
            .map(|(a, _)| a.as_str())
            .collect();
        assert_eq!(mine, ["attach", "detach"], "{dev}");
    }
}

#[test]
fn nodes_without_a_device_are_ignored() {
    // An interface or a disk whose device is not listed (removed mid-reading) adds nothing.
    let orphans = vec![
        node(
            r"USB\VID_03EB&PID_2403&MI_00\7&X&0&0000",
            Some(DUCKY),
            &[r"USB\Class_03&SubClass_01&Prot_01"],
            "",
            "",
        ),
        node(DISK, Some(STICK), &[], "", ""),
        node(
            r"USB\VID_1234&PID_5678\SERIAL",
            None,
            &["garbage", r"USB\Class_zz"],
            "",
            "",
        ),
    ];
    let found = devices(&orphans);
    assert_eq!(found.len(), 1);
    let d = &found[r"USB\VID_1234&PID_5678\SERIAL"];
    assert!(d.interface_classes.is_empty() && d.block_devices.is_empty());
}

#[test]
fn a_mounted_usb_disk_is_named_by_its_drive_letters() {
    let mut nodes = scene(true);
    let disk = nodes.iter_mut().find(|n| n.instance_id == DISK).unwrap();
    disk.volumes = vec!["E:".into(), "F:".into()];
    let found = devices(&nodes);
    assert_eq!(found[STICK].block_devices, ["E:", "F:"]);
}
