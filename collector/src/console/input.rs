//! What staff type into the console's forms, read into values.

use super::ConsoleError;
use chrono::TimeZone;

/// A time a member of staff typed, as microseconds.
pub fn parse_when(field: &str, s: &str) -> Result<i64, ConsoleError> {
    use chrono::{NaiveDate, NaiveDateTime};
    let tz = chrono_tz::Europe::London;
    let local = |t: NaiveDateTime| {
        tz.from_local_datetime(&t)
            .earliest()
            .map(|t| t.timestamp_micros())
    };
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
                .ok()
                .and_then(local)
        })
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .and_then(local)
        })
        .ok_or_else(|| {
            ConsoleError::BadRequest(format!(
                "{field} {s:?} is not a date (2026-11-20), a time (2026-11-20T09:00) or RFC 3339"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_in_the_schools_zone() {
        // 1 July is BST: midnight in London is 23:00 UTC the day before.
        let summer = parse_when("from", "2026-07-01").unwrap();
        assert_eq!(crate::store::rfc3339(summer), "2026-06-30T23:00:00.000000Z");
        let winter = parse_when("from", "2026-12-01T09:30").unwrap();
        assert_eq!(crate::store::rfc3339(winter), "2026-12-01T09:30:00.000000Z");
        let err = parse_when("to", "last tuesday").unwrap_err().to_string();
        assert!(err.contains("to \"last tuesday\""), "{err}");
    }
}
