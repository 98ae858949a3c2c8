use super::*;
use chrono::NaiveDateTime;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fragment {
    school_times: ScheduleSpec,
}

fn compile(text: &str) -> Result<Schedule, String> {
    let f: Fragment = toml::from_str(text).map_err(|e| e.to_string())?;
    Schedule::compile(&f.school_times).map_err(|e| e.render(text))
}

/// Microseconds since the epoch of a UTC time "YYYY-MM-DD HH:MM:SS".
fn utc(s: &str) -> i64 {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .unwrap()
        .and_utc()
        .timestamp_micros()
}

/// Lessons 09:00-10:00 and 10:20-12:00 on weekdays, terms around all four clock changes of
/// 2026 and 2027, an INSET day.
const SPEC: &str = r#"
[school_times]
time_zone = "Europe/London"
monday = ["09:00-10:00", "10:20-12:00"]
tuesday = ["09:00-10:00", "10:20-12:00"]
wednesday = ["09:00-10:00", "10:20-12:00"]
thursday = ["09:00-10:00", "10:20-12:00"]
friday = ["10:20-12:00", "09:00-10:00"]
terms = [
  { name = "one", start = 2026-01-05, end = 2026-12-18 },
  { name = "two", start = 2027-01-04, end = 2027-12-17 },
]
non_teaching_days = [2026-09-03]
"#;

fn lesson(s: &Schedule, at: &str) -> bool {
    s.is_lesson_time(utc(at))
}

#[test]
fn a_nine_oclock_lesson_is_at_nine_local_across_the_clock_changes() {
    let s = compile(SPEC).unwrap();
    // (Friday before, Monday after) each change; GMT is UTC, BST is UTC+1.
    for (gmt_day, bst_day) in [("2026-03-27", "2026-03-30"), ("2027-03-26", "2027-03-29")] {
        assert!(lesson(&s, &format!("{gmt_day} 09:00:00")), "{gmt_day}");
        assert!(!lesson(&s, &format!("{gmt_day} 08:00:00")), "{gmt_day}");
        assert!(lesson(&s, &format!("{bst_day} 08:00:00")), "{bst_day}");
        assert!(!lesson(&s, &format!("{bst_day} 07:59:59")), "{bst_day}");
        // 10:00 BST is break time.
        assert!(!lesson(&s, &format!("{bst_day} 09:00:00")), "{bst_day}");
    }
    for (bst_day, gmt_day) in [("2026-10-23", "2026-10-26"), ("2027-10-29", "2027-11-01")] {
        assert!(lesson(&s, &format!("{bst_day} 08:00:00")), "{bst_day}");
        assert!(!lesson(&s, &format!("{bst_day} 09:00:00")), "{bst_day}");
        assert!(!lesson(&s, &format!("{gmt_day} 08:00:00")), "{gmt_day}");
        assert!(lesson(&s, &format!("{gmt_day} 09:00:00")), "{gmt_day}");
        assert!(lesson(&s, &format!("{gmt_day} 09:59:59")), "{gmt_day}");
    }
}

#[test]
fn periods_include_their_start_and_exclude_their_end() {
    let s = compile(SPEC).unwrap();
    // Wednesday 2026-01-14, GMT.
    let nine = utc("2026-01-14 09:00:00");
    assert!(s.is_lesson_time(nine));
    assert!(!s.is_lesson_time(nine - 1));
    let ten = utc("2026-01-14 10:00:00");
    assert!(s.is_lesson_time(ten - 1));
    assert!(!s.is_lesson_time(ten));
    // Break, then the next period, then lunch.
    assert!(!lesson(&s, "2026-01-14 10:19:59"));
    assert!(lesson(&s, "2026-01-14 10:20:00"));
    assert!(!lesson(&s, "2026-01-14 12:00:00"));
    assert!(!lesson(&s, "2026-01-14 13:00:00"));
}

#[test]
fn weekends_holidays_and_inset_days_are_outside_lessons() {
    let s = compile(SPEC).unwrap();
    // Saturday and Sunday.
    assert!(!lesson(&s, "2026-01-17 09:30:00"));
    assert!(!lesson(&s, "2026-01-18 09:30:00"));
    // The last day of a term is in it; the next Monday is a holiday; so is the first school day
    // before the next term starts.
    assert!(lesson(&s, "2026-12-18 09:30:00"));
    assert!(!lesson(&s, "2026-12-21 09:30:00"));
    assert!(!lesson(&s, "2027-01-01 09:30:00"));
    assert!(lesson(&s, "2027-01-04 09:30:00"));
    assert!(!lesson(&s, "2027-12-20 09:30:00"));
    assert!(!lesson(&s, "2026-01-02 09:30:00"));
    // The INSET day (Thursday, BST) and the day after.
    assert!(!lesson(&s, "2026-09-03 08:30:00"));
    assert!(lesson(&s, "2026-09-04 08:30:00"));
}

#[test]
fn when_a_rule_applies() {
    let s = compile(SPEC).unwrap();
    let (lesson, saturday) = (utc("2026-01-14 09:30:00"), utc("2026-01-17 09:30:00"));
    assert!(When::Lessons.applies(&s, lesson));
    assert!(!When::Lessons.applies(&s, saturday));
    assert!(!When::OutsideLessons.applies(&s, lesson));
    assert!(When::OutsideLessons.applies(&s, saturday));
    assert!(When::Always.applies(&s, lesson) && When::Always.applies(&s, saturday));

    #[derive(Deserialize)]
    struct Rule {
        #[serde(default)]
        when: When,
    }
    let when = |t: &str| toml::from_str::<Rule>(t).map(|r| r.when);
    assert_eq!(when("when = \"lessons\"").unwrap(), When::Lessons);
    assert_eq!(
        when("when = \"outside-lessons\"").unwrap(),
        When::OutsideLessons
    );
    assert_eq!(when("when = \"always\"").unwrap(), When::Always);
    assert_eq!(when("").unwrap(), When::Always);
    assert!(when("when = \"lunch\"").is_err());
    assert_eq!(When::OutsideLessons.as_str(), "outside-lessons");
}

#[test]
fn time_zones_other_than_london_and_no_terms() {
    let s =
        compile("[school_times]\ntime_zone = \"America/New_York\"\nmonday = [\"09:00-15:00\"]\n")
            .unwrap();
    // Monday 2026-03-09, the day after the US change: 09:00 EDT is 13:00 UTC.
    assert!(lesson(&s, "2026-03-09 13:00:00"));
    assert!(!lesson(&s, "2026-03-09 12:59:59"));
    // Without terms every week is a school week.
    assert!(lesson(&s, "2026-08-10 13:00:00"));
    assert!(!lesson(&s, "2026-08-11 13:00:00"));
    assert_eq!(s.time_zone(), chrono_tz::America::New_York);
}

#[test]
fn no_school_times_means_no_lessons_and_no_panics() {
    let s = Schedule::default();
    assert!(!s.has_lessons());
    assert!(!s.is_lesson_time(utc("2026-01-14 09:30:00")));
    let s = compile(SPEC).unwrap();
    assert!(s.has_lessons());
    assert_eq!(s.time_zone(), DEFAULT_TIME_ZONE);
    for at in [i64::MIN, i64::MAX, 0, -1] {
        assert!(!s.is_lesson_time(at));
    }
    let s = Schedule::compile(&ScheduleSpec::default()).unwrap();
    assert_eq!(s.time_zone(), chrono_tz::Europe::London);
    assert!(!s.has_lessons());
}

#[test]
fn default_school_times_compile() {
    let s = compile(DEFAULT_SCHEDULE).unwrap_or_else(|e| panic!("default school times: {e}"));
    // Tuesday 8 September 2026, 09:00 BST; Saturday; lunch; the INSET day; half term; Christmas.
    assert!(lesson(&s, "2026-09-08 08:00:00"));
    assert!(!lesson(&s, "2026-09-12 08:00:00"));
    assert!(!lesson(&s, "2026-09-08 11:45:00"));
    assert!(!lesson(&s, "2026-09-03 08:00:00"));
    assert!(!lesson(&s, "2026-10-27 09:00:00"));
    assert!(!lesson(&s, "2026-12-23 09:00:00"));
    assert!(lesson(&s, "2027-07-21 13:30:00"));
    assert!(!lesson(&s, "2027-07-22 13:30:00"));
}

#[test]
fn errors_point_at_the_line() {
    let bad = |from: &str, to: &str| compile(&SPEC.replacen(from, to, 1)).unwrap_err();
    assert_eq!(
        bad("\"09:00-10:00\"", "\"25:00-26:00\""),
        r#"line 4: school_times: monday "25:00-26:00": "25:00" is not a time of day (HH:MM, from 00:00 to 23:59)"#
    );
    assert_eq!(
        bad("\"09:00-10:00\"", "\"09:60-10:00\""),
        r#"line 4: school_times: monday "09:60-10:00": "09:60" is not a time of day (HH:MM, from 00:00 to 23:59)"#
    );
    assert_eq!(
        bad("\"09:00-10:00\"", "\"9am\""),
        r#"line 4: school_times: monday "9am": is not a period "HH:MM-HH:MM""#
    );
    assert_eq!(
        bad("\"09:00-10:00\"", "\"10:00-09:00\""),
        r#"line 4: school_times: monday "10:00-09:00": ends before it starts"#
    );
    assert_eq!(
        bad("\"10:20-12:00\"", "\"09:50-12:00\""),
        r#"line 4: school_times: monday "09:50-12:00" overlaps "09:00-10:00""#
    );
    // Overlaps are found whatever the order periods are written in.
    assert_eq!(
        bad("friday = [\"10:20-12:00\"", "friday = [\"08:20-09:01\""),
        r#"line 8: school_times: friday "09:00-10:00" overlaps "08:20-09:01""#
    );
    assert_eq!(
        bad("\"Europe/London\"", "\"Europe/Londres\""),
        r#"line 3: school_times: time_zone "Europe/Londres" is not a tz database name such as "Europe/London""#
    );
    assert_eq!(
        bad("end = 2026-12-18", "end = 2025-12-18"),
        r#"line 10: school_times: term "one" ends (2025-12-18) before it starts (2026-01-05)"#
    );
    assert_eq!(
        bad("end = 2026-12-18", "end = 2027-01-04"),
        r#"line 11: school_times: term "two" overlaps term "one""#
    );
    assert_eq!(
        bad("[2026-09-03]", "[2026-09-03T08:00:00]"),
        r#"line 13: school_times: non_teaching_days 2026-09-03T08:00:00: must be a date such as 2026-09-03, without a time"#
    );
    // Unknown weekdays and fields, and malformed dates, are caught by the TOML reader, with
    // their line.
    let unknown = bad("wednesday =", "wednsday =");
    assert!(
        unknown.contains("line 6") && unknown.contains("unknown field"),
        "{unknown}"
    );
    let not_a_date = bad("[2026-09-03]", "[\"3 Sept\"]");
    assert!(not_a_date.contains("line 13"), "{not_a_date}");
    let no_day = bad("[2026-09-03]", "[2026-02-30]");
    assert!(no_day.contains("line 13"), "{no_day}");
}
