//! squidGuard beside `invigilator-collector lists classify`: the same categories loaded into
//! both, the same URLs fed to both, the answers compared line by line and every difference
//! sorted by its explanation (see tests/squidguard-semantics.md for squidGuard's rules).

mod explain;
mod model;

use anyhow::{Context, bail, ensure};
pub use explain::{Explainer, QUIRK};
pub use model::{Model, Via};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The redirect each blocking dest answers with; `%t` is the dest (category) name.
const REDIRECT: &str = "http://blocked.invalid/?c=";
/// squidGuard's request line after the URL: client address/FQDN, ident, method.
pub const SQUID_FIELDS: &str = " 10.0.0.1/- - GET";

/// The category lists prepared for both filters.
pub struct Workspace {
    /// UT1-format copy of the loaded categories, for `lists classify --lists`.
    pub lists: PathBuf,
    /// squidGuard's dbhome: another copy, which gets the `.db` files.
    pub dbhome: PathBuf,
    pub conf: PathBuf,
    /// Loaded categories in byte order: the order of squidGuard's `pass` line.
    pub categories: Vec<String>,
}

fn copy_category(ut1: &Path, name: &str, to: &Path) -> anyhow::Result<()> {
    let from = crate::urlgen::category_dir(ut1, name)?;
    std::fs::create_dir_all(to)?;
    for f in ["domains", "urls", "expressions"] {
        if from.join(f).is_file() {
            std::fs::copy(from.join(f), to.join(f))
                .with_context(|| format!("copying {}/{f}", from.display()))?;
        }
    }
    Ok(())
}

/// squidGuard's configuration: one dest per category, and an acl that blocks them in byte
/// order of their names, so its first match is the one `lists classify` must print.
pub fn squidguard_conf(dbhome: &Path, logdir: &Path, categories: &[String]) -> String {
    let mut conf = format!(
        "dbhome {}\nlogdir {}\n\n",
        dbhome.display(),
        logdir.display()
    );
    for c in categories {
        conf.push_str(&format!("dest {c} {{\n"));
        for (kind, file) in [
            ("domainlist", "domains"),
            ("urllist", "urls"),
            ("expressionlist", "expressions"),
        ] {
            if dbhome.join(c).join(file).is_file() {
                conf.push_str(&format!("  {kind} {c}/{file}\n"));
            }
        }
        conf.push_str("}\n");
    }
    let pass: Vec<String> = categories.iter().map(|c| format!("!{c}")).collect();
    conf.push_str(&format!(
        "\nacl {{\n  default {{\n    pass {} all\n    redirect {REDIRECT}%t\n  }}\n}}\n",
        pass.join(" ")
    ));
    conf
}

/// Copies `categories` from the UT1 tree into `root` twice (lists for classify, dbhome for
/// squidGuard), writes squidGuard's configuration and builds its databases (`-C all`).
pub fn prepare(ut1: &Path, categories: &[String], root: &Path) -> anyhow::Result<Workspace> {
    let mut categories = categories.to_vec();
    categories.sort();
    categories.dedup();
    let (lists, dbhome, logdir) = (root.join("lists"), root.join("sgdb"), root.join("sglog"));
    std::fs::create_dir_all(&logdir)?;
    for c in &categories {
        copy_category(ut1, c, &lists.join(c))?;
        copy_category(ut1, c, &dbhome.join(c))?;
    }
    let conf = root.join("squidguard.conf");
    std::fs::write(&conf, squidguard_conf(&dbhome, &logdir, &categories))?;
    let out = Command::new("squidGuard")
        .arg("-c")
        .arg(&conf)
        .args(["-C", "all"])
        .output()
        .context("running squidGuard (is the Debian package `squidguard` installed? tests/setup.sh installs it)")?;
    let log = std::fs::read_to_string(logdir.join("squidGuard.log")).unwrap_or_default();
    ensure!(
        out.status.success() && !log.contains("FATAL") && !log.contains("ERROR"),
        "squidGuard -C all failed ({}):\n{}\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Workspace {
        lists,
        dbhome,
        conf,
        categories,
    })
}

/// squidGuard's answer for a request line: the blocking category, `-` for a pass, or
/// `!BH` when it could not parse the line.
pub fn parse_squidguard_answer(line: &str) -> anyhow::Result<String> {
    if line == "ERR" {
        return Ok("-".into());
    }
    if line.starts_with("BH") {
        return Ok("!BH".into());
    }
    match line
        .strip_prefix("OK rewrite-url=\"")
        .and_then(|r| r.strip_suffix('"'))
        .and_then(|r| r.strip_prefix(REDIRECT))
    {
        Some(cat) if !cat.is_empty() => Ok(cat.to_owned()),
        _ => bail!("unexpected squidGuard answer {line:?}"),
    }
}

/// Runs `cmd` with each line of `input` (after `map`) on stdin and returns its stdout lines,
/// checking there is one per input line and that it exits well.
fn run_lines(
    mut cmd: Command,
    input: &Path,
    suffix: &'static str,
    what: &str,
) -> anyhow::Result<Vec<String>> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let stdin = child.stdin.take().context("stdin")?;
    let input = input.to_owned();
    let writer = std::thread::spawn(move || -> std::io::Result<usize> {
        let mut w = BufWriter::new(stdin);
        let mut n = 0;
        for line in BufReader::new(std::fs::File::open(input)?).lines() {
            writeln!(w, "{}{suffix}", line?)?;
            n += 1;
        }
        w.flush()?;
        Ok(n)
    });
    let stdout = child.stdout.take().context("stdout")?;
    let answers: Vec<String> = BufReader::new(stdout).lines().collect::<Result<_, _>>()?;
    let sent = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))?
        .with_context(|| format!("feeding {what}"))?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        answers.len() == sent,
        "{what} answered {} lines for {sent} URLs; stderr: {}",
        answers.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(answers)
}

/// squidGuard's category (or `-`) for each URL of the file.
pub fn run_squidguard(ws: &Workspace, urls: &Path) -> anyhow::Result<Vec<String>> {
    let mut cmd = Command::new("squidGuard");
    cmd.arg("-c").arg(&ws.conf);
    run_lines(cmd, urls, SQUID_FIELDS, "squidGuard")?
        .iter()
        .map(|l| parse_squidguard_answer(l))
        .collect()
}

/// `lists classify`'s answer for each URL of the file.
pub fn run_classify(collector: &Path, lists: &Path, urls: &Path) -> anyhow::Result<Vec<String>> {
    let mut cmd = Command::new(collector);
    cmd.args(["lists", "classify", "--lists"]).arg(lists);
    run_lines(cmd, urls, "", "lists classify")
}

/// One kind of difference: how many, and a few examples.
#[derive(Debug, Default)]
pub struct Group {
    pub count: usize,
    pub examples: Vec<String>,
}

/// Agreement over a sample and the differences grouped by explanation.
#[derive(Debug, Default)]
pub struct Report {
    pub total: usize,
    pub agree: usize,
    /// Differences proven or recognised as squidGuard's quirks (reasons starting with QUIRK).
    pub quirks: usize,
    pub by_reason: BTreeMap<String, Group>,
    /// How often each variation tag occurs among the differences.
    pub by_tag: BTreeMap<String, usize>,
}

impl Report {
    pub fn agreement(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.agree as f64 / self.total as f64
    }

    /// Agreement once the differences that are squidGuard's quirks are set aside.
    pub fn agreement_net(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        (self.agree + self.quirks) as f64 / self.total as f64
    }

    /// Err unless at least `min` (e.g. 0.999) of the sample agreed as is.
    pub fn check(&self, min: f64) -> Result<(), String> {
        if self.total > 0 && self.agreement() >= min {
            Ok(())
        } else {
            Err(format!(
                "agreement {:.4}% is below {:.2}% over {} URLs\n{self}",
                100.0 * self.agreement(),
                100.0 * min,
                self.total
            ))
        }
    }
}

impl Report {
    /// Err unless the unexplained differences are at most `1 - min` of the sample.
    pub fn check_net(&self, min: f64) -> Result<(), String> {
        if self.total > 0 && self.agreement_net() >= min {
            Ok(())
        } else {
            Err(format!(
                "agreement {:.4}% with squidGuard's quirks set aside is below {:.2}% over {} URLs\n{self}",
                100.0 * self.agreement_net(),
                100.0 * min,
                self.total
            ))
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "agreement: {} / {} = {:.4}% ({} differences)",
            self.agree,
            self.total,
            100.0 * self.agreement(),
            self.total - self.agree
        )?;
        writeln!(
            f,
            "squidGuard quirks among them: {}; agreement with them set aside: {:.4}% ({} unexplained)",
            self.quirks,
            100.0 * self.agreement_net(),
            self.total - self.agree - self.quirks
        )?;
        for (reason, g) in &self.by_reason {
            writeln!(f, "  {:>7}  {reason}", g.count)?;
            for e in &g.examples {
                writeln!(f, "             {e}")?;
            }
        }
        if !self.by_tag.is_empty() {
            let tags: Vec<String> = self
                .by_tag
                .iter()
                .map(|(t, n)| format!("{t}={n}"))
                .collect();
            writeln!(f, "  variation tags among differences: {}", tags.join(" "))?;
        }
        Ok(())
    }
}

/// Compares the answers for `urls` (whose provenance lines are `prov`), explaining each
/// difference with `explainer`.
pub fn compare(
    urls: &[String],
    prov: &[String],
    squidguard: &[String],
    classify: &[String],
    explainer: &Explainer,
) -> Report {
    let mut r = Report {
        total: urls.len(),
        ..Report::default()
    };
    for i in 0..urls.len() {
        let (sg, cl) = (&squidguard[i], &classify[i]);
        if sg == cl {
            r.agree += 1;
            continue;
        }
        let p = prov.get(i).map(String::as_str).unwrap_or("? - -");
        let reason = explainer.explain(&urls[i], p, sg, cl);
        if reason.starts_with(QUIRK) {
            r.quirks += 1;
        }
        let g = r.by_reason.entry(reason).or_default();
        g.count += 1;
        if g.examples.len() < 4 {
            g.examples
                .push(format!("{}  squidGuard={sg} classify={cl}  [{p}]", urls[i]));
        }
        for tag in p.split(' ').nth(2).unwrap_or("-").split(',') {
            *r.by_tag.entry(tag.to_owned()).or_default() += 1;
        }
    }
    r
}
