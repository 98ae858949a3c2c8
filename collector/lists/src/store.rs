//! Compiled lists on disk, and `lists import`.
//!
//! Layout: `<data-dir>/lists/ordinary.lists` and `<data-dir>/lists/illegal.lists`, one file
//! per class, each loaded with a single read:
//!
//! ```text
//! 0   8  magic "INVLISTS"
//! 8   4  format version (u32 LE, 1)
//! 12  4  header length H (u32 LE)
//! 16  8  domains fst length D (u64 LE)
//! 24  8  urls fst length U (u64 LE)
//! 32 32  SHA-256 of everything after this field
//! 64  H  header: JSON (class, source, import time and report, categories, category sets,
//!        expressions)
//! ..  D  domains fst (keys: reversed hosts)
//! ..  U  urls fst (keys: normal-form host and path)
//! ```
//!
//! An import builds the new file beside the old one (`.ordinary.lists.tmp-*`), fsyncs it,
//! reads it back through the loader, and only then renames it over the old file and fsyncs
//! the folder: a failed or interrupted import leaves the previous lists as they were.

use super::compile::{assemble, from_ut1};
use super::matcher::{CategoryInfo, ImportInfo, Matcher, Shared};
use super::ut1::ReadReport;
use super::{ListClass, ListsError};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"INVLISTS";
const VERSION: u32 = 1;
const PREFIX: usize = 64;

pub fn lists_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("lists")
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    class: ListClass,
    info: ImportInfo,
    categories: Vec<CategoryInfo>,
    sets: Vec<Vec<u16>>,
    expressions: Vec<(u32, String)>,
}

/// The file's bytes.
pub(crate) fn to_bytes(m: &Matcher) -> Result<Vec<u8>, serde_json::Error> {
    let header = serde_json::to_vec(&Header {
        class: m.class,
        info: m.info.clone(),
        categories: m.categories.clone(),
        sets: m.sets.iter().map(|s| s.to_vec()).collect(),
        expressions: m.expr_info.clone(),
    })?;
    let domains = m.domains.as_bytes();
    let urls = m.urls.as_bytes();
    let mut out = Vec::with_capacity(PREFIX + header.len() + domains.len() + urls.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&(domains.len() as u64).to_le_bytes());
    out.extend_from_slice(&(urls.len() as u64).to_le_bytes());
    out.extend_from_slice(&[0; 32]);
    out.extend_from_slice(&header);
    out.extend_from_slice(domains);
    out.extend_from_slice(urls);
    let digest = Sha256::digest(&out[PREFIX..]);
    out[32..PREFIX].copy_from_slice(&digest);
    Ok(out)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Reads compiled lists from bytes; every part is checked (checksum, fst checksums, category
/// references, expressions), so a damaged file is an error and never a panic later.
pub(crate) fn from_bytes(buf: Vec<u8>) -> Result<Matcher, String> {
    if buf.len() < PREFIX || &buf[..8] != MAGIC {
        return Err("not a compiled lists file (bad magic)".into());
    }
    let version = le_u32(&buf, 8);
    if version != VERSION {
        return Err(format!(
            "format version {version}, this collector reads {VERSION}: import the lists again"
        ));
    }
    let h = le_u32(&buf, 12) as usize;
    let d = usize::try_from(le_u64(&buf, 16)).map_err(|_| "bad length")?;
    let u = usize::try_from(le_u64(&buf, 24)).map_err(|_| "bad length")?;
    let total = PREFIX
        .checked_add(h)
        .and_then(|x| x.checked_add(d))
        .and_then(|x| x.checked_add(u));
    if total != Some(buf.len()) {
        return Err("truncated or overlong (section lengths do not add up)".into());
    }
    if Sha256::digest(&buf[PREFIX..]).as_slice() != &buf[32..PREFIX] {
        return Err("checksum mismatch (the file is damaged)".into());
    }
    let header: Header =
        serde_json::from_slice(&buf[PREFIX..PREFIX + h]).map_err(|e| format!("header: {e}"))?;
    let buf = Arc::new(buf);
    let ds = PREFIX + h;
    let domains = Shared::new(buf.clone(), ds, ds + d);
    let urls = Shared::new(buf, ds + d, ds + d + u);
    let m = assemble(
        header.class,
        header.categories,
        header.sets,
        domains,
        urls,
        header.expressions,
        header.info,
    )?;
    m.domains.verify().map_err(|e| format!("domains: {e}"))?;
    m.urls.verify().map_err(|e| format!("urls: {e}"))?;
    Ok(m)
}

/// Loads one `.lists` file with one read.
pub fn load_file(path: &Path) -> Result<Matcher, ListsError> {
    let buf = std::fs::read(path).map_err(|source| ListsError::Io {
        path: path.to_owned(),
        source,
    })?;
    from_bytes(buf).map_err(|message| ListsError::BadCompiled {
        path: path.to_owned(),
        message,
    })
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub class: ListClass,
    /// The compiled file written.
    pub path: PathBuf,
    pub categories: Vec<CategoryInfo>,
    pub read: ReadReport,
    pub bytes: u64,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let aliases = self
            .categories
            .iter()
            .filter(|c| c.alias_of.is_some())
            .count();
        writeln!(
            f,
            "imported {} {} categories ({} aliases): {} entries, {} lines skipped, into {} ({} bytes)",
            self.categories.len(),
            self.class.as_str(),
            aliases,
            self.read.entries,
            self.read.skipped_total,
            self.path.display(),
            self.bytes
        )?;
        for s in &self.read.skipped {
            writeln!(f, "  skipped {s}")?;
        }
        if self.read.skipped_total > self.read.skipped.len() as u64 {
            writeln!(
                f,
                "  ... and {} more skipped lines",
                self.read.skipped_total - self.read.skipped.len() as u64
            )?;
        }
        Ok(())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ListsError + '_ {
    move |source| ListsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// Removes a path when dropped (temporary files and folders of an import).
struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Unpacks a `.tar.gz` UT1 archive with the system `tar` (GNU tar refuses members that climb
/// out of the target) and returns the folder holding the categories.
fn unpack(archive: &Path, into: &Path) -> Result<PathBuf, ListsError> {
    std::fs::create_dir(into).map_err(io(into))?;
    let out = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .args(["--no-same-owner", "--no-same-permissions"])
        .output()
        .map_err(io(archive))?;
    if !out.status.success() {
        return Err(ListsError::Other {
            path: archive.to_owned(),
            message: format!(
                "tar could not unpack it: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    // UT1's archive holds one top folder (`blacklists/`).
    let mut dir = into.to_owned();
    for _ in 0..3 {
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .filter_map(Result::ok)
            .collect();
        match entries.as_slice() {
            [only] if only.path().is_dir() && super::ut1::categories(&dir)?.is_empty() => {
                dir = only.path();
            }
            _ => break,
        }
    }
    Ok(dir)
}

fn is_archive(p: &Path) -> bool {
    let name = p.to_string_lossy();
    p.is_file() && (name.ends_with(".tar.gz") || name.ends_with(".tgz"))
}

/// `lists import --format ut1 [--illegal] SOURCE`: compiles a UT1 directory (or `.tar.gz`)
/// into `<data-dir>/lists/<class>.lists`, replacing the previous file atomically.
pub fn import(
    data_dir: &Path,
    source: &Path,
    class: ListClass,
) -> Result<ImportReport, ListsError> {
    let dir = lists_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let suffix = unique_suffix();
    let mut _unpacked = Cleanup(None);
    let ut1_dir = if is_archive(source) {
        let into = dir.join(format!(".unpack-{suffix}"));
        _unpacked = Cleanup(Some(into.clone()));
        unpack(source, &into)?
    } else if source.is_dir() {
        source.to_owned()
    } else {
        return Err(ListsError::Other {
            path: source.to_owned(),
            message: "not a directory or a .tar.gz archive".into(),
        });
    };
    let (matcher, read) = from_ut1(&ut1_dir, class, &source.display().to_string())?;
    drop(_unpacked);
    let bytes = to_bytes(&matcher).map_err(|e| ListsError::Other {
        path: source.to_owned(),
        message: format!("serialising: {e}"),
    })?;
    let categories = matcher.categories.clone();
    drop(matcher);

    let target = dir.join(class.file_name());
    let tmp = dir.join(format!(".{}.tmp-{suffix}", class.file_name()));
    let mut cleanup = Cleanup(Some(tmp.clone()));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    // What the collector will load is what was written, not what we meant to write.
    load_file(&tmp)?;
    std::fs::rename(&tmp, &target).map_err(io(&target))?;
    cleanup.0 = None;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(&dir))?;
    Ok(ImportReport {
        class,
        path: target,
        categories,
        read,
        bytes: bytes.len() as u64,
    })
}
