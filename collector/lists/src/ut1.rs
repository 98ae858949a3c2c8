//! Reading a UT1 / squidGuard directory: a folder per category holding `domains`, `urls` and
//! `expressions` files (any of them may be missing), plus alias files.
//!
//! UT1 ships some categories as symlinks to others (`porn -> adult`); copies that flattened the
//! links hold a small file named after the alias whose only line is the target's name. Both
//! forms are read as an alias: a category of its own name with the target's entries.
//!
//! Reading is tolerant: `#` comments, blank lines, CRLF, leading `+`/`-` (squidGuard diff
//! files) and trailing fields are accepted; a line that is not an entry is skipped and counted.
//! What is fatal: an unreadable file, a binary file (a NUL byte), and a file where most lines
//! are bad (a wrong file in the wrong place), because importing it would silently replace good
//! lists with nothing.

use super::{EntryKind, ListsError};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// Files larger than this are not alias files (they are READMEs, licences...).
const ALIAS_FILE_MAX: u64 = 256;
/// A file with more bad lines than this share (and more than [`BAD_LINES_MIN`]) is corrupt.
const BAD_LINES_MAX_SHARE: f64 = 0.10;
const BAD_LINES_MIN: usize = 10;
/// Skipped lines kept as examples in the report.
pub const SKIPPED_EXAMPLES: usize = 20;

/// One category folder (or alias) found in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub name: String,
    /// For an alias, the category whose folder it shares (after following chains).
    pub alias_of: Option<String>,
}

/// A skipped line: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Skipped {
    pub file: PathBuf,
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// Lines read and skipped over a whole directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadReport {
    pub entries: u64,
    pub skipped_total: u64,
    /// The first [`SKIPPED_EXAMPLES`] skipped lines.
    pub skipped: Vec<Skipped>,
}

impl ReadReport {
    fn skip(&mut self, s: Skipped) {
        self.skipped_total += 1;
        if self.skipped.len() < SKIPPED_EXAMPLES {
            self.skipped.push(s);
        }
    }
}

fn valid_category_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ListsError + '_ {
    move |source| ListsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Lists the categories of a UT1 directory in byte order of their names (aliases included).
pub fn categories(dir: &Path) -> Result<Vec<Category>, ListsError> {
    let mut folders = Vec::new();
    let mut aliases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !valid_category_name(&name) {
            continue;
        }
        let path = entry.path();
        let link_meta = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
        if link_meta.file_type().is_symlink() {
            // A link to a sibling folder is an alias; anything else is followed as a folder.
            if let Ok(target) = std::fs::read_link(&path) {
                let t = target.to_string_lossy().trim_end_matches('/').to_string();
                if valid_category_name(&t) && dir.join(&t).is_dir() {
                    aliases.push((name, t));
                    continue;
                }
            }
        }
        let meta = std::fs::metadata(&path).map_err(io_err(&path))?;
        if meta.is_dir() {
            if ["domains", "urls", "expressions"]
                .iter()
                .any(|f| path.join(f).is_file())
            {
                folders.push(name);
            }
        } else if meta.is_file() && meta.len() <= ALIAS_FILE_MAX {
            let text = std::fs::read(&path).map_err(io_err(&path))?;
            let text = String::from_utf8_lossy(&text);
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            if let (Some(target), None) = (lines.next(), lines.next())
                && valid_category_name(target)
                && target != name
            {
                aliases.push((name, target.to_owned()));
            }
        }
    }
    let mut out: Vec<Category> = folders
        .iter()
        .map(|name| Category {
            name: name.clone(),
            alias_of: None,
        })
        .collect();
    for (name, target) in &aliases {
        // Follow alias chains (a -> b -> folder); drop cycles and dangling aliases.
        let mut t = target.clone();
        let mut hops = 0;
        let resolved = loop {
            if folders.contains(&t) {
                break Some(t);
            }
            match aliases.iter().find(|(n, _)| *n == t) {
                Some((_, next)) if hops < 16 => {
                    t = next.clone();
                    hops += 1;
                }
                _ => break None,
            }
        };
        if let Some(target) = resolved {
            out.push(Category {
                name: name.clone(),
                alias_of: Some(target),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Reads the entries of one category file, line by line. `entry` gets each entry (first field
/// of the line, `+`/`-` removed) and the line number, and says why when it refuses one.
pub fn read_file(
    path: &Path,
    kind: EntryKind,
    report: &mut ReadReport,
    mut entry: impl FnMut(&str, usize) -> Result<(), String>,
) -> Result<(), ListsError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut buf = Vec::with_capacity(256);
    let mut line_no = 0usize;
    let (mut good, mut bad) = (0usize, 0usize);
    let mut first_bad: Option<Skipped> = None;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.contains(&0) {
            return Err(ListsError::Corrupt {
                path: path.to_owned(),
                line: line_no,
                message: "binary data (NUL byte): not a list file".into(),
            });
        }
        let mut skip = |reason: String| {
            let s = Skipped {
                file: path.to_owned(),
                line: line_no,
                reason,
            };
            if first_bad.is_none() {
                first_bad = Some(s.clone());
            }
            report.skip(s);
        };
        let Ok(line) = std::str::from_utf8(&buf) else {
            bad += 1;
            skip("not UTF-8".into());
            continue;
        };
        let line = line.trim_end_matches(['\n', '\r']);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let value = match kind {
            // An expression is the whole line: spaces can be part of it.
            EntryKind::Expression => trimmed,
            _ => {
                let t = trimmed.trim_start_matches(['+', '-']);
                t.split_ascii_whitespace().next().unwrap_or("")
            }
        };
        if value.is_empty() {
            continue;
        }
        match entry(value, line_no) {
            Ok(()) => good += 1,
            Err(reason) => {
                bad += 1;
                skip(reason);
            }
        }
    }
    report.entries += good as u64;
    if bad > BAD_LINES_MIN && bad as f64 > (good + bad) as f64 * BAD_LINES_MAX_SHARE {
        let first = first_bad.unwrap_or(Skipped {
            file: path.to_owned(),
            line: 0,
            reason: String::new(),
        });
        return Err(ListsError::Corrupt {
            path: path.to_owned(),
            line: first.line,
            message: format!(
                "{bad} of {} lines are not {} entries (first: {}); refusing the file",
                good + bad,
                kind.as_str(),
                first.reason
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &[u8]) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn finds_folders_and_aliases_in_byte_order() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "b/domains", b"x.com\n");
        write(d.path(), "a/urls", b"x.com/a\n");
        write(d.path(), "empty/usage", b"black\n");
        write(d.path(), "porn", b"b\n");
        write(d.path(), "chain", b"porn\n");
        write(d.path(), "loop1", b"loop2\n");
        write(d.path(), "loop2", b"loop1\n");
        write(d.path(), "README", b"some text\nmore\n");
        write(d.path(), "NOTICE", b"nothing-here\n");
        std::os::unix::fs::symlink("a", d.path().join("Z-link")).unwrap();
        let cats = categories(d.path()).unwrap();
        let got: Vec<_> = cats
            .iter()
            .map(|c| {
                format!(
                    "{}{}",
                    c.name,
                    c.alias_of
                        .as_ref()
                        .map(|t| format!("->{t}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        assert_eq!(got, ["Z-link->a", "a", "b", "chain->b", "porn->b"]);
    }

    #[test]
    fn tolerates_comments_crlf_and_bad_lines_and_counts_them() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "c/domains",
            b"# comment\r\n\r\nA.com\r\n+b.com redirect\n-c.com\n  d.com  \nbad/one\n\xff\xfe\n",
        );
        let mut report = ReadReport::default();
        let mut seen = Vec::new();
        read_file(
            &d.path().join("c/domains"),
            EntryKind::Domain,
            &mut report,
            |e, line| {
                if e.contains('/') {
                    return Err(format!("{e:?} is not a domain"));
                }
                seen.push((e.to_owned(), line));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(
            seen,
            [
                ("A.com".into(), 3),
                ("b.com".into(), 4),
                ("c.com".into(), 5),
                ("d.com".into(), 6)
            ]
        );
        assert_eq!(report.entries, 4);
        assert_eq!(report.skipped_total, 2);
        assert_eq!(report.skipped[0].line, 7);
        assert_eq!(report.skipped[1].reason, "not UTF-8");
        assert!(
            report.skipped[0]
                .to_string()
                .ends_with("c/domains:7: \"bad/one\" is not a domain")
        );
    }

    #[test]
    fn binary_and_mostly_bad_files_are_corrupt_with_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "c/domains",
            b"a.com\nb.com\n\x1f\x8b\x00\x08gzip\n",
        );
        let err = read_file(
            &d.path().join("c/domains"),
            EntryKind::Domain,
            &mut ReadReport::default(),
            |_, _| Ok(()),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("c/domains:3") && err.contains("NUL"), "{err}");

        let mut text = String::from("ok.com\n");
        for i in 0..20 {
            text.push_str(&format!("<html {i}>\n"));
        }
        write(d.path(), "c/urls", text.as_bytes());
        let err = read_file(
            &d.path().join("c/urls"),
            EntryKind::Url,
            &mut ReadReport::default(),
            |e, _| {
                if e.starts_with('<') {
                    Err("not a URL".into())
                } else {
                    Ok(())
                }
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("c/urls:2") && err.contains("20 of 21"),
            "{err}"
        );
    }
}
