//! Firefox: `places.sqlite`.
//!
//! `moz_historyvisits` rows point at `moz_places` rows; `visit_date` is already microseconds
//! since the Unix epoch; `visit_type` is one of nsINavHistoryService's TRANSITION_* constants,
//! mapped here onto the names Chromium's transitions use so the policy sees one vocabulary.

use super::history::Queries;

pub const QUERIES: Queries = Queries {
    tables: &["moz_historyvisits", "moz_places"],
    visits_after: "SELECT v.id, p.url, p.title, v.visit_date, v.visit_type \
                   FROM moz_historyvisits v LEFT JOIN moz_places p ON p.id = v.place_id \
                   WHERE v.id > ?1 ORDER BY v.id LIMIT ?2",
    max_id: "SELECT COALESCE(MAX(id), 0) FROM moz_historyvisits",
    time_of: "SELECT visit_date FROM moz_historyvisits WHERE id = ?1",
    first_id_after: "SELECT MIN(id) FROM moz_historyvisits WHERE visit_date > ?1",
    to_unix_us: identity,
    from_unix_us: identity,
    transition,
};

fn identity(us: i64) -> i64 {
    us
}

/// nsINavHistoryService::TRANSITION_* to the shared names.
pub fn transition(raw: i64) -> &'static str {
    match raw {
        1 => "link",
        2 => "typed",
        3 => "auto_bookmark",
        4 => "embed",
        5 | 6 => "redirect",
        7 => "download",
        8 => "manual_subframe",
        9 => "reload",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        let names: Vec<_> = (0..=10).map(transition).collect();
        assert_eq!(
            names,
            [
                "other",
                "link",
                "typed",
                "auto_bookmark",
                "embed",
                "redirect",
                "redirect",
                "download",
                "manual_subframe",
                "reload",
                "other"
            ]
        );
        assert_eq!(
            (QUERIES.to_unix_us)(1_795_331_872_311_879),
            1_795_331_872_311_879
        );
    }
}
