//! `evomerge`: the command-line front end. Each subcommand lives in `cmd/` and only parses
//! arguments, calls a library crate and reports; the work itself is done in `crates/`.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "evomerge", version, about = "Evolutionary model merging for LLMs and VLMs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Merge models as a mergekit-style YAML recipe says.
    Merge(cmd::merge::Args),
    /// Describe a model: architecture, layers, dtype, parameter count, tensors.
    Inspect(cmd::inspect::Args),
    /// Generate text (optionally about an image) with a model.
    Generate(cmd::generate::Args),
    /// Write a model's logits for given token ids (for parity checks).
    Logits(cmd::logits::Args),
    /// Evaluate a model on a benchmark (mgsm-ja, ja-vg-vqa-500, ja-vlm-wild).
    Eval(cmd::eval::Args),
    /// Score predictions made elsewhere (rouge-ja, mgsm).
    Score(cmd::score::Args),
    /// Drive a CMA-ES search over a JSON-lines protocol on stdin/stdout.
    AskTell(cmd::ask_tell::Args),
    /// Evolve a merge recipe (CMA-ES over merge parameters); the same command resumes.
    Evolve(cmd::evolve::Args),
    /// Print the trials of a search (JSON lines or CSV).
    Trials(cmd::trials::Args),
    /// Join a search through its journal and evaluate queued candidates until it is done.
    Worker(cmd::worker::Args),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Merge(args) => cmd::merge::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Generate(args) => cmd::generate::run(args),
        Command::Logits(args) => cmd::logits::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Score(args) => cmd::score::run(args),
        Command::AskTell(args) => cmd::ask_tell::run(args),
        Command::Evolve(args) => cmd::evolve::run(args),
        Command::Trials(args) => cmd::trials::run(args),
        Command::Worker(args) => cmd::worker::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
