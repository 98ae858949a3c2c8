//! `lists classify`: URLs on stdin, one per line; for each, the first matching category or `-`.
//!
//! Input is read in large blocks cut at line ends; the lines of a batch of blocks are
//! classified on all cores (`std::thread::scope`), and the answers written in input order.

use super::Lists;
use std::io::{self, Read, Write};

/// Bytes per block handed to one thread.
const BLOCK: usize = 256 << 10;
/// A line longer than this is not a URL (squidGuard stops at 4 KiB): it is answered `-` without
/// being kept in memory.
const MAX_LINE: usize = 1 << 20;

/// Counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub lines: u64,
    pub matched: u64,
}

fn classify_block(lists: &Lists, block: &[u8], out: &mut Vec<u8>) -> Stats {
    let mut stats = Stats::default();
    let mut scratch = super::NormalUrl::default();
    let mut answer = |cat: Option<&str>| {
        stats.lines += 1;
        match cat {
            Some(c) => {
                stats.matched += 1;
                out.extend_from_slice(c.as_bytes());
            }
            None => out.push(b'-'),
        }
        out.push(b'\n');
    };
    match std::str::from_utf8(block) {
        // Checking the whole block at once is cheaper than line by line, and `str::split` on
        // a char finds the line ends with memchr.
        Ok(text) => {
            for line in text.split('\n') {
                answer(lists.first_reusing(line, &mut scratch));
            }
        }
        Err(_) => {
            for line in block.split(|&b| b == b'\n') {
                // Invalid UTF-8 is not a URL any browser sends: `-`, like any unparseable line.
                let cat = std::str::from_utf8(line)
                    .ok()
                    .and_then(|l| lists.first_reusing(l, &mut scratch));
                answer(cat);
            }
        }
    }
    stats
}

/// Classifies every line of `input`, writing one answer per line to `output`. `threads` 0
/// means one per core. A last line without a newline still gets its answer.
pub fn run(
    lists: &Lists,
    mut input: impl Read,
    mut output: impl Write,
    threads: usize,
) -> io::Result<Stats> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let mut total = Stats::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut eof = false;
    let mut overlong = false;
    let mut outs: Vec<Vec<u8>> = vec![Vec::new(); threads];
    while !eof {
        // Fill a batch: `threads` blocks of about BLOCK bytes each.
        let want = BLOCK * threads;
        let mut filled = pending.len();
        pending.resize(want.max(filled + BLOCK), 0);
        while filled < pending.len() {
            match input.read(&mut pending[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        pending.truncate(filled);
        if overlong {
            // Drop the rest of a line too long to be a URL, and answer it once.
            match pending.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    pending.drain(..=i);
                    output.write_all(b"-\n")?;
                    total.lines += 1;
                    overlong = false;
                }
                None => {
                    pending.clear();
                    if eof {
                        output.write_all(b"-\n")?;
                        total.lines += 1;
                    }
                    continue;
                }
            }
        }
        // Only whole lines now; the tail waits for the next batch (or is the last line).
        let cut = if eof {
            pending.len()
        } else {
            match pending.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if pending.len() > MAX_LINE => {
                    pending.clear();
                    overlong = true;
                    continue;
                }
                None => continue,
            }
        };
        let mut data = &pending[..cut];
        if data.last() == Some(&b'\n') {
            data = &data[..data.len() - 1];
        } else if data.is_empty() {
            break;
        }
        // Split the batch into `threads` pieces at line ends.
        let mut pieces = Vec::with_capacity(threads);
        let mut rest = data;
        for t in 0..threads {
            if t + 1 == threads || rest.len() <= BLOCK / 4 {
                pieces.push(rest);
                break;
            }
            let target = rest.len() / (threads - t);
            let at = rest[target..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|p| target + p);
            match at {
                Some(i) => {
                    pieces.push(&rest[..i]);
                    rest = &rest[i + 1..];
                }
                None => {
                    pieces.push(rest);
                    break;
                }
            }
        }
        for o in outs.iter_mut() {
            o.clear();
        }
        let stats: Vec<Stats> = if pieces.len() == 1 {
            vec![classify_block(lists, pieces[0], &mut outs[0])]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = pieces
                    .iter()
                    .zip(outs.iter_mut())
                    .map(|(piece, out)| s.spawn(move || classify_block(lists, piece, out)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_default())
                    .collect()
            })
        };
        for (o, st) in outs.iter().zip(&stats) {
            output.write_all(o)?;
            total.lines += st.lines;
            total.matched += st.matched;
        }
        pending.drain(..cut);
    }
    output.flush()?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, Lists) {
        let d = tempfile::tempdir().unwrap();
        let w = |rel: &str, text: &str| {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("games/domains", "games.example\n");
        w("adult/domains", "adult.example\n");
        let lists = Lists::open(d.path()).unwrap();
        (d, lists)
    }

    #[test]
    fn one_answer_per_line_in_order_whatever_the_threads() {
        let (_d, lists) = fixture();
        let mut input = String::new();
        let mut want = String::new();
        for i in 0..50_000 {
            let (url, cat) = match i % 4 {
                0 => (format!("http://x{i}.games.example/p"), "games"),
                1 => (format!("http://adult.example/{i}"), "adult"),
                2 => (format!("not a url {i}"), "-"),
                _ => (format!("http://other{i}.example/"), "-"),
            };
            input.push_str(&url);
            input.push('\n');
            want.push_str(cat);
            want.push('\n');
        }
        for threads in [1, 2, 3, 8] {
            let mut out = Vec::new();
            let stats = run(&lists, input.as_bytes(), &mut out, threads).unwrap();
            assert_eq!(stats.lines, 50_000);
            assert_eq!(stats.matched, 25_000);
            assert!(String::from_utf8(out).unwrap() == want, "threads {threads}");
        }
    }

    #[test]
    fn last_line_without_newline_blank_lines_and_bad_bytes() {
        let (_d, lists) = fixture();
        let mut out = Vec::new();
        run(
            &lists,
            &b"http://games.example\n\n\xff\xfe\nadult.example"[..],
            &mut out,
            2,
        )
        .unwrap();
        assert_eq!(out, b"games\n-\n-\nadult\n");
        let mut out = Vec::new();
        run(&lists, &b""[..], &mut out, 2).unwrap();
        assert_eq!(out, b"");
        let mut long = b"http://games.example\n".to_vec();
        long.extend(std::iter::repeat_n(b'a', 5 * MAX_LINE));
        long.extend_from_slice(b"\nadult.example\n");
        long.extend(std::iter::repeat_n(b'b', 3 * MAX_LINE));
        let mut out = Vec::new();
        let stats = run(&lists, &long[..], &mut out, 2).unwrap();
        assert_eq!(out, b"games\n-\nadult\n-\n");
        assert_eq!(stats.lines, 4);
    }
}
