//! `invigilator-urlgen`: a deterministic sample of URLs drawn from UT1-format category lists,
//! one per line, for comparing `lists classify` with squidGuard.
//!
//!   invigilator-urlgen --lists UT1_DIR --count 1000000 --seed 1 \
//!       --loaded gambling,games --unloaded bank,shopping --provenance kinds.txt > urls.txt
//!
//! Line i of the provenance file says where URL i came from: `source category tag,tag`.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use invigilator_tests::urlgen::Generator;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "invigilator-urlgen",
    about = "Deterministic URL sample from UT1 lists"
)]
struct Cli {
    /// UT1 tree: one folder per category (`domains`, `urls`).
    #[arg(long)]
    lists: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Categories the filters under test load (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    loaded: Vec<String>,
    /// Categories they do not load, whose entries must not be reported as such.
    #[arg(long, value_delimiter = ',')]
    unloaded: Vec<String>,
    /// Where to write the provenance lines (default: not written).
    #[arg(long)]
    provenance: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let generator = Generator::from_tree(&cli.lists, &cli.loaded, &cli.unloaded, cli.seed)
        .with_context(|| format!("reading lists under {}", cli.lists.display()))?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut prov = match &cli.provenance {
        Some(p) => Some(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    for sample in generator.take(cli.count as usize) {
        writeln!(out, "{}", sample.url)?;
        if let Some(p) = prov.as_mut() {
            writeln!(p, "{}", sample.provenance())?;
        }
    }
    out.flush()?;
    if let Some(mut p) = prov {
        p.flush()?;
    }
    Ok(())
}
