//! The one event time the collector trusts.
//!
//! A device's clock is the device user's to set, and its events carry whatever time it claims.
//! The collector keeps that claim but clamps it into a window around the moment the event was
//! received: no earlier than the offline allowance (an agent that was away delivers late, never
//! from years ago), no later than the allowed clock skew. The clamped time is the event's
//! `observed_at_us` from then on, so retention, aggregation windows and every rule use it; a
//! claim that had to move is kept in `device_time_us`, which flags the event.

use invigilator_proto::v1::Event;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct TimeWindow {
    pub offline_allowance: Duration,
    pub clock_skew: Duration,
}

impl TimeWindow {
    /// The window `[ingest]` sets, for every way events come in.
    pub fn of(ingest: &crate::config::IngestConfig) -> Self {
        Self {
            offline_allowance: ingest.offline_allowance,
            clock_skew: ingest.clock_skew,
        }
    }

    /// Clamps the event's time into the window around `received_us`; true if it had to move.
    /// Whatever the device put in `device_time_us` is replaced: only the collector sets it.
    pub fn apply(&self, event: &mut Event, received_us: i64) -> bool {
        let earliest = received_us.saturating_sub(micros(self.offline_allowance));
        let latest = received_us.saturating_add(micros(self.clock_skew));
        let claimed = event.observed_at_us;
        let clamped = claimed.clamp(earliest, latest);
        event.device_time_us = if clamped == claimed { 0 } else { claimed };
        event.observed_at_us = clamped;
        clamped != claimed
    }
}

fn micros(d: Duration) -> i64 {
    d.as_micros().min(i64::MAX as u128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000_000;

    fn at(us: i64) -> Event {
        Event {
            observed_at_us: us,
            ..Default::default()
        }
    }

    #[test]
    fn claims_inside_the_window_stand_and_others_are_clamped_and_kept() {
        let w = TimeWindow {
            offline_allowance: Duration::from_secs(3600),
            clock_skew: Duration::from_secs(60),
        };
        let cases = [
            (NOW, NOW, 0),
            (NOW - 3_600_000_000, NOW - 3_600_000_000, 0),
            (NOW + 60_000_000, NOW + 60_000_000, 0),
            (
                NOW - 3_600_000_001,
                NOW - 3_600_000_000,
                NOW - 3_600_000_001,
            ),
            (NOW + 60_000_001, NOW + 60_000_000, NOW + 60_000_001),
            (i64::MAX, NOW + 60_000_000, i64::MAX),
            (1, NOW - 3_600_000_000, 1),
        ];
        for (claimed, observed, device) in cases {
            let mut e = at(claimed);
            assert_eq!(w.apply(&mut e, NOW), device != 0, "{claimed}");
            assert_eq!((e.observed_at_us, e.device_time_us), (observed, device));
        }
    }

    #[test]
    fn a_device_cannot_plant_its_own_flag_or_overflow_the_window() {
        let w = TimeWindow {
            offline_allowance: Duration::MAX,
            clock_skew: Duration::MAX,
        };
        let mut e = at(NOW);
        e.device_time_us = 5;
        assert!(!w.apply(&mut e, NOW));
        assert_eq!((e.observed_at_us, e.device_time_us), (NOW, 0));
    }
}
