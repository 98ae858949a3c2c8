//! The variations applied to a list entry to make a URL, each recorded as a tag.

use super::punycode::host_to_unicode;
use super::rng::Rng;

type Out = (String, Vec<&'static str>);

const TLDS: &[&str] = &[
    "com", "net", "org", "fr", "co.uk", "de", "io", "info", "ru", "xyz",
];
const WORDS: &[&str] = &[
    "news", "play", "shop", "mail", "cdn", "img", "api", "static", "m", "login", "en", "fr",
];
const UNICODE_LABELS: &[&str] = &["bücher", "пример", "例え", "café", "straße", "ελλάδα"];
/// Paths aimed at the UT1 `expressions` files (publicite, malware, special, *_redirector).
const BAIT_PATHS: &[&str] = &[
    "/banner/top.gif",
    "/img/sponsor/x.png",
    "/event.ng/type=ad",
    "/Advertisement/box",
    "/adverts/1",
    "/download/ymsgr.exe",
    "/search?q=cache:xyz+sex",
    "/images?q=tbn:abc",
    "/videos/search?q=hot",
];

fn ipv4(rng: &mut Rng) -> String {
    format!(
        "{}.{}.{}.{}",
        1 + rng.below(222),
        rng.below(256),
        rng.below(256),
        1 + rng.below(254)
    )
}

fn is_ipv4(h: &str) -> bool {
    let parts: Vec<&str> = h.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Another spelling of an IPv4 address (leading zero, or one 32-bit number), as used to get
/// past filters.
fn ipv4_alt(rng: &mut Rng, h: &str) -> String {
    let o: Vec<u32> = h.split('.').filter_map(|p| p.parse().ok()).collect();
    if rng.chance(0.5) || o.len() != 4 {
        format!("0{h}")
    } else {
        ((o[0] << 24) | (o[1] << 16) | (o[2] << 8) | o[3]).to_string()
    }
}

fn random_path(rng: &mut Rng) -> String {
    let mut p = String::new();
    for _ in 0..1 + rng.below(4) {
        p.push('/');
        p.push_str(&rng.label(1, 10));
    }
    if rng.chance(0.3) {
        p.push_str(rng.pick::<&str>(&[".html", ".php", "/", ".jpg"]));
    }
    p
}

fn percent_encode_one(rng: &mut Rng, s: &str) -> Option<String> {
    let letters: Vec<usize> = s
        .char_indices()
        .filter(|(_, c)| c.is_ascii_alphanumeric())
        .map(|(i, _)| i)
        .collect();
    if letters.is_empty() {
        return None;
    }
    let i = *rng.pick(&letters);
    let b = s.as_bytes()[i];
    let hex = if rng.chance(0.5) {
        format!("%{b:02X}")
    } else {
        format!("%{b:02x}")
    };
    Some(format!("{}{}{}", &s[..i], hex, &s[i + 1..]))
}

fn uppercase_some(rng: &mut Rng, s: &str) -> String {
    if rng.chance(0.5) {
        return s.to_ascii_uppercase();
    }
    s.chars()
        .map(|c| {
            if rng.chance(0.4) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// Assembles scheme, user info, host, port and path, choosing the first three's variations.
fn assemble(rng: &mut Rng, host: &str, path: &str, tags: &mut Vec<&'static str>) -> String {
    if path.is_empty() && rng.chance(0.05) {
        tags.push("connect");
        return format!("{host}:443");
    }
    let scheme = match rng.below(100) {
        0..55 => "http://",
        55..92 => {
            tags.push("https");
            "https://"
        }
        92..97 => {
            tags.push("noscheme");
            ""
        }
        _ => {
            tags.push("ftp");
            "ftp://"
        }
    };
    let mut url = scheme.to_owned();
    if !scheme.is_empty() && rng.chance(0.01) {
        tags.push("user");
        url.push_str(if rng.chance(0.5) { "user@" } else { "user:pw@" });
    }
    url.push_str(host);
    if rng.chance(0.04) {
        tags.push("port");
        url.push(':');
        url.push_str(rng.pick::<&str>(&["8080", "80", "443", "8443"]));
    }
    url.push_str(path);
    url
}

/// Host variations shared by every source; `subs` is the chance of a random subdomain.
fn vary_host(rng: &mut Rng, entry: &str, subs: f64, tags: &mut Vec<&'static str>) -> String {
    let mut host = entry.to_owned();
    if is_ipv4(entry) {
        tags.push("ip");
        if rng.chance(0.003) {
            tags.push("ip-alt");
            host = ipv4_alt(rng, entry);
        }
        return host;
    }
    if rng.chance(subs) {
        tags.push("sub");
        host = format!("{}.{host}", rng.label(1, 8));
        if rng.chance(0.2) {
            host = format!("{}.{host}", rng.pick(WORDS));
        }
    } else if !host.starts_with("www.") && rng.chance(0.12) {
        tags.push("www");
        host = format!("www.{host}");
    } else if rng.chance(0.03) {
        tags.push("wwwN");
        host = format!(
            "{}.{host}",
            rng.pick(&["www2", "www1", "web", "ftp", "web3"])
        );
    }
    if let Some(u) = host_to_unicode(&host).filter(|_| rng.chance(0.5)) {
        tags.push("idn");
        host = u;
    }
    if rng.chance(0.04) {
        tags.push("upper");
        host = uppercase_some(rng, &host);
    }
    if rng.chance(0.015)
        && let Some(h) = percent_encode_one(rng, &host)
    {
        tags.push("pct-host");
        host = h;
    }
    host
}

/// Trailing dot, query, fragment and case variations of the path part.
fn vary_tail(rng: &mut Rng, host: String, mut path: String, tags: &mut Vec<&'static str>) -> Out {
    let mut host = host;
    if rng.chance(0.01) {
        tags.push(if path.is_empty() {
            "tdot-nopath"
        } else {
            "tdot"
        });
        host.push('.');
    }
    if rng.chance(0.03) && path.len() > 1 {
        tags.push("upper-path");
        path = uppercase_some(rng, &path);
    }
    if rng.chance(0.03)
        && let Some(p) = percent_encode_one(rng, &path)
    {
        tags.push("pct-path");
        path = p;
    }
    if rng.chance(0.2) {
        tags.push("query");
        if path.is_empty() && rng.chance(0.1) {
            tags.push("noslash-query");
        } else if path.is_empty() {
            path.push('/');
        }
        path.push_str(&format!("?{}={}", rng.label(1, 5), rng.label(1, 8)));
    }
    if rng.chance(0.03) {
        tags.push("frag");
        if path.is_empty() {
            path.push('/');
        }
        path.push_str(&format!("#{}", rng.label(1, 6)));
    }
    let url = assemble(rng, &host, &path, tags);
    (url, std::mem::take(tags))
}

pub fn from_domain(rng: &mut Rng, entry: &str) -> Out {
    let mut tags = Vec::new();
    let host = vary_host(rng, entry, 0.25, &mut tags);
    let path = match rng.below(100) {
        0..15 => {
            tags.push("nopath");
            String::new()
        }
        15..40 => "/".to_owned(),
        _ => {
            tags.push("path");
            random_path(rng)
        }
    };
    vary_tail(rng, host, path, &mut tags)
}

pub fn from_url_entry(rng: &mut Rng, entry: &str) -> Out {
    let mut tags = Vec::new();
    let (host, path) = match entry.find('/') {
        Some(i) => (&entry[..i], entry[i..].to_owned()),
        None => (entry, String::new()),
    };
    let host = vary_host(rng, host, 0.03, &mut tags);
    let mut path = path;
    match rng.below(100) {
        0..30 => {
            tags.push("extra");
            if !path.ends_with('/') {
                path.push('/');
            }
            path.push_str(&rng.label(1, 8));
        }
        30..40 => {
            tags.push("extra-noboundary");
            path.push_str(&rng.label(1, 4));
        }
        40..45 if path.len() > 2 => {
            tags.push("truncated");
            path.pop();
        }
        _ => {}
    }
    vary_tail(rng, host, path, &mut tags)
}

/// A name close to a listed one that is not it: label glued on, listed name inside another
/// domain, a changed letter, or the parent of a listed subdomain.
pub fn near_miss(rng: &mut Rng, entry: &str) -> Out {
    let mut tags = Vec::new();
    let host = match rng.below(4) {
        0 => {
            tags.push("near-glued");
            format!("{}{entry}", rng.label(1, 4))
        }
        1 => {
            tags.push("near-inside");
            format!("{entry}.{}.{}", rng.label(3, 8), rng.pick(TLDS))
        }
        2 => {
            tags.push("near-typo");
            let mut b = entry.as_bytes().to_vec();
            let i = rng.below(b.len());
            b[i] = if b[i] == b'q' { b'z' } else { b'q' };
            String::from_utf8_lossy(&b).into_owned()
        }
        _ => {
            tags.push("near-parent");
            match entry.split_once('.') {
                Some((_, parent)) if parent.contains('.') => parent.to_owned(),
                _ => format!("{}.{entry}", rng.label(1, 6)),
            }
        }
    };
    let path = if rng.chance(0.5) {
        random_path(rng)
    } else {
        "/".to_owned()
    };
    vary_tail(rng, host, path, &mut tags)
}

pub fn expression_bait(rng: &mut Rng) -> Out {
    let mut tags = vec!["bait"];
    let host = if rng.chance(0.3) {
        tags.push("ip");
        ipv4(rng)
    } else {
        format!("{}.{}", rng.label(3, 10), rng.pick(TLDS))
    };
    let path = if tags.contains(&"ip") && rng.chance(0.5) {
        format!("/search?q={}", 1 + rng.below(99999))
    } else {
        rng.pick(BAIT_PATHS).to_string()
    };
    let url = assemble(rng, &host, &path, &mut tags);
    (url, tags)
}

pub fn random(rng: &mut Rng) -> Out {
    let mut tags = Vec::new();
    let host = match rng.below(100) {
        0..5 => {
            tags.push("ip");
            ipv4(rng)
        }
        5..7 => {
            tags.push("idn");
            format!("{}.{}", rng.pick(UNICODE_LABELS), rng.pick(TLDS))
        }
        _ => {
            let mut h = format!("{}.{}", rng.label(3, 12), rng.pick(TLDS));
            if rng.chance(0.3) {
                h = format!("{}.{h}", rng.pick(WORDS));
            }
            h
        }
    };
    let path = if rng.chance(0.7) {
        random_path(rng)
    } else {
        "/".to_owned()
    };
    vary_tail(rng, host, path, &mut tags)
}
