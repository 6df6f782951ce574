//! `evomerge trials`: print a search's trial records from its journal (also while it runs).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use evomerge_evolve::Journal;

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

#[derive(Parser)]
pub struct Args {
    /// The search's output directory (or its journal.sqlite).
    pub dir: PathBuf,
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: Format,
    /// Print the recipe stored in the journal instead of the trials.
    #[arg(long)]
    pub recipe: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let path = if args.dir.is_dir() { args.dir.join(evomerge_evolve::export::JOURNAL_FILE) } else { args.dir.clone() };
    let journal = Journal::open_existing(&path)?;
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
