//! Event sources. Each source runs on its own (thread or task), observes one thing, and sends
//! typed [`Event`]s to the spool. Sources never assign sequence numbers: the spool does.
//!
//! A source that reads something incrementally (a browser's history) sends its cursor as a
//! [`Checkpoint`] with the events it covers; the spool stores both in one transaction, so after
//! a crash the source resumes exactly after the last event that was kept: nothing is sent
//! twice, nothing skipped.

use invigilator_proto::v1::Event;
use tokio::sync::mpsc;

// The session source talks to systemd-logind, so it is Unix-only (on Windows session changes
// reach the service: `platform::windows::service`); the USB source reads Linux uevents.
pub mod browsing;
pub mod process;
#[cfg(unix)]
pub mod session;
#[cfg(target_os = "linux")]
pub mod usb;
/// USB on Windows (Plug and Play readings); its logic builds and is tested everywhere.
pub mod usb_pnp;

/// A source's position in what it reads, stored by the spool with the events it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Unique per source and input, e.g. "browsing:/home/p/.config/chromium/Default".
    pub key: String,
    pub value: String,
}

/// What a source hands to the spool writer.
#[derive(Debug)]
pub struct Observation {
    pub event: Option<Event>,
    pub checkpoint: Option<Checkpoint>,
}

/// The spool writer has stopped: the agent is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the spool writer has stopped")]
pub struct Closed;

/// Where sources put what they observe. Bounded: when the spool falls behind, sources block
/// rather than grow memory without limit (the kernel buffers meanwhile, and overruns are
/// reported as gaps by the source that suffers them).
#[derive(Clone)]
pub struct EventTx(mpsc::Sender<Observation>);

pub type EventRx = mpsc::Receiver<Observation>;

pub fn channel(capacity: usize) -> (EventTx, EventRx) {
    let (tx, rx) = mpsc::channel(capacity);
    (EventTx(tx), rx)
}

impl EventTx {
    /// True once the agent is shutting down; sources then stop.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// From a thread of the source's own.
    pub fn blocking_send(&self, event: Event) -> Result<(), Closed> {
        self.blocking_observe(Some(event), None)
    }

    /// From an async task.
    pub async fn send(&self, event: Event) -> Result<(), Closed> {
        self.observe(Some(event), None).await
    }

    pub fn blocking_observe(
        &self,
        event: Option<Event>,
        checkpoint: Option<Checkpoint>,
    ) -> Result<(), Closed> {
        self.0
            .blocking_send(Observation { event, checkpoint })
            .map_err(|_| Closed)
    }

    pub async fn observe(
        &self,
        event: Option<Event>,
        checkpoint: Option<Checkpoint>,
    ) -> Result<(), Closed> {
        self.0
            .send(Observation { event, checkpoint })
            .await
            .map_err(|_| Closed)
    }
}

/// An event observed now. Sources never number events (the spool does), so `seq` is 0.
pub fn observed(hostname: &str, user: String, kind: invigilator_proto::v1::event::Kind) -> Event {
    Event {
        seq: 0,
        observed_at_us: now_us(),
        hostname: hostname.to_owned(),
        user,
        truncated: Vec::new(),
        device_time_us: 0,
        kind: Some(kind),
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
