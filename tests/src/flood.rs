//! What a flooding device sends (issue 13, finding 4): shared by the whole-system test and the
//! load generator's `flood` benchmark.

use invigilator_proto::v1::{Event, EventBatch, ProcessExec, event::Kind};

/// A process event with `argv`, observed now.
pub fn exec(seq: u64, argv: Vec<String>) -> Event {
    Event {
        seq,
        observed_at_us: crate::now_us(),
        hostname: "rogue".into(),
        user: "pupil".into(),
        kind: Some(Kind::Process(ProcessExec {
            pid: 1,
            name: "x".into(),
            argv,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// 100 events of 4 × 9.7 KB arguments: about 3.9 MB on the wire, just under the message limit.
/// The collector's budgets cut each event to a few KiB before anything is queued.
pub fn heavy_batch(first_seq: u64) -> EventBatch {
    let arg = "A".repeat(9_700);
    EventBatch {
        events: (0..100)
            .map(|i| exec(first_seq + i, vec![arg.clone(); 4]))
            .collect(),
    }
}
