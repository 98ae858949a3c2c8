//! `invigilator-listcmp`: the squidGuard side of the category-list benchmark
//! (tests/bench/lists.sh), sharing the differential test's code (tests/src/sgdiff).
//!
//!   invigilator-listcmp prepare --ut1 DIR --categories a,b --work W
//!       copies the categories to W/lists (for `lists classify`) and W/sgdb, writes
//!       W/squidguard.conf and builds squidGuard's databases
//!   invigilator-listcmp compare --work W --urls U --provenance P --squidguard S --classify C
//!       compares squidGuard's raw answers S with classify's C and prints the explained report
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use invigilator_tests::sgdiff::{self, Explainer};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "invigilator-listcmp",
    about = "squidGuard beside lists classify"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Prepare {
        #[arg(long)]
        ut1: PathBuf,
        #[arg(long, value_delimiter = ',', required = true)]
        categories: Vec<String>,
        #[arg(long)]
        work: PathBuf,
    },
    Compare {
        #[arg(long)]
        work: PathBuf,
        #[arg(long)]
        urls: PathBuf,
        #[arg(long)]
        provenance: PathBuf,
        /// squidGuard's raw output (`ERR` / `OK rewrite-url=...`), one line per URL.
        #[arg(long)]
        squidguard: PathBuf,
        /// `lists classify` output, one line per URL.
        #[arg(long)]
        classify: PathBuf,
        /// Exit with status 1 below this agreement.
        #[arg(long, default_value_t = 0.0)]
        min: f64,
    },
}

fn lines(p: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(text.lines().map(str::to_owned).collect())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Prepare {
            ut1,
            categories,
            work,
        } => {
            sgdiff::prepare(&ut1, &categories, &work)?;
        }
        Cmd::Compare {
            work,
            urls,
            provenance,
            squidguard,
            classify,
            min,
        } => {
            let urls = lines(&urls)?;
            let prov = lines(&provenance)?;
            let sg: Vec<String> = lines(&squidguard)?
                .iter()
                .map(|l| sgdiff::parse_squidguard_answer(l))
                .collect::<Result<_, _>>()?;
            let cl = lines(&classify)?;
            anyhow::ensure!(
                urls.len() == sg.len() && urls.len() == cl.len() && urls.len() == prov.len(),
                "line counts differ: {} URLs, {} provenance, {} squidGuard, {} classify",
                urls.len(),
                prov.len(),
                sg.len(),
                cl.len()
            );
            let mut categories: Vec<String> = std::fs::read_dir(work.join("lists"))?
                .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<_>>()?;
            categories.sort();
            let explainer = Explainer::from_lists(&work.join("lists"), &categories)?;
            let report = sgdiff::compare(&urls, &prov, &sg, &cl, &explainer);
            print!("{report}");
            if report.check(min).is_err() {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
