//! Event sources. Each source runs on its own (thread or task), observes one thing, and sends
//! typed [`Event`]s to the spool. Sources never assign sequence numbers: the spool does.

use invigilator_proto::v1::Event;

pub mod process;

/// Where sources put what they observe. Bounded: when the spool falls behind, sources block
/// rather than grow memory without limit (the kernel buffers meanwhile, and overruns are
/// reported as gaps by the source that suffers them).
pub type EventTx = tokio::sync::mpsc::Sender<Event>;

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
