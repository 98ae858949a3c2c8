//! USB events end to end: a real agent process reports USB devices to a real collector, and
//! ignores a USB uevent forged from user space.
//!
//! This machine (a VM without any USB controller: no /sys/bus/usb at all, no loadable modules)
//! cannot produce a real USB device. So the agent is pointed, through `[usb] sysfs_root`, at a
//! sysfs tree built here with the kernel's layout; everything else is real: the agent binary,
//! its kernel uevent socket, the spool, mTLS gRPC, the collector's store and `events list`.
//! The uevent side is covered live by the agent's unit tests (a real kernel uevent accepted, a
//! forged one dropped) and here by the forgery, which the real agent must drop.

use invigilator_tests::{Agent, Collector, wait_for};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

const FAST: &str =
    "[uplink]\nmax_batch = 500\nwindow = 4\nheartbeat_interval = \"1s\"\nreconnect_max = \"2s\"\n";
const XHCI: &str = "/devices/pci0000:00/0000:00:14.0";

/// Attributes as sysfs shows them (value + newline), and the /sys/bus/usb/devices link.
fn device(root: &Path, devpath: &str, attrs: &[(&str, &str)]) {
    let dir = root.join(devpath.trim_start_matches('/'));
    fs::create_dir_all(&dir).unwrap();
    for (k, v) in attrs {
        fs::write(dir.join(k), format!("{v}\n")).unwrap();
    }
    let name = devpath.rsplit('/').next().unwrap();
    let links = root.join("bus/usb/devices");
    fs::create_dir_all(&links).unwrap();
    symlink(format!("../../..{devpath}"), links.join(name)).unwrap();
}

fn interface(root: &Path, devpath: &str, name: &str, class: u8, sub: u8, proto: u8) -> String {
    let path = format!("{devpath}/{name}");
    let dir = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(&dir).unwrap();
    for (k, v) in [
        (
            "bInterfaceNumber",
            name.rsplit('.').next().unwrap().parse::<u8>().unwrap(),
        ),
        ("bInterfaceClass", class),
        ("bInterfaceSubClass", sub),
        ("bInterfaceProtocol", proto),
    ] {
        fs::write(dir.join(k), format!("{v:02x}\n")).unwrap();
    }
    path
}

/// A root hub, a SanDisk stick with its disk, and a keyboard.
fn fake_sysfs(root: &Path) {
    let hub = format!("{XHCI}/usb1");
    device(
        root,
        &hub,
        &[
            ("idVendor", "1d6b"),
            ("idProduct", "0002"),
            ("manufacturer", "Linux 6.1.0-18-amd64 xhci-hcd"),
            ("product", "xHCI Host Controller"),
            ("busnum", "1"),
            ("devnum", "1"),
            ("bNumInterfaces", " 1"),
        ],
    );
    interface(root, &hub, "1-0:1.0", 9, 0, 0);
    let stick = format!("{hub}/1-2");
    device(
        root,
        &stick,
        &[
            ("idVendor", "0781"),
            ("idProduct", "5581"),
            ("manufacturer", " SanDisk'"),
            // A hostile string: an escape sequence and a newline.
            ("product", "Ultra\x1b[2J\nFit"),
            ("serial", "4C530001230517117452"),
            ("busnum", "1"),
            ("devnum", "5"),
            ("bNumInterfaces", " 1"),
        ],
    );
    let iface = interface(root, &stick, "1-2:1.0", 8, 6, 0x50);
    fs::create_dir_all(
        root.join(iface.trim_start_matches('/'))
            .join("host0/target0:0:0/0:0:0:0/block/sdb/sdb1"),
    )
    .unwrap();
    let kb = format!("{hub}/1-4");
    device(
        root,
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
    );
    interface(root, &kb, "1-4:1.0", 3, 1, 1);
    interface(root, &kb, "1-4:1.1", 3, 0, 0);
}

fn by_devpath<'a>(events: &'a [Value], devpath: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["devpath"] == devpath).collect()
}

/// The port id of `pid`'s NETLINK_KOBJECT_UEVENT socket, from /proc/net/netlink (protocol 15)
/// and the process's open sockets.
fn uevent_port(pid: u32) -> Option<u32> {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    let table = fs::read_to_string("/proc/net/netlink").ok()?;
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.get(1) == Some(&"15") && inodes.iter().any(|i| Some(&i.as_str()) == cols.last()))
            .then(|| cols[2].parse().ok())
            .flatten()
    })
}

#[test]
fn usb_devices_reach_the_collector_and_forged_uevents_do_not() {
    let sysfs = tempfile::tempdir().unwrap();
    fake_sysfs(sysfs.path());
    let c = Collector::start("");
    let settings = format!(
        "{FAST}[usb]\nenabled = true\nsysfs_root = \"{}\"\n",
        sysfs.path().display()
    );
    let mut a = Agent::enroll(&c, &settings);
    a.start();
    a.wait_ready();

    let events = wait_for(Duration::from_secs(30), "3 usb events", || {
        let e = c.events("usb");
        (e.len() >= 3).then_some(e)
    });
    assert_eq!(events.len(), 3, "{events:#?}");
    for e in &events {
        assert_eq!(e["kind"], "usb");
        assert_eq!(e["action"], "present", "{e}");
        assert_eq!(e["agent_id"], a.agent_id.as_str());
        assert_eq!(e["user"], "", "a device has no OS user: {e}");
        assert!(!e["hostname"].as_str().unwrap().is_empty());
    }
    let hub = by_devpath(&events, &format!("{XHCI}/usb1"));
    assert_eq!(hub[0]["interface_classes"], serde_json::json!(["hub"]));
    let stick = by_devpath(&events, &format!("{XHCI}/usb1/1-2"))[0];
    assert_eq!(stick["vendor_id"], "0781");
    assert_eq!(stick["product_id"], "5581");
    assert_eq!(stick["manufacturer"], " SanDisk'");
    assert_eq!(
        stick["product"], "Ultra[2JFit",
        "control characters stripped"
    );
    assert_eq!(stick["serial"], "4C530001230517117452");
    assert_eq!(
        stick["interface_classes"],
        serde_json::json!(["mass-storage"])
    );
    assert_eq!(stick["block_devices"], serde_json::json!(["sdb"]));
    assert_eq!(
        (stick["busnum"].as_u64(), stick["devnum"].as_u64()),
        (Some(1), Some(5))
    );
    assert_eq!(stick["keyboard"], false);
    let kb = by_devpath(&events, &format!("{XHCI}/usb1/1-4"))[0];
    assert_eq!(kb["keyboard"], true);
    assert_eq!(kb["interface_classes"], serde_json::json!(["hid"]));

    // A phone appears in sysfs, and a user-space process announces it in the kernel's format,
    // unicast to the agent's uevent socket. Had the agent believed it, it would report the phone
    // (complete in sysfs) at once; it must drop it and say so.
    let phone = format!("{XHCI}/usb1/1-3");
    device(
        sysfs.path(),
        &phone,
        &[
            ("idVendor", "04e8"),
            ("idProduct", "6860"),
            ("busnum", "1"),
            ("devnum", "7"),
            ("bNumInterfaces", " 1"),
        ],
    );
    interface(sysfs.path(), &phone, "1-3:1.0", 6, 1, 1);
    let port = uevent_port(a.pid().unwrap()).expect("the agent's uevent socket");
    let datagram = format!(
        "add@{phone}\0ACTION=add\0DEVPATH={phone}\0SUBSYSTEM=usb\0DEVTYPE=usb_device\0\
         PRODUCT=4e8/6860/400\0TYPE=0/0/0\0BUSNUM=001\0DEVNUM=007\0SEQNUM=99999\0"
    );
    {
        use nix::sys::socket::{
            AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, sendto, socket,
        };
        let forger = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::empty(),
            SockProtocol::NetlinkKObjectUEvent,
        )
        .unwrap();
        let sent = sendto(
            std::os::fd::AsRawFd::as_raw_fd(&forger),
            datagram.as_bytes(),
            &NetlinkAddr::new(port, 0),
            MsgFlags::empty(),
        )
        .unwrap();
        assert_eq!(sent, datagram.len());
    }
    // Longer than the attach settle time (3 s) plus delivery.
    std::thread::sleep(Duration::from_secs(5));
    let after = c.events("usb");
    assert_eq!(after.len(), 3, "forged device reported: {after:#?}");
    assert!(by_devpath(&after, &phone).is_empty());
    // It did reach the agent, which dropped it for what it is.
    wait_for(
        Duration::from_secs(10),
        "the agent to drop the forgery",
        || {
            a.log()
                .contains("uevent from user space, not the kernel: ignored")
                .then_some(())
        },
    );
}
