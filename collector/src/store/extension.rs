//! Numbering lanes for the browser extension on a device without an agent (a Chromebook).
//!
//! Each browser profile on the device numbers its own visits, and events are stored exactly once
//! per (agent, seq). Two pupils' profiles on one shared Chromebook, or a profile whose storage
//! was reset, must never reuse a number: each instance asks for a lane, and a visit's sequence
//! is `lane << 32 | n` (n its own count, from 1). A lane is never handed out twice.

use super::{Result, System};
use crate::store::db::{OptionalExtension, params};

/// Highest lane: `lane << 32 | n` stays a positive i64.
pub const MAX_LANE: u32 = i32::MAX as u32;

/// A new lane for one of the device's extension instances; None when the device is not
/// enrolled, or has used every lane.
pub fn new_lane(sys: &System<'_>, agent_id: &str) -> Result<Option<u32>> {
    Ok(sys
        .conn
        .prepare_cached(
            "UPDATE agents SET extension_lanes = extension_lanes + 1
             WHERE agent_id = ?1 AND extension_lanes < ?2
             RETURNING extension_lanes",
        )?
        .query_row(params![agent_id, i64::from(MAX_LANE)], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?
        .map(|n| n as u32))
}

/// A device as its extension's uploads need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Lanes 1 to this are the device's own.
    pub lanes: u32,
    /// Its delivery epoch, which an upload's commit must match (`delivery::lock`).
    pub epoch: i64,
    /// As named at `device-cert create`.
    pub hostname: String,
    pub os: String,
}

/// The device's row, or None when it is not enrolled.
pub fn device(sys: &System<'_>, agent_id: &str) -> Result<Option<Device>> {
    Ok(sys
        .conn
        .prepare_cached(
            "SELECT extension_lanes, stream_epoch, hostname, os FROM agents
             WHERE agent_id = ?1",
        )?
        .query_row(params![agent_id], |r| {
            Ok(Device {
                lanes: r.get::<_, i64>(0)?.clamp(0, i64::from(MAX_LANE)) as u32,
                epoch: r.get(1)?,
                hostname: r.get(2)?,
                os: r.get(3)?,
            })
        })
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{self, NewAgent, agents};

    #[test]
    fn lanes_are_never_handed_out_twice() {
        let (_d, conn) = store::test_db();
        agents::insert_agent(
            &store::Admin::test(&conn),
            &NewAgent {
                agent_id: "dev-1",
                group: "default",
                hostname: "chromebook-1",
                os: "ChromeOS",
                agent_version: "extension",
                cert_serial: "01",
                cert_not_after_us: i64::MAX,
            },
        )
        .unwrap();
        let sys = store::System::test(&conn);
        let lanes = |id| device(&sys, id).unwrap().map(|d| d.lanes);
        assert_eq!(lanes("dev-1"), Some(0));
        assert_eq!(new_lane(&sys, "dev-1").unwrap(), Some(1));
        assert_eq!(new_lane(&sys, "dev-1").unwrap(), Some(2));
        assert_eq!(lanes("dev-1"), Some(2));
        let d = device(&sys, "dev-1").unwrap().unwrap();
        assert_eq!(
            (d.hostname.as_str(), d.os.as_str()),
            ("chromebook-1", "ChromeOS")
        );
        assert_eq!(new_lane(&sys, "nobody").unwrap(), None, "not enrolled");
        assert_eq!(lanes("nobody"), None);
    }
}
