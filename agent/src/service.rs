//! Running under the Windows service control manager (SCM) as `InvigilatorAgent`.
//!
//! The MSI installs the service (automatic start, LocalSystem) with `service` as its argument;
//! the SCM starts `invigilator-agent.exe service`, whose main thread becomes the service
//! dispatcher. The agent then runs exactly as `run` does, until the SCM asks it to stop (an
//! administrator, or shutdown). The service also receives session changes (logon, logoff, lock,
//! unlock), which become session events.
//!
//! At each start the service sets its own recovery actions (restart after 5 s, 5 s, then 60 s;
//! failure count reset after a day), so restart-on-failure holds however it was installed.
//! Only administrators may stop it: the SCM's default service permissions give ordinary users
//! query rights only.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use invigilator_proto::v1::Event;
use tokio::sync::{Notify, mpsc};
use tracing::Instrument;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod, ServiceState, ServiceStatus,
    ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_dispatcher;
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

use crate::platform::windows::wts;
use crate::sources::EventTx;
use crate::sources::session::windows::{IDLE_CHECK, Sessions};

/// The service's name in the SCM (the MSI's ServiceInstall uses the same).
pub const SERVICE_NAME: &str = "InvigilatorAgent";

/// Exit code reported to the SCM when the agent stops on an error (so recovery restarts it).
const EXIT_ERROR: u32 = 1;

/// How often a service waiting for enrolment looks for it.
const ENROL_CHECK: Duration = Duration::from_secs(10);

static STATE_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Hands this thread to the SCM until the service stops. Fails at once when the process was
/// not started by the SCM (e.g. `invigilator-agent service` typed at a prompt).
pub fn run(state_dir: PathBuf) -> anyhow::Result<()> {
    let _ = STATE_DIR.set(state_dir);
    service_dispatcher::start(SERVICE_NAME, service_main)
        .context("cannot connect to the service control manager (is this started as a service? use `run` at a prompt)")
}

// Called by the SCM on a thread of its own. The arguments are not read: everything the agent
// needs is in its state directory.
extern "system" fn service_main(_argc: u32, _argv: *mut *mut u16) {
    if let Err(err) = serve() {
        tracing::error!("service failed: {err:#}");
    }
}

fn serve() -> anyhow::Result<()> {
    let state_dir = STATE_DIR.get().cloned().context("no state directory")?;
    let stop = Arc::new(Notify::new());
    let (sessions_tx, sessions_rx) = mpsc::unbounded_channel::<(u32, u32)>();
    let stop_handler = Arc::clone(&stop);
    // Runs on the SCM's thread and must return at once: it only passes things on.
    let handler = move |control: ServiceControl| -> ServiceControlHandlerResult {
        match control {
            ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
                stop_handler.notify_one();
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::SessionChange(p) => {
                let _ = sessions_tx.send((p.reason.to_raw(), p.notification.session_id));
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        }
    };
    let status = service_control_handler::register(SERVICE_NAME, handler)
        .context("registering the service control handler")?;
    let report = |state: ServiceState, exit: u32, wait: Duration| {
        let accept = if state == ServiceState::Running {
            ServiceControlAccept::STOP
                | ServiceControlAccept::SHUTDOWN
                | ServiceControlAccept::SESSION_CHANGE
        } else {
            ServiceControlAccept::empty()
        };
        let exit_code = if exit == 0 {
            ServiceExitCode::Win32(0)
        } else {
            ServiceExitCode::ServiceSpecific(exit)
        };
        if let Err(err) = status.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accept,
            exit_code,
            checkpoint: 0,
            wait_hint: wait,
            process_id: None,
        }) {
            tracing::warn!(%err, ?state, "cannot report the service status");
        }
    };
    report(ServiceState::Running, 0, Duration::ZERO);
    if let Err(err) = set_recovery() {
        tracing::warn!("cannot set the service's recovery actions: {err:#}");
    }
    tracing::info!(service = SERVICE_NAME, "running as a Windows service");

    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|rt| {
            rt.block_on(async {
                if !enrolled(&state_dir, &stop).await {
                    return Ok(()); // stopped before anyone enrolled the device
                }
                crate::enroll::clear_upgrade_mark(&state_dir);
                crate::run::run_until(&state_dir, async { stop.notified().await }, move |events| {
                    tokio::spawn(follow_sessions(events, sessions_rx).in_current_span());
                })
                .await
            })
        });
    report(ServiceState::StopPending, 0, Duration::from_secs(10));
    match &result {
        Ok(()) => report(ServiceState::Stopped, 0, Duration::ZERO),
        Err(err) => {
            tracing::error!("agent stopped: {err:#}");
            report(ServiceState::Stopped, EXIT_ERROR, Duration::ZERO);
        }
    }
    result
}

/// Waits until the device is enrolled (an MSI installed without COLLECTOR and TOKEN, then
/// `invigilator-agent enroll` run by hand), checking every [`ENROL_CHECK`]. False if the
/// service was stopped first. Waiting, rather than failing, keeps the install from failing on a
/// service that cannot start, and needs no restart once enrolment is done.
async fn enrolled(state_dir: &std::path::Path, stop: &Notify) -> bool {
    let mut said = false;
    loop {
        if crate::config::AgentConfig::path(state_dir).exists() {
            return true;
        }
        if !said {
            tracing::warn!(
                state_dir = %state_dir.display(),
                "not enrolled: waiting for `invigilator-agent enroll --collector URL --token TOKEN`"
            );
            said = true;
        }
        tokio::select! {
            _ = stop.notified() => return false,
            _ = tokio::time::sleep(ENROL_CHECK) => {}
        }
    }
}

/// Session events: those open now ("present"), then each notification from the SCM, and
/// "idle" / "active" from each session's last input time.
async fn follow_sessions(events: EventTx, mut notices: mpsc::UnboundedReceiver<(u32, u32)>) {
    let mut sessions = Sessions::new(crate::hostname());
    for id in wts::sessions() {
        if let Some(e) = sessions.present(id, wts::lookup(id)) {
            if events.send(e).await.is_err() {
                return;
            }
        }
    }
    let mut idle_check = tokio::time::interval(IDLE_CHECK);
    loop {
        let found: Vec<Event> = tokio::select! {
            notice = notices.recv() => match notice {
                Some((reason, id)) => sessions.notify(reason, id, wts::lookup(id)).into_iter().collect(),
                None => return,
            },
            _ = idle_check.tick() => sessions
                .ids()
                .into_iter()
                .filter_map(|id| sessions.idle_check(id, wts::last_input_us(id), crate::sources::now_us()))
                .collect(),
        };
        for e in found {
            if events.send(e).await.is_err() {
                return;
            }
        }
    }
}

/// Restart on failure: 5 s, 5 s, then 60 s; the count resets after a day without failures.
/// Also on a clean exit with an error code, not just on a crash.
fn set_recovery() -> windows_service::Result<()> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)?;
    let service = manager.open_service(
        SERVICE_NAME,
        ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_CONFIG,
    )?;
    let restart = |secs| ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(secs),
    };
    service.update_failure_actions(ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
        reboot_msg: None,
        command: None,
        actions: Some(vec![restart(5), restart(5), restart(60)]),
    })?;
    service.set_failure_actions_on_non_crash_failures(true)
}

/// Where the service writes its log: `agent.log` in the state directory (a service has no
/// console). Kept to two files of at most `max_bytes`: the old one is renamed `agent.log.1`.
pub fn log_file(state_dir: &std::path::Path, max_bytes: u64) -> std::io::Result<std::fs::File> {
    let path = state_dir.join("agent.log");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > max_bytes) {
        let _ = std::fs::rename(&path, state_dir.join("agent.log.1"));
    }
    // Opened for writing and positioned at the end, not in append mode: Wine drops writes to a
    // handle opened with FILE_APPEND_DATA alone. The service is the file's only writer.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))?;
    Ok(file)
}
