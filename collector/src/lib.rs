//! Invigilator collector: the certificate authority agents enrol with, the mTLS gRPC ingest,
//! the store, the Acceptable Use Policy engine and the alerts it raises.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod admission;
pub mod alerts;
pub mod approvers;
pub mod audit;
pub mod cli;
pub mod committer;
pub mod config;
pub mod console;
pub mod dryrun;
pub mod enroll;
pub mod event_time;
pub mod housekeeping;
pub mod identity;
pub mod ingest;
pub mod init;
pub mod lists;
pub mod notify;
pub mod pki;
pub mod policy;
pub mod reload;
pub mod reports;
pub mod retention;
pub mod sar;
pub mod serve;
pub mod state;
pub mod store;
