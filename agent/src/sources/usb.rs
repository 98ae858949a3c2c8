//! The USB source: one event per USB device attached, detached, or already present at start.
//!
//! On Linux it listens to the kernel's uevents (`NETLINK_KOBJECT_UEVENT`, only datagrams the
//! kernel itself sent) and reads the device's details from sysfs.
//!
//! One event per *device*, not per interface: the kernel announces the device
//! (`SUBSYSTEM=usb DEVTYPE=usb_device`) before its configuration is chosen, then each
//! interface, and, for mass storage, the disk only after usb-storage has scanned it (about a
//! second later, `delay_use`). So the attach event is held back until the device is complete:
//! every interface of the active configuration is in sysfs and, if one is mass storage, a disk
//! has appeared under it. It is never held longer than [`ATTACH_SETTLE`] after the device
//! appeared, nor past its removal: an attach is always reported, before its detach, with
//! whatever was known by then. A disk that appears later still is remembered for the detach
//! event but produces no event of its own.
//!
//! On removal sysfs is already gone: the detach event carries what was seen at attach,
//! completed from the remove uevent's own `PRODUCT`, `BUSNUM` and `DEVNUM`.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use invigilator_proto::v1::{Event, Gap, UsbDevice, event};

use super::{EventTx, now_us};
use crate::platform::linux::sysfs_usb::{
    self, CLASS_MASS_STORAGE, Interface, Sysfs, UsbDeviceInfo,
};
use crate::platform::linux::uevent::{self, Action, Uevent, UeventSocket};

/// Longest an attach event waits for the device's interfaces and disk.
pub const ATTACH_SETTLE: Duration = Duration::from_secs(3);
/// Longest the source sleeps without checking whether the agent is shutting down.
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// Kernel uevents are under 8 KiB (UEVENT_BUFFER_SIZE is 2 KiB of variables plus the header).
const DATAGRAM_BUF: usize = 16 * 1024;
const MAX_RECV_FAILURES: u32 = 5;
const RECV_RETRY: Duration = Duration::from_millis(100);
const REOPEN_MAX_DELAY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct UsbSourceConfig {
    /// Put on every event.
    pub hostname: String,
    /// Where sysfs is mounted: "/sys". Tests point it at a fake tree.
    pub sysfs_root: PathBuf,
}

impl Default for UsbSourceConfig {
    fn default() -> Self {
        Self {
            hostname: String::new(),
            sysfs_root: PathBuf::from("/sys"),
        }
    }
}

/// Enumerates devices already present (action "present"), then reports attach/detach from kernel
/// uevents, on its own std thread ("usb-source"). Returns an error only if nothing can run.
///
/// The uevent socket is opened before the enumeration, so a device plugged in meanwhile is not
/// missed. If the socket cannot be opened the present devices are still reported, with a
/// warning that attach and detach will not be. The thread ends when the receiver of `tx` is
/// dropped.
pub fn spawn(cfg: UsbSourceConfig, tx: EventTx) -> io::Result<()> {
    let socket = match UeventSocket::open() {
        Ok(socket) => {
            tracing::info!(
                receive_buffer = socket.receive_buffer(),
                "usb source: listening to kernel uevents"
            );
            Some(socket)
        }
        Err(err) => {
            tracing::warn!(
                "usb source: {err}. Devices present now are reported, attach and detach are not"
            );
            None
        }
    };
    let runner = Runner::new(Tracker::new(cfg), socket, None);
    thread::Builder::new()
        .name("usb-source".into())
        .spawn(move || runner.run(&tx))
        .map(drop)
}

/// The socket loop: receives, hands uevents to the [`Tracker`], sends what it decides.
struct Runner {
    tracker: Tracker,
    socket: Option<UeventSocket>,
    /// Tests: every kernel uevent accepted, before it is interpreted.
    tap: Option<std::sync::mpsc::Sender<Uevent>>,
}

/// The spool has gone away: the agent is shutting down.
#[derive(Debug)]
struct ReceiverGone;

impl Runner {
    fn new(
        tracker: Tracker,
        socket: Option<UeventSocket>,
        tap: Option<std::sync::mpsc::Sender<Uevent>>,
    ) -> Self {
        Self {
            tracker,
            socket,
            tap,
        }
    }

    fn run(mut self, tx: &EventTx) {
        if let Err(ReceiverGone) = self.serve(tx) {
            tracing::debug!("usb source stopping: the event receiver is gone");
        }
    }

    fn serve(&mut self, tx: &EventTx) -> Result<(), ReceiverGone> {
        let present = self.tracker.present();
        tracing::info!(devices = present.len(), "usb source: devices present");
        send_all(tx, present)?;
        if self.socket.is_none() {
            return Ok(());
        }
        let mut buf = vec![0u8; DATAGRAM_BUF];
        let mut failures = 0;
        let mut timeout = None;
        loop {
            // Wake for the earliest held-back attach, or now and then to notice shutdown.
            let now = Instant::now();
            let wanted = self
                .tracker
                .next_deadline()
                .map_or(IDLE_WAKE, |d| d.saturating_duration_since(now))
                .clamp(Duration::from_millis(10), IDLE_WAKE);
            let socket = self.socket.as_mut().expect("checked above");
            if timeout != Some(wanted) {
                match socket.set_timeout(Some(wanted)) {
                    Ok(()) => timeout = Some(wanted),
                    Err(err) => tracing::debug!(%err, "usb source: cannot set receive timeout"),
                }
            }
            match socket.recv(&mut buf) {
                Ok(received) => {
                    failures = 0;
                    if received.truncated {
                        tracing::warn!("usb source: uevent larger than the buffer, ignored");
                    } else {
                        match uevent::parse(received.bytes) {
                            Ok(event) => {
                                if let Some(tap) = &self.tap {
                                    let _ = tap.send(event.clone());
                                }
                                let out = self.tracker.handle(&event, Instant::now());
                                send_all(tx, out)?;
                            }
                            Err(err) => {
                                tracing::warn!(error = %err, "usb source: malformed uevent")
                            }
                        }
                    }
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(err) if err.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    tracing::warn!("usb source: uevent receive buffer overrun; rescanning sysfs");
                    send_all(tx, self.tracker.resync("uevent receive buffer overrun"))?;
                }
                Err(err) => {
                    failures += 1;
                    tracing::warn!(error = %err, failures, "usb source: uevent receive failed");
                    if failures >= MAX_RECV_FAILURES {
                        self.reopen(tx)?;
                        timeout = None;
                        failures = 0;
                        send_all(
                            tx,
                            self.tracker.resync("uevent socket failed; re-created it"),
                        )?;
                    } else {
                        thread::sleep(RECV_RETRY);
                    }
                }
            }
            send_all(tx, self.tracker.tick(Instant::now()))?;
            if tx.is_closed() {
                return Err(ReceiverGone);
            }
        }
    }

    /// Replaces a socket that keeps failing, retrying with backoff for as long as it takes.
    fn reopen(&mut self, tx: &EventTx) -> Result<(), ReceiverGone> {
        self.socket = None;
        let mut delay = Duration::from_secs(1);
        loop {
            match UeventSocket::open() {
                Ok(socket) => {
                    tracing::info!("usb source: uevent socket re-created");
                    self.socket = Some(socket);
                    return Ok(());
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?delay, "usb source: cannot re-create the uevent socket");
                    if tx.is_closed() {
                        return Err(ReceiverGone);
                    }
                    thread::sleep(delay);
                    delay = (delay * 2).min(REOPEN_MAX_DELAY);
                }
            }
        }
    }
}

fn send_all(tx: &EventTx, events: Vec<Event>) -> Result<(), ReceiverGone> {
    for event in events {
        tx.blocking_send(event).map_err(|_| ReceiverGone)?;
    }
    Ok(())
}

/// An attach not yet reported.
#[derive(Debug)]
struct Pending {
    since: Instant,
    /// Everything learnt so far, from sysfs and the uevents.
    info: UsbDeviceInfo,
}

/// Turns uevents (and sysfs) into events. No I/O but sysfs reads, and time is passed in, so
/// whole uevent sequences can be replayed in tests without a socket or waiting.
struct Tracker {
    hostname: String,
    sysfs: Sysfs,
    /// Devices reported (present or attached) and not yet detached, by devpath: what a detach
    /// event is filled from.
    known: HashMap<String, UsbDeviceInfo>,
    /// Attaches held back until complete, by devpath.
    pending: BTreeMap<String, Pending>,
}

impl Tracker {
    fn new(cfg: UsbSourceConfig) -> Self {
        Self {
            hostname: cfg.hostname,
            sysfs: Sysfs::new(cfg.sysfs_root),
            known: HashMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// "present" events for every device in sysfs now.
    fn present(&mut self) -> Vec<Event> {
        let devpaths = match self.sysfs.list_devices() {
            Ok(d) => d,
            Err(err) => {
                tracing::warn!(error = %err, "usb source: cannot list USB devices");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for devpath in devpaths {
            match self.sysfs.read_device(&devpath) {
                Ok(info) => {
                    out.push(self.event("present", &info));
                    self.known.insert(devpath, info);
                }
                Err(err) => tracing::warn!(error = %err, "usb source: cannot read device"),
            }
        }
        out
    }

    /// What this uevent changes; events to send, in order.
    fn handle(&mut self, ev: &Uevent, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        match (ev.subsystem(), ev.devtype(), &ev.action) {
            (Some("usb"), Some("usb_device"), Action::Add) => self.device_added(ev, now, &mut out),
            (Some("usb"), Some("usb_device"), Action::Remove) => self.device_removed(ev, &mut out),
            (Some("usb"), Some("usb_interface"), Action::Add) => {
                let parent = parent(&ev.devpath);
                if let Some(p) = self.pending.get_mut(parent) {
                    if let Some(iface) = interface_hint(ev)
                        && !p.info.interfaces.iter().any(|i| i.number == iface.number)
                    {
                        p.info.interfaces.push(iface);
                    }
                    self.check(parent.to_owned(), &mut out);
                }
            }
            (Some("block"), Some("disk"), Action::Add) => self.disk_added(ev, &mut out),
            _ => {}
        }
        out
    }

    fn device_added(&mut self, ev: &Uevent, now: Instant, out: &mut Vec<Event>) {
        let devpath = ev.devpath.clone();
        let hint = uevent_info(ev);
        if let Some(old) = self.known.get(&devpath) {
            // The socket was opened before the enumeration, so a device plugged in during it
            // is both listed and announced; the device number tells whether it is the same.
            if old.devnum.is_some() && old.devnum == hint.devnum && old.busnum == hint.busnum {
                tracing::debug!(devpath, "usb source: already reported as present");
                return;
            }
            // A different device in the same port: its predecessor's remove was lost.
            let old = self.known.remove(&devpath).expect("present");
            out.push(self.event("detach", &old));
        }
        let info = match self.sysfs.read_device(&devpath) {
            Ok(fresh) => merge(fresh, &hint),
            Err(err) => {
                tracing::warn!(error = %err, "usb source: ignoring device");
                return;
            }
        };
        self.pending
            .insert(devpath.clone(), Pending { since: now, info });
        self.check(devpath, out);
    }

    fn disk_added(&mut self, ev: &Uevent, out: &mut Vec<Event>) {
        let name = ev
            .get("DEVNAME")
            .unwrap_or_else(|| ev.devpath.rsplit('/').next().unwrap_or_default());
        let name = sysfs_usb::sanitize(name);
        // The deepest USB device above the disk: a hub's devpath is a prefix of its children's.
        let owner = |devpath: &&String| ev.devpath.starts_with(&format!("{devpath}/"));
        let deepest = |paths: &mut dyn Iterator<Item = &String>| {
            paths.filter(owner).max_by_key(|d| d.len()).cloned()
        };
        let pending = deepest(&mut self.pending.keys());
        let known = deepest(&mut self.known.keys());
        // A pending device deeper than a known one (a new stick in a hub reported earlier).
        let pending_wins = match (&pending, &known) {
            (Some(p), Some(k)) => p.len() > k.len(),
            (Some(_), None) => true,
            _ => false,
        };
        if pending_wins {
            let devpath = pending.expect("some");
            let info = &mut self.pending.get_mut(&devpath).expect("found").info;
            if !info.block_devices.contains(&name) {
                info.block_devices.push(name);
            }
            self.check(devpath, out);
        } else if let Some(devpath) = known {
            let info = self.known.get_mut(&devpath).expect("found");
            tracing::info!(
                devpath,
                disk = name,
                "usb source: disk appeared after the attach was reported; it will be in the detach"
            );
            if !info.block_devices.contains(&name) {
                info.block_devices.push(name);
            }
        }
    }

    fn device_removed(&mut self, ev: &Uevent, out: &mut Vec<Event>) {
        // An attach still held back is reported first: it must never be lost.
        self.flush(&ev.devpath, out);
        let hint = uevent_info(ev);
        let info = match self.known.remove(&ev.devpath) {
            Some(known) => merge(known, &hint),
            None => hint,
        };
        out.push(self.event("detach", &info));
    }

    /// Reports a held-back attach if the device is complete.
    fn check(&mut self, devpath: String, out: &mut Vec<Event>) {
        let Some(p) = self.pending.get_mut(&devpath) else {
            return;
        };
        let fresh = self.sysfs.read_device(&devpath).unwrap_or_default();
        p.info = merge(fresh, &p.info);
        if is_complete(&p.info) {
            self.flush(&devpath, out);
        }
    }

    /// Reports a held-back attach now, complete or not.
    fn flush(&mut self, devpath: &str, out: &mut Vec<Event>) {
        if let Some(p) = self.pending.remove(devpath) {
            let fresh = self.sysfs.read_device(devpath).unwrap_or_default();
            let info = merge(fresh, &p.info);
            out.push(self.event("attach", &info));
            self.known.insert(devpath.to_owned(), info);
        }
    }

    /// Attaches whose wait is over.
    fn tick(&mut self, now: Instant) -> Vec<Event> {
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.since) >= ATTACH_SETTLE)
            .map(|(d, _)| d.clone())
            .collect();
        let mut out = Vec::new();
        for devpath in due {
            tracing::debug!(
                devpath,
                "usb source: reporting attach after waiting {ATTACH_SETTLE:?}"
            );
            self.flush(&devpath, &mut out);
        }
        out
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.since + ATTACH_SETTLE).min()
    }

    /// After uevents were lost: a gap, then the difference between what we believed and what
    /// sysfs shows now, as attaches and detaches.
    fn resync(&mut self, reason: &str) -> Vec<Event> {
        let mut out = vec![Event {
            seq: 0,
            observed_at_us: now_us(),
            hostname: self.hostname.clone(),
            user: String::new(),
            kind: Some(event::Kind::Gap(Gap {
                source: "usb".into(),
                reason: format!("{reason}; rescanned sysfs"),
                lost: 0,
            })),
        }];
        let Ok(now) = self.sysfs.list_devices() else {
            return out;
        };
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|d| !now.contains(d))
            .cloned()
            .collect();
        for devpath in gone {
            let info = self.known.remove(&devpath).expect("listed");
            out.push(self.event("detach", &info));
        }
        for devpath in now {
            if self.known.contains_key(&devpath) || self.pending.contains_key(&devpath) {
                continue;
            }
            if let Ok(info) = self.sysfs.read_device(&devpath) {
                out.push(self.event("attach", &info));
                self.known.insert(devpath, info);
            }
        }
        out
    }

    fn event(&self, action: &str, info: &UsbDeviceInfo) -> Event {
        let mut classes: Vec<String> = Vec::new();
        let mut interfaces = info.interfaces.clone();
        interfaces.sort_by_key(|i| i.number);
        for i in &interfaces {
            let name = sysfs_usb::class_name(i.class);
            if !classes.contains(&name) {
                classes.push(name);
            }
        }
        let mut block_devices = info.block_devices.clone();
        block_devices.sort();
        Event {
            seq: 0,
            observed_at_us: now_us(),
            hostname: self.hostname.clone(),
            // A device belongs to the machine, not to whoever is logged in.
            user: String::new(),
            kind: Some(event::Kind::Usb(UsbDevice {
                action: action.to_owned(),
                vendor_id: info.vendor_id.clone().unwrap_or_default(),
                product_id: info.product_id.clone().unwrap_or_default(),
                manufacturer: info.manufacturer.clone().unwrap_or_default(),
                product: info.product.clone().unwrap_or_default(),
                serial: info.serial.clone().unwrap_or_default(),
                interface_classes: classes,
                keyboard: interfaces.iter().any(Interface::is_keyboard),
                block_devices,
                devpath: info.devpath.clone(),
                busnum: info.busnum.unwrap_or(0),
                devnum: info.devnum.unwrap_or(0),
            })),
        }
    }
}

/// All interfaces of the active configuration are known and, for mass storage, a disk is.
fn is_complete(info: &UsbDeviceInfo) -> bool {
    let interfaces_done = info
        .num_interfaces
        .is_some_and(|n| n > 0 && info.interfaces.len() >= n as usize);
    let storage = info
        .interfaces
        .iter()
        .any(|i| i.class == CLASS_MASS_STORAGE);
    interfaces_done && (!storage || !info.block_devices.is_empty())
}

/// `primary`, with its gaps filled from `fallback`; interfaces and disks are united.
fn merge(primary: UsbDeviceInfo, fallback: &UsbDeviceInfo) -> UsbDeviceInfo {
    let mut interfaces = primary.interfaces;
    for i in &fallback.interfaces {
        if !interfaces.iter().any(|j| j.number == i.number) {
            interfaces.push(*i);
        }
    }
    let mut block_devices = primary.block_devices;
    for b in &fallback.block_devices {
        if !block_devices.contains(b) {
            block_devices.push(b.clone());
        }
    }
    UsbDeviceInfo {
        devpath: if primary.devpath.is_empty() {
            fallback.devpath.clone()
        } else {
            primary.devpath
        },
        vendor_id: primary.vendor_id.or_else(|| fallback.vendor_id.clone()),
        product_id: primary.product_id.or_else(|| fallback.product_id.clone()),
        manufacturer: primary
            .manufacturer
            .or_else(|| fallback.manufacturer.clone()),
        product: primary.product.or_else(|| fallback.product.clone()),
        serial: primary.serial.or_else(|| fallback.serial.clone()),
        busnum: primary.busnum.or(fallback.busnum),
        devnum: primary.devnum.or(fallback.devnum),
        device_class: primary.device_class.or(fallback.device_class),
        num_interfaces: primary.num_interfaces.or(fallback.num_interfaces),
        interfaces,
        block_devices,
    }
}

/// What a usb_device uevent itself says: `PRODUCT=vid/pid/bcd` (hex, no leading zeros),
/// `BUSNUM=001`, `DEVNUM=005`.
fn uevent_info(ev: &Uevent) -> UsbDeviceInfo {
    let mut ids = ev
        .get("PRODUCT")
        .unwrap_or_default()
        .split('/')
        .map(|v| u16::from_str_radix(v, 16).ok().map(|v| format!("{v:04x}")));
    let num = |key: &str| ev.get(key).and_then(|v| v.parse::<u32>().ok());
    UsbDeviceInfo {
        devpath: ev.devpath.clone(),
        vendor_id: ids.next().flatten(),
        product_id: ids.next().flatten(),
        busnum: num("BUSNUM"),
        devnum: num("DEVNUM"),
        ..UsbDeviceInfo::default()
    }
}

/// A usb_interface uevent's `INTERFACE=class/subclass/protocol` (decimal); the number is the
/// last part of the devpath ("1-2:1.3" -> 3).
fn interface_hint(ev: &Uevent) -> Option<Interface> {
    let mut csp = ev
        .get("INTERFACE")?
        .split('/')
        .map(|v| v.parse::<u8>().ok());
    let (class, subclass, protocol) = (csp.next()??, csp.next()??, csp.next()??);
    let number = ev.devpath.rsplit('.').next()?.parse().ok()?;
    Some(Interface {
        number,
        class,
        subclass,
        protocol,
    })
}

fn parent(devpath: &str) -> &str {
    devpath.rsplit_once('/').map_or("", |(p, _)| p)
}

#[cfg(test)]
mod tests {
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

    const STICK: &str = include_str!("../../tests/fixtures/uevent/sandisk-stick.uevents");
    const PHONE: &str = include_str!("../../tests/fixtures/uevent/samsung-phone-mtp.uevents");
    const KEYBOARD: &str = include_str!("../../tests/fixtures/uevent/logitech-keyboard.uevents");

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
}
