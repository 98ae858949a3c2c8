//! The fallback: periodic scans of the process table (sysinfo). Programs that start and finish
//! between two scans are missed; the heartbeat tells the collector this mode runs.

use std::collections::HashMap;
use std::io;
use std::thread;
use std::time::Duration;

use sysinfo::{Pid, Process, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

use invigilator_proto::limits;
use invigilator_proto::v1::Event;

use super::{Details, EventTx, ReceiverGone, UserNames, send};

pub(super) struct PollSource {
    system: System,
    /// pid → start time (seconds since the epoch) at the last scan.
    seen: HashMap<Pid, u64>,
    interval: Duration,
    describe: Describe,
}

impl PollSource {
    /// Takes the baseline scan. Processes already running are not reported: the source
    /// reports programs being started, and those started before the agent we did not see
    /// start (an inventory of running processes would be a different kind of event).
    pub(super) fn start(interval: Duration, hostname: String) -> io::Result<Self> {
        let mut system = System::new().map_err(io::Error::other)?;
        refresh(&mut system, ProcessesToUpdate::All);
        let seen = start_times(&system);
        Ok(Self {
            system,
            seen,
            interval,
            describe: Describe::new(hostname),
        })
    }

    pub(super) fn run(mut self, tx: &EventTx) {
        while !tx.is_closed() {
            thread::sleep(self.interval);
            if let Err(ReceiverGone) = self.scan(tx) {
                break;
            }
        }
        tracing::debug!("process source stopping: the event receiver is gone");
    }

    fn scan(&mut self, tx: &EventTx) -> Result<(), ReceiverGone> {
        refresh(&mut self.system, ProcessesToUpdate::All);
        let processes = self.system.processes();
        let mut new: Vec<&Process> = processes
            .values()
            .filter(|p| is_process(p) && self.seen.get(&p.pid()) != Some(&p.start_time()))
            .collect();
        new.sort_by_key(|p| (p.start_time(), p.pid()));
        for process in new {
            let parent = process.parent().and_then(|ppid| processes.get(&ppid));
            send(tx, self.describe.process(process, parent, "poll"))?;
        }
        self.seen = start_times(&self.system);
        Ok(())
    }
}

/// Turns what sysinfo knows about a process into a `ProcessExec` event: the one description
/// shared by the poller and, on Windows, the ETW source.
pub(super) struct Describe {
    hostname: String,
    users: UserNames,
    #[cfg(windows)]
    accounts: AccountNames,
}

impl Describe {
    pub(super) fn new(hostname: String) -> Self {
        Self {
            hostname,
            users: UserNames::default(),
            #[cfg(windows)]
            accounts: AccountNames::default(),
        }
    }

    /// The event for `process`, started by `parent` (when that is still listed).
    pub(super) fn process(
        &mut self,
        process: &Process,
        parent: Option<&Process>,
        source: &str,
    ) -> Event {
        let (argv, argv_bytes) = match process.cmd() {
            [] => (None, None),
            cmd => {
                let (argv, full) = limits::argv(cmd.iter().map(|a| a.as_encoded_bytes()));
                (Some(argv), full)
            }
        };
        let details = Details {
            exe: process.exe().map(|exe| exe.to_string_lossy().into_owned()),
            argv,
            argv_bytes,
            uid: uid_of(process),
            ppid: process.parent().map(Pid::as_u32),
            name: Some(process.name().to_string_lossy().into_owned())
                .filter(|name| !name.is_empty()),
            parent_name: parent.map(|parent| parent.name().to_string_lossy().into_owned()),
            ..Details::default()
        };
        let event = self.details(process.pid().as_u32(), details, source);
        self.with_account(event, process)
    }

    /// The event's user is the account of the process's SID ([`AccountNames`]); failing that,
    /// the user logged on to the session the process runs in (not session 0, the services').
    #[cfg(windows)]
    fn with_account(&mut self, event: Event, process: &Process) -> Event {
        let user = process
            .user_id()
            .and_then(|sid| self.accounts.name(sid))
            .or_else(|| {
                let session = process.session_id()?.as_u32();
                if session == 0 {
                    return None;
                }
                let user = crate::platform::windows::wts::user(session);
                (!user.is_empty()).then_some(user)
            })
            .unwrap_or_default();
        Event { user, ..event }
    }

    /// The event's user came from the uid already.
    #[cfg(not(windows))]
    fn with_account(&mut self, event: Event, _process: &Process) -> Event {
        event
    }

    /// The event for a process known only from `details` (it was gone before it could be read).
    #[cfg_attr(not(windows), allow(dead_code))]
    pub(super) fn details(&mut self, pid: u32, details: Details, source: &str) -> Event {
        details.into_event(pid, source, &self.hostname, &mut self.users)
    }
}

#[cfg(unix)]
fn uid_of(process: &Process) -> Option<u32> {
    process.user_id().map(|uid| **uid)
}

/// Windows identifies users by SID, not a number; the event's user is the SID's account
/// ([`AccountNames`]).
#[cfg(not(unix))]
fn uid_of(_process: &Process) -> Option<u32> {
    None
}

/// Reads the listed processes (exe, command line, owner), forgetting those that have exited.
pub(super) fn refresh(system: &mut System, which: ProcessesToUpdate<'_>) {
    let what = ProcessRefreshKind::nothing()
        .without_tasks()
        .with_exe(UpdateKind::OnlyIfNotSet)
        .with_cmd(UpdateKind::OnlyIfNotSet)
        .with_user(UpdateKind::OnlyIfNotSet);
    system.refresh_processes_specifics(which, true, what);
}

/// Kernel threads never exec; threads are listed only as part of their process.
fn is_process(process: &Process) -> bool {
    process.thread_kind().is_none()
}

fn start_times(system: &System) -> HashMap<Pid, u64> {
    system
        .processes()
        .values()
        .filter(|p| is_process(p))
        .map(|p| (p.pid(), p.start_time()))
        .collect()
}

/// SID -> account name on Windows, from the local accounts and the logon sessions (so domain
/// users who are logged on are found too). Re-read when a SID is unknown, at most once a minute.
/// Wine 8 lists no accounts, so under Wine the user stays empty.
#[cfg(windows)]
#[derive(Default)]
struct AccountNames {
    users: Option<sysinfo::Users>,
    read_at: Option<std::time::Instant>,
}

#[cfg(windows)]
impl AccountNames {
    const REREAD: Duration = Duration::from_secs(60);

    fn name(&mut self, sid: &sysinfo::Uid) -> Option<String> {
        if let Some(name) = self.lookup(sid) {
            return Some(name);
        }
        if self.read_at.is_some_and(|at| at.elapsed() < Self::REREAD) {
            return None;
        }
        self.read_at = Some(std::time::Instant::now());
        match sysinfo::Users::new_with_refreshed_list() {
            Ok(users) => self.users = Some(users),
            Err(err) => tracing::debug!(%err, "process source: cannot list the accounts"),
        }
        self.lookup(sid)
    }

    fn lookup(&self, sid: &sysinfo::Uid) -> Option<String> {
        let user = self.users.as_ref()?.get_user_by_id(sid)?;
        Some(user.name().to_owned())
    }
}
