//! Thin binding to SetupAPI and the configuration manager: the device nodes Plug and Play
//! lists as present under the `USB` and `USBSTOR` enumerators, with their parents, compatible
//! ids and names. Every buffer is copied out before the call returns; the device information
//! list is destroyed by a guard.
#![allow(unsafe_code)]

use std::io;

use windows_sys::Win32::Devices::DeviceAndDriverInstallation::{
    CM_Get_Device_IDW, CM_Get_Parent, CR_SUCCESS, DIGCF_ALLCLASSES, DIGCF_PRESENT, HDEVINFO,
    SETUP_DI_REGISTRY_PROPERTY, SP_DEVINFO_DATA, SPDRP_COMPATIBLEIDS, SPDRP_DEVICEDESC,
    SPDRP_FRIENDLYNAME, SPDRP_MFG, SetupDiDestroyDeviceInfoList, SetupDiEnumDeviceInfo,
    SetupDiGetClassDevsW, SetupDiGetDeviceInstanceIdW, SetupDiGetDeviceRegistryPropertyW,
};
use windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE;

use super::device_id::DevNode;
use super::utf16_z;

/// Longest device instance id (MAX_DEVICE_ID_LEN is 200) and property read, in UTF-16 units.
const ID_UNITS: usize = 256;
const PROPERTY_BYTES: usize = 8192;

/// Every present node under `USB` (devices, interfaces, hubs) and `USBSTOR` (disks, with
/// their drive letters).
pub fn present_usb_nodes() -> io::Result<Vec<DevNode>> {
    let mut nodes = present("USB")?;
    let mut disks = present("USBSTOR")?;
    if !disks.is_empty() {
        let mut letters = super::volumes::usb_disk_letters();
        for disk in &mut disks {
            disk.volumes = letters.remove(&disk.instance_id).unwrap_or_default();
        }
    }
    nodes.extend(disks);
    Ok(nodes)
}

/// A device information list, destroyed when dropped.
pub(super) struct DeviceList(pub(super) HDEVINFO);

impl Drop for DeviceList {
    fn drop(&mut self) {
        // SAFETY: the list came from SetupDiGetClassDevsW and is destroyed once, here.
        unsafe { SetupDiDestroyDeviceInfoList(self.0) };
    }
}

fn present(enumerator: &str) -> io::Result<Vec<DevNode>> {
    let name = wide(enumerator);
    // SAFETY: `name` is NUL-terminated and outlives the call; no class GUID, no window.
    let set = unsafe {
        SetupDiGetClassDevsW(
            std::ptr::null(),
            name.as_ptr(),
            std::ptr::null_mut(),
            DIGCF_PRESENT | DIGCF_ALLCLASSES,
        )
    };
    if set == INVALID_HANDLE_VALUE as HDEVINFO {
        return Err(io::Error::last_os_error());
    }
    let list = DeviceList(set);
    let mut nodes = Vec::new();
    for index in 0.. {
        let mut data = SP_DEVINFO_DATA {
            cbSize: size_of::<SP_DEVINFO_DATA>() as u32,
            ..Default::default()
        };
        // SAFETY: `data` is a properly sized SP_DEVINFO_DATA; the list is alive.
        if unsafe { SetupDiEnumDeviceInfo(list.0, index, &mut data) } == 0 {
            break; // ERROR_NO_MORE_ITEMS (or the list went bad): what was read is kept
        }
        let Some(instance_id) = instance_id(&list, &data) else {
            continue;
        };
        nodes.push(DevNode {
            instance_id,
            parent_id: parent_id(data.DevInst),
            compatible_ids: property(&list, &data, SPDRP_COMPATIBLEIDS)
                .map(|units| multi_sz(&units))
                .unwrap_or_default(),
            manufacturer: text(&list, &data, SPDRP_MFG),
            description: text(&list, &data, SPDRP_DEVICEDESC),
            friendly_name: text(&list, &data, SPDRP_FRIENDLYNAME),
            volumes: Vec::new(),
        });
    }
    Ok(nodes)
}

fn instance_id(list: &DeviceList, data: &SP_DEVINFO_DATA) -> Option<String> {
    let mut buf = [0u16; ID_UNITS];
    let mut needed = 0u32;
    // SAFETY: `buf` holds ID_UNITS units, as told; `data` came from SetupDiEnumDeviceInfo.
    let ok = unsafe {
        SetupDiGetDeviceInstanceIdW(list.0, data, buf.as_mut_ptr(), ID_UNITS as u32, &mut needed)
    };
    (ok != 0).then(|| utf16_z(&buf))
}

fn parent_id(devinst: u32) -> Option<String> {
    let mut parent = 0u32;
    // SAFETY: `parent` is valid for writes; `devinst` came from SetupDiEnumDeviceInfo.
    if unsafe { CM_Get_Parent(&mut parent, devinst, 0) } != CR_SUCCESS {
        return None;
    }
    let mut buf = [0u16; ID_UNITS];
    // SAFETY: `buf` holds ID_UNITS units, as told; the id is NUL-terminated when it fits.
    let rc = unsafe { CM_Get_Device_IDW(parent, buf.as_mut_ptr(), ID_UNITS as u32, 0) };
    (rc == CR_SUCCESS).then(|| utf16_z(&buf))
}

/// A registry property as UTF-16 units (strings and multi-strings), `None` if absent.
fn property(
    list: &DeviceList,
    data: &SP_DEVINFO_DATA,
    which: SETUP_DI_REGISTRY_PROPERTY,
) -> Option<Vec<u16>> {
    let mut bytes = vec![0u8; PROPERTY_BYTES];
    let (mut kind, mut needed) = (0u32, 0u32);
    // SAFETY: `bytes` holds PROPERTY_BYTES bytes, as told; out-pointers are valid for writes.
    let ok = unsafe {
        SetupDiGetDeviceRegistryPropertyW(
            list.0,
            data,
            which,
            &mut kind,
            bytes.as_mut_ptr(),
            PROPERTY_BYTES as u32,
            &mut needed,
        )
    };
    if ok == 0 {
        return None;
    }
    let len = (needed as usize).min(PROPERTY_BYTES);
    Some(
        bytes[..len]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect(),
    )
}

fn text(list: &DeviceList, data: &SP_DEVINFO_DATA, which: SETUP_DI_REGISTRY_PROPERTY) -> String {
    property(list, data, which)
        .map(|units| utf16_z(&units))
        .unwrap_or_default()
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// REG_MULTI_SZ: strings separated by NULs, ending with an empty one.
fn multi_sz(units: &[u16]) -> Vec<String> {
    units
        .split(|&u| u == 0)
        .take_while(|s| !s.is_empty())
        .map(String::from_utf16_lossy)
        .collect()
}
