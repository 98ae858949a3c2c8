//! A USB device's attributes, read from sysfs.
//!
//! Every path is taken relative to a root (normally `/sys`) so tests can build a fake tree that
//! mirrors the kernel's layout:
//!
//! ```text
//! /sys/bus/usb/devices/1-2 -> ../../../devices/pci0000:00/0000:00:14.0/usb1/1-2
//! /sys/devices/.../usb1/1-2/{idVendor,idProduct,manufacturer,product,serial,busnum,devnum,bNumInterfaces}
//! /sys/devices/.../usb1/1-2/1-2:1.0/{bInterfaceClass,bInterfaceSubClass,bInterfaceProtocol}
//! /sys/devices/.../usb1/1-2/1-2:1.0/host0/target0:0:0/0:0:0:0/block/sdb
//! ```
//!
//! Device strings (manufacturer, product, serial) come from the device itself and are untrusted:
//! they are kept as sent, but cut to [`MAX_STRING_CHARS`] and stripped of control characters.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

pub use crate::platform::usb_names::{CLASS_MASS_STORAGE, MAX_STRING_CHARS, class_name, sanitize};
/// Largest attribute read. sysfs attributes fit in a page.
const MAX_ATTR_BYTES: u64 = 4096;
/// How deep under the device to look for block devices: usb-storage puts them at
/// `1-2:1.0/host0/target0:0:0/0:0:0:0/block/sdb` (depth 6); UAS the same.
const MAX_BLOCK_DEPTH: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    #[error("devpath {devpath:?} is not a path under /devices")]
    BadDevpath { devpath: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// One interface of the active configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interface {
    pub number: u8,
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
}

impl Interface {
    /// See [`crate::platform::usb_names::is_keyboard`].
    pub fn is_keyboard(&self) -> bool {
        crate::platform::usb_names::is_keyboard(self.class, self.protocol)
    }
}

/// What sysfs says about one USB device. `None` = the attribute is absent or unreadable (a
/// device without a serial number, or one already gone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsbDeviceInfo {
    /// e.g. "/devices/pci0000:00/0000:00:14.0/usb1/1-2".
    pub devpath: String,
    /// Four lower-case hex digits.
    pub vendor_id: Option<String>,
    pub product_id: Option<String>,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    pub busnum: Option<u32>,
    pub devnum: Option<u32>,
    /// bDeviceClass (0 = "see the interfaces", 9 = hub).
    pub device_class: Option<u8>,
    /// Interfaces of the active configuration, when it is set (`None` before the kernel has
    /// chosen one, just after the device appeared).
    pub num_interfaces: Option<u32>,
    /// Sorted by interface number.
    pub interfaces: Vec<Interface>,
    /// Whole disks under the device (not partitions), sorted: e.g. ["sdb"].
    pub block_devices: Vec<String>,
}

/// Where sysfs is mounted.
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Self::new("/sys")
    }
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a devpath, refusing anything that could leave `/devices` (the kernel
    /// never sends such a path, but it is the path we open).
    pub fn device_dir(&self, devpath: &str) -> Result<PathBuf, SysfsError> {
        let rel = Path::new(devpath);
        let bad = || SysfsError::BadDevpath {
            devpath: devpath.chars().take(MAX_STRING_CHARS).collect(),
        };
        let mut components = rel.components();
        if components.next() != Some(Component::RootDir)
            || components.next() != Some(Component::Normal("devices".as_ref()))
        {
            return Err(bad());
        }
        if !components.all(|c| matches!(c, Component::Normal(_))) {
            return Err(bad());
        }
        Ok(self.root.join(devpath.trim_start_matches('/')))
    }

    /// Devpaths of the USB devices (not interfaces) now present, root hubs included, sorted so
    /// that a hub comes before what is plugged into it. No USB bus at all is an empty list.
    pub fn list_devices(&self) -> Result<Vec<String>, SysfsError> {
        let dir = self.root.join("bus/usb/devices");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(SysfsError::Io { path: dir, source }),
        };
        let mut devpaths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| SysfsError::Io {
                path: dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // Interfaces ("1-2:1.0") are listed beside their devices.
            if name.contains(':') {
                continue;
            }
            let link = entry.path();
            match fs::read_link(&link) {
                Ok(target) => {
                    if let Some(devpath) = self.devpath_of(&dir.join(target)) {
                        devpaths.push(devpath);
                    } else {
                        tracing::debug!(link = %link.display(), "USB device link outside /devices");
                    }
                }
                // Gone between the listing and now: a device being unplugged.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(SysfsError::Io { path: link, source }),
            }
        }
        devpaths.sort();
        Ok(devpaths)
    }

    /// "/devices/..." for a path under the root, resolving ".." lexically (sysfs links are
    /// relative, like "../../../devices/pci0000:00/...").
    fn devpath_of(&self, path: &Path) -> Option<String> {
        let mut normal = PathBuf::new();
        for c in path.components() {
            match c {
                Component::ParentDir => {
                    normal.pop();
                }
                Component::CurDir => {}
                other => normal.push(other),
            }
        }
        let rel = normal.strip_prefix(&self.root).ok()?;
        let devpath = format!("/{}", rel.to_str()?);
        self.device_dir(&devpath).ok().map(|_| devpath)
    }

    /// Reads everything about one device. Only a bad devpath is an error; missing attributes are
    /// `None` (the device may be going away while we read).
    pub fn read_device(&self, devpath: &str) -> Result<UsbDeviceInfo, SysfsError> {
        let dir = self.device_dir(devpath)?;
        let text = |name: &str| read_attr(&dir.join(name));
        let hex16 = |name: &str| {
            text(name)
                .and_then(|v| u16::from_str_radix(v.trim(), 16).ok())
                .map(|v| format!("{v:04x}"))
        };
        // Numbers are printed padded ("bNumInterfaces" is " 1").
        let num = |name: &str| text(name).and_then(|v| v.trim().parse::<u32>().ok());
        let mut interfaces = read_interfaces(&dir);
        interfaces.sort_by_key(|i| i.number);
        let mut block_devices = Vec::new();
        find_block_devices(&dir, 0, &mut block_devices);
        block_devices.sort();
        block_devices.dedup();
        Ok(UsbDeviceInfo {
            devpath: devpath.to_owned(),
            vendor_id: hex16("idVendor"),
            product_id: hex16("idProduct"),
            manufacturer: text("manufacturer").map(|s| sanitize(&s)),
            product: text("product").map(|s| sanitize(&s)),
            serial: text("serial").map(|s| sanitize(&s)),
            busnum: num("busnum"),
            devnum: num("devnum"),
            device_class: text("bDeviceClass").and_then(|v| u8::from_str_radix(v.trim(), 16).ok()),
            num_interfaces: num("bNumInterfaces"),
            interfaces,
            block_devices,
        })
    }
}

/// An attribute's value without sysfs's trailing newline; `None` if absent or unreadable.
fn read_attr(path: &Path) -> Option<String> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(MAX_ATTR_BYTES).read_to_end(&mut bytes))
        .ok()?;
    let text = String::from_utf8_lossy(&bytes);
    // Only the newline sysfs adds goes: a device string's own spaces are part of it.
    Some(text.strip_suffix('\n').unwrap_or(&text).to_owned())
}

/// The interfaces of the active configuration: subdirectories named "BUS-PORT:CONFIG.IFACE".
fn read_interfaces(dir: &Path) -> Vec<Interface> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.contains(':') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        let byte = |attr: &str| {
            read_attr(&path.join(attr)).and_then(|v| u8::from_str_radix(v.trim(), 16).ok())
        };
        // An interface without a readable class is being torn down: skip it.
        let Some(class) = byte("bInterfaceClass") else {
            continue;
        };
        out.push(Interface {
            number: byte("bInterfaceNumber")
                .or_else(|| interface_number(name))
                .unwrap_or(0),
            class,
            subclass: byte("bInterfaceSubClass").unwrap_or(0),
            protocol: byte("bInterfaceProtocol").unwrap_or(0),
        });
    }
    out
}

/// "1-2:1.3" -> 3.
fn interface_number(name: &str) -> Option<u8> {
    name.rsplit('.').next()?.parse().ok()
}

/// Collects the names in every `block/` directory under `dir`, without following symlinks (sysfs
/// is full of links back up the tree) and without descending into child USB devices (a hub's
/// children have their own block devices).
fn find_block_devices(dir: &Path, depth: usize, out: &mut Vec<String>) {
    if depth > MAX_BLOCK_DEPTH {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == "block" {
            if let Ok(disks) = fs::read_dir(entry.path()) {
                out.extend(
                    disks
                        .flatten()
                        .filter_map(|d| d.file_name().to_str().map(sanitize)),
                );
            }
        } else if !is_usb_device_name(name) {
            find_block_devices(&entry.path(), depth + 1, out);
        }
    }
}

/// "1-2", "1-2.4.1", "usb1": a USB device's directory name (interfaces have a ':').
pub fn is_usb_device_name(name: &str) -> bool {
    if let Some(bus) = name.strip_prefix("usb") {
        return !bus.is_empty() && bus.bytes().all(|b| b.is_ascii_digit());
    }
    let Some((bus, ports)) = name.split_once('-') else {
        return false;
    };
    !bus.is_empty()
        && bus.bytes().all(|b| b.is_ascii_digit())
        && !ports.is_empty()
        && ports
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    pub(crate) const XHCI: &str = "/devices/pci0000:00/0000:00:14.0";

    /// A fake sysfs tree laid out like the kernel's.
    pub(crate) struct FakeSysfs {
        pub dir: tempfile::TempDir,
    }

    impl FakeSysfs {
        pub(crate) fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("bus/usb/devices")).unwrap();
            Self { dir }
        }

        pub(crate) fn root(&self) -> &Path {
            self.dir.path()
        }

        pub(crate) fn sysfs(&self) -> Sysfs {
            Sysfs::new(self.root())
        }

        /// Writes attributes ("name", "value") with sysfs's trailing newline.
        pub(crate) fn attrs(&self, devpath: &str, attrs: &[(&str, &str)]) {
            let dir = self.root().join(devpath.trim_start_matches('/'));
            fs::create_dir_all(&dir).unwrap();
            for (name, value) in attrs {
                fs::write(dir.join(name), format!("{value}\n")).unwrap();
            }
        }

        /// A device and its /sys/bus/usb/devices link, as the kernel makes them.
        pub(crate) fn device(&self, devpath: &str, attrs: &[(&str, &str)]) {
            self.attrs(devpath, attrs);
            let name = devpath.rsplit('/').next().unwrap();
            symlink(
                format!("../../..{devpath}"),
                self.root().join("bus/usb/devices").join(name),
            )
            .unwrap();
            // The links that make a naive walk loop forever.
            let dir = self.root().join(devpath.trim_start_matches('/'));
            symlink("../../../../bus/usb", dir.join("subsystem")).unwrap();
            symlink("..", dir.join("port")).unwrap_or(());
        }

        pub(crate) fn interface(&self, devpath: &str, number: u8, csp: (u8, u8, u8)) -> String {
            let name = devpath.rsplit('/').next().unwrap();
            let name = match name.strip_prefix("usb") {
                Some(bus) => format!("{bus}-0:1.{number}"),
                None => format!("{name}:1.{number}"),
            };
            let path = format!("{devpath}/{name}");
            self.attrs(
                &path,
                &[
                    ("bInterfaceNumber", &format!("{number:02x}")),
                    ("bInterfaceClass", &format!("{:02x}", csp.0)),
                    ("bInterfaceSubClass", &format!("{:02x}", csp.1)),
                    ("bInterfaceProtocol", &format!("{:02x}", csp.2)),
                    ("bAlternateSetting", " 0"),
                ],
            );
            symlink(
                format!("../../..{path}"),
                self.root().join("bus/usb/devices").join(&name),
            )
            .unwrap();
            path
        }

        /// A SCSI disk under an interface, as usb-storage creates it; returns the disk devpath.
        pub(crate) fn disk(
            &self,
            interface: &str,
            host: u32,
            disk: &str,
            partitions: &[&str],
        ) -> String {
            let path = format!("{interface}/host{host}/target{host}:0:0/{host}:0:0:0/block/{disk}");
            self.attrs(&path, &[("size", "60063744"), ("removable", "1")]);
            for p in partitions {
                self.attrs(&format!("{path}/{p}"), &[("partition", "1")]);
            }
            path
        }

        pub(crate) fn remove(&self, devpath: &str) {
            let name = devpath.rsplit('/').next().unwrap();
            fs::remove_dir_all(self.root().join(devpath.trim_start_matches('/'))).unwrap();
            // Its link and its interfaces' links ("1-2", "1-2:1.0").
            for link in fs::read_dir(self.root().join("bus/usb/devices")).unwrap() {
                let link = link.unwrap();
                let n = link.file_name().into_string().unwrap();
                if n == name || n.starts_with(&format!("{name}:")) {
                    fs::remove_file(link.path()).unwrap();
                }
            }
        }

        pub(crate) fn root_hub(&self, bus: u32) -> String {
            let devpath = format!("{XHCI}/usb{bus}");
            self.device(
                &devpath,
                &[
                    ("idVendor", "1d6b"),
                    ("idProduct", "0002"),
                    ("manufacturer", "Linux 6.1.0-18-amd64 xhci-hcd"),
                    ("product", "xHCI Host Controller"),
                    ("serial", "0000:00:14.0"),
                    ("busnum", &bus.to_string()),
                    ("devnum", "1"),
                    ("bDeviceClass", "09"),
                    ("bNumInterfaces", " 1"),
                ],
            );
            self.interface(&devpath, 0, (0x09, 0, 0));
            devpath
        }

        /// SanDisk Ultra Fit 0781:5581 at 1-2, interface 1-2:1.0 (8/6/80), disk sdb.
        pub(crate) fn sandisk(&self) -> String {
            let devpath = format!("{XHCI}/usb1/1-2");
            self.device(
                &devpath,
                &[
                    ("idVendor", "0781"),
                    ("idProduct", "5581"),
                    ("bcdDevice", "0100"),
                    ("manufacturer", " SanDisk'"),
                    ("product", " SanDisk 3.2Gen1"),
                    ("serial", "4C530001230517117452"),
                    ("busnum", "1"),
                    ("devnum", "5"),
                    ("bDeviceClass", "00"),
                    ("bNumInterfaces", " 1"),
                    ("speed", "480"),
                ],
            );
            let iface = self.interface(&devpath, 0, (0x08, 0x06, 0x50));
            self.disk(&iface, 0, "sdb", &["sdb1"]);
            devpath
        }
    }

    #[test]
    fn reads_a_sandisk_stick_like_the_kernel_lays_it_out() {
        let fake = FakeSysfs::new();
        fake.root_hub(1);
        let stick = fake.sandisk();
        let info = fake.sysfs().read_device(&stick).unwrap();
        assert_eq!(
            info,
            UsbDeviceInfo {
                devpath: stick.clone(),
                vendor_id: Some("0781".into()),
                product_id: Some("5581".into()),
                // Kept as the device sent it, odd spacing and quote included.
                manufacturer: Some(" SanDisk'".into()),
                product: Some(" SanDisk 3.2Gen1".into()),
                serial: Some("4C530001230517117452".into()),
                busnum: Some(1),
                devnum: Some(5),
                device_class: Some(0),
                num_interfaces: Some(1),
                interfaces: vec![Interface {
                    number: 0,
                    class: 8,
                    subclass: 6,
                    protocol: 0x50
                }],
                block_devices: vec!["sdb".into()],
            }
        );
    }

    #[test]
    fn the_root_hub_does_not_claim_its_childrens_disks() {
        let fake = FakeSysfs::new();
        let hub = fake.root_hub(1);
        fake.sandisk();
        let info = fake.sysfs().read_device(&hub).unwrap();
        assert_eq!(info.vendor_id.as_deref(), Some("1d6b"));
        assert_eq!(info.device_class, Some(9));
        assert_eq!(info.interfaces.len(), 1);
        assert_eq!(info.interfaces[0].class, 9);
        assert!(info.block_devices.is_empty(), "{info:?}");
    }

    #[test]
    fn lists_devices_not_interfaces_hubs_first() {
        let fake = FakeSysfs::new();
        let stick = fake.sandisk();
        let hub = fake.root_hub(1);
        let hub2 = fake.root_hub(2);
        let mut names: Vec<_> = fs::read_dir(fake.root().join("bus/usb/devices"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["1-0:1.0", "1-2", "1-2:1.0", "2-0:1.0", "usb1", "usb2"]
        );
        assert_eq!(fake.sysfs().list_devices().unwrap(), [hub, stick, hub2]);
    }

    #[test]
    fn no_usb_bus_is_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Sysfs::new(dir.path()).list_devices().unwrap().is_empty());
    }

    #[test]
    fn a_vanished_device_reads_as_nothing_and_bad_devpaths_are_refused() {
        let fake = FakeSysfs::new();
        let info = fake
            .sysfs()
            .read_device(&format!("{XHCI}/usb1/1-9"))
            .unwrap();
        assert_eq!(info.vendor_id, None);
        assert!(info.interfaces.is_empty());
        for bad in ["/devices/../../etc", "devices/x", "/etc/passwd", ""] {
            assert!(
                matches!(
                    fake.sysfs().read_device(bad),
                    Err(SysfsError::BadDevpath { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn hostile_strings_are_bounded_and_stripped_of_control_characters() {
        let fake = FakeSysfs::new();
        let dev = format!("{XHCI}/usb1/1-3");
        let long = "A".repeat(5000);
        fake.device(
            &dev,
            &[
                ("idVendor", "16c0"),
                ("idProduct", "27db"),
                ("manufacturer", "Evil\x1b[31m\r\nCorp\0"),
                ("product", &long),
                ("serial", "Ünïcødé 🔑"),
            ],
        );
        let info = fake.sysfs().read_device(&dev).unwrap();
        assert_eq!(info.manufacturer.as_deref(), Some("Evil[31mCorp"));
        assert_eq!(info.product.unwrap().chars().count(), MAX_STRING_CHARS);
        assert_eq!(info.serial.as_deref(), Some("Ünïcødé 🔑"));
        // A right-to-left override and a zero-width space, which make a name display as another.
        assert_eq!(sanitize("Kingston\u{202E}kcipS\u{200B}"), "KingstonkcipS");
    }

    #[test]
    fn names_and_keyboards() {
        assert!(
            Interface {
                number: 0,
                class: 3,
                subclass: 1,
                protocol: 1
            }
            .is_keyboard()
        );
        // A boot mouse is HID but not a keyboard.
        assert!(
            !Interface {
                number: 0,
                class: 3,
                subclass: 1,
                protocol: 2
            }
            .is_keyboard()
        );
        for yes in ["1-2", "3-1.4.2", "usb1", "10-11"] {
            assert!(is_usb_device_name(yes), "{yes}");
        }
        for no in [
            "1-2:1.0",
            "usb",
            "host0",
            "1-",
            "-2",
            "1-2..3",
            "usb1-port1",
            "block",
        ] {
            assert!(!is_usb_device_name(no), "{no}");
        }
    }
}
