//! The USB source: one event per USB device attached, detached, or already present at start.
//!
//! On Linux it listens to the kernel's uevents (`NETLINK_KOBJECT_UEVENT`, only datagrams the
//! kernel itself sent) and reads the device's details from sysfs.
//!
//! One event per *device*, not per interface: the kernel announces the device
//! (`SUBSYSTEM=usb DEVTYPE=usb_device`) before its configuration is chosen, then each
//! interface, and, for mass storage, the disk only after usb-storage has scanned it (about a
//! second later, `delay_use`). So the attach event is held back until the device is complete:
//! every interface of the active configuration is in sysfs and, if one is mass storage, a disk
//! has appeared under it. It is never held longer than [`ATTACH_SETTLE`] after the device
//! appeared, nor past its removal: an attach is always reported, before its detach, with
//! whatever was known by then. A disk that appears later still is remembered for the detach
//! event but produces no event of its own.
//!
//! On removal sysfs is already gone: the detach event carries what was seen at attach,
//! completed from the remove uevent's own `PRODUCT`, `BUSNUM` and `DEVNUM`.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use invigilator_proto::v1::{Event, Gap, UsbDevice, event};

use crate::platform::linux::sysfs_usb::{
    self, CLASS_MASS_STORAGE, Interface, Sysfs, UsbDeviceInfo,
};
use crate::platform::linux::uevent::{self, Action, Uevent, UeventSocket};
use crate::sources::{EventTx, observed};

/// Longest an attach event waits for the device's interfaces and disk.
pub const ATTACH_SETTLE: Duration = Duration::from_secs(3);
/// Longest the source sleeps without checking whether the agent is shutting down.
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// Kernel uevents are under 8 KiB (UEVENT_BUFFER_SIZE is 2 KiB of variables plus the header).
const DATAGRAM_BUF: usize = 16 * 1024;
const MAX_RECV_FAILURES: u32 = 5;
const RECV_RETRY: Duration = Duration::from_millis(100);
const REOPEN_MAX_DELAY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct UsbSourceConfig {
    /// Put on every event.
    pub hostname: String,
    /// Where sysfs is mounted: "/sys". Tests point it at a fake tree.
    pub sysfs_root: PathBuf,
}

impl Default for UsbSourceConfig {
    fn default() -> Self {
        Self {
            hostname: String::new(),
            sysfs_root: PathBuf::from("/sys"),
        }
    }
}

/// Enumerates devices already present (action "present"), then reports attach/detach from kernel
/// uevents, on its own std thread ("usb-source"). Returns an error only if nothing can run.
///
/// The uevent socket is opened before the enumeration, so a device plugged in meanwhile is not
/// missed. If the socket cannot be opened the present devices are still reported, with a
/// warning that attach and detach will not be. The thread ends when the receiver of `tx` is
/// dropped.
pub fn spawn(cfg: UsbSourceConfig, tx: EventTx) -> io::Result<()> {
    let socket = match UeventSocket::open() {
        Ok(socket) => {
            tracing::info!(
                receive_buffer = socket.receive_buffer(),
                "usb source: listening to kernel uevents"
            );
            Some(socket)
        }
        Err(err) => {
            tracing::warn!(
                "usb source: {err}. Devices present now are reported, attach and detach are not"
            );
            None
        }
    };
    let runner = Runner::new(Tracker::new(cfg), socket, None);
    thread::Builder::new()
        .name("usb-source".into())
        .spawn(move || runner.run(&tx))
        .map(drop)
}

/// The socket loop: receives, hands uevents to the [`Tracker`], sends what it decides.
struct Runner {
    tracker: Tracker,
    socket: Option<UeventSocket>,
    /// Tests: every kernel uevent accepted, before it is interpreted.
    tap: Option<std::sync::mpsc::Sender<Uevent>>,
}

/// The spool has gone away: the agent is shutting down.
#[derive(Debug)]
struct ReceiverGone;

impl Runner {
    fn new(
        tracker: Tracker,
        socket: Option<UeventSocket>,
        tap: Option<std::sync::mpsc::Sender<Uevent>>,
    ) -> Self {
        Self {
            tracker,
            socket,
            tap,
        }
    }

    fn run(mut self, tx: &EventTx) {
        if let Err(ReceiverGone) = self.serve(tx) {
            tracing::debug!("usb source stopping: the event receiver is gone");
        }
    }

    fn serve(&mut self, tx: &EventTx) -> Result<(), ReceiverGone> {
        let present = self.tracker.present();
        tracing::info!(devices = present.len(), "usb source: devices present");
        send_all(tx, present)?;
        if self.socket.is_none() {
            return Ok(());
        }
        let mut buf = vec![0u8; DATAGRAM_BUF];
        let mut failures = 0;
        let mut timeout = None;
        loop {
            // Wake for the earliest held-back attach, or now and then to notice shutdown.
            let now = Instant::now();
            let wanted = self
                .tracker
                .next_deadline()
                .map_or(IDLE_WAKE, |d| d.saturating_duration_since(now))
                .clamp(Duration::from_millis(10), IDLE_WAKE);
            let socket = self.socket.as_mut().expect("checked above");
            if timeout != Some(wanted) {
                match socket.set_timeout(Some(wanted)) {
                    Ok(()) => timeout = Some(wanted),
                    Err(err) => tracing::debug!(%err, "usb source: cannot set receive timeout"),
                }
            }
            match socket.recv(&mut buf) {
                Ok(received) => {
                    failures = 0;
                    if received.truncated {
                        tracing::warn!("usb source: uevent larger than the buffer, ignored");
                    } else {
                        match uevent::parse(received.bytes) {
                            Ok(event) => {
                                if let Some(tap) = &self.tap {
                                    let _ = tap.send(event.clone());
                                }
                                let out = self.tracker.handle(&event, Instant::now());
                                send_all(tx, out)?;
                            }
                            Err(err) => {
                                tracing::warn!(error = %err, "usb source: malformed uevent")
                            }
                        }
                    }
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(err) if err.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    tracing::warn!("usb source: uevent receive buffer overrun; rescanning sysfs");
                    send_all(tx, self.tracker.resync("uevent receive buffer overrun"))?;
                }
                Err(err) => {
                    failures += 1;
                    tracing::warn!(error = %err, failures, "usb source: uevent receive failed");
                    if failures >= MAX_RECV_FAILURES {
                        self.reopen(tx)?;
                        timeout = None;
                        failures = 0;
                        send_all(
                            tx,
                            self.tracker.resync("uevent socket failed; re-created it"),
                        )?;
                    } else {
                        thread::sleep(RECV_RETRY);
                    }
                }
            }
            send_all(tx, self.tracker.tick(Instant::now()))?;
            if tx.is_closed() {
                return Err(ReceiverGone);
            }
        }
    }

    /// Replaces a socket that keeps failing, retrying with backoff for as long as it takes.
    fn reopen(&mut self, tx: &EventTx) -> Result<(), ReceiverGone> {
        self.socket = None;
        let mut delay = Duration::from_secs(1);
        loop {
            match UeventSocket::open() {
                Ok(socket) => {
                    tracing::info!("usb source: uevent socket re-created");
                    self.socket = Some(socket);
                    return Ok(());
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?delay, "usb source: cannot re-create the uevent socket");
                    if tx.is_closed() {
                        return Err(ReceiverGone);
                    }
                    thread::sleep(delay);
                    delay = (delay * 2).min(REOPEN_MAX_DELAY);
                }
            }
        }
    }
}

fn send_all(tx: &EventTx, events: Vec<Event>) -> Result<(), ReceiverGone> {
    for event in events {
        tx.blocking_send(event).map_err(|_| ReceiverGone)?;
    }
    Ok(())
}

mod tracker;
use tracker::Tracker;

#[cfg(test)]
mod tests;
