//! The merge recipe: mergekit's YAML format parsed into typed structs and validated at load, so a
//! bad key or value is reported (by its path) before any tensor is read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::methods::{self, MergeMethod};
use crate::params::{validate_setting, ParamScope, Parameters};
use crate::MergeError;

/// A whole recipe (`models:` or `slices:`, `merge_method:`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<InputModel>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slices: Option<Vec<OutputSlice>>,
    /// Per-module recipes (mergekit's `modules:`), by module name; see [`crate::modules`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<BTreeMap<String, OutputModule>>,
    pub merge_method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Parameters>,
    /// Dtype mergekit computes in; evomerge computes in f32 unless told to do as mergekit (see
    /// [`crate::ComputeDtype`]) and uses this as the output dtype when `out_dtype` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_dtype: Option<String>,
    /// `base`, `union` or a model reference: the output vocabulary (absent: the output model's rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_source: Option<String>,
    /// mergekit's newer `tokenizer:` section: `source` (default `union`), `tokens`, `pad_to_multiple_of`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<TokenizerSection>,
    /// Chat template of the output: `auto` (the one most input models have), a built-in name
    /// (`chatml`), or the Jinja template itself. Written as the output's `chat_template.jinja`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
    /// Directory that relative model paths are resolved against when they do not exist relative
    /// to the working directory (set by [`MergeConfig::from_file`] to the recipe's directory).
    #[serde(skip)]
    pub recipe_dir: Option<PathBuf>,
}

/// One module of a `modules:` recipe: its own `models` or `slices`, and parameters that rank
/// between the slice's and the recipe's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputModule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<InputModel>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slices: Option<Vec<OutputSlice>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Parameters>,
}

/// The recipe's `tokenizer:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSection {
    /// `union` (mergekit's default when absent), `base` or a model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Tokens the output vocabulary must have, and where their embedding rows come from, in
    /// recipe order (new tokens get ids in that order, as in mergekit).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "ordered_tokens")]
    pub tokens: Option<Vec<(String, TokenEmbedding)>>,
    /// Round the vocabulary rows up to a multiple of this; the extra rows are the mean embedding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_to_multiple_of: Option<usize>,
}

/// `tokenizer.tokens` as a list of (token, entry) pairs in the order the recipe gives them.
mod ordered_tokens {
    use std::fmt;

    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde::ser::Serializer;

    use super::TokenEmbedding;

    type Tokens = Option<Vec<(String, TokenEmbedding)>>;

    pub fn serialize<S: Serializer>(tokens: &Tokens, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(tokens.iter().flatten().map(|(k, v)| (k, v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Tokens, D::Error> {
        struct TokensVisitor;
        impl<'de> Visitor<'de> for TokensVisitor {
            type Value = Tokens;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from token to {source, force}")
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Tokens, E> {
                Ok(None)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Tokens, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Tokens, D::Error> {
                deserializer.deserialize_map(self)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tokens, A::Error> {
                let mut tokens: Vec<(String, TokenEmbedding)> = Vec::new();
                while let Some((token, entry)) = map.next_entry::<String, TokenEmbedding>()? {
                    if tokens.iter().any(|(t, _)| *t == token) {
                        return Err(serde::de::Error::custom(format!("token `{token}` is given twice")));
                    }
                    tokens.push((token, entry));
                }
                Ok(Some(tokens))
            }
        }
        deserializer.deserialize_option(TokensVisitor)
    }
}

/// One entry of `tokenizer.tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEmbedding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<EmbeddingSource>,
    /// Use `source` even in models that have the token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// Where a token's embedding row comes from: a model (its row of that token), or
/// `{kind: zero}` / `{kind: model_token, model, token | token_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingSource {
    Model(String),
    Kind(EmbeddingKind),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingKind {
    /// `zero` or `model_token`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<usize>,
}

impl EmbeddingSource {
    /// The model this source reads from (`None`: zero).
    pub fn model(&self) -> Option<&str> {
        match self {
            EmbeddingSource::Model(m) => Some(m),
            EmbeddingSource::Kind(k) => k.model.as_deref(),
        }
    }

    fn model_mut(&mut self) -> Option<&mut String> {
        match self {
            EmbeddingSource::Model(m) => Some(m),
            EmbeddingSource::Kind(k) => k.model.as_mut(),
        }
    }

    fn validate(&self, key: &str) -> Result<(), MergeError> {
        let EmbeddingSource::Kind(k) = self else { return Ok(()) };
        let extra = k.model.is_some() || k.token.is_some() || k.token_id.is_some();
        match k.kind.as_str() {
            "zero" if extra => Err(MergeError::config(key, "`kind: zero` takes no `model`, `token` or `token_id`")),
            "zero" => Ok(()),
            "model_token" if k.model.is_none() => Err(MergeError::config(key, "`kind: model_token` needs `model`")),
            "model_token" if k.token.is_some() == k.token_id.is_some() => {
                Err(MergeError::config(key, "`kind: model_token` needs exactly one of `token` or `token_id`"))
            }
            "model_token" => Ok(()),
            other => Err(MergeError::config(key, format!("unknown kind `{other}`; use `zero` or `model_token`"))),
        }
    }
}

/// One document of a recipe file: `name` (intermediate merges of a `mergekit-multi` file, which
/// later documents use as a model) and its recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipeDocument {
    pub name: Option<String>,
    pub config: MergeConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputModel {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Parameters>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSlice {
    pub sources: Vec<InputSlice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    /// Accepted and ignored: mergekit 0.1.5 parses it but never uses it (its output is the same
    /// with or without it), so a recipe carrying it merges as mergekit merges it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual_weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Parameters>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSlice {
    pub model: String,
    pub layer_range: [usize; 2],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Parameters>,
}

/// Output tensor dtype names accepted in `dtype` / `out_dtype`.
pub fn parse_dtype(name: &str) -> Option<evomerge_checkpoint::Dtype> {
    evomerge_checkpoint::Dtype::parse(name)
}

impl MergeConfig {
    /// Parse and validate a recipe from YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, MergeError> {
        check_single_document(text)?;
        let config: MergeConfig =
            serde_norway::from_str(text).map_err(|e| MergeError::Yaml(explain_unknown_field(&e.to_string())))?;
        config.validate()?;
        Ok(config)
    }

    /// Read a recipe file; relative model paths may be given relative to the recipe's directory.
    pub fn from_file(path: &Path) -> Result<Self, MergeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| MergeError::Io { context: format!("cannot read recipe {}", path.display()), source })?;
        let mut config = Self::from_yaml(&text).map_err(|e| match e {
            MergeError::Yaml(m) => MergeError::Yaml(format!("{}: {m}", path.display())),
            other => other,
        })?;
        config.recipe_dir = path.parent().map(Path::to_path_buf);
        Ok(config)
    }

    /// Every document of a recipe text, in order: a plain recipe, or a `mergekit-multi` file
    /// (named intermediate merges, then at most one unnamed final merge, which must be last).
    pub fn documents_from_yaml(text: &str) -> Result<Vec<RecipeDocument>, MergeError> {
        use serde::Deserialize;
        let mut documents: Vec<RecipeDocument> = Vec::new();
        for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
            let mut value = serde_norway::Value::deserialize(document).map_err(|e| MergeError::Yaml(e.to_string()))?;
            if value.is_null() {
                continue;
            }
            let at = |m: String| MergeError::config(format!("document {}", index + 1), m);
            let name = match value.as_mapping_mut().and_then(|m| m.remove("name")) {
                None => None,
                Some(serde_norway::Value::String(n)) => Some(n),
                Some(other) => return Err(at(format!("`name` must be a string, got {other:?}"))),
            };
            if let Some(n) = &name {
                let plain = !n.is_empty() && !n.starts_with('.') && n.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
                if !plain {
                    return Err(at(format!("`name: {n}` becomes a directory name: use letters, digits, `.`, `_`, `-` (not first `.`)")));
                }
                if documents.iter().any(|d| d.name.as_deref() == Some(n.as_str())) {
                    return Err(at(format!("`name: {n}` is used by an earlier document too")));
                }
            }
            if documents.last().is_some_and(|d| d.name.is_none()) {
                return Err(at("only the last document may be unnamed (the final merge); name the earlier one".into()));
            }
            let config: MergeConfig =
                serde_norway::from_value(value).map_err(|e| MergeError::Yaml(format!("document {}: {}", index + 1, explain_unknown_field(&e.to_string()))))?;
            config.validate().map_err(|e| match e {
                MergeError::Config { key, message } => MergeError::Config { key: format!("document {}: {key}", index + 1), message },
                other => other,
            })?;
            documents.push(RecipeDocument { name, config });
        }
        if documents.is_empty() {
            return Err(MergeError::Yaml("the file holds no recipe".into()));
        }
        Ok(documents)
    }

    /// [`MergeConfig::documents_from_yaml`] of a file; relative model paths may be given relative
    /// to the file's directory.
    pub fn documents_from_file(path: &Path) -> Result<Vec<RecipeDocument>, MergeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| MergeError::Io { context: format!("cannot read recipe {}", path.display()), source })?;
        let mut documents = Self::documents_from_yaml(&text).map_err(|e| match e {
            MergeError::Yaml(m) => MergeError::Yaml(format!("{}: {m}", path.display())),
            other => other,
        })?;
        for d in &mut documents {
            d.config.recipe_dir = path.parent().map(Path::to_path_buf);
        }
        Ok(documents)
    }

    /// Every model reference of the recipe (models, slice sources, base models, tokenizer source).
    pub(crate) fn model_refs_mut(&mut self) -> Vec<&mut String> {
        let mut refs: Vec<&mut String> = Vec::new();
        for m in self.models.iter_mut().flatten() {
            refs.push(&mut m.model);
        }
        for s in self.slices.iter_mut().flatten() {
            for source in &mut s.sources {
                refs.push(&mut source.model);
            }
            if let Some(b) = &mut s.base_model {
                refs.push(b);
            }
        }
        for module in self.modules.iter_mut().flat_map(|m| m.values_mut()) {
            for m in module.models.iter_mut().flatten() {
                refs.push(&mut m.model);
            }
            for s in module.slices.iter_mut().flatten() {
                for source in &mut s.sources {
                    refs.push(&mut source.model);
                }
                if let Some(b) = &mut s.base_model {
                    refs.push(b);
                }
            }
        }
        if let Some(b) = &mut self.base_model {
            refs.push(b);
        }
        if let Some(t) = self.tokenizer_source.as_mut().filter(|t| *t != "base" && *t != "union") {
            refs.push(t);
        }
        if let Some(section) = self.tokenizer.as_mut() {
            if let Some(t) = section.source.as_mut().filter(|t| *t != "base" && *t != "union") {
                refs.push(t);
            }
            for (_, token) in section.tokens.iter_mut().flatten() {
                if let Some(m) = token.source.as_mut().and_then(EmbeddingSource::model_mut) {
                    refs.push(m);
                }
            }
        }
        refs
    }

    /// `tokenizer_source`, or `tokenizer.source` (the same thing in mergekit's newer spelling,
    /// `union` when the section has none).
    pub fn tokenizer_source(&self) -> Option<&str> {
        self.tokenizer_source
            .as_deref()
            .or_else(|| self.tokenizer.as_ref().map(|t| t.source.as_deref().unwrap_or("union")))
    }

    pub fn to_yaml(&self) -> Result<String, MergeError> {
        serde_norway::to_string(self).map_err(|e| MergeError::Yaml(e.to_string()))
    }

    /// The registered method this recipe names.
    pub fn method(&self) -> Result<&'static dyn MergeMethod, MergeError> {
        methods::get(&self.merge_method)
    }

    /// Check structure, method, parameter names, types and ranges.
    pub fn validate(&self) -> Result<(), MergeError> {
        let method = self.method()?;
        match (&self.models, &self.slices, &self.modules) {
            (Some(m), None, None) if !m.is_empty() => {}
            (None, Some(s), None) if !s.is_empty() => {}
            (None, None, Some(m)) if !m.is_empty() => {}
            (None, None, None) => {
                return Err(MergeError::config("models", "the recipe needs a non-empty `models`, `slices` or `modules`"))
            }
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err(MergeError::config("models", "give one of `models`, `slices` and `modules`, not several"))
            }
            _ => return Err(MergeError::config("models", "the recipe needs a non-empty `models`, `slices` or `modules`")),
        }
        if self.modules.is_some() && self.tokenizer_source().is_some() {
            return Err(MergeError::Unsupported(
                "a tokenizer source with `modules:` (vocabulary alignment across modules)".into(),
            ));
        }
        for (key, name) in [("dtype", &self.dtype), ("out_dtype", &self.out_dtype)] {
            if let Some(name) = name {
                if parse_dtype(name).is_none() {
                    return Err(MergeError::config(key, format!("unknown dtype `{name}`; use float32, float16 or bfloat16")));
                }
            }
        }
        if let Some(template) = &self.chat_template {
            chat_template_text(template)?;
        }
        if let Some(section) = &self.tokenizer {
            if self.tokenizer_source.is_some() {
                return Err(MergeError::config("tokenizer", "give `tokenizer_source` or `tokenizer.source`, not both"));
            }
            if section.pad_to_multiple_of == Some(0) {
                return Err(MergeError::config("tokenizer.pad_to_multiple_of", "must be at least 1"));
            }
            for (token, embedding) in section.tokens.iter().flatten() {
                if let Some(source) = &embedding.source {
                    source.validate(&format!("tokenizer.tokens.{token}.source"))?;
                }
            }
        }
        for reference in crate::plan::model_refs(self) {
            crate::lora::split_model_ref(&reference)?;
        }
        check_parameters(method, self.parameters.as_ref(), "parameters", false)?;
        check_models_and_slices(method, self.models.as_deref(), self.slices.as_deref(), "")?;
        for (name, module) in self.modules.iter().flatten() {
            let key = format!("modules.{name}");
            match (&module.models, &module.slices) {
                (Some(m), None) if !m.is_empty() => {}
                (None, Some(s)) if !s.is_empty() => {}
                _ => return Err(MergeError::config(key, "a module needs either a non-empty `models` or `slices` list")),
            }
            check_parameters(method, module.parameters.as_ref(), &format!("{key}.parameters"), false)?;
            check_models_and_slices(method, module.models.as_deref(), module.slices.as_deref(), &format!("{key}."))?;
        }
        Ok(())
    }
}

/// Per-model parameters of `models`, and the structure and parameters of `slices`; `prefix` is
/// the key path of their parent (`modules.<name>.` inside a module).
fn check_models_and_slices(
    method: &dyn MergeMethod,
    models: Option<&[InputModel]>,
    slices: Option<&[OutputSlice]>,
    prefix: &str,
) -> Result<(), MergeError> {
    {
        if let Some(models) = models {
            for (i, m) in models.iter().enumerate() {
                check_parameters(method, m.parameters.as_ref(), &format!("{prefix}models[{i}].parameters"), true)?;
            }
        }
        if let Some(slices) = slices {
            for (i, s) in slices.iter().enumerate() {
                if s.sources.is_empty() {
                    return Err(MergeError::config(format!("{prefix}slices[{i}].sources"), "a slice needs at least one source"));
                }
                check_parameters(method, s.parameters.as_ref(), &format!("{prefix}slices[{i}].parameters"), false)?;
                if s.residual_weight.is_some() {
                    tracing::warn!("{prefix}slices[{i}].residual_weight has no effect (mergekit 0.1.5 reads and ignores it too)");
                }
                let len0 = s.sources[0].layer_range[1].saturating_sub(s.sources[0].layer_range[0]);
                for (j, src) in s.sources.iter().enumerate() {
                    let key = format!("{prefix}slices[{i}].sources[{j}]");
                    let [a, b] = src.layer_range;
                    if a >= b {
                        return Err(MergeError::config(
                            format!("{key}.layer_range"),
                            format!("[{a}, {b}] is empty; the end is exclusive and must exceed the start"),
                        ));
                    }
                    if b - a != len0 {
                        return Err(MergeError::config(
                            format!("{key}.layer_range"),
                            format!("covers {} layers but the slice's first source covers {len0}; all sources of a slice need the same number of layers", b - a),
                        ));
                    }
                    check_parameters(method, src.parameters.as_ref(), &format!("{key}.parameters"), true)?;
                }
            }
        }
        Ok(())
    }
}

/// ChatML, the one template mergekit bundles that evomerge does too (it is the format's
/// definition, not a model's).
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}\n{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}\n";

/// The template a `chat_template` value names (`None` for `auto`, which needs the models), or
/// why it names none. Like mergekit: a short word is a built-in name, else the text must look
/// like a template (at least 20 characters with a `{`).
pub fn chat_template_text(value: &str) -> Result<Option<String>, MergeError> {
    if value == "auto" {
        return Ok(None);
    }
    let looks_like_name = value.len() < 256 && !value.contains('\n') && !value.contains('{');
    if looks_like_name {
        return match value {
            "chatml" => Ok(Some(CHATML.to_string())),
            "alpaca" | "exaone" | "llama3" | "mistral" => Err(MergeError::config(
                "chat_template",
                format!("`{value}` is one of mergekit's bundled templates that evomerge does not bundle; paste the template text instead (or use `chatml` or `auto`)"),
            )),
            _ => Err(MergeError::config(
                "chat_template",
                format!("`{value}` is neither `auto`, a built-in template (`chatml`) nor a Jinja template (one contains `{{`)"),
            )),
        };
    }
    if value.len() < 20 || !value.contains('{') {
        return Err(MergeError::config("chat_template", "is not a chat template (too short or no `{`)"));
    }
    Ok(Some(value.to_string()))
}

/// Refuse a multi-document file (mergekit-multi's format: named merges whose names later documents
/// use as models) with a message saying what it is and how to run it, rather than a parse error
/// about its `name` keys.
fn check_single_document(text: &str) -> Result<(), MergeError> {
    use serde::Deserialize;
    let mut names = Vec::new();
    let mut count = 0;
    for document in serde_norway::Deserializer::from_str(text) {
        // A document that does not parse is reported by the ordinary parse below.
        let Ok(value) = serde_norway::Value::deserialize(document) else { return Ok(()) };
        if value.is_null() {
            continue;
        }
        count += 1;
        names.push(value.get("name").and_then(|n| n.as_str()).map(str::to_string));
    }
    if count > 1 {
        let listed: Vec<String> =
            names.iter().map(|n| n.as_ref().map_or("(unnamed, the final merge)".to_string(), |n| format!("`{n}`"))).collect();
        return Err(MergeError::Yaml(format!(
            "this file holds {count} recipes ({}): a multi-document recipe, as `mergekit-multi` runs them (named \
             intermediate merges that later documents use as models). `evomerge merge` runs them in order (each \
             named one into OUT/<name>, the final one into OUT); in code, read it with \
             `MergeConfig::documents_from_yaml` and run it with `merge_documents_to_dir`",
            listed.join(", ")
        )));
    }
    if let Some(Some(name)) = names.first() {
        return Err(MergeError::Yaml(format!(
            "`name: {name}` names a merge inside a `mergekit-multi` file; `mergekit-yaml` ignores it. \
             Remove the `name` key to merge this recipe on its own"
        )));
    }
    Ok(())
}

/// Add to serde's "unknown field" message what mergekit would have done and how to proceed.
fn explain_unknown_field(message: &str) -> String {
    let Some(rest) = message.split("unknown field `").nth(1) else { return message.to_string() };
    let Some(key) = rest.split('`').next() else { return message.to_string() };
    let is_parameter = methods::registry().iter().any(|m| m.parameters().iter().any(|p| p.name == key));
    let hint = if is_parameter {
        format!("`{key}` is a merge parameter: put it under `parameters:`")
    } else {
        "fix the spelling or remove the key".to_string()
    };
    format!(
        "{message}. mergekit 0.1.5 would silently ignore `{key}` and merge as if it were absent, so a misspelt \
         key never takes effect; {hint}"
    )
}

fn check_parameters(
    method: &dyn MergeMethod,
    params: Option<&Parameters>,
    key: &str,
    per_model: bool,
) -> Result<(), MergeError> {
    let Some(params) = params else { return Ok(()) };
    let specs = method.parameters();
    for (name, setting) in params {
        let Some(spec) = specs.iter().find(|s| s.name == name) else {
            let known: Vec<&str> = specs.iter().map(|s| s.name).collect();
            return Err(MergeError::config(
                format!("{key}.{name}"),
                format!(
                    "unknown parameter for {}; known: {}",
                    method.name(),
                    if known.is_empty() { "(none)".to_string() } else { known.join(", ") }
                ),
            ));
        };
        // Per-model parameters may also be set globally (as mergekit allows), but a shared one set
        // per model would be silently ignored: refuse it.
        if per_model && spec.scope == ParamScope::Shared {
            return Err(MergeError::config(
                format!("{key}.{name}"),
                format!("`{name}` applies to the whole merge; set it under the top-level `parameters`"),
            ));
        }
        validate_setting(setting, spec, &format!("{key}.{name}"))?;
    }
    Ok(())
}
