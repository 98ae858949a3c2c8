use super::*;

/// The keyword tables of a policy file, as the default fragment and these tests write them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fragment {
    #[serde(default)]
    keywords: Vec<KeywordLibrarySpec>,
    #[serde(default)]
    keyword_exclusions: KeywordExclusionsSpec,
}

fn compile(text: &str) -> Result<Keywords, String> {
    let f: Fragment = toml::from_str(text).map_err(|e| e.to_string())?;
    // The default policy's pupil groups, for the bands' `users`.
    let knows = |g: &str| ["eyfs", "ks1", "ks2", "pupils"].contains(&g);
    Keywords::compile(&f.keywords, &f.keyword_exclusions, knows).map_err(|e| e.render(text))
}

fn defaults() -> Keywords {
    compile(DEFAULT_KEYWORDS).unwrap_or_else(|e| panic!("default keywords: {e}"))
}

fn libraries(k: &Keywords, text: &str) -> Vec<String> {
    k.scan(text).into_iter().map(|h| h.library).collect()
}

/// Searches and page titles pupils and staff really make, each close to a term of a library.
const INNOCENT: &[&str] = &[
    "how to cut my hair at home",
    "how to cut my hair myself",
    "shoot a film at school media studies",
    "kill the process linux",
    "how to kill a process in windows task manager",
    "Macbeth essay on murder and guilt",
    "Lady Macbeth suicide quotes GCSE",
    "Romeo and Juliet suicide scene analysis",
    "Hamlet to be or not to be soliloquy meaning",
    "history of the gunpowder plot",
    "drugs in sport PE homework",
    "sex education year 6 RSE",
    "effects of cocaine on the heart biology",
    "cannabis law history essay",
    "the heroin epidemic in the 1990s - BBC News",
    "World War 2 Nazi Germany KS3 history",
    "Mein Kampf historical context WW2",
    "what does jihad mean RE homework",
    "killing time before the bus",
    "I was killing myself laughing at that video",
    "i want to die laughing at this",
    "The Suicide Squad (2021) - full cast",
    "suicide sprints PE warm up",
    "anti bullying week 2026 assembly ideas",
    "cyberbullying PSHE lesson plan KS2",
    "photo shoot ideas for art GCSE",
    "how to make a bath bomb",
    "glue gun for DT project",
    "can i bring a nerf gun to school",
    "Top Gun Maverick trailer",
    "flu shot for children",
    "cute shot glass gift",
    "Egyptian goddess Isis facts",
    "dog grooming courses near me",
    "Scunthorpe United results",
    "Middlesex university open day",
    "things to do in Essex",
    "skills builder for year 7",
    "fire retardant materials DT",
    "how to die my hair blue",
    "I hurt myself playing football what to do",
    "cut myself on paper how to stop bleeding",
    "blue tits nesting box RSPB",
    "blue footed booby facts",
    "how to weed the garden",
    "how to get high marks in maths",
    "buy a knife block for the kitchen",
    "national action plan for climate change",
    "pornography effects RSE lesson",
    "same sex marriage debate",
    "sex determination chromosomes biology",
    "The Knife of Never Letting Go book review",
    "how to shoot a basketball",
    "Zog by Julia Donaldson",
    "send pics from iphone to pc",
    "Mighty Morphin white power ranger toy",
    "online grooming awareness PSHE",
    "county lines PSHE worksheet",
    "love you lots xxx",
    "kms to miles conversion",
    "how to get high speed internet at home",
    "race in War Thunder tonight",
    "I want to be dead famous when I grow up",
    "can you end my life insurance policy early",
];

#[test]
fn default_libraries_compile() {
    let k = defaults();
    let ids: Vec<&str> = k.libraries().collect();
    assert_eq!(
        ids,
        [
            "self_harm",
            "extremism",
            "bullying",
            "sexual",
            "drugs",
            "weapons",
            "grooming",
            "sextortion",
            "circumvention",
            "help_seeking"
        ]
    );
}

#[test]
fn innocent_phrases_raise_nothing() {
    assert!(INNOCENT.len() >= 30);
    let k = defaults();
    let raised: Vec<_> = INNOCENT
        .iter()
        .filter_map(|t| {
            let hits = k.scan(t);
            (!hits.is_empty()).then(|| format!("{t:?}: {hits:?}"))
        })
        .collect();
    assert!(
        raised.is_empty(),
        "innocent texts raised hits:\n{}",
        raised.join("\n")
    );
}

#[test]
fn each_concern_raises_its_library_for_a_plain_case() {
    let k = defaults();
    for (text, library) in [
        ("how to kill myself", "self_harm"),
        ("i want to die", "self_harm"),
        ("painless suicide methods", "self_harm"),
        ("suicidal thoughts at night", "self_harm"),
        ("how to join isis", "extremism"),
        ("the great replacement is happening", "extremism"),
        ("everyone hates me at school", "bullying"),
        ("you should kill yourself", "bullying"),
        ("pornhub", "sexual"),
        ("naked girls pictures", "sexual"),
        ("where to buy weed near me", "drugs"),
        ("cocaine price uk", "drugs"),
        ("how to make a pipe bomb", "weapons"),
        ("buy a zombie knife", "weapons"),
        ("my older boyfriend says keep it our secret", "grooming"),
        ("jailbait pics", "grooming"),
    ] {
        assert_eq!(libraries(&k, text), [library], "{text:?}");
    }
}

#[test]
fn search_urls_and_obfuscation_are_normalised() {
    let k = defaults();
    assert_eq!(libraries(&k, "how+to+kill+myself"), ["self_harm"]);
    assert_eq!(libraries(&k, "how%20to%20kill%20myself"), ["self_harm"]);
    assert_eq!(libraries(&k, "HOW TO K1LL MYS3LF!!!"), ["self_harm"]);
    assert_eq!(libraries(&k, "kill_my_self"), ["self_harm"]);
    assert_eq!(libraries(&k, "p0rnhub"), ["sexual"]);
}

const SMALL: &str = r#"
[[keywords]]
id = "a"
concern = "concern a"
severity = "serious"
terms = ["kill", "kill myself", "suicid*", "knife"]
topic_terms = ["cocaine"]
exclusions = ["kill time"]

[[keywords]]
id = "b"
concern = "concern b"
severity = "inappropriate"
terms = ["kill", "knife crime", "knife"]

[keyword_exclusions]
phrases = ["cut my hair"]
schoolwork = ["homework"]
"#;

#[test]
fn terms_match_whole_words_only() {
    let k = compile(SMALL).unwrap();
    assert_eq!(libraries(&k, "skills"), Vec::<String>::new());
    assert_eq!(libraries(&k, "killed"), Vec::<String>::new());
    assert_eq!(libraries(&k, "kill"), ["a", "b"]);
    assert_eq!(libraries(&k, "Kill."), ["a", "b"]);
    // A prefix term is open at its end only.
    assert_eq!(k.scan("feeling suicidal")[0].found, "suicidal");
    assert_eq!(k.scan("feeling suicidal")[0].term, "suicid*");
    assert!(k.scan("presuicidal").is_empty());
}

#[test]
fn phrases_and_the_best_term_per_library() {
    let k = compile(SMALL).unwrap();
    let hits = k.scan("i want to kill myself");
    assert_eq!(hits.len(), 2, "one hit per library: {hits:?}");
    assert_eq!(
        (hits[0].library.as_str(), hits[0].term.as_str()),
        ("a", "kill myself")
    );
    assert_eq!(hits[0].severity, Severity::Serious);
    assert_eq!(hits[0].concern, "concern a");
    assert_eq!(hits[1].term, "kill");
    // A longer term failing to match does not hide a shorter one at the same place.
    assert_eq!(k.scan("knife crimes")[1].term, "knife");
    assert_eq!(k.scan("knife crime")[1].term, "knife crime");
    assert_eq!(
        k.scan("kill myself")
            .first()
            .map(KeywordHit::matched)
            .as_deref(),
        Some(r#"keyword "kill myself" ("kill myself") in "a""#)
    );
}

#[test]
fn exclusions_silence_only_the_occurrence_they_cover() {
    let k = compile(SMALL).unwrap();
    // Library a's exclusion does not apply to library b.
    assert_eq!(libraries(&k, "how to kill time"), ["b"]);
    // The rest of the text still counts.
    assert_eq!(libraries(&k, "kill time then kill"), ["a", "b"]);
    let d = defaults();
    assert_eq!(
        libraries(&d, "i want to die laughing"),
        Vec::<String>::new()
    );
    assert_eq!(
        libraries(&d, "i want to die laughing but really i want to die"),
        ["self_harm"]
    );
    assert_eq!(
        libraries(&d, "how to cut my hair and cut myself"),
        ["self_harm"]
    );
}

#[test]
fn schoolwork_silences_topic_terms_only() {
    let k = compile(SMALL).unwrap();
    assert_eq!(libraries(&k, "cocaine"), ["a"]);
    assert!(k.scan("cocaine homework").is_empty());
    assert_eq!(libraries(&k, "kill homework"), ["a", "b"]);
    let d = defaults();
    assert_eq!(
        libraries(&d, "english homework i want to kill myself"),
        ["self_harm"]
    );
}

#[test]
fn a_library_that_is_off_raises_nothing_but_is_still_checked() {
    let off = SMALL.replace("\"inappropriate\"", "\"off\"");
    let k = compile(&off).unwrap();
    assert_eq!(libraries(&k, "kill"), ["a"]);
    let all_off = off.replace("\"serious\"", "\"off\"");
    let k = compile(&all_off).unwrap();
    assert!(k.is_empty());
    assert!(k.scan("kill").is_empty());
    let bad = all_off.replace("\"knife crime\"", "\"kn*fe\"");
    assert!(compile(&bad).unwrap_err().starts_with("line 14: "));
}

#[test]
fn errors_point_at_the_line_of_the_bad_term() {
    let bad = |from: &str, to: &str| compile(&SMALL.replacen(from, to, 1)).unwrap_err();
    assert_eq!(
        bad("\"knife crime\"", "\"kn*fe\""),
        r#"line 14: keywords "b": term "kn*fe": `*` is only allowed once, at the end"#
    );
    assert_eq!(
        bad("\"cocaine\"", "\"(!)\""),
        r#"line 7: keywords "a": topic term "(!)": has no letters or digits"#
    );
    assert_eq!(
        bad("\"suicid*\"", "\"s*\""),
        r#"line 6: keywords "a": term "s*": needs at least 3 letters before `*`"#
    );
    assert_eq!(
        bad("\"kill time\"", "\"kill *\""),
        r#"line 8: keywords "a": exclusion "kill *": `*` must follow a letter or digit"#
    );
    assert_eq!(
        bad("\"homework\"", "\"\""),
        r#"line 18: keyword_exclusions: schoolwork "": has no letters or digits"#
    );
    assert_eq!(
        bad("id = \"b\"", "id = \"a\""),
        r#"line 11: keywords "a": id is used twice"#
    );
    assert_eq!(
        bad("terms = [\"kill\", \"knife crime\", \"knife\"]", ""),
        r#"line 11: keywords "b": matches nothing: give terms, topic_terms or patterns"#
    );
    let unknown = bad("exclusions =", "exclude =");
    assert!(
        unknown.contains("line 8") && unknown.contains("unknown field"),
        "{unknown}"
    );
    let illegal = bad("\"inappropriate\"", "\"illegal\"");
    assert!(illegal.contains("line 13"), "{illegal}");
}

#[test]
fn no_libraries_no_hits() {
    let k = Keywords::compile(&[], &KeywordExclusionsSpec::default(), |_| true).unwrap();
    assert!(k.is_empty());
    assert!(k.scan("kill myself").is_empty());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn kill() -> Keywords {
        compile("[[keywords]]\nid = \"k\"\nconcern = \"k\"\nseverity = \"serious\"\nterms = [\"kill\"]\n")
            .unwrap()
    }

    proptest! {
        #[test]
        fn any_text_normalises_to_spaced_lower_case_words(text in any::<String>()) {
            let n = normalise(&text);
            prop_assert!(n.starts_with(' ') && n.ends_with(' '));
            prop_assert!(!n[1..].contains("  "));
            prop_assert!(!n.chars().any(|c| c.is_ascii_uppercase()));
            // Normalising twice changes nothing more: terms and texts agree.
            prop_assert_eq!(normalise(&n), n.clone());
        }

        #[test]
        fn any_text_scans_without_panicking(text in any::<String>()) {
            let _ = defaults().scan(&text);
        }

        #[test]
        fn a_term_inside_a_longer_word_never_matches(a in "[a-z]{0,4}", b in "[a-z]{0,4}") {
            prop_assume!(!a.is_empty() || !b.is_empty());
            let k = kill();
            let (glued, apart) = (format!("{a}kill{b}"), format!("{a} kill, {b}"));
            prop_assert!(k.scan(&glued).is_empty());
            prop_assert_eq!(k.scan(&apart).len(), 1);
        }
    }
}

#[test]
fn a_term_spelled_out_or_run_together_still_matches() {
    let k = compile(
        r#"
[[keywords]]
id = "self_harm"
concern = "self-harm"
severity = "serious"
terms = ["kill myself", "cut"]
"#,
    )
    .unwrap();
    for text in ["k i l l m y s e l f", "#killmyself", "k.i.l.l myself"] {
        let hits = k.scan(text);
        assert_eq!(hits.len(), 1, "{text}");
        // The hit names the term as written, and what was found.
        assert_eq!(hits[0].term, "kill myself", "{text}");
    }
    // A short term is never run together: "cut" stays a word of its own.
    assert!(k.scan("shortcut keys").is_empty());
    assert!(
        k.scan("c u t e").is_empty(),
        "spelled out: `cute`, not `cut`"
    );
}

#[test]
fn a_hit_in_another_language_names_it_and_whether_it_was_reviewed() {
    let k = defaults();
    let hits = k.scan("chce sie zabic");
    let hit = hits
        .iter()
        .find(|h| h.library == "self_harm")
        .expect("Polish, typed without diacritics");
    assert_eq!(
        hit.language.as_deref(),
        Some("pl, not yet reviewed by native speakers")
    );
    assert!(
        hit.matched().contains("[pl, not yet reviewed"),
        "{}",
        hit.matched()
    );
    // The library's own (English) terms name no language.
    let hits = k.scan("i want to kill myself");
    assert_eq!(hits[0].language, None);
    // Arabic with vowel marks and stretched with tatweel is still found.
    let hits = k.scan("أُرِيدُ أَنْ أَمُـــوتَ");
    assert!(hits.iter().any(|h| h.library == "self_harm"), "{hits:?}");
}

/// One English self-harm library, for tests that add to it.
const SELF_HARM: &str = r#"
[[keywords]]
id = "self_harm"
concern = "self-harm"
severity = "serious"
terms = ["kill myself"]
"#;

#[test]
fn a_language_block_is_checked_like_its_library() {
    let err = compile(&format!(
        r#"{SELF_HARM}
[[keywords.languages]]
language = ""
terms = ["zabić się"]
"#
    ))
    .unwrap_err();
    assert!(err.contains("language"), "{err}");
    let err = compile(&format!(
        r#"{SELF_HARM}
[[keywords.languages]]
language = "pl"
terms = ["a*"]
"#
    ))
    .unwrap_err();
    assert!(err.contains("at least 3 letters"), "{err}");
}

#[test]
fn the_classifier_adds_what_terms_miss_and_says_why() {
    let k = compile(SELF_HARM).unwrap();
    let model = model::tests::toy();
    let k = k.with_model(std::sync::Arc::new(model), 0.5);
    let hits = k.scan("i want it all to stop forever");
    assert_eq!(hits.len(), 1, "{hits:?}");
    let hit = &hits[0];
    assert_eq!(
        (hit.library.as_str(), hit.term.as_str()),
        ("self_harm", "model")
    );
    assert!(hit.model_percent.is_some_and(|p| p >= 50));
    assert!(
        hit.matched().starts_with("keyword model ("),
        "{}",
        hit.matched()
    );
    // A term's hit is reported as the term's, not twice.
    let hits = k.scan("i want to kill myself forever");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].term, "kill myself");
    // Terms alone, for measuring them.
    assert!(k.scan_terms("i want it all to stop forever").is_empty());
}

#[test]
fn a_misspelt_word_is_read_as_the_librarys_and_the_alert_says_what_was_typed() {
    let k = defaults();
    let right = k.scan("i want to kill myself");
    let typed = k.scan("i want to kill myslef");
    assert!(!right.is_empty());
    assert_eq!(
        typed.iter().map(|h| &h.library).collect::<Vec<_>>(),
        right.iter().map(|h| &h.library).collect::<Vec<_>>()
    );
    assert!(
        typed[0].found.contains("typed: myslef \u{2192} myself"),
        "{:?}",
        typed[0]
    );
    // An English word one letter from a term is that word, not a misspelling.
    assert!(k.scan("change the setting on my phone").is_empty());
    assert!(k.scan("kind regards from year 9").is_empty());
    // Switched off, terms match only as written.
    assert!(
        defaults()
            .without_misspellings()
            .scan("i want to kill myslef")
            .is_empty()
    );
}

const BANDED: &str = r#"
[[keywords]]
id = "sexual"
concern = "sexual content"
severity = "inappropriate"
terms = ["porn"]

[[keywords.bands]]
name = "primary"
users = ["ks1", "ks2"]
terms = ["sexy"]
patterns = ['{kissing|snogging} {video|videos}']
"#;

#[test]
fn an_age_band_adds_terms_for_its_groups_only() {
    let k = compile(BANDED).unwrap();
    let bands = |text: &str, group: Option<&str>| -> Vec<Option<String>> {
        k.scan_for(text, group)
            .into_iter()
            .map(|h| h.band)
            .collect()
    };
    let primary = Some("primary".to_owned());
    assert_eq!(bands("sexy dance", Some("ks2")), vec![primary.clone()]);
    assert_eq!(bands("kissing videos", Some("ks1")), vec![primary]);
    assert!(bands("sexy dance", Some("pupils")).is_empty());
    assert!(bands("sexy dance", None).is_empty());
    assert!(k.scan("sexy dance").is_empty());
    // The library's own terms count for everyone, a band's groups included: a band only adds.
    assert_eq!(bands("porn", Some("ks2")), vec![None]);
    assert_eq!(bands("porn", Some("pupils")), vec![None]);
    let hit = &k.scan_for("sexy dance", Some("ks1"))[0];
    assert!(
        hit.matched().contains("[age band: primary]"),
        "{}",
        hit.matched()
    );
}

#[test]
fn a_band_for_a_group_the_policy_lacks_is_refused() {
    let err = compile(&BANDED.replace(r#""ks2"]"#, r#""year7"]"#)).unwrap_err();
    assert!(
        err.contains(r#"band "primary": users: "year7" is not a [[groups.users]] group"#),
        "{err}"
    );
    let err = compile(&BANDED.replace(r#"users = ["ks1", "ks2"]"#, "users = []")).unwrap_err();
    assert!(
        err.contains("a band needs a `name` and the `users`"),
        "{err}"
    );
}
