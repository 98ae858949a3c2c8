//! Search terms from the URLs of the search engines the policy's keyword lists apply to.
//!
//! Each engine is recognised by host and path, then its query parameter is decoded the way the
//! engine's own form encodes it (`application/x-www-form-urlencoded`: `+` is a space, then
//! percent-decoding as UTF-8). Google is matched under any country domain (google.co.uk,
//! google.com.au, ...) because schools' pupils use them all.

use crate::url_clean::{MAX_SEARCH, truncate};

/// A search found in a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// "google", "bing", "duckduckgo", "yahoo", "ecosia" or "youtube".
    pub engine: &'static str,
    pub terms: String,
}

/// The engine and decoded terms when `raw` is a search results URL; None otherwise (including
/// an engine's pages that are not searches, and searches with empty terms).
pub fn extract(raw: &str) -> Option<Search> {
    let url = url::Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let host = url.host_str()?.trim_end_matches('.').to_ascii_lowercase();
    let path = url.path();
    let (engine, param) = if is_google(&host) && path == "/search" {
        ("google", "q")
    } else if under(&host, "bing.com") && path == "/search" {
        ("bing", "q")
    } else if under(&host, "duckduckgo.com")
        && matches!(path, "/" | "/html" | "/html/" | "/lite" | "/lite/")
    {
        ("duckduckgo", "q")
    } else if under(&host, "search.yahoo.com") && path.starts_with("/search") {
        // Yahoo appends tracking to the path: "/search;_ylt=...".
        ("yahoo", "p")
    } else if under(&host, "ecosia.org") && path == "/search" {
        ("ecosia", "q")
    } else if under(&host, "youtube.com") && path == "/results" {
        ("youtube", "search_query")
    } else {
        return None;
    };
    let terms = url
        .query_pairs()
        .find(|(k, _)| k == param)
        .map(|(_, v)| v.trim().to_owned())?;
    if terms.is_empty() {
        return None;
    }
    Some(Search {
        engine,
        terms: truncate(&terms, MAX_SEARCH),
    })
}

/// `host` is `domain` or one of its subdomains.
fn under(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// google.TLD or www.google.TLD, with a one- or two-label public suffix (com, co.uk, com.au).
fn is_google(host: &str) -> bool {
    let host = host.strip_prefix("www.").unwrap_or(host);
    host.strip_prefix("google.").is_some_and(|suffix| {
        let labels = suffix.split('.').count();
        (1..=2).contains(&labels) && suffix.split('.').all(|l| !l.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(url: &str) -> Option<(&'static str, String)> {
        extract(url).map(|s| (s.engine, s.terms))
    }

    #[test]
    fn each_engine_by_host_path_and_parameter() {
        let cases = [
            (
                "https://www.google.com/search?q=volcano+facts&hl=en",
                "google",
                "volcano facts",
            ),
            (
                "https://www.google.co.uk/search?client=x&q=ks2+maths",
                "google",
                "ks2 maths",
            ),
            ("https://google.com.au/search?q=a%26b", "google", "a&b"),
            (
                "https://www.bing.com/search?q=how%20to%20draw&form=QBLH",
                "bing",
                "how to draw",
            ),
            (
                "https://duckduckgo.com/?q=fractions+worksheet&ia=web",
                "duckduckgo",
                "fractions worksheet",
            ),
            (
                "https://html.duckduckgo.com/html/?q=rivers",
                "duckduckgo",
                "rivers",
            ),
            (
                "https://uk.search.yahoo.com/search;_ylt=AwrE?p=the+tudors&fr=yfp",
                "yahoo",
                "the tudors",
            ),
            ("https://search.yahoo.com/search?p=x", "yahoo", "x"),
            (
                "https://www.ecosia.org/search?method=index&q=trees",
                "ecosia",
                "trees",
            ),
            (
                "https://www.youtube.com/results?search_query=minecraft+tips",
                "youtube",
                "minecraft tips",
            ),
            (
                "https://m.youtube.com/results?search_query=lofi",
                "youtube",
                "lofi",
            ),
        ];
        for (url, engine, terms) in cases {
            assert_eq!(s(url), Some((engine, terms.to_owned())), "{url}");
        }
    }

    #[test]
    fn plus_percent_and_unicode_are_decoded() {
        // A literal '+' is sent as %2B; '+' itself is a space.
        assert_eq!(
            s("https://www.google.com/search?q=c%2B%2B+tutorial")
                .unwrap()
                .1,
            "c++ tutorial"
        );
        assert_eq!(
            s("https://www.bing.com/search?q=caf%C3%A9+cr%C3%A8me")
                .unwrap()
                .1,
            "café crème"
        );
        assert_eq!(
            s("https://duckduckgo.com/?q=%E6%97%A5%E6%9C%AC%E8%AA%9E")
                .unwrap()
                .1,
            "日本語"
        );
        assert_eq!(
            s("https://www.google.com/search?q=%F0%9F%90%B1+cats")
                .unwrap()
                .1,
            "🐱 cats"
        );
        // Invalid UTF-8 is replaced, never a panic.
        assert_eq!(
            s("https://www.google.com/search?q=%FFok").unwrap().1,
            "\u{fffd}ok"
        );
    }

    #[test]
    fn non_searches_are_not_searches() {
        for url in [
            "https://www.google.com/maps?q=london",
            "https://www.google.com/",
            "https://www.google.com/search",
            "https://www.google.com/search?q=+",
            "https://notgoogle.com/search?q=x",
            "https://google.evil.example.com/search?q=x",
            "https://www.bing.com/images?q=x",
            "https://evilbing.com/search?q=x",
            "https://duckduckgo.com/about?q=x",
            "https://www.yahoo.com/?p=x",
            "https://www.youtube.com/watch?v=abc&search_query=x",
            "ftp://www.google.com/search?q=x",
            "not a url",
            "https://example.test/search?q=x",
        ] {
            assert_eq!(s(url), None, "{url}");
        }
    }

    #[test]
    fn terms_are_bounded() {
        let url = format!("https://www.google.com/search?q={}", "a".repeat(5000));
        assert_eq!(extract(&url).unwrap().terms.len(), MAX_SEARCH);
    }
}
