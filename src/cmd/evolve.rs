//! `evomerge evolve`: run or resume an evolutionary search over merge recipes.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use evomerge_evolve::journal::Location;
use evomerge_evolve::{run as run_search, SearchOptions};

#[derive(Parser)]
pub struct Args {
    /// The evolve recipe (YAML: genome, task, optimizer, device).
    pub recipe: PathBuf,
    /// Output directory: journal, best/, trials.csv, plots/. The same command resumes a search here.
    #[arg(long, required_unless_present = "evaluate_initial")]
    pub out: Option<PathBuf>,
    /// Overrides the recipe's optimizer.seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Overrides the recipe's optimizer.max_trials (may be raised to continue a finished search).
    #[arg(long)]
    pub max_trials: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Score the recipe's initial genome (every gene at its `init`) and print the fitness; no search,
    /// no output directory.
    #[arg(long, conflicts_with = "out")]
    pub evaluate_initial: bool,
    /// After the search (or at once, on a finished directory), score best/ and the source models on
    /// the test tasks (the recipe's `final_eval`, else the paper's test sets for its task kind) into
    /// DIR/report.md and DIR/summary.json. Recipes with a `final_eval` section do this anyway.
    #[arg(long)]
    pub final_eval: bool,
    /// Keep the trial journal on a PostgreSQL server (`postgresql://user@host/db`, one database per
    /// search) instead of DIR/journal.sqlite, so that workers on other machines can join.
    #[arg(long, value_name = "URL")]
    pub journal: Option<String>,
    /// 0: only coordinate (ask, queue, tell); `evomerge worker` processes evaluate every candidate.
    /// Otherwise (the default) this process evaluates candidates too, beside any workers.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Seconds a claimed candidate stays claimed without a heartbeat.
    #[arg(long, default_value_t = evomerge_evolve::search::DEFAULT_LEASE_SECONDS)]
    pub lease_seconds: f64,
    /// Where this process evaluates candidates (cpu, cuda, cuda:N), instead of the recipe's `device`.
    #[arg(long)]
    pub device: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_default();
    let journal = match &args.journal {
        Some(url) => match Location::parse(url) {
            l @ Location::Postgres(_) => Some(l),
            Location::Sqlite(_) => anyhow::bail!(
                "--journal takes a PostgreSQL URL (postgresql://user@host/db); the SQLite journal is always DIR/journal.sqlite"
            ),
        },
        None => None,
    };
    anyhow::ensure!(args.lease_seconds > 0.0, "--lease-seconds must be positive");
    if args.evaluate_initial {
        anyhow::ensure!(args.journal.is_none() && args.workers.is_none(), "--evaluate-initial runs no search: no --journal or --workers");
    }
    let options = SearchOptions {
        seed: args.seed,
        max_trials: args.max_trials,
        progress: !args.quiet,
        journal,
        evaluate: args.workers != Some(0),
        lease_seconds: args.lease_seconds,
        device: args.device.clone(),
        ..SearchOptions::new(out.clone())
    };
    if args.evaluate_initial {
        let outcome = evomerge_evolve::search::evaluate_initial(&args.recipe, &options)
            .with_context(|| format!("scoring the initial genome of {}", args.recipe.display()))?;
        println!("{}", outcome.fitness);
        return Ok(());
    }
    let report = run_search(&args.recipe, &options)
        .with_context(|| format!("evolving {} into {}", args.recipe.display(), out.display()))?;
    match &report.best {
        Some(best) => println!(
            "{} trials ({} evaluated now) in {:.1} s; best: trial {} fitness {:.6}; model in {}",
            report.trials,
            report.evaluated,
            report.seconds,
            best.trial,
            best.fitness.unwrap_or(f64::NAN),
            report.out.join("best").display()
        ),
        None => println!("{} trials, none finished with a fitness", report.trials),
    }
    if let Some(reason) = &report.stopped {
        println!("CMA-ES stopped early: {reason}");
    }
    let recipe = evomerge_evolve::search::effective_recipe(&args.recipe, &options)?;
    if args.final_eval || recipe.final_eval.is_some() {
        let summary = evomerge_evolve::report::final_eval(&recipe, &out)
            .with_context(|| format!("final evaluation of {}", out.display()))?;
        for task in &summary.tasks {
            for m in &task.scores {
                println!("{} {}: {} {:.4}", task.kind, task.metric, m.model, m.score);
            }
        }
        println!("report: {}", out.join("report.md").display());
    }
    Ok(())
}
