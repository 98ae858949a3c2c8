//! Event sources. Each source runs on its own (thread or task), observes one thing, and sends
//! typed [`Event`]s to the spool. Sources never assign sequence numbers: the spool does.
//!
//! Every source has one shape: its settings are its own table of `agent.toml`, a type that
//! lives in the source's module and implements [`SourceConfig`]; `run` starts each from the
//! same [`SourceContext`] (the device's name, the state directory, the queue to the spool and
//! the spool's stored cursors), as Vector's `SourceConfig::build` does. OS calls are made
//! through `crate::platform`, which knows nothing of sources.
//!
//! A source that reads something incrementally (a browser's history) sends its cursor as a
//! [`Checkpoint`] with the events it covers; the spool stores both in one transaction, so after
//! a crash the source resumes exactly after the last event that was kept: nothing is sent
//! twice, nothing skipped.

use std::path::PathBuf;
use std::sync::Arc;

use invigilator_proto::v1::Event;
use tokio::sync::mpsc;

use crate::spool::SpoolError;

pub mod browsing;
pub mod extension;
pub mod process;
pub mod session;
pub mod usb;

/// Reads back a cursor the spool stored with a source's events ([`Checkpoint`]).
pub type Checkpoints = Arc<dyn Fn(&str) -> Result<Option<String>, SpoolError> + Send + Sync>;

/// What every source starts from.
#[derive(Clone)]
pub struct SourceContext {
    /// Put on every event.
    pub hostname: String,
    /// The agent's state directory: a source keeps private working files under it.
    pub state_dir: PathBuf,
    /// Where events go (to the spool).
    pub events: EventTx,
    pub checkpoints: Checkpoints,
}

/// A source's settings (its `agent.toml` table), and how it starts.
pub trait SourceConfig {
    /// The table's name, used in logs.
    const NAME: &'static str;
    /// What a running source hands back to `run` (e.g. the process source's mode, which the
    /// heartbeat reports); `()` for most.
    type Handle;

    /// False when the administrator turned the source off.
    fn enabled(&self) -> bool;

    /// Starts the source; once this returns `Ok` it is observing. An error means it could not
    /// start at all (each source falls back on its own first where it can, and says so).
    fn build(&self, cx: &SourceContext) -> Result<Self::Handle, SourceError>;
}

/// A source that could not start.
#[derive(Debug, thiserror::Error)]
#[error("the {source_name} source could not start: {cause}")]
pub struct SourceError {
    pub source_name: &'static str,
    #[source]
    pub cause: std::io::Error,
}

impl SourceError {
    pub fn new<C: SourceConfig>(cause: std::io::Error) -> Self {
        Self {
            source_name: C::NAME,
            cause,
        }
    }
}

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
    /// Told once the event is on disk in the spool, for a source whose own sender keeps it
    /// until then (the browser extension's queue).
    pub committed: Option<tokio::sync::oneshot::Sender<()>>,
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
            .blocking_send(Observation {
                event,
                checkpoint,
                committed: None,
            })
            .map_err(|_| Closed)
    }

    pub async fn observe(
        &self,
        event: Option<Event>,
        checkpoint: Option<Checkpoint>,
    ) -> Result<(), Closed> {
        self.0
            .send(Observation {
                event,
                checkpoint,
                committed: None,
            })
            .await
            .map_err(|_| Closed)
    }

    /// Sends an event and resolves once the spool has committed it: an acknowledgement that
    /// may be passed on to whoever will otherwise send it again.
    pub async fn send_committed(&self, event: Event) -> Result<(), Closed> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0
            .send(Observation {
                event: Some(event),
                checkpoint: None,
                committed: Some(tx),
            })
            .await
            .map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
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
