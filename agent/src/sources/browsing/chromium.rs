//! Chrome, Chromium, Edge and Brave: the `History` database.
//!
//! `visits` rows point at `urls` rows; `visit_time` counts microseconds since 1601-01-01 UTC
//! (Windows FILETIME's epoch, kept on every platform); the low byte of `transition` is the core
//! page-transition type (ui/base/page_transition_types.h), the high bits are qualifiers
//! (redirect chain, forward/back ...) that the policy does not need.

use super::history::Queries;

pub const QUERIES: Queries = Queries {
    tables: &["visits", "urls"],
    visits_after: "SELECT v.id, u.url, u.title, v.visit_time, v.transition \
                   FROM visits v LEFT JOIN urls u ON u.id = v.url \
                   WHERE v.id > ?1 ORDER BY v.id LIMIT ?2",
    max_id: "SELECT COALESCE(MAX(id), 0) FROM visits",
    time_of: "SELECT visit_time FROM visits WHERE id = ?1",
    first_id_after: "SELECT MIN(id) FROM visits WHERE visit_time > ?1",
    to_unix_us,
    from_unix_us,
    transition,
};

/// Microseconds between 1601-01-01 and 1970-01-01.
const EPOCH_DELTA_US: i64 = 11_644_473_600_000_000;

pub fn to_unix_us(raw: i64) -> i64 {
    raw.saturating_sub(EPOCH_DELTA_US)
}

pub fn from_unix_us(unix_us: i64) -> i64 {
    unix_us.saturating_add(EPOCH_DELTA_US)
}

/// The core transition's name, as in page_transition_types.h.
pub fn transition(raw: i64) -> &'static str {
    match raw & 0xFF {
        0 => "link",
        1 => "typed",
        2 => "auto_bookmark",
        3 => "auto_subframe",
        4 => "manual_subframe",
        5 => "generated",
        6 => "auto_toplevel",
        7 => "form_submit",
        8 => "reload",
        9 => "keyword",
        10 => "keyword_generated",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_transitions() {
        // A visit recorded by Chromium 156 here: 2026-11-22 07:15:53.857094 UTC.
        assert_eq!(to_unix_us(13_439_805_353_857_094), 1_795_331_753_857_094);
        assert_eq!(
            from_unix_us(to_unix_us(13_439_805_353_857_094)),
            13_439_805_353_857_094
        );
        assert_eq!(to_unix_us(EPOCH_DELTA_US), 0);
        // 0x30000001: typed, with the CHAIN_START | CHAIN_END qualifiers Chromium stored.
        assert_eq!(transition(805_306_369), "typed");
        assert_eq!(transition(0x0000_0000), "link");
        assert_eq!(transition(0x4000_0000 | 7), "form_submit");
        assert_eq!(transition(8), "reload");
        assert_eq!(transition(10), "keyword_generated");
        assert_eq!(transition(11), "other");
    }
}
