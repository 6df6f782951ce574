//! `model+lora` references: a PEFT LoRA adapter folded into its model as the model is read, so the
//! merge sees `W + scale·B·A` (mergekit merges the adapter with peft's `merge_and_unload` before
//! merging; this gives the same weights without writing the folded model anywhere).
//!
//! Supported: plain LoRA on linear layers (`lora_A`/`lora_B`) and embeddings
//! (`lora_embedding_A`/`lora_embedding_B`), `use_rslora`, and whole tensors the adapter stores
//! (`modules_to_save`, saved embedding layers), which replace the model's. Variants that change the
//! update's form (DoRA, per-module ranks, `fan_in_fan_out`, trained biases, ...) are refused.

use std::collections::BTreeMap;
use std::path::Path;

use evomerge_checkpoint::{Checkpoint, Dtype};
use rayon::prelude::*;
use serde_json::Value;

use crate::methods::round_to;
use crate::source::TensorSource;
use crate::MergeError;

/// An adapter's config file and weights file.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// peft's prefix of every saved adapter tensor name.
const PEFT_PREFIX: &str = "base_model.model.";

/// Config keys of LoRA variants whose update is not `scale·B·A`: any set value is refused.
const VARIANT_KEYS: [(&str, &str); 11] = [
    ("use_dora", "DoRA (weight-decomposed LoRA)"),
    ("rank_pattern", "per-module ranks"),
    ("alpha_pattern", "per-module alphas"),
    ("lora_bias", "trained LoRA biases"),
    ("use_qalora", "QA-LoRA"),
    ("alora_invocation_tokens", "activated LoRA"),
    ("trainable_token_indices", "trainable token embeddings"),
    ("target_parameters", "LoRA on bare parameters"),
    ("layer_replication", "layer replication"),
    ("use_bdlora", "block-diagonal LoRA"),
    ("arrow_config", "Arrow routing"),
];

/// A tensor's shape and f32 values.
type Tensor = (Vec<usize>, Vec<f32>);

/// A loaded LoRA adapter: low-rank updates and whole-tensor replacements, by the model tensor name
/// they change.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    label: String,
    updates: BTreeMap<String, LowRank>,
    replaced: BTreeMap<String, Tensor>,
}

/// `scale · B·A` (transposed for embeddings, whose A is `[r, vocab]` and B `[dim, r]`).
#[derive(Debug, Clone)]
struct LowRank {
    rank: usize,
    /// `[rank, cols]` of B·A's row-major result before any transpose.
    a: Vec<f32>,
    a_cols: usize,
    /// `[rows, rank]`.
    b: Vec<f32>,
    b_rows: usize,
    scale: f32,
    transpose: bool,
}

impl LowRank {
    /// Shape of the model tensor the update applies to.
    fn target_shape(&self) -> Vec<usize> {
        if self.transpose {
            vec![self.a_cols, self.b_rows]
        } else {
            vec![self.b_rows, self.a_cols]
        }
    }

    /// `values += scale·B·A` (B·A accumulated in f64, rounded to f32 and scaled, as torch's f32
    /// matmul then `* scaling` gives to within an ulp).
    fn add_to(&self, values: &mut [f32]) {
        let (rows, cols, rank) = (self.b_rows, self.a_cols, self.rank);
        let delta = |i: usize, j: usize| {
            let dot: f64 = (0..rank).map(|k| f64::from(self.b[i * rank + k]) * f64::from(self.a[k * cols + j])).sum();
            (dot as f32) * self.scale
        };
        if self.transpose {
            // Target is [cols, rows]: entry (j, i) gets delta(i, j).
            values.par_chunks_mut(rows).enumerate().for_each(|(j, row)| {
                for (i, v) in row.iter_mut().enumerate() {
                    *v += delta(i, j);
                }
            });
        } else {
            values.par_chunks_mut(cols).enumerate().for_each(|(i, row)| {
                for (j, v) in row.iter_mut().enumerate() {
                    *v += delta(i, j);
                }
            });
        }
    }
}

impl LoraAdapter {
    /// Read an adapter directory (`adapter_config.json` + `adapter_model.safetensors`).
    pub fn open(dir: &Path, label: &str) -> Result<Self, MergeError> {
        let config_path = dir.join(ADAPTER_CONFIG_FILE);
        let weights_path = dir.join(ADAPTER_WEIGHTS_FILE);
        for path in [&config_path, &weights_path] {
            if !path.is_file() {
                return Err(MergeError::config(
                    label,
                    format!(
                        "{} is missing: a LoRA adapter directory (the part after `+`) needs {ADAPTER_CONFIG_FILE} and \
                         {ADAPTER_WEIGHTS_FILE} (save it with peft's `save_pretrained(..., safe_serialization=True)`)",
                        path.display()
                    ),
                ));
            }
        }
        let text = std::fs::read_to_string(&config_path)
            .map_err(|source| MergeError::Io { context: format!("cannot read {}", config_path.display()), source })?;
        let config: Value = serde_json::from_str(&text)
            .map_err(|e| MergeError::config(label, format!("{} is not valid JSON: {e}", config_path.display())))?;
        let tensors = evomerge_checkpoint::read_tensor_file(&weights_path)?
            .into_iter()
            .map(|t| {
                let values = t.to_f32();
                (t.name, (t.shape, values))
            })
            .collect();
        Self::from_parts(label, &config, tensors)
    }

    /// An adapter from its parsed config and its tensors (peft's saved names and f32 values).
    pub fn from_parts(
        label: &str,
        config: &Value,
        tensors: BTreeMap<String, Tensor>,
    ) -> Result<Self, MergeError> {
        let settings = Settings::read(label, config)?;
        let mut pairs: BTreeMap<String, [Option<Tensor>; 2]> = BTreeMap::new();
        let mut replaced = BTreeMap::new();
        for (saved, tensor) in tensors {
            let bad = |why: String| MergeError::config(label, format!("adapter tensor `{saved}` {why}"));
            let Some(name) = saved.strip_prefix(PEFT_PREFIX) else {
                return Err(bad(format!("does not start with `{PEFT_PREFIX}`; is this a peft LoRA adapter?")));
            };
            let kind = [
                (".lora_A.weight", 0, false),
                (".lora_B.weight", 1, false),
                (".lora_embedding_A", 0, true),
                (".lora_embedding_B", 1, true),
            ]
            .into_iter()
            .find_map(|(suffix, side, embedding)| name.strip_suffix(suffix).map(|module| (module, side, embedding)));
            if let Some((module, side, embedding)) = kind {
                settings.check_target(label, module)?;
                let key = format!("{module}.weight{}", if embedding { "#embedding" } else { "" });
                pairs.entry(key).or_default()[side] = Some(tensor);
            } else if name.contains("lora_") {
                return Err(bad("is not a plain LoRA weight (lora_A / lora_B / lora_embedding_A / lora_embedding_B); this LoRA variant is not supported".into()));
            } else {
                // A whole tensor: `modules_to_save`, or an embedding layer peft saved with its LoRA.
                let target = name.replace(".base_layer.", ".");
                if !name.contains(".base_layer.") && !settings.saves(&target) {
                    return Err(bad("is a whole tensor, but adapter_config.json's modules_to_save does not name its module".into()));
                }
                replaced.insert(target, tensor);
            }
        }
        let mut updates = BTreeMap::new();
        for (key, [a, b]) in pairs {
            let (target, transpose) = match key.strip_suffix("#embedding") {
                Some(t) => (t.to_string(), true),
                None => (key, false),
            };
            let (Some((a_shape, a)), Some((b_shape, b))) = (a, b) else {
                return Err(MergeError::config(label, format!("the adapter has only one of the A and B matrices for `{target}`")));
            };
            let rank = settings.rank;
            if a_shape.len() != 2 || b_shape.len() != 2 || a_shape[0] != rank || b_shape[1] != rank {
                return Err(MergeError::config(
                    label,
                    format!("`{target}`: A is {a_shape:?} and B is {b_shape:?}, but adapter_config.json says r = {rank} (A must be [r, in], B [out, r])"),
                ));
            }
            let update = LowRank { rank, a, a_cols: a_shape[1], b, b_rows: b_shape[0], scale: settings.scale, transpose };
            updates.insert(target, update);
        }
        Ok(LoraAdapter { label: label.to_string(), updates, replaced })
    }

    /// Check that every tensor the adapter changes exists in `base` with the adapter's shape.
    pub fn check_fits(&self, base: &dyn TensorSource) -> Result<(), MergeError> {
        let shapes = self.updates.iter().map(|(n, u)| (n, u.target_shape())).chain(self.replaced.iter().map(|(n, (s, _))| (n, s.clone())));
        for (name, shape) in shapes {
            match base.shape(name) {
                Some(s) if s == shape => {}
                Some(s) => {
                    return Err(MergeError::config(
                        &self.label,
                        format!("the adapter changes `{name}` as a {shape:?} tensor, but `{}` has it as {s:?}: is the adapter for another model?", base.label()),
                    ))
                }
                None => {
                    return Err(MergeError::config(
                        &self.label,
                        format!("the adapter changes `{name}`, which `{}` does not have: is the adapter for another architecture (or another checkpoint layout)?", base.label()),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Whether the adapter changes `name`.
    pub fn changes(&self, name: &str) -> bool {
        self.updates.contains_key(name) || self.replaced.contains_key(name)
    }

    /// Fold the adapter into `values`, the model's tensor `name` (f32), as peft's merge does:
    /// replacement, then `+ scale·B·A`, the result rounded to `stored` (the model's dtype, which
    /// the folded model keeps).
    pub fn apply(&self, name: &str, values: &mut Vec<f32>, stored: Dtype) {
        if let Some((_, whole)) = self.replaced.get(name) {
            values.clear();
            values.extend_from_slice(whole);
        }
        if let Some(update) = self.updates.get(name) {
            update.add_to(values);
        }
        if stored != Dtype::F32 && self.changes(name) {
            values.iter_mut().for_each(|v| *v = round_to(stored, *v));
        }
    }
}

/// What the fold needs from adapter_config.json.
struct Settings {
    rank: usize,
    scale: f32,
    /// `None` when target_modules is a regular expression (not checked then).
    targets: Option<Vec<String>>,
    modules_to_save: Vec<String>,
}

impl Settings {
    fn read(label: &str, config: &Value) -> Result<Self, MergeError> {
        let err = |key: &str, why: String| MergeError::config(format!("{label}: adapter_config.json: {key}"), why);
        if let Some(kind) = config.get("peft_type").and_then(Value::as_str) {
            if kind != "LORA" {
                return Err(err("peft_type", format!("is `{kind}`; only LoRA adapters (`LORA`) can be folded")));
            }
        }
        for (key, what) in VARIANT_KEYS {
            let set = match config.get(key) {
                None | Some(Value::Null) | Some(Value::Bool(false)) => false,
                Some(Value::Object(m)) => !m.is_empty(),
                Some(Value::Array(a)) => !a.is_empty(),
                Some(_) => true,
            };
            if set {
                return Err(err(key, format!("is set: {what} is not supported; only plain LoRA (scale·B·A) is")));
            }
        }
        if config.get("fan_in_fan_out").and_then(Value::as_bool) == Some(true) {
            return Err(err("fan_in_fan_out", "is true (GPT-2 style Conv1D weights); only linear layers stored [out, in] are supported".into()));
        }
        match config.get("bias").and_then(Value::as_str) {
            None | Some("none") => {}
            Some(other) => return Err(err("bias", format!("is `{other}`: trained biases are not supported; only `none` is"))),
        }
        let rank = config
            .get("r")
            .and_then(Value::as_u64)
            .filter(|r| *r > 0)
            .and_then(|r| usize::try_from(r).ok())
            .ok_or_else(|| err("r", "must be a positive integer".into()))?;
        let alpha = config.get("lora_alpha").and_then(Value::as_f64).ok_or_else(|| err("lora_alpha", "must be a number".into()))?;
        let rslora = match config.get("use_rslora") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(err("use_rslora", format!("must be true or false, got {other}"))),
        };
        // peft: alpha / r, or alpha / sqrt(r) for rank-stabilised LoRA (a Python float).
        let scale = if rslora { alpha / (rank as f64).sqrt() } else { alpha / rank as f64 } as f32;
        let names = |key: &str| -> Result<Option<Vec<String>>, MergeError> {
            match config.get(key) {
                None | Some(Value::Null) => Ok(Some(Vec::new())),
                Some(Value::String(_)) => Ok(None),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string).ok_or_else(|| err(key, "must list module names".into())))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(other) => Err(err(key, format!("must be a list of module names, got {other}"))),
            }
        };
        let targets = names("target_modules")?;
        let modules_to_save = names("modules_to_save")?.ok_or_else(|| err("modules_to_save", "must be a list of module names".into()))?;
        Ok(Settings { rank, scale, targets, modules_to_save })
    }

    /// peft's rule for a list of names: a module matches a name it equals or ends with `.name`.
    fn matches(list: &[String], module: &str) -> bool {
        list.iter().any(|t| module == t || module.ends_with(&format!(".{t}")))
    }

    fn check_target(&self, label: &str, module: &str) -> Result<(), MergeError> {
        match &self.targets {
            Some(list) if !Self::matches(list, module) => Err(MergeError::config(
                label,
                format!("the adapter has LoRA weights for `{module}`, which adapter_config.json's target_modules ({}) does not name", list.join(", ")),
            )),
            _ => Ok(()),
        }
    }

    /// Whether tensor `name` belongs to a module listed in modules_to_save.
    fn saves(&self, name: &str) -> bool {
        let module = name.rsplit_once('.').map_or(name, |(m, _)| m);
        Self::matches(&self.modules_to_save, module)
    }
}

/// A model as a recipe references it: a source, with the LoRA adapter of a `model+lora` reference
/// (if any) folded in as tensors are read.
pub struct ModelSource<S = Checkpoint> {
    pub base: S,
    pub lora: Option<LoraAdapter>,
}

impl<S: TensorSource> ModelSource<S> {
    /// `base` with `lora` folded in; checks that the adapter fits the model.
    pub fn new(base: S, lora: Option<LoraAdapter>) -> Result<Self, MergeError> {
        if let Some(adapter) = &lora {
            adapter.check_fits(&base)?;
        }
        Ok(ModelSource { base, lora })
    }
}

impl<S: TensorSource> TensorSource for ModelSource<S> {
    fn label(&self) -> String {
        match &self.lora {
            Some(a) => format!("{}+{}", self.base.label(), a.label),
            None => self.base.label(),
        }
    }
    fn config(&self) -> Option<&Value> {
        self.base.config()
    }
    fn files_dir(&self) -> Option<&Path> {
        self.base.files_dir()
    }
    fn tensor_names(&self) -> Vec<String> {
        self.base.tensor_names()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.base.shape(name)
    }
    fn dtype(&self, name: &str) -> Option<Dtype> {
        self.base.dtype(name)
    }
    fn read_f32(&self, name: &str, out: &mut Vec<f32>) -> Result<(), MergeError> {
        self.base.read_f32(name, out)?;
        if let Some(adapter) = &self.lora {
            adapter.apply(name, out, self.base.dtype(name).unwrap_or(Dtype::F32));
        }
        Ok(())
    }
    fn raw(&self, name: &str) -> Option<(Dtype, &[u8])> {
        match &self.lora {
            Some(a) if a.changes(name) => None,
            _ => self.base.raw(name),
        }
    }
    fn release(&self, name: &str) {
        self.base.release(name)
    }
}

/// `model` and, for `model+lora`, the adapter part of a recipe's model reference. mergekit splits
/// on `+` the same way (so a path holding `+` cannot be used as a plain model there either).
pub fn split_model_ref(reference: &str) -> Result<(&str, Option<&str>), MergeError> {
    let mut parts = reference.split('+');
    let model = parts.next().unwrap_or_default();
    let lora = parts.next();
    if parts.next().is_some() || model.is_empty() || lora.is_some_and(str::is_empty) {
        return Err(MergeError::config(
            reference,
            "a model reference is `model` or `model+lora` (one `+`, both parts non-empty)",
        ));
    }
    Ok((model, lora))
}
