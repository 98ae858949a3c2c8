//! The USB source on Windows: what Plug and Play lists under the `USB` and `USBSTOR`
//! enumerators, read every [`SCAN_INTERVAL`] and compared with the previous reading.
//!
//! - At start every device is reported as "present"; then "attach" and "detach".
//! - One event per device, not per interface: a composite device's interfaces (`MI_xx` nodes)
//!   and a USB disk (`USBSTOR` node, ~1 s after the device) are folded into their device. So an
//!   attach is reported at the scan after the device was first seen, with what appeared
//!   meanwhile; a device gone before that still gets its attach, then its detach.
//! - A USB disk is named in `block_devices` by its drive letters ("E:"), or by its name while
//!   Windows has not mounted it.
//! - A device's identity between scans is its instance id (`devpath` in events), so the same
//!   stick in another port is a detach and an attach.
//!
//! Scanning rather than `CM_Register_Notification`: that function is missing from Wine, which
//! would stop the agent loading at all, and a 2 s scan of a few dozen nodes costs little. The
//! grouping and the comparison are pure and tested on every platform; the reading itself is
//! `platform::windows::setupapi`.

use std::collections::BTreeMap;
use std::time::Duration;

use invigilator_proto::v1::{Event, UsbDevice, event};

use crate::platform::usb_names::{class_name, is_keyboard, sanitize};
use crate::platform::windows::device_id::{DevNode, class_of, is_usb_disk, parse_usb_instance};
use crate::sources::observed;

/// How often Plug and Play is read.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(2);

/// The USB devices in one reading, by instance id, as event payloads (action left empty).
pub fn devices(nodes: &[DevNode]) -> BTreeMap<String, UsbDevice> {
    let by_id: BTreeMap<&str, &DevNode> =
        nodes.iter().map(|n| (n.instance_id.as_str(), n)).collect();
    let mut out = BTreeMap::new();
    for node in nodes {
        let Some(id) = parse_usb_instance(&node.instance_id) else {
            continue;
        };
        if id.interface.is_some() {
            continue;
        }
        out.insert(
            node.instance_id.clone(),
            UsbDevice {
                vendor_id: id.vendor_id,
                product_id: id.product_id,
                manufacturer: sanitize(&node.manufacturer),
                product: sanitize(&node.description),
                serial: sanitize(id.serial.as_deref().unwrap_or_default()),
                devpath: sanitize(&node.instance_id),
                ..Default::default()
            },
        );
    }
    let owner = |id: &str| owner(&out, &by_id, id);
    // (device, class, protocol, the node's id: interfaces are reported in their order)
    let mut classes: Vec<(String, u8, Option<u8>, String)> = Vec::new();
    let mut disks: Vec<(String, String)> = Vec::new();
    for node in nodes {
        if is_usb_disk(&node.instance_id) {
            if let Some(dev) = node.parent_id.as_deref().and_then(owner) {
                // Its drive letters where Windows mounted it, else its name.
                if node.volumes.is_empty() {
                    let name = if node.friendly_name.is_empty() {
                        &node.instance_id
                    } else {
                        &node.friendly_name
                    };
                    disks.push((dev.clone(), sanitize(name)));
                }
                for volume in &node.volumes {
                    disks.push((dev.clone(), sanitize(volume)));
                }
            }
            continue;
        }
        if parse_usb_instance(&node.instance_id).is_none() {
            continue;
        }
        // A single-interface device names its class in its own compatible ids; a composite
        // one's are `USB\COMPOSITE` and its interfaces carry the classes.
        if let (Some(class), Some(dev)) = (class_of(&node.compatible_ids), owner(&node.instance_id))
        {
            classes.push((dev, class.class, class.protocol, node.instance_id.clone()));
        }
    }
    classes.sort_by(|a, b| a.3.cmp(&b.3));
    for (dev, class, protocol, _) in classes {
        let device = out.get_mut(&dev).expect("owner is a device");
        let name = class_name(class);
        if !device.interface_classes.contains(&name) {
            device.interface_classes.push(name);
        }
        device.keyboard |= is_keyboard(class, protocol.unwrap_or(0));
    }
    for (dev, disk) in disks {
        let device = out.get_mut(&dev).expect("owner is a device");
        if !device.block_devices.contains(&disk) {
            device.block_devices.push(disk);
        }
    }
    for device in out.values_mut() {
        device.block_devices.sort();
    }
    out
}

/// The device a node belongs to: itself, its parent (an interface's composite device), or its
/// grandparent (a disk behind an interface).
fn owner<'a>(
    devices: &BTreeMap<String, UsbDevice>,
    by_id: &BTreeMap<&'a str, &'a DevNode>,
    mut id: &'a str,
) -> Option<String> {
    for _ in 0..3 {
        if devices.contains_key(id) {
            return Some(id.to_owned());
        }
        id = by_id.get(id)?.parent_id.as_deref()?;
    }
    None
}

/// Compares readings and decides the events.
#[derive(Debug, Default)]
pub struct Tracker {
    hostname: String,
    /// Reported as attached (or present).
    known: BTreeMap<String, UsbDevice>,
    /// Seen once, attach not reported yet: its interfaces and disk may still be coming.
    pending: BTreeMap<String, UsbDevice>,
}

impl Tracker {
    pub fn new(hostname: impl Into<String>) -> Self {
        Tracker {
            hostname: hostname.into(),
            ..Default::default()
        }
    }

    /// The first reading: everything is "present".
    pub fn present(&mut self, now: BTreeMap<String, UsbDevice>) -> Vec<Event> {
        let events = now.values().map(|d| self.event("present", d)).collect();
        self.known = now;
        events
    }

    /// A later reading: attaches of devices seen last time and still here (with what is known
    /// now) or gone already (with what was known then), new devices held for the next reading,
    /// and detaches.
    pub fn update(&mut self, mut now: BTreeMap<String, UsbDevice>) -> Vec<Event> {
        let mut events = Vec::new();
        for (id, seen) in std::mem::take(&mut self.pending) {
            match now.get(&id) {
                Some(latest) => {
                    events.push(self.event("attach", latest));
                    self.known.insert(id, latest.clone());
                }
                None => {
                    events.push(self.event("attach", &seen));
                    events.push(self.event("detach", &seen));
                }
            }
        }
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|id| !now.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(device) = self.known.remove(&id) {
                events.push(self.event("detach", &device));
            }
        }
        for (id, device) in std::mem::take(&mut now) {
            match self.known.get_mut(&id) {
                // A disk that appears late is remembered for the detach, without an event.
                Some(known) => *known = device,
                None => {
                    self.pending.insert(id, device);
                }
            }
        }
        events
    }

    /// A device belongs to the machine, not to whoever is logged in: no user.
    fn event(&self, action: &str, device: &UsbDevice) -> Event {
        let device = UsbDevice {
            action: action.into(),
            ..device.clone()
        };
        observed(&self.hostname, String::new(), event::Kind::Usb(device))
    }
}

/// Reads Plug and Play on a thread of its own ("usb-source") until the agent stops.
#[cfg(windows)]
pub fn spawn(hostname: String, tx: crate::sources::EventTx) -> std::io::Result<()> {
    use crate::platform::windows::setupapi;
    std::thread::Builder::new()
        .name("usb-source".into())
        .spawn(move || {
            let mut tracker = Tracker::new(hostname);
            let mut first = true;
            let mut warned = false;
            while !tx.is_closed() {
                match setupapi::present_usb_nodes() {
                    Ok(nodes) => {
                        let now = devices(&nodes);
                        let events = if first {
                            first = false;
                            tracing::info!(
                                devices = now.len(),
                                "usb source: reading Plug and Play every 2 s"
                            );
                            tracker.present(now)
                        } else {
                            tracker.update(now)
                        };
                        for e in events {
                            if tx.blocking_send(e).is_err() {
                                return;
                            }
                        }
                        warned = false;
                    }
                    Err(err) if !warned => {
                        tracing::warn!(%err, "usb source: cannot list USB devices; retrying");
                        warned = true;
                    }
                    Err(_) => {}
                }
                std::thread::sleep(SCAN_INTERVAL);
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests;
