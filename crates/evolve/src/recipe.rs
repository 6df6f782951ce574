//! The evolve recipe: one YAML file with the genome (which merge parameters of which models are
//! genes), the task that scores a candidate, and the optimiser. Modelled on mergekit-evolve's
//! config (genome + tasks). Unknown keys are refused with their key path, and everything that can
//! be checked without loading a model is checked at parse time ([`EvolveRecipe::validate`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use evomerge_merge::methods::{self, BasePolicy};
use evomerge_merge::params::{ParamKind, ParamScope, Scalar};
use serde::{Deserialize, Serialize};

use crate::budget::Budget;
use crate::dfs::DfsSpec;
use crate::error::{EvolveError, Result};

/// A whole evolve recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvolveRecipe {
    /// The parameter-space search. Absent in a data-flow-only recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genome: Option<GenomeSpec>,
    /// The data-flow-space search (after the parameter-space one when both are given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dfs: Option<DfsSpec>,
    pub task: TaskSpec,
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    #[serde(default = "default_device")]
    pub device: String,
    /// Test-split evaluations of the best model and the sources once the search is over (`DIR/report.md`,
    /// `DIR/summary.json`). Absent: none after the search; `--final-eval` then uses the task kind's
    /// defaults ([`EvolveRecipe::final_eval_tasks`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_eval: Option<Vec<TaskSpec>>,
    /// Where relative paths (models, data, templates) are resolved when they do not exist relative
    /// to the working directory: the recipe file's directory.
    #[serde(skip)]
    pub recipe_dir: Option<PathBuf>,
}

/// The parameter-space genome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenomeSpec {
    pub merge_method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    pub models: Vec<String>,
    /// 0: one gene set per model; k: one per group of k consecutive layers (k divides the layers).
    #[serde(default)]
    pub layer_granularity: usize,
    /// Which merge parameters are genes (e.g. `[density, weight]`; slerp: `[t]`).
    pub parameters: Vec<String>,
    /// Merge parameters held fixed for the whole merge (e.g. `normalize: true`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fixed: BTreeMap<String, Scalar>,
    /// Search bounds per gene parameter (defaults: the method's range, else [0, 1]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bounds: BTreeMap<String, [f64; 2]>,
    /// Initial value per gene parameter (default: the middle of its bounds).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub init: BTreeMap<String, f64>,
    /// What the candidate model computes in and what `best/` is written in.
    #[serde(default = "default_dtype")]
    pub dtype: String,
}

/// What scores a candidate (higher is better).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub kind: TaskKind,
    /// A local file or directory, or a hub id (built-in kinds only; default: the kind's hub set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Which split of a built-in data set (`test` by default; `train` for the JA-VG-VQA-500 search set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// Use only the first `limit` items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    pub metric: Metric,
    /// `mgsm-ja`, `ja-vqa`, or a file holding a template with `{input}` (default: the kind's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default)]
    pub generation: GenerationSpec,
    /// How many search items a candidate answers (`full`, `{subset: N}`, `racing`, `{irt: N}`).
    #[serde(default, skip_serializing_if = "Budget::is_full")]
    pub budget: Budget,
    /// With a cheap budget: the top candidates of each phase re-scored on the full search set
    /// before `best/` is chosen (0: none).
    #[serde(default = "default_rescore", skip_serializing_if = "is_default_rescore")]
    pub rescore: usize,
}

fn default_rescore() -> usize {
    3
}
fn is_default_rescore(k: &usize) -> bool {
    *k == default_rescore()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    MgsmJa,
    Gsm8kJa,
    JaVgVqa,
    JaVlmWild,
    /// JSON lines `{"prompt": ..., "reference": ..., "image": optional path}`.
    Custom,
}

impl TaskKind {
    pub fn is_vqa(self) -> bool {
        matches!(self, TaskKind::JaVgVqa | TaskKind::JaVlmWild)
    }
    pub fn is_math(self) -> bool {
        matches!(self, TaskKind::MgsmJa | TaskKind::Gsm8kJa)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// The paper's MGSM rule: the last number of the answer equals the reference number.
    Accuracy,
    /// `accuracy` and the answer is Japanese (fastText `__label__ja` > 0.5).
    AccuracyJa,
    /// The paper's Japanese ROUGE-L (MeCab/UniDic-lite words), F-measure per item.
    RougeLJa,
    /// As `rouge-l-ja`, but a non-Japanese answer to a Japanese reference scores 0.
    RougeLJaStrict,
    /// The answer, trimmed, equals the reference, trimmed.
    Exact,
    /// Mean per-token log-likelihood of the reference given the prompt (teacher-forced).
    Loglik,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::AccuracyJa => "accuracy-ja",
            Metric::RougeLJa => "rouge-l-ja",
            Metric::RougeLJaStrict => "rouge-l-ja-strict",
            Metric::Exact => "exact",
            Metric::Loglik => "loglik",
        }
    }
    /// Metrics that generate text (all but `loglik`).
    pub fn generates(self) -> bool {
        self != Metric::Loglik
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationSpec {
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    #[serde(default = "one")]
    pub num_beams: usize,
    #[serde(default = "default_penalty")]
    pub repetition_penalty: f32,
    #[serde(default)]
    pub stop: Vec<String>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

impl Default for GenerationSpec {
    fn default() -> Self {
        GenerationSpec {
            max_new_tokens: default_max_new_tokens(),
            num_beams: 1,
            repetition_penalty: 1.0,
            stop: Vec::new(),
            batch_size: default_batch(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    #[serde(default = "default_optimizer")]
    pub name: String,
    #[serde(default = "default_sigma0")]
    pub sigma0: f64,
    /// 0: CMA-ES's default, 4 + ⌊3 ln n⌋.
    #[serde(default)]
    pub population: usize,
    #[serde(default = "default_max_trials")]
    pub max_trials: u64,
    #[serde(default)]
    pub seed: u64,
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        OptimizerSpec {
            name: default_optimizer(),
            sigma0: default_sigma0(),
            population: 0,
            max_trials: default_max_trials(),
            seed: 0,
        }
    }
}

/// `cpu`, `cuda` or `cuda:N`; otherwise what to write instead.
pub fn check_device(device: &str) -> std::result::Result<(), String> {
    let known = device == "cpu" || device == "cuda" || device.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok());
    if known {
        Ok(())
    } else {
        Err(format!("unknown device `{device}`; use cpu, cuda or cuda:N"))
    }
}

fn default_device() -> String {
    "cpu".into()
}
fn default_dtype() -> String {
    "bfloat16".into()
}
fn default_max_new_tokens() -> usize {
    512
}
fn one() -> usize {
    1
}
fn default_penalty() -> f32 {
    1.0
}
fn default_batch() -> usize {
    16
}
fn default_optimizer() -> String {
    "cma-es".into()
}
fn default_sigma0() -> f64 {
    1.0 / 6.0
}
fn default_max_trials() -> u64 {
    1000
}

/// Methods whose numeric parameters `evolve` can search.
pub const EVOLVABLE_METHODS: [&str; 16] = [
    "dare_ties",
    "ties",
    "task_arithmetic",
    "linear",
    "dare_linear",
    "slerp",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
    "sce",
    "nearswap",
    "nuslerp",
    "multislerp",
    "ram",
    "ramplus_tl",
];

/// The bounds and start of one gene parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeneRange {
    pub lower: f64,
    pub upper: f64,
    pub init: f64,
}

impl EvolveRecipe {
    /// Parse YAML text; unknown keys and type errors name their key path.
    pub fn from_yaml(text: &str) -> Result<Self> {
        let de = serde_norway::Deserializer::from_str(text);
        let recipe: EvolveRecipe = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." || path.is_empty() { "(top level)".to_string() } else { path };
            EvolveError::recipe(key, e.into_inner().to_string())
        })?;
        recipe.validate()?;
        Ok(recipe)
    }

    /// Read and validate a recipe file; relative paths in it may be relative to its directory.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EvolveError::RecipeFile {
            path: path.to_path_buf(),
            message: format!("cannot read it: {e}"),
        })?;
        let mut recipe = Self::from_yaml(&text).map_err(|e| match e {
            EvolveError::Recipe { key, message } => {
                EvolveError::RecipeFile { path: path.to_path_buf(), message: format!("{key}: {message}") }
            }
            other => other,
        })?;
        recipe.recipe_dir = path.parent().map(Path::to_path_buf);
        recipe.check_paths().map_err(|e| match e {
            EvolveError::Recipe { key, message } => {
                EvolveError::RecipeFile { path: path.to_path_buf(), message: format!("{key}: {message}") }
            }
            other => other,
        })?;
        Ok(recipe)
    }

    /// The recipe as stored in the journal and compared on resume: canonical JSON of every setting
    /// that changes the trial sequence (`optimizer.max_trials` may grow between runs, so it is left out).
    pub fn identity(&self) -> Result<String> {
        let mut value = serde_json::to_value(self).map_err(|e| EvolveError::recipe("(recipe)", e.to_string()))?;
        if let Some(opt) = value.get_mut("optimizer").and_then(|o| o.as_object_mut()) {
            opt.remove("max_trials");
        }
        // What is evaluated after the search, and where candidates are evaluated, do not change the search:
        // workers on other GPUs (or a resume on another machine) join it with their own `--device`.
        if let Some(top) = value.as_object_mut() {
            top.remove("final_eval");
            top.remove("device");
        }
        serde_json::to_string(&value).map_err(|e| EvolveError::recipe("(recipe)", e.to_string()))
    }

    /// Checks that need no file: method, gene names, bounds, task and optimiser settings.
    pub fn validate(&self) -> Result<()> {
        match (&self.genome, &self.dfs) {
            (None, None) => {
                return Err(EvolveError::recipe(
                    "(top level)",
                    "give a `genome:` section (parameter space), a `dfs:` section (data flow space), or both",
                ))
            }
            (None, Some(d)) if d.uses_ps() => {
                return Err(EvolveError::recipe("dfs.models", "`ps` names the parameter-space result, but the recipe has no `genome:` section"))
            }
            _ => {}
        }
        if let Some(g) = &self.genome {
            self.validate_genome(g)?;
        }
        if let Some(d) = &self.dfs {
            d.validate()?;
        }
        self.validate_task()?;
        self.validate_optimizer()
    }

    fn validate_genome(&self, g: &GenomeSpec) -> Result<()> {
        if !EVOLVABLE_METHODS.contains(&g.merge_method.as_str()) {
            return Err(EvolveError::recipe(
                "genome.merge_method",
                format!("`{}` cannot be evolved; use one of {}", g.merge_method, EVOLVABLE_METHODS.join(", ")),
            ));
        }
        let method = methods::get(&g.merge_method)?;
        if g.models.is_empty() {
            return Err(EvolveError::recipe("genome.models", "list at least one model"));
        }
        for (i, m) in g.models.iter().enumerate() {
            if g.models[..i].contains(m) || g.base_model.as_deref() == Some(m.as_str()) {
                return Err(EvolveError::recipe(format!("genome.models[{i}]"), format!("`{m}` is listed twice")));
            }
        }
        match (method.base_policy(), &g.base_model) {
            (BasePolicy::Required, None) => {
                return Err(EvolveError::recipe("genome.base_model", format!("{} needs a base_model", method.name())))
            }
            (BasePolicy::Ignored, Some(_)) => {
                return Err(EvolveError::recipe(
                    "genome.base_model",
                    format!("{} takes no base_model: list every model under genome.models", method.name()),
                ))
            }
            _ => {}
        }
        if let Some(message) = methods::count_error(method, g.models.len(), g.base_model.is_some()) {
            return Err(EvolveError::recipe("genome.models", format!("{message} (genome.models plus genome.base_model)")));
        }
        if g.parameters.is_empty() {
            return Err(EvolveError::recipe("genome.parameters", "name at least one merge parameter to evolve"));
        }
        for (i, p) in g.parameters.iter().enumerate() {
            let key = format!("genome.parameters[{i}]");
            if g.parameters[..i].contains(p) {
                return Err(EvolveError::recipe(key, format!("`{p}` is listed twice")));
            }
            let spec = method.parameters().iter().find(|s| s.name == p).ok_or_else(|| {
                EvolveError::recipe(&key, format!("{} has no parameter `{p}`; it has {}", method.name(), param_names(method)))
            })?;
            if !matches!(spec.kind, ParamKind::Float { .. }) {
                return Err(EvolveError::recipe(key, format!("`{p}` is not numeric and cannot be a gene; set it under genome.fixed")));
            }
            if g.fixed.contains_key(p) {
                return Err(EvolveError::recipe(format!("genome.fixed.{p}"), "is also a gene (genome.parameters); keep one"));
            }
        }
        for (name, value) in &g.fixed {
            let spec = method.parameters().iter().find(|s| s.name == name).ok_or_else(|| {
                EvolveError::recipe(
                    format!("genome.fixed.{name}"),
                    format!("{} has no parameter `{name}`; it has {}", method.name(), param_names(method)),
                )
            })?;
            spec.validate(value).map_err(|m| EvolveError::recipe(format!("genome.fixed.{name}"), m))?;
        }
        for name in g.bounds.keys().chain(g.init.keys()) {
            if !g.parameters.contains(name) {
                let which = if g.bounds.contains_key(name) { "bounds" } else { "init" };
                return Err(EvolveError::recipe(
                    format!("genome.{which}.{name}"),
                    format!("`{name}` is not a gene; genes are {:?}", g.parameters),
                ));
            }
        }
        for p in &g.parameters {
            self.gene_range(p)?;
        }
        if parse_dtype(&g.dtype).is_none() {
            return Err(EvolveError::recipe("genome.dtype", format!("unknown dtype `{}`; use float32, float16 or bfloat16", g.dtype)));
        }
        Ok(())
    }

    fn validate_optimizer(&self) -> Result<()> {
        let o = &self.optimizer;
        if o.name != "cma-es" {
            return Err(EvolveError::recipe("optimizer.name", format!("unknown optimizer `{}`; use cma-es", o.name)));
        }
        if !(o.sigma0.is_finite() && o.sigma0 > 0.0) {
            return Err(EvolveError::recipe("optimizer.sigma0", "must be a positive number"));
        }
        if o.population == 1 {
            return Err(EvolveError::recipe("optimizer.population", "must be 0 (CMA-ES's default) or at least 2"));
        }
        if o.max_trials == 0 {
            return Err(EvolveError::recipe("optimizer.max_trials", "must be at least 1"));
        }
        check_device(&self.device).map_err(|m| EvolveError::recipe("device", m))
    }

    fn validate_task(&self) -> Result<()> {
        validate_task_spec(&self.task, "task")?;
        self.task.budget.check().map_err(|m| EvolveError::recipe("task.budget", m))?;
        if matches!(self.task.budget, Budget::Irt { .. }) && matches!(self.task.metric, Metric::Loglik) {
            return Err(EvolveError::recipe(
                "task.budget",
                "the IRT budget models scores in [0, 1]; `loglik` is not one (use racing or a subset)",
            ));
        }
        for (i, t) in self.final_eval.iter().flatten().enumerate() {
            let at = format!("final_eval[{i}]");
            validate_task_spec(t, &at)?;
            if !t.budget.is_full() {
                return Err(EvolveError::recipe(format!("{at}.budget"), "a final evaluation answers every item; remove `budget`"));
            }
        }
        Ok(())
    }

    /// The final evaluations: the recipe's `final_eval`, else the paper's test sets for the task
    /// kind (MGSM-JA for the math kinds; JA-VG-VQA-500 and JA-VLM-Bench-In-the-Wild for VQA), with
    /// the paper's generation settings.
    pub fn final_eval_tasks(&self) -> Vec<TaskSpec> {
        if let Some(tasks) = &self.final_eval {
            return tasks.clone();
        }
        let spec = |kind, metric, generation| TaskSpec {
            kind,
            data: None,
            split: None,
            limit: None,
            metric,
            template: None,
            generation,
            budget: Budget::Full,
            rescore: default_rescore(),
        };
        let mgsm = GenerationSpec {
            max_new_tokens: 1024,
            num_beams: 1,
            repetition_penalty: 1.0,
            stop: ["Instruction:", "Instruction", "Response:", "Response"].map(String::from).to_vec(),
            batch_size: self.task.generation.batch_size,
        };
        let vqa = GenerationSpec { max_new_tokens: 512, num_beams: 5, repetition_penalty: 1.5, stop: Vec::new(), batch_size: self.task.generation.batch_size };
        match self.task.kind {
            TaskKind::MgsmJa | TaskKind::Gsm8kJa => vec![spec(TaskKind::MgsmJa, Metric::Accuracy, mgsm)],
            TaskKind::JaVgVqa | TaskKind::JaVlmWild => vec![
                spec(TaskKind::JaVgVqa, Metric::RougeLJa, vqa.clone()),
                spec(TaskKind::JaVlmWild, Metric::RougeLJa, vqa),
            ],
            TaskKind::Custom => Vec::new(),
        }
    }
}

fn validate_task_spec(t: &TaskSpec, at: &str) -> Result<()> {
        let ok = match t.kind {
            TaskKind::MgsmJa | TaskKind::Gsm8kJa => matches!(t.metric, Metric::Accuracy | Metric::AccuracyJa),
            TaskKind::JaVgVqa | TaskKind::JaVlmWild => {
                matches!(t.metric, Metric::RougeLJa | Metric::RougeLJaStrict | Metric::Exact | Metric::Loglik)
            }
            TaskKind::Custom => true,
        };
        if !ok {
            return Err(EvolveError::recipe(
                format!("{at}.metric"),
                format!("`{}` does not apply to task kind {:?}", t.metric.name(), t.kind),
            ));
        }
        if t.kind == TaskKind::Custom && t.data.is_none() {
            return Err(EvolveError::recipe(format!("{at}.data"), "a custom task needs a JSON-lines data file"));
        }
        if t.limit == Some(0) {
            return Err(EvolveError::recipe(format!("{at}.limit"), "must be at least 1"));
        }
        if t.kind == TaskKind::Custom && t.split.is_some() {
            return Err(EvolveError::recipe(format!("{at}.split"), "a custom task reads one file; `split` applies to the built-in kinds"));
        }
        let gen = &t.generation;
        if gen.max_new_tokens == 0 {
            return Err(EvolveError::recipe(format!("{at}.generation.max_new_tokens"), "must be at least 1"));
        }
        if gen.num_beams == 0 {
            return Err(EvolveError::recipe(format!("{at}.generation.num_beams"), "must be at least 1 (1 = greedy)"));
        }
        if !(gen.repetition_penalty.is_finite() && gen.repetition_penalty > 0.0) {
            return Err(EvolveError::recipe(format!("{at}.generation.repetition_penalty"), "must be a positive number"));
        }
        if gen.batch_size == 0 {
            return Err(EvolveError::recipe(format!("{at}.generation.batch_size"), "must be at least 1"));
        }
        if gen.stop.iter().any(String::is_empty) {
            return Err(EvolveError::recipe(format!("{at}.generation.stop"), "a stop string must not be empty"));
        }
        Ok(())
}

impl EvolveRecipe {
    /// Bounds and start of gene parameter `name`, checked against the method's range.
    pub fn gene_range(&self, name: &str) -> Result<GeneRange> {
        let genome = self.ps_genome()?;
        let method = methods::get(&genome.merge_method)?;
        let spec = method
            .parameters()
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| EvolveError::recipe("genome.parameters", format!("unknown parameter `{name}`")))?;
        let (min, max) = match spec.kind {
            ParamKind::Float { min, max } => (min, max),
            _ => (None, None),
        };
        let key = format!("genome.bounds.{name}");
        let [lower, upper] = match genome.bounds.get(name) {
            Some(b) => *b,
            None => [min.unwrap_or(0.0), max.unwrap_or(1.0)],
        };
        if !(lower.is_finite() && upper.is_finite() && lower < upper) {
            return Err(EvolveError::recipe(key, format!("[{lower}, {upper}] is not an interval (need lower < upper, finite)")));
        }
        if min.is_some_and(|m| lower < m) || max.is_some_and(|m| upper > m) {
            return Err(EvolveError::recipe(
                key,
                format!(
                    "[{lower}, {upper}] goes outside the range {} allows for `{name}`: [{}, {}]",
                    method.name(),
                    min.map_or("-inf".into(), |v| v.to_string()),
                    max.map_or("inf".into(), |v| v.to_string())
                ),
            ));
        }
        let init = genome.init.get(name).copied().unwrap_or((lower + upper) / 2.0);
        if !(init >= lower && init <= upper) {
            return Err(EvolveError::recipe(
                format!("genome.init.{name}"),
                format!("{init} is outside the bounds [{lower}, {upper}]"),
            ));
        }
        Ok(GeneRange { lower, upper, init })
    }

    /// Resolve a path written in the recipe: as given if it exists, else relative to the recipe.
    pub fn resolve_path(&self, written: &str) -> Option<PathBuf> {
        let direct = Path::new(written);
        if direct.exists() {
            return Some(direct.to_path_buf());
        }
        let joined = self.recipe_dir.as_ref()?.join(written);
        joined.exists().then_some(joined)
    }

    /// A model reference: an existing local directory (made absolute, so exported recipes work
    /// from anywhere), else the reference as written (a hub id).
    pub fn resolve_model(&self, written: &str) -> String {
        match self.resolve_path(written) {
            Some(p) => std::fs::canonicalize(&p).unwrap_or(p).to_string_lossy().into_owned(),
            None => written.to_string(),
        }
    }

    /// Checks of files named in the recipe (data, template) that need no model.
    pub fn check_paths(&self) -> Result<()> {
        let t = &self.task;
        if let Some(data) = &t.data {
            let local = self.resolve_path(data);
            let hub_like = is_hub_id(data);
            if local.is_none() && (t.kind == TaskKind::Custom || !hub_like) {
                return Err(EvolveError::recipe("task.data", format!("`{data}` does not exist (relative paths are tried from the working directory and the recipe's directory)")));
            }
        }
        if let Some(template) = &t.template {
            if !matches!(template.as_str(), "mgsm-ja" | "ja-vqa") {
                let path = self.resolve_path(template).ok_or_else(|| {
                    EvolveError::recipe("task.template", format!("`{template}` is neither mgsm-ja, ja-vqa nor an existing file"))
                })?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| EvolveError::recipe("task.template", format!("cannot read {}: {e}", path.display())))?;
                if !text.contains("{input}") {
                    return Err(EvolveError::recipe("task.template", format!("{} has no {{input}} placeholder", path.display())));
                }
            }
        }
        let mut models: Vec<(String, &String)> = Vec::new();
        if let Some(g) = &self.genome {
            models.extend(g.models.iter().enumerate().map(|(i, m)| (format!("genome.models[{i}]"), m)));
            models.extend(g.base_model.iter().map(|b| ("genome.base_model".to_string(), b)));
        }
        if let Some(d) = &self.dfs {
            models.extend(
                d.models.iter().enumerate().filter(|(_, m)| !DfsSpec::is_ps(m)).map(|(i, m)| (format!("dfs.models[{i}]"), m)),
            );
        }
        for (key, m) in models {
            if self.resolve_path(m).is_none() && !is_hub_id(m) {
                return Err(EvolveError::recipe(key, format!("`{m}` is neither a local directory nor a hub id")));
            }
        }
        Ok(())
    }

    /// Scope of a gene parameter: shared genes are one per layer group, the others one per model
    /// and layer group.
    pub fn is_shared(&self, name: &str) -> bool {
        self.genome
            .as_ref()
            .and_then(|g| methods::get(&g.merge_method).ok())
            .and_then(|m| m.parameters().iter().find(|s| s.name == name))
            .is_some_and(|s| s.scope == ParamScope::Shared)
    }
}

impl EvolveRecipe {
    /// The parameter-space genome, or an error saying the recipe has none.
    pub fn ps_genome(&self) -> Result<&GenomeSpec> {
        self.genome.as_ref().ok_or_else(|| EvolveError::recipe("genome", "this recipe has no `genome:` section (parameter space)"))
    }

    /// The dtype of the data-flow search's pool model (and its `best/`): `dfs.dtype`, else the genome's.
    pub fn dfs_dtype(&self) -> &str {
        match (&self.dfs, &self.genome) {
            (Some(DfsSpec { dtype: Some(d), .. }), _) => d,
            (_, Some(g)) => &g.dtype,
            _ => "bfloat16",
        }
    }
}

fn param_names(method: &dyn methods::MergeMethod) -> String {
    method.parameters().iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

/// `owner/name` with nothing path-like about it.
fn is_hub_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else { return false };
    let ok = |p: &str| !p.is_empty() && !p.starts_with('.') && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    ok(a) && ok(b)
}

/// Recipe dtype names.
pub fn parse_dtype(name: &str) -> Option<evomerge_checkpoint::Dtype> {
    evomerge_checkpoint::Dtype::parse(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
genome:
  merge_method: dare_ties
  base_model: org/base
  models: [org/a, org/b]
  parameters: [density, weight]
task:
  kind: gsm8k-ja
  metric: accuracy
";

    #[test]
    fn minimal_recipe_parses_with_defaults() {
        let r = EvolveRecipe::from_yaml(MINIMAL).unwrap();
        assert_eq!(r.optimizer.max_trials, 1000);
        assert_eq!(r.ps_genome().unwrap().dtype, "bfloat16");
        assert_eq!(r.gene_range("density").unwrap(), GeneRange { lower: 0.0, upper: 1.0, init: 0.5 });
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let text = MINIMAL.replace("  parameters:", "  paramters: [x]\n  parameters:");
        let e = EvolveRecipe::from_yaml(&text).unwrap_err().to_string();
        assert!(e.contains("genome") && e.contains("paramters"), "{e}");
        let text = format!("{MINIMAL}  generation: {{max_new_token: 3}}\n");
        let e = EvolveRecipe::from_yaml(&text).unwrap_err().to_string();
        assert!(e.contains("task.generation") && e.contains("max_new_token"), "{e}");
    }

    #[test]
    fn bounds_outside_the_method_range_are_refused() {
        let text = MINIMAL.replace("  parameters: [density, weight]", "  parameters: [density, weight]\n  bounds: {density: [0.0, 1.5]}");
        let e = EvolveRecipe::from_yaml(&text).unwrap_err().to_string();
        assert!(e.contains("genome.bounds.density"), "{e}");
        let text = MINIMAL.replace("  parameters: [density, weight]", "  parameters: [density, weight]\n  init: {weight: 2.0}");
        let e = EvolveRecipe::from_yaml(&text).unwrap_err().to_string();
        assert!(e.contains("genome.init.weight"), "{e}");
    }

    #[test]
    fn genes_must_be_numeric_parameters_of_the_method() {
        let text = MINIMAL.replace("[density, weight]", "[density, lambda_x]");
        let e = EvolveRecipe::from_yaml(&text).unwrap_err().to_string();
        assert!(e.contains("genome.parameters[1]"), "{e}");
        let text = MINIMAL.replace("[density, weight]", "[density, normalize]");
        let e = EvolveRecipe::from_yaml(&text).unwrap_err().to_string();
        assert!(e.contains("not numeric"), "{e}");
    }

    #[test]
    fn identity_ignores_max_trials_and_device_only() {
        let a = EvolveRecipe::from_yaml(MINIMAL).unwrap();
        let mut b = a.clone();
        b.optimizer.max_trials = 5;
        b.device = "cuda:1".into();
        assert_eq!(a.identity().unwrap(), b.identity().unwrap());
        b.optimizer.seed = 3;
        assert_ne!(a.identity().unwrap(), b.identity().unwrap());
    }
}
