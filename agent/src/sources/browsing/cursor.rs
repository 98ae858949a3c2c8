//! A profile's position in its history, stored by the spool with the events it covers, and the
//! checks that tell a history read normally from one that was cleared or replaced.
//!
//! Visit ids are only meaningful while the database is the same one with the same rows, so the
//! cursor remembers more than the last id: the time of that visit (the "anchor": if that row is
//! gone or different, rows were deleted under us) and the file's identity (a new inode means a
//! new database). It also keeps the time of the newest visit reported (the watermark): after a
//! reset, ids cannot be trusted, and the resync sends only visits newer than the watermark, so
//! visits already reported are not sent again as if new, and visits made after the reset are not
//! skipped.

use super::snapshot::FileId;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Visits with an id above this are new.
    pub id: i64,
    /// Raw time of visit `id` when it existed as this cursor was made.
    pub anchor: Option<i64>,
    /// Raw time of the newest visit reported (or skipped on purpose).
    pub watermark: i64,
    pub file: FileId,
}

/// Why the history no longer matches the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reset {
    /// The database file is a different file (deleted and recreated, restored, copied over).
    Replaced { old: FileId, new: FileId },
    /// Rows were deleted: "clear browsing data", a deleted entry, a sync wipe.
    Cleared { cursor_id: i64, max_id: i64 },
}

impl Reset {
    /// The `detail` of the history-reset event.
    pub fn detail(&self) -> String {
        match self {
            Reset::Replaced { old, new } => format!(
                "replaced: the history database is a different file (inode {} -> {}); \
                 visits newer than the last one reported are sent again from it",
                old.ino, new.ino
            ),
            Reset::Cleared { cursor_id, max_id } => format!(
                "cleared: visit {cursor_id}, the last one reported, is no longer in the history \
                 (newest id now {max_id}); visits newer than it are sent from the new state"
            ),
        }
    }
}

/// Compares the cursor with the database now: `max_id`, and `anchor_now`, the time of visit
/// `cursor.id` now (None when it is gone).
pub fn check(cursor: &Cursor, file: FileId, max_id: i64, anchor_now: Option<i64>) -> Option<Reset> {
    if cursor.file != file {
        return Some(Reset::Replaced {
            old: cursor.file,
            new: file,
        });
    }
    let anchor_lost = cursor.anchor.is_some() && anchor_now != cursor.anchor;
    if max_id < cursor.id || anchor_lost {
        return Some(Reset::Cleared {
            cursor_id: cursor.id,
            max_id,
        });
    }
    None
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable browsing checkpoint {0:?}")]
pub struct BadCheckpoint(String);

impl fmt::Display for Cursor {
    /// "v1 ID ANCHOR|- WATERMARK DEV:INO": what the spool stores.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let anchor = self.anchor.map_or("-".to_owned(), |a| a.to_string());
        write!(
            f,
            "v1 {} {anchor} {} {}:{}",
            self.id, self.watermark, self.file.dev, self.file.ino
        )
    }
}

impl std::str::FromStr for Cursor {
    type Err = BadCheckpoint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadCheckpoint(s.to_owned());
        let f: Vec<&str> = s.split(' ').collect();
        let [v, id, anchor, watermark, file] = f[..] else {
            return Err(bad());
        };
        let (dev, ino) = file.split_once(':').ok_or_else(bad)?;
        if v != "v1" {
            return Err(bad());
        }
        Ok(Cursor {
            id: id.parse().map_err(|_| bad())?,
            anchor: match anchor {
                "-" => None,
                a => Some(a.parse().map_err(|_| bad())?),
            },
            watermark: watermark.parse().map_err(|_| bad())?,
            file: FileId {
                dev: dev.parse().map_err(|_| bad())?,
                ino: ino.parse().map_err(|_| bad())?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: FileId = FileId {
        dev: 64769,
        ino: 1234,
    };

    #[test]
    fn round_trips_and_rejects_garbage() {
        for c in [
            Cursor {
                id: 42,
                anchor: Some(13_439_805_353_857_094),
                watermark: 13_439_805_353_857_094,
                file: F,
            },
            Cursor {
                id: 0,
                anchor: None,
                watermark: 0,
                file: F,
            },
        ] {
            assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        }
        for bad in [
            "",
            "v1 1 - 0",
            "v2 1 - 0 1:2",
            "v1 x - 0 1:2",
            "v1 1 - 0 12",
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tells_cleared_and_replaced_from_normal_growth() {
        let c = Cursor {
            id: 10,
            anchor: Some(500),
            watermark: 500,
            file: F,
        };
        // More visits, same anchor: normal.
        assert_eq!(check(&c, F, 12, Some(500)), None);
        assert_eq!(check(&c, F, 10, Some(500)), None);
        // Everything cleared (ids restart or the table is empty).
        assert!(matches!(
            check(&c, F, 0, None),
            Some(Reset::Cleared {
                cursor_id: 10,
                max_id: 0
            })
        ));
        // Cleared, then refilled past the old cursor before we looked: the anchor is gone.
        assert!(matches!(
            check(&c, F, 15, None),
            Some(Reset::Cleared { .. })
        ));
        // Same id, different visit: the rows were rewritten.
        assert!(matches!(
            check(&c, F, 15, Some(777)),
            Some(Reset::Cleared { .. })
        ));
        // A different file wins over everything else.
        let other = FileId {
            dev: F.dev,
            ino: 99,
        };
        let r = check(&c, other, 12, Some(500)).unwrap();
        assert_eq!(r, Reset::Replaced { old: F, new: other });
        assert!(r.detail().starts_with("replaced"), "{}", r.detail());
        // No anchor (cursor made at a gap in ids): only the id bound counts.
        let c = Cursor { anchor: None, ..c };
        assert_eq!(check(&c, F, 11, None), None);
    }
}
