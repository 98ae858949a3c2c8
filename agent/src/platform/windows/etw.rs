//! Thin binding to Event Tracing for Windows: a private real-time session that receives the
//! `Microsoft-Windows-Kernel-Process` ProcessStart events, and the drive-letter table that
//! turns their kernel image paths into ordinary ones. The payload is decoded in `etw_layout`;
//! here the event is only copied out of ETW's buffer and passed on.
//!
//! Needs administrator rights (LocalSystem, as the service runs) to start the session.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::io;
use std::sync::mpsc::{self, Sender, SyncSender};
use std::thread;

use thiserror::Error;
use windows_sys::Win32::Foundation::{
    ERROR_ALREADY_EXISTS, ERROR_CTX_CLOSE_PENDING, ERROR_SUCCESS, WIN32_ERROR,
};
use windows_sys::Win32::Storage::FileSystem::QueryDosDeviceW;
use windows_sys::Win32::System::Diagnostics::Etw::{
    CONTROLTRACE_HANDLE, CloseTrace, ControlTraceW, EVENT_CONTROL_CODE_ENABLE_PROVIDER,
    EVENT_RECORD, EVENT_TRACE_CONTROL_STOP, EVENT_TRACE_LOGFILEW, EVENT_TRACE_PROPERTIES,
    EVENT_TRACE_REAL_TIME_MODE, EnableTraceEx2, OpenTraceW, PROCESS_TRACE_MODE_EVENT_RECORD,
    PROCESS_TRACE_MODE_REAL_TIME, PROCESSTRACE_HANDLE, ProcessTrace, StartTraceW,
    TRACE_LEVEL_INFORMATION, WNODE_FLAG_TRACED_GUID,
};
use windows_sys::core::GUID;

use super::etw_layout::{KERNEL_PROCESS_PROVIDER, KEYWORD_PROCESS, PROCESS_START};

/// The session's name, visible in `logman query -ets`. One per machine: a session left behind
/// by an agent that crashed is stopped and replaced.
pub const SESSION_NAME: &str = "Invigilator-Process";

const PROVIDER: GUID = GUID::from_u128(KERNEL_PROCESS_PROVIDER);

/// `WNODE_HEADER.ClientContext`: query-performance-counter timestamps (the consumer gets them
/// converted to FILETIME system time).
const CLOCK_QPC: u32 = 1;

/// A ProcessStart as ETW delivered it, copied out of the callback.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub id: u16,
    pub version: u8,
    /// The process that wrote the event (for ProcessStart: the creator, usually the parent).
    pub header_pid: u32,
    /// When it was logged, as a FILETIME.
    pub timestamp: i64,
    pub user_data: Vec<u8>,
}

#[derive(Debug, Error)]
pub enum EtwError {
    #[error("StartTraceW({SESSION_NAME}) failed (administrator rights are needed): {0}")]
    Start(io::Error),
    #[error("EnableTraceEx2(Microsoft-Windows-Kernel-Process) failed: {0}")]
    Enable(io::Error),
    #[error("OpenTraceW({SESSION_NAME}) failed: {0}")]
    Open(io::Error),
    #[error("cannot start the ETW consumer thread: {0}")]
    Thread(io::Error),
}

/// The running session. Dropping it stops the session; the consumer thread then ends and the
/// channel's sender is dropped, which the receiving side sees as a disconnection.
pub struct ProcessStartTrace {
    trace: PROCESSTRACE_HANDLE,
}

impl ProcessStartTrace {
    /// Starts the session and its consumer thread ("etw-process"); every ProcessStart from now
    /// on goes to `tx`.
    pub fn start(tx: Sender<RawEvent>) -> Result<Self, EtwError> {
        stop_session();
        let mut props = Properties::new();
        let name = wide(SESSION_NAME);
        let mut session = CONTROLTRACE_HANDLE { Value: 0 };
        // SAFETY: `props` is a zeroed EVENT_TRACE_PROPERTIES followed by room for the logger
        // name, its BufferSize and LoggerNameOffset say so; `name` is NUL-terminated.
        let mut rc = unsafe { StartTraceW(&mut session, name.as_ptr(), props.as_mut_ptr()) };
        if rc == ERROR_ALREADY_EXISTS {
            stop_session();
            props = Properties::new();
            // SAFETY: as above.
            rc = unsafe { StartTraceW(&mut session, name.as_ptr(), props.as_mut_ptr()) };
        }
        check(rc).map_err(EtwError::Start)?;
        // From here on a failure must stop the session again, which dropping `this` does.
        let mut this = Self {
            trace: PROCESSTRACE_HANDLE {
                Value: INVALID_TRACE,
            },
        };

        // SAFETY: `session` was just started; PROVIDER is a valid GUID; no enable parameters.
        let rc = unsafe {
            EnableTraceEx2(
                session,
                &PROVIDER,
                EVENT_CONTROL_CODE_ENABLE_PROVIDER,
                TRACE_LEVEL_INFORMATION as u8,
                KEYWORD_PROCESS,
                0,
                0,
                std::ptr::null(),
            )
        };
        check(rc).map_err(EtwError::Enable)?;

        let (opened_tx, opened_rx) = mpsc::sync_channel(1);
        thread::Builder::new()
            .name("etw-process".into())
            .spawn(move || consume(tx, opened_tx))
            .map_err(EtwError::Thread)?;
        this.trace = opened_rx
            .recv()
            .map_err(|_| EtwError::Open(io::Error::other("the consumer thread ended")))?
            .map_err(EtwError::Open)?;
        Ok(this)
    }
}

impl Drop for ProcessStartTrace {
    fn drop(&mut self) {
        if self.trace.Value != INVALID_TRACE {
            // SAFETY: `trace` came from OpenTraceW and is closed only here.
            unsafe { CloseTrace(self.trace) };
        }
        stop_session();
    }
}

/// `INVALID_PROCESSTRACE_HANDLE` (`INVALID_HANDLE_VALUE` widened to 64 bits).
const INVALID_TRACE: u64 = u64::MAX;

/// The consumer thread: opens the trace, reports the handle (or why not) through `opened`, then
/// delivers events to `on_event` until the trace is closed or the session stops. `tx` lives on
/// this thread's stack for all of that, so the callback's pointer to it stays valid.
fn consume(tx: Sender<RawEvent>, opened: SyncSender<io::Result<PROCESSTRACE_HANDLE>>) {
    let mut name = wide(SESSION_NAME);
    let mut logfile = EVENT_TRACE_LOGFILEW {
        LoggerName: name.as_mut_ptr(),
        Context: (&raw const tx).cast_mut().cast::<c_void>(),
        ..Default::default()
    };
    logfile.Anonymous1.ProcessTraceMode =
        PROCESS_TRACE_MODE_REAL_TIME | PROCESS_TRACE_MODE_EVENT_RECORD;
    logfile.Anonymous2.EventRecordCallback = Some(on_event);
    // SAFETY: `logfile` is initialised for a real-time consumer with an EVENT_RECORD callback;
    // `name` outlives the call; `Context` points to `tx`, which outlives ProcessTrace below.
    let trace = unsafe { OpenTraceW(&mut logfile) };
    if trace.Value == INVALID_TRACE {
        let _ = opened.send(Err(io::Error::last_os_error()));
        return;
    }
    if opened.send(Ok(trace)).is_err() {
        return;
    }
    // SAFETY: `trace` is an open real-time trace handle; its callbacks run on this thread,
    // within this call.
    let rc = unsafe { ProcessTrace(&trace, 1, std::ptr::null(), std::ptr::null()) };
    match rc {
        ERROR_SUCCESS | ERROR_CTX_CLOSE_PENDING => tracing::debug!("ETW process trace ended"),
        rc => tracing::warn!(
            "ETW process trace ended: {}",
            io::Error::from_raw_os_error(rc as i32)
        ),
    }
}

/// Runs on the consumer thread for every event of the session. Must not unwind into ETW: it
/// only compares, copies and sends, none of which panics (a failed allocation aborts).
unsafe extern "system" fn on_event(record: *mut EVENT_RECORD) {
    // SAFETY: ETW passes a valid record for the duration of the call (or null, checked).
    let Some(record) = (unsafe { record.as_ref() }) else {
        return;
    };
    let header = &record.EventHeader;
    if !same_guid(&header.ProviderId, &PROVIDER) || header.EventDescriptor.Id != PROCESS_START {
        return;
    }
    let tx = record.UserContext.cast::<Sender<RawEvent>>();
    if tx.is_null() {
        return;
    }
    let user_data = if record.UserData.is_null() {
        Vec::new()
    } else {
        // SAFETY: ETW guarantees UserDataLength readable bytes at UserData for this call.
        unsafe {
            std::slice::from_raw_parts(record.UserData.cast::<u8>(), record.UserDataLength.into())
        }
        .to_vec()
    };
    let event = RawEvent {
        id: header.EventDescriptor.Id,
        version: header.EventDescriptor.Version,
        header_pid: header.ProcessId,
        timestamp: header.TimeStamp,
        user_data,
    };
    // SAFETY: UserContext is the `Sender` boxed in `start`, alive until ProcessTrace returns.
    // A closed receiver is not an error here: the session is about to be stopped.
    let _ = unsafe { &*tx }.send(event);
}

fn same_guid(a: &GUID, b: &GUID) -> bool {
    (a.data1, a.data2, a.data3, a.data4) == (b.data1, b.data2, b.data3, b.data4)
}

/// Stops the session of our name, if one runs (left over from a crash, or ours on drop).
fn stop_session() {
    let mut props = Properties::new();
    let name = wide(SESSION_NAME);
    // SAFETY: as for StartTraceW; a zero handle with a name selects the session by name.
    let rc = unsafe {
        ControlTraceW(
            CONTROLTRACE_HANDLE { Value: 0 },
            name.as_ptr(),
            props.as_mut_ptr(),
            EVENT_TRACE_CONTROL_STOP,
        )
    };
    if rc == ERROR_SUCCESS {
        tracing::debug!("stopped the ETW session {SESSION_NAME}");
    }
}

/// EVENT_TRACE_PROPERTIES followed by the room Windows wants for the logger name, in a
/// `u64` buffer so the structure is aligned.
struct Properties(Vec<u64>);

impl Properties {
    fn new() -> Self {
        let header = size_of::<EVENT_TRACE_PROPERTIES>();
        let total = header + 2 * (SESSION_NAME.len() + 1);
        let mut buf = vec![0u64; total.div_ceil(8)];
        let mut props = EVENT_TRACE_PROPERTIES {
            BufferSize: 64, // KiB per buffer
            MinimumBuffers: 4,
            LogFileMode: EVENT_TRACE_REAL_TIME_MODE,
            // Deliver at least once a second, so a quiet machine's events are not held back.
            FlushTimer: 1,
            LoggerNameOffset: header as u32,
            ..Default::default()
        };
        props.Wnode.BufferSize = (buf.len() * 8) as u32;
        props.Wnode.Flags = WNODE_FLAG_TRACED_GUID;
        props.Wnode.ClientContext = CLOCK_QPC;
        // SAFETY: `buf` is at least `header` bytes and 8-byte aligned.
        unsafe {
            buf.as_mut_ptr()
                .cast::<EVENT_TRACE_PROPERTIES>()
                .write(props)
        };
        Self(buf)
    }

    fn as_mut_ptr(&mut self) -> *mut EVENT_TRACE_PROPERTIES {
        self.0.as_mut_ptr().cast()
    }
}

fn check(rc: WIN32_ERROR) -> io::Result<()> {
    match rc {
        ERROR_SUCCESS => Ok(()),
        rc => Err(io::Error::from_raw_os_error(rc as i32)),
    }
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain([0]).collect()
}

/// The kernel device behind each drive letter, for [`super::etw_layout::nt_to_dos_path`]:
/// `("\Device\HarddiskVolume3", "C:")`, plus `("\SystemRoot", %SystemRoot%)`. Drives mapped
/// with `subst` (targets under `\??\`) are left out so a path keeps its real drive.
pub fn dos_devices() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut buf = vec![0u16; 1024];
    for letter in 'A'..='Z' {
        let drive = format!("{letter}:");
        let name = wide(&drive);
        // SAFETY: `name` is NUL-terminated; `buf` has room for `buf.len()` characters.
        let n = unsafe { QueryDosDeviceW(name.as_ptr(), buf.as_mut_ptr(), buf.len() as u32) };
        let Some(written) = buf.get(..n as usize) else {
            continue;
        };
        // The answer is a list of NUL-terminated names; the first is the current mapping.
        let first = written.split(|&u| u == 0).next().unwrap_or_default();
        let target = String::from_utf16_lossy(first);
        if target.starts_with(r"\Device\") {
            out.push((target, drive));
        }
    }
    if let Some(root) = std::env::var("SystemRoot").ok().filter(|r| !r.is_empty()) {
        out.push((r"\SystemRoot".to_owned(), root));
    }
    out
}
