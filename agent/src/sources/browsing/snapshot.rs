//! A private, consistent copy of a browser's history database.
//!
//! Browsers hold their history open (Chromium with exclusive locking), so reading it in place
//! could fail or, worse, make the browser's own writes fail. Copying the file never takes a lock
//! the browser could trip on. The copy includes the write-ahead log (Firefox, and Chromium where
//! WAL is enabled) and a rollback journal left mid-commit, so SQLite opening the copy sees
//! exactly the last committed state. A copy taken while the browser was writing is detected
//! (size, time or identity changed meanwhile) and taken again.
//!
//! File identity is the inode on Unix. On Windows it is the file's creation time (the file
//! index that would be the true counterpart is not in stable std): a history replaced by a new
//! file gets a new one. NTFS "tunnelling" can hand a new file the creation time of one deleted
//! under the same name seconds before, so there the cursor's own checks (visit ids going back)
//! are what catch a replacement.

use super::profiles::Profile;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} kept changing while it was copied")]
    Busy(PathBuf),
    #[error("the copy of {path} cannot be opened: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// Refused before anything was copied: a link on the way, not a regular file, someone
    /// else's, or too large (see `platform::linux::beneath`).
    #[cfg(target_os = "linux")]
    #[error("{path} refused: {source}")]
    Refused {
        path: PathBuf,
        source: crate::platform::linux::beneath::BeneathError,
    },
    #[error("{path} refused: {why}")]
    Unsafe { path: PathBuf, why: String },
}

/// What a read of one profile may cost, whatever its owner put in it.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Largest database (or companion) copied; a larger one is refused unread (a sparse
    /// `truncate -s 3G History` would otherwise be written out in full).
    pub max_bytes: u64,
    /// Longest the SQL of one read may run (a `visits` view over an endless recursive query
    /// would otherwise hold the browsing thread for ever).
    pub deadline: Duration,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_bytes: 512 * 1024 * 1024,
            deadline: Duration::from_secs(5),
        }
    }
}

/// Identity of the browser's database file: a different one means it was replaced. Unix: device
/// and inode. Windows: 0 and the creation time (100 ns units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

#[cfg(unix)]
fn identity(m: &Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    FileId {
        dev: m.dev(),
        ino: m.ino(),
    }
}

#[cfg(windows)]
fn identity(m: &Metadata) -> FileId {
    use std::os::windows::fs::MetadataExt;
    FileId {
        dev: 0,
        ino: m.creation_time(),
    }
}

/// Size, modification time (seconds, nanoseconds) and identity.
#[cfg(unix)]
fn fingerprint(m: &Metadata) -> (u64, i64, i64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.len(), m.mtime(), m.mtime_nsec(), m.ino())
}

/// Size, modification time (100 ns units, and 0) and identity.
#[cfg(windows)]
fn fingerprint(m: &Metadata) -> (u64, i64, i64, u64) {
    use std::os::windows::fs::MetadataExt;
    let written = i64::try_from(m.last_write_time()).unwrap_or(i64::MAX);
    (m.len(), written, 0, m.creation_time())
}

/// Opens one of the profile's files for copying. Linux: beneath the home, no link on the way, a
/// regular file of the home's owner or root, not above the size limit, non-blocking (a FIFO
/// neither blocks nor passes).
#[cfg(target_os = "linux")]
fn open_source(p: &Profile, rel: &Path, max: u64) -> Result<std::fs::File, SnapshotError> {
    use crate::platform::linux::beneath::{BeneathError, Expect, open_file};
    let expect = Expect {
        owner: p.owner,
        max_bytes: max,
    };
    open_file(&p.anchor, rel, expect).map_err(|source| match source {
        BeneathError::Io(source) => SnapshotError::Io {
            path: p.anchor.join(rel),
            source,
        },
        source => SnapshotError::Refused {
            path: p.anchor.join(rel),
            source,
        },
    })
}

/// Opens one of the profile's files for copying, sharing read, write and delete as SQLite
/// itself does, so the browser's open write handle is not locked out (`CopyFile` asks for read
/// sharing only and fails). Elsewhere than Linux: a regular file within the size limit.
#[cfg(not(target_os = "linux"))]
fn open_source(p: &Profile, rel: &Path, max: u64) -> Result<std::fs::File, SnapshotError> {
    let path = p.anchor.join(rel);
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        const FILE_SHARE_READ: u32 = 0x1;
        const FILE_SHARE_WRITE: u32 = 0x2;
        const FILE_SHARE_DELETE: u32 = 0x4;
        opts.share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE);
    }
    let unsafe_file = |why: String| SnapshotError::Unsafe {
        path: path.clone(),
        why,
    };
    let meta = std::fs::symlink_metadata(&path).map_err(|source| SnapshotError::Io {
        path: path.clone(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(unsafe_file("not a regular file".into()));
    }
    if meta.len() > max {
        return Err(unsafe_file(format!(
            "{} bytes, above the limit of {max}",
            meta.len()
        )));
    }
    opts.open(&path).map_err(|source| SnapshotError::Io {
        path: path.clone(),
        source,
    })
}

/// Copies from the open handle (never the path again, which could have been swapped since),
/// at most `max` bytes, into a new private file.
fn copy_open(
    mut src: std::fs::File,
    to: &Path,
    max: u64,
) -> Result<std::fs::Metadata, SnapshotError> {
    use std::io::Read;
    let meta = src.metadata().map_err(|source| SnapshotError::Io {
        path: to.to_path_buf(),
        source,
    })?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let io = |source| SnapshotError::Io {
        path: to.to_path_buf(),
        source,
    };
    let mut dst = opts.open(to).map_err(io)?;
    let copied = std::io::copy(&mut (&mut src).take(max + 1), &mut dst).map_err(io)?;
    if copied > max {
        return Err(SnapshotError::Unsafe {
            path: to.to_path_buf(),
            why: format!("grew past the limit of {max} bytes while it was copied"),
        });
    }
    Ok(meta)
}

/// Size, time and identity of the database and its companions, to notice writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp([Option<(u64, i64, i64, u64)>; 3]);

const SUFFIXES: [&str; 3] = ["", "-wal", "-journal"];

fn with_suffix(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Cheap check for the periodic poll: has anything about the database changed?
pub fn stamp(db: &Path) -> Stamp {
    Stamp(SUFFIXES.map(|sfx| {
        std::fs::symlink_metadata(with_suffix(db, sfx))
            .ok()
            .map(|m| fingerprint(&m))
    }))
}

/// An open private copy; the files are deleted when it is dropped (they hold a user's whole
/// history and must not linger).
pub struct Snapshot {
    pub conn: rusqlite::Connection,
    /// The browser's file the copy was taken from.
    pub file: FileId,
    /// What the database looked like when copied.
    pub stamp: Stamp,
    copy: PathBuf,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        remove_copy(&self.copy);
    }
}

fn remove_copy(copy: &Path) {
    for sfx in ["", "-wal", "-journal", "-shm"] {
        let _ = std::fs::remove_file(with_suffix(copy, sfx));
    }
}

/// Copies the profile's database (and its -wal / -journal) into `work_dir` and opens the copy,
/// within `limits`.
pub fn take(
    profile: &Profile,
    work_dir: &Path,
    limits: ReadLimits,
) -> Result<Snapshot, SnapshotError> {
    let db = profile.db();
    let rel = profile.db_beneath();
    let copy = work_dir.join("history-copy.sqlite");
    for attempt in 0..4 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(150));
        }
        remove_copy(&copy);
        let before = stamp(&db);
        // Half a copy of a user's history must not linger either.
        let file = copy_files(profile, &rel, &copy, limits.max_bytes)
            .inspect_err(|_| remove_copy(&copy))?;
        if stamp(&db) != before {
            continue;
        }
        let conn = open_copy(&copy, limits).map_err(|source| {
            remove_copy(&copy);
            SnapshotError::Open {
                path: db.clone(),
                source,
            }
        })?;
        return Ok(Snapshot {
            conn,
            file,
            stamp: before,
            copy,
        });
    }
    remove_copy(&copy);
    Err(SnapshotError::Busy(db))
}

/// Copies the database and whichever of its companions exist; returns the database's identity.
fn copy_files(
    profile: &Profile,
    rel: &Path,
    copy: &Path,
    max: u64,
) -> Result<FileId, SnapshotError> {
    let mut file = None;
    for sfx in SUFFIXES {
        let src = match open_source(profile, &with_suffix(rel, sfx), max) {
            Ok(f) => f,
            // The companions come and go with the browser's transactions.
            Err(SnapshotError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && !sfx.is_empty() =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let meta = copy_open(src, &with_suffix(copy, sfx), max)?;
        file.get_or_insert(identity(&meta));
    }
    Ok(file.expect("the database itself (no suffix, first) was copied or returned an error"))
}

/// Opens our private copy. Read-write, never the browser's file: SQLite must be able to roll back
/// a journal copied mid-commit and rebuild the WAL index; `query_only` then makes sure this
/// connection changes nothing. The file is the user's making, so it is treated as hostile:
/// nothing in its schema is trusted (no functions from views or triggers), values are limited
/// in size, and every statement stops at the read's deadline.
fn open_copy(copy: &Path, limits: ReadLimits) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::limits::Limit;
    let mut conn = rusqlite::Connection::open_with_flags(
        copy,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.pragma_update(None, "trusted_schema", false)?;
    conn.pragma_update(None, "query_only", true)?;
    // Chromium keeps URLs up to 2 MiB; anything longer is not a browser's.
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, 4 * 1024 * 1024)?;
    conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, 64 * 1024)?;
    conn.set_limit(Limit::SQLITE_LIMIT_EXPR_DEPTH, 100)?;
    conn.set_limit(Limit::SQLITE_LIMIT_COMPOUND_SELECT, 10)?;
    let deadline = std::time::Instant::now() + limits.deadline;
    // Called every 10,000 virtual-machine steps; true interrupts the statement.
    conn.progress_handler(10_000, Some(move || std::time::Instant::now() > deadline))?;
    Ok(conn)
}
