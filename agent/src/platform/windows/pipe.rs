//! Thin binding for a local named pipe that users' processes talk to a SYSTEM service over:
//! the pipe's security descriptor, opening it as a client with only the rights a client needs,
//! and who a connected client is (its process, the account of that process's token, the
//! account's name). The only `unsafe` code of the browser extension's Windows transport.
#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::{AsRawHandle, IntoRawHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::windows::named_pipe::{NamedPipeClient, NamedPipeServer, ServerOptions};
use windows_sys::Win32::Foundation::{CloseHandle, FILETIME, HANDLE, LocalFree};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW,
    ConvertStringSidToSidW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    GetTokenInformation, LookupAccountSidW, PSECURITY_DESCRIPTOR, PSID, SECURITY_ATTRIBUTES,
    SID_NAME_USE, TOKEN_QUERY, TOKEN_USER, TokenUser,
};
use windows_sys::Win32::Storage::FileSystem::{
    FILE_FLAG_OVERLAPPED, FILE_READ_ATTRIBUTES, FILE_READ_DATA, FILE_WRITE_DATA,
    SECURITY_IDENTIFICATION, SYNCHRONIZE,
};
use windows_sys::Win32::System::Pipes::GetNamedPipeClientProcessId;
use windows_sys::Win32::System::Threading::{
    GetProcessTimes, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
};

/// What a client opens the pipe with: read and write its data, nothing more. Write access in
/// full (`GENERIC_WRITE`) would include the right to create instances of the pipe, which the
/// pipe's descriptor must deny users (see [`PipeSecurity`]).
const CLIENT_ACCESS: u32 = FILE_READ_DATA | FILE_WRITE_DATA | FILE_READ_ATTRIBUTES | SYNCHRONIZE;

/// A pipe's security descriptor, from SDDL, owned (freed on drop).
pub struct PipeSecurity {
    descriptor: PSECURITY_DESCRIPTOR,
}

// SAFETY: the descriptor is memory this value owns alone (LocalAlloc'd by Windows), never
// written after it is made; Windows only reads it when a pipe instance is created.
unsafe impl Send for PipeSecurity {}
// SAFETY: as above: shared use is read-only.
unsafe impl Sync for PipeSecurity {}

impl PipeSecurity {
    pub fn from_sddl(sddl: &str) -> io::Result<Self> {
        let wide = wide(OsStr::new(sddl));
        let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `wide` is a NUL-terminated UTF-16 string that outlives the call; on success
        // Windows stores a LocalAlloc'd descriptor in `descriptor`, freed in Drop.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                wide.as_ptr(),
                SDDL_REVISION_1,
                &mut descriptor,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::other(format!(
                "the pipe's security descriptor {sddl:?}: {}",
                io::Error::last_os_error()
            )));
        }
        Ok(Self { descriptor })
    }
}

impl Drop for PipeSecurity {
    fn drop(&mut self) {
        // SAFETY: LocalAlloc'd by ConvertStringSecurityDescriptorToSecurityDescriptorW, freed
        // once, here.
        unsafe { LocalFree(self.descriptor) };
    }
}

/// Creates an instance of the pipe `name` with `security`'s descriptor.
pub fn create_server(
    options: &ServerOptions,
    name: &OsStr,
    security: &PipeSecurity,
) -> io::Result<NamedPipeServer> {
    let mut attributes = SECURITY_ATTRIBUTES {
        nLength: size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: security.descriptor,
        bInheritHandle: 0,
    };
    // SAFETY: `attributes` is a valid SECURITY_ATTRIBUTES for the duration of the call, and
    // its descriptor lives as long as `security`; CreateNamedPipeW copies what it needs.
    unsafe { options.create_with_security_attributes_raw(name, (&raw mut attributes).cast()) }
}

/// Opens the pipe `name` as a client: read and write only, identification-level (the server
/// may learn who the client is, never act as it).
pub fn open_client(name: &OsStr) -> io::Result<NamedPipeClient> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .access_mode(CLIENT_ACCESS)
        .custom_flags(FILE_FLAG_OVERLAPPED)
        .security_qos_flags(SECURITY_IDENTIFICATION)
        .open(name)?;
    // SAFETY: the handle is ours alone (just opened, ownership moved out of `file`) and was
    // opened for overlapped I/O, as tokio requires.
    unsafe { NamedPipeClient::from_raw_handle(file.into_raw_handle()) }
}

/// A connected client: its process, and the account its process runs as.
#[derive(Debug, Clone)]
pub struct Client {
    pub pid: u32,
    /// The account's SID, as a string (`S-1-5-21-…`).
    pub sid: String,
}

/// Who is connected to `pipe`: from the pipe (the client's process id) and that process's
/// token. `connected_at` is when the connection was accepted: a process created after it
/// cannot be the client (its id was reused after the client exited), and is refused.
pub fn client(pipe: &NamedPipeServer, connected_at: SystemTime) -> io::Result<Client> {
    let mut pid = 0u32;
    // SAFETY: the handle is a live pipe server instance owned by `pipe`; pid is written only.
    if unsafe { GetNamedPipeClientProcessId(pipe.as_raw_handle() as HANDLE, &mut pid) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain call; the handle returned is closed by `Owned`.
    let process = Owned(unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) });
    if process.0.is_null() {
        return Err(io::Error::last_os_error());
    }
    if created(&process)? > connected_at + Duration::from_secs(1) {
        return Err(io::Error::other(
            "the client's process id now names a newer process",
        ));
    }
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: `process` is a live process handle; the token handle is closed by `Owned`.
    if unsafe { OpenProcessToken(process.0, TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let token = Owned(token);
    let mut len = 0u32;
    // SAFETY: a size query (null buffer, length 0): Windows writes only `len`.
    unsafe { GetTokenInformation(token.0, TokenUser, std::ptr::null_mut(), 0, &mut len) };
    if len == 0 || len > 4096 {
        return Err(io::Error::last_os_error());
    }
    // u64s, so the TOKEN_USER read from the start is aligned.
    let mut buffer = vec![0u64; (len as usize).div_ceil(8)];
    // SAFETY: `buffer` holds at least `len` bytes; Windows writes a TOKEN_USER and the SID it
    // points to, both inside it.
    if unsafe {
        GetTokenInformation(
            token.0,
            TokenUser,
            buffer.as_mut_ptr().cast(),
            len,
            &mut len,
        )
    } == 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call succeeded, so the buffer starts with an initialised, aligned TOKEN_USER.
    let user = unsafe { &*buffer.as_ptr().cast::<TOKEN_USER>() };
    let sid = sid_string(user.User.Sid)?;
    Ok(Client { pid, sid })
}

/// The name of the account `sid` (the name alone, as the agent's other sources report users),
/// or None when Windows cannot name it. May ask a domain controller: blocking.
pub fn account_name(sid: &str) -> Option<String> {
    let wide = wide(OsStr::new(sid));
    let mut psid: PSID = std::ptr::null_mut();
    // SAFETY: `wide` is NUL-terminated; on success `psid` is LocalAlloc'd, freed below.
    if unsafe { ConvertStringSidToSidW(wide.as_ptr(), &mut psid) } == 0 {
        return None;
    }
    let mut name = [0u16; 256];
    let mut domain = [0u16; 256];
    let (mut name_len, mut domain_len) = (name.len() as u32, domain.len() as u32);
    let mut kind: SID_NAME_USE = 0;
    // SAFETY: the buffers and their lengths (in u16s) match; `psid` is a valid SID.
    let ok = unsafe {
        LookupAccountSidW(
            std::ptr::null(),
            psid,
            name.as_mut_ptr(),
            &mut name_len,
            domain.as_mut_ptr(),
            &mut domain_len,
            &mut kind,
        )
    };
    // SAFETY: LocalAlloc'd by ConvertStringSidToSidW, freed once.
    unsafe { LocalFree(psid) };
    if ok == 0 {
        return None;
    }
    let name = String::from_utf16_lossy(&name[..(name_len as usize).min(name.len())]);
    (!name.is_empty()).then_some(name)
}

/// A handle closed when dropped.
struct Owned(HANDLE);

impl Drop for Owned {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: a handle this value owns, closed once.
            unsafe { CloseHandle(self.0) };
        }
    }
}

/// When the process was created.
fn created(process: &Owned) -> io::Result<SystemTime> {
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut creation, mut exit, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: a live process handle with query rights; the four FILETIMEs are written only.
    if unsafe { GetProcessTimes(process.0, &mut creation, &mut exit, &mut kernel, &mut user) } == 0
    {
        return Err(io::Error::last_os_error());
    }
    // FILETIME: 100 ns intervals since 1601-01-01.
    let ticks = (u64::from(creation.dwHighDateTime) << 32) | u64::from(creation.dwLowDateTime);
    let since_1970 = ticks.saturating_sub(116_444_736_000_000_000);
    Ok(UNIX_EPOCH + Duration::from_nanos(since_1970.saturating_mul(100)))
}

fn sid_string(sid: PSID) -> io::Result<String> {
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sid` points into a TOKEN_USER buffer that is still alive; on success `text`
    // is a LocalAlloc'd NUL-terminated string, freed below.
    if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `text` is NUL-terminated: count up to the NUL, then read that many u16s.
    let s = unsafe {
        let len = (0..).take_while(|&i| *text.add(i) != 0).count();
        String::from_utf16_lossy(std::slice::from_raw_parts(text, len))
    };
    // SAFETY: LocalAlloc'd by ConvertSidToStringSidW, freed once.
    unsafe { LocalFree(text.cast()) };
    Ok(s)
}

fn wide(s: &OsStr) -> Vec<u16> {
    s.encode_wide().chain(std::iter::once(0)).collect()
}
