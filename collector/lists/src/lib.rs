//! Category lists in UT1 / squidGuard format: URL normalisation, reading UT1 directories,
//! the compiled matcher, the on-disk compiled form, `lists classify` and the scheduled refresh.
//!
//! Matching is squidGuard's (see [`normalise`] for how a URL is read first):
//! - a `domains` entry matches that host and every subdomain of it (label boundaries only);
//! - a `urls` entry (host and path) matches any URL whose host-and-path starts with it, byte
//!   for byte (squidGuard compares plain prefixes, not path segments: `a.com/x` matches
//!   `a.com/xy`); the host is tried without and then with its `www`-like prefix;
//! - `expressions` are regular expressions (POSIX-like, ASCII case-insensitive) searched in
//!   the host followed by the decoded path and query.
//!
//! Lists come in two classes: ordinary (UT1 and the like, chosen by the policy) and illegal
//! (licensed feeds such as the IWF's or CTIRU's, imported with `--illegal`, stored in their
//! own file, always on). When several categories match, illegal ones come first, then each
//! class in byte order of category name; `first` returns the first of that order.

pub mod classify;
mod compile;
pub mod matcher;
pub mod normalise;
pub mod refresh;
pub mod store;
pub mod ut1;

#[cfg(test)]
mod tests;

pub use matcher::Matcher;
pub use normalise::{NormalUrl, NormaliseError, normalise, normalise_into};
pub use refresh::ListsConfig;
pub use store::{ImportReport, import};

use std::path::{Path, PathBuf};

/// Which kind of list entry matched.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Domain,
    Url,
    Expression,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Domain => "domain",
            EntryKind::Url => "url",
            EntryKind::Expression => "expression",
        }
    }
}

/// Ordinary lists are chosen by the policy; illegal lists (licensed feeds) are always on and
/// their alerts never show the URL.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ListClass {
    Illegal,
    Ordinary,
}

impl ListClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ListClass::Illegal => "illegal",
            ListClass::Ordinary => "ordinary",
        }
    }

    /// File name of this class's compiled lists inside `<data-dir>/lists/`.
    pub fn file_name(self) -> &'static str {
        match self {
            ListClass::Illegal => "illegal.lists",
            ListClass::Ordinary => "ordinary.lists",
        }
    }
}

/// One match of a URL against one category: what an alert records as "what matched".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit<'a> {
    pub category: &'a str,
    pub class: ListClass,
    pub kind: EntryKind,
    /// The entry in normal form: the listed domain, the `urls` entry, or the expression.
    pub entry: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ListsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "{path}: no categories found (expected a folder per category holding domains, urls or expressions files)"
    )]
    Empty { path: PathBuf },
    #[error("{path}: not usable compiled lists: {message}")]
    BadCompiled { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Other { path: PathBuf, message: String },
}

/// Every loaded list, both classes. Cheap to share in an `Arc`; swap a new one in to reload.
#[derive(Debug, Default)]
pub struct Lists {
    /// Illegal first, so that it wins in [`Lists::first`].
    matchers: Vec<Matcher>,
}

impl Lists {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn from_matchers(mut matchers: Vec<Matcher>) -> Self {
        matchers.sort_by_key(|m| m.class());
        Self { matchers }
    }

    /// Loads the compiled lists of a data directory (`<data-dir>/lists/*.lists`); a class that
    /// was never imported is simply absent.
    pub fn load(data_dir: &Path) -> Result<Self, ListsError> {
        Self::load_compiled_dir(&store::lists_dir(data_dir))
    }

    fn load_compiled_dir(dir: &Path) -> Result<Self, ListsError> {
        let mut matchers = Vec::new();
        for class in [ListClass::Illegal, ListClass::Ordinary] {
            let path = dir.join(class.file_name());
            if path.exists() {
                matchers.push(store::load_file(&path)?);
            }
        }
        Ok(Self::from_matchers(matchers))
    }

    /// Opens lists for `classify`: a compiled `.lists` file, a folder holding them (such as
    /// `<data-dir>/lists`), a data directory, or a raw UT1 directory (compiled in memory, as
    /// ordinary lists).
    pub fn open(path: &Path) -> Result<Self, ListsError> {
        if path.is_file() {
            return Ok(Self::from_matchers(vec![store::load_file(path)?]));
        }
        let has_compiled = |d: &Path| {
            [ListClass::Illegal, ListClass::Ordinary]
                .iter()
                .any(|c| d.join(c.file_name()).is_file())
        };
        if has_compiled(path) {
            return Self::load_compiled_dir(path);
        }
        if has_compiled(&store::lists_dir(path)) {
            return Self::load(path);
        }
        let (matcher, _) =
            compile::from_ut1(path, ListClass::Ordinary, &path.display().to_string())?;
        Ok(Self::from_matchers(vec![matcher]))
    }

    pub fn matchers(&self) -> &[Matcher] {
        &self.matchers
    }

    pub fn is_empty(&self) -> bool {
        self.matchers.iter().all(|m| m.categories().is_empty())
    }

    /// Every category that matches `url`, with the entry that matched; empty for a URL that
    /// does not parse.
    pub fn lookup(&self, url: &str) -> Vec<Hit<'_>> {
        match normalise(url) {
            Ok(u) => self.lookup_normal(&u),
            Err(_) => Vec::new(),
        }
    }

    pub fn lookup_normal(&self, url: &NormalUrl) -> Vec<Hit<'_>> {
        let mut hits = Vec::new();
        for m in &self.matchers {
            m.hits(url, &mut hits);
        }
        hits
    }

    /// The first matching category (illegal ones first, then byte order of name).
    pub fn first(&self, url: &str) -> Option<&str> {
        self.first_normal(&normalise(url).ok()?)
    }

    /// [`Lists::first`] normalising into `scratch`, to spare an allocation per URL.
    pub fn first_reusing(&self, url: &str, scratch: &mut NormalUrl) -> Option<&str> {
        normalise_into(url, scratch).ok()?;
        self.first_normal(scratch)
    }

    pub fn first_normal(&self, url: &NormalUrl) -> Option<&str> {
        self.matchers.iter().find_map(|m| m.first(url))
    }
}
