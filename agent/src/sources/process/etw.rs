//! Windows: every process start, as it happens, from the `Microsoft-Windows-Kernel-Process`
//! ETW provider, so programs shorter than the poll interval are reported too.
//!
//! ETW delivers a start up to a second late (the session's flush timer), by which time a
//! short-lived program has often exited: its event then carries what ETW itself says (image
//! path, parent), and `unavailable` lists what could no longer be read (argv, user). The
//! command line is not part of the ProcessStart event.
//!
//! A session that starts is not proof that events flow (Wine's ETW accepts every call and
//! delivers nothing), so the source first runs a short program and waits for its start; if it
//! does not arrive, the caller polls instead.

use std::io;
use std::os::windows::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use invigilator_proto::v1::{Event, event};
use sysinfo::{Pid, Process, ProcessesToUpdate, System};
use thiserror::Error;

use super::poll::{Describe, PollSource, refresh};
use super::{Details, EventTx, Mode, ProcessConfig, ReceiverGone, RunningMode, gap_event, send};
use crate::platform::windows::etw::{self, EtwError, ProcessStartTrace, RawEvent};
use crate::platform::windows::etw_layout::{
    LayoutError, ProcessStart, nt_to_dos_path, parse_process_start,
};

/// How long the self-test waits for its own program's start (ETW flushes every second).
const CANARY_WAIT: Duration = Duration::from_secs(3);
/// How often an idle source checks whether the agent is shutting down.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Most starts described with one read of the process table.
const BATCH: usize = 256;
/// `CREATE_NO_WINDOW`: the self-test must not flash a console window on a pupil's screen.
const CREATE_NO_WINDOW: u32 = 0x0800_0000;

#[derive(Debug, Error)]
pub(super) enum StartError {
    #[error(transparent)]
    Session(#[from] EtwError),
    #[error("cannot read the process table: {0}")]
    System(io::Error),
    #[error("cannot run the self-test program {program}: {source}")]
    CanarySpawn { program: String, source: io::Error },
    #[error(
        "the self-test program {program} (pid {pid}) ran, but its start was not delivered \
         within {CANARY_WAIT:?}{}", last_error.as_ref().map(|e| format!("; an event could not be decoded: {e}")).unwrap_or_default()
    )]
    CanaryNotSeen {
        program: String,
        pid: u32,
        last_error: Option<LayoutError>,
    },
    #[error("the ETW session ended during the self-test")]
    Ended,
}

pub(super) struct EtwSource {
    // Kept for its Drop, which stops the session.
    _trace: ProcessStartTrace,
    rx: Receiver<RawEvent>,
    system: System,
    describe: Describe,
    devices: Vec<(String, String)>,
    /// Other programs' starts that arrived during the self-test, reported first.
    pending: Vec<ProcessStart>,
    /// For the poller, should the session end while running.
    cfg: ProcessConfig,
    hostname: String,
}

impl EtwSource {
    /// Starts the session and proves it delivers (see the module comment).
    pub(super) fn start(cfg: ProcessConfig, hostname: String) -> Result<Self, StartError> {
        let (raw_tx, rx) = mpsc::channel();
        let trace = ProcessStartTrace::start(raw_tx)?;
        let system = System::new().map_err(|e| StartError::System(io::Error::other(e)))?;
        let mut source = Self {
            _trace: trace,
            rx,
            system,
            describe: Describe::new(hostname.clone()),
            hostname,
            devices: etw::dos_devices(),
            pending: Vec::new(),
            cfg,
        };
        source.canary()?;
        Ok(source)
    }

    fn canary(&mut self) -> Result<(), StartError> {
        let program = crate::platform::windows::system_program("cmd.exe");
        let mut child = Command::new(&program)
            .args(["/c", "exit 0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .creation_flags(CREATE_NO_WINDOW)
            .spawn()
            .map_err(|source| StartError::CanarySpawn {
                program: program.clone(),
                source,
            })?;
        let pid = child.id();
        let _ = child.wait();
        let deadline = Instant::now() + CANARY_WAIT;
        let mut last_error = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                // The agent's own self-test is not reported.
                Ok(raw) => match decode(&raw) {
                    Ok(start) if start.pid == pid => return Ok(()),
                    Ok(start) => self.pending.push(start),
                    Err(err) => last_error = Some(err),
                },
                Err(RecvTimeoutError::Timeout) => {
                    return Err(StartError::CanaryNotSeen {
                        program,
                        pid,
                        last_error,
                    });
                }
                Err(RecvTimeoutError::Disconnected) => return Err(StartError::Ended),
            }
        }
    }

    pub(super) fn run(mut self, tx: &EventTx, mode: &RunningMode) {
        let pending = std::mem::take(&mut self.pending);
        if let Err(ReceiverGone) = self.report(&pending, tx) {
            return;
        }
        loop {
            let first = match self.rx.recv_timeout(IDLE_CHECK) {
                Ok(raw) => raw,
                Err(RecvTimeoutError::Timeout) if tx.is_closed() => break,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return self.fall_back(tx, mode),
            };
            let mut starts = Vec::new();
            for raw in std::iter::once(first).chain(self.rx.try_iter().take(BATCH - 1)) {
                match decode(&raw) {
                    Ok(start) => starts.push(start),
                    Err(err) => {
                        let reason = format!("a process start could not be decoded: {err}");
                        let mut gap = gap_event(&self.hostname, reason);
                        if let Some(event::Kind::Gap(g)) = &mut gap.kind {
                            g.lost = 1;
                        }
                        if let Err(ReceiverGone) = send(tx, gap) {
                            return;
                        }
                    }
                }
            }
            if let Err(ReceiverGone) = self.report(&starts, tx) {
                return;
            }
        }
        tracing::debug!("process source stopping: the event receiver is gone");
    }

    /// The session ended under us (stopped by an administrator, say): poll from now on, and
    /// say so in the next heartbeat.
    fn fall_back(self, tx: &EventTx, mode: &RunningMode) {
        tracing::warn!(
            "process source: the ETW session ended; polling the process table every {:?} from \
             now on",
            self.cfg.poll_interval
        );
        match PollSource::start(self.cfg.poll_interval, self.hostname.clone()) {
            Ok(poll) => {
                mode.set(Mode::Poll);
                poll.run(tx)
            }
            Err(err) => tracing::error!("process source: cannot poll either: {err}"),
        }
    }

    fn report(&mut self, starts: &[ProcessStart], tx: &EventTx) -> Result<(), ReceiverGone> {
        if starts.is_empty() {
            return Ok(());
        }
        let pids: Vec<Pid> = starts
            .iter()
            .flat_map(|s| [Pid::from_u32(s.pid), Pid::from_u32(s.parent_pid)])
            .collect();
        refresh(&mut self.system, ProcessesToUpdate::Some(&pids));
        for start in starts {
            let event = self.event(start);
            send(tx, event)?;
        }
        Ok(())
    }

    fn event(&mut self, start: &ProcessStart) -> Event {
        let created = start.create_time_unix_us().div_euclid(1_000_000);
        let exe = nt_to_dos_path(&start.image_name, &self.devices);
        // Same pid and same start (to the second): not a later process that reused the pid.
        let process = self
            .system
            .process(Pid::from_u32(start.pid))
            .filter(|p| started_at(p).is_some_and(|t| t.abs_diff(created) <= 1));
        let parent = self
            .system
            .process(Pid::from_u32(start.parent_pid))
            .filter(|p| started_at(p).is_some_and(|t| t <= created + 1));
        let Some(process) = process else {
            let name = exe.rsplit('\\').next().filter(|n| !n.is_empty());
            let details = Details {
                name: name.map(str::to_owned),
                exe: Some(exe).filter(|e| !e.is_empty()),
                argv: None,
                argv_bytes: None,
                uid: None,
                ppid: Some(start.parent_pid),
                parent_name: parent.map(|p| p.name().to_string_lossy().into_owned()),
                ..Details::default()
            };
            return self.describe.details(start.pid, details, "etw");
        };
        let mut event = self.describe.process(process, parent, "etw");
        // Protected processes hide their image from sysinfo; ETW has it anyway.
        if let Some(event::Kind::Process(p)) = &mut event.kind
            && p.exe.is_empty()
            && !exe.is_empty()
        {
            p.exe = exe;
            p.unavailable.retain(|field| field != "exe");
        }
        event
    }
}

fn decode(raw: &RawEvent) -> Result<ProcessStart, LayoutError> {
    parse_process_start(raw.version, &raw.user_data)
}

fn started_at(process: &Process) -> Option<i64> {
    i64::try_from(process.start_time()).ok()
}
