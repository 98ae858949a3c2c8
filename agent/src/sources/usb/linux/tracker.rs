//! Which USB devices are attached, and when an attach is complete enough to report.

use super::*;

/// An attach not yet reported.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) since: Instant,
    /// Everything learnt so far, from sysfs and the uevents.
    pub(super) info: UsbDeviceInfo,
}

/// Turns uevents (and sysfs) into events. No I/O but sysfs reads, and time is passed in, so
/// whole uevent sequences can be replayed in tests without a socket or waiting.
pub(super) struct Tracker {
    pub(super) hostname: String,
    pub(super) sysfs: Sysfs,
    /// Devices reported (present or attached) and not yet detached, by devpath: what a detach
    /// event is filled from.
    pub(super) known: HashMap<String, UsbDeviceInfo>,
    /// Attaches held back until complete, by devpath.
    pub(super) pending: BTreeMap<String, Pending>,
}

impl Tracker {
    pub(super) fn new(cfg: UsbSourceConfig) -> Self {
        Self {
            hostname: cfg.hostname,
            sysfs: Sysfs::new(cfg.sysfs_root),
            known: HashMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// "present" events for every device in sysfs now.
    pub(super) fn present(&mut self) -> Vec<Event> {
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
    pub(super) fn handle(&mut self, ev: &Uevent, now: Instant) -> Vec<Event> {
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

    pub(super) fn device_added(&mut self, ev: &Uevent, now: Instant, out: &mut Vec<Event>) {
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

    pub(super) fn disk_added(&mut self, ev: &Uevent, out: &mut Vec<Event>) {
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

    pub(super) fn device_removed(&mut self, ev: &Uevent, out: &mut Vec<Event>) {
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
    pub(super) fn check(&mut self, devpath: String, out: &mut Vec<Event>) {
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
    pub(super) fn flush(&mut self, devpath: &str, out: &mut Vec<Event>) {
        if let Some(p) = self.pending.remove(devpath) {
            let fresh = self.sysfs.read_device(devpath).unwrap_or_default();
            let info = merge(fresh, &p.info);
            out.push(self.event("attach", &info));
            self.known.insert(devpath.to_owned(), info);
        }
    }

    /// Attaches whose wait is over.
    pub(super) fn tick(&mut self, now: Instant) -> Vec<Event> {
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

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.since + ATTACH_SETTLE).min()
    }

    /// After uevents were lost: a gap, then the difference between what we believed and what
    /// sysfs shows now, as attaches and detaches.
    pub(super) fn resync(&mut self, reason: &str) -> Vec<Event> {
        let mut out = vec![observed(
            &self.hostname,
            String::new(),
            event::Kind::Gap(Gap {
                source: "usb".into(),
                reason: format!("{reason}; rescanned sysfs"),
                lost: 0,
            }),
        )];
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

    pub(super) fn event(&self, action: &str, info: &UsbDeviceInfo) -> Event {
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
        // A device belongs to the machine, not to whoever is logged in: no user.
        observed(
            &self.hostname,
            String::new(),
            event::Kind::Usb(UsbDevice {
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
            }),
        )
    }
}

/// All interfaces of the active configuration are known and, for mass storage, a disk is.
pub(super) fn is_complete(info: &UsbDeviceInfo) -> bool {
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
pub(super) fn merge(primary: UsbDeviceInfo, fallback: &UsbDeviceInfo) -> UsbDeviceInfo {
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
pub(super) fn uevent_info(ev: &Uevent) -> UsbDeviceInfo {
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
pub(super) fn interface_hint(ev: &Uevent) -> Option<Interface> {
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

pub(super) fn parent(devpath: &str) -> &str {
    devpath.rsplit_once('/').map_or("", |(p, _)| p)
}
