//! Planning: turn a recipe and its opened models into the list of output tensors, each with its
//! inputs, resolved parameters, layer index and vocabulary handling. Planning reads only names and
//! shapes, so every recipe error (missing tensor, mismatched shapes, missing parameter) is found
//! before any output is written.
//!
//! The output model: the merged model takes one model's layout (stored names), `config.json`,
//! tensors outside the language model (copied bit for bit) and processor files. When the recipe
//! merges a VLM (any LLaVA layout, [`Layout::is_vlm`]), the output is a VLM, so that a VLM ⊕ LLM
//! recipe whose `base_model` is a plain LLM (task vectors against Mistral-7B, as EvoVLM-JP) keeps
//! its vision tower and projector. The rule: the `base_model` if it is a VLM; else the first VLM
//! among the merged models in recipe order (`models` as listed, or each slice's `sources` then
//! its `base_model`, slice by slice); else the `base_model`; else the first source. The tokenizer
//! source only lends its tokenizer and never decides the output. The choice is
//! [`MergePlan::output_model`], and is logged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use evomerge_checkpoint::Dtype;
use serde_json::Value;

use crate::config::{parse_dtype, MergeConfig};
use crate::output_config::{resolve_chat_template, update_config};
use crate::layout::{is_vocab_tensor, layer_name, split_layer, Layout};
use crate::methods::{specs_in_scope, BasePolicy, MergeMethod};
use crate::params::{resolve, ParamScope, ParamSet, Parameters};
use crate::source::TensorSource;
use crate::vocab::VocabMerge;
use crate::MergeError;

/// Every model a recipe references, in a stable order: `models` (or slice sources) as listed, then
/// base models, then the tokenizer source. A model's position here is its model index.
pub fn model_refs(config: &MergeConfig) -> Vec<String> {
    let mut refs: Vec<String> = Vec::new();
    let mut push = |r: &str| {
        if !refs.iter().any(|x| x == r) {
            refs.push(r.to_string());
        }
    };
    if let Some(models) = &config.models {
        models.iter().for_each(|m| push(&m.model));
    }
    if let Some(slices) = &config.slices {
        for s in slices {
            s.sources.iter().for_each(|src| push(&src.model));
            if let Some(b) = &s.base_model {
                push(b);
            }
        }
    }
    for module in config.modules.iter().flat_map(|m| m.values()) {
        module.models.iter().flatten().for_each(|m| push(&m.model));
        for s in module.slices.iter().flatten() {
            s.sources.iter().for_each(|src| push(&src.model));
            if let Some(b) = &s.base_model {
                push(b);
            }
        }
    }
    if let Some(b) = &config.base_model {
        push(b);
    }
    if let Some(t) = config.tokenizer_source().filter(|t| *t != "base" && *t != "union") {
        push(t);
    }
    refs
}

/// One input of an output tensor.
#[derive(Debug, Clone)]
pub struct PlannedInput {
    /// Model index (into [`model_refs`]).
    pub model: usize,
    /// Stored tensor name in that model.
    pub name: String,
    pub params: ParamSet,
}

/// Vocabulary alignment of an embedding/lm_head tensor whose row count differs between models:
/// every input is cut or padded to the tokenizer source's row count, padding rows being copied from
/// the tokenizer source (so their deltas are zero and they come out as the source's rows, as
/// mergekit's vocabulary permutation does for tokens only one model has).
#[derive(Debug, Clone)]
pub struct VocabRows {
    pub rows: usize,
    pub model: usize,
    pub name: String,
}

/// The inputs of an embedding/lm_head tensor take the merged vocabulary's row order
/// ([`MergePlan::vocabulary`]) before they are merged; `base` (the slice's base model) lends its
/// rows to tokens some models lack.
#[derive(Debug, Clone)]
pub struct VocabPermute {
    pub base: Option<usize>,
}

#[derive(Debug, Clone)]
pub enum TensorJob {
    /// Run the merge method over the inputs.
    Merge {
        shared: ParamSet,
        base: Option<PlannedInput>,
        inputs: Vec<PlannedInput>,
        vocab: Option<VocabRows>,
        permute: Option<VocabPermute>,
    },
    /// Copy a tensor the language model does not have (vision tower, projector) bit for bit.
    Copy { model: usize, name: String },
}

#[derive(Debug, Clone)]
pub struct PlannedTensor {
    /// Output tensor name (in the output model's layout).
    pub name: String,
    /// Canonical (plain Mistral/Llama) name, the same whatever the output layout; random kernels
    /// key on it, so a VLM output's merged LLM equals a plain output's. Copied tensors: `name`.
    pub canonical: String,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    /// Output layer index, for layer tensors.
    pub layer: Option<usize>,
    pub job: TensorJob,
}

impl PlannedTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The complete plan of a merge.
#[derive(Debug, Clone)]
pub struct MergePlan {
    pub method: &'static dyn MergeMethod,
    pub model_refs: Vec<String>,
    pub tensors: Vec<PlannedTensor>,
    /// `config.json` of the output (the output model's, with layer count, vocab size and dtype updated).
    pub config: Value,
    /// Model (index into `model_refs`) whose layout, config and non-LLM tensors the output has; a
    /// VLM whenever the recipe merges one (rule in the module doc).
    pub output_model: usize,
    /// Layout of the output (that of `output_model`).
    pub output_layout: Layout,
    /// Model whose tokenizer and generation files go with the output: `tokenizer_source` (`base`:
    /// the base model), else the output model.
    pub files_from: usize,
    /// Model whose processor files (preprocessor/processor settings, chat templates) go with the
    /// output: the output model when it is a VLM, else `files_from`.
    pub processor_files_from: usize,
    /// The recipe's `dtype`: what mergekit computes in (see [`crate::ComputeDtype`]).
    pub recipe_dtype: Option<Dtype>,
    /// Chat template the output gets instead of its tokenizer's (the recipe's `chat_template`,
    /// resolved; `None`: keep the copied one).
    pub chat_template: Option<String>,
    /// The merged vocabulary when the recipe sets a tokenizer source and the models carry
    /// `tokenizer.json` (see [`crate::vocab`]): the output `tokenizer.json` and the row order.
    pub vocabulary: Option<Arc<VocabMerge>>,
    /// The recipe settings `vocabulary` was built from (for [`MergePlan::replan`]).
    pub(crate) vocabulary_key: Option<VocabularyKey>,
}

/// Base model, `tokenizer_source`, `tokenizer` section: what a merged vocabulary is built from.
pub(crate) type VocabularyKey = (Option<String>, Option<String>, Option<crate::config::TokenizerSection>);

pub(crate) fn vocabulary_key(config: &MergeConfig) -> VocabularyKey {
    (config.base_model.clone(), config.tokenizer_source.clone(), config.tokenizer.clone())
}

impl std::fmt::Debug for dyn MergeMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Per-model view: layout and canonical-name index.
pub(crate) struct ModelInfo<'a> {
    pub(crate) source: &'a dyn TensorSource,
    pub(crate) label: String,
    layout: Layout,
    /// canonical name -> stored name, LLM tensors only.
    canonical: BTreeMap<String, String>,
    /// stored names outside the LLM, in stored order.
    other: Vec<String>,
    num_layers: usize,
}

impl<'a> ModelInfo<'a> {
    fn new(source: &'a dyn TensorSource) -> Self {
        let names = source.tensor_names();
        let layout = Layout::detect(source.config(), &names);
        let mut canonical = BTreeMap::new();
        let mut other = Vec::new();
        let mut num_layers = 0;
        for name in names {
            match layout.canonical(&name) {
                Some(c) => {
                    if let Some((i, _)) = split_layer(&c) {
                        num_layers = num_layers.max(i + 1);
                    }
                    canonical.insert(c, name);
                }
                None => other.push(name),
            }
        }
        ModelInfo { source, label: source.label(), layout, canonical, other, num_layers }
    }

    /// Every tensor under its stored name (no layout mapping), for `modules:` plans.
    pub(crate) fn raw(source: &'a dyn TensorSource) -> Self {
        let canonical = source.tensor_names().into_iter().map(|n| (n.clone(), n)).collect();
        ModelInfo { source, label: source.label(), layout: Layout::Plain, canonical, other: Vec::new(), num_layers: 0 }
    }

    /// Canonical suffixes (`self_attn.q_proj.weight`, ...) of layer `index`, with a template name.
    fn layer_rests(&self, index: usize) -> Vec<(String, String)> {
        self.canonical
            .keys()
            .filter_map(|c| match split_layer(c) {
                Some((i, rest)) if i == index => Some((rest.to_string(), c.clone())),
                _ => None,
            })
            .collect()
    }
}

/// One output slice after normalising `models:` into `slices:`.
pub(crate) struct SliceSpec<'c> {
    pub(crate) sources: Vec<(usize, [usize; 2], Option<&'c Parameters>)>,
    pub(crate) base: Option<usize>,
    pub(crate) params: Option<&'c Parameters>,
    /// The `modules:` entry's parameters (between the slice's and the recipe's).
    pub(crate) module_params: Option<&'c Parameters>,
}

impl MergePlan {
    /// Plan a merge; `sources[i]` is the model named `model_refs(config)[i]`.
    pub fn new(config: &MergeConfig, sources: &[&dyn TensorSource]) -> Result<MergePlan, MergeError> {
        Self::with_vocabulary(config, sources, None)
    }

    /// [`MergePlan::new`], reusing `previous`'s merged vocabulary when `config` asks for the same
    /// one (same base model and tokenizer settings; the caller keeps the sources): the next
    /// candidate of a search then reads no tokenizer files.
    pub fn replan(config: &MergeConfig, sources: &[&dyn TensorSource], previous: &MergePlan) -> Result<MergePlan, MergeError> {
        let reuse = previous.vocabulary.clone().filter(|_| previous.vocabulary_key == Some(vocabulary_key(config)));
        Self::with_vocabulary(config, sources, reuse)
    }

    fn with_vocabulary(
        config: &MergeConfig,
        sources: &[&dyn TensorSource],
        reuse: Option<Arc<VocabMerge>>,
    ) -> Result<MergePlan, MergeError> {
        config.validate()?;
        let method = config.method()?;
        let refs = model_refs(config);
        if refs.len() != sources.len() {
            return Err(MergeError::InvalidInputs {
                tensor: "(plan)".into(),
                message: format!("the recipe references {} models but {} sources were given", refs.len(), sources.len()),
            });
        }
        if let Some(modules) = &config.modules {
            return crate::modules::plan(config, modules, method, refs, sources);
        }
        let index_of = |r: &str| refs.iter().position(|x| x == r).unwrap_or(0);
        let infos: Vec<ModelInfo> = sources.iter().map(|s| ModelInfo::new(*s)).collect();
        let global_base = config.base_model.as_deref().map(index_of);

        let slices = normalise_slices(config, &infos, global_base, method, &index_of)?;
        let out_model = choose_output_model(&infos, global_base, &slices);
        let out_info = &infos[out_model];
        if out_info.layout.is_vlm() {
            let vlms = slices.iter().flat_map(|s| s.sources.iter().map(|x| x.0).chain(s.base)).chain(global_base);
            let others: BTreeSet<&str> =
                vlms.filter(|&i| i != out_model && infos[i].layout.is_vlm()).map(|i| refs[i].as_str()).collect();
            tracing::info!(
                model = %refs[out_model],
                layout = ?out_info.layout,
                other_vlms = ?others,
                "the output is this VLM: its layout, config, vision tower, projector and processor files are kept"
            );
        }
        let out_dtype = config.out_dtype.as_deref().or(config.dtype.as_deref()).and_then(parse_dtype);

        let tokenizer_model = match config.tokenizer_source() {
            None | Some("base") | Some("union") => None,
            Some(r) => Some(index_of(r)),
        };
        let vocabulary = match reuse {
            Some(v) => Some(v),
            None => VocabMerge::build(config, &refs, sources)?.map(Arc::new),
        };

        let mut planner = Planner {
            config,
            method,
            infos: &infos,
            out_info,
            out_dtype,
            tokenizer_model,
            vocabulary: vocabulary.as_deref(),
            tensors: Vec::new(),
        };

        // Non-layer LLM tensors of the output model: embeddings before the layers, the rest after.
        let (pre, post): (Vec<&String>, Vec<&String>) =
            out_info.canonical.keys().filter(|c| split_layer(c).is_none()).partition(|c| c.contains("embed"));
        for name in pre {
            planner.plan_tensor(name, None, &slices[0], &vec![name.clone(); slices[0].sources.len()], 0.0)?;
        }
        let mut out_layer = 0usize;
        for slice in &slices {
            let len = slice.sources[0].1[1] - slice.sources[0].1[0];
            for offset in 0..len {
                let t = if len > 1 { offset as f64 / (len - 1) as f64 } else { 1.0 };
                let (first_model, first_range, _) = slice.sources[0];
                let rests = infos[first_model].layer_rests(first_range[0] + offset);
                if rests.is_empty() {
                    return Err(MergeError::MissingTensor {
                        tensor: format!("layer {} (any tensor)", first_range[0] + offset),
                        model: infos[first_model].label.clone(),
                    });
                }
                for (rest, template) in rests {
                    let out_name = layer_name(&template, out_layer, &rest);
                    let in_names: Vec<String> =
                        slice.sources.iter().map(|(_, r, _)| layer_name(&template, r[0] + offset, &rest)).collect();
                    planner.plan_tensor(&out_name, Some(out_layer), slice, &in_names, t)?;
                }
                out_layer += 1;
            }
        }
        let last = slices.last().unwrap_or(&slices[0]);
        for name in post {
            planner.plan_tensor(name, None, last, &vec![name.clone(); last.sources.len()], 0.0)?;
        }
        // Tensors outside the language model (vision tower, projector, ...) come from the output model.
        for name in &out_info.other {
            let shape = out_info.source.shape(name).unwrap_or_default();
            let dtype = out_info.source.dtype(name).unwrap_or(Dtype::F32);
            planner.tensors.push(PlannedTensor {
                name: name.clone(),
                canonical: name.clone(),
                shape,
                dtype,
                layer: None,
                job: TensorJob::Copy { model: out_model, name: name.clone() },
            });
        }

        let vocab_rows = planner
            .tensors
            .iter()
            .find(|t| t.name == out_info.layout.stored("model.embed_tokens.weight") || t.name == out_info.layout.stored("lm_head.weight"))
            .map(|t| t.shape[0]);
        let tensors = planner.tensors;
        let mut out_config = out_info.source.config().cloned().unwrap_or_else(|| Value::Object(Default::default()));
        update_config(&mut out_config, out_info.layout, out_layer, vocab_rows, out_dtype);
        // `tokenizer_source: base` names the base, which is no longer always the output model.
        let files_from = match (config.tokenizer_source(), &vocabulary) {
            (_, Some(v)) => v.files_from,
            (Some("base"), None) => global_base.unwrap_or(out_model),
            _ => tokenizer_model.unwrap_or(out_model),
        };
        if out_info.layout.is_vlm() {
            warn_vlm_vocabulary(out_info, &out_config, vocab_rows, files_from == out_model);
        }
        Ok(MergePlan {
            method,
            model_refs: refs,
            tensors,
            config: out_config,
            output_model: out_model,
            output_layout: out_info.layout,
            files_from,
            processor_files_from: if out_info.layout.is_vlm() { out_model } else { files_from },
            recipe_dtype: config.dtype.as_deref().and_then(parse_dtype),
            chat_template: resolve_chat_template(config, sources)?,
            vocabulary_key: vocabulary.is_some().then(|| vocabulary_key(config)),
            vocabulary,
        })
    }

    /// Bytes of tensor data the merge reads (stored dtypes), for throughput figures.
    pub fn bytes_read(&self, sources: &[&dyn TensorSource]) -> u64 {
        let size = |model: usize, name: &str| -> u64 {
            let s = sources[model];
            let numel: usize = s.shape(name).map(|v| v.iter().product()).unwrap_or(0);
            (numel * s.dtype(name).map_or(4, |d| d.size_of())) as u64
        };
        self.tensors
            .iter()
            .map(|t| match &t.job {
                TensorJob::Copy { model, name } => size(*model, name),
                TensorJob::Merge { base, inputs, .. } => {
                    base.iter().chain(inputs).map(|i| size(i.model, &i.name)).sum::<u64>()
                }
            })
            .sum()
    }
}

/// The output model (rule in the module doc).
fn choose_output_model(infos: &[ModelInfo], global_base: Option<usize>, slices: &[SliceSpec]) -> usize {
    let is_vlm = |i: &usize| infos[*i].layout.is_vlm();
    if let Some(base) = global_base.filter(is_vlm) {
        return base;
    }
    let mut merged = slices.iter().flat_map(|s| s.sources.iter().map(|x| x.0).chain(s.base));
    merged.find(is_vlm).or(global_base).unwrap_or(slices[0].sources[0].0)
}

/// The vocabulary follows `tokenizer_source`, else the base, which for a VLM output may be a plain
/// LLM without the VLM's added tokens (`<image>`, padding). That is left as it is (the user may
/// want it), but said, as the output then does not match the VLM's tokenizer or image token.
fn warn_vlm_vocabulary(out: &ModelInfo, config: &Value, rows: Option<usize>, tokenizer_from_vlm: bool) {
    let Some(rows) = rows else { return };
    let vlm_rows =
        out.canonical.get("model.embed_tokens.weight").and_then(|n| out.source.shape(n)).and_then(|s| s.first().copied());
    if let Some(vlm_rows) = vlm_rows.filter(|&v| tokenizer_from_vlm && v != rows) {
        tracing::warn!(
            vlm = %out.label,
            "the merged vocabulary has {rows} rows (it follows tokenizer_source, else the base model) but the VLM's, whose tokenizer files are used, has {vlm_rows}; set tokenizer_source to the VLM to keep its vocabulary"
        );
    }
    let image_token = ["image_token_index", "image_token_id"].iter().find_map(|k| config.get(*k)).and_then(Value::as_u64);
    if let Some(id) = image_token.filter(|&id| id >= rows as u64) {
        tracing::warn!(
            vlm = %out.label,
            "the VLM's image token id {id} is outside the merged vocabulary of {rows} rows; set tokenizer_source to the VLM to keep its vocabulary"
        );
    }
}

fn normalise_slices<'c>(
    config: &'c MergeConfig,
    infos: &[ModelInfo],
    global_base: Option<usize>,
    method: &dyn MergeMethod,
    index_of: &dyn Fn(&str) -> usize,
) -> Result<Vec<SliceSpec<'c>>, MergeError> {
    let mut slices = Vec::new();
    if let Some(models) = &config.models {
        let mut sources: Vec<(usize, [usize; 2], Option<&Parameters>)> =
            models.iter().map(|m| (index_of(&m.model), [0, 0], m.parameters.as_ref())).collect();
        if let Some(b) = global_base {
            if !sources.iter().any(|s| s.0 == b) {
                sources.push((b, [0, 0], None));
            }
        }
        let layers = infos[sources[0].0].num_layers;
        let first_label = infos[sources[0].0].label.clone();
        for (i, s) in sources.iter_mut().enumerate() {
            let n = infos[s.0].num_layers;
            if n != layers {
                return Err(MergeError::config(
                    format!("models[{i}].model"),
                    format!(
                        "`{}` has {n} layers but `{}` has {layers}; use `slices` with layer_range to merge models of different depth",
                        infos[s.0].label, first_label
                    ),
                ));
            }
            s.1 = [0, n];
        }
        slices.push(SliceSpec { sources, base: global_base, params: None, module_params: None });
    } else if let Some(defs) = &config.slices {
        for (i, def) in defs.iter().enumerate() {
            let base = def.base_model.as_deref().map(index_of).or(global_base);
            let sources: Vec<_> =
                def.sources.iter().map(|s| (index_of(&s.model), s.layer_range, s.parameters.as_ref())).collect();
            for (j, (m, range, _)) in sources.iter().enumerate() {
                if range[1] > infos[*m].num_layers {
                    return Err(MergeError::config(
                        format!("slices[{i}].sources[{j}].layer_range"),
                        format!("[{}, {}] goes past the {} layers of `{}`", range[0], range[1], infos[*m].num_layers, infos[*m].label),
                    ));
                }
            }
            if method.base_policy() != BasePolicy::Ignored {
                match base {
                    Some(b) if sources.iter().any(|s| s.0 == b) => {}
                    Some(_) => {
                        return Err(MergeError::config(
                            format!("slices[{i}].sources"),
                            "the base model must be one of the slice's sources",
                        ))
                    }
                    None if method.base_policy() == BasePolicy::Optional => {}
                    None => {
                        return Err(MergeError::config("base_model", format!("{} needs a base_model", method.name())))
                    }
                }
            }
            slices.push(SliceSpec { sources, base, params: def.parameters.as_ref(), module_params: None });
        }
    }
    if method.base_policy() == BasePolicy::Required && global_base.is_none() && slices.iter().any(|s| s.base.is_none()) {
        return Err(MergeError::config("base_model", format!("{} needs a base_model", method.name())));
    }
    Ok(slices)
}

pub(crate) struct Planner<'p, 'a> {
    pub(crate) config: &'p MergeConfig,
    pub(crate) method: &'static dyn MergeMethod,
    pub(crate) infos: &'p [ModelInfo<'a>],
    pub(crate) out_info: &'p ModelInfo<'a>,
    pub(crate) out_dtype: Option<Dtype>,
    pub(crate) tokenizer_model: Option<usize>,
    pub(crate) vocabulary: Option<&'p VocabMerge>,
    pub(crate) tensors: Vec<PlannedTensor>,
}

impl Planner<'_, '_> {
    /// Plan output tensor `out_canonical` from `in_canonical[k]` of each slice source.
    pub(crate) fn plan_tensor(
        &mut self,
        out_canonical: &str,
        layer: Option<usize>,
        slice: &SliceSpec,
        in_canonical: &[String],
        t: f64,
    ) -> Result<(), MergeError> {
        let method = self.method;
        // Locate every input and check shapes.
        let mut located = Vec::with_capacity(slice.sources.len());
        for ((model, _, _), canonical) in slice.sources.iter().zip(in_canonical) {
            let info = &self.infos[*model];
            let stored = info.canonical.get(canonical).cloned().ok_or_else(|| MergeError::MissingTensor {
                tensor: info.layout.stored(canonical),
                model: info.label.clone(),
            })?;
            let shape = info.source.shape(&stored).unwrap_or_default();
            located.push((*model, stored, shape));
        }
        let vocab = is_vocab_tensor(out_canonical);
        let (first_model, _, first_shape) = &located[0];
        for (model, stored, shape) in &located[1..] {
            let same = if vocab {
                shape.len() == first_shape.len() && shape.get(1..) == first_shape.get(1..)
            } else {
                shape == first_shape
            };
            if !same {
                return Err(MergeError::ShapeMismatch {
                    tensor: stored.clone(),
                    model_a: self.infos[*first_model].label.clone(),
                    shape_a: first_shape.clone(),
                    model_b: self.infos[*model].label.clone(),
                    shape_b: shape.clone(),
                });
            }
        }

        let mut shape = first_shape.clone();
        let mut vocab_rows = None;
        let mut permute = None;
        if let Some(vocabulary) = self.vocabulary.filter(|_| vocab && !shape.is_empty()) {
            shape[0] = vocabulary.rows;
            // Resolve every token's row source now, so a bad `tokens` entry fails before writing.
            let rows: Vec<(usize, usize)> = located.iter().map(|(model, _, shape)| (*model, shape[0])).collect();
            vocabulary.default_rows(&self.out_info.layout.stored(out_canonical), &rows, slice.base)?;
            permute = Some(VocabPermute { base: slice.base });
        } else if vocab && !shape.is_empty() {
            let min_rows = located.iter().map(|l| l.2[0]).min().unwrap_or(0);
            let max_rows = located.iter().map(|l| l.2[0]).max().unwrap_or(0);
            let row_model = self.tokenizer_model.or(slice.base).unwrap_or(located[0].0);
            if min_rows != max_rows || self.tokenizer_model.is_some() {
                let info = &self.infos[row_model];
                let stored = info.canonical.get(in_canonical[0].as_str()).cloned().ok_or_else(|| MergeError::MissingTensor {
                    tensor: info.layout.stored(&in_canonical[0]),
                    model: info.label.clone(),
                })?;
                let rows_shape = info.source.shape(&stored).unwrap_or_default();
                if rows_shape.get(1..) != shape.get(1..) {
                    return Err(MergeError::ShapeMismatch {
                        tensor: stored,
                        model_a: self.infos[located[0].0].label.clone(),
                        shape_a: shape.clone(),
                        model_b: info.label.clone(),
                        shape_b: rows_shape,
                    });
                }
                let out_rows = rows_shape[0];
                shape[0] = out_rows;
                if min_rows != out_rows || max_rows != out_rows {
                    vocab_rows = Some(VocabRows { rows: out_rows, model: row_model, name: stored });
                }
            }
        }

        // Parameters: shared ones see the output name, per-input ones the input's name.
        let shared_scopes = [slice.params, slice.module_params, self.config.parameters.as_ref()];
        let mut shared = ParamSet::new();
        for spec in specs_in_scope(method, ParamScope::Shared) {
            if let Some(v) = resolve(spec, &shared_scopes, out_canonical, t).map_err(|m| MergeError::config(format!("parameters.{}", spec.name), m))? {
                shared.set(spec.name, v);
            } else if matches!(spec.default, crate::params::ParamDefault::Required) {
                return Err(MergeError::MissingParameter {
                    parameter: spec.name.into(),
                    method: method.name().into(),
                    tensor: self.out_info.layout.stored(out_canonical),
                    model: "(shared)".into(),
                });
            }
        }
        let base_in_method = method.base_policy() != BasePolicy::Ignored;
        let mut base = None;
        let mut inputs = Vec::new();
        for (((model, _, model_params), canonical), (_, stored, _)) in slice.sources.iter().zip(in_canonical).zip(&located) {
            let is_base = base_in_method && Some(*model) == slice.base;
            let scopes = [*model_params, slice.params, slice.module_params, self.config.parameters.as_ref()];
            let mut params = ParamSet::new();
            for spec in method.parameters() {
                let applies = match spec.scope {
                    ParamScope::Shared => false,
                    ParamScope::Input => true,
                    ParamScope::NonBase => !is_base,
                };
                if !applies {
                    continue;
                }
                match resolve(spec, &scopes, canonical, t).map_err(|m| MergeError::config(format!("parameters.{}", spec.name), m))? {
                    Some(v) => {
                        params.set(spec.name, v);
                    }
                    None if matches!(spec.default, crate::params::ParamDefault::Required) => {
                        return Err(MergeError::MissingParameter {
                            parameter: spec.name.into(),
                            method: method.name().into(),
                            tensor: stored.clone(),
                            model: self.infos[*model].label.clone(),
                        });
                    }
                    None => {}
                }
            }
            let input = PlannedInput { model: *model, name: stored.clone(), params };
            if is_base {
                base = Some(input);
            } else {
                inputs.push(input);
            }
        }
        if let Some(message) = crate::methods::count_error(method, inputs.len(), base.is_some()) {
            return Err(MergeError::config(if self.config.slices.is_some() { "slices" } else { "models" }, message));
        }
        let dtype = self
            .out_dtype
            .or_else(|| {
                let first = base.as_ref().or(inputs.first())?;
                self.infos[first.model].source.dtype(&first.name)
            })
            .unwrap_or(Dtype::F32);
        self.tensors.push(PlannedTensor {
            name: self.out_info.layout.stored(out_canonical),
            canonical: out_canonical.to_string(),
            shape,
            dtype,
            layer,
            job: TensorJob::Merge { shared, base, inputs, vocab: vocab_rows, permute },
        });
        Ok(())
    }
}
