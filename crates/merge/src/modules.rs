//! `modules:` recipes: each module of a model merged with its own `models`/`slices` and
//! parameters, as mergekit 0.1.5 does for architectures it has no definition for (LLaVA among
//! them). Its modules are found from tensor names: a tensor with a numbered layer (`.<n>.`) belongs
//! to the module named by everything before the first such number (`model.language_model.layers`,
//! `model.vision_tower.encoder.layers`), every other tensor to `default`; with only one such
//! prefix (a plain LLM) everything is `default`. Tensors are merged under their stored names (no
//! layout mapping), layers renumbered per module; modules the recipe does not list are left out of
//! the output, as mergekit leaves them out.
//!
//! Supported layouts: plain checkpoints and the newer transformers LLaVA layout
//! (`model.language_model.*`). llava-hf (`language_model.model.*`) and original LLaVA checkpoints
//! are refused: mergekit 0.1.5 matches module names against transformers' own names, so on those it
//! leaves the language model out, and there is nothing faithful to reproduce.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::config::{parse_dtype, MergeConfig, OutputModule};
use crate::layout::Layout;
use crate::methods::{BasePolicy, MergeMethod};
use crate::output_config::{resolve_chat_template, update_config};
use crate::plan::{MergePlan, ModelInfo, Planner, SliceSpec};
use crate::source::TensorSource;
use crate::MergeError;

/// The module holding every tensor outside a numbered layer.
pub const DEFAULT_MODULE: &str = "default";

/// A model's tensors grouped into modules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModuleMap {
    /// Module name -> tensors outside numbered layers (only `default` has them).
    pub loose: BTreeMap<String, Vec<String>>,
    /// Module name -> (layer name prefix, set of per-layer suffixes) for modules with layers.
    pub layers: BTreeMap<String, (String, BTreeSet<String>)>,
}

/// `name` split at its first `.<n>.`: (prefix, n, suffix), e.g. `model.layers`, 3, `mlp.up_proj.weight`.
pub fn split_numbered(name: &str) -> Option<(&str, usize, &str)> {
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'.' {
            let digits = bytes[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
            let end = i + 1 + digits;
            if digits > 0 && bytes.get(end) == Some(&b'.') {
                let index = name[i + 1..end].parse().ok()?;
                return Some((&name[..i], index, &name[end + 1..]));
            }
        }
        i += 1;
    }
    None
}

impl ModuleMap {
    /// The modules of a model with these tensor names (mergekit's inference, see the module doc).
    pub fn infer(names: &[String]) -> ModuleMap {
        let mut map = ModuleMap::default();
        let mut loose = Vec::new();
        for name in names {
            match split_numbered(name) {
                Some((prefix, _, rest)) => {
                    let entry = map.layers.entry(prefix.to_string()).or_insert_with(|| (prefix.to_string(), BTreeSet::new()));
                    entry.1.insert(rest.to_string());
                }
                None => loose.push(name.clone()),
            }
        }
        if map.layers.len() == 1 {
            // One layer stack: the whole model is one module.
            let (_, stack) = map.layers.pop_first().unwrap_or_default();
            map.layers.insert(DEFAULT_MODULE.to_string(), stack);
        }
        if !loose.is_empty() {
            map.loose.insert(DEFAULT_MODULE.to_string(), loose);
        }
        map
    }

    pub fn names(&self) -> BTreeSet<&str> {
        self.loose.keys().chain(self.layers.keys()).map(String::as_str).collect()
    }

    /// Layers of module `module` in a model with these tensor names.
    fn num_layers(&self, module: &str, names: &[String]) -> usize {
        let Some((prefix, _)) = self.layers.get(module) else { return 0 };
        names
            .iter()
            .filter_map(|n| split_numbered(n).filter(|(p, _, _)| p == prefix).map(|(_, i, _)| i + 1))
            .max()
            .unwrap_or(0)
    }
}

/// Plan a `modules:` recipe (called by [`MergePlan::new`]).
pub(crate) fn plan(
    config: &MergeConfig,
    modules: &BTreeMap<String, OutputModule>,
    method: &'static dyn MergeMethod,
    refs: Vec<String>,
    sources: &[&dyn TensorSource],
) -> Result<MergePlan, MergeError> {
    let index_of = |r: &str| refs.iter().position(|x| x == r).unwrap_or(0);
    let names: Vec<Vec<String>> = sources.iter().map(|s| s.tensor_names()).collect();
    for (i, source) in sources.iter().enumerate() {
        let layout = Layout::detect(source.config(), &names[i]);
        if matches!(layout, Layout::LlavaHf | Layout::Liuhaotian) {
            return Err(MergeError::Unsupported(format!(
                "`modules:` on `{}`, a {} checkpoint (mergekit 0.1.5 matches modules against transformers' newer \
                 `model.language_model.*` names and leaves this layout's language model out); convert it to the newer \
                 layout, or merge its language model with `models:`/`slices:`",
                refs[i],
                if layout == Layout::LlavaHf { "llava-hf (`language_model.model.*`)" } else { "original LLaVA" }
            )));
        }
    }
    let global_base = config.base_model.as_deref().map(index_of);
    let out_model = global_base.unwrap_or(0);
    let map = ModuleMap::infer(&names[out_model]);
    for module in modules.keys() {
        if !map.names().contains(module.as_str()) {
            let known: Vec<&str> = map.names().into_iter().collect();
            return Err(MergeError::config(
                format!("modules.{module}"),
                format!("`{}` has no such module; its modules (as mergekit 0.1.5 finds them) are: {}", refs[out_model], known.join(", ")),
            ));
        }
    }
    let infos: Vec<ModelInfo> = sources.iter().map(|s| ModelInfo::raw(*s)).collect();
    let out_dtype = config.out_dtype.as_deref().or(config.dtype.as_deref()).and_then(parse_dtype);
    let mut planner =
        Planner { config, method, infos: &infos, out_info: &infos[out_model], out_dtype, tokenizer_model: None, vocabulary: None, tensors: Vec::new() };
    let mut layer_counts = BTreeMap::new();
    for (module_name, module) in modules {
        let key = format!("modules.{module_name}");
        let slices = module_slices(module, module_name, &key, &map, &names, global_base, method, &index_of, &refs)?;
        for name in map.loose.get(module_name).into_iter().flatten() {
            planner.plan_tensor(name, None, &slices[0], &vec![name.clone(); slices[0].sources.len()], 0.0)?;
        }
        let Some((prefix, rests)) = map.layers.get(module_name) else { continue };
        let mut out_layer = 0;
        for slice in &slices {
            let len = slice.sources[0].1[1] - slice.sources[0].1[0];
            for offset in 0..len {
                let t = if len > 1 { offset as f64 / (len - 1) as f64 } else { 1.0 };
                for rest in rests {
                    let out_name = format!("{prefix}.{out_layer}.{rest}");
                    let in_names: Vec<String> =
                        slice.sources.iter().map(|(_, r, _)| format!("{prefix}.{}.{rest}", r[0] + offset)).collect();
                    planner.plan_tensor(&out_name, Some(out_layer), slice, &in_names, t)?;
                }
                out_layer += 1;
            }
        }
        layer_counts.insert(prefix.clone(), out_layer);
    }
    let tensors = planner.tensors;
    let out_source = sources[out_model];
    let out_layout = Layout::detect(out_source.config(), &names[out_model]);
    let mut out_config = out_source.config().cloned().unwrap_or_else(|| Value::Object(Default::default()));
    // The language model's layer count follows its module when the recipe merges it.
    let lm_prefix = if out_layout == Layout::LlavaNested { "model.language_model.layers" } else { "model.layers" };
    if let Some(&layers) = layer_counts.get(lm_prefix) {
        let vocab_rows = tensors.iter().find(|t| t.name.ends_with("embed_tokens.weight")).map(|t| t.shape[0]);
        update_config(&mut out_config, out_layout, layers, vocab_rows, out_dtype);
    }
    Ok(MergePlan {
        method,
        model_refs: refs.clone(),
        tensors,
        config: out_config,
        output_model: out_model,
        output_layout: out_layout,
        files_from: out_model,
        processor_files_from: out_model,
        recipe_dtype: config.dtype.as_deref().and_then(parse_dtype),
        chat_template: resolve_chat_template(config, sources)?,
        // A tokenizer source is refused with `modules`: no vocabulary is merged.
        vocabulary: None,
        vocabulary_key: None,
    })
}

/// A module's `models` (one slice over all its layers, the base added) or `slices`, checked.
#[allow(clippy::too_many_arguments)]
fn module_slices<'c>(
    module: &'c OutputModule,
    module_name: &str,
    key: &str,
    map: &ModuleMap,
    names: &[Vec<String>],
    global_base: Option<usize>,
    method: &dyn MergeMethod,
    index_of: &dyn Fn(&str) -> usize,
    refs: &[String],
) -> Result<Vec<SliceSpec<'c>>, MergeError> {
    let layers_of = |model: usize| map.num_layers(module_name, &names[model]);
    let mut slices = Vec::new();
    if let Some(models) = &module.models {
        let mut sources: Vec<_> = models.iter().map(|m| (index_of(&m.model), [0, 0], m.parameters.as_ref())).collect();
        if let Some(b) = global_base {
            if !sources.iter().any(|s| s.0 == b) {
                sources.push((b, [0, 0], None));
            }
        }
        let (first, first_ref) = (layers_of(sources[0].0), &refs[sources[0].0]);
        for (i, s) in sources.iter_mut().enumerate() {
            let n = layers_of(s.0);
            if n != first {
                return Err(MergeError::config(
                    format!("{key}.models[{i}].model"),
                    format!("`{}` has {n} layers in this module but `{}` has {first}; use `slices` with layer_range", refs[s.0], first_ref),
                ));
            }
            s.1 = [0, n];
        }
        slices.push(SliceSpec { sources, base: global_base, params: None, module_params: module.parameters.as_ref() });
    } else if let Some(defs) = &module.slices {
        if !map.layers.contains_key(module_name) {
            return Err(MergeError::config(key, "this module has no numbered layers: give it `models`, not `slices`"));
        }
        for (i, def) in defs.iter().enumerate() {
            let base = def.base_model.as_deref().map(index_of).or(global_base);
            let sources: Vec<_> = def.sources.iter().map(|s| (index_of(&s.model), s.layer_range, s.parameters.as_ref())).collect();
            for (j, (m, range, _)) in sources.iter().enumerate() {
                if range[1] > layers_of(*m) {
                    return Err(MergeError::config(
                        format!("{key}.slices[{i}].sources[{j}].layer_range"),
                        format!("[{}, {}] goes past the {} layers of this module in `{}`", range[0], range[1], layers_of(*m), refs[*m]),
                    ));
                }
            }
            if method.base_policy() != BasePolicy::Ignored {
                if let Some(b) = base {
                    if !sources.iter().any(|s| s.0 == b) {
                        return Err(MergeError::config(format!("{key}.slices[{i}].sources"), "the base model must be one of the slice's sources"));
                    }
                }
            }
            slices.push(SliceSpec { sources, base, params: def.parameters.as_ref(), module_params: module.parameters.as_ref() });
        }
    }
    if method.base_policy() == BasePolicy::Required && slices.iter().any(|s| s.base.is_none()) {
        return Err(MergeError::config("base_model", format!("{} needs a base_model", method.name())));
    }
    Ok(slices)
}
