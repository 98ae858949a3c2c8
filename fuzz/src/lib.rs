//! The bodies of the fuzz targets: one function per parser of input that a monitored device
//! controls. `fuzz_targets/*.rs` hand libFuzzer's bytes to these (nightly, `cargo fuzz`); the
//! replay test in `tests/replay.rs` feeds them the corpus and seeded random inputs (stable).
//!
//! Every function takes arbitrary bytes, calls the real code, and panics only when the code
//! panics or breaks one of the promises checked here (budgets, fixpoints, no copy left behind).

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use invigilator_agent::sources::browsing::{
    Browser, CheckpointReader,
    profiles::Profile,
    search,
    snapshot::ReadLimits,
    tracker::{Context, Tracker},
    url_clean::{MAX_SEARCH, MAX_TITLE, MAX_URL, clean_url},
};
use invigilator_lists::{NormalUrl, normalise, normalise_into};
use invigilator_policy::{AgentContext, DEFAULT_POLICY, Policy};
use invigilator_proto::limits;
use invigilator_proto::v1::{BrowsingVisit, Event, EventBatch, ProcessExec, event::Kind};
use prost::Message;

/// Kernel uevents (`NETLINK_KOBJECT_UEVENT` datagrams, whose variables a USB device chooses).
pub fn uevent(data: &[u8]) {
    use invigilator_agent::platform::linux::uevent::parse;
    match parse(data) {
        Ok(e) => {
            assert!(e.devpath.starts_with('/'), "{e:?}");
            assert!(!e.action.as_str().is_empty());
            // The parser promises header and variables agree.
            if let Some(a) = e.get("ACTION") {
                assert_eq!(a, e.action.as_str());
            }
            if let Some(d) = e.get("DEVPATH") {
                assert_eq!(d, e.devpath);
            }
            assert!(e.vars.iter().all(|(k, _)| !k.is_empty()));
            let _ = (e.seqnum(), e.subsystem(), e.devtype(), e.action.to_string());
        }
        Err(err) => {
            // Errors quote at most `QUOTE_MAX` bytes of the datagram, twice (escaped, so a
            // control character can take 10 bytes): never the whole datagram.
            assert!(err.to_string().len() < 2 * 64 * 10 + 200, "{err}");
        }
    }
}

/// Proc connector datagrams (netlink): every message, until the framing is lost.
pub fn proc_connector(data: &[u8]) {
    use invigilator_agent::platform::linux::proc_connector::parse;
    let mut count = 0usize;
    let mut failed = false;
    for message in parse(data) {
        assert!(!failed, "a message after an error");
        count += 1;
        // Each message takes at least a 16-byte netlink header: the iteration must end.
        assert!(
            count <= data.len() / 16 + 1,
            "{count} messages from {} bytes",
            data.len()
        );
        if let Err(e) = message {
            let _ = e.to_string();
            failed = true;
        }
    }
}

/// The eBPF exec program's ring-buffer records: the kernel writes them, but the paths and the
/// command line inside are a pupil's choosing, and the lengths in the header must be checked.
pub fn exec_record(data: &[u8]) {
    use invigilator_agent::platform::linux::exec_record::ExecRecord;
    match ExecRecord::parse(data) {
        Ok(r) => {
            // Every section came out of the record: nothing is longer than what was given.
            let exe = r.exe.as_ref().map_or(0, Vec::len);
            let cwd = r.cwd.as_ref().map_or(0, Vec::len);
            assert!(r.argv.len() <= data.len());
            // A path gains at most one '/' per component it was given (and "/" for none).
            assert!(exe <= 2 * data.len() + 1 && cwd <= 2 * data.len() + 1);
            assert!(r.comm.len() <= 16 && r.parent_comm.len() <= 16);
            assert!(
                r.truncated
                    .iter()
                    .all(|t| ["exe", "argv", "cwd"].contains(t))
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// /proc/PID/cmdline, status and stat: a process chooses its own arguments and name (comm),
/// which appear in all three.
pub fn procfs(data: &[u8]) {
    use invigilator_agent::platform::linux::procfs::{parse_cmdline, parse_stat, parse_status};
    if let Some((argv, cut)) = parse_cmdline(data) {
        assert!(argv.len() <= limits::ARGV_COUNT);
        assert!(argv.iter().all(|a| a.len() <= limits::ARG));
        assert!(argv.iter().map(String::len).sum::<usize>() <= limits::ARGV_TOTAL);
        // Nothing cut and valid UTF-8: the arguments are the command line, exactly.
        if !cut && let Ok(text) = std::str::from_utf8(data) {
            let text = text.strip_suffix('\0').unwrap_or(text);
            assert_eq!(argv.join("\0"), text);
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = parse_status(&text);
    if let Some(stat) = parse_stat(&text) {
        assert!(stat.comm.len() < text.len());
    }
}

/// Windows ETW ProcessStart payloads: first byte the event version, the rest the payload.
pub fn etw_layout(data: &[u8]) {
    use invigilator_agent::platform::windows::etw_layout::{nt_to_dos_path, parse_process_start};
    let Some((&version, payload)) = data.split_first() else {
        return;
    };
    let devices = [
        (r"\Device\HarddiskVolume3".to_owned(), "C:".to_owned()),
        (r"\Device\HarddiskVolume10".to_owned(), r"D:\".to_owned()),
        (r"\SystemRoot".to_owned(), r"C:\Windows".to_owned()),
        (String::new(), "X:".to_owned()),
        ("\\Device\\Ünï".to_owned(), "E:".to_owned()),
    ];
    match parse_process_start(version, payload) {
        Ok(p) => {
            assert_eq!(p.version, version);
            let _ = p.create_time_unix_us();
            let _ = nt_to_dos_path(&p.image_name, &devices);
            assert_eq!(p.flags.is_some(), version >= 1);
            assert_eq!(p.package_full_name.is_some(), version >= 2);
            assert_eq!(p.sequence_number.is_some(), version >= 3);
            assert_eq!(p.security_mitigations.is_some(), version >= 4);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    // Paths and device names from the input itself.
    let text = String::from_utf8_lossy(payload);
    let (device, path) = text.split_once('|').unwrap_or(("", &text));
    let _ = nt_to_dos_path(path, &[(device.to_owned(), "Z:".to_owned())]);
}

/// A history database file as the pupil left it. Byte 0: bit 0 Firefox (else Chromium), bit 1
/// a companion file follows the database (bit 2: a rollback journal, else a WAL), its start
/// given by bytes 1..5 (little-endian, modulo the length). The rest is the database.
pub fn history(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let browser = if flags & 1 == 1 {
        Browser::Firefox
    } else {
        Browser::Chromium
    };
    let (db, companion) = if flags & 2 == 2 && rest.len() >= 4 {
        let (len, rest) = rest.split_at(4);
        let at = u32::from_le_bytes(len.try_into().unwrap()) as usize % (rest.len() + 1);
        let (db, c) = rest.split_at(at);
        let suffix = if flags & 4 == 4 { "-journal" } else { "-wal" };
        (db, Some((suffix, c)))
    } else {
        (rest, None)
    };
    read_history(browser, |path| {
        std::fs::write(path, db).unwrap();
        if let Some((suffix, bytes)) = companion {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            std::fs::write(p, bytes).unwrap();
        }
    });
}

/// One SQL value, of any type; `Special` picks the extremes a hostile row would try.
#[derive(Debug, Arbitrary)]
enum Value {
    Null,
    Int(i64),
    Special(u8),
    Real(f64),
    Text(String),
    Url(Url),
    Blob(Vec<u8>),
}

/// Hostile-looking URLs: long, with credentials, searches, odd schemes.
#[derive(Debug, Arbitrary)]
struct Url {
    scheme: u8,
    userinfo: Option<String>,
    host: u8,
    path: String,
    search: Option<String>,
    repeat: u16,
}

const SPECIALS: [i64; 9] = [
    i64::MIN,
    i64::MAX,
    0,
    -1,
    1,
    11_644_473_600_000_000,
    13_439_805_353_857_094,
    1_795_331_753_857_094,
    i64::MIN + 1,
];

impl Value {
    fn to_sql(&self) -> rusqlite::types::Value {
        use rusqlite::types::Value as V;
        match self {
            Value::Null => V::Null,
            Value::Int(i) => V::Integer(*i),
            Value::Special(i) => V::Integer(SPECIALS[usize::from(*i) % SPECIALS.len()]),
            Value::Real(f) => V::Real(*f),
            Value::Text(s) => V::Text(s.clone()),
            Value::Url(u) => V::Text(u.render()),
            Value::Blob(b) => V::Blob(b.clone()),
        }
    }
}

impl Url {
    fn render(&self) -> String {
        let scheme = [
            "https",
            "http",
            "ftp",
            "file",
            "data",
            "javascript",
            "chrome",
            "about",
        ][usize::from(self.scheme) % 8];
        let host = [
            "www.google.com",
            "www.google.co.uk",
            "bing.com",
            "duckduckgo.com",
            "uk.search.yahoo.com",
            "www.youtube.com",
            "www.ecosia.org",
            "example.test",
            "[::1]",
            "0x7f.1",
            "xn--nxasmq6b.test",
            "",
        ][usize::from(self.host) % 12];
        let path = self.path.repeat(usize::from(self.repeat % 64).max(1));
        let mut url = format!("{scheme}://");
        if let Some(u) = &self.userinfo {
            url.push_str(u);
            url.push('@');
        }
        url.push_str(host);
        url.push_str(&path);
        if let Some(s) = &self.search {
            url.push_str("/search?q=");
            url.push_str(s);
        }
        url
    }
}

#[derive(Debug, Arbitrary)]
enum Shape {
    /// The browsers' real schemas.
    Real,
    /// The columns without types: any value in any column, ids not unique.
    Untyped,
    /// The visits table is a view over the real one.
    VisitsView,
    /// The URL table is a view.
    UrlsView,
    /// No URL table at all.
    NoUrls,
    /// Tables WITHOUT ROWID with text keys.
    WithoutRowid,
}

#[derive(Debug, Arbitrary)]
struct UrlRow {
    id: Value,
    url: Value,
    title: Value,
}

#[derive(Debug, Arbitrary)]
struct VisitRow {
    id: Value,
    url: Value,
    time: Value,
    transition: Value,
}

#[derive(Debug, Arbitrary)]
struct Rows {
    firefox: bool,
    wal: bool,
    shape: Shape,
    urls: Vec<UrlRow>,
    visits: Vec<VisitRow>,
}

/// Chromium's `History` (tables the reader uses), as in the agent's test fixtures.
const CHROMIUM_TABLES: &str = "
CREATE TABLE urls(id INTEGER PRIMARY KEY AUTOINCREMENT,url LONGVARCHAR,title LONGVARCHAR,visit_count INTEGER DEFAULT 0 NOT NULL,typed_count INTEGER DEFAULT 0 NOT NULL,last_visit_time INTEGER NOT NULL DEFAULT 0,hidden INTEGER DEFAULT 0 NOT NULL);
CREATE TABLE visits(id INTEGER PRIMARY KEY AUTOINCREMENT,url INTEGER NOT NULL,visit_time INTEGER NOT NULL,from_visit INTEGER,external_referrer_url TEXT,transition INTEGER DEFAULT 0 NOT NULL,segment_id INTEGER,visit_duration INTEGER DEFAULT 0 NOT NULL);
CREATE INDEX visits_time_index ON visits (visit_time);
";

/// Firefox's `places.sqlite` (tables the reader uses), as in the agent's test fixtures.
const FIREFOX_TABLES: &str = "
CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url LONGVARCHAR, title LONGVARCHAR, rev_host LONGVARCHAR, visit_count INTEGER DEFAULT 0, hidden INTEGER DEFAULT 0 NOT NULL, typed INTEGER DEFAULT 0 NOT NULL, frecency INTEGER DEFAULT -1 NOT NULL, last_visit_date INTEGER, guid TEXT);
CREATE TABLE moz_historyvisits (id INTEGER PRIMARY KEY, from_visit INTEGER, place_id INTEGER, visit_date INTEGER, visit_type INTEGER, session INTEGER, source INTEGER DEFAULT 0 NOT NULL);
CREATE INDEX moz_historyvisits_dateindex ON moz_historyvisits (visit_date);
";

/// Names of (visits table, its url column, its time column, its transition column, URL table).
fn names(firefox: bool) -> [&'static str; 5] {
    if firefox {
        [
            "moz_historyvisits",
            "place_id",
            "visit_date",
            "visit_type",
            "moz_places",
        ]
    } else {
        ["visits", "url", "visit_time", "transition", "urls"]
    }
}

fn schema(shape: &Shape, firefox: bool) -> String {
    let [visits, url, time, transition, urls] = names(firefox);
    let real = if firefox {
        FIREFOX_TABLES
    } else {
        CHROMIUM_TABLES
    };
    match shape {
        Shape::Real => real.to_owned(),
        Shape::Untyped => format!(
            "CREATE TABLE {visits}(id, {url}, {time}, {transition});
             CREATE TABLE {urls}(id, url, title);"
        ),
        Shape::VisitsView => format!(
            "CREATE TABLE v_real(id, {url}, {time}, {transition});
             CREATE VIEW {visits} AS SELECT * FROM v_real;
             CREATE TABLE {urls}(id, url, title);"
        ),
        Shape::UrlsView => format!(
            "CREATE TABLE {visits}(id INTEGER PRIMARY KEY, {url}, {time}, {transition});
             CREATE TABLE u_real(id, url, title);
             CREATE VIEW {urls} AS SELECT * FROM u_real;"
        ),
        Shape::NoUrls => format!("CREATE TABLE {visits}(id, {url}, {time}, {transition});"),
        Shape::WithoutRowid => format!(
            "CREATE TABLE {visits}(id TEXT PRIMARY KEY, {url}, {time}, {transition}) WITHOUT ROWID;
             CREATE TABLE {urls}(id TEXT PRIMARY KEY, url, title) WITHOUT ROWID;"
        ),
    }
}

/// Structure-aware: a real SQLite history database built from arbitrary rows (hostile URLs and
/// titles, extreme and mistyped times, views instead of tables), read by the agent's reader.
pub fn history_rows(data: &[u8]) {
    let Ok(rows) = Rows::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let browser = if rows.firefox {
        Browser::Firefox
    } else {
        Browser::Chromium
    };
    let [visits, url_col, time_col, transition_col, urls] = names(rows.firefox);
    let (visits, urls) = match rows.shape {
        Shape::VisitsView => ("v_real", urls),
        Shape::UrlsView => (visits, "u_real"),
        _ => (visits, urls),
    };
    // Kept open until the reader is done, so an uncheckpointed WAL is what it must read.
    let mut writer = None;
    read_history(browser, |path| {
        let c = rusqlite::Connection::open(path).unwrap();
        if rows.wal {
            c.pragma_update(None, "journal_mode", "WAL").unwrap();
            c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        }
        // One transaction without fsync: the database is written for one read, not kept.
        c.pragma_update(None, "synchronous", "OFF").unwrap();
        c.execute_batch(&schema(&rows.shape, rows.firefox)).unwrap();
        c.execute_batch("BEGIN").unwrap();
        let insert_url = format!("INSERT INTO {urls}(id, url, title) VALUES (?1, ?2, ?3)");
        let insert_visit = format!(
            "INSERT INTO {visits}(id, {url_col}, {time_col}, {transition_col}) VALUES (?1, ?2, ?3, ?4)"
        );
        for u in rows.urls.iter().take(64) {
            // Rows the schema refuses (a text id in an INTEGER PRIMARY KEY...) are left out.
            let _ = c.execute(
                &insert_url,
                [u.id.to_sql(), u.url.to_sql(), u.title.to_sql()],
            );
        }
        for v in rows.visits.iter().take(64) {
            let _ = c.execute(
                &insert_visit,
                [
                    v.id.to_sql(),
                    v.url.to_sql(),
                    v.time.to_sql(),
                    v.transition.to_sql(),
                ],
            );
        }
        c.execute_batch("COMMIT").unwrap();
        writer = Some(c);
    });
    drop(writer);
}

/// Writes a profile's database with `write(path)` and reads it as the agent does: snapshot,
/// table checks, first-sight cursor, every page of visits; a second read on the cursor; a
/// restarted reader on the stored cursor. Checks every event's budgets, and that no copy of
/// the history is left in the agent's directory.
fn read_history(browser: Browser, write: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let profile_dir = dir.path().join("Default");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&profile_dir).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let profile = Profile::at(browser, profile_dir, "pupil".into());
    write(&profile.db());

    let (tx, mut rx) = invigilator_agent::sources::channel(1 << 20);
    let last = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let stored = std::sync::Arc::clone(&last);
    let reader: CheckpointReader = Box::new(move |_| Ok(stored.lock().unwrap().clone()));
    let ctx = Context {
        hostname: "ict-07",
        work_dir: &work,
        limits: ReadLimits {
            max_bytes: 64 * 1024 * 1024,
            deadline: Duration::from_millis(500),
        },
        // Far enough back for the seeds' visits (2026) and most hostile times.
        backfill: Duration::from_secs(60 * 365 * 24 * 3600),
        checkpoints: &reader,
        tx: &tx,
    };
    let check = |rx: &mut invigilator_agent::sources::EventRx| {
        assert_eq!(
            std::fs::read_dir(&work).unwrap().count(),
            0,
            "a copy of the history was left behind"
        );
        while let Ok(o) = rx.try_recv() {
            if let Some(cp) = o.checkpoint {
                *last.lock().unwrap() = Some(cp.value);
            }
            let Some(mut event) = o.event else { continue };
            if let Some(Kind::Browsing(b)) = &event.kind {
                assert!(b.url.len() <= MAX_URL, "{}", b.url.len());
                assert!(b.title.len() <= MAX_TITLE);
                assert!(b.search_terms.len() <= MAX_SEARCH);
                if b.action == "visit"
                    && let Ok(u) = url::Url::parse(&b.url)
                {
                    assert!(
                        u.username().is_empty() && u.password().is_none(),
                        "credentials kept: {}",
                        b.url
                    );
                }
            }
            limits::enforce(&mut event);
            assert!(event.encoded_len() <= limits::MAX_EVENT_BYTES);
        }
    };
    let mut t = Tracker::new(profile.clone());
    let _ = t.sync(&ctx);
    check(&mut rx);
    let _ = t.sync(&ctx);
    check(&mut rx);
    // A restarted agent: the cursor comes back from the (last stored) checkpoint.
    let mut t = Tracker::new(profile);
    let _ = t.sync(&ctx);
    check(&mut rx);
}

/// The collector's URL normaliser (category lists), on any text.
pub fn url_normalise(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(once) = normalise(&text) else {
        return;
    };
    assert!(once.as_str().is_ascii(), "{:?}", once.as_str());
    assert!(!once.host().is_empty());
    assert!(once.path().starts_with('/'), "{:?}", once.as_str());
    assert!(once.stripped().len() <= once.as_str().len());
    let _ = once.decoded();
    // The module's promise: normalising is a fixpoint.
    let twice = normalise(once.as_str())
        .unwrap_or_else(|e| panic!("normal form {:?} of {text:?}: {e}", once.as_str()));
    assert_eq!(
        (twice.as_str(), twice.www_prefix()),
        (once.as_str(), once.www_prefix()),
        "input {text:?}"
    );
    // Reusing a buffer gives the same answer.
    let mut reused = NormalUrl::default();
    normalise_into("http://previous.example/x?y", &mut reused).unwrap();
    normalise_into(&text, &mut reused).unwrap();
    assert_eq!(reused, once, "input {text:?}");
}

/// The compiled default policy (what `init` writes).
fn default_policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| Policy::parse(DEFAULT_POLICY).expect("the default policy compiles"))
}

/// A fixed, school-day time (2026-11-23 10:00 UTC, a Monday).
const SCHOOL_DAY_US: i64 = 1_795_428_000_000_000;

/// Search terms and URL cleaning on the agent, then the collector's keyword libraries and web
/// rules on the visit.
pub fn search_terms(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let found = search::extract(&raw);
    if let Some(s) = &found {
        assert!(!s.terms.is_empty());
        assert!(s.terms.len() <= MAX_SEARCH);
    }
    let url = clean_url(&raw);
    assert!(url.len() <= MAX_URL);
    if let Ok(u) = url::Url::parse(&url) {
        assert!(
            u.username().is_empty() && u.password().is_none(),
            "credentials kept: {raw:?} -> {url:?}"
        );
    }
    let event = Event {
        seq: 1,
        observed_at_us: SCHOOL_DAY_US,
        hostname: "ict-07".into(),
        user: "pupil".into(),
        kind: Some(Kind::Browsing(BrowsingVisit {
            action: "visit".into(),
            url,
            title: raw.chars().take(200).collect(),
            search_terms: found.as_ref().map(|s| s.terms.clone()).unwrap_or_default(),
            search_engine: found.map(|s| s.engine.to_owned()).unwrap_or_default(),
            browser: "chromium".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    evaluate(default_policy(), &event);
}

fn evaluate(policy: &Policy, event: &Event) {
    let _ = policy.redacted(event);
    let ctx = AgentContext {
        agent_id: "agent-1",
        group: "pupils",
        user_logged_on_elsewhere: vec!["ict-08".into()],
        logged_on: Vec::new(),
    };
    for alert in policy.evaluate(&ctx, event) {
        let _ = format!("{alert:?}");
    }
}

/// The collector's policy file (TOML, written by staff but parsed in full at every reload).
pub fn policy_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::parse(text) else {
        return;
    };
    let _ = policy.missing_categories();
    for event in sample_events() {
        evaluate(&policy, &event);
    }
}

fn sample_events() -> [Event; 2] {
    let base = Event {
        seq: 1,
        observed_at_us: SCHOOL_DAY_US,
        hostname: "ict-07".into(),
        user: "pupil".into(),
        ..Default::default()
    };
    [
        Event {
            kind: Some(Kind::Process(ProcessExec {
                pid: 4242,
                exe: "/usr/bin/tor".into(),
                name: "tor".into(),
                argv: vec!["tor".into(), "--quiet".into()],
                ..Default::default()
            })),
            ..base.clone()
        },
        Event {
            kind: Some(Kind::Browsing(BrowsingVisit {
                action: "visit".into(),
                url: "https://www.google.com/search?q=how+to+bypass+the+filter".into(),
                title: "proxy games unblocked".into(),
                search_terms: "how to bypass the filter".into(),
                search_engine: "google".into(),
                ..Default::default()
            })),
            ..base
        },
    ]
}

/// An `EventBatch` as an agent sends it: decoded, held to the budgets, validated, then each
/// event redacted and evaluated under the default policy, as the collector's ingest and
/// committer do (without the store).
pub fn batch(data: &[u8]) {
    let Ok(mut batch) = EventBatch::decode(data) else {
        return;
    };
    for event in &mut batch.events {
        limits::enforce(event);
        assert!(
            event.encoded_len() <= limits::MAX_EVENT_BYTES,
            "{} bytes after enforce",
            event.encoded_len()
        );
    }
    let Ok(up_to) = invigilator_collector::ingest::validate(&batch) else {
        return;
    };
    assert_eq!(up_to, batch.events.last().map_or(0, |e| e.seq));
    // The collector's one trusted time: whatever the device claimed lands in the window.
    let window = invigilator_collector::event_time::TimeWindow {
        offline_allowance: std::time::Duration::from_secs(30 * 86_400),
        clock_skew: std::time::Duration::from_secs(300),
    };
    for event in &mut batch.events {
        window.apply(event, SCHOOL_DAY_US);
        let offset = event.observed_at_us - SCHOOL_DAY_US;
        assert!(
            (-30 * 86_400_000_000..=300_000_000).contains(&offset),
            "{offset}"
        );
        evaluate(default_policy(), event);
    }
}

/// A target's body: any bytes in, a panic only for a bug.
pub type Target = fn(&[u8]);

/// Every target by name, for the replay test and the scripts.
/// An upload to the Chromebook endpoint, as a device would post it: parsed, and its records
/// checked and numbered as the collector does before anything is stored.
pub fn extension_upload(data: &[u8]) {
    use invigilator_collector::extension::upload::{self, Upload};
    let Ok(u) = serde_json::from_slice::<Upload>(data) else {
        return;
    };
    let lane = (u.lane % 4) as u32 + 1;
    let sent = u.visits.len();
    let checked = upload::check(lane, u.visits, "cb-07", "pupil", SCHOOL_DAY_US);
    assert_eq!(checked.events.len(), checked.ids.len());
    assert!(checked.events.len() + checked.rejected.len() <= sent);
    let mut last = 0;
    for e in &checked.events {
        assert!(e.seq > last, "sequences increase: {} after {last}", e.seq);
        assert_eq!(e.seq >> 32, u64::from(lane), "in the upload's lane");
        assert!(e.seq & 0xffff_ffff > 0);
        last = e.seq;
        let mut e = e.clone();
        limits::enforce(&mut e);
        assert!(e.encoded_len() <= limits::MAX_EVENT_BYTES);
        if let Some(Kind::Browsing(b)) = &e.kind {
            assert!(b.url.len() <= MAX_URL && b.title.len() <= MAX_TITLE);
            let scheme = url::Url::parse(&b.url).map(|u| u.scheme().to_owned());
            assert!(
                matches!(scheme.as_deref(), Ok("http" | "https")),
                "a web address only: {}",
                b.url
            );
        }
    }
    for r in checked.rejected.iter().map(|r| &r.id).chain(&checked.ids) {
        assert!(
            !r.is_empty()
                && r.len() <= 64
                && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "an id echoed to the device: {r:?}"
        );
    }
}

pub const TARGETS: &[(&str, Target)] = &[
    ("uevent", uevent),
    ("proc_connector", proc_connector),
    ("exec_record", exec_record),
    ("procfs", procfs),
    ("etw_layout", etw_layout),
    ("history", history),
    ("history_rows", history_rows),
    ("url_normalise", url_normalise),
    ("search_terms", search_terms),
    ("policy_file", policy_file),
    ("batch", batch),
    ("extension_upload", extension_upload),
];
