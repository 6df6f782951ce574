//! The streaming file merger: opens the recipe's models, plans, merges tensors on a worker pool
//! with bounded working memory, and writes the result atomically with the checkpoint writer.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use evomerge_checkpoint::{Checkpoint, CheckpointWriter, Dtype, TensorPlan, WriteOptions, DEFAULT_MAX_SHARD_BYTES};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::buffers::{encode_in_place, BufferPool};
use crate::config::MergeConfig;
use crate::execute::{Executor, TensorOutput};
use crate::lora::{split_model_ref, LoraAdapter, ModelSource, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use crate::plan::{model_refs, MergePlan};
use crate::source::TensorSource;
use crate::MergeError;

/// Options of [`merge_to_dir`].
#[derive(Debug, Clone)]
pub struct MergeOptions {
    /// Seed of the random parts of a merge (DARE masks).
    pub seed: u64,
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
    /// Replace an existing output directory.
    pub force: bool,
    pub max_shard_bytes: u64,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Working memory (f32 buffers) the workers may hold at once; a tensor needing more runs alone.
    pub memory_budget_bytes: usize,
    /// What the kernels compute in (default f32).
    pub compute_dtype: ComputeDtype,
}

/// What a merge computes in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ComputeDtype {
    /// f32 whatever the recipe's `dtype` (only the output is rounded to it): the most accurate
    /// result, and the same for a recipe whatever dtype it stores.
    #[default]
    F32,
    /// The recipe's `dtype`, as mergekit does: inputs are rounded to it and, for the methods that
    /// mergekit runs in that dtype, every operation is rounded as torch rounds it. Reproduces
    /// mergekit's bf16 outputs for every method (checked bit for bit against mergekit fixtures);
    /// DARE and DELLA below density 1 (random masks) and the inverse-density rescale refuse it.
    Recipe,
}

impl ComputeDtype {
    /// The dtype kernels must round to for `plan`, `None` for plain f32.
    pub(crate) fn rounding(self, plan: &MergePlan) -> Option<Dtype> {
        match self {
            ComputeDtype::F32 => None,
            ComputeDtype::Recipe => plan.recipe_dtype.filter(|d| *d != Dtype::F32),
        }
    }
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            seed: 0,
            threads: None,
            force: false,
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
            progress: true,
            memory_budget_bytes: 1 << 30,
            compute_dtype: ComputeDtype::F32,
        }
    }
}

/// What a finished merge did.
#[derive(Debug, Clone)]
pub struct MergeReport {
    pub out_dir: PathBuf,
    pub tensors: usize,
    /// Bytes of input tensor data read (stored dtypes).
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub seconds: f64,
    /// The recipe's reference of the VLM the output is (its vision tower, projector, config and
    /// processor files were kept), `None` for a plain LLM output.
    pub output_vlm: Option<String>,
}

/// Where a model reference in a recipe points: an existing path (as given, else relative to the
/// recipe's directory), or a hub id. In `model+lora` each part is resolved so.
pub fn resolve_model_ref(config: &MergeConfig, reference: &str) -> String {
    match split_model_ref(reference) {
        Ok((model, Some(lora))) => format!("{}+{}", resolve_path(config, model), resolve_path(config, lora)),
        _ => resolve_path(config, reference),
    }
}

fn resolve_path(config: &MergeConfig, reference: &str) -> String {
    let direct = Path::new(reference);
    if direct.exists() || direct.is_absolute() {
        return reference.to_string();
    }
    if let Some(dir) = &config.recipe_dir {
        let joined = dir.join(reference);
        if joined.exists() {
            return joined.to_string_lossy().into_owned();
        }
    }
    reference.to_string()
}

/// Open one model reference of the recipe: a checkpoint, with the adapter of `model+lora` folded in.
pub fn open_model(config: &MergeConfig, reference: &str) -> Result<ModelSource, MergeError> {
    let (model, lora) = split_model_ref(reference)?;
    let checkpoint = Checkpoint::open(&resolve_path(config, model))?;
    let adapter = match lora {
        None => None,
        Some(lora) => {
            let resolved = resolve_path(config, lora);
            let dir = if Path::new(&resolved).exists() {
                PathBuf::from(&resolved)
            } else {
                evomerge_checkpoint::hub::resolve_files(&resolved, &[ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE])?
            };
            Some(LoraAdapter::open(&dir, lora)?)
        }
    };
    ModelSource::new(checkpoint, adapter)
}

/// Open every model the recipe references, in [`model_refs`] order.
pub fn open_models(config: &MergeConfig) -> Result<Vec<ModelSource>, MergeError> {
    model_refs(config).iter().map(|r| open_model(config, r)).collect()
}

/// Merge as the recipe says and write the model to `out` (atomically: on any error nothing is left
/// under `out`, nor a temporary directory).
pub fn merge_to_dir(config: &MergeConfig, out: &Path, options: &MergeOptions) -> Result<MergeReport, MergeError> {
    let models = open_models(config)?;
    let sources: Vec<&dyn TensorSource> = models.iter().map(|m| m as &dyn TensorSource).collect();
    let plan = MergePlan::new(config, &sources)?;
    write_plan(&plan, &sources, out, options)
}

/// Run the documents of a recipe file in order (`mergekit-multi`'s format): each named one into
/// `out/<name>`, the last one into `out`. A document names an earlier one's merge by its `name`.
/// The intermediates are staged next to `out` (so writing `out` stays atomic) and moved into it at
/// the end; on failure nothing is left in `out`.
pub fn merge_documents_to_dir(
    documents: &[crate::RecipeDocument],
    out: &Path,
    options: &MergeOptions,
) -> Result<Vec<MergeReport>, MergeError> {
    let Some((last, intermediates)) = documents.split_last() else {
        return Err(MergeError::config("documents", "there is no recipe to merge"));
    };
    if intermediates.is_empty() {
        return Ok(vec![merge_to_dir(&last.config, out, options)?]);
    }
    if out.exists() && !options.force {
        return Err(MergeError::config("out", format!("{} exists; pass --force to replace it", out.display())));
    }
    let out = std::path::absolute(out).map_err(|source| MergeError::Io { context: format!("cannot resolve {}", out.display()), source })?;
    let out_name = out.file_name().and_then(|n| n.to_str()).unwrap_or("model");
    let staging = out.with_file_name(format!(".{out_name}.intermediates-{}", std::process::id()));
    let result = run_documents(intermediates, last, &out, &staging, options);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn run_documents(
    intermediates: &[crate::RecipeDocument],
    last: &crate::RecipeDocument,
    out: &Path,
    staging: &Path,
    options: &MergeOptions,
) -> Result<Vec<MergeReport>, MergeError> {
    let names: Vec<&str> = intermediates.iter().filter_map(|d| d.name.as_deref()).collect();
    let mut reports = Vec::new();
    for (index, document) in intermediates.iter().chain(std::iter::once(last)).enumerate() {
        let mut config = document.config.clone();
        for model in config.model_refs_mut() {
            if let Some(position) = names.iter().position(|n| *n == model.as_str()) {
                if position >= index {
                    return Err(MergeError::config(
                        format!("document {}", index + 1),
                        format!("uses `{model}` before it is merged: documents run in order, so move `{model}` up"),
                    ));
                }
                *model = staging.join(names[position]).to_string_lossy().into_owned();
            }
        }
        let target = match &document.name {
            Some(name) if index < intermediates.len() => staging.join(name),
            _ => out.to_path_buf(),
        };
        reports.push(merge_to_dir(&config, &target, options)?);
    }
    for name in &names {
        let (from, to) = (staging.join(name), out.join(name));
        if to.exists() {
            return Err(MergeError::config("name", format!("`{name}` collides with {} of the final merge", to.display())));
        }
        std::fs::rename(&from, &to).map_err(|source| MergeError::Io { context: format!("cannot move {} into {}", from.display(), out.display()), source })?;
        if let Some(report) = reports.iter_mut().find(|r| r.out_dir == from) {
            report.out_dir = to;
        }
    }
    let _ = std::fs::remove_dir(staging);
    Ok(reports)
}

/// Execute a plan over opened sources and write the result to `out`.
pub fn write_plan(
    plan: &MergePlan,
    sources: &[&dyn TensorSource],
    out: &Path,
    options: &MergeOptions,
) -> Result<MergeReport, MergeError> {
    let started = Instant::now();
    let writer_plan: Vec<TensorPlan> =
        plan.tensors.iter().map(|t| TensorPlan::new(t.name.clone(), t.dtype, t.shape.clone())).collect();
    let bytes_written: u64 = writer_plan.iter().map(|t| t.size_in_bytes() as u64).sum();
    let mut writer = CheckpointWriter::create(
        out,
        writer_plan,
        WriteOptions { max_shard_bytes: options.max_shard_bytes, force: options.force },
    )?;

    let progress = if options.progress && std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(bytes_written), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("merging {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}") {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };

    let buffers = BufferPool::new(options.memory_budget_bytes);
    let executor =
        Executor { plan, sources, seed: options.seed, pool: Some(&buffers), compute: options.compute_dtype.rounding(plan) };
    let budget = Budget::new(options.memory_budget_bytes);
    let run_one = |tensor: &crate::plan::PlannedTensor| -> Result<(), MergeError> {
        match executor.run(tensor)? {
            TensorOutput::Raw(_, bytes) => writer.write_tensor(&tensor.name, bytes)?,
            TensorOutput::Values(mut values) => {
                let written = writer.write_tensor(&tensor.name, encode_in_place(tensor.dtype, &mut values));
                executor.give(values);
                written?;
            }
        }
        progress.inc((tensor.numel() * tensor.dtype.size_of()) as u64);
        Ok(())
    };
    // Largest tensors first, so the workers are not left waiting on one big tensor at the end.
    let mut order: Vec<&crate::plan::PlannedTensor> = plan.tensors.iter().collect();
    order.sort_by_key(|t| std::cmp::Reverse(t.numel()));
    let threads = options.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    // Kernels parallelise inside a tensor on this pool; whole tensors are spread over plain worker
    // threads, which may block on the memory budget without stalling rayon's work stealing.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| MergeError::Io {
        context: "cannot start worker threads".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<MergeError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(tensor) = order.get(i) else { break };
                // Wait for memory here, not on a pool thread, so a waiting tensor never keeps a
                // pool thread from helping the running ones.
                let permit = budget.acquire(Executor::working_bytes(tensor));
                let result = pool.install(|| run_one(tensor));
                drop(permit);
                if let Err(e) = result {
                    failed.store(true, Ordering::Relaxed);
                    let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    slot.get_or_insert(e);
                    break;
                }
            });
        }
    });
    let result = match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    };
    progress.finish_and_clear();
    result?; // dropping `writer` on error removes its temporary directory
    let files_from = sources[plan.files_from].files_dir();
    let processor_files_from = sources[plan.processor_files_from].files_dir();
    if let Some(vocabulary) = plan.vocabulary.as_ref().filter(|v| v.changed) {
        writer.set_json_file("tokenizer.json", vocabulary.tokenizer_json.clone());
        if let Some(config) = &vocabulary.tokenizer_config {
            writer.set_json_file("tokenizer_config.json", config.clone());
        }
    }
    writer.set_chat_template(plan.chat_template.clone());
    let out_dir = writer.finish_with_processor(&plan.config, files_from, processor_files_from)?;
    Ok(MergeReport {
        out_dir,
        tensors: plan.tensors.len(),
        bytes_read: plan.bytes_read(sources),
        bytes_written,
        seconds: started.elapsed().as_secs_f64(),
        output_vlm: plan.output_layout.is_vlm().then(|| plan.model_refs[plan.output_model].clone()),
    })
}

/// Admission control on working memory: a tensor waits until its buffers fit in the budget; one
/// larger than the whole budget runs only when nothing else does.
struct Budget {
    limit: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

struct Permit<'b> {
    budget: &'b Budget,
    bytes: usize,
}

impl Budget {
    fn new(limit: usize) -> Self {
        Budget { limit: limit.max(1), used: Mutex::new(0), freed: Condvar::new() }
    }

    fn acquire(&self, bytes: usize) -> Permit<'_> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used > 0 && *used + bytes > self.limit {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += bytes;
        Permit { budget: self, bytes }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|p| p.into_inner());
        *used -= self.bytes;
        self.budget.freed.notify_all();
    }
}
