//! Matching, storing and importing, end to end on small fixtures.

use super::*;
use std::path::Path;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A small UT1 tree with the shapes the real one has.
fn fixture(dir: &Path) {
    write(
        dir,
        "games/domains",
        "games.example\nplay.example.org\n118.123.4.224\n.dotted.example\n",
    );
    write(
        dir,
        "games/urls",
        "host.example/games/\nwww.exact.example/only\n",
    );
    write(dir, "adult/domains", "adult.example\nshared.example\n");
    write(dir, "adult/urls", "host.example/Adult\n");
    write(
        dir,
        "adult/expressions",
        "(^|[-/_])(porn|xxx)s?([-./_]|$)\n",
    );
    write(dir, "shopping/domains", "shared.example\nshop.example\n");
    write(dir, "porn", "adult\n");
    write(dir, "README", "UT1 lists, see the NOTICE\nline two\n");
}

fn first(l: &Lists, url: &str) -> String {
    l.first(url).unwrap_or("-").to_owned()
}

#[test]
fn squidguard_matching_semantics() {
    let d = tempfile::tempdir().unwrap();
    fixture(d.path());
    let l = Lists::open(d.path()).unwrap();
    for (url, want) in [
        // Domains: the domain and every subdomain, at label boundaries only.
        ("http://games.example/", "games"),
        ("http://a.b.GAMES.example:8080/x", "games"),
        ("https://user:pw@games.example./", "games"),
        ("http://notgames.example/", "-"),
        ("http://games.example.evil/", "-"),
        ("http://example/", "-"),
        ("http://x.play.example.org", "games"),
        ("http://example.org", "-"),
        ("http://118.123.4.224/", "games"),
        ("http://www.118.123.4.224/", "games"),
        ("http://8.118.123.4.224/", "games"),
        ("http://dotted.example/", "games"),
        // urls: plain prefix of host and path, host tried without then with www.
        ("http://host.example/games/x.html", "games"),
        ("http://www.host.example/games/", "games"),
        ("http://web2.host.example/games/", "games"),
        ("http://sub.host.example/games/", "-"),
        ("http://host.example/games", "-"),
        ("http://host.example/adultery", "adult"),
        ("http://host.example/ADULT", "adult"),
        ("http://host.example/%41dult", "adult"),
        ("http://host.example//adult", "adult"),
        ("http://www.exact.example/only/more", "games"),
        ("http://exact.example/only", "-"),
        // Expressions: over host and decoded path, case-insensitive.
        ("http://pics.example/free-PORN/", "adult"),
        ("http://pics.example/free%2Dporn.html", "adult"),
        ("http://pics.example/pornography", "-"),
        // Several categories: the first in byte order of name (adult < porn < shopping).
        ("http://shared.example/", "adult"),
        ("http://shop.example/", "shopping"),
        ("nothing here", "-"),
        ("", "-"),
    ] {
        assert_eq!(first(&l, url), want, "{url}");
    }
}

#[test]
fn hits_say_what_matched() {
    let d = tempfile::tempdir().unwrap();
    fixture(d.path());
    let l = Lists::open(d.path()).unwrap();
    let got: Vec<String> = l
        .lookup("http://www.shared.example/xxx")
        .iter()
        .map(|h| {
            format!(
                "{} {} {} {}",
                h.class.as_str(),
                h.category,
                h.kind.as_str(),
                h.entry
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            "ordinary adult domain shared.example",
            "ordinary adult expression (^|[-/_])(porn|xxx)s?([-./_]|$)",
            "ordinary porn domain shared.example",
            "ordinary porn expression (^|[-/_])(porn|xxx)s?([-./_]|$)",
            "ordinary shopping domain shared.example",
        ]
    );
    let got: Vec<String> = l
        .lookup("http://WWW.host.example/games/1")
        .iter()
        .map(|h| format!("{} {}", h.kind.as_str(), h.entry))
        .collect();
    assert_eq!(got, ["url host.example/games/"]);
}

#[test]
fn compiled_lists_match_like_raw_ones_and_illegal_comes_first() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("ut1");
    fixture(&src);
    write(
        d.path(),
        "iwf/zz-abuse/domains",
        "bad.example\nshared.example\n",
    );
    let data = d.path().join("data");
    let r = import(&data, &src, ListClass::Ordinary).unwrap();
    assert_eq!(r.categories.len(), 4);
    assert!(
        r.to_string()
            .contains("imported 4 ordinary categories (1 aliases)"),
        "{r}"
    );
    import(&data, &d.path().join("iwf"), ListClass::Illegal).unwrap();

    let raw = Lists::open(&src).unwrap();
    let compiled = Lists::load(&data).unwrap();
    for url in [
        "games.example",
        "http://host.example/Adult/x",
        "http://a.example/porn",
        "http://shop.example",
    ] {
        assert_eq!(raw.first(url), compiled.first(url), "{url}");
    }
    assert_eq!(compiled.first("http://shared.example/"), Some("zz-abuse"));
    let hits = compiled.lookup("http://bad.example/");
    assert_eq!(hits.len(), 1);
    assert_eq!(
        (hits[0].class, hits[0].category),
        (ListClass::Illegal, "zz-abuse")
    );
    // `--lists` takes the data directory, its lists folder, or one file.
    for p in [
        data.clone(),
        data.join("lists"),
        data.join("lists/illegal.lists"),
    ] {
        assert_eq!(
            Lists::open(&p).unwrap().first("http://bad.example/"),
            Some("zz-abuse"),
            "{p:?}"
        );
    }
}

#[test]
fn a_failed_import_leaves_the_previous_lists() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("ut1");
    fixture(&src);
    let data = d.path().join("data");
    import(&data, &src, ListClass::Ordinary).unwrap();
    let before = std::fs::read(data.join("lists/ordinary.lists")).unwrap();

    write(&src, "games/domains", "ok.example\n\0\0\0");
    let err = import(&data, &src, ListClass::Ordinary)
        .unwrap_err()
        .to_string();
    assert!(err.contains("games/domains:2"), "{err}");
    let empty = d.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = import(&data, &empty, ListClass::Ordinary)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no categories"), "{err}");

    assert_eq!(
        std::fs::read(data.join("lists/ordinary.lists")).unwrap(),
        before
    );
    let names: Vec<_> = std::fs::read_dir(data.join("lists"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["ordinary.lists"],
        "no temporary files are left behind"
    );
    assert_eq!(
        Lists::load(&data).unwrap().first("games.example"),
        Some("games")
    );
}

#[test]
fn damaged_compiled_files_are_errors_not_panics() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("ut1");
    fixture(&src);
    let data = d.path().join("data");
    import(&data, &src, ListClass::Ordinary).unwrap();
    let path = data.join("lists/ordinary.lists");
    let good = std::fs::read(&path).unwrap();
    for (i, cut) in [0, 8, 63, 64, good.len() / 2, good.len() - 1]
        .into_iter()
        .enumerate()
    {
        std::fs::write(&path, &good[..cut]).unwrap();
        assert!(Lists::load(&data).is_err(), "truncated at {cut} ({i})");
    }
    for at in [9, 20, 40, 70, good.len() - 10] {
        let mut bad = good.clone();
        bad[at] ^= 0x55;
        std::fs::write(&path, &bad).unwrap();
        let err = Lists::load(&data).unwrap_err().to_string();
        assert!(err.contains("ordinary.lists"), "{err}");
    }
}

#[test]
fn tar_gz_sources_are_unpacked() {
    let d = tempfile::tempdir().unwrap();
    fixture(&d.path().join("blacklists"));
    let archive = d.path().join("blacklists.tar.gz");
    let st = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(d.path())
        .arg("blacklists")
        .status()
        .unwrap();
    assert!(st.success());
    let data = d.path().join("data");
    let r = import(&data, &archive, ListClass::Ordinary).unwrap();
    assert_eq!(r.categories.len(), 4);
    assert_eq!(
        Lists::load(&data).unwrap().first("games.example"),
        Some("games")
    );
    let names: Vec<_> = std::fs::read_dir(data.join("lists"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["ordinary.lists"]);
}

#[test]
fn bad_expressions_are_skipped_and_reported() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "c/expressions", "ok\\.example\n(unclosed\n");
    let data = d.path().join("data");
    let r = import(&data, d.path(), ListClass::Ordinary).unwrap();
    assert_eq!(r.read.skipped_total, 1);
    let s = r.read.skipped[0].to_string();
    assert!(
        s.contains("c/expressions:2") && s.contains("does not compile"),
        "{s}"
    );
}

#[test]
fn expressions_are_matched_with_the_port_as_squidguard_does() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "malware/expressions",
        "^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+/search\\?q=[0-9]+$\n:81/\n",
    );
    write(d.path(), "games/domains", "games.example\n");
    let lists = Lists::open(d.path()).unwrap();
    // squidGuard's subject is `host[:port]/path?query`: the port breaks the first expression
    // and makes the second one match.
    assert_eq!(lists.first("http://1.2.3.4:8080/search?q=1"), None);
    assert_eq!(lists.first("http://1.2.3.4/search?q=1"), Some("malware"));
    assert_eq!(lists.first("http://x.example:81/"), Some("malware"));
    assert_eq!(lists.first("http://x.example/"), None);
    // Domains still ignore the port.
    assert_eq!(lists.first("http://games.example:8080/"), Some("games"));
}
