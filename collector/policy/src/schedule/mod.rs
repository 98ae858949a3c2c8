//! School times: lesson periods per weekday, term dates and non-teaching days, in the school's
//! time zone, so that rules can apply "during lessons", "outside lessons" or always.
//!
//! Times are wall-clock times where the school is: a lesson at 09:00 is at 09:00 UTC in winter
//! and 08:00 UTC in British Summer Time. Events carry UTC microseconds; they are turned into
//! local time with the tz database, which knows every clock change.

#[cfg(test)]
mod tests;

use super::SpecError;
use chrono::{DateTime, Datelike, NaiveDate, Timelike};
use chrono_tz::Tz;
use serde::Deserialize;
use std::collections::BTreeSet;
use toml::Spanned;
use toml::value::Datetime;

/// Default school times, for the default policy: a `[school_times]` table.
pub const DEFAULT_SCHEDULE: &str = include_str!("../default_schedule.toml");

/// The time zone when the policy names none.
pub const DEFAULT_TIME_ZONE: Tz = chrono_tz::Europe::London;

const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// The `[school_times]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// A tz database name; `"Europe/London"` when absent.
    pub time_zone: Option<Spanned<String>>,
    /// Lesson periods, `"HH:MM-HH:MM"` in local time, from the start (included) to the end (not
    /// included): with `"09:00-10:00"`, 09:00:00 is in the lesson and 10:00:00 is not. Breaks
    /// and lunch are the gaps between periods. A day without periods has no lessons.
    #[serde(default)]
    pub monday: Vec<Spanned<String>>,
    #[serde(default)]
    pub tuesday: Vec<Spanned<String>>,
    #[serde(default)]
    pub wednesday: Vec<Spanned<String>>,
    #[serde(default)]
    pub thursday: Vec<Spanned<String>>,
    #[serde(default)]
    pub friday: Vec<Spanned<String>>,
    #[serde(default)]
    pub saturday: Vec<Spanned<String>>,
    #[serde(default)]
    pub sunday: Vec<Spanned<String>>,
    /// Terms (or half terms), first and last day included. No terms at all means every week
    /// is a school week; with terms, days outside all of them are holidays.
    #[serde(default)]
    pub terms: Vec<TermSpec>,
    /// Days inside terms without lessons: INSET days, bank holidays, closures.
    #[serde(default)]
    pub non_teaching_days: Vec<Spanned<Datetime>>,
}

/// One term: `{ name = "autumn 1", start = 2026-09-03, end = 2026-10-23 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TermSpec {
    /// For people reading the policy and its errors.
    #[serde(default)]
    pub name: Option<String>,
    pub start: Spanned<Datetime>,
    pub end: Spanned<Datetime>,
}

/// Compiled school times.
#[derive(Debug, Clone)]
pub struct Schedule {
    time_zone: Tz,
    /// By weekday from Monday: `[start, end)` in seconds after local midnight, sorted.
    periods: [Vec<(u32, u32)>; 7],
    /// Inclusive, sorted; empty means always in term.
    terms: Vec<(NaiveDate, NaiveDate)>,
    non_teaching: BTreeSet<NaiveDate>,
}

impl Default for Schedule {
    /// No lessons ever: "lessons" rules never apply, "outside-lessons" rules always do.
    fn default() -> Self {
        Self {
            time_zone: DEFAULT_TIME_ZONE,
            periods: Default::default(),
            terms: Vec::new(),
            non_teaching: BTreeSet::new(),
        }
    }
}

/// When a rule applies: `"lessons"`, `"outside-lessons"` or `"always"` (the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    Lessons,
    OutsideLessons,
    #[default]
    Always,
}

impl When {
    pub fn applies(&self, schedule: &Schedule, at_utc_us: i64) -> bool {
        match self {
            When::Lessons => schedule.is_lesson_time(at_utc_us),
            When::OutsideLessons => !schedule.is_lesson_time(at_utc_us),
            When::Always => true,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            When::Lessons => "lessons",
            When::OutsideLessons => "outside-lessons",
            When::Always => "always",
        }
    }
}

const OWNER: &str = "school_times";

/// `"HH:MM"` (or `"H:MM"`) to seconds after midnight; None unless 00:00 to 23:59.
fn time_of_day(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let digits = |x: &str, max: u32| {
        let ok = (1..=2).contains(&x.len()) && x.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| x.parse::<u32>().ok())
            .flatten()
            .filter(|&v| v <= max)
    };
    if m.len() != 2 {
        return None;
    }
    Some(digits(h, 23)? * 3600 + digits(m, 59)? * 60)
}

fn period(day: &str, raw: &Spanned<String>) -> Result<(u32, u32), SpecError> {
    let text = raw.get_ref();
    let fail = |why: String| SpecError::at(raw.span(), format!("{OWNER}: {day} {text:?}: {why}"));
    let (start, end) = text
        .split_once('-')
        .ok_or_else(|| fail("is not a period \"HH:MM-HH:MM\"".into()))?;
    let time = |t: &str| {
        time_of_day(t).ok_or_else(|| {
            fail(format!(
                "{:?} is not a time of day (HH:MM, from 00:00 to 23:59)",
                t.trim()
            ))
        })
    };
    let (start, end) = (time(start)?, time(end)?);
    if end <= start {
        return Err(fail("ends before it starts".into()));
    }
    Ok((start, end))
}

fn date(field: &str, raw: &Spanned<Datetime>) -> Result<NaiveDate, SpecError> {
    let v = raw.get_ref();
    let fail = || {
        SpecError::at(
            raw.span(),
            format!("{OWNER}: {field} {v}: must be a date such as 2026-09-03, without a time"),
        )
    };
    match (v.date, v.time, v.offset) {
        (Some(d), None, None) => {
            NaiveDate::from_ymd_opt(d.year.into(), d.month.into(), d.day.into()).ok_or_else(fail)
        }
        _ => Err(fail()),
    }
}

impl Schedule {
    pub fn compile(spec: &ScheduleSpec) -> Result<Self, SpecError> {
        let time_zone = match &spec.time_zone {
            None => DEFAULT_TIME_ZONE,
            Some(tz) => tz.get_ref().trim().parse::<Tz>().map_err(|_| {
                SpecError::at(
                    tz.span(),
                    format!(
                        "{OWNER}: time_zone {:?} is not a tz database name such as \"Europe/London\"",
                        tz.get_ref()
                    ),
                )
            })?,
        };
        let days = [
            &spec.monday,
            &spec.tuesday,
            &spec.wednesday,
            &spec.thursday,
            &spec.friday,
            &spec.saturday,
            &spec.sunday,
        ];
        let mut periods: [Vec<(u32, u32)>; 7] = Default::default();
        for ((name, list), out) in WEEKDAYS.iter().zip(days).zip(&mut periods) {
            let mut parsed = list
                .iter()
                .map(|raw| Ok((period(name, raw)?, raw)))
                .collect::<Result<Vec<_>, SpecError>>()?;
            parsed.sort_by_key(|&(p, _)| p);
            // Overlapping periods are almost always a typo ("10:20-11:00" for "11:20-12:00").
            for pair in parsed.windows(2) {
                let ((_, prev_end), prev) = pair[0];
                let ((start, _), raw) = pair[1];
                if start < prev_end {
                    return Err(SpecError::at(
                        raw.span(),
                        format!(
                            "{OWNER}: {name} {:?} overlaps {:?}",
                            raw.get_ref(),
                            prev.get_ref()
                        ),
                    ));
                }
            }
            *out = parsed.into_iter().map(|(p, _)| p).collect();
        }
        let mut terms = Vec::with_capacity(spec.terms.len());
        for t in &spec.terms {
            let label = match &t.name {
                Some(n) => format!("term {n:?}"),
                None => "term".to_owned(),
            };
            let (start, end) = (
                date(&format!("{label} start"), &t.start)?,
                date(&format!("{label} end"), &t.end)?,
            );
            if end < start {
                return Err(SpecError::at(
                    t.end.span(),
                    format!("{OWNER}: {label} ends ({end}) before it starts ({start})"),
                ));
            }
            terms.push((start, end, t.end.span(), label));
        }
        terms.sort_by_key(|t| t.0);
        for pair in terms.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if b.0 <= a.1 {
                return Err(SpecError::at(
                    b.2.clone(),
                    format!("{OWNER}: {} overlaps {}", b.3, a.3),
                ));
            }
        }
        let non_teaching = spec
            .non_teaching_days
            .iter()
            .map(|d| date("non_teaching_days", d))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            time_zone,
            periods,
            terms: terms.into_iter().map(|(s, e, ..)| (s, e)).collect(),
            non_teaching,
        })
    }

    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// True when some weekday has lessons; otherwise "lessons" rules can never apply.
    pub fn has_lessons(&self) -> bool {
        self.periods.iter().any(|p| !p.is_empty())
    }

    /// Whether the instant `at_utc_us` (microseconds since the Unix epoch, UTC) falls in a lesson
    /// where the school is: a date in a term, not a non-teaching day, within a lesson period of
    /// that weekday. Instants out of chrono's range are outside lessons.
    pub fn is_lesson_time(&self, at_utc_us: i64) -> bool {
        let Some(utc) = DateTime::from_timestamp_micros(at_utc_us) else {
            return false;
        };
        let local = utc.with_timezone(&self.time_zone);
        let day = local.date_naive();
        let seconds = local.num_seconds_from_midnight();
        let periods = &self.periods[local.weekday().num_days_from_monday() as usize];
        periods.iter().any(|&(s, e)| s <= seconds && seconds < e)
            && self.is_in_term(day)
            && !self.non_teaching.contains(&day)
    }

    fn is_in_term(&self, day: NaiveDate) -> bool {
        if self.terms.is_empty() {
            return true;
        }
        // The last term starting on or before `day` is the only one that can hold it, as terms
        // do not overlap.
        let i = self.terms.partition_point(|&(start, _)| start <= day);
        i > 0 && day <= self.terms[i - 1].1
    }
}
