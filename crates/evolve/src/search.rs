//! The search loop. CMA-ES asks a whole generation; each candidate is merged into the live model
//! and scored; the generation is told back in candidate order. Every trial is journalled before it
//! is evaluated (`running`) and after (`complete`/`failed`). On start, the optimiser is rebuilt by
//! replaying the journal: the same seed asks the same candidates, finished trials are told their
//! recorded fitness, and only what is missing is evaluated. So a search killed at any point and
//! started again with the same command records exactly what an uninterrupted one would have.

use std::path::{Path, PathBuf};
use std::time::Instant;

use evomerge_checkpoint::Checkpoint;
use evomerge_cmaes::{CmaEs, Config as CmaConfig};
use evomerge_merge::layout::Layout;
use evomerge_merge::{model_refs, InMemoryMerger, MergeConfig, ResidentSource, TensorSource};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{EvolveError, Result};
use crate::export;
use crate::fitness::{generation_fitness, Loglik, Scorer, Task};
use crate::generators::FeatureCache;
use crate::genome::GenomeSpace;
use crate::journal::{TrialOutcome, TrialRecord, TrialStatus};
use crate::live::{candle_dtype, parse_device, Live};
use crate::recipe::{EvolveRecipe, Metric};

/// How to run a search.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    pub out: PathBuf,
    /// Overrides `optimizer.seed`.
    pub seed: Option<u64>,
    /// Overrides `optimizer.max_trials`.
    pub max_trials: Option<u64>,
    /// Draw a progress bar (when stderr is a terminal).
    pub progress: bool,
}

/// What a search did.
#[derive(Debug, Clone)]
pub struct SearchReport {
    pub out: PathBuf,
    /// Trials finished in the journal (this run and earlier ones).
    pub trials: u64,
    /// Trials evaluated by this run.
    pub evaluated: u64,
    pub best: Option<TrialRecord>,
    pub seconds: f64,
    /// Why the search ended before `max_trials` (CMA-ES's own stopping criteria), if it did.
    pub stopped: Option<String>,
}

/// The recipe with the command line's overrides applied.
pub fn effective_recipe(recipe_path: &Path, options: &SearchOptions) -> Result<EvolveRecipe> {
    let mut recipe = EvolveRecipe::from_file(recipe_path)?;
    if let Some(seed) = options.seed {
        recipe.optimizer.seed = seed;
    }
    if let Some(n) = options.max_trials {
        if n == 0 {
            return Err(EvolveError::recipe("--max-trials", "must be at least 1"));
        }
        recipe.optimizer.max_trials = n;
    }
    Ok(recipe)
}

/// The models of a recipe, opened (headers only: nothing is read yet) and checked to merge.
pub struct OpenedModels {
    /// In the merge recipe's model order: genome models, then the base.
    pub refs: Vec<String>,
    pub checkpoints: Vec<Checkpoint>,
    pub num_layers: usize,
    /// Index of the model whose layout, config and non-LLM tensors the output takes.
    pub output: usize,
    pub layouts: Vec<Layout>,
}

pub fn open_models(recipe: &EvolveRecipe) -> Result<OpenedModels> {
    let mut written: Vec<(String, String)> = recipe
        .genome
        .models
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("genome.models[{i}]"), m.clone()))
        .collect();
    if let Some(b) = &recipe.genome.base_model {
        written.push(("genome.base_model".into(), b.clone()));
    }
    let mut checkpoints = Vec::new();
    let mut refs = Vec::new();
    for (key, m) in &written {
        let resolved = recipe.resolve_model(m);
        let ckpt = Checkpoint::open(&resolved).map_err(|e| EvolveError::recipe(key, format!("cannot open `{m}`: {e}")))?;
        refs.push(resolved);
        checkpoints.push(ckpt);
    }
    // The language model's architecture: a VLM's `text_config`, or the suffix of an original
    // LLaVA's `llava_<llm>` model type.
    let describe = |c: &Checkpoint| {
        let config = c.config();
        let model_type = config
            .get("text_config")
            .and_then(|t| t.get("model_type"))
            .or_else(|| config.get("model_type"))
            .and_then(|v| v.as_str())
            .map(|t| t.strip_prefix("llava_").unwrap_or(t).to_string())
            .unwrap_or_else(|| "unknown".into());
        (model_type, c.num_layers(), c.hidden_size())
    };
    let first = describe(&checkpoints[0]);
    for (i, c) in checkpoints.iter().enumerate().skip(1) {
        let d = describe(c);
        if d != first {
            return Err(EvolveError::recipe(
                &written[i].0,
                format!(
                    "`{}` is a {} model with {:?} layers and hidden size {:?}, but `{}` is a {} model with {:?} layers and hidden size {:?}; \
                     parameter-space merging needs models of one architecture",
                    written[i].1, d.0, d.1, d.2, written[0].1, first.0, first.1, first.2
                ),
            ));
        }
    }
    let num_layers = first.1.ok_or_else(|| EvolveError::recipe(&written[0].0, "config.json does not say num_hidden_layers"))?;
    let layouts: Vec<Layout> = checkpoints
        .iter()
        .map(|c| {
            let names: Vec<String> = c.tensor_names().into_iter().map(str::to_string).collect();
            Layout::detect(Some(c.config()), &names)
        })
        .collect();
    // The output is a VLM whenever a source is one: the base if it is a VLM, else the first VLM;
    // otherwise the base (or the first model).
    let base = recipe.genome.base_model.as_ref().map(|_| refs.len() - 1);
    let output = match base {
        Some(b) if layouts[b].is_vlm() => b,
        _ => layouts.iter().position(Layout::is_vlm).or(base).unwrap_or(0),
    };
    Ok(OpenedModels { refs, checkpoints, num_layers, output, layouts })
}

/// A recipe checked against its models and data, nothing read yet.
struct Prepared {
    recipe: EvolveRecipe,
    opened: OpenedModels,
    space: GenomeSpace,
    initial: MergeConfig,
    task: Task,
    scorer: Option<Scorer>,
    device: candle_core::Device,
    dtype: candle_core::DType,
}

/// Everything that can be refused is refused here, before a model is read.
fn prepare(recipe: EvolveRecipe) -> Result<Prepared> {
    let opened = open_models(&recipe)?;
    let space = GenomeSpace::new(&recipe, opened.num_layers)?;
    let initial = space.to_merge_config(&space.x0())?;
    if model_refs(&initial) != opened.refs {
        return Err(EvolveError::Model(format!("model order {:?} differs from {:?}", model_refs(&initial), opened.refs)));
    }
    let task = Task::load(&recipe)?;
    if task.needs_images() && !opened.layouts[opened.output].is_vlm() {
        return Err(EvolveError::recipe("task", "the task's items have images but no source model is a vision-language model"));
    }
    let scorer = if recipe.task.metric.generates() { Some(Scorer::new(recipe.task.metric)?) } else { None };
    let device = parse_device(&recipe.device)?;
    let dtype = candle_dtype(&recipe.genome.dtype)?;
    Ok(Prepared { recipe, opened, space, initial, task, scorer, device, dtype })
}

/// Read the sources into memory (once per run).
fn load_sources(opened: &mut OpenedModels) -> Result<Vec<ResidentSource>> {
    tracing::info!("reading {} source models into memory", opened.checkpoints.len());
    let resident = opened.checkpoints.iter().map(ResidentSource::load).collect::<std::result::Result<Vec<_>, _>>()?;
    opened.checkpoints.clear();
    Ok(resident)
}

/// The live model: the output model's directory, loaded once.
fn load_live(p: &Prepared, resident: &[ResidentSource]) -> Result<Live> {
    let dir = resident[p.opened.output]
        .files_dir()
        .ok_or_else(|| EvolveError::Model("the output model has no directory".into()))?
        .to_path_buf();
    Live::load(&dir, p.opened.layouts[p.opened.output], &p.device, p.dtype)
}

/// Score the recipe's initial genome (every gene at its `init`) without a journal: the baseline a
/// search should beat.
pub fn evaluate_initial(recipe_path: &Path, options: &SearchOptions) -> Result<TrialOutcome> {
    let mut p = prepare(effective_recipe(recipe_path, options)?)?;
    let resident = load_sources(&mut p.opened)?;
    let sources: Vec<&dyn TensorSource> = resident.iter().map(|r| r as &dyn TensorSource).collect();
    let mut merger = InMemoryMerger::from_sources(&p.initial, sources, p.recipe.optimizer.seed)?;
    let mut live = load_live(&p, &resident)?;
    evaluate(&p.space, &p.space.x0(), &mut merger, &mut live, &p.task, p.scorer.as_ref(), &mut FeatureCache::new())
}

/// Run (or resume) the search of `recipe_path` into `options.out`.
pub fn run(recipe_path: &Path, options: &SearchOptions) -> Result<SearchReport> {
    let started = Instant::now();
    let mut p = prepare(effective_recipe(recipe_path, options)?)?;
    let journal = export::prepare_out_dir(&options.out, &p.recipe)?;
    let genes: Vec<&String> = p.space.genes.iter().map(|g| &g.name).collect();
    journal.set_study_value("genes", &serde_json::to_string(&genes).map_err(|e| EvolveError::Fitness(e.to_string()))?)?;

    let resident = load_sources(&mut p.opened)?;
    let sources: Vec<&dyn TensorSource> = resident.iter().map(|r| r as &dyn TensorSource).collect();
    let seed = p.recipe.optimizer.seed;
    let mut merger = InMemoryMerger::from_sources(&p.initial, sources, seed)?;
    let mut live = load_live(&p, &resident)?;
    let mut features = FeatureCache::new();
    let (recipe, space, task, scorer) = (&p.recipe, &p.space, &p.task, p.scorer.as_ref());

    let mut cma = CmaConfig::new(space.x0(), recipe.optimizer.sigma0).with_bounds(space.lower(), space.upper()).with_seed(seed);
    if recipe.optimizer.population > 0 {
        cma = cma.with_popsize(recipe.optimizer.population);
    }
    let mut es = CmaEs::new(cma)?;
    let max_trials = recipe.optimizer.max_trials;

    let bar = progress_bar(options.progress, max_trials);
    let mut best: Option<TrialRecord> = None;
    let mut trial = 0u64;
    let mut evaluated = 0u64;
    let mut stopped = None;
    let worker = format!("{}:{}", hostname(), std::process::id());
    let mut generation = 0u64;
    'search: while trial < max_trials {
        if es.is_stopped() {
            stopped = es.stop_reason().map(|r| format!("{r:?}"));
            break;
        }
        let candidates = es.ask()?;
        let mut told = Vec::with_capacity(candidates.len());
        for (c, x) in candidates.iter().enumerate() {
            if trial >= max_trials {
                break 'search;
            }
            let record = match journal.trial(trial)? {
                Some(r) if r.status != TrialStatus::Running => {
                    if r.genome != *x || r.generation != generation {
                        return Err(EvolveError::Journal {
                            path: journal.path().to_path_buf(),
                            message: format!(
                                "trial {trial} in the journal is not the candidate this recipe and seed ask for; \
                                 the journal was written by another version or recipe"
                            ),
                        });
                    }
                    r
                }
                _ => {
                    let params = space.params(x);
                    journal.start_trial(trial, generation, c as u64, x, &params, &worker)?;
                    let t0 = Instant::now();
                    let result = evaluate(space, x, &mut merger, &mut live, task, scorer, &mut features);
                    let seconds = t0.elapsed().as_secs_f64();
                    match &result {
                        Ok(outcome) => journal.finish_trial(trial, Ok(outcome), seconds)?,
                        Err(e) => {
                            tracing::warn!("trial {trial} failed: {e}");
                            journal.finish_trial(trial, Err(&e.to_string()), seconds)?;
                        }
                    }
                    evaluated += 1;
                    journal.trial(trial)?.ok_or_else(|| EvolveError::Journal {
                        path: journal.path().to_path_buf(),
                        message: format!("trial {trial} vanished from the journal"),
                    })?
                }
            };
            let improved = record.fitness.is_some_and(|f| best.as_ref().and_then(|b| b.fitness).is_none_or(|b| f > b));
            if improved {
                best = Some(record.clone());
            }
            bar.set_position(trial + 1);
            bar.set_message(format!(
                "gen {generation} best {} last {:.2}s",
                best.as_ref().and_then(|b| b.fitness).map_or("-".into(), |f| format!("{f:.4}")),
                record.seconds.unwrap_or(0.0)
            ));
            told.push(record.fitness);
            trial += 1;
            if improved && record.status == TrialStatus::Complete {
                export::export_best(&options.out, space, &record, &mut merger, seed)?;
            }
        }
        es.tell(&cma_fitness(&told))?;
        generation += 1;
        export::write_reports(&options.out, &journal, space, best.as_ref(), recipe)?;
    }
    bar.finish_and_clear();
    if let Some(b) = &best {
        export::ensure_best(&options.out, space, b, &mut merger, seed)?;
    }
    export::write_reports(&options.out, &journal, space, best.as_ref(), recipe)?;
    let finished = journal.trials()?.iter().filter(|t| t.status != TrialStatus::Running).count() as u64;
    Ok(SearchReport { out: options.out.clone(), trials: finished, evaluated, best, seconds: started.elapsed().as_secs_f64(), stopped })
}

/// Merge candidate `x` into the live model and score it.
pub fn evaluate(
    space: &GenomeSpace,
    x: &[f64],
    merger: &mut InMemoryMerger<'_>,
    live: &mut Live,
    task: &Task,
    scorer: Option<&Scorer>,
    features: &mut FeatureCache,
) -> Result<TrialOutcome> {
    let config: MergeConfig = space.to_merge_config(x)?;
    let merge_started = Instant::now();
    merger.set_config(&config)?;
    merger.merge_into(false, |view| live.write(view))?;
    let merge_seconds = merge_started.elapsed().as_secs_f64();
    let outcome = match (task.spec.metric, scorer) {
        (Metric::Loglik, _) => Loglik::evaluate(live, task, features),
        (_, Some(scorer)) => generation_fitness(live.generator(features).as_mut(), task, scorer),
        (_, None) => Err(EvolveError::Fitness("no scorer for a generation metric".into())),
    }?;
    Ok(TrialOutcome { merge_seconds, ..outcome })
}

/// CMA-ES minimises: tell the negated fitness; a failed candidate is told a value worse than every
/// finished one of its generation (a pure function of the journal, so a resumed run tells the same).
fn cma_fitness(told: &[Option<f64>]) -> Vec<f64> {
    let worst = told.iter().flatten().map(|f| -f).fold(f64::NEG_INFINITY, f64::max);
    let fail = if worst.is_finite() { worst + 1.0 + worst.abs() } else { 1e30 };
    told.iter().map(|f| f.map_or(fail, |v| -v)).collect()
}

fn progress_bar(enabled: bool, total: u64) -> ProgressBar {
    if !(enabled && std::io::IsTerminal::is_terminal(&std::io::stderr())) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("evolve {bar:30} trial {pos}/{len} {msg} eta {eta}") {
        bar.set_style(style);
    }
    bar
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}
