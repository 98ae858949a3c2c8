//! Thin binding to the Remote Desktop Services API (wtsapi32): who is logged on to a session,
//! and which sessions exist. The only `unsafe` code in the agent's session handling; each
//! call's buffer is copied out and freed before returning.
#![allow(unsafe_code)]

use windows_sys::Win32::System::RemoteDesktop::{
    WTS_CURRENT_SERVER_HANDLE, WTS_INFO_CLASS, WTS_SESSION_INFOW, WTSActive, WTSClientProtocolType,
    WTSConnected, WTSDisconnected, WTSEnumerateSessionsW, WTSFreeMemory,
    WTSQuerySessionInformationW, WTSUserName,
};

use super::session_change::Lookup;

/// The user logged on to `session_id` (empty when nobody is, or Windows no longer knows), and
/// whether its client is remote (Remote Desktop).
pub fn lookup(session_id: u32) -> Lookup {
    let user = query(session_id, WTSUserName)
        .map(|bytes| utf16_z(&bytes))
        .unwrap_or_default();
    // WTSClientProtocolType: a USHORT, 0 for the console, 2 for RDP.
    let remote = query(session_id, WTSClientProtocolType)
        .and_then(|b| b.get(..2).map(|p| u16::from_le_bytes([p[0], p[1]])))
        .is_some_and(|p| p != 0);
    Lookup { user, remote }
}

/// The sessions that have, or may have, someone in them (active, connected, disconnected).
pub fn sessions() -> Vec<u32> {
    let mut info: *mut WTS_SESSION_INFOW = std::ptr::null_mut();
    let mut count: u32 = 0;
    // SAFETY: the out-pointers are valid for writes; on success Windows allocates `count`
    // entries at `info`, which are read once and released with WTSFreeMemory below.
    let ok =
        unsafe { WTSEnumerateSessionsW(WTS_CURRENT_SERVER_HANDLE, 0, 1, &mut info, &mut count) };
    if ok == 0 || info.is_null() {
        return Vec::new();
    }
    // SAFETY: on success `info` points to `count` initialised WTS_SESSION_INFOW entries.
    let entries = unsafe { std::slice::from_raw_parts(info, count as usize) };
    let ids = entries
        .iter()
        .filter(|e| [WTSActive, WTSConnected, WTSDisconnected].contains(&e.State))
        .map(|e| e.SessionId)
        .collect();
    // SAFETY: `info` came from WTSEnumerateSessionsW and is not used after this.
    unsafe { WTSFreeMemory(info.cast()) };
    ids
}

/// One WTSQuerySessionInformationW answer, copied into owned bytes.
fn query(session_id: u32, class: WTS_INFO_CLASS) -> Option<Vec<u8>> {
    let mut buf: *mut u16 = std::ptr::null_mut();
    let mut bytes: u32 = 0;
    // SAFETY: the out-pointers are valid for writes; on success Windows allocates `bytes`
    // bytes at `buf`, copied below and released with WTSFreeMemory.
    let ok = unsafe {
        WTSQuerySessionInformationW(
            WTS_CURRENT_SERVER_HANDLE,
            session_id,
            class,
            &mut buf,
            &mut bytes,
        )
    };
    if ok == 0 || buf.is_null() {
        return None;
    }
    // SAFETY: on success `buf` points to `bytes` initialised bytes.
    let out = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), bytes as usize) }.to_vec();
    // SAFETY: `buf` came from WTSQuerySessionInformationW and is not used after this.
    unsafe { WTSFreeMemory(buf.cast()) };
    Some(out)
}

/// A NUL-terminated UTF-16LE string in a byte buffer (lossy: user names are never invalid).
fn utf16_z(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}
