//! The search: a parameter-space phase (`genome:`), a data-flow-space phase (`dfs:`), or both
//! (PS+DFS: the DFS pool holds the PS result), run through one loop ([`crate::phase`]) over one
//! journal. Everything that can be refused is refused before a model is read.

use std::path::{Path, PathBuf};
use std::time::Instant;

use evomerge_checkpoint::Checkpoint;
use evomerge_merge::layout::Layout;
use evomerge_merge::{model_refs, InMemoryMerger, MergeConfig, ResidentSource, TensorSource};

use crate::budget::Budgeter;
use crate::dfs::{DfsSpace, DfsSpec};
use crate::device_merge::DeviceMerge;
use crate::error::{EvolveError, Result};
use crate::export;
use crate::fitness::{score_live, Scorer, Task};
use crate::generators::FeatureCache;
use crate::genome::{GenomeSpace, SearchSpace};
use crate::journal::{Location, PhaseKind, TrialOutcome, TrialRecord};
use crate::live::{candle_dtype, parse_device, Live};
use crate::phase::{run_phase, Phase, PhaseSettings};
use crate::pool::DfsPhase;
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
    /// Where the journal lives: `None` for `out/journal.sqlite`, or a PostgreSQL URL.
    pub journal: Option<Location>,
    /// Evaluate candidates in this process too (`--workers 0` makes it false: workers do it all).
    pub evaluate: bool,
    /// How long a claimed candidate stays claimed without a heartbeat.
    pub lease_seconds: f64,
    /// Overrides the recipe's `device` (`cpu`, `cuda`, `cuda:N`).
    pub device: Option<String>,
}

impl SearchOptions {
    /// Single-process defaults for the search in `out`.
    pub fn new(out: impl Into<PathBuf>) -> SearchOptions {
        SearchOptions {
            out: out.into(),
            seed: None,
            max_trials: None,
            progress: false,
            journal: None,
            evaluate: true,
            lease_seconds: DEFAULT_LEASE_SECONDS,
            device: None,
        }
    }
}

/// A claim's lease when no heartbeat renews it: long enough for a stalled connection to recover,
/// short enough that a lost node's candidate is soon evaluated elsewhere.
pub const DEFAULT_LEASE_SECONDS: f64 = 60.0;

/// Study keys the coordinator writes for workers: the search's state (`running`/`done`), the
/// recipe's directory (relative paths in it) and the output directory (the PS result of PS+DFS).
pub const STATE_KEY: &str = "state";
pub const RECIPE_DIR_KEY: &str = "recipe_dir";
pub const OUT_KEY: &str = "out";

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
    /// Why a phase ended before its `max_trials` (CMA-ES's own stopping criteria), if one did.
    pub stopped: Option<String>,
}

/// The PS result's copy that a PS+DFS search puts in its pool (`best/` moves on to DFS paths).
pub const PS_BEST_DIR: &str = "ps-best";

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
    if let Some(device) = &options.device {
        crate::recipe::check_device(device).map_err(|m| EvolveError::recipe("--device", m))?;
        recipe.device = device.clone();
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
    let genome = recipe.ps_genome()?;
    let mut written: Vec<(String, String)> = genome
        .models
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("genome.models[{i}]"), m.clone()))
        .collect();
    if let Some(b) = &genome.base_model {
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
    let base = genome.base_model.as_ref().map(|_| refs.len() - 1);
    let output = match base {
        Some(b) if layouts[b].is_vlm() => b,
        _ => layouts.iter().position(Layout::is_vlm).or(base).unwrap_or(0),
    };
    Ok(OpenedModels { refs, checkpoints, num_layers, output, layouts })
}

/// The parameter-space part of a recipe, checked, nothing read yet.
pub(crate) struct PsPrepared {
    pub(crate) opened: OpenedModels,
    pub(crate) space: GenomeSpace,
    initial: MergeConfig,
    dtype: candle_core::DType,
}

/// The data-flow part: `dirs[k]` is `None` for `ps` (known once the PS phase has run).
pub(crate) struct DfsPrepared {
    pub(crate) space: DfsSpace,
    pub(crate) dirs: Vec<Option<PathBuf>>,
    pub(crate) dtype: candle_core::DType,
}

/// A recipe checked against its models and data, nothing read yet.
pub(crate) struct Prepared {
    pub(crate) recipe: EvolveRecipe,
    pub(crate) ps: Option<PsPrepared>,
    pub(crate) dfs: Option<DfsPrepared>,
    pub(crate) task: Task,
    pub(crate) budget: Budgeter,
    pub(crate) scorer: Option<Scorer>,
    pub(crate) device: candle_core::Device,
}

/// Everything that can be refused is refused here, before a model is read.
pub(crate) fn prepare(recipe: EvolveRecipe) -> Result<Prepared> {
    let ps = match &recipe.genome {
        Some(genome) => {
            let opened = open_models(&recipe)?;
            let space = GenomeSpace::new(&recipe, opened.num_layers)?;
            let initial = space.to_merge_config(&space.x0())?;
            if model_refs(&initial) != opened.refs {
                return Err(EvolveError::Model(format!("model order {:?} differs from {:?}", model_refs(&initial), opened.refs)));
            }
            let dtype = candle_dtype(&genome.dtype)?;
            Some(PsPrepared { opened, space, initial, dtype })
        }
        None => None,
    };
    let task = Task::load(&recipe)?;
    if let Some(ps) = &ps {
        if task.needs_images() && !ps.opened.layouts[ps.opened.output].is_vlm() {
            return Err(EvolveError::recipe("task", "the task's items have images but no source model is a vision-language model"));
        }
    }
    let dfs = match &recipe.dfs {
        Some(spec) => Some(prepare_dfs(&recipe, spec, ps.as_ref(), &task)?),
        None => None,
    };
    let scorer = if recipe.task.metric.generates() { Some(Scorer::new(recipe.task.metric)?) } else { None };
    let device = parse_device(&recipe.device)?;
    let budget = Budgeter::new(&task, recipe.optimizer.seed)?;
    Ok(Prepared { recipe, ps, dfs, task, budget, scorer, device })
}

/// Check the pool's models from their headers: plain language models of one layer shape.
fn prepare_dfs(recipe: &EvolveRecipe, spec: &DfsSpec, ps: Option<&PsPrepared>, task: &Task) -> Result<DfsPrepared> {
    if task.needs_images() {
        return Err(EvolveError::recipe("dfs", "the task's items have images; the data-flow search runs on language models"));
    }
    let mut configs: Vec<(String, evomerge_mistral::Config)> = Vec::new();
    let mut dirs = Vec::new();
    for (i, m) in spec.models.iter().enumerate() {
        let key = format!("dfs.models[{i}]");
        let (config, layout, dir) = if DfsSpec::is_ps(m) {
            let ps = ps.ok_or_else(|| EvolveError::recipe(&key, "`ps` needs a `genome:` section"))?;
            let out = &ps.opened.checkpoints[ps.opened.output];
            (out.config().clone(), ps.opened.layouts[ps.opened.output], None)
        } else {
            let resolved = recipe.resolve_model(m);
            let ckpt = Checkpoint::open(&resolved).map_err(|e| EvolveError::recipe(&key, format!("cannot open `{m}`: {e}")))?;
            let names: Vec<String> = ckpt.tensor_names().into_iter().map(str::to_string).collect();
            let layout = Layout::detect(Some(ckpt.config()), &names);
            (ckpt.config().clone(), layout, Some(ckpt.dir().to_path_buf()))
        };
        if layout.is_vlm() {
            return Err(EvolveError::recipe(
                &key,
                format!("`{m}` is a vision-language model; the data-flow search runs on language models (merge its LLM in parameter space)"),
            ));
        }
        let config = evomerge_mistral::Config::from_json(&config)
            .map_err(|e| EvolveError::recipe(&key, format!("`{m}`: {e}")))?;
        if config.model_type == evomerge_mistral::ModelType::EvoMistral {
            return Err(EvolveError::recipe(&key, format!("`{m}` is already an evomistral path; give the models it was made from")));
        }
        if let Some((first, c0)) = configs.first() {
            c0.layers_compatible(&config).map_err(|e| {
                EvolveError::recipe(&key, format!("`{m}` cannot share a layer pool with `{first}`: {e}"))
            })?;
        }
        configs.push((m.clone(), config));
        dirs.push(dir);
    }
    let layers = configs.iter().map(|(_, c)| c.num_hidden_layers).collect();
    let space = DfsSpace::new(spec, layers, recipe.optimizer.sigma0)?;
    let dtype = candle_dtype(recipe.dfs_dtype())?;
    Ok(DfsPrepared { space, dirs, dtype })
}

/// Read the sources into memory (once per run).
pub(crate) fn load_sources(opened: &mut OpenedModels) -> Result<Vec<ResidentSource>> {
    tracing::info!("reading {} source models into memory", opened.checkpoints.len());
    let resident = opened.checkpoints.iter().map(ResidentSource::load).collect::<std::result::Result<Vec<_>, _>>()?;
    opened.checkpoints.clear();
    Ok(resident)
}

/// The parameter-space phase: each candidate is merged in memory into the live model's storage.
pub(crate) struct PsPhase<'a> {
    space: &'a GenomeSpace,
    merger: InMemoryMerger<'a>,
    /// Loaded at the first evaluation: a coordinator that only coordinates (`--workers 0`) needs
    /// the sources (to export best/) but no model on the device.
    live: Option<Live>,
    /// On an accelerator: the sources resident there, for the candidate merge on the device.
    device_merge: Option<DeviceMerge>,
    live_from: (PathBuf, Layout, candle_core::Device, candle_core::DType),
    task: &'a Task,
    metric: Metric,
    scorer: Option<&'a Scorer>,
    features: FeatureCache,
    seed: u64,
}

impl<'a> PsPhase<'a> {
    pub(crate) fn new(p: &'a Prepared, ps: &'a PsPrepared, resident: &'a [ResidentSource]) -> Result<Self> {
        let sources: Vec<&dyn TensorSource> = resident.iter().map(|r| r as &dyn TensorSource).collect();
        let seed = p.recipe.optimizer.seed;
        let merger = InMemoryMerger::from_sources(&ps.initial, sources, seed)?;
        let dir = resident[ps.opened.output]
            .files_dir()
            .ok_or_else(|| EvolveError::Model("the output model has no directory".into()))?
            .to_path_buf();
        Ok(PsPhase {
            space: &ps.space,
            merger,
            live: None,
            device_merge: None,
            live_from: (dir, ps.opened.layouts[ps.opened.output], p.device.clone(), ps.dtype),
            task: &p.task,
            metric: p.recipe.task.metric,
            scorer: p.scorer.as_ref(),
            features: FeatureCache::new(),
            seed,
        })
    }
}

impl Phase for PsPhase<'_> {
    fn kind(&self) -> PhaseKind {
        PhaseKind::Ps
    }
    fn space(&self) -> &dyn SearchSpace {
        self.space
    }

    fn prepare_evaluation(&mut self) -> Result<()> {
        if self.live.is_none() {
            let (dir, layout, device, dtype) = &self.live_from;
            self.live = Some(Live::load(dir, *layout, device, *dtype)?);
            if !device.is_cpu() {
                let merge = DeviceMerge::new(&self.merger, device)?;
                tracing::info!(
                    tensors = merge.len(),
                    "candidate merge on {}: sources of {} tensors resident there, the others merged on the CPU",
                    crate::generators::device_name(device),
                    merge.len()
                );
                self.device_merge = Some(merge);
            }
        }
        Ok(())
    }

    /// Merge candidate `x` into the live model.
    fn set_candidate(&mut self, x: &[f64]) -> Result<f64> {
        let config: MergeConfig = self.space.to_merge_config(x)?;
        self.prepare_evaluation()?;
        let merge_started = Instant::now();
        self.merger.set_config(&config)?;
        let Some(live) = self.live.as_mut() else { return Err(EvolveError::Model("the live model did not load".into())) };
        match &self.device_merge {
            Some(device) => {
                let out_dtype = if live.llm().dtype() == candle_core::DType::BF16 {
                    candle_core::DType::BF16
                } else {
                    candle_core::DType::F32
                };
                let done = device.merge_into(&self.merger, out_dtype, |t, merged| live.write_tensor(&t.name, merged))?;
                self.merger.merge_into_except(false, |i| done[i], |view| live.write(view))?;
            }
            None => self.merger.merge_into(false, |view| live.write(view))?,
        }
        Ok(merge_started.elapsed().as_secs_f64())
    }

    fn score_items(&mut self, items: Option<&[usize]>) -> Result<TrialOutcome> {
        let Some(live) = self.live.as_ref() else { return Err(EvolveError::Model("no candidate was merged".into())) };
        match items {
            None => score_live(live, self.metric, self.task, self.scorer, &mut self.features),
            Some(ids) => score_live(live, self.metric, &self.task.select(ids)?, self.scorer, &mut self.features),
        }
    }

    fn export_best(&mut self, out: &Path, record: &TrialRecord) -> Result<()> {
        export::export_best(out, self.space, record, &mut self.merger, self.seed)
    }
}

/// Score the recipe's initial genome (every gene at its `init`; for a DFS-only recipe the first
/// model's own path) without a journal: the baseline a search should beat.
pub fn evaluate_initial(recipe_path: &Path, options: &SearchOptions) -> Result<TrialOutcome> {
    let mut p = prepare(effective_recipe(recipe_path, options)?)?;
    if let Some(mut ps) = p.ps.take() {
        let resident = load_sources(&mut ps.opened)?;
        let mut phase = PsPhase::new(&p, &ps, &resident)?;
        phase.prepare_evaluation()?;
        let x0 = phase.space().x0();
        return phase.evaluate(&x0);
    }
    let dfs = p.dfs.as_ref().ok_or_else(|| EvolveError::recipe("(top level)", "nothing to search"))?;
    let dirs: Vec<PathBuf> = dfs.dirs.iter().flatten().cloned().collect();
    let mut phase = DfsPhase::load(dfs.space.clone(), &dirs, &p.device, dfs.dtype, &p.task, p.recipe.task.metric, p.scorer.as_ref())?;
    let x0 = phase.space().x0();
    phase.evaluate(&x0)
}

/// Run (or resume) the search of `recipe_path` into `options.out`.
pub fn run(recipe_path: &Path, options: &SearchOptions) -> Result<SearchReport> {
    let started = Instant::now();
    let mut p = prepare(effective_recipe(recipe_path, options)?)?;
    let out = options.out.clone();
    let journal = export::prepare_out_dir(&out, &p.recipe, options.journal.as_ref())?;
    if let Some(dir) = p.recipe.recipe_dir.as_ref().and_then(|d| std::fs::canonicalize(if d.as_os_str().is_empty() { Path::new(".") } else { d }).ok()) {
        journal.set_study_value(RECIPE_DIR_KEY, &dir.to_string_lossy())?;
    }
    let out_abs = std::fs::canonicalize(&out).unwrap_or_else(|_| out.clone());
    journal.set_study_value(OUT_KEY, &out_abs.to_string_lossy())?;
    // Last: a worker joins once the state is set, so everything above is there when it reads it.
    journal.set_study_value(STATE_KEY, "running")?;
    let metric = p.recipe.task.metric.name();
    let optimizer = p.recipe.optimizer.clone();
    let mut best: Option<TrialRecord> = None;
    let mut next_trial = 0u64;
    let mut evaluated = 0u64;
    let mut stopped = None;
    let reports = |journal: &crate::journal::Journal, _: Option<&TrialRecord>| export::write_reports(&out, journal, metric);

    if let Some(mut ps) = p.ps.take() {
        let genes: Vec<&String> = ps.space.genes.iter().map(|g| &g.name).collect();
        journal.set_study_value("genes", &serde_json::to_string(&genes).map_err(|e| EvolveError::Fitness(e.to_string()))?)?;
        let resident = load_sources(&mut ps.opened)?;
        let mut phase = PsPhase::new(&p, &ps, &resident)?;
        let settings = PhaseSettings {
            sigma0: optimizer.sigma0,
            population: optimizer.population,
            seed: optimizer.seed,
            max_trials: optimizer.max_trials,
            first_trial: 0,
            progress: options.progress,
            metric,
            evaluate: options.evaluate,
            lease_seconds: options.lease_seconds,
        };
        let report = run_phase(&mut phase, &p.budget, &journal, &out, &settings, &mut best, reports)?;
        next_trial = report.next_trial;
        evaluated += report.evaluated;
        stopped = report.stopped.map(|r| format!("parameter space: {r}"));
    }

    if let (Some(dfs), Some(spec)) = (p.dfs.take(), p.recipe.dfs.as_ref()) {
        let dirs = dfs
            .dirs
            .iter()
            .map(|d| match d {
                Some(dir) => Ok(dir.clone()),
                None => ps_result(&out, best.as_ref()),
            })
            .collect::<Result<Vec<_>>>()?;
        let names = dfs.space.names();
        journal.set_study_value("dfs_genes", &serde_json::to_string(&names).map_err(|e| EvolveError::Fitness(e.to_string()))?)?;
        let mut phase = DfsPhase::load(dfs.space, &dirs, &p.device, dfs.dtype, &p.task, p.recipe.task.metric, p.scorer.as_ref())?;
        let settings = PhaseSettings {
            sigma0: optimizer.sigma0,
            population: spec.population.unwrap_or(optimizer.population),
            seed: optimizer.seed,
            max_trials: spec.max_trials.unwrap_or(optimizer.max_trials),
            first_trial: next_trial,
            progress: options.progress,
            metric,
            evaluate: options.evaluate,
            lease_seconds: options.lease_seconds,
        };
        let report = run_phase(&mut phase, &p.budget, &journal, &out, &settings, &mut best, reports)?;
        evaluated += report.evaluated;
        if let Some(r) = report.stopped {
            stopped = Some(format!("data flow space: {r}"));
        }
    }
    export::write_reports(&out, &journal, metric)?;
    journal.set_study_value(STATE_KEY, "done")?;
    let finished = journal.trials()?.iter().filter(|t| t.status.is_finished()).count() as u64;
    Ok(SearchReport { out, trials: finished, evaluated, best, seconds: started.elapsed().as_secs_f64(), stopped })
}

/// The PS result for a PS+DFS pool: `out/ps-best/`, copied from `best/` once the PS phase is over
/// (later, `best/` may hold a DFS path).
fn ps_result(out: &Path, best: Option<&TrialRecord>) -> Result<PathBuf> {
    let dir = out.join(PS_BEST_DIR);
    if dir.join("config.json").is_file() {
        return Ok(dir);
    }
    let best = best.filter(|b| b.phase == PhaseKind::Ps).ok_or_else(|| {
        EvolveError::Fitness("the parameter-space phase finished no trial, so `ps` has no model for the data-flow pool".into())
    })?;
    let source = out.join(export::BEST_DIR);
    if export::read_best(out).is_none_or(|b| b.trial != best.trial) {
        return Err(EvolveError::OutputDir(format!("{} does not hold the parameter-space best (trial {})", source.display(), best.trial)));
    }
    let tmp = out.join(format!(".{PS_BEST_DIR}.tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| EvolveError::io(format!("creating {}", tmp.display()), e))?;
    let copy = || -> std::io::Result<()> {
        for entry in std::fs::read_dir(&source)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::copy(entry.path(), tmp.join(entry.file_name()))?;
            }
        }
        std::fs::File::open(&tmp)?.sync_all()
    };
    if let Err(e) = copy().and_then(|_| std::fs::rename(&tmp, &dir)) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(EvolveError::io(format!("copying {} to {}", source.display(), dir.display()), e));
    }
    Ok(dir)
}
