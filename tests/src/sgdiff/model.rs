//! A model of squidGuard 1.6's decision for one request: its request parsing (`parseLine`),
//! its databases' key order (`domainCompare`, Berkeley DB's byte order) and its quirky lookup
//! (`defined()` in sgDb.c with `sgStrRncmp`), on the loaded lists. Beside it, the plain rule
//! those lookups approximate. A difference where squidGuard agrees with its model and classify
//! with the plain rule is proven to come from squidGuard's lookup.

use super::explain::{percent_decode, squidguard_view};
use std::collections::HashSet;
use std::path::Path;

/// `c[i]` as C sees it, with the terminating NUL at `c.len()`.
fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

/// `strncmp(a, b, n) == 0`.
fn strn_eq(a: &[u8], b: &[u8], n: usize) -> bool {
    for k in 0..n {
        let (x, y) = (at(a, k), at(b, k));
        if x != y {
            return false;
        }
        if x == 0 {
            return true;
        }
    }
    true
}

/// `sgStrRncmp(a, b, blen) == 0`: compares from the ends, as sgDiv.c does (quirks included).
fn strrn_eq(a: &[u8], b: &[u8], mut blen: usize) -> bool {
    let (mut i, mut j) = (a.len(), b.len());
    while at(a, i) == at(b, j) && blen > 0 {
        if i == 0 || j == 0 {
            break;
        }
        i -= 1;
        j -= 1;
        blen -= 1;
    }
    if (i == 0 && j == 0) || blen == 0 {
        return at(a, i) == at(b, j);
    }
    if i == 0 || j == 0 {
        return false;
    }
    at(a, i) == at(b, j)
}

/// domainCompare's order: from the end, `.` below every other (signed) char, a suffix first.
fn domain_key(s: &[u8]) -> Vec<i8> {
    s.iter()
        .rev()
        .map(|&c| if c == b'.' { 1 } else { c as i8 })
        .collect()
}

/// One database: keys in the database's order, and the lookup of sgDb.c `defined()`.
struct Db {
    /// (order key, stored key)
    keys: Vec<(Vec<i8>, Vec<u8>)>,
    domain: bool,
}

impl Db {
    fn new(stored: Vec<Vec<u8>>, domain: bool) -> Option<Db> {
        let mut keys: Vec<(Vec<i8>, Vec<u8>)> = stored
            .into_iter()
            .map(|k| {
                let order = if domain {
                    domain_key(&k)
                } else {
                    k.iter().map(|&c| (c ^ 0x80) as i8).collect()
                };
                (order, k)
            })
            .collect();
        keys.sort();
        keys.dedup();
        (!keys.is_empty()).then_some(Db { keys, domain })
    }

    fn defined(&self, request: &[u8]) -> bool {
        let req: Vec<u8> = if self.domain {
            [b".", request].concat()
        } else {
            request.to_vec()
        };
        let order = if self.domain {
            domain_key(&req)
        } else {
            req.iter().map(|&c| (c ^ 0x80) as i8).collect()
        };
        let c = self.keys.partition_point(|(k, _)| *k < order);
        let tail_eq = |a: &[u8], b: &[u8], n| {
            if self.domain {
                strrn_eq(a, b, n)
            } else {
                strn_eq(a, b, n)
            }
        };
        match self.keys.get(c) {
            Some((_, data1)) => {
                if strn_eq(&req, data1, data1.len()) {
                    return true;
                }
                if c == 0 {
                    return false;
                }
                let data2 = &self.keys[c - 1].1;
                let l = data2.len();
                !tail_eq(data1, data2, l) && tail_eq(data2, &req, l)
            }
            None => {
                let last = &self.keys[self.keys.len() - 1].1;
                tail_eq(last, &req, last.len())
            }
        }
    }
}

struct Cat {
    name: String,
    domains: Option<Db>,
    urls: Option<Db>,
    plain_domains: HashSet<Vec<u8>>,
    plain_urls: HashSet<Vec<u8>>,
    expressions: Vec<regex::bytes::Regex>,
}

/// The key sgDbLoadTextFile stores for a line, if any.
fn stored_key(line: &[u8]) -> Option<Vec<u8>> {
    if line.first() == Some(&b'#') {
        return None;
    }
    let line = line
        .strip_prefix(b"+")
        .or_else(|| line.strip_prefix(b"-"))
        .unwrap_or(line);
    let tok = line
        .split(|&c| c == b' ' || c == b'\t' || c == b'\r')
        .find(|t| !t.is_empty())?;
    Some(tok.to_ascii_lowercase())
}

/// sgStripUrl: user info and port dropped from a `urls` entry.
fn strip_url(k: &[u8]) -> Vec<u8> {
    if k.first() == Some(&b'.') {
        return k.to_vec();
    }
    let d = k.iter().position(|&c| c == b'/');
    let before = |i: usize| d.is_none_or(|d| i < d);
    let mut p = 0;
    if let Some(a) = k.iter().position(|&c| c == b'@').filter(|&a| before(a)) {
        p = a + 1;
    }
    let e = match k[p..].iter().position(|&c| c == b':').map(|i| p + i) {
        Some(a) if before(a) => Some(a),
        _ => d,
    };
    let mut out = k[p..e.unwrap_or(k.len())].to_vec();
    if let Some(d) = d {
        out.extend_from_slice(&k[d..]);
    }
    out
}

/// squidGuard's lists, modelled.
pub struct Model {
    cats: Vec<Cat>,
}

/// Which rule decided, for a category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Domain,
    Url,
    Expression,
}

impl Model {
    pub fn from_lists(lists: &Path, categories: &[String]) -> std::io::Result<Model> {
        let mut cats = Vec::new();
        let mut sorted = categories.to_vec();
        sorted.sort();
        for name in sorted {
            let read = |f: &str| -> std::io::Result<Vec<u8>> {
                match std::fs::read(lists.join(&name).join(f)) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                    r => r,
                }
            };
            let lines = |b: &[u8]| -> Vec<Vec<u8>> {
                b.split(|&c| c == b'\n').filter_map(stored_key).collect()
            };
            let domains = lines(&read("domains")?);
            let urls: Vec<Vec<u8>> = lines(&read("urls")?).iter().map(|k| strip_url(k)).collect();
            let expressions = read("expressions")?
                .split(|&c| c == b'\n')
                .filter(|l| !l.is_empty())
                .filter_map(|l| {
                    let l = l.strip_suffix(b"\r").unwrap_or(l);
                    regex::bytes::RegexBuilder::new(&String::from_utf8_lossy(l))
                        .case_insensitive(true)
                        .unicode(false)
                        .build()
                        .ok()
                })
                .collect();
            cats.push(Cat {
                plain_domains: domains.iter().cloned().collect(),
                plain_urls: urls.iter().cloned().collect(),
                domains: Db::new(
                    domains.iter().map(|d| [b".", &d[..]].concat()).collect(),
                    true,
                ),
                urls: Db::new(urls, false),
                expressions,
                name,
            });
        }
        Ok(Model { cats })
    }

    fn first(
        &self,
        url: &str,
        hit: impl Fn(&Cat, &[u8], &[u8], &[u8]) -> Option<Via>,
    ) -> Option<(&str, Via)> {
        let (domain, surl, furl) = squidguard_view(url);
        let (d, s, f) = (domain.as_bytes(), surl.as_bytes(), furl.as_bytes());
        self.cats
            .iter()
            .find_map(|c| hit(c, d, s, f).map(|v| (c.name.as_str(), v)))
    }

    /// squidGuard's answer, as its lookups compute it.
    pub fn squidguard(&self, url: &str) -> Option<(&str, Via)> {
        self.first(url, |c, d, s, f| {
            if c.domains.as_ref().is_some_and(|db| db.defined(d)) {
                Some(Via::Domain)
            } else if c
                .urls
                .as_ref()
                .is_some_and(|db| db.defined(s) || db.defined(f))
            {
                Some(Via::Url)
            } else if c.expressions.iter().any(|r| r.is_match(f)) {
                Some(Via::Expression)
            } else {
                None
            }
        })
    }

    /// The rule squidGuard means on the same parse: the host or a parent is listed, a `urls`
    /// entry is a prefix of the stripped or full URL, an expression matches the full URL.
    pub fn plain(&self, url: &str) -> Option<(&str, Via)> {
        self.first(url, |c, d, s, f| {
            let mut h = d;
            loop {
                if c.plain_domains.contains(h) {
                    return Some(Via::Domain);
                }
                match h.iter().position(|&b| b == b'.') {
                    Some(i) => h = &h[i + 1..],
                    None => break,
                }
            }
            let prefix = |u: &[u8]| (1..=u.len()).any(|n| c.plain_urls.contains(&u[..n]));
            if prefix(s) || prefix(f) {
                return Some(Via::Url);
            }
            c.expressions
                .iter()
                .any(|r| r.is_match(f))
                .then_some(Via::Expression)
        })
    }

    /// Whether category `cat` has a `urls` entry with a `%XX` or a `//` that matches once
    /// decoded and collapsed as requests are (squidGuard does neither to entries).
    pub fn unnormalised_entry_matches(&self, cat: &str, url: &str) -> bool {
        let (_, s, f) = squidguard_view(url);
        self.cats.iter().filter(|c| c.name == cat).any(|c| {
            c.plain_urls.iter().any(|e| {
                (e.contains(&b'%') || e.windows(2).any(|w| w == b"//")) && {
                    let mut d = percent_decode(&String::from_utf8_lossy(e)).to_ascii_lowercase();
                    while d.contains("//") {
                        d = d.replace("//", "/");
                    }
                    s.starts_with(&d) || f.starts_with(&d)
                }
            })
        })
    }
}

impl Model {
    /// Whether category `cat` has a `urls` entry that matches the full URL once its port is
    /// dropped, while the request has a port and a `www`-like prefix that the stripped URL lost.
    pub fn port_hides_prefixed_entry(&self, cat: &str, url: &str) -> bool {
        let (domain, _, furl) = squidguard_view(url);
        let Some(colon) = furl.find(':').filter(|&c| c == domain.len()) else {
            return false;
        };
        let path_at = furl[colon..].find('/').map_or(furl.len(), |i| colon + i);
        let without_port = format!("{}{}", &furl[..colon], &furl[path_at..]);
        self.cats.iter().filter(|c| c.name == cat).any(|c| {
            (1..=without_port.len()).any(|n| c.plain_urls.contains(&without_port.as_bytes()[..n]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(domains: &str, urls: &str) -> (tempfile::TempDir, Model) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a")).unwrap();
        std::fs::write(d.path().join("a/domains"), domains).unwrap();
        std::fs::write(d.path().join("a/urls"), urls).unwrap();
        let m = Model::from_lists(d.path(), &["a".to_owned()]).unwrap();
        (d, m)
    }

    fn sg(m: &Model, u: &str) -> bool {
        m.squidguard(u).is_some()
    }

    /// The cases probed on the real binary (see the semantics note).
    #[test]
    fn reproduces_the_probed_lookups() {
        let (_d, m) = model("site.net\nzzz.site.net\n", "pa.com/a\npa.com/a/b\n");
        assert!(sg(&m, "http://site.net/") && sg(&m, "http://x.zzz.site.net/"));
        assert!(!sg(&m, "http://a.site.net/") && !sg(&m, "http://www.site.net/"));
        assert!(m.plain("http://a.site.net/").is_some());
        assert!(sg(&m, "http://pa.com/a") && !sg(&m, "http://pa.com/a/c"));
        let (_d, m) = model("site.net\nzzz.net\nzzzzzzz.net\n", "");
        assert!(sg(&m, "http://a.site.net/") && sg(&m, "http://www.site.net/"));
        let (_d, m) = model("foo.com\n1.2.3.4\nxn--bcher-kva.de\nbücher.at\n", "");
        assert!(sg(&m, "http://foo.com#frag"), "Q2: forward prefix hit");
        assert!(m.plain("http://foo.com#frag").is_none());
        assert!(!sg(&m, "http://foo.com?x=1"));
        let (_d, m) = model("foo.com\naaa.foo.com\nbar.org\n1.2.3.4\n", "");
        assert!(sg(&m, "http://x.bar.org/") && !sg(&m, "http://www.foo.com/"));
    }

    #[test]
    fn strips_entries_like_sg_strip_url() {
        assert_eq!(strip_url(b"u@port.com:8080/p"), b"port.com/p");
        assert_eq!(strip_url(b"http://sch.com/p"), b"http//sch.com/p");
        assert_eq!(strip_url(b"a.com/x:y@z"), b"a.com/x:y@z");
    }
}
