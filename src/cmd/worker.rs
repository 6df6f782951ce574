//! `evomerge worker`: join a search through its journal and evaluate queued candidates until the
//! search is done.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use evomerge_evolve::{run_worker, WorkerOptions};

#[derive(Parser)]
pub struct Args {
    /// The search's journal: its --out directory (one machine) or the PostgreSQL URL the coordinator
    /// was given with --journal.
    #[arg(long)]
    pub journal: String,
    /// This machine's copy of the search's recipe (when paths in it differ here); it must be the
    /// coordinator's recipe. By default the recipe stored in the journal is used.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Seconds a claimed candidate stays claimed without a heartbeat.
    #[arg(long, default_value_t = evomerge_evolve::search::DEFAULT_LEASE_SECONDS)]
    pub lease_seconds: f64,
    /// Seconds to wait for the coordinator to create the search (a worker may start first).
    #[arg(long, default_value_t = 600.0)]
    pub wait_seconds: f64,
    /// Where this worker evaluates (cpu, cuda, cuda:N), instead of the recipe's `device`: start one worker per
    /// GPU, each with its own --device cuda:N.
    #[arg(long)]
    pub device: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.lease_seconds > 0.0, "--lease-seconds must be positive");
    anyhow::ensure!(args.wait_seconds >= 0.0, "--wait-seconds must not be negative");
    let journal = super::trials::journal_location(&args.journal)?;
    let options = WorkerOptions {
        journal,
        recipe: args.recipe,
        lease_seconds: args.lease_seconds,
        wait_for_search: Duration::from_secs_f64(args.wait_seconds),
        device: args.device,
    };
    let report = run_worker(&options).with_context(|| format!("worker on {}", options.journal.display()))?;
    println!("worker {}: {} trials evaluated; the search is done", report.worker, report.evaluated);
    Ok(())
}
