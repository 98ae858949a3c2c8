//! Compiling a UT1 directory into a [`Matcher`]: entries are normalised, packed into an arena
//! (one allocation for hundreds of thousands of keys, to keep peak memory near the size of the
//! lists), sorted, and built into fsts.

use super::matcher::{CategoryInfo, ImportInfo, Matcher, Shared, check_regex, regex_set};
use super::normalise::normalise;
use super::ut1::{self, ReadReport};
use super::{EntryKind, ListClass, ListsError};
use std::collections::HashMap;
use std::path::Path;

/// squidGuard's MAX_BUF: longer entries cannot match anything it reads.
const MAX_ENTRY: usize = 4096;

/// Keys and their category, packed.
#[derive(Default)]
struct Arena {
    bytes: Vec<u8>,
    /// (offset, length, category)
    items: Vec<(u32, u16, u16)>,
}

impl Arena {
    fn push(&mut self, key: impl Iterator<Item = u8>, cat: u16) -> Result<(), String> {
        let off = self.bytes.len();
        self.bytes.extend(key);
        let len = self.bytes.len() - off;
        match (u32::try_from(off), u16::try_from(len)) {
            (Ok(o), Ok(l)) if len <= MAX_ENTRY => {
                self.items.push((o, l, cat));
                Ok(())
            }
            _ => {
                self.bytes.truncate(off);
                Err("entry too long, or too many entries".into())
            }
        }
    }

    fn key(&self, item: &(u32, u16, u16)) -> &[u8] {
        let start = item.0 as usize;
        &self.bytes[start..start + usize::from(item.1)]
    }

    /// Sorts, merges equal keys into category sets, and builds the fst.
    fn build(
        mut self,
        sets: &mut Vec<Vec<u16>>,
        set_ids: &mut HashMap<Vec<u16>, u32>,
    ) -> Result<Vec<u8>, fst::Error> {
        let mut items = std::mem::take(&mut self.items);
        items.sort_unstable_by(|a, b| self.key(a).cmp(self.key(b)).then(a.2.cmp(&b.2)));
        let mut builder = fst::raw::Builder::memory();
        let mut i = 0;
        while i < items.len() {
            let key = self.key(&items[i]);
            let mut cats = Vec::new();
            while i < items.len() && self.key(&items[i]) == key {
                if cats.last() != Some(&items[i].2) {
                    cats.push(items[i].2);
                }
                i += 1;
            }
            let next = sets.len() as u32;
            let id = *set_ids.entry(cats.clone()).or_insert_with(|| {
                sets.push(cats);
                next
            });
            builder.insert(key, u64::from(id))?;
        }
        builder.into_inner()
    }
}

/// A `domains` entry as the host it stands for, or why it is not one.
pub(crate) fn domain_key(entry: &str) -> Result<std::borrow::Cow<'_, str>, String> {
    // squidGuard can never match `.example.com` (it adds its own dot); it plainly means
    // example.com and below.
    let e = entry.trim_start_matches('.');
    if e.is_empty() || e.contains(['/', '@', '?', '#', '\\', ' ', '\t']) {
        return Err(format!("{entry:?} is not a domain"));
    }
    // Fast path: lower-case LDH names the url crate would return unchanged.
    let b = e.as_bytes();
    let last_label = e.rsplit('.').next().unwrap_or("");
    if b.iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(c))
        && !e.ends_with('.')
        && !e.contains("..")
        && !e.contains("xn--")
        && !last_label.starts_with(|c: char| c.is_ascii_digit())
    {
        return Ok(std::borrow::Cow::Borrowed(e));
    }
    match normalise(e) {
        Ok(n) if n.path() == "/" => Ok(std::borrow::Cow::Owned(n.host().to_owned())),
        Ok(_) => Err(format!("{entry:?} is not a domain")),
        Err(err) => Err(format!("{entry:?}: {err}")),
    }
}

/// Reads and compiles a UT1 directory. `source` is recorded as where the lists came from.
pub(crate) fn from_ut1(
    dir: &Path,
    class: ListClass,
    source: &str,
) -> Result<(Matcher, ReadReport), ListsError> {
    let cats = ut1::categories(dir)?;
    if cats.iter().all(|c| c.alias_of.is_some()) {
        return Err(ListsError::Empty {
            path: dir.to_owned(),
        });
    }
    if cats.len() > usize::from(u16::MAX) {
        return Err(ListsError::Other {
            path: dir.to_owned(),
            message: "too many categories".into(),
        });
    }
    let mut report = ReadReport::default();
    let mut domains = Arena::default();
    let mut urls = Arena::default();
    let mut exprs: Vec<(u16, String)> = Vec::new();
    let mut infos: Vec<CategoryInfo> = cats
        .iter()
        .map(|c| CategoryInfo {
            name: c.name.clone(),
            alias_of: c.alias_of.clone(),
            domains: 0,
            urls: 0,
            expressions: 0,
        })
        .collect();
    for (id, cat) in cats.iter().enumerate() {
        if cat.alias_of.is_some() {
            continue;
        }
        let id16 = id as u16;
        let folder = dir.join(&cat.name);
        let before = report.entries;
        ut1::read_file(
            &folder.join("domains"),
            EntryKind::Domain,
            &mut report,
            |e, _| {
                let host = domain_key(e)?;
                domains.push(host.bytes().rev(), id16)
            },
        )?;
        infos[id].domains = report.entries - before;
        let before = report.entries;
        ut1::read_file(&folder.join("urls"), EntryKind::Url, &mut report, |e, _| {
            if !e.contains('/') {
                // Without a path it would be a host prefix (`a.com` matching `a.community`).
                return Err(format!("{e:?} has no path: list it in domains"));
            }
            let n = normalise(e).map_err(|err| format!("{e:?}: {err}"))?;
            urls.push(n.as_str().bytes(), id16)
        })?;
        infos[id].urls = report.entries - before;
        let before = report.entries;
        ut1::read_file(
            &folder.join("expressions"),
            EntryKind::Expression,
            &mut report,
            |e, _| {
                check_regex(e)?;
                exprs.push((id16, e.to_owned()));
                Ok(())
            },
        )?;
        infos[id].expressions = report.entries - before;
    }
    // Aliases share their target's counts, for the report.
    for i in 0..infos.len() {
        if let Some(t) = &infos[i].alias_of
            && let Some(target) = infos.iter().find(|c| &c.name == t).cloned()
        {
            infos[i].domains = target.domains;
            infos[i].urls = target.urls;
            infos[i].expressions = target.expressions;
        }
    }

    let mut sets: Vec<Vec<u16>> = Vec::new();
    let mut set_ids: HashMap<Vec<u16>, u32> = HashMap::new();
    let fst_err = |e: fst::Error| ListsError::Other {
        path: dir.to_owned(),
        message: format!("building the matcher: {e}"),
    };
    let domain_fst = domains.build(&mut sets, &mut set_ids).map_err(fst_err)?;
    let url_fst = urls.build(&mut sets, &mut set_ids).map_err(fst_err)?;
    let mut expr_info = Vec::with_capacity(exprs.len());
    for (cat, pattern) in exprs {
        let next = sets.len() as u32;
        let id = *set_ids.entry(vec![cat]).or_insert_with(|| {
            sets.push(vec![cat]);
            next
        });
        expr_info.push((id, pattern));
    }
    // An alias is in every set its target is in.
    let ids: HashMap<&str, u16> = cats
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i as u16))
        .collect();
    for set in &mut sets {
        for (i, c) in cats.iter().enumerate() {
            if let Some(t) = c.alias_of.as_deref().and_then(|t| ids.get(t))
                && set.contains(t)
            {
                set.push(i as u16);
            }
        }
        set.sort_unstable();
    }
    let info = ImportInfo {
        source: source.to_owned(),
        imported_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        report: report.clone(),
    };
    let matcher = assemble(
        class,
        infos,
        sets,
        Shared::whole(domain_fst),
        Shared::whole(url_fst),
        expr_info,
        info,
    )
    .map_err(|message| ListsError::Other {
        path: dir.to_owned(),
        message,
    })?;
    Ok((matcher, report))
}

/// Puts a matcher together from its parts (built here or read from disk), checking them.
pub(crate) fn assemble(
    class: ListClass,
    categories: Vec<CategoryInfo>,
    sets: Vec<Vec<u16>>,
    domains: Shared,
    urls: Shared,
    expr_info: Vec<(u32, String)>,
    info: ImportInfo,
) -> Result<Matcher, String> {
    let n = categories.len();
    if sets.iter().flatten().any(|&c| usize::from(c) >= n) {
        return Err("a category set names a category that does not exist".into());
    }
    if expr_info.iter().any(|(s, _)| *s as usize >= sets.len()) {
        return Err("an expression names a category set that does not exist".into());
    }
    let domains = fst::raw::Fst::new(domains).map_err(|e| format!("domains: {e}"))?;
    let urls = fst::raw::Fst::new(urls).map_err(|e| format!("urls: {e}"))?;
    let patterns: Vec<&str> = expr_info.iter().map(|(_, p)| p.as_str()).collect();
    let exprs = regex_set(&patterns).map_err(|e| format!("expressions: {e}"))?;
    let mut m = Matcher {
        class,
        categories,
        sets: sets.into_iter().map(Vec::into_boxed_slice).collect(),
        set_min: Vec::new(),
        domains,
        urls,
        exprs,
        expr_info,
        expr_min: u16::MAX,
        info,
        domain_root: Vec::new(),
        url_root: Vec::new(),
    };
    m.finish_sets();
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_fast_path_agrees_with_normalise() {
        for e in [
            "example.com",
            "a_b.example.com",
            "_x.tripod.com",
            "x-y.co.uk",
            "118.123.4.224",
            "1.2.3.4.example",
            "com",
        ] {
            let fast = domain_key(e).unwrap();
            let slow = normalise(e).unwrap();
            assert_eq!(fast, slow.host(), "{e}");
        }
        assert_eq!(domain_key(".afshin.ir").unwrap(), "afshin.ir");
        assert_eq!(domain_key("Example.COM.").unwrap(), "example.com");
        assert_eq!(
            domain_key("BÜCHER.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(domain_key("0x7f.1").unwrap(), "127.0.0.1");
        for bad in ["a.com/x", "", ".", "u@a.com", "a b"] {
            assert!(domain_key(bad).is_err(), "{bad}");
        }
    }
}
