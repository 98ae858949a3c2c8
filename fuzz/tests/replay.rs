//! The fuzz targets on stable, without libFuzzer: every file of each target's committed corpus
//! (seeds and the inputs of crashes once found), then inputs generated from a fixed seed: random
//! bytes and mutations of the corpus files. Cheap enough for every CI run.

use std::path::PathBuf;
use std::time::Instant;

use invigilator_fuzz::TARGETS;

/// splitmix64: a fixed sequence, so a failure here is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// A few random edits of `seed`: byte flips, interesting bytes, insertions, deletions,
    /// truncation, duplication of a slice.
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..1 + self.below(8) {
            let at = self.below(v.len() + 1);
            match self.below(6) {
                0 if at < v.len() => v[at] ^= 1 << self.below(8),
                1 if at < v.len() => {
                    v[at] = [0, 0xff, 0x7f, 0x80, b'%', b'@', b'/', 0][self.below(8)]
                }
                2 => {
                    let n = self.below(16);
                    let b = self.bytes(n);
                    v.splice(at..at, b);
                }
                3 if at < v.len() => {
                    let end = (at + 1 + self.below(32)).min(v.len());
                    v.drain(at..end);
                }
                4 => v.truncate(at),
                _ if at < v.len() => {
                    let end = (at + 1 + self.below(64)).min(v.len());
                    let copy = v[at..end].to_vec();
                    let to = self.below(v.len() + 1);
                    v.splice(to..to, copy);
                }
                _ => {}
            }
        }
        v
    }
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect()
}

/// Generated inputs per target: the database targets cost a few milliseconds each.
fn generated(target: &str) -> usize {
    match target {
        "history" | "history_rows" => 300,
        "policy_file" => 1000,
        _ => 3000,
    }
}

fn replay(name: &str, run: fn(&[u8])) {
    let started = Instant::now();
    let files = corpus(name);
    assert!(!files.is_empty(), "no corpus for {name}");
    for (path, data) in &files {
        eprintln!("{name}: {}", path.display());
        run(data);
    }
    let mut rng = Rng(0x1A7E_57ED ^ name.len() as u64);
    let n = generated(name);
    for i in 0..n {
        let input = if i % 2 == 0 {
            let len = rng.below(if i % 8 == 0 { 4096 } else { 256 });
            rng.bytes(len)
        } else {
            let seed = &files[rng.below(files.len())].1;
            rng.mutate(seed)
        };
        let result = std::panic::catch_unwind(|| run(&input));
        if result.is_err() {
            let path = std::env::temp_dir().join(format!("replay-{name}-{i}"));
            std::fs::write(&path, &input).unwrap();
            panic!(
                "{name}: generated input {i} panicked; saved to {}",
                path.display()
            );
        }
    }
    eprintln!(
        "{name}: {} corpus files and {n} generated inputs in {:.1?}",
        files.len(),
        started.elapsed()
    );
}

#[test]
fn every_target_has_a_test_here() {
    let names: Vec<_> = TARGETS.iter().map(|(n, _)| *n).collect();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz_targets");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.trim_end_matches(".rs").to_owned()
        })
        .collect();
    files.sort();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(files, sorted, "fuzz_targets/ and TARGETS disagree");
}

macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name), invigilator_fuzz::$name);
            }
        )*
    };
}

replay_tests!(
    uevent,
    proc_connector,
    procfs,
    etw_layout,
    history,
    history_rows,
    url_normalise,
    search_terms,
    policy_file,
    batch,
    extension_upload,
);
