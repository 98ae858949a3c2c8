//! `lists classify` against squidGuard 1.6 (Debian's `squidguard`, installed by tests/setup.sh)
//! on the same UT1 categories and the same deterministic URL sample.
//!
//! Pass criterion: at least 99.9% of the sample agrees once the differences that are
//! squidGuard's own quirks are set aside. A difference counts as a quirk only when it is proven:
//! squidGuard's answer equals the exact model of its lookup (tests/src/sgdiff/model.rs) while
//! classify's equals the plain rule, or the URL carries a variation squidGuard is documented to
//! mishandle (IDN, IPv4 notations, trailing dots, '?' after the host, encoded list entries).
//! The raw agreement is printed beside it and must stay above RAW_FLOOR.
//!
//! The sample has INVIGILATOR_SG_URLS URLs (default 200 000, which squidGuard answers in about
//! ten seconds; tests/bench/run.sh runs the million-URL comparison with a release build).
//! The UT1 tree is tests/data/ut1 (a trimmed copy kept in the repository, see its NOTICE), or
//! INVIGILATOR_UT1 (e.g. a full mirror).
//! squidGuard's rules and quirks: tests/squidguard-semantics.md, pinned by
//! `squidguard_behaves_as_documented` below so a different squidGuard is noticed.

use invigilator_tests::sgdiff::{self, Explainer, Workspace};
use invigilator_tests::urlgen::{Generator, Sample};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Categories loaded into both filters: what a school blocks, plus the two with real
/// `expressions` (malware, publicite) and `adult`, which here has only `urls`.
const LOADED: &[&str] = &[
    "adult",
    "agressif",
    "chat",
    "dangerous_material",
    "dating",
    "doh",
    "drogue",
    "filehosting",
    "gambling",
    "games",
    "hacking",
    "malware",
    "publicite",
    "redirector",
    "remote-control",
    "shortener",
    "social_networks",
    "vpn",
    "warez",
    "webmail",
];
/// Categories whose entries are in the sample but in neither filter.
const UNLOADED: &[&str] = &[
    "audio-video",
    "bank",
    "blog",
    "download",
    "educational_games",
    "forums",
    "jobsearch",
    "liste_blanche",
    "phishing",
    "press",
    "shopping",
    "sports",
    "strict_redirector",
];
const MIN_AGREEMENT: f64 = 0.999;
/// squidGuard's quirks cost about 1% of this sample (see the report), so the raw agreement is
/// held to a looser floor that still catches a broken classify.
const RAW_FLOOR: f64 = 0.985;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn ut1() -> PathBuf {
    let p = std::env::var_os("INVIGILATOR_UT1")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("data/ut1"));
    assert!(
        p.join("gambling").is_dir(),
        "UT1 lists not found at {} (set INVIGILATOR_UT1 to the folder holding gambling/, games/ ...)",
        p.display()
    );
    p
}

fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Writes the sample's URLs to `dir/urls.txt`; returns (path, urls, provenance lines).
fn write_sample(dir: &Path, samples: &[Sample]) -> (PathBuf, Vec<String>, Vec<String>) {
    let path = dir.join("urls.txt");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for s in samples {
        writeln!(f, "{}", s.url).unwrap();
    }
    f.flush().unwrap();
    let urls = samples.iter().map(|s| s.url.clone()).collect();
    let prov = samples.iter().map(Sample::provenance).collect();
    (path, urls, prov)
}

fn sample(n: u64, seed: u64) -> Vec<Sample> {
    Generator::from_tree(&ut1(), &names(LOADED), &names(UNLOADED), seed)
        .expect("reading the UT1 lists")
        .take(n as usize)
        .collect()
}

fn workspace(dir: &Path, categories: &[&str]) -> Workspace {
    sgdiff::prepare(&ut1(), &names(categories), dir).expect("preparing squidGuard")
}

#[test]
fn classify_agrees_with_squidguard() {
    let n = env_or("INVIGILATOR_SG_URLS", 200_000);
    let seed = env_or("INVIGILATOR_SG_SEED", 1);
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace(dir.path(), LOADED);
    let (path, urls, prov) = write_sample(dir.path(), &sample(n, seed));
    let sg = sgdiff::run_squidguard(&ws, &path).expect("running squidGuard");
    let cl = sgdiff::run_classify(
        &invigilator_tests::bin("invigilator-collector"),
        &ws.lists,
        &path,
    )
    .expect("running lists classify");
    let explainer = Explainer::from_lists(&ws.lists, &ws.categories).unwrap();
    let report = sgdiff::compare(&urls, &prov, &sg, &cl, &explainer);
    println!("lists classify vs squidGuard, {n} URLs, seed {seed}:\n{report}");
    if let Err(e) = report.check_net(MIN_AGREEMENT) {
        panic!("{e}");
    }
    if let Err(e) = report.check(RAW_FLOOR) {
        panic!("{e}");
    }
}

/// The comparison is not vacuous: squidGuard agrees with itself, and loses agreement (and the
/// check fails) as soon as one side lacks a category.
#[test]
fn a_difference_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let full = workspace(&dir.path().join("full"), LOADED);
    let without: Vec<&str> = LOADED.iter().copied().filter(|c| *c != "games").collect();
    let less = workspace(&dir.path().join("less"), &without);
    let (path, urls, prov) = write_sample(dir.path(), &sample(20_000, 7));
    let a = sgdiff::run_squidguard(&full, &path).unwrap();
    let b = sgdiff::run_squidguard(&less, &path).unwrap();
    let explainer = Explainer::from_lists(&full.lists, &full.categories).unwrap();
    let same = sgdiff::compare(&urls, &prov, &a, &a, &explainer);
    assert_eq!(same.agree, urls.len());
    assert!(same.check(MIN_AGREEMENT).is_ok());
    let blocked = a.iter().filter(|c| *c != "-").count();
    assert!(
        blocked > urls.len() / 5 && a.iter().any(|c| c == "games"),
        "the sample should hit the lists often ({blocked} of {} blocked)",
        urls.len()
    );
    let diff = sgdiff::compare(&urls, &prov, &b, &a, &explainer);
    println!("squidGuard without games vs with:\n{diff}");
    assert!(diff.check(MIN_AGREEMENT).is_err());
    assert!(diff.check_net(MIN_AGREEMENT).is_err());
    assert!(diff.by_reason.keys().any(|k| k.starts_with("unexplained")));
    // A wrong line in every 600 is enough to fail, even after the flips that land on a
    // squidGuard quirk are set aside (with the trimmed lists in tests/data, 3 of every 23 flips
    // at a spacing of 900 did, which left exactly 99.9%).
    let mut one_off = a.clone();
    for c in one_off.iter_mut().step_by(600) {
        *c = if c == "-" { "games".into() } else { "-".into() };
    }
    let r = sgdiff::compare(&urls, &prov, &a, &one_off, &explainer);
    assert!(
        r.check(MIN_AGREEMENT).is_err() && r.check_net(MIN_AGREEMENT).is_err(),
        "{r}"
    );
}

/// Pins the rules and quirks written in the semantics note, on small hand-made lists.
#[test]
fn squidguard_behaves_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("ut1");
    let put = |cat: &str, file: &str, text: &str| {
        std::fs::create_dir_all(tree.join(cat)).unwrap();
        std::fs::write(tree.join(cat).join(file), text).unwrap();
    };
    put(
        "a",
        "domains",
        "foo.com\nsite.net\nzzz.site.net\nlone.org\nUPPER.COM\n1.2.3.4\nxn--bcher-kva.de\n*.star.com\n",
    );
    put(
        "a",
        "urls",
        "site.com/path/to\nwww.wsite.com/page\npa.com/a\npa.com/a/b\nport.com:8080/p\n",
    );
    put("b", "domains", "lone.org\nonly-b.org\n");
    put("c", "expressions", "^exact\n:81/\nupperx\n");
    let ws = sgdiff::prepare(&tree, &names(&["c", "b", "a"]), &dir.path().join("w")).unwrap();
    let cases: &[(&str, &str)] = &[
        // domains: the domain and its subdomains, any scheme, case, port, user info
        ("http://foo.com/", "a"),
        ("https://WWW.Foo.Com:8443/x", "a"),
        ("http://user:pw@a.b.foo.com/", "a"),
        ("foo.com:443", "a"),
        ("http://notfoo.com/", "-"),
        ("http://foo.com.evil.net/", "-"),
        ("http://upper.com/", "a"),
        ("http://lone.org/", "a"), // in a and b: first in byte order
        ("http://only-b.org/", "b"),
        ("http://x.1.2.3.4/", "a"),
        // percent-decoding before anything else
        ("http://f%6Fo.com/", "a"),
        ("http://foo%2ecom/", "a"),
        // Q1: site.net has a listed subdomain, so its other subdomains are missed
        ("http://site.net/", "a"),
        ("http://x.zzz.site.net/", "a"),
        ("http://a.site.net/", "-"),
        ("http://www.site.net/", "-"),
        ("http://a.lone.org/", "a"),
        // Q3, Q5, Q6, Q7, Q8
        ("http://foo.com?x=1", "-"),
        ("http://bücher.de/", "-"),
        ("http://xn--bcher-kva.de/", "a"),
        ("http://01.2.3.4/", "-"),
        ("http://foo.com./", "a"),
        ("http://foo.com.", "-"),
        ("http://foo.com.:80/", "-"),
        ("http://a@b@foo.com/", "-"),
        ("http://x.star.com/", "-"), // `*.star.com` is stored literally
        // urls: string prefix, www-like prefixes stripped from the request only
        ("http://site.com/path/to", "a"),
        ("http://site.com/path/toolong", "a"),
        ("http://site.com//path/to?q=1", "a"),
        ("http://www2.site.com/path/to", "a"),
        ("http://web.site.com/path/to", "a"),
        ("http://sub.site.com/path/to", "-"),
        ("http://site.com/./path/to", "-"),
        ("http://www.wsite.com/page", "a"),
        ("http://wsite.com/page", "-"),
        ("http://site.com:8080/path/to", "a"),
        ("http://port.com/p", "a"),
        // Q4: pa.com/a is extended by pa.com/a/b
        ("http://pa.com/a", "a"),
        ("http://pa.com/a/c", "-"),
        // expressions: case-insensitive ERE on host[:port]/path, no scheme
        ("http://exact/", "c"),
        ("http://x.com/exact", "-"),
        ("http://x.com:81/", "c"),
        ("http://x.com/UPPERX", "c"),
    ];
    let path = dir.path().join("probe.txt");
    let text: String = cases.iter().map(|(u, _)| format!("{u}\n")).collect();
    std::fs::write(&path, text).unwrap();
    let got = sgdiff::run_squidguard(&ws, &path).unwrap();
    let wrong: Vec<String> = cases
        .iter()
        .zip(&got)
        .filter(|((_, want), got)| want != got)
        .map(|((u, want), got)| format!("{u}: want {want}, squidGuard said {got}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "squidGuard differs from the note:\n{}",
        wrong.join("\n")
    );
}
