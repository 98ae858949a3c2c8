//! `invigilator-collector lists import` and `lists classify`, as an operator runs them.

use invigilator_tests::{bin, output};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn write(dir: &Path, rel: &str, text: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn fixture(dir: &Path) {
    write(
        dir,
        "games/domains",
        b"# UT1 games\r\ngames.example\r\n\r\nplay.example.org\r\n",
    );
    write(dir, "games/urls", b"host.example/games/\n");
    write(dir, "adult/domains", b"adult.example\nshared.example\n");
    write(dir, "adult/expressions", b"(^|[-/_])porn([-./_]|$)\n");
    write(dir, "shopping/domains", b"shared.example\n");
    write(dir, "porn", b"adult\n");
}

fn import(data: &Path, source: &Path, illegal: bool) -> std::process::Output {
    let mut cmd = Command::new(bin("invigilator-collector"));
    cmd.args(["lists", "import", "--data-dir"])
        .arg(data)
        .args(["--format", "ut1"]);
    if illegal {
        cmd.arg("--illegal");
    }
    output(cmd.arg(source))
}

fn classify(lists: &Path, input: &str) -> String {
    let mut child = Command::new(bin("invigilator-collector"))
        .args(["lists", "classify", "--lists"])
        .arg(lists)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let feeder = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const URLS: &str = "http://games.example/\n\
    https://User@WWW.Games.Example.:8443/x\n\
    http://host.example/games/1.html\n\
    http://shared.example/\n\
    http://pics.example/free-porn/\n\
    not a url\n\
    \n\
    http://bad.example/x\n\
    http://elsewhere.example/";

#[test]
fn import_then_classify_raw_and_compiled_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("ut1");
    fixture(&src);
    let data = tmp.path().join("data");

    let out = import(&data, &src, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("imported 4 ordinary categories (1 aliases)"),
        "{report}"
    );
    assert!(data.join("lists/ordinary.lists").is_file());

    let want = "games\ngames\ngames\nadult\nadult\n-\n-\n-\n-\n";
    assert_eq!(classify(&src, URLS), want, "raw UT1 directory");
    assert_eq!(classify(&data, URLS), want, "data directory");

    write(tmp.path(), "iwf/csam/domains", b"bad.example\n");
    let out = import(&data, &tmp.path().join("iwf"), true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        classify(&data.join("lists"), URLS),
        "games\ngames\ngames\nadult\nadult\n-\n-\ncsam\n-\n",
        "illegal lists are loaded beside the ordinary ones"
    );
}

#[test]
fn a_corrupt_import_names_the_file_and_line_and_keeps_the_old_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("ut1");
    fixture(&src);
    let data = tmp.path().join("data");
    assert!(import(&data, &src, false).status.success());
    let before = std::fs::read(data.join("lists/ordinary.lists")).unwrap();

    // A compressed file dropped where a list belongs.
    write(
        &src,
        "games/domains",
        b"games.example\n\x1f\x8b\x08\x00\x00\x00\x00\x00\n",
    );
    let out = import(&data, &src, false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("games/domains:2") && err.contains("previous lists are unchanged"),
        "{err}"
    );

    // Mostly garbage.
    let mut junk = b"games.example\n".to_vec();
    for i in 0..50 {
        junk.extend_from_slice(format!("<a href=\"/x{i}\">\n").as_bytes());
    }
    write(&src, "games/domains", &junk);
    let out = import(&data, &src, false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("games/domains:2") && err.contains("50 of 51"),
        "{err}"
    );

    // A source that does not exist.
    assert!(
        !import(&data, &tmp.path().join("missing"), false)
            .status
            .success()
    );

    assert_eq!(
        std::fs::read(data.join("lists/ordinary.lists")).unwrap(),
        before
    );
    let names: Vec<_> = std::fs::read_dir(data.join("lists"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["ordinary.lists"], "no temporary files left");
    assert_eq!(classify(&data, "games.example\n"), "games\n");
}

#[test]
fn classify_refuses_lists_it_cannot_load() {
    let tmp = tempfile::tempdir().unwrap();
    let out = output(
        Command::new(bin("invigilator-collector"))
            .args(["lists", "classify", "--lists"])
            .arg(tmp.path().join("nowhere")),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere"));
}
