//! The policy end to end: the default policy file, evaluated against events.

use super::*;
use invigilator_proto::v1::ProcessExec;

/// Monday 23 November 2026, 10:00 in London: period 2 of the default school day.
const LESSON_US: i64 = 1_795_428_000_000_000;
/// The same day at 16:30, after school.
const AFTER_SCHOOL_US: i64 = LESSON_US + 6 * 3600 * 1_000_000 + 30 * 60 * 1_000_000;

fn exec(exe: &str, name: &str, argv: &[&str]) -> Event {
    Event {
        truncated: Vec::new(),
        device_time_us: 0,
        seq: 7,
        observed_at_us: LESSON_US,
        hostname: "ict-01".into(),
        user: "pupil".into(),
        kind: Some(Kind::Process(ProcessExec {
            exe: exe.into(),
            name: name.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })),
    }
}

const CTX: AgentContext<'static> = AgentContext {
    agent_id: "a",
    group: "pupils",
    user_logged_on_elsewhere: Vec::new(),
    logged_on: Vec::new(),
};

#[test]
fn the_default_policy_catches_circumvention_p2p_and_games_and_not_ordinary_programs() {
    let p = Policy::parse(DEFAULT_POLICY).unwrap();
    let fired = |e: Event| {
        p.evaluate(&CTX, &e)
            .into_iter()
            .map(|a| a.rule)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        fired(exec("/usr/bin/tor", "tor", &["tor"])),
        ["circumvention.tor"]
    );
    assert_eq!(
        fired(exec("", "tor", &[])),
        ["circumvention.tor"],
        "comm alone is enough"
    );
    assert_eq!(
        fired(exec(
            "C:\\Users\\p\\Desktop\\Psiphon3.exe",
            "Psiphon3.exe",
            &[]
        )),
        ["circumvention.psiphon"]
    );
    assert_eq!(
        fired(exec(
            "/usr/sbin/openvpn",
            "openvpn",
            &["openvpn", "--config", "x"]
        )),
        ["circumvention.vpn"]
    );
    assert_eq!(
        fired(exec("/usr/bin/qbittorrent", "qbittorrent", &[])),
        ["filesharing.p2p"]
    );
    assert_eq!(
        fired(exec("/usr/games/steam", "steam", &[])),
        ["games.non_educational"]
    );
    for benign in [
        exec("/usr/bin/bash", "bash", &["bash"]),
        exec("/usr/bin/torsocks-docs-viewer", "torsocks-docs-v", &[]),
        exec(
            "/usr/bin/python3",
            "python3",
            &["python3", "history_of_tortoises.py"],
        ),
        exec(
            "/opt/minecraft-education/Minecraft.Education",
            "Minecraft.Educat",
            &[],
        ),
    ] {
        assert!(fired(benign.clone()).is_empty(), "{benign:?}");
    }
}

#[test]
fn an_alert_says_which_rule_what_matched_and_which_policy() {
    let p = Policy::parse(DEFAULT_POLICY).unwrap();
    let a = &p.evaluate(
        &CTX,
        &exec(
            "/home/p/tor-browser/Browser/firefox.real",
            "firefox.real",
            &[],
        ),
    )[0];
    assert_eq!(a.rule, "circumvention.tor");
    assert!(a.matched.contains("path"), "{}", a.matched);
    assert!(
        a.policy_version
            .starts_with(p.version.split('#').next().unwrap())
    );
    assert_eq!(a.severity, Severity::Serious);
    assert_eq!(a.event_seq, Some(7));
}

fn usb(action: &str, classes: &[&str], keyboard: bool) -> Event {
    Event {
        seq: 9,
        observed_at_us: 1,
        hostname: "pc".into(),
        kind: Some(Kind::Usb(invigilator_proto::v1::UsbDevice {
            action: action.into(),
            vendor_id: "0781".into(),
            product_id: "5581".into(),
            product: "Ultra".into(),
            serial: "4C53".into(),
            interface_classes: classes.iter().map(|c| c.to_string()).collect(),
            keyboard,
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[test]
fn usb_rules_depend_on_the_device_group_and_the_approved_list() {
    let p = Policy::parse(DEFAULT_POLICY).unwrap();
    let on = |group: &str, e: Event| {
        let ctx = AgentContext {
            agent_id: "a",
            group,
            user_logged_on_elsewhere: vec![],
            logged_on: Vec::new(),
        };
        p.evaluate(&ctx, &e)
            .into_iter()
            .map(|a| a.rule)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        on("pupils-ks2", usb("attach", &["mass-storage"], false)),
        ["usb.storage_on_pupil_device"]
    );
    assert_eq!(
        on("staff", usb("attach", &["mass-storage"], false)),
        ["usb.unapproved_storage"]
    );
    assert!(on("staff", usb("detach", &["mass-storage"], false)).is_empty());
    assert_eq!(
        on("staff", usb("attach", &["hid"], true)),
        ["usb.keyboard_attached"]
    );
    assert!(
        on("staff", usb("present", &["hid"], true)).is_empty(),
        "keyboards there at start-up are not mid-session"
    );
    let approved = DEFAULT_POLICY.replace(
        "approved_storage = []",
        "approved_storage = [\"0781:5581\"]",
    );
    let p2 = Policy::parse(&approved).unwrap();
    let ctx = AgentContext {
        agent_id: "a",
        group: "staff",
        user_logged_on_elsewhere: vec![],
        logged_on: Vec::new(),
    };
    assert!(
        p2.evaluate(&ctx, &usb("attach", &["mass-storage"], false))
            .is_empty()
    );
    let bad = DEFAULT_POLICY.replace("approved_storage = []", "approved_storage = [\"sandisk\"]");
    assert!(
        Policy::parse(&bad)
            .unwrap_err()
            .contains("approved_storage")
    );
}

#[test]
fn session_rules_catch_a_pupil_on_a_staff_laptop_and_double_logons() {
    let p = Policy::parse(DEFAULT_POLICY).unwrap();
    let logon = |user: &str| Event {
        seq: 1,
        observed_at_us: 1,
        user: user.into(),
        kind: Some(Kind::Session(invigilator_proto::v1::SessionChange {
            action: "logon".into(),
            user: user.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let rules = |group: &str, elsewhere: Vec<String>, user: &str| {
        let ctx = AgentContext {
            agent_id: "a",
            group,
            user_logged_on_elsewhere: elsewhere,
            logged_on: Vec::new(),
        };
        p.evaluate(&ctx, &logon(user))
            .into_iter()
            .map(|a| a.rule)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        rules("staff-laptops", vec![], "pupil042"),
        ["session.pupil_on_staff_device"]
    );
    assert!(rules("pupils-ks2", vec![], "pupil042").is_empty());
    assert!(
        rules("pupils-ks2", vec![], "staff.jones").is_empty(),
        "teachers help at pupils' desks"
    );
    assert_eq!(
        rules("pupils-ks2", vec!["lab-1".into()], "pupil042"),
        ["session.concurrent_logon"]
    );
}

#[test]
fn errors_point_at_the_line_and_field() {
    let bad = "version = \"1\"\n\n[[process]]\nid = \"x\"\ncategory = \"c\"\nseverity = \"catastrophic\"\nsummary = \"s\"\nnames = [\"a\"]\n";
    let err = Policy::parse(bad).unwrap_err();
    assert!(
        err.contains("line 6") && err.contains("catastrophic"),
        "{err}"
    );
    let bad_regex = "version = \"1\"\n[[process]]\nid = \"x\"\ncategory = \"c\"\nseverity = \"serious\"\nsummary = \"s\"\ncmdline = [\"(\"]\n";
    let err = Policy::parse(bad_regex).unwrap_err();
    assert!(
        err.contains("rule \"x\"") && err.contains("cmdline"),
        "{err}"
    );
    let empty = "version = \"1\"\n[[process]]\nid = \"x\"\ncategory = \"c\"\nseverity = \"serious\"\nsummary = \"s\"\n";
    assert!(
        Policy::parse(empty)
            .unwrap_err()
            .contains("matches nothing")
    );
}

#[test]
fn a_game_launcher_is_only_a_breach_during_lessons() {
    let p = Policy::parse(DEFAULT_POLICY).unwrap();
    let steam = exec("/usr/games/steam", "steam", &[]);
    assert_eq!(p.evaluate(&CTX, &steam).len(), 1);
    let after = Event {
        observed_at_us: AFTER_SCHOOL_US,
        ..steam
    };
    assert!(p.evaluate(&CTX, &after).is_empty());
}

/// The default policy with small lists: ordinary UT1-style categories and one illegal feed.
fn policy_with_lists() -> (tempfile::TempDir, Policy) {
    let data = tempfile::tempdir().unwrap();
    let write = |dir: &str, file: &str, text: &str| {
        let d = data.path().join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(file), text).unwrap();
    };
    write("ut1/gambling", "domains", "bet-example.com\n");
    // Bookmakers are in UT1's games list too; homework platforms are filed as games.
    write(
        "ut1/games",
        "domains",
        "games-example.net\nbet-example.com\nttrockstars.com\nscratch-example.org\n",
    );
    write("ut1/adult", "urls", "media-example.org/adult\n");
    write("feed/iwf", "domains", "abuse-example.test\n");
    invigilator_lists::import(
        data.path(),
        &data.path().join("ut1"),
        invigilator_lists::ListClass::Ordinary,
    )
    .unwrap();
    invigilator_lists::import(
        data.path(),
        &data.path().join("feed"),
        invigilator_lists::ListClass::Illegal,
    )
    .unwrap();
    std::fs::write(Policy::path(data.path()), DEFAULT_POLICY).unwrap();
    let p = Policy::load_in(data.path()).unwrap();
    (data, p)
}

fn visit(url: &str, title: &str, search: &str, at_us: i64) -> Event {
    Event {
        truncated: Vec::new(),
        device_time_us: 0,
        seq: 11,
        observed_at_us: at_us,
        hostname: "ict-01".into(),
        user: "y5smith".into(),
        kind: Some(Kind::Browsing(invigilator_proto::v1::BrowsingVisit {
            action: "visit".into(),
            url: url.into(),
            title: title.into(),
            search_terms: search.into(),
            search_engine: if search.is_empty() { "" } else { "google" }.into(),
            ..Default::default()
        })),
    }
}

#[test]
fn listed_sites_raise_their_rule_by_group_and_time() {
    let (_d, p) = policy_with_lists();
    let a = p.evaluate(
        &CTX,
        &visit(
            "https://WWW.Bet-Example.com:443/slots?x=1",
            "",
            "",
            AFTER_SCHOOL_US,
        ),
    );
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].rule, "web.gambling");
    assert_eq!(a[0].category, "gambling");
    assert_eq!(
        a[0].matched,
        "domain \"bet-example.com\" in list \"gambling\"; also listed in games"
    );
    assert!(
        a[0].response.contains("parents"),
        "pupil response: {}",
        a[0].response
    );
    assert!(
        a[0].aggregate_key
            .as_deref()
            .unwrap()
            .ends_with("|web.gambling|www.bet-example.com")
    );

    let games = |at| p.evaluate(&CTX, &visit("http://play.games-example.net/", "", "", at));
    assert_eq!(games(LESSON_US)[0].rule, "web.games_in_lessons");
    assert!(
        games(AFTER_SCHOOL_US).is_empty(),
        "games are fine after school"
    );
    let staff = AgentContext {
        group: "staff-laptops",
        ..CTX
    };
    let teacher = Event {
        user: "staff.jones".into(),
        ..visit("http://games-example.net/", "", "", LESSON_US)
    };
    assert!(
        p.evaluate(&staff, &teacher).is_empty(),
        "the games rule is for pupils"
    );
    assert_eq!(
        p.evaluate(
            &CTX,
            &visit("http://media-example.org/adult/x", "", "", LESSON_US)
        )[0]
        .rule,
        "web.pornography"
    );
    assert!(
        p.evaluate(
            &CTX,
            &visit("http://media-example.org/news", "", "", LESSON_US)
        )
        .is_empty()
    );
    assert!(p.missing_categories().contains(&"social_networks"));
}

#[test]
fn searches_and_titles_raise_their_keyword_library_and_innocent_ones_do_not() {
    let (_d, p) = policy_with_lists();
    let a = p.evaluate(
        &CTX,
        &visit(
            "https://www.google.com/search?q=how+to+kill+myself",
            "how to kill myself - Google Search",
            "how to kill myself",
            LESSON_US,
        ),
    );
    assert_eq!(a.len(), 1, "the title repeats the search: one alert, {a:?}");
    assert_eq!(a[0].rule, "keywords.self_harm");
    assert_eq!(a[0].severity, Severity::Serious);
    assert!(a[0].matched.contains("search terms"), "{}", a[0].matched);
    for innocent in [
        "how to cut my hair",
        "kill the process linux",
        "macbeth essay on murder and guilt",
    ] {
        let url = format!(
            "https://www.google.com/search?q={}",
            innocent.replace(' ', "+")
        );
        assert!(
            p.evaluate(&CTX, &visit(&url, innocent, innocent, LESSON_US))
                .is_empty(),
            "{innocent}"
        );
    }
}

/// The default libraries' primary band: "sexy" is a concern from a year 5 pupil, not from a
/// secondary one; the base terms count for both.
#[test]
fn a_primary_pupils_search_meets_the_primary_band_and_an_older_pupils_does_not() {
    let (_d, p) = policy_with_lists();
    let search = |user: &str, q: &str| {
        let mut e = visit(
            &format!("https://www.google.com/search?q={}", q.replace(' ', "+")),
            "",
            q,
            LESSON_US,
        );
        e.user = user.into();
        p.evaluate(&CTX, &e)
    };
    let a = search("y5smith", "sexy dance moves");
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].rule, "keywords.sexual");
    assert!(
        a[0].matched.contains("[age band: primary]"),
        "{}",
        a[0].matched
    );
    assert!(search("pupil.jones", "sexy dance moves").is_empty());
    // Schoolwork silences a band's topic terms as it does the library's.
    assert!(search("y6patel", "rse year 6 sex education").is_empty());
    for user in ["y5smith", "pupil.jones"] {
        let a = search(user, "free porn");
        assert_eq!(a.len(), 1, "{user}: {a:?}");
        assert!(!a[0].matched.contains("age band"), "{}", a[0].matched);
    }
}

#[test]
fn an_illegal_list_address_raises_one_alert_that_hides_it_and_is_redacted_in_store() {
    let (_d, p) = policy_with_lists();
    let url = "https://cdn.abuse-example.test/img/123";
    let event = visit(url, "some title", "", LESSON_US);
    let a = p.evaluate(&CTX, &event);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].severity, Severity::Illegal);
    assert_eq!(a[0].rule, "illegal.iwf");
    assert_eq!(a[0].response, responses::ILLEGAL_RESPONSE);
    let shown = format!("{} {} {}", a[0].summary, a[0].matched, a[0].response);
    assert!(
        !shown.contains("abuse-example") && !shown.contains("some title"),
        "{shown}"
    );
    assert_eq!(a[0].matched, browsing::address_hash(url));

    let stored = p.redacted(&event);
    let Some(Kind::Browsing(v)) = &stored.kind else {
        panic!()
    };
    assert!(
        !v.url.contains("abuse-example") && v.title.is_empty(),
        "{v:?}"
    );
    assert!(v.url.ends_with(&browsing::address_hash(url)));
    // Other events are stored as they came.
    let ordinary = visit("http://bet-example.com/", "t", "", LESSON_US);
    assert!(matches!(
        p.redacted(&ordinary),
        std::borrow::Cow::Borrowed(_)
    ));

    // No policy file can switch it off or lower it: there is nothing to write.
    let text = DEFAULT_POLICY.to_owned()
        + "\n[[web]]\nid = \"x\"\ncategories = [\"iwf\"]\nseverity = \"off\"\nsummary = \"s\"\n";
    let quiet = Policy::parse(&text).unwrap().with_lists(p.lists.clone());
    assert_eq!(quiet.evaluate(&CTX, &event)[0].severity, Severity::Illegal);
    let illegal_rule = DEFAULT_POLICY.replace(
        "id = \"circumvention.psiphon\"\ncategory = \"circumvention\"\nseverity = \"serious\"",
        "id = \"circumvention.psiphon\"\ncategory = \"circumvention\"\nseverity = \"illegal\"",
    );
    assert!(
        Policy::parse(&illegal_rule)
            .unwrap_err()
            .contains("illegal")
    );
}

#[test]
fn the_education_list_keeps_homework_platforms_out_of_the_games_rule() {
    let (_d, p) = policy_with_lists();
    let at = |url: &str| p.evaluate(&CTX, &visit(url, "", "", LESSON_US));
    // Control: a game in a lesson is an alert, so the silence below is the exception's.
    assert_eq!(
        at("https://games-example.net/play")[0].rule,
        "web.games_in_lessons"
    );
    assert!(at("https://play.ttrockstars.com/garage").is_empty());
    // A concerning search is a concern on any site: keyword rules take no exceptions.
    let search = visit(
        "https://ttrockstars.com/search?q=how+to+kill+myself",
        "",
        "how to kill myself",
        LESSON_US,
    );
    assert_eq!(p.evaluate(&CTX, &search)[0].rule, "keywords.self_harm");
}

#[test]
fn an_allow_entry_covers_its_rules_users_and_sites_only() {
    let (d, _) = policy_with_lists();
    let text = DEFAULT_POLICY.to_owned()
        + "\n[[web_exceptions.allow]]\nsites = [\"scratch-example.org/projects\"]\n\
           rules = [\"web.games_in_lessons\"]\nusers = [\"ks2\"]\nreason = \"coding club\"\n";
    std::fs::write(Policy::path(d.path()), text).unwrap();
    let p = Policy::load_in(d.path()).unwrap();
    let lesson = |url: &str, user: &str| {
        let mut e = visit(url, "", "", LESSON_US);
        e.user = user.into();
        p.evaluate(&CTX, &e)
    };
    assert!(lesson("https://scratch-example.org/projects/1", "y5smith").is_empty());
    // Outside its prefix, or for another group, the rule still fires.
    assert_eq!(
        lesson("https://scratch-example.org/games/1", "y5smith").len(),
        1
    );
    assert_eq!(
        lesson("https://scratch-example.org/projects/1", "y1jones").len(),
        1
    );
    let described = p.web_exceptions().describe().join("\n");
    assert!(described.contains("coding club"), "{described}");

    let bad = DEFAULT_POLICY.to_owned()
        + "\n[[web_exceptions.allow]]\nsites = [\"x.example\"]\nrules = [\"web.nope\"]\n";
    let err = Policy::parse(&bad).unwrap_err();
    assert!(err.contains("web.nope"), "{err}");
}

#[test]
fn one_visit_gets_one_verdict_the_most_severe_naming_the_other_categories() {
    let (_d, p) = policy_with_lists();
    let a = p.evaluate(
        &CTX,
        &visit("https://www.bet-example.com/slots", "", "", LESSON_US),
    );
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].rule, "web.gambling");
    assert_eq!(a[0].severity, Severity::Serious);
    assert!(
        a[0].matched.contains("also listed in games"),
        "{}",
        a[0].matched
    );
}

#[test]
fn installers_remote_control_hacking_and_agent_tampering_are_caught_for_the_right_people() {
    let p = Policy::parse(DEFAULT_POLICY).unwrap();
    let as_user = |user: &str, exe: &str, argv: &[&str]| {
        let name = exe.rsplit(['/', '\\']).next().unwrap().to_owned();
        let mut e = exec(exe, &name, argv);
        e.user = user.into();
        p.evaluate(&CTX, &e)
            .into_iter()
            .map(|a| (a.rule, a.severity))
            .collect::<Vec<_>>()
    };
    let rules = |user: &str, exe: &str, argv: &[&str]| {
        as_user(user, exe, argv)
            .into_iter()
            .map(|(r, _)| r)
            .collect::<Vec<_>>()
    };
    // A pupil installing software; the machine's own updates as root or SYSTEM are not.
    let apt = ["apt-get", "install", "-y", "steam"];
    assert_eq!(
        rules("y9smith", "/usr/bin/apt-get", &apt),
        ["install.by_pupil"]
    );
    assert!(rules("root", "/usr/bin/apt-get", &apt).is_empty());
    let msi = ["msiexec.exe", "/i", "C:\\Users\\y9\\Downloads\\game.msi"];
    assert_eq!(
        rules("y9smith", "C:\\Windows\\System32\\msiexec.exe", &msi),
        ["install.by_pupil"]
    );
    assert!(rules("SYSTEM", "C:\\Windows\\System32\\msiexec.exe", &msi).is_empty());
    assert!(
        rules(
            "NT AUTHORITY\\SYSTEM",
            "C:\\Windows\\Temp\\ChromeSetup.exe",
            &[]
        )
        .is_empty()
    );
    assert_eq!(
        rules("y9smith", "C:\\Users\\y9\\Downloads\\ChromeSetup.exe", &[]),
        ["install.by_pupil"]
    );
    assert!(rules("staff.jones", "/usr/bin/apt-get", &apt).is_empty());
    // Remote control by a pupil, not by staff.
    assert_eq!(
        rules("y9smith", "C:\\Users\\y9\\Downloads\\AnyDesk.exe", &[]),
        ["remote_control.tools"]
    );
    assert!(rules("staff.jones", "/usr/bin/anydesk", &["anydesk"]).is_empty());
    // Credential theft by anyone; network tools by pupils and visitors.
    assert_eq!(
        rules(
            "staff.jones",
            "C:\\tools\\mimikatz.exe",
            &["mimikatz.exe", "sekurlsa::logonpasswords"]
        ),
        ["hacking.credentials"]
    );
    assert_eq!(
        rules("y9smith", "/usr/bin/nmap", &["nmap", "10.0.0.0/24"]),
        ["hacking.network_tools"]
    );
    assert!(rules("staff.tech", "/usr/bin/nmap", &["nmap", "10.0.0.0/24"]).is_empty());
    // Stopping or removing the agent: serious, whoever does it.
    for (user, exe, argv) in [
        (
            "root",
            "/usr/bin/systemctl",
            &["systemctl", "stop", "invigilator-agent"][..],
        ),
        (
            "y9smith",
            "/usr/bin/systemctl",
            &["systemctl", "disable", "--now", "invigilator-agent.service"],
        ),
        (
            "y9smith",
            "C:\\Windows\\System32\\sc.exe",
            &["sc.exe", "stop", "InvigilatorAgent"],
        ),
        (
            "y9smith",
            "C:\\Windows\\System32\\net.exe",
            &["net", "stop", "InvigilatorAgent"],
        ),
        (
            "root",
            "/usr/bin/apt-get",
            &["apt-get", "purge", "invigilator-agent"],
        ),
        (
            "root",
            "/usr/bin/rm",
            &["rm", "-rf", "/var/lib/invigilator-agent"],
        ),
        ("y9smith", "/usr/bin/pkill", &["pkill", "-f", "invigilator"]),
    ] {
        assert!(
            as_user(user, exe, argv).contains(&("tamper.agent".to_owned(), Severity::Serious)),
            "{user} {argv:?}"
        );
    }
    // Ordinary work names none of them.
    for (user, exe, argv) in [
        (
            "y9smith",
            "/usr/bin/systemctl",
            &["systemctl", "status", "invigilator-agent"][..],
        ),
        ("y9smith", "/usr/bin/apt", &["apt", "list", "--installed"]),
        (
            "y9smith",
            "/usr/bin/python3",
            &["python3", "install_notes.py"],
        ),
        (
            "y9smith",
            "C:\\Program Files\\Microsoft Office\\WINWORD.EXE",
            &["WINWORD.EXE", "installation-guide.docx"],
        ),
        (
            "root",
            "/usr/bin/unattended-upgrade",
            &["unattended-upgrade"],
        ),
        (
            "y9smith",
            "/usr/bin/grep",
            &["grep", "-r", "invigilator", "notes.txt"],
        ),
    ] {
        assert!(
            rules(user, exe, argv).is_empty(),
            "{user} {argv:?}: {:?}",
            rules(user, exe, argv)
        );
    }
}

#[test]
fn lesson_time_rules_are_for_the_schools_own_devices() {
    let (_d, p) = policy_with_lists();
    let on = |group: &str, user: &str| {
        let ctx = AgentContext {
            group,
            ..CTX.clone()
        };
        let mut e = visit("https://games-example.net/play", "", "", LESSON_US);
        e.user = user.into();
        p.evaluate(&ctx, &e)
    };
    // A game in a lesson on a school PC is an alert; on a visitor's own laptop it is not.
    assert_eq!(on("pupils-ks2", "y5smith").len(), 1);
    assert!(on("guest-wifi", "guest1").is_empty());
    assert!(on("byod-pupil", "y5smith").is_empty());
    // Unless the rule names its devices itself.
    let text = DEFAULT_POLICY.replace(
        "summary = \"Non-educational games during lessons\"\nusers = [\"pupil\"]\nwhen = \"lessons\"",
        "summary = \"Non-educational games during lessons\"\nusers = [\"pupil\"]\nwhen = \"lessons\"\ndevices = [\"personal\"]",
    );
    assert_ne!(text, DEFAULT_POLICY);
    let own = Policy::parse(&text).unwrap().with_lists(p.lists.clone());
    let ctx = AgentContext {
        group: "byod-pupil",
        ..CTX.clone()
    };
    let mut e = visit("https://games-example.net/play", "", "", LESSON_US);
    e.user = "y5smith".into();
    assert_eq!(own.evaluate(&ctx, &e).len(), 1);
}

#[test]
fn a_child_seeking_help_is_seen_at_once_and_never_sanctioned() {
    let (_d, p) = policy_with_lists();
    let a = p.evaluate(
        &CTX,
        &visit(
            "https://www.google.com/search?q=childline+number",
            "",
            "childline number",
            LESSON_US,
        ),
    );
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].rule, "keywords.help_seeking");
    assert_eq!(a[0].severity, Severity::Serious);
    assert!(a[0].response.contains("supportively"), "{}", a[0].response);
    assert!(!a[0].response.contains("parents"), "{}", a[0].response);
}

#[test]
fn the_keyword_classifier_is_on_by_default_and_the_policy_can_switch_it_off() {
    // A text of the corpus's kind no term of the default libraries matches.
    let texts = [
        "everyone would be happier if i just disappeared for good",
        "i cant do this anymore i just want it all to stop",
    ];
    let on = Policy::parse(DEFAULT_POLICY).unwrap();
    let off = Policy::parse(&format!(
        "{DEFAULT_POLICY}\n[keyword_model]\nenabled = false\n"
    ))
    .unwrap();
    for text in texts {
        assert!(
            off.keywords()
                .scan(text)
                .iter()
                .all(|h| h.model_percent.is_none()),
            "{text}"
        );
        // Whatever the shipped model makes of it, it is the same as its terms with the model.
        let with = on.keywords().scan(text);
        let terms = on.keywords().scan_terms(text);
        assert!(with.len() >= terms.len(), "{text}");
    }
    let bad = format!("{DEFAULT_POLICY}\n[keyword_model]\nthreshold = 1.5\n");
    assert!(
        Policy::parse(&bad)
            .unwrap_err()
            .contains("keyword_model.threshold")
    );
}

#[test]
fn misspellings_are_off_by_default_and_the_policy_can_switch_them_on() {
    let text = "i want to kill myslef";
    let default = Policy::parse(DEFAULT_POLICY).unwrap();
    assert!(default.keywords().scan_terms(text).is_empty());
    let on = Policy::parse(&format!(
        "{DEFAULT_POLICY}\n[keyword_misspellings]\nenabled = true\n"
    ))
    .unwrap();
    let hits = on.keywords().scan_terms(text);
    assert!(
        hits.iter().any(|h| h.found.contains("typed: myslef")),
        "{hits:?}"
    );
}

/// The sanctions tables judge "deliberately accessing or trying to access" in one row: a
/// search for what a site rule blocks carries that rule's severity.
#[test]
fn a_search_for_what_a_site_rule_blocks_is_as_severe_as_the_visit() {
    let file: toml::Value = toml::from_str(DEFAULT_POLICY).unwrap();
    let severity = |table: &str, id: &str| -> String {
        file[table]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"].as_str() == Some(id))
            .unwrap_or_else(|| panic!("no {table} {id:?}"))["severity"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for (library, rule) in [
        ("sexual", "web.pornography"),
        ("drugs", "web.drugs"),
        ("circumvention", "web.circumvention"),
        ("weapons", "web.violence"),
    ] {
        assert_eq!(
            severity("keywords", library),
            severity("web", rule),
            "keywords {library:?} against {rule:?}"
        );
    }
}
