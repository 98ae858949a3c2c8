//! Invigilator collector: the certificate authority agents enrol with, the mTLS gRPC ingest,
//! the store, the Acceptable Use Policy engine and the alerts it raises.
#![forbid(unsafe_code)]

pub mod admission;
pub mod alerts;
pub mod cli;
pub mod committer;
pub mod config;
pub mod console;
pub mod dryrun;
pub mod enroll;
pub mod event_time;
pub mod extension;
pub mod handoff;
pub mod housekeeping;
pub mod identity;
pub mod ingest;
pub mod init;
pub mod metrics;
pub mod notify;
pub mod outbound;
pub mod peers;
pub mod pki;
pub mod reload;
pub mod reports;
pub mod roster;
pub mod serve;
pub mod state;
pub mod store;

/// True at the 1st, 10th, 100th ... occurrence of something repeated: how a flood of refusals
/// is written to the trail or the log without becoming one.
pub(crate) fn sparse_mark(n: u64) -> bool {
    n > 0 && 10u64.pow(n.ilog10()) == n
}
