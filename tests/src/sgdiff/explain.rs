//! Sorting a difference between squidGuard and `lists classify` by its cause: one of
//! squidGuard's known quirks (Q1..Q12 in tests/squidguard-semantics.md), recognised from
//! the URL's variation tags and from the lists themselves, or "unexplained".

use super::model::{Model, Via};
use std::path::Path;

/// Knows the loaded lists (through a model of squidGuard), to prove which differences come
/// from squidGuard's quirks.
pub struct Explainer {
    model: Model,
}

/// libwww's HTUnEscape as squidGuard uses it: the two characters after every `%` are decoded
/// without checking that they are hex digits (`%zz` becomes `S`). A `%` with fewer than two
/// characters after it is kept here (squidGuard reads past the end of the URL).
pub(super) fn percent_decode(s: &str) -> String {
    let from_hex = |c: u8| -> i32 {
        if c.is_ascii_digit() {
            i32::from(c) - i32::from(b'0')
        } else if c.is_ascii_uppercase() {
            i32::from(c) - i32::from(b'A') + 10
        } else {
            i32::from(c) - i32::from(b'a') + 10
        }
    };
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push((from_hex(b[i + 1]) * 16 + from_hex(b[i + 2])) as u8);
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
    // Only a URL with a scheme gets its '//' runs collapsed and one "./" removed.
    let rest = match u.split_once("://") {
        None => u.clone(),
        Some((_, rest)) => {
            let (before_q, query) = rest.split_at(rest.find('?').unwrap_or(rest.len()));
            let mut clean = before_q.to_owned();
            while clean.contains("//") {
                clean = clean.replace("//", "/");
            }
            if let Some(i) = clean.find("./") {
                clean.remove(i);
            }
            format!("{clean}{query}")
        }
    };
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

/// The prefix of every explanation that blames squidGuard: `Report` counts them apart.
pub const QUIRK: &str = "squidGuard quirk";

impl Explainer {
    /// Reads the UT1-format copy of the loaded categories.
    pub fn from_lists(lists: &Path, categories: &[String]) -> std::io::Result<Self> {
        Ok(Explainer {
            model: Model::from_lists(lists, categories)?,
        })
    }

    /// Why classify said `cl` where squidGuard said `sg` for `url` (provenance `prov`).
    pub fn explain(&self, url: &str, prov: &str, sg: &str, cl: &str) -> String {
        let tags: Vec<&str> = prov.split(' ').nth(2).unwrap_or("-").split(',').collect();
        let has = |t: &str| tags.contains(&t);
        let name = |r: Option<(&str, Via)>| r.map_or("-".to_owned(), |(c, _)| c.to_owned());
        let (domain, _, _) = squidguard_view(url);
        if sg.starts_with('!') || cl.starts_with('!') {
            return "unexplained: squidGuard could not parse the request line".into();
        }
        let (model_sg, plain) = (self.model.squidguard(url), self.model.plain(url));
        let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
        if name(model_sg) != sg {
            if has("tdot") || after_scheme.contains("//") {
                return format!(
                    "{QUIRK} Q9: '//' or the host's trailing dot removed in place with an \
                     overlapping strncpy corrupts longer URLs (varies with ASLR)"
                );
            }
            return format!(
                "unexplained: squidGuard said {sg}, its model {}",
                name(model_sg)
            );
        }
        if name(plain) == cl {
            // squidGuard's lookup, modelled exactly, is what differs from the plain rule.
            let (missed, hit) = (plain.map(|p| p.1), model_sg.map(|p| p.1));
            return match (hit, missed) {
                (Some(Via::Domain), _) => format!(
                    "{QUIRK} Q2: a listed domain that is a string prefix of the host is found \
                     by the B-tree search and taken as a match"
                ),
                (_, Some(Via::Domain)) => format!(
                    "{QUIRK} Q1: domain lookup only checks the key before the request, and not \
                     when the key after it is a subdomain of that one"
                ),
                _ => format!(
                    "{QUIRK} Q4: urls lookup only checks the key just before the request (a \
                     longer entry or a sibling sorted between hides the prefix)"
                ),
            };
        }
        // classify parses or normalises differently from squidGuard.
        if has("idn") || !url.is_ascii() {
            return format!("{QUIRK} Q5: no IDNA, the host's raw UTF-8 is looked up");
        }
        if has("ip-alt") {
            return format!("{QUIRK} Q6: IPv4 in another notation is not normalised");
        }
        if domain.ends_with('.') {
            return format!("{QUIRK} Q7: a trailing dot not followed by '/' is kept");
        }
        if domain.contains(['?', '#']) {
            return format!("{QUIRK} Q3: '?' or '#' right after the host is taken as host");
        }
        if cl != "-" && self.model.unnormalised_entry_matches(cl, url) {
            return format!(
                "{QUIRK} Q10: urls entries are not percent-decoded nor '//'-collapsed (requests \
                 are), so such an entry never matches"
            );
        }
        if cl != "-" && self.model.port_hides_prefixed_entry(cl, url) {
            return format!(
                "{QUIRK} Q11: with a port, an entry starting www./web./ftp. never matches (the \
                 stripped URL loses the prefix, the full one keeps the port)"
            );
        }
        format!(
            "unexplained: classify {cl}, squidGuard {sg}, the plain rule on squidGuard's parse {}",
            name(plain)
        )
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
        assert_eq!(squidguard_view("http://foo.com./x").0, "foo.com");
        assert_eq!(squidguard_view("foo.com./x").0, "foo.com.");
        assert_eq!(squidguard_view("http://foo.com?x=1").0, "foo.com?x=1");
        assert_eq!(percent_decode("a%zzb%%320%41"), "aSb\u{fffd}20A");
    }

    #[test]
    fn proves_lookup_quirks() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("c")).unwrap();
        std::fs::write(
            d.path().join("c/domains"),
            "site.net\nzzz.site.net\nlone.org\n1.2.3.4\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("c/urls"),
            "pa.com/a\npa.com/a/b\nenc.com/a%3Db\n",
        )
        .unwrap();
        let e = Explainer::from_lists(d.path(), &["c".to_owned()]).unwrap();
        let p = "loaded-domain c sub";
        let q = |u: &str, sg: &str, cl: &str| e.explain(u, p, sg, cl);
        assert!(q("http://a.site.net/", "-", "c").contains("Q1"));
        assert!(q("http://a.lone.org/", "-", "c").starts_with("unexplained"));
        assert!(q("http://pa.com/a/c", "-", "c").contains("Q4"));
        assert!(q("http://enc.com/a%3Db", "-", "c").contains("Q10"));
        assert!(q("http://x.com/", "c", "-").starts_with("unexplained"));
        assert!(q("http://lone.org./", "-", "c").starts_with("unexplained"));
        assert!(q("http://lone.org.", "-", "c").contains("Q7"));
    }
}
