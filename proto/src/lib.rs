//! The Invigilator wire contract: the protobuf messages and gRPC services agent and collector
//! speak, and the enrolment-token format both sides must agree on.
#![forbid(unsafe_code)]

pub mod limits;
pub mod token;

/// Generated from `proto/invigilator/v1/agent.proto`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("invigilator.v1");
}

pub use token::{EnrollmentToken, TokenError, ca_fingerprint};

/// Largest encoded message either side accepts. A batch is at most `MAX_BATCH_EVENTS` events of a
/// few hundred bytes each; anything much larger is a bug or an attack.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Most events one `EventBatch` may carry.
pub const MAX_BATCH_EVENTS: usize = 2_000;

impl v1::event::Kind {
    /// The stable name of this kind, as used in the store, the CLI (`--kind`) and JSON.
    pub fn name(&self) -> &'static str {
        match self {
            v1::event::Kind::Process(_) => "process",
            v1::event::Kind::Gap(_) => "gap",
            v1::event::Kind::Usb(_) => "usb",
            v1::event::Kind::Session(_) => "session",
            v1::event::Kind::Browsing(_) => "browsing",
        }
    }
}
