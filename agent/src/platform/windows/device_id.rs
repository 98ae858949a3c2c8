//! Windows device identifiers, as Plug and Play spells them. Pure string parsing, tested on
//! every platform; `setupapi` (Windows only) reads them from the system.
//!
//! - Device instance id of a USB device: `USB\VID_0781&PID_5567\4C530001231120115142`. The
//!   last part is the device's serial number when it has a unique one; otherwise Windows makes
//!   one up from the port (`5&2B8F3B1&0&1`, always with `&`).
//! - One interface of a composite device: `USB\VID_046D&PID_C52B&MI_01\7&2A5B1C&0&0001`.
//! - Compatible ids carry the class: `USB\Class_08&SubClass_06&Prot_50` (the most precise one
//!   first, then `USB\Class_08&SubClass_06`, `USB\Class_08`).
//! - A USB disk: `USBSTOR\Disk&Ven_SanDisk&Prod_Cruzer_Blade&Rev_1.00\4C530001231120115142&0`.

/// A device node as Plug and Play lists it (filled by `setupapi` on Windows; built by hand in
/// tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevNode {
    pub instance_id: String,
    /// The parent's instance id (a composite device for an interface, a USB device for a disk).
    pub parent_id: Option<String>,
    pub compatible_ids: Vec<String>,
    /// SPDRP_MFG: the driver's idea of the maker (e.g. "(Standard USB Host Controller)" or the
    /// device's own string).
    pub manufacturer: String,
    /// SPDRP_DEVICEDESC: the product name as reported or as the driver names it.
    pub description: String,
    /// SPDRP_FRIENDLYNAME, if any (disks: "SanDisk Cruzer Blade USB Device").
    pub friendly_name: String,
    /// For a USB disk: the drive letters of its volumes ("E:").
    pub volumes: Vec<String>,
}

/// A storage device as `IOCTL_STORAGE_GET_DEVICE_NUMBER` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskNumber {
    pub device_type: u32,
    pub number: u32,
}

/// Pairs disks with the drive letters on them: the same device type and number. Letters come
/// out sorted; a disk with none is left out.
pub fn letters_by_disk(
    disks: &[(String, DiskNumber)],
    letters: &[(String, DiskNumber)],
) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::new();
    for (disk, number) in disks {
        let mut on_it: Vec<String> = letters
            .iter()
            .filter(|(_, n)| n == number)
            .map(|(l, _)| l.clone())
            .collect();
        if !on_it.is_empty() {
            on_it.sort();
            out.insert(disk.clone(), on_it);
        }
    }
    out
}

/// What a USB instance id says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbInstance {
    /// Four lower-case hex digits, as in events.
    pub vendor_id: String,
    pub product_id: String,
    /// `MI_xx`: this node is interface `xx` of a composite device, not a device.
    pub interface: Option<u8>,
    /// The device's serial number, when Windows uses it as the instance's last part.
    pub serial: Option<String>,
}

/// Parses a `USB\VID_xxxx&PID_xxxx[&MI_xx]\...` instance id. `None` for other USB nodes (root
/// hubs: `USB\ROOT_HUB30\...`) and other buses.
pub fn parse_usb_instance(id: &str) -> Option<UsbInstance> {
    let mut parts = id.split('\\');
    if !parts.next()?.eq_ignore_ascii_case("USB") {
        return None;
    }
    let hardware = parts.next()?;
    let instance = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let (mut vendor, mut product, mut interface) = (None, None, None);
    for field in hardware.split('&') {
        let (key, value) = field.split_once('_')?;
        match key.to_ascii_uppercase().as_str() {
            "VID" => vendor = Some(hex4(value)?),
            "PID" => product = Some(hex4(value)?),
            "MI" => interface = Some(u8::from_str_radix(value, 16).ok()?),
            _ => {} // REV_xxxx and other qualifiers
        }
    }
    let serial = (!instance.is_empty() && !instance.contains('&')).then(|| instance.to_owned());
    Some(UsbInstance {
        vendor_id: vendor?,
        product_id: product?,
        interface,
        serial,
    })
}

fn hex4(s: &str) -> Option<String> {
    (s.len() == 4 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

/// A class triple from a compatible id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsbClass {
    pub class: u8,
    pub subclass: Option<u8>,
    pub protocol: Option<u8>,
}

/// Parses `USB\Class_08&SubClass_06&Prot_50` (or a shorter form). `None` for other ids
/// (`USB\COMPOSITE`, `USB\DevClass_00&...`, ids of other buses).
pub fn parse_compatible_id(id: &str) -> Option<UsbClass> {
    let rest = strip_prefix_ignore_case(id, "USB\\")?;
    let mut class = None;
    let (mut subclass, mut protocol) = (None, None);
    for field in rest.split('&') {
        let (key, value) = field.split_once('_')?;
        let value = u8::from_str_radix(value, 16).ok()?;
        match key.to_ascii_lowercase().as_str() {
            "class" => class = Some(value),
            "subclass" => subclass = Some(value),
            "prot" => protocol = Some(value),
            _ => return None,
        }
    }
    Some(UsbClass {
        class: class?,
        subclass,
        protocol,
    })
}

/// The most precise class among a node's compatible ids (the first that parses).
pub fn class_of(compatible_ids: &[String]) -> Option<UsbClass> {
    compatible_ids.iter().find_map(|id| parse_compatible_id(id))
}

/// Whether an instance id is a USB disk (`USBSTOR\...`).
pub fn is_usb_disk(id: &str) -> bool {
    strip_prefix_ignore_case(id, "USBSTOR\\").is_some()
}

/// `\\?\USB#VID_0781&PID_5567#4C53...#{a5dcbf10-6530-11d2-901f-00c04fb951ed}`, the symbolic link
/// a device-interface notification carries, back to its instance id.
pub fn instance_id_from_interface_path(path: &str) -> Option<String> {
    let rest = path
        .strip_prefix(r"\\?\")
        .or_else(|| path.strip_prefix(r"\??\"))?;
    let (device, guid) = rest.rsplit_once('#')?;
    if !(guid.starts_with('{') && guid.ends_with('}')) {
        return None;
    }
    Some(device.replace('#', "\\"))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usb_instance_ids() {
        let stick = parse_usb_instance(r"USB\VID_0781&PID_5567\4C530001231120115142").unwrap();
        assert_eq!(
            stick,
            UsbInstance {
                vendor_id: "0781".into(),
                product_id: "5567".into(),
                interface: None,
                serial: Some("4C530001231120115142".into()),
            }
        );
        // Lower case and a revision qualifier; no serial: Windows made the instance up.
        let keyboard = parse_usb_instance(r"usb\vid_046d&pid_C52B&rev_1201\5&2B8F3B1&0&1").unwrap();
        assert_eq!(
            (keyboard.vendor_id.as_str(), keyboard.product_id.as_str()),
            ("046d", "c52b")
        );
        assert_eq!(keyboard.serial, None);
        let interface = parse_usb_instance(r"USB\VID_046D&PID_C52B&MI_01\7&2A5B1C&0&0001").unwrap();
        assert_eq!(interface.interface, Some(1));
    }

    #[test]
    fn not_usb_devices() {
        for id in [
            r"USB\ROOT_HUB30\4&1B2C3D4E&0&0",
            r"USBSTOR\Disk&Ven_SanDisk&Prod_Cruzer&Rev_1.00\4C53&0",
            r"PCI\VEN_8086&DEV_A36D&SUBSYS_00000000&REV_10\3&11583659&0&A0",
            r"USB\VID_0781&PID_55\X",
            r"USB\VID_0781&PID_5567",
            r"USB\VID_0781&PID_5567\A\B",
            r"USB\VID_G781&PID_5567\A",
            r"USB\VID0781&PID_5567\A",
            "",
        ] {
            assert_eq!(parse_usb_instance(id), None, "{id}");
        }
    }

    #[test]
    fn classes_from_compatible_ids() {
        let ids: Vec<String> = [
            r"USB\Class_08&SubClass_06&Prot_50",
            r"USB\Class_08&SubClass_06",
            r"USB\Class_08",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            class_of(&ids),
            Some(UsbClass {
                class: 0x08,
                subclass: Some(0x06),
                protocol: Some(0x50)
            })
        );
        let keyboard = parse_compatible_id(r"USB\Class_03&SubClass_01&Prot_01").unwrap();
        assert_eq!(
            (keyboard.class, keyboard.protocol),
            (crate::platform::usb_names::CLASS_HID, Some(1))
        );
        // A composite device's own ids name no class.
        let composite: Vec<String> = [r"USB\DevClass_00&SubClass_00&Prot_00", r"USB\COMPOSITE"]
            .map(String::from)
            .to_vec();
        assert_eq!(class_of(&composite), None);
        assert_eq!(parse_compatible_id(r"USB\Class_ZZ"), None);
        assert_eq!(parse_compatible_id(r"HID\Class_03"), None);
    }

    #[test]
    fn drive_letters_pair_with_their_disk() {
        const DISK: u32 = 7; // FILE_DEVICE_DISK
        let n = |number| DiskNumber {
            device_type: DISK,
            number,
        };
        let disks = vec![
            ("USBSTOR\\STICK".to_string(), n(1)),
            ("USBSTOR\\CARD-READER-EMPTY".to_string(), n(2)),
        ];
        let letters = vec![
            ("C:".to_string(), n(0)),
            ("F:".to_string(), n(1)),
            ("E:".to_string(), n(1)),
            // Same number, another device type (a CD-ROM is numbered separately).
            (
                "D:".to_string(),
                DiskNumber {
                    device_type: 2,
                    number: 1,
                },
            ),
        ];
        let paired = letters_by_disk(&disks, &letters);
        assert_eq!(paired.len(), 1);
        assert_eq!(paired["USBSTOR\\STICK"], ["E:", "F:"]);
    }

    #[test]
    fn disks_and_interface_paths() {
        assert!(is_usb_disk(
            r"USBSTOR\Disk&Ven_SanDisk&Prod_Cruzer_Blade&Rev_1.00\4C53&0"
        ));
        assert!(is_usb_disk(r"usbstor\disk&ven_x\1"));
        assert!(!is_usb_disk(r"USB\VID_0781&PID_5567\4C53"));
        assert_eq!(
            instance_id_from_interface_path(
                r"\\?\USB#VID_0781&PID_5567#4C530001231120115142#{a5dcbf10-6530-11d2-901f-00c04fb951ed}"
            )
            .as_deref(),
            Some(r"USB\VID_0781&PID_5567\4C530001231120115142")
        );
        assert_eq!(instance_id_from_interface_path(r"USB#VID_0781#x#{g}"), None);
        assert_eq!(
            instance_id_from_interface_path(r"\\?\USB#VID_0781&PID_5567#x"),
            None
        );
    }
}
