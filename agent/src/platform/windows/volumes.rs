//! Thin binding: which drive letters each USB disk carries. Windows links a letter to its disk
//! only through the storage stack, so both ends are asked the same question,
//! `IOCTL_STORAGE_GET_DEVICE_NUMBER`: every drive letter (`\\.\E:`) and every disk interface
//! (SetupAPI, `GUID_DEVINTERFACE_DISK`); equal (device type, number) means the same disk, and
//! [`super::device_id::letters_by_disk`] pairs them. Handles are opened with no access rights
//! (enough for the query, and never blocking the user's own use of the drive).
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::AsRawHandle;

use windows_sys::Win32::Devices::DeviceAndDriverInstallation::{
    DIGCF_DEVICEINTERFACE, DIGCF_PRESENT, HDEVINFO, SP_DEVICE_INTERFACE_DATA,
    SP_DEVICE_INTERFACE_DETAIL_DATA_W, SP_DEVINFO_DATA, SetupDiEnumDeviceInterfaces,
    SetupDiGetClassDevsW, SetupDiGetDeviceInstanceIdW, SetupDiGetDeviceInterfaceDetailW,
};
use windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE;
use windows_sys::Win32::Storage::FileSystem::{GetDriveTypeW, GetLogicalDrives};
use windows_sys::Win32::System::IO::DeviceIoControl;
use windows_sys::Win32::System::Ioctl::{
    GUID_DEVINTERFACE_DISK, IOCTL_STORAGE_GET_DEVICE_NUMBER, STORAGE_DEVICE_NUMBER,
};

use super::device_id::{DiskNumber, is_usb_disk, letters_by_disk};
use super::setupapi::DeviceList;
use super::utf16_z;

const DRIVE_REMOVABLE: u32 = 2;
const DRIVE_FIXED: u32 = 3;
/// FILE_SHARE_READ | FILE_SHARE_WRITE.
const SHARE_READ_WRITE: u32 = 0x3;
/// Longest device interface path read, in UTF-16 units.
const PATH_UNITS: usize = 1024;

/// USB disk instance id (`USBSTOR\...`) -> its drive letters ("E:"), sorted.
pub fn usb_disk_letters() -> BTreeMap<String, Vec<String>> {
    letters_by_disk(&usb_disks(), &drive_letters())
}

/// The storage device number behind a path (a drive letter or a disk interface).
fn device_number(path: &str) -> Option<DiskNumber> {
    let file = OpenOptions::new()
        .access_mode(0)
        .share_mode(SHARE_READ_WRITE)
        .open(path)
        .ok()?;
    let mut out = STORAGE_DEVICE_NUMBER {
        DeviceType: 0,
        DeviceNumber: 0,
        PartitionNumber: 0,
    };
    let mut returned = 0u32;
    // SAFETY: the handle is open for the duration of the call; `out` is a properly sized
    // STORAGE_DEVICE_NUMBER, its size as told; no input buffer; synchronous (no OVERLAPPED).
    let ok = unsafe {
        DeviceIoControl(
            file.as_raw_handle(),
            IOCTL_STORAGE_GET_DEVICE_NUMBER,
            std::ptr::null(),
            0,
            (&raw mut out).cast(),
            size_of::<STORAGE_DEVICE_NUMBER>() as u32,
            &mut returned,
            std::ptr::null_mut(),
        )
    };
    (ok != 0).then_some(DiskNumber {
        device_type: out.DeviceType,
        number: out.DeviceNumber,
    })
}

/// Removable and fixed drive letters (USB disks show as either) with their disk's number.
fn drive_letters() -> Vec<(String, DiskNumber)> {
    // SAFETY: no arguments; returns a bit mask.
    let mask = unsafe { GetLogicalDrives() };
    (0..26u8)
        .filter(|i| mask & (1 << i) != 0)
        .filter_map(|i| {
            let letter = char::from(b'A' + i);
            let root: Vec<u16> = format!("{letter}:\\").encode_utf16().chain([0]).collect();
            // SAFETY: `root` is NUL-terminated and outlives the call.
            let kind = unsafe { GetDriveTypeW(root.as_ptr()) };
            if kind != DRIVE_REMOVABLE && kind != DRIVE_FIXED {
                return None;
            }
            let number = device_number(&format!(r"\\.\{letter}:"))?;
            Some((format!("{letter}:"), number))
        })
        .collect()
}

/// Every present USB disk's instance id with its disk number.
fn usb_disks() -> Vec<(String, DiskNumber)> {
    // SAFETY: a static GUID, no enumerator, no window.
    let set = unsafe {
        SetupDiGetClassDevsW(
            &GUID_DEVINTERFACE_DISK,
            std::ptr::null(),
            std::ptr::null_mut(),
            DIGCF_PRESENT | DIGCF_DEVICEINTERFACE,
        )
    };
    if set == INVALID_HANDLE_VALUE as HDEVINFO {
        return Vec::new();
    }
    let list = DeviceList(set);
    let mut out = Vec::new();
    for index in 0.. {
        let mut interface = SP_DEVICE_INTERFACE_DATA {
            cbSize: size_of::<SP_DEVICE_INTERFACE_DATA>() as u32,
            ..Default::default()
        };
        // SAFETY: `interface` is properly sized; the list and the GUID outlive the call.
        let ok = unsafe {
            SetupDiEnumDeviceInterfaces(
                list.0,
                std::ptr::null(),
                &GUID_DEVINTERFACE_DISK,
                index,
                &mut interface,
            )
        };
        if ok == 0 {
            break; // ERROR_NO_MORE_ITEMS
        }
        let Some((path, instance_id)) = interface_path(&list, &interface) else {
            continue;
        };
        if !is_usb_disk(&instance_id) {
            continue;
        }
        if let Some(number) = device_number(&path) {
            out.push((instance_id, number));
        }
    }
    out
}

/// A disk interface's device path and its device's instance id.
fn interface_path(
    list: &DeviceList,
    interface: &SP_DEVICE_INTERFACE_DATA,
) -> Option<(String, String)> {
    // SP_DEVICE_INTERFACE_DETAIL_DATA_W is a u32 cbSize followed by the path; u64 storage
    // gives it the 8-byte alignment the structure needs on x64.
    let mut storage = vec![0u64; (4 + PATH_UNITS * 2).div_ceil(8)];
    let detail = storage
        .as_mut_ptr()
        .cast::<SP_DEVICE_INTERFACE_DETAIL_DATA_W>();
    // SAFETY: `storage` is large enough for the header and is exclusively ours; cbSize must
    // be the structure's own size (8 on x64), not the buffer's.
    unsafe { (*detail).cbSize = size_of::<SP_DEVICE_INTERFACE_DETAIL_DATA_W>() as u32 };
    let mut device = SP_DEVINFO_DATA {
        cbSize: size_of::<SP_DEVINFO_DATA>() as u32,
        ..Default::default()
    };
    let bytes = (storage.len() * 8) as u32;
    // SAFETY: `detail` points to `bytes` writable bytes; `device` is properly sized.
    let ok = unsafe {
        SetupDiGetDeviceInterfaceDetailW(
            list.0,
            interface,
            detail,
            bytes,
            std::ptr::null_mut(),
            &mut device,
        )
    };
    if ok == 0 {
        return None;
    }
    // SAFETY: on success the path, NUL-terminated, starts at DevicePath and lies within
    // `storage` (its size was given); read as u16 units up to the end of the buffer.
    let units = unsafe {
        let start = (&raw const (*detail).DevicePath).cast::<u16>();
        let offset = start.offset_from(storage.as_ptr().cast::<u16>()) as usize;
        std::slice::from_raw_parts(start, storage.len() * 4 - offset)
    };
    let path = utf16_z(units);
    let mut id = [0u16; 256];
    let mut needed = 0u32;
    // SAFETY: `id` holds 256 units, as told; `device` was filled by the call above.
    let ok = unsafe {
        SetupDiGetDeviceInstanceIdW(
            list.0,
            &device,
            id.as_mut_ptr(),
            id.len() as u32,
            &mut needed,
        )
    };
    (ok != 0).then(|| (path, utf16_z(&id)))
}
