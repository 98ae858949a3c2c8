//! Opening a file inside a user's home, as root, the way the user cannot redirect.
//!
//! Everything under a home directory is the user's to change: any component of a path such as
//! `.config/chromium/Default/History` can be made a symbolic link to a file the user may not read
//! (`/etc/shadow`, another user's history), or a FIFO that blocks whoever opens it. So the path
//! is resolved from the home's descriptor with no symbolic link in any component and without
//! leaving the home (`openat2` with `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`; on kernels before
//! 5.6 a walk opening each component with `O_NOFOLLOW`), opened non-blocking, and accepted only
//! if it is a regular file owned by the expected user or root and not larger than allowed.

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::sys::stat::Mode;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

/// Why a file was refused.
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("a symbolic link or a path leaving {anchor} is on the way")]
    Link { anchor: String },
    #[error("not a regular file")]
    NotRegular,
    #[error("owned by uid {found}, not by {expected} or root")]
    Owner { found: u32, expected: u32 },
    #[error("{size} bytes, above the limit of {max}")]
    TooLarge { size: u64, max: u64 },
}

/// What a file must be to be opened.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// The file's owner must be this uid or root; `None` accepts any owner.
    pub owner: Option<u32>,
    pub max_bytes: u64,
}

/// Opens `rel` (relative, no `..`) beneath `anchor` for reading, as described in the module
/// doc, and checks it against `expect` on the open descriptor.
pub fn open_file(anchor: &Path, rel: &Path, expect: Expect) -> Result<File, BeneathError> {
    let file = File::from(open_beneath(anchor, rel)?);
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(BeneathError::NotRegular);
    }
    if let Some(expected) = expect.owner
        && meta.uid() != expected
        && meta.uid() != 0
    {
        return Err(BeneathError::Owner {
            found: meta.uid(),
            expected,
        });
    }
    if meta.len() > expect.max_bytes {
        return Err(BeneathError::TooLarge {
            size: meta.len(),
            max: expect.max_bytes,
        });
    }
    Ok(file)
}

fn open_beneath(anchor: &Path, rel: &Path) -> Result<OwnedFd, BeneathError> {
    let link = || BeneathError::Link {
        anchor: anchor.display().to_string(),
    };
    if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(link());
    }
    let dir = open(
        anchor,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)?;
    // Non-blocking: a FIFO must not hold the reader before its type is checked.
    let flags = OFlag::O_RDONLY
        | OFlag::O_CLOEXEC
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY;
    let how = OpenHow::new().flags(flags).resolve(
        ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    match openat2(&dir, rel, how) {
        Ok(fd) => Ok(fd),
        // ELOOP: a link in some component; EXDEV: the path would leave the anchor.
        Err(Errno::ELOOP | Errno::EXDEV) => Err(link()),
        // Kernels before 5.6, or a seccomp filter that hides the call.
        Err(Errno::ENOSYS | Errno::EPERM) => walk(dir, rel, flags).map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => link(),
            e => errno(e),
        }),
        Err(e) => Err(errno(e)),
    }
}

/// The portable equivalent: each directory opened from the previous one with `O_NOFOLLOW`.
fn walk(mut dir: OwnedFd, rel: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let mut parts = rel.components().peekable();
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        let f = if last {
            flags
        } else {
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
        };
        dir = openat(&dir, part.as_os_str(), f, Mode::empty())?;
    }
    Ok(dir)
}

fn errno(e: Errno) -> BeneathError {
    BeneathError::Io(io::Error::from(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const ANY: Expect = Expect {
        owner: None,
        max_bytes: 1 << 20,
    };

    #[test]
    fn opens_a_plain_file_and_refuses_links_fifos_and_escapes() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        std::fs::create_dir_all(h.join("a/b")).unwrap();
        std::fs::write(h.join("a/b/History"), b"data").unwrap();
        assert!(open_file(h, Path::new("a/b/History"), ANY).is_ok());

        // The last component a link (to a file the user may not read).
        symlink("/etc/shadow", h.join("a/b/Shadow")).unwrap();
        let e = open_file(h, Path::new("a/b/Shadow"), ANY).unwrap_err();
        assert!(matches!(e, BeneathError::Link { .. }), "{e}");
        // A directory on the way a link.
        symlink(h.join("a"), h.join("c")).unwrap();
        let e = open_file(h, Path::new("c/b/History"), ANY).unwrap_err();
        assert!(matches!(e, BeneathError::Link { .. }), "{e}");
        let e = open_file(h, Path::new("../etc/passwd"), ANY).unwrap_err();
        assert!(matches!(e, BeneathError::Link { .. }), "{e}");

        // A FIFO neither blocks nor is accepted.
        nix::unistd::mkfifo(
            &h.join("a/b/History-journal"),
            Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let e = open_file(h, Path::new("a/b/History-journal"), ANY).unwrap_err();
        assert!(matches!(e, BeneathError::NotRegular), "{e}");
        let e = open_file(h, Path::new("a/b"), ANY).unwrap_err();
        assert!(matches!(e, BeneathError::NotRegular), "{e}");
        let e = open_file(h, Path::new("a/none"), ANY).unwrap_err();
        assert!(
            matches!(&e, BeneathError::Io(io) if io.kind() == io::ErrorKind::NotFound),
            "{e}"
        );
    }

    #[test]
    fn the_walk_refuses_links_as_openat2_does() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        std::fs::create_dir_all(h.join("a")).unwrap();
        std::fs::write(h.join("a/f"), b"x").unwrap();
        symlink(h.join("a"), h.join("l")).unwrap();
        let dir = || open(h, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW;
        assert!(walk(dir(), Path::new("a/f"), flags).is_ok());
        // O_DIRECTORY | O_NOFOLLOW on a link: ENOTDIR; O_NOFOLLOW on a final link: ELOOP.
        let e = walk(dir(), Path::new("l/f"), flags).unwrap_err();
        assert!(matches!(e, Errno::ENOTDIR | Errno::ELOOP), "{e}");
        std::os::unix::fs::symlink(h.join("a/f"), h.join("a/g")).unwrap();
        assert_eq!(
            walk(dir(), Path::new("a/g"), flags).unwrap_err(),
            Errno::ELOOP
        );
    }

    #[test]
    fn sparse_and_foreign_files_are_refused_before_a_byte_is_read() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let f = File::create(h.join("History")).unwrap();
        f.set_len(3 << 30).unwrap(); // `truncate -s 3G`: no blocks, 3 GB to copy
        let e = open_file(
            h,
            Path::new("History"),
            Expect {
                owner: None,
                max_bytes: 1 << 30,
            },
        )
        .unwrap_err();
        assert!(matches!(e, BeneathError::TooLarge { .. }), "{e}");
        let me = nix::unistd::getuid().as_raw();
        if me == 0 {
            // As root the file is root's, which is always accepted; another owner is not.
            nix::unistd::chown(
                &h.join("History"),
                Some(nix::unistd::Uid::from_raw(4242)),
                None,
            )
            .unwrap();
        }
        let e = open_file(
            h,
            Path::new("History"),
            Expect {
                owner: Some(4243),
                max_bytes: u64::MAX,
            },
        );
        if me == 0 {
            assert!(matches!(e, Err(BeneathError::Owner { found: 4242, .. })));
        } else {
            assert!(matches!(e, Err(BeneathError::Owner { .. })));
        }
    }
}
