//! USB rules: removable storage on pupils' devices, unapproved sticks on staff devices, and
//! keyboards appearing mid-session (keystroke-injection devices pose as keyboards).

use super::Verdict;
use super::groups::Class;
use super::setting::Setting;
use invigilator_proto::v1::UsbDevice;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsbSpec {
    /// Mass storage attached to a pupil device.
    pub storage_on_pupil_devices: Setting,
    /// Mass storage on a staff device that is not an approved (encrypted) model or serial.
    pub unapproved_storage_on_staff_devices: Setting,
    /// Approved storage: "vvvv:pppp" (vendor:product, hex) or "serial:XXXX".
    pub approved_storage: Vec<String>,
    /// A keyboard plugged in while the device is running.
    pub keyboard_attached: Setting,
}

impl Default for UsbSpec {
    fn default() -> Self {
        Self {
            storage_on_pupil_devices: Setting::On(super::Severity::Inappropriate),
            unapproved_storage_on_staff_devices: Setting::On(super::Severity::Serious),
            approved_storage: Vec::new(),
            keyboard_attached: Setting::On(super::Severity::Inappropriate),
        }
    }
}

impl UsbSpec {
    pub fn validate(&self) -> Result<(), String> {
        for a in &self.approved_storage {
            let ok = match a.strip_prefix("serial:") {
                Some(serial) => !serial.is_empty(),
                None => a.split_once(':').is_some_and(|(v, p)| hex4(v) && hex4(p)),
            };
            if !ok {
                return Err(format!(
                    "usb.approved_storage: {a:?} is neither \"vvvv:pppp\" nor \"serial:...\""
                ));
            }
        }
        Ok(())
    }

    fn approved(&self, u: &UsbDevice) -> bool {
        let model = format!("{}:{}", u.vendor_id, u.product_id).to_ascii_lowercase();
        self.approved_storage
            .iter()
            .any(|a| match a.strip_prefix("serial:") {
                Some(serial) => !u.serial.is_empty() && serial == u.serial,
                None => a.eq_ignore_ascii_case(&model),
            })
    }

    /// `device`: the class of the device's usual users; `person`: the class of whoever is
    /// logged on (or named by the event), Unknown when nobody is. The person decides: a
    /// teacher's approved stick in a classroom PC is fine, a pupil's stick in a staff laptop is
    /// not, and the approved-storage list applies wherever staff use it.
    pub fn evaluate(&self, device: Class, person: Class, u: &UsbDevice) -> Vec<Verdict> {
        let mut out = Vec::new();
        let present_or_attached = matches!(u.action.as_str(), "attach" | "present");
        let storage = u.interface_classes.iter().any(|c| c == "mass-storage");
        let what = describe(u);
        let judged_as = match person {
            Class::Pupil | Class::Staff => person,
            // Nobody placed (no session, a system account, a visitor): the device decides.
            _ => device,
        };
        if present_or_attached && storage {
            match judged_as {
                Class::Pupil => out.extend(Verdict::new(
                    "usb.storage_on_pupil_device",
                    "removable-media",
                    self.storage_on_pupil_devices,
                    if person == Class::Pupil {
                        format!("USB storage used by a pupil: {what}")
                    } else {
                        format!("USB storage on a pupil device: {what}")
                    },
                    "interface class mass-storage".into(),
                )),
                Class::Staff if !self.approved(u) => out.extend(Verdict::new(
                    "usb.unapproved_storage",
                    "removable-media",
                    self.unapproved_storage_on_staff_devices,
                    format!("USB storage that is not an approved encrypted model: {what}"),
                    format!(
                        "{}:{} serial {:?} not in usb.approved_storage",
                        u.vendor_id, u.product_id, u.serial
                    ),
                )),
                _ => {}
            }
        }
        if u.action == "attach" && u.keyboard {
            out.extend(Verdict::new(
                "usb.keyboard_attached",
                "keystroke-injection",
                self.keyboard_attached,
                format!("a keyboard was plugged in while the device was running: {what}"),
                "HID boot keyboard interface".into(),
            ));
        }
        out
    }
}

fn hex4(s: &str) -> bool {
    s.len() == 4 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn describe(u: &UsbDevice) -> String {
    let name = [u.manufacturer.as_str(), u.product.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    format!("{name} ({}:{})", u.vendor_id, u.product_id)
        .trim()
        .to_owned()
}
