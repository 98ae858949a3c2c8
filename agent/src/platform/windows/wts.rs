//! Thin binding to the Remote Desktop Services API (wtsapi32): who is logged on to a session,
//! and which sessions exist. The only `unsafe` code in the agent's session handling; each
//! call's buffer is copied out and freed before returning.
#![allow(unsafe_code)]

use windows_sys::Win32::System::RemoteDesktop::{
    WTS_CURRENT_SERVER_HANDLE, WTS_INFO_CLASS, WTS_SESSION_INFOW, WTSActive, WTSClientProtocolType,
    WTSConnected, WTSDisconnected, WTSEnumerateSessionsW, WTSFreeMemory, WTSINFOW,
    WTSQuerySessionInformationW, WTSSessionInfo, WTSUserName,
};

use super::SessionLookup as Lookup;

/// The user logged on to `session_id` (empty when nobody is, or Windows no longer knows), and
/// whether its client is remote (Remote Desktop).
pub fn lookup(session_id: u32) -> Lookup {
    let user = user(session_id);
    // WTSClientProtocolType: a USHORT, 0 for the console, 2 for RDP.
    let remote = query(session_id, WTSClientProtocolType)
        .and_then(|b| b.get(..2).map(|p| u16::from_le_bytes([p[0], p[1]])))
        .is_some_and(|p| p != 0);
    Lookup { user, remote }
}

/// The user logged on to `session_id`; empty when nobody is, or Windows no longer knows.
pub fn user(session_id: u32) -> String {
    query(session_id, WTSUserName)
        .map(|bytes| {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            super::utf16_z(&units)
        })
        .unwrap_or_default()
}

/// When Windows last saw keyboard or mouse input in the session, in µs since the Unix epoch;
/// `None` when it does not say (0, which some Windows versions give for console sessions).
pub fn last_input_us(session_id: u32) -> Option<i64> {
    let bytes = query(session_id, WTSSessionInfo)?;
    if bytes.len() < size_of::<WTSINFOW>() {
        return None;
    }
    // SAFETY: the buffer holds at least one WTSINFOW (checked above), which is plain data;
    // read_unaligned because a Vec<u8> gives no alignment guarantee.
    let info = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<WTSINFOW>()) };
    let filetime = u64::try_from(info.LastInputTime).ok().filter(|t| *t > 0)?;
    Some(super::etw_layout::filetime_to_unix_us(filetime))
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
