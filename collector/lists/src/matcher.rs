//! The compiled matcher of one class of lists.
//!
//! - Domains: one fst over every category's domains, keys reversed (`moc.elpmaxe`), so the
//!   host is walked once from its end; a final state reached just before a `.` of the host
//!   (or at its start) is a listed domain that the host equals or is a subdomain of.
//! - URLs: one fst over the `urls` entries in normal form; the URL is walked once from its
//!   start and every final state on the way is a listed prefix.
//! - Expressions: one `RegexSet`.
//!
//! An fst value is an index into a table of category sets (a domain can be in several
//! categories); category ids follow byte order of names, so the first category of a set is
//! its smallest id.

use super::normalise::NormalUrl;
use super::{EntryKind, Hit, ListClass};
use fst::raw::{Fst, Output};
use std::sync::Arc;

/// Bytes of one fst: a range of a buffer shared with the other sections of its file.
#[derive(Clone)]
pub(crate) struct Shared {
    buf: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

impl Shared {
    pub(crate) fn new(buf: Arc<Vec<u8>>, start: usize, end: usize) -> Self {
        Self { buf, start, end }
    }

    pub(crate) fn whole(buf: Vec<u8>) -> Self {
        let end = buf.len();
        Self::new(Arc::new(buf), 0, end)
    }
}

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or(&[])
    }
}

/// A category of a compiled list, with the number of entries it was built from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CategoryInfo {
    pub name: String,
    /// Set for an alias (UT1's `porn -> adult`): the category whose entries it shares.
    pub alias_of: Option<String>,
    pub domains: u64,
    pub urls: u64,
    pub expressions: u64,
}

/// Where the lists came from, when, and what was skipped reading them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportInfo {
    pub source: String,
    /// RFC 3339.
    pub imported_at: String,
    pub report: super::ut1::ReadReport,
}

pub struct Matcher {
    pub(crate) class: ListClass,
    pub(crate) categories: Vec<CategoryInfo>,
    pub(crate) sets: Vec<Box<[u16]>>,
    /// First (smallest) category id of each set.
    pub(crate) set_min: Vec<u16>,
    pub(crate) domains: Fst<Shared>,
    pub(crate) urls: Fst<Shared>,
    pub(crate) exprs: Option<regex::bytes::RegexSet>,
    /// Set index and source text of each expression, in `exprs` order.
    pub(crate) expr_info: Vec<(u32, String)>,
    /// Smallest category id any expression can give (skip the regexes when a better one is
    /// already known).
    pub(crate) expr_min: u16,
    pub(crate) info: ImportInfo,
    /// The root's transitions of `domains` and `urls` by byte: every walk starts there, and
    /// decoding the root (the node with the most transitions) was a noticeable share of the
    /// time `lists classify` takes. 256 entries each.
    pub(crate) domain_root: Vec<Option<(fst::raw::CompiledAddr, Output)>>,
    pub(crate) url_root: Vec<Option<(fst::raw::CompiledAddr, Output)>>,
}

fn root_table(fst: &Fst<Shared>) -> Vec<Option<(fst::raw::CompiledAddr, Output)>> {
    let root = fst.root();
    (0..=255u8)
        .map(|b| {
            root.find_input(b).map(|t| {
                let tr = root.transition(t);
                (tr.addr, tr.out)
            })
        })
        .collect()
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher")
            .field("class", &self.class)
            .field("categories", &self.categories.len())
            .field("domains", &self.domains.len())
            .field("urls", &self.urls.len())
            .field("expressions", &self.expr_info.len())
            .finish()
    }
}

/// Builds the case-insensitive, byte-oriented regex set squidGuard's POSIX `regcomp`
/// (REG_EXTENDED | REG_ICASE, C locale) corresponds to.
pub(crate) fn regex_set(patterns: &[&str]) -> Result<Option<regex::bytes::RegexSet>, regex::Error> {
    if patterns.is_empty() {
        return Ok(None);
    }
    regex::bytes::RegexSetBuilder::new(patterns)
        .case_insensitive(true)
        .unicode(false)
        .size_limit(64 << 20)
        .dfa_size_limit(16 << 20)
        .build()
        .map(Some)
}

/// Compiles one expression alone, to report a bad one by its line.
pub(crate) fn check_regex(pattern: &str) -> Result<(), String> {
    regex::bytes::RegexBuilder::new(pattern)
        .case_insensitive(true)
        .unicode(false)
        .size_limit(16 << 20)
        .build()
        .map(|_| ())
        .map_err(|e| {
            let msg = e.to_string();
            // The regex crate's message spans lines; keep its last, most specific one.
            let last = msg.lines().rfind(|l| !l.trim().is_empty()).unwrap_or(&msg);
            format!("expression does not compile: {}", last.trim())
        })
}

impl Matcher {
    pub fn class(&self) -> ListClass {
        self.class
    }

    pub fn categories(&self) -> &[CategoryInfo] {
        &self.categories
    }

    pub fn info(&self) -> &ImportInfo {
        &self.info
    }

    pub(crate) fn finish_sets(&mut self) {
        self.domain_root = root_table(&self.domains);
        self.url_root = root_table(&self.urls);
        self.set_min = self
            .sets
            .iter()
            .map(|s| s.iter().copied().min().unwrap_or(u16::MAX))
            .collect();
        self.expr_min = self
            .expr_info
            .iter()
            .filter_map(|(s, _)| self.set_min.get(*s as usize).copied())
            .min()
            .unwrap_or(u16::MAX);
    }

    fn set_value(out: Output) -> usize {
        usize::try_from(out.value()).unwrap_or(usize::MAX)
    }

    /// Calls `f(start, set)` for every listed domain that `host[start..]` is, walking the
    /// reversed-domain fst once from the end of the host.
    fn walk_domains(&self, host: &[u8], mut f: impl FnMut(usize, usize)) {
        let fst = &self.domains;
        let Some(&b) = host.last() else {
            return;
        };
        // The first step from the table (the root itself is final only for an empty key).
        let Some(Some((addr, mut out))) = self.domain_root.get(usize::from(b)).copied() else {
            return;
        };
        let mut node = fst.node(addr);
        let mut i = host.len() - 1;
        while i > 0 {
            let b = host[i - 1];
            if b == b'.' && i < host.len() && node.is_final() {
                f(i, Self::set_value(out.cat(node.final_output())));
            }
            let Some(t) = node.find_input(b) else {
                return;
            };
            let tr = node.transition(t);
            out = out.cat(tr.out);
            node = fst.node(tr.addr);
            i -= 1;
        }
        if node.is_final() {
            f(0, Self::set_value(out.cat(node.final_output())));
        }
    }

    /// Calls `f(len, set)` for every `urls` entry that is a prefix `s[..len]`.
    fn walk_urls(&self, s: &[u8], mut f: impl FnMut(usize, usize)) {
        let fst = &self.urls;
        let Some(&b) = s.first() else {
            return;
        };
        let Some(Some((addr, mut out))) = self.url_root.get(usize::from(b)).copied() else {
            return;
        };
        let mut node = fst.node(addr);
        if node.is_final() {
            f(1, Self::set_value(out.cat(node.final_output())));
        }
        for (i, &b) in s.iter().enumerate().skip(1) {
            let Some(t) = node.find_input(b) else {
                return;
            };
            let tr = node.transition(t);
            out = out.cat(tr.out);
            node = fst.node(tr.addr);
            if node.is_final() {
                f(i + 1, Self::set_value(out.cat(node.final_output())));
            }
        }
    }

    fn first_id(&self, url: &NormalUrl) -> Option<u16> {
        let best = std::cell::Cell::new(u16::MAX);
        let take = |set: usize| {
            if let Some(&m) = self.set_min.get(set) {
                best.set(best.get().min(m));
            }
        };
        self.walk_domains(url.host().as_bytes(), |_, set| take(set));
        if !self.urls.is_empty() {
            self.walk_urls(url.stripped().as_bytes(), |_, set| take(set));
            if !url.www_prefix().is_empty() {
                self.walk_urls(url.as_str().as_bytes(), |_, set| take(set));
            }
        }
        if let Some(re) = &self.exprs
            && self.expr_min < best.get()
        {
            let subject = url.decoded();
            if re.is_match(&subject) {
                for i in re.matches(&subject).iter() {
                    if let Some((set, _)) = self.expr_info.get(i) {
                        take(*set as usize);
                    }
                }
            }
        }
        let best = best.get();
        (best != u16::MAX).then_some(best)
    }

    /// The first matching category of this class, in byte order of name.
    pub fn first(&self, url: &NormalUrl) -> Option<&str> {
        let id = self.first_id(url)?;
        self.categories
            .get(usize::from(id))
            .map(|c| c.name.as_str())
    }

    /// Appends every match, sorted by category then kind of entry.
    pub fn hits<'a>(&'a self, url: &NormalUrl, out: &mut Vec<Hit<'a>>) {
        let start = out.len();
        let mut push = |set: usize, kind: EntryKind, entry: &str| {
            for &c in self.sets.get(set).map(|s| &s[..]).unwrap_or(&[]) {
                if let Some(cat) = self.categories.get(usize::from(c)) {
                    out.push(Hit {
                        category: &cat.name,
                        class: self.class,
                        kind,
                        entry: entry.to_owned(),
                    });
                }
            }
        };
        let host = url.host();
        self.walk_domains(host.as_bytes(), |start, set| {
            push(set, EntryKind::Domain, &host[start..])
        });
        let stripped = url.stripped();
        self.walk_urls(stripped.as_bytes(), |len, set| {
            push(set, EntryKind::Url, &stripped[..len])
        });
        if !url.www_prefix().is_empty() {
            let full = url.as_str();
            self.walk_urls(full.as_bytes(), |len, set| {
                push(set, EntryKind::Url, &full[..len])
            });
        }
        if let Some(re) = &self.exprs {
            for i in re.matches(&url.decoded()).iter() {
                if let Some((set, pattern)) = self.expr_info.get(i) {
                    push(*set as usize, EntryKind::Expression, pattern);
                }
            }
        }
        out[start..].sort_by(|a, b| (a.category, a.kind).cmp(&(b.category, b.kind)));
        out.dedup();
    }
}
