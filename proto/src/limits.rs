//! Byte budgets for what a device's users can write into an event.
//!
//! Command lines, page titles, URLs and file names are chosen by the people being monitored, who
//! may want to hide or to break delivery: one `execve` can carry megabytes of arguments, and a
//! page title can be anything. Every string field has a budget; the agent applies them before an
//! event is spooled (so no single event can outgrow a batch) and the collector applies them again
//! on receipt (a rogue or old agent is held to the same budgets). A cut field is named in
//! `Event.truncated`, so what is stored is honestly marked as incomplete.
//!
//! The budgets are generous for real use (a 32 KiB command line, an 8 KiB URL) and together
//! keep any event under [`MAX_EVENT_BYTES`], which is far below [`crate::MAX_MESSAGE_BYTES`].

use crate::v1::event::Kind;
use crate::v1::{Event, Gap};
use prost::Message;

/// The largest encoded event either side keeps. Larger ones (which the field budgets below make
/// impossible for the kinds we know) are replaced by a gap event that says so.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Short names: host, user, program name, browser, session fields, USB strings.
pub const NAME: usize = 256;
/// Paths: an executable, a USB device path, a browser profile.
pub const PATH: usize = 4096;
/// One command-line argument.
pub const ARG: usize = 4096;
/// The whole command line, all arguments together.
pub const ARGV_TOTAL: usize = 32 * 1024;
/// Arguments kept, at most.
pub const ARGV_COUNT: usize = 1024;
/// A visited address.
pub const URL: usize = 8 * 1024;
/// A page title, search terms, a free-text reason or detail.
pub const TEXT: usize = 1024;
/// Entries of a repeated short field (USB interface classes, block devices, `unavailable`).
pub const LIST_COUNT: usize = 64;

/// Cuts `s` to at most `max` bytes at a character boundary. True if it was cut.
pub fn cut(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

/// Turns raw bytes (a command line, a file name) into text of at most `max` bytes. The bytes
/// are cut *before* the lossy conversion, which can triple their size (each invalid byte
/// becomes U+FFFD), and the text is cut again after it. True if anything was cut.
pub fn lossy(raw: &[u8], max: usize) -> (String, bool) {
    let (head, mut cut_any) = match raw.get(..max) {
        Some(head) if head.len() < raw.len() => (head, true),
        _ => (raw, false),
    };
    let mut text = String::from_utf8_lossy(head).into_owned();
    cut_any |= cut(&mut text, max);
    (text, cut_any)
}

/// Cuts an argument vector to [`ARG`] per argument, [`ARGV_TOTAL`] in all and [`ARGV_COUNT`]
/// arguments. True if anything was cut.
pub fn cut_argv(argv: &mut Vec<String>) -> bool {
    let mut cut_any = false;
    if argv.len() > ARGV_COUNT {
        argv.truncate(ARGV_COUNT);
        cut_any = true;
    }
    let mut left = ARGV_TOTAL;
    let mut keep = argv.len();
    for (i, arg) in argv.iter_mut().enumerate() {
        cut_any |= cut(arg, ARG.min(left));
        left -= arg.len();
        if left == 0 {
            keep = i + 1;
            break;
        }
    }
    if keep < argv.len() {
        argv.truncate(keep);
        cut_any = true;
    }
    cut_any
}

/// Raw arguments (a command line's NUL-separated parts, or OS strings) as text within the
/// argument budgets, each cut before its lossy conversion; with the command line's full length
/// in bytes (each argument and its NUL) when anything was cut.
pub fn argv<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> (Vec<String>, Option<u64>) {
    let mut full = 0u64;
    let mut was_cut = false;
    let mut argv = Vec::new();
    for arg in args {
        full += arg.len() as u64 + 1;
        if argv.len() < ARGV_COUNT {
            let (text, c) = lossy(arg, ARG);
            was_cut |= c;
            argv.push(text);
        } else {
            was_cut = true;
        }
    }
    was_cut |= cut_argv(&mut argv);
    (argv, was_cut.then_some(full))
}

fn cut_list(list: &mut Vec<String>, each: usize) -> bool {
    let mut cut_any = false;
    if list.len() > LIST_COUNT {
        list.truncate(LIST_COUNT);
        cut_any = true;
    }
    for s in list.iter_mut() {
        cut_any |= cut(s, each);
    }
    cut_any
}

/// Records a cut of `field` under the event's kind.
struct Cuts<'a> {
    kind: &'static str,
    names: &'a mut Vec<String>,
}

impl Cuts<'_> {
    fn note(&mut self, field: &str, was_cut: bool) {
        if was_cut {
            let name = format!("{}.{field}", self.kind);
            if !self.names.contains(&name) {
                self.names.push(name);
            }
        }
    }
}

/// Applies every field budget to `event`, naming each cut field in `event.truncated`; an event
/// still larger than [`MAX_EVENT_BYTES`] becomes a gap event of the same sequence number that
/// names its kind and size. Returns true if anything was changed.
pub fn enforce(event: &mut Event) -> bool {
    let mut names = std::mem::take(&mut event.truncated);
    let mut changed = cut_list(&mut names, NAME);
    let before = names.len();
    let mut c = Cuts {
        kind: "event",
        names: &mut names,
    };
    c.note("hostname", cut(&mut event.hostname, NAME));
    c.note("user", cut(&mut event.user, NAME));
    let kind_name = event.kind.as_ref().map_or("event", Kind::name);
    c.kind = kind_name;
    match event.kind.as_mut() {
        Some(Kind::Process(p)) => {
            c.note("exe", cut(&mut p.exe, PATH));
            c.note("cwd", cut(&mut p.cwd, PATH));
            c.note("name", cut(&mut p.name, NAME));
            c.note("parent_name", cut(&mut p.parent_name, NAME));
            c.note("source", cut(&mut p.source, NAME));
            c.note("unavailable", cut_list(&mut p.unavailable, NAME));
            // A source that read the command line within the budget already (and counted the
            // rest) says so with `argv_bytes`.
            let full: usize = p.argv.iter().map(|a| a.len() + 1).sum();
            if cut_argv(&mut p.argv) && p.argv_bytes == 0 {
                p.argv_bytes = full as u64;
            }
            c.note("argv", p.argv_bytes != 0);
        }
        Some(Kind::Gap(g)) => {
            c.note("source", cut(&mut g.source, NAME));
            c.note("reason", cut(&mut g.reason, TEXT));
        }
        Some(Kind::Usb(u)) => {
            for (field, s) in [
                ("action", &mut u.action),
                ("vendor_id", &mut u.vendor_id),
                ("product_id", &mut u.product_id),
                ("manufacturer", &mut u.manufacturer),
                ("product", &mut u.product),
                ("serial", &mut u.serial),
            ] {
                c.note(field, cut(s, NAME));
            }
            c.note("devpath", cut(&mut u.devpath, PATH));
            c.note(
                "interface_classes",
                cut_list(&mut u.interface_classes, NAME),
            );
            c.note("block_devices", cut_list(&mut u.block_devices, NAME));
        }
        Some(Kind::Session(s)) => {
            for (field, v) in [
                ("action", &mut s.action),
                ("session_id", &mut s.session_id),
                ("user", &mut s.user),
                ("seat", &mut s.seat),
                ("tty", &mut s.tty),
                ("display", &mut s.display),
                ("remote_host", &mut s.remote_host),
                ("session_type", &mut s.session_type),
                ("session_class", &mut s.session_class),
                ("boot_id", &mut s.boot_id),
            ] {
                c.note(field, cut(v, NAME));
            }
        }
        Some(Kind::Browsing(b)) => {
            c.note("url", cut(&mut b.url, URL));
            c.note("title", cut(&mut b.title, TEXT));
            c.note("search_terms", cut(&mut b.search_terms, TEXT));
            c.note("detail", cut(&mut b.detail, TEXT));
            c.note("profile", cut(&mut b.profile, PATH));
            for (field, v) in [
                ("action", &mut b.action),
                ("transition", &mut b.transition),
                ("browser", &mut b.browser),
                ("search_engine", &mut b.search_engine),
            ] {
                c.note(field, cut(v, NAME));
            }
        }
        None => {}
    }
    changed |= names.len() != before;
    event.truncated = names;
    let size = event.encoded_len();
    if size > MAX_EVENT_BYTES {
        *event = Event {
            seq: event.seq,
            observed_at_us: event.observed_at_us,
            hostname: std::mem::take(&mut event.hostname),
            user: std::mem::take(&mut event.user),
            truncated: Vec::new(),
            device_time_us: 0,
            kind: Some(Kind::Gap(Gap {
                source: kind_name.into(),
                reason: format!(
                    "a {kind_name} event of {size} bytes exceeds the {MAX_EVENT_BYTES}-byte event limit"
                ),
                lost: 1,
            })),
        };
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{BrowsingVisit, ProcessExec};

    fn process(argv: Vec<String>) -> Event {
        Event {
            seq: 7,
            kind: Some(Kind::Process(ProcessExec {
                exe: "/bin/sleep".into(),
                argv,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn invalid_bytes_are_cut_before_they_triple() {
        let raw = vec![0xffu8; 131_000];
        let (text, was_cut) = lossy(&raw, ARG);
        assert!(was_cut);
        assert!(text.len() <= ARG, "{}", text.len());
        assert!(text.chars().all(|c| c == '\u{fffd}'));
        assert_eq!(lossy(b"sleep", ARG), ("sleep".to_owned(), false));
    }

    #[test]
    fn cut_keeps_characters_whole() {
        let mut s = "ééé".to_owned(); // 6 bytes
        assert!(cut(&mut s, 3));
        assert_eq!(s, "é");
        let mut short = "ab".to_owned();
        assert!(!cut(&mut short, 2));
    }

    #[test]
    fn the_reported_attack_fits_in_one_event_and_says_it_was_cut() {
        // python3 -c 'os.execv("/bin/sleep", [b"sleep", b"3"] + [b"\xff" * 131000] * 15)',
        // after a lossy conversion with no budget.
        let huge = "\u{fffd}".repeat(131_000);
        let mut argv = vec!["sleep".to_owned(), "3".to_owned()];
        argv.extend(std::iter::repeat_n(huge, 15));
        let mut e = process(argv);
        assert!(enforce(&mut e));
        assert!(e.encoded_len() <= MAX_EVENT_BYTES);
        assert_eq!(e.truncated, ["process.argv"]);
        let Some(Kind::Process(p)) = &e.kind else {
            panic!("still a process event: {e:?}")
        };
        assert_eq!(&p.argv[..2], ["sleep", "3"]);
        assert!(p.argv.iter().map(String::len).sum::<usize>() <= ARGV_TOTAL);
        assert!(p.argv_bytes > 5_000_000, "{}", p.argv_bytes);
    }

    #[test]
    fn many_small_arguments_are_bounded_in_count_and_total() {
        let mut argv: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
        assert!(cut_argv(&mut argv));
        assert!(argv.len() <= ARGV_COUNT);
        let mut argv: Vec<String> = (0..20).map(|_| "x".repeat(3000)).collect();
        assert!(cut_argv(&mut argv));
        assert!(argv.iter().map(String::len).sum::<usize>() <= ARGV_TOTAL);
        let mut fine = vec!["ls".to_owned(), "-l".to_owned()];
        assert!(!cut_argv(&mut fine));
    }

    #[test]
    fn an_untouched_event_is_left_alone() {
        let mut e = process(vec!["sleep".into(), "1".into()]);
        let before = e.clone();
        assert!(!enforce(&mut e));
        assert_eq!(e, before);
    }

    #[test]
    fn browsing_fields_get_their_own_budgets() {
        let mut e = Event {
            truncated: vec!["browsing.title".into()],
            kind: Some(Kind::Browsing(BrowsingVisit {
                url: format!("https://example.com/?q={}", "a".repeat(2 * URL)),
                title: "t".repeat(3 * TEXT),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert!(enforce(&mut e));
        assert_eq!(e.truncated, ["browsing.title", "browsing.url"]);
        let Some(Kind::Browsing(b)) = &e.kind else {
            panic!()
        };
        assert_eq!(b.url.len(), URL);
        assert_eq!(b.title.len(), TEXT);
    }

    #[test]
    fn hostile_truncated_names_are_bounded_too() {
        let mut e = process(vec![]);
        e.truncated = (0..10_000).map(|_| "x".repeat(10_000)).collect();
        enforce(&mut e);
        assert!(e.encoded_len() <= MAX_EVENT_BYTES);
    }
}
