//! Cheap fitness on the miniature world: for each `task.budget` mode, both examples and several
//! seeds, the generated tokens and wall time of the whole search (re-scoring included), the full-set
//! search fitness of the model it exports, and that model's test score against the `full` run of the
//! same seed (paired bootstrap 95 % interval on the test items). Prints a markdown table.
//!
//!     cargo bench --bench budget                                   # both examples, seeds 0 1 2
//!     cargo bench --bench budget -- --examples evovlm --seeds 0 --modes full,racing
//!
//! Runs write under `target/budget-bench/<example>/<mode>/seed<N>` (kept: each is a normal search
//! directory; `evomerge trials DIR/search` lists its trials with items and tokens).

#[path = "../examples/world/mod.rs"]
mod world;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use evomerge_evolve::Journal;

struct Run {
    tokens: u64,
    answers: u64,
    seconds: f64,
    best_fitness: f64,
    test: Vec<f64>,
}

fn main() -> anyhow::Result<()> {
    let mut examples = vec!["evovlm".to_string(), "evollm".to_string()];
    let mut seeds = vec![0u64, 1, 2];
    let mut modes: Vec<String> = ["full", "{subset: 20}", "racing", "{irt: 20}", "{irt: 8}"].map(String::from).to_vec();
    let mut trials = 150u64;
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--examples" => examples = value()?.split(',').map(String::from).collect(),
            "--seeds" => seeds = value()?.split(',').map(|s| s.parse()).collect::<Result<_, _>>().context("--seeds: numbers")?,
            "--modes" => modes = value()?.split(';').map(String::from).collect(),
            "--trials" => trials = value()?.parse().context("--trials: a number")?,
            other => anyhow::bail!("unknown option {other:?}; use --examples, --seeds, --modes 'full;racing;{{irt: 20}}', --trials"),
        }
    }
    anyhow::ensure!(modes.first().map(String::as_str) == Some("full"), "the first mode must be `full` (every other is compared with it)");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/budget-bench");
    let mut table = String::from(
        "| example | budget | seed | generated tokens | answers | fewer tokens than full | seconds | full-set search fitness of best/ | test score | test − full (95 % CI) |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for example in &examples {
        let exp = match example.as_str() {
            "evovlm" => world::evovlm(),
            "evollm" => world::evollm(),
            other => anyhow::bail!("unknown example {other}"),
        };
        for &seed in &seeds {
            let mut full: Option<Run> = None;
            for mode in &modes {
                let slug: String = mode.chars().filter(|c| c.is_alphanumeric() || *c == '_').collect();
                let out = root.join(example).join(&slug).join(format!("seed{seed}"));
                let _ = std::fs::remove_dir_all(&out);
                let opts = world::Options {
                    out: out.clone(),
                    seed,
                    trials,
                    search_limit: None,
                    test_limit: None,
                    budget: Some(mode.clone()),
                    compare: false,
                };
                let started = Instant::now();
                let summary = world::run(&exp, &opts)?;
                let seconds = started.elapsed().as_secs_f64();
                let journal = Journal::open_existing(&summary.search_dir.join("journal.sqlite"))?;
                let trials = journal.trials()?;
                let run = Run {
                    tokens: trials.iter().filter_map(|t| t.generated_tokens).sum(),
                    answers: trials.iter().filter_map(|t| t.items).sum(),
                    seconds,
                    best_fitness: summary.best_fitness,
                    test: summary.evolved_items.clone(),
                };
                let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
                let (ratio, versus) = match &full {
                    None => ("1.0×".to_string(), "—".to_string()),
                    Some(f) => {
                        let (d, lo, hi) = world::paired_bootstrap(&run.test, &f.test, 1000, seed);
                        let verdict = if lo > 0.0 { "better" } else if hi < 0.0 { "worse" } else { "same" };
                        (format!("{:.1}×", f.tokens as f64 / run.tokens.max(1) as f64), format!("{d:+.4} [{lo:+.4}, {hi:+.4}] {verdict}"))
                    }
                };
                let row = format!(
                    "| {example} | `{mode}` | {seed} | {} | {} | {ratio} | {:.0} | {:.4} | {:.4} | {versus} |\n",
                    run.tokens,
                    run.answers,
                    run.seconds,
                    run.best_fitness,
                    mean(&run.test),
                );
                eprint!("{row}");
                table.push_str(&row);
                if full.is_none() {
                    full = Some(run);
                }
            }
        }
    }
    println!("\n{table}");
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("table.md"), &table)?;
    Ok(())
}
