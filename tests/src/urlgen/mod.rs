//! Deterministic URL samples drawn from UT1-format category lists, for comparing
//! `invigilator-collector lists classify` with squidGuard (tests/tests/lists_squidguard.rs and
//! tests/bench/run.sh).
//!
//! A sample mixes entries of categories that are loaded into both filters, entries of
//! categories that are not, near misses of listed names, random hosts and paths aimed at the
//! `expressions` files, each dressed with the variations real traffic has (subdomains, `www.`,
//! ports, user info, case, trailing dots, percent-encoding, IDN, IP literals, longer paths).
//! Every URL comes with a provenance line (source, category, variation tags) so that
//! differences can be explained by kind.

mod punycode;
mod rng;
mod vary;

pub use rng::Rng;
use std::io;
use std::path::{Path, PathBuf};

/// One category's entries, as read from its folder (alias files followed).
#[derive(Debug, Default)]
pub struct Category {
    pub name: String,
    pub domains: Vec<String>,
    pub urls: Vec<String>,
}

/// The folder holding category `name`: UT1 has plain files (e.g. `porn`) whose content is the
/// name of the category they stand for.
pub fn category_dir(root: &Path, name: &str) -> io::Result<PathBuf> {
    let mut name = name.to_owned();
    for _ in 0..8 {
        let p = root.join(&name);
        if p.is_dir() {
            return Ok(p);
        }
        if !p.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no category {name:?} in {}", root.display()),
            ));
        }
        name = std::fs::read_to_string(&p)?.trim().to_owned();
    }
    Err(io::Error::other(format!("alias loop at {name:?}")))
}

fn read_entries(path: &Path, usable: impl Fn(&str) -> bool) -> io::Result<Vec<String>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && usable(l))
            .map(str::to_owned)
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

/// A host as a browser could send it: letters, digits, `-`, `_`, `.` or non-ASCII, and no
/// leading or trailing dot (UT1 has a few `*.x` and `.x` lines, which are not hosts).
fn usable_host(h: &str) -> bool {
    !h.is_empty()
        && !h.starts_with('.')
        && !h.ends_with('.')
        && !h.contains("..")
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || !c.is_ascii())
}

fn usable_url(u: &str) -> bool {
    let host = u.split('/').next().unwrap_or("");
    usable_host(host) && !u.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Loads category `name` from the UT1 tree at `root`.
pub fn load_category(root: &Path, name: &str) -> io::Result<Category> {
    let dir = category_dir(root, name)?;
    Ok(Category {
        name: name.to_owned(),
        domains: read_entries(&dir.join("domains"), usable_host)?,
        urls: read_entries(&dir.join("urls"), usable_url)?,
    })
}

/// One generated URL and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub url: String,
    /// e.g. `loaded-domain`, `unloaded-url`, `random`, `near-miss`, `expression-bait`.
    pub source: &'static str,
    /// The category whose entry it was drawn from, or `-`.
    pub category: String,
    /// Variation tags, e.g. `www`, `port`, `tdot`, `idn`.
    pub tags: Vec<&'static str>,
}

impl Sample {
    /// The provenance line written beside the URL: `source category tag,tag`.
    pub fn provenance(&self) -> String {
        let tags = if self.tags.is_empty() {
            "-".to_owned()
        } else {
            self.tags.join(",")
        };
        format!("{} {} {}", self.source, self.category, tags)
    }
}

/// Draws samples from loaded and unloaded categories.
pub struct Generator {
    loaded: Vec<Category>,
    unloaded: Vec<Category>,
    rng: Rng,
}

impl Generator {
    pub fn new(loaded: Vec<Category>, unloaded: Vec<Category>, seed: u64) -> Self {
        Generator {
            loaded,
            unloaded,
            rng: Rng::new(seed),
        }
    }

    /// Loads the named categories from `root` and seeds the generator.
    pub fn from_tree(
        root: &Path,
        loaded: &[String],
        unloaded: &[String],
        seed: u64,
    ) -> io::Result<Self> {
        let load = |names: &[String]| -> io::Result<Vec<Category>> {
            names.iter().map(|n| load_category(root, n)).collect()
        };
        Ok(Self::new(load(loaded)?, load(unloaded)?, seed))
    }

    /// An entry of the given kind from one of `cats`: half the time from a category chosen
    /// uniformly (small categories are seen), half from all entries pooled (big ones dominate
    /// as they do in traffic).
    fn entry(rng: &mut Rng, cats: &[Category], urls: bool) -> Option<(String, String)> {
        fn list(c: &Category, urls: bool) -> &Vec<String> {
            if urls { &c.urls } else { &c.domains }
        }
        let with: Vec<&Category> = cats.iter().filter(|c| !list(c, urls).is_empty()).collect();
        if with.is_empty() {
            return None;
        }
        let cat = if rng.chance(0.5) {
            *rng.pick(&with)
        } else {
            let total: usize = with.iter().map(|c| list(c, urls).len()).sum();
            let mut i = rng.below(total);
            let mut chosen = with[0];
            for c in &with {
                if i < list(c, urls).len() {
                    chosen = c;
                    break;
                }
                i -= list(c, urls).len();
            }
            chosen
        };
        Some((rng.pick(list(cat, urls)).clone(), cat.name.clone()))
    }

    pub fn next_sample(&mut self) -> Sample {
        let roll = self.rng.below(100);
        let rng = &mut self.rng;
        let drawn = match roll {
            0..35 => Self::entry(rng, &self.loaded, false).map(|e| ("loaded-domain", e)),
            35..45 => Self::entry(rng, &self.loaded, true).map(|e| ("loaded-url", e)),
            45..65 => Self::entry(rng, &self.unloaded, false).map(|e| ("unloaded-domain", e)),
            65..70 => Self::entry(rng, &self.unloaded, true).map(|e| ("unloaded-url", e)),
            70..78 => {
                let cats = if rng.chance(0.7) {
                    &self.loaded
                } else {
                    &self.unloaded
                };
                Self::entry(rng, cats, false).map(|e| ("near-miss", e))
            }
            78..81 => Some(("expression-bait", (String::new(), "-".to_owned()))),
            _ => None,
        };
        let (source, (entry, category)) =
            drawn.unwrap_or(("random", (String::new(), "-".to_owned())));
        let (url, tags) = match source {
            "loaded-domain" | "unloaded-domain" => vary::from_domain(rng, &entry),
            "loaded-url" | "unloaded-url" => vary::from_url_entry(rng, &entry),
            "near-miss" => vary::near_miss(rng, &entry),
            "expression-bait" => vary::expression_bait(rng),
            _ => vary::random(rng),
        };
        Sample {
            url,
            source,
            category,
            tags,
        }
    }
}

impl Iterator for Generator {
    type Item = Sample;
    fn next(&mut self) -> Option<Sample> {
        Some(self.next_sample())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(name: &str, domains: &[&str], urls: &[&str]) -> Category {
        Category {
            name: name.into(),
            domains: domains.iter().map(|s| s.to_string()).collect(),
            urls: urls.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn generator(seed: u64) -> Generator {
        Generator::new(
            vec![cat(
                "games",
                &["play.example", "xn--bcher-kva.de", "10.1.2.3"],
                &["site.example/games/x"],
            )],
            vec![cat("bank", &["bank.example"], &["bank.example/login"])],
            seed,
        )
    }

    #[test]
    fn deterministic_and_clean() {
        let a: Vec<Sample> = generator(3).take(5000).collect();
        let b: Vec<Sample> = generator(3).take(5000).collect();
        assert_eq!(a, b);
        assert_ne!(a, generator(4).take(5000).collect::<Vec<_>>());
        for s in &a {
            assert!(!s.url.is_empty());
            assert!(
                !s.url.chars().any(|c| c.is_whitespace() || c.is_control()),
                "{:?}",
                s.url
            );
        }
        for source in [
            "loaded-domain",
            "loaded-url",
            "unloaded-domain",
            "unloaded-url",
            "random",
            "near-miss",
            "expression-bait",
        ] {
            assert!(a.iter().any(|s| s.source == source), "no {source}");
        }
        for tag in [
            "www", "sub", "port", "user", "upper", "tdot", "pct-host", "idn", "ip", "extra",
            "query",
        ] {
            assert!(a.iter().any(|s| s.tags.contains(&tag)), "no {tag}");
        }
    }

    #[test]
    fn aliases_and_unusable_lines() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("adult")).unwrap();
        std::fs::write(d.path().join("porn"), "adult\n").unwrap();
        std::fs::write(
            d.path().join("adult/domains"),
            "# comment\nok.example\n*.star.example\n.lead.example\nsp ace.example\n\n",
        )
        .unwrap();
        let c = load_category(d.path(), "porn").unwrap();
        assert_eq!(c.domains, vec!["ok.example"]);
        assert!(c.urls.is_empty());
        assert!(load_category(d.path(), "nothing").is_err());
    }
}
