//! Sorting a difference between squidGuard and `lists classify` by its cause: one of
//! squidGuard's known quirks (Q1..Q8 in /work/notes/squidguard-semantics.md), recognised from
//! the URL's variation tags and from the lists themselves, or "unexplained".

use std::collections::{HashMap, HashSet};
use std::path::Path;

#[derive(Default)]
struct Index {
    domains: HashSet<String>,
    /// Listed domains that also have a listed subdomain (squidGuard's lookup then misses most
    /// of their other subdomains).
    shadowed: HashSet<String>,
    /// Sorted `urls` entries, as squidGuard stores them.
    urls: Vec<String>,
    /// `urls` entries that another entry extends.
    url_shadowed: HashSet<String>,
}

/// Knows the loaded lists, to recognise squidGuard's lookup quirks.
#[derive(Default)]
pub struct Explainer {
    cats: HashMap<String, Index>,
}

/// A list line as squidGuard keys it: first blank-separated token, ASCII lower case.
fn key(line: &str) -> Option<String> {
    let t = line.split([' ', '\t']).find(|t| !t.is_empty())?;
    (!line.starts_with('#')).then(|| t.to_ascii_lowercase())
}

/// squidGuard's `sgStripUrl` of a `urls` entry: user info and port dropped.
fn strip_entry(e: &str) -> String {
    let (hostport, path) = e.split_at(e.find('/').unwrap_or(e.len()));
    let host = hostport.split_once('@').map_or(hostport, |(_, h)| h);
    let host = host.split(':').next().unwrap_or("");
    format!("{host}{path}")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// squidGuard's view of a request URL: (domain, stripped url, full url), see parseLine.
pub fn squidguard_view(url: &str) -> (String, String, String) {
    let mut u = percent_decode(url).to_ascii_lowercase();
    // HTUnEscape works on a C string: a decoded %00 ends the URL.
    u.truncate(u.find('\0').unwrap_or(u.len()));
    let rest = u
        .split_once("://")
        .map_or(u.as_str(), |(_, r)| r)
        .to_owned();
    let (before_q, query) = rest.split_at(rest.find('?').unwrap_or(rest.len()));
    let mut clean = before_q.to_owned();
    while clean.contains("//") {
        clean = clean.replace("//", "/");
    }
    if let Some(i) = clean.find("./") {
        clean.remove(i);
    }
    let rest = format!("{clean}{query}");
    let slash = rest.find('/').unwrap_or(rest.len());
    let rest = match rest[..slash].find('@') {
        Some(a) => rest[a + 1..].to_owned(),
        None => rest,
    };
    let slash = rest.find('/').unwrap_or(rest.len());
    let host_end = rest[..slash].find(':').unwrap_or(slash);
    let domain = rest[..host_end].to_owned();
    let mut stripped = domain.as_str();
    for p in ["www", "web", "ftp"] {
        if let Some(r) = stripped.strip_prefix(p) {
            let r = r.trim_start_matches(|c: char| c.is_ascii_digit());
            if let Some(r) = r.strip_prefix('.') {
                stripped = r;
            }
            break;
        }
    }
    let surl = format!("{stripped}{}", &rest[slash..]);
    (domain.clone(), surl, rest)
}

impl Explainer {
    /// Reads the UT1-format copy of the loaded categories.
    pub fn from_lists(lists: &Path, categories: &[String]) -> std::io::Result<Self> {
        let mut cats = HashMap::new();
        for c in categories {
            let read = |f: &str| -> std::io::Result<Vec<String>> {
                match std::fs::read(lists.join(c).join(f)) {
                    Ok(b) => Ok(String::from_utf8_lossy(&b)
                        .lines()
                        .filter_map(key)
                        .collect()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                    Err(e) => Err(e),
                }
            };
            let mut ix = Index {
                domains: read("domains")?.into_iter().collect(),
                ..Index::default()
            };
            for d in &ix.domains {
                let mut s = d.as_str();
                while let Some((_, parent)) = s.split_once('.') {
                    if ix.domains.contains(parent) {
                        ix.shadowed.insert(parent.to_owned());
                    }
                    s = parent;
                }
            }
            let mut urls: Vec<String> = read("urls")?.iter().map(|e| strip_entry(e)).collect();
            urls.sort();
            urls.dedup();
            for w in urls.windows(2) {
                if w[1].starts_with(&w[0]) {
                    ix.url_shadowed.insert(w[0].clone());
                }
            }
            ix.urls = urls;
            cats.insert(c.clone(), ix);
        }
        Ok(Explainer { cats })
    }

    /// Why classify said `cl` where squidGuard said `sg` for `url` (provenance `prov`).
    pub fn explain(&self, url: &str, prov: &str, sg: &str, cl: &str) -> String {
        let tags: Vec<&str> = prov.split(' ').nth(2).unwrap_or("-").split(',').collect();
        let has = |t: &str| tags.contains(&t);
        let (domain, surl, furl) = squidguard_view(url);
        if sg.starts_with('!') || cl.starts_with('!') {
            return "squidGuard could not parse the request line".into();
        }
        if has("idn") || !url.is_ascii() {
            return "Q5 IDN host: squidGuard looks up the raw UTF-8, classify the punycode".into();
        }
        if has("ip-alt") {
            return "Q6 IPv4 in another notation: squidGuard does not normalise IP literals".into();
        }
        if domain.ends_with('.') {
            return "Q7 trailing dot not followed by '/': squidGuard keeps it".into();
        }
        if domain.contains(['?', '#']) {
            return "Q3 '?' or '#' right after the host: squidGuard takes it as part of the host"
                .into();
        }
        if cl != "-"
            && let Some(ix) = self.cats.get(cl)
        {
            let mut s = domain.as_str();
            loop {
                if ix.domains.contains(s) {
                    if s != domain && ix.shadowed.contains(s) {
                        return "Q1 listed domain that has listed subdomains: squidGuard's \
                                    lookup misses its other subdomains"
                            .into();
                    }
                    break;
                }
                match s.split_once('.') {
                    Some((_, p)) => s = p,
                    None => break,
                }
            }
            let hit = |u: &str| {
                ix.urls
                    .iter()
                    .any(|e| u.starts_with(e.as_str()) && ix.url_shadowed.contains(e))
            };
            if hit(&surl) || hit(&furl) {
                return "Q4 urls entry extended by another entry: squidGuard's lookup misses \
                            it"
                .into();
            }
        }
        let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
        if has("tdot") || after_scheme.contains("//") {
            return "Q9 '//' or the host's trailing dot removed in place with an overlapping \
                    strncpy: squidGuard corrupts longer URLs (varies with ASLR)"
                .into();
        }
        match (sg, cl) {
            (_, "-") => "unexplained: squidGuard blocks, classify passes".into(),
            ("-", _) => "unexplained: classify blocks, squidGuard passes".into(),
            _ => "unexplained: different categories".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_matches_parse_line() {
        let v = squidguard_view("HTTP://User:pw@WWW2.Foo.COM.:8080//a//B%43?x=//y");
        assert_eq!(v.0, "www2.foo.com.");
        let v = squidguard_view("https://u@www.site.com:81//path/to/?q");
        assert_eq!(
            v,
            (
                "www.site.com".into(),
                "site.com/path/to/?q".into(),
                "www.site.com:81/path/to/?q".into()
            )
        );
        assert_eq!(squidguard_view("foo.com./x").0, "foo.com");
        assert_eq!(squidguard_view("http://foo.com?x=1").0, "foo.com?x=1");
    }

    #[test]
    fn recognises_shadowed_domains() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("c")).unwrap();
        std::fs::write(
            d.path().join("c/domains"),
            "site.net\nzzz.site.net\nlone.org\n",
        )
        .unwrap();
        std::fs::write(d.path().join("c/urls"), "pa.com/a\npa.com/a/b\n").unwrap();
        let e = Explainer::from_lists(d.path(), &["c".to_owned()]).unwrap();
        let p = "loaded-domain c sub";
        assert!(
            e.explain("http://a.site.net/", p, "-", "c")
                .starts_with("Q1")
        );
        assert!(
            e.explain("http://a.lone.org/", p, "-", "c")
                .starts_with("unexplained")
        );
        assert!(
            e.explain("http://pa.com/a/c", p, "-", "c")
                .starts_with("Q4")
        );
        assert!(
            e.explain("http://x.com/", p, "c", "-")
                .starts_with("unexplained")
        );
    }
}
