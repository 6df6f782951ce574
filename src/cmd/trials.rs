//! `evomerge trials`: print a search's trial records from its journal (also while it runs).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use evomerge_evolve::journal::Location;
use evomerge_evolve::Journal;

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

#[derive(Parser)]
pub struct Args {
    /// The search's output directory, its journal.sqlite, or a PostgreSQL journal URL.
    pub dir: String,
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: Format,
    /// Print the recipe stored in the journal instead of the trials.
    #[arg(long)]
    pub recipe: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let journal = Journal::connect_existing(&journal_location(&args.dir)?)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.recipe {
        let recipe = journal.study_value("recipe")?.context("the journal holds no recipe")?;
        out.write_all(recipe.as_bytes())?;
        return Ok(());
    }
    let records = journal.trials()?;
    let written = match args.format {
        Format::Jsonl => evomerge_evolve::trials::write_jsonl(&records, &mut out),
        Format::Csv => evomerge_evolve::trials::write_csv(&records, &mut out),
    }
    .and_then(|()| out.flush());
    match written {
        // A reader that stops early (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A journal named on the command line: a PostgreSQL URL, a search directory (whose journal may be
/// on a server: its `journal.url` says which, and a URL with a password must be given in full) or a
/// `.sqlite` file.
pub fn journal_location(spec: &str) -> anyhow::Result<Location> {
    let marker = Path::new(spec).join(evomerge_evolve::export::JOURNAL_URL_FILE);
    if !Path::new(spec).join(evomerge_evolve::export::JOURNAL_FILE).exists() && marker.is_file() {
        let url = std::fs::read_to_string(&marker).with_context(|| format!("reading {}", marker.display()))?;
        let url = url.trim();
        anyhow::ensure!(!url.contains(":***@"), "{spec}'s journal is on {url}; give that URL with its password");
        return Ok(Location::parse(url));
    }
    Ok(Location::parse(spec))
}
