//! What leaves the device from a history row: URLs without credentials, every field bounded.
//!
//! A URL like `https://user:secret@intranet/` keeps the password in the browser's history; the
//! monitoring record must not copy it to the collector. Field sizes are bounded because the text
//! comes from arbitrary pages (a `data:` URL can be megabytes) and the spool and the wire have
//! limits of their own.

/// Longest URL kept, in bytes (longer ones are cut at a character boundary).
pub const MAX_URL: usize = 4096;
/// Longest page title kept, in bytes.
pub const MAX_TITLE: usize = 1024;
/// Longest search kept, in bytes.
pub const MAX_SEARCH: usize = 512;

/// `s` cut to at most `max` bytes without splitting a character.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The URL with any `user:password@` removed, bounded to [`MAX_URL`].
///
/// Only a URL that carries credentials is re-serialised: others are kept byte for byte as the
/// browser stored them (re-serialising could change percent-encoding the policy matches on).
pub fn clean_url(raw: &str) -> String {
    let mut text = std::borrow::Cow::Borrowed(raw);
    // What the fallback leaves can be a URL with credentials of its own (`https://u@//v@host/`
    // becomes `https:////v@host/`): parse again, a few times.
    for _ in 0..8 {
        match url::Url::parse(&text) {
            Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
                // Both only fail for URLs that cannot have credentials, which then have none.
                let _ = u.set_password(None);
                let _ = u.set_username("");
                return truncate(u.as_str(), MAX_URL);
            }
            Ok(_) => return truncate(&text, MAX_URL),
            Err(_) => match strip_authority_userinfo(&text) {
                stripped if stripped == *text => return truncate(&text, MAX_URL),
                stripped => text = stripped.into(),
            },
        }
    }
    // Credentials behind credentials, more than a few deep: a URL made to keep some. Nothing
    // before its last `@` ahead of the query is kept, so no parser can find a user in it.
    let end = text.find(['?', '#']).unwrap_or(text.len());
    let start = text[..end].rfind('@').map_or(0, |at| at + 1);
    truncate(&text[start..], MAX_URL)
}

/// Fallback for strings the URL parser rejects: drop anything before an `@` in the authority.
fn strip_authority_userinfo(raw: &str) -> String {
    let Some(scheme_end) = raw.find("://") else {
        return raw.to_owned();
    };
    // Parsers skip any further slashes before the authority (`https:////user@host`).
    let after = &raw[scheme_end + 3..];
    let auth_start = raw.len() - after.trim_start_matches(['/', '\\']).len();
    let auth_end = raw[auth_start..]
        .find(['/', '?', '#'])
        .map_or(raw.len(), |i| auth_start + i);
    match raw[auth_start..auth_end].rfind('@') {
        Some(at) => format!("{}{}", &raw[..auth_start], &raw[auth_start + at + 1..]),
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_removed_and_other_urls_kept_verbatim() {
        assert_eq!(
            clean_url("https://alice:s3cret@intranet.school.test/grades?x=1#f"),
            "https://intranet.school.test/grades?x=1#f"
        );
        assert_eq!(clean_url("ftp://bob@files.test/a"), "ftp://files.test/a");
        assert_eq!(clean_url("http://:pw@host.test/"), "http://host.test/");
        // An '@' in the path or query is not a credential.
        let kept = "https://mail.test/u/x@y.test?to=a@b.test";
        assert_eq!(clean_url(kept), kept);
        // Kept byte for byte: the parser would have rewritten the space and upper-case host.
        let odd = "http://WWW.Example.test/a b";
        assert_eq!(clean_url(odd), odd);
        assert_eq!(clean_url("about:blank"), "about:blank");
        // Unparseable (invalid port) but still carrying credentials.
        assert_eq!(
            clean_url("http://u:p@host.test:99999/x"),
            "http://host.test:99999/x"
        );
    }

    #[test]
    fn credentials_revealed_by_the_fallback_are_removed_too() {
        // Found by fuzzing (fuzz/corpus/search_terms/crash-credentials-after-fallback): the
        // fallback's result parsed as a URL whose user name was `alice`.
        assert_eq!(
            clean_url("https://bob@//alice@www.google.com/search?q=x%"),
            "https://www.google.com/search?q=x%"
        );
        assert_eq!(
            clean_url("https://bob:pw@//alice:s3cret@intranet.test:99999/"),
            "https:////intranet.test:99999/"
        );
        let deep = format!("https://{}h.test:99999/", "u:pw@/".repeat(20));
        assert_eq!(clean_url(&deep), "/h.test:99999/");
    }

    #[test]
    fn fields_are_bounded_on_character_boundaries() {
        let long = format!("data:text/plain,{}", "é".repeat(5000));
        let cut = clean_url(&long);
        assert!(
            cut.len() <= MAX_URL && cut.len() > MAX_URL - 2,
            "{}",
            cut.len()
        );
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
