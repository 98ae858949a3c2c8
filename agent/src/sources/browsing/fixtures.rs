//! Test fixtures: history databases with the browsers' real schemas, as dumped from the
//! `History` of Debian's Chromium 156 and the `places.sqlite` of Debian's Firefox ESR 153 run
//! headless on this machine (`SELECT sql FROM sqlite_master`, the tables the reader uses).

use rusqlite::Connection;
use std::path::Path;

pub const CHROMIUM_SCHEMA: &str = "
CREATE TABLE meta(key LONGVARCHAR NOT NULL UNIQUE PRIMARY KEY, value LONGVARCHAR);
CREATE TABLE urls(id INTEGER PRIMARY KEY AUTOINCREMENT,url LONGVARCHAR,title LONGVARCHAR,visit_count INTEGER DEFAULT 0 NOT NULL,typed_count INTEGER DEFAULT 0 NOT NULL,last_visit_time INTEGER NOT NULL,hidden INTEGER DEFAULT 0 NOT NULL);
CREATE TABLE visits(id INTEGER PRIMARY KEY AUTOINCREMENT,url INTEGER NOT NULL,visit_time INTEGER NOT NULL,from_visit INTEGER,external_referrer_url TEXT,transition INTEGER DEFAULT 0 NOT NULL,segment_id INTEGER,visit_duration INTEGER DEFAULT 0 NOT NULL,incremented_omnibox_typed_score BOOLEAN DEFAULT FALSE NOT NULL,opener_visit INTEGER,originator_cache_guid TEXT,originator_visit_id INTEGER,originator_from_visit INTEGER,originator_opener_visit INTEGER,is_known_to_sync BOOLEAN DEFAULT FALSE NOT NULL,consider_for_ntp_most_visited BOOLEAN DEFAULT FALSE NOT NULL,visited_link_id INTEGER DEFAULT 0 NOT NULL,app_id TEXT);
CREATE INDEX visits_url_index ON visits (url);
CREATE INDEX visits_from_index ON visits (from_visit);
CREATE INDEX visits_time_index ON visits (visit_time);
CREATE INDEX visits_originator_id_index ON visits (originator_visit_id);
CREATE INDEX urls_url_index ON urls (url);
INSERT INTO meta VALUES ('mmap_status', '-1'), ('version', '70'), ('last_compatible_version', '16');
";

pub const FIREFOX_SCHEMA: &str = "
PRAGMA user_version = 86;
CREATE TABLE moz_origins ( id INTEGER PRIMARY KEY, prefix TEXT NOT NULL, host TEXT NOT NULL, frecency INTEGER NOT NULL, recalc_frecency INTEGER NOT NULL DEFAULT 0, alt_frecency INTEGER, recalc_alt_frecency INTEGER NOT NULL DEFAULT 0, block_until_ms INTEGER, block_pages_until_ms INTEGER, UNIQUE (prefix, host) );
CREATE TABLE moz_places (   id INTEGER PRIMARY KEY, url LONGVARCHAR, title LONGVARCHAR, rev_host LONGVARCHAR, visit_count INTEGER DEFAULT 0, hidden INTEGER DEFAULT 0 NOT NULL, typed INTEGER DEFAULT 0 NOT NULL, frecency INTEGER DEFAULT -1 NOT NULL, last_visit_date INTEGER , guid TEXT, foreign_count INTEGER DEFAULT 0 NOT NULL, url_hash INTEGER DEFAULT 0 NOT NULL , description TEXT, preview_image_url TEXT, site_name TEXT, origin_id INTEGER REFERENCES moz_origins(id), recalc_frecency INTEGER NOT NULL DEFAULT 0, alt_frecency INTEGER, recalc_alt_frecency INTEGER NOT NULL DEFAULT 0);
CREATE INDEX moz_places_url_hashindex ON moz_places (url_hash);
CREATE INDEX moz_places_hostindex ON moz_places (rev_host);
CREATE INDEX moz_places_visitcount ON moz_places (visit_count);
CREATE INDEX moz_places_frecencyindex ON moz_places (frecency);
CREATE INDEX moz_places_lastvisitdateindex ON moz_places (last_visit_date);
CREATE UNIQUE INDEX moz_places_guid_uniqueindex ON moz_places (guid);
CREATE INDEX moz_places_originidindex ON moz_places (origin_id);
CREATE INDEX moz_places_altfrecencyindex ON moz_places (alt_frecency);
CREATE TABLE moz_historyvisits (  id INTEGER PRIMARY KEY, from_visit INTEGER, place_id INTEGER, visit_date INTEGER, visit_type INTEGER, session INTEGER, source INTEGER DEFAULT 0 NOT NULL, triggeringPlaceId INTEGER);
CREATE INDEX moz_historyvisits_placedateindex ON moz_historyvisits (place_id, visit_date);
CREATE INDEX moz_historyvisits_fromindex ON moz_historyvisits (from_visit);
CREATE INDEX moz_historyvisits_dateindex ON moz_historyvisits (visit_date);
";

/// A Chromium `History` database, written the way Chromium writes it (rollback journal).
pub struct ChromiumDb(pub Connection);

impl ChromiumDb {
    pub fn create(path: &Path) -> Self {
        let c = Connection::open(path).unwrap();
        c.execute_batch(CHROMIUM_SCHEMA).unwrap();
        Self(c)
    }

    /// Records a visit as Chromium does: the URL row (reused if known), then the visit row.
    pub fn visit(&self, url: &str, title: &str, unix_us: i64, transition: i64) -> i64 {
        let t = super::chromium::from_unix_us(unix_us);
        let c = &self.0;
        let id: Option<i64> = c
            .query_row("SELECT id FROM urls WHERE url = ?1", [url], |r| r.get(0))
            .ok();
        let url_id = match id {
            Some(id) => {
                c.execute(
                    "UPDATE urls SET title = ?2, visit_count = visit_count + 1, last_visit_time = ?3 WHERE id = ?1",
                    rusqlite::params![id, title, t],
                )
                .unwrap();
                id
            }
            None => {
                c.execute(
                    "INSERT INTO urls(url, title, visit_count, last_visit_time) VALUES (?1, ?2, 1, ?3)",
                    rusqlite::params![url, title, t],
                )
                .unwrap();
                c.last_insert_rowid()
            }
        };
        c.execute(
            "INSERT INTO visits(url, visit_time, transition) VALUES (?1, ?2, ?3)",
            rusqlite::params![url_id, t, transition],
        )
        .unwrap();
        c.last_insert_rowid()
    }
}

/// A Firefox `places.sqlite` in WAL mode, like Firefox's; checkpoints off, so what the reader
/// sees must come from the copied -wal.
pub struct FirefoxDb(pub Connection);

impl FirefoxDb {
    pub fn create(path: &Path) -> Self {
        let c = Connection::open(path).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch(FIREFOX_SCHEMA).unwrap();
        c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        Self(c)
    }

    pub fn visit(&self, url: &str, title: &str, unix_us: i64, visit_type: i64) -> i64 {
        let c = &self.0;
        c.execute(
            "INSERT INTO moz_places(url, title, rev_host, visit_count, last_visit_date, guid) \
             VALUES (?1, ?2, '', 1, ?3, hex(randomblob(6)))",
            rusqlite::params![url, title, unix_us],
        )
        .unwrap();
        let place = c.last_insert_rowid();
        c.execute(
            "INSERT INTO moz_historyvisits(from_visit, place_id, visit_date, visit_type, session) \
             VALUES (0, ?1, ?2, ?3, 0)",
            rusqlite::params![place, unix_us, visit_type],
        )
        .unwrap();
        c.last_insert_rowid()
    }
}
