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

/// Copies a file the browser may hold open.
#[cfg(unix)]
fn copy_shared(from: &Path, to: &Path) -> std::io::Result<u64> {
    std::fs::copy(from, to)
}

/// Copies a file the browser holds open. `CopyFile` asks for read sharing only, which fails
/// against the browser's open write handle; this opens the source sharing read, write and
/// delete, as SQLite itself does, so neither side is locked out.
#[cfg(windows)]
fn copy_shared(from: &Path, to: &Path) -> std::io::Result<u64> {
    use std::os::windows::fs::OpenOptionsExt;
    const FILE_SHARE_READ: u32 = 0x1;
    const FILE_SHARE_WRITE: u32 = 0x2;
    const FILE_SHARE_DELETE: u32 = 0x4;
    let mut src = std::fs::OpenOptions::new()
        .read(true)
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
        .open(from)?;
    let mut dst = std::fs::File::create(to)?;
    std::io::copy(&mut src, &mut dst)
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
        std::fs::metadata(with_suffix(db, sfx))
            .ok()
            .map(|m| fingerprint(&m))
    }))
}

pub fn file_id(db: &Path) -> std::io::Result<FileId> {
    Ok(identity(&std::fs::metadata(db)?))
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

/// Copies `db` (and its -wal / -journal) into `work_dir` and opens the copy.
pub fn take(db: &Path, work_dir: &Path) -> Result<Snapshot, SnapshotError> {
    let copy = work_dir.join("history-copy.sqlite");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Io { path, source }
    };
    for attempt in 0..4 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(150));
        }
        remove_copy(&copy);
        let before = stamp(db);
        let file = file_id(db).map_err(io(db))?;
        for sfx in SUFFIXES {
            let src = with_suffix(db, sfx);
            match copy_shared(&src, &with_suffix(&copy, sfx)) {
                Ok(_) => {}
                // The companions come and go with the browser's transactions.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !sfx.is_empty() => {}
                Err(e) => return Err(io(&src)(e)),
            }
        }
        if stamp(db) != before {
            continue;
        }
        // Read-write on our own copy, never on the browser's file: SQLite must be able to roll
        // back a journal copied mid-commit and rebuild the WAL index. query_only then makes sure
        // this connection itself changes nothing.
        let conn = rusqlite::Connection::open_with_flags(
            &copy,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| c.pragma_update(None, "query_only", true).map(|_| c))
        .map_err(|source| SnapshotError::Open {
            path: db.to_path_buf(),
            source,
        })?;
        return Ok(Snapshot {
            conn,
            file,
            stamp: before,
            copy,
        });
    }
    remove_copy(&copy);
    Err(SnapshotError::Busy(db.to_path_buf()))
}
