//! Tokenizer merging as mergekit 0.1.5 does it (`tokenizer_source`, the `tokenizer:` section):
//! build the output vocabulary (a model's, the base's, or the union of all), add the recipe's
//! `tokens`, map every output token to its row in each model, and give each model's
//! embedding/lm_head rows in the output order before they are merged. A token a model lacks gets
//! the row of the one model that has it, else the base's, else the mean over the models that have
//! it, else zeros, unless `tokens` says otherwise; rows past the vocabulary
//! (`pad_to_multiple_of`) are the mean of the real ones.
//!
//! Where mergekit's order depends on a hash (the models of a union are a Python set, a model's
//! tokens come from a hash map), evomerge takes the base model, then the models in recipe order,
//! each's tokens by id.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use crate::config::{EmbeddingSource, MergeConfig, TokenEmbedding};
use crate::source::TensorSource;
use crate::MergeError;

/// A model's tokenizer (its `tokenizer.json`) as mergekit reads it.
#[derive(Debug, Clone)]
struct ModelTokenizer {
    json: Value,
    /// The model's own vocabulary (`model.vocab`), without added tokens.
    model_vocab: HashMap<String, usize>,
    /// `added_tokens`, in file order.
    added: Vec<Value>,
    /// Rows the model's embeddings have for tokens (`vocab_size` of its config).
    rows: Option<usize>,
}

impl ModelTokenizer {
    fn load(source: &dyn TensorSource) -> Result<Option<Self>, MergeError> {
        let Some(dir) = source.files_dir() else { return Ok(None) };
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Ok(None);
        }
        let bad = |m: String| MergeError::Io { context: format!("cannot read {}", path.display()), source: std::io::Error::other(m) };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let model_vocab = match json.pointer("/model/vocab") {
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| v.as_u64().map(|id| (k.clone(), id as usize)).ok_or_else(|| bad(format!("token `{k}` has no integer id"))))
                .collect::<Result<_, _>>()?,
            // Unigram: a list of [piece, score], ids in order.
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(id, e)| e.get(0).and_then(Value::as_str).map(|p| (p.to_string(), id)).ok_or_else(|| bad(format!("vocabulary entry {id} has no piece"))))
                .collect::<Result<_, _>>()?,
            _ => return Err(bad("no `model.vocab`".into())),
        };
        let added = json.get("added_tokens").and_then(Value::as_array).cloned().unwrap_or_default();
        for entry in &added {
            if entry.get("id").and_then(Value::as_u64).is_none() || entry.get("content").and_then(Value::as_str).is_none() {
                return Err(bad(format!("added token {entry} needs `id` and `content`")));
            }
        }
        let config = source.config();
        let rows = config
            .and_then(|c| c.get("vocab_size").or_else(|| c.pointer("/text_config/vocab_size")))
            .and_then(Value::as_u64)
            .map(|v| v as usize);
        Ok(Some(ModelTokenizer { json, model_vocab, added, rows }))
    }

    /// `get_vocab()`: the model vocabulary and the added tokens (which win), by id.
    fn vocab(&self) -> Vec<(String, usize)> {
        let mut all: HashMap<String, usize> = self.model_vocab.clone();
        for entry in &self.added {
            all.insert(content(entry).to_string(), added_id(entry));
        }
        let mut list: Vec<(String, usize)> = all.into_iter().collect();
        list.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        list
    }

    /// Rows of its embeddings for tokens: the config's `vocab_size`, else the vocabulary's size.
    fn rows(&self) -> usize {
        self.rows.unwrap_or_else(|| self.vocab().len())
    }

    /// Without tokens whose id is past the model's rows (mergekit strips the base tokenizer so).
    fn stripped(mut self, label: &str) -> Result<Self, MergeError> {
        let rows = self.rows();
        let unused: Vec<String> = self.vocab().into_iter().filter(|(_, id)| *id >= rows).map(|(t, _)| t).collect();
        if unused.is_empty() {
            return Ok(self);
        }
        let kind = self.json.pointer("/model/type").and_then(Value::as_str).unwrap_or("?").to_string();
        if kind != "BPE" {
            return Err(MergeError::Unsupported(format!(
                "merging the tokenizer of `{label}`, whose vocabulary has {} tokens past its {rows} embedding rows and is of type {kind} (mergekit strips only BPE vocabularies)",
                unused.len()
            )));
        }
        self.added.retain(|e| added_id(e) < rows);
        self.model_vocab.retain(|_, id| *id < rows);
        let keep = |m: &Value| -> bool {
            let parts: Vec<&str> = match m {
                Value::String(s) => s.split(' ').collect(),
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            !parts.iter().any(|p| unused.iter().any(|u| u == p))
        };
        if let Some(model) = self.json.get_mut("model").and_then(Value::as_object_mut) {
            let vocab: serde_json::Map<String, Value> = self.model_vocab.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            model.insert("vocab".into(), Value::Object(vocab));
            if let Some(Value::Array(merges)) = model.get_mut("merges") {
                merges.retain(keep);
            }
        }
        Ok(self)
    }
}

fn content(entry: &Value) -> &str {
    entry.get("content").and_then(Value::as_str).unwrap_or_default()
}

fn added_id(entry: &Value) -> usize {
    entry.get("id").and_then(Value::as_u64).unwrap_or_default() as usize
}

/// The output tokenizer while tokens are added, with the `tokenizers` library's id rule.
struct OutputTokenizer {
    base: ModelTokenizer,
    added: Vec<Value>,
}

impl OutputTokenizer {
    fn id_of(&self, token: &str) -> Option<usize> {
        self.added.iter().find(|e| content(e) == token).map(added_id).or_else(|| self.base.model_vocab.get(token).copied())
    }

    /// Add a token (an `added_tokens` entry without `id`): an existing one keeps its id and takes
    /// the new settings; a new one gets the id after the last added one (at least the model
    /// vocabulary's size).
    fn add(&mut self, mut entry: Value) {
        let token = content(&entry).to_string();
        let id = self.id_of(&token).unwrap_or_else(|| {
            let size = self.base.model_vocab.len();
            self.added.iter().map(added_id).max().map_or(size, |max| if max >= size { max + 1 } else { size })
        });
        if let Some(map) = entry.as_object_mut() {
            map.insert("id".into(), json!(id));
        }
        match self.added.iter_mut().find(|e| content(e) == token) {
            Some(existing) => *existing = entry,
            None => self.added.push(entry),
        }
    }

    /// A plain token, as `add_tokens("text")` adds it.
    fn add_plain(&mut self, token: &str) {
        self.add(json!({
            "content": token, "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false
        }));
    }
}

/// Where a token's default row comes from, with models as indices into the recipe's model list.
#[derive(Debug, Clone)]
enum RowSource {
    Zero,
    /// The model's row of the same token.
    Model(usize),
    /// A given row of the model (by id, or by the token's id in that model's own vocabulary).
    ModelToken { model: usize, token_id: Option<usize>, token: Option<String> },
    /// A `tokens` entry without a source (mergekit fails if it is needed).
    Unset,
}

#[derive(Debug, Clone)]
struct TokenRule {
    source: RowSource,
    force: bool,
}

/// The merged vocabulary: the output tokenizer and how each model's rows map onto it.
#[derive(Debug, Clone)]
pub struct VocabMerge {
    /// The output `tokenizer.json`.
    pub tokenizer_json: Value,
    /// Whether it differs from `files_from`'s (else that file is copied as it is).
    pub changed: bool,
    /// `files_from`'s `tokenizer_config.json` with its `added_tokens_decoder` (transformers 4's
    /// copy of the added tokens) brought up to date; `None`: the file needs no change.
    pub tokenizer_config: Option<Value>,
    /// Output tokens by id.
    pub tokens: Vec<String>,
    /// Rows of the output embeddings (the vocabulary, padded to `pad_to_multiple_of`).
    pub rows: usize,
    /// Model whose tokenizer files (other than `tokenizer.json`) go with the output.
    pub files_from: usize,
    /// Per model (recipe index): its row of each output token, `None` where it lacks the token.
    permutations: Vec<Vec<Option<usize>>>,
    /// Per model: its own vocabulary (for `model_token` sources given by `token`).
    original: Vec<HashMap<String, usize>>,
    rules: BTreeMap<String, TokenRule>,
    labels: Vec<String>,
}

impl VocabMerge {
    /// Build the merged vocabulary, or `None` when the recipe sets no tokenizer source, or sets
    /// `base`/a model without `tokens`/`pad_to_multiple_of` and the models carry no `tokenizer.json`
    /// (the planner then aligns rows by count).
    pub fn build(config: &MergeConfig, refs: &[String], sources: &[&dyn TensorSource]) -> Result<Option<Self>, MergeError> {
        let Some(source) = config.tokenizer_source() else { return Ok(None) };
        let section = config.tokenizer.as_ref();
        let tokens: Vec<(String, TokenEmbedding)> = section.and_then(|s| s.tokens.clone()).unwrap_or_default();
        let pad = section.and_then(|s| s.pad_to_multiple_of);
        let index_of = |r: &str| refs.iter().position(|x| x == r);
        let labels: Vec<String> = sources.iter().map(|s| s.label()).collect();
        // mergekit's tokenizer base: the base model, else the first referenced model.
        let base = config.base_model.as_deref().and_then(index_of).unwrap_or(0);
        let needs_files = source == "union" || !tokens.is_empty() || pad.is_some();
        let mut loaded: Vec<Option<ModelTokenizer>> = Vec::with_capacity(sources.len());
        for (source, label) in sources.iter().zip(&labels) {
            match ModelTokenizer::load(*source) {
                Ok(t) => loaded.push(t),
                Err(e) if needs_files => return Err(e),
                // `base`/a model alone can do without: rows are then aligned by count.
                Err(e) => {
                    tracing::warn!(model = %label, error = %e, "unreadable tokenizer.json; the vocabulary rows are aligned by count");
                    return Ok(None);
                }
            }
        }
        let Some(base_tokenizer) = loaded[base].clone() else {
            if needs_files {
                return Err(MergeError::config(
                    "tokenizer",
                    format!("merging tokenizers needs `{}`'s tokenizer.json (the base model, else the first model)", labels[base]),
                ));
            }
            return Ok(None);
        };
        let base_tokenizer = base_tokenizer.stripped(&labels[base])?;
        let mut vocabs: Vec<ModelTokenizer> = loaded.clone().into_iter().map(|t| t.unwrap_or_else(|| base_tokenizer.clone())).collect();
        vocabs[base] = base_tokenizer.clone();
        for (i, t) in loaded.iter().enumerate() {
            if t.is_none() && i != base {
                tracing::warn!(model = %labels[i], "no tokenizer.json; assuming the same vocabulary as the base, as mergekit does");
            }
        }

        let (mut out, files_from) = match source {
            "base" => (OutputTokenizer { added: base_tokenizer.added.clone(), base: base_tokenizer.clone() }, base),
            "union" => (union(&vocabs, base, &base_tokenizer), base),
            model => {
                let i = index_of(model).ok_or_else(|| MergeError::config("tokenizer.source", format!("`{model}` is not a model of the recipe")))?;
                let Some(t) = loaded[i].clone() else {
                    if needs_files {
                        return Err(MergeError::config(
                            "tokenizer.source",
                            format!("`{}` has no tokenizer.json to take the vocabulary from", labels[i]),
                        ));
                    }
                    return Ok(None);
                };
                (OutputTokenizer { added: t.added.clone(), base: t }, i)
            }
        };
        for (token, _) in &tokens {
            if out.id_of(token).is_some() {
                continue;
            }
            if source == "base" {
                return Err(MergeError::config(
                    format!("tokenizer.tokens.{token}"),
                    "is not in the base tokenizer; mergekit 0.1.5 fails on a new token with `source: base`. Use `source: union` to add tokens",
                ));
            }
            out.add_plain(token);
        }

        let mut vocab: HashMap<String, usize> = out.base.model_vocab.clone();
        for entry in &out.added {
            vocab.insert(content(entry).to_string(), added_id(entry));
        }
        let size = vocab.len();
        let mut by_id: Vec<Option<String>> = vec![None; size];
        for (token, &id) in &vocab {
            match by_id.get_mut(id) {
                Some(slot) if slot.is_none() => *slot = Some(token.clone()),
                _ => {
                    return Err(MergeError::config(
                        "tokenizer",
                        format!("the output vocabulary's ids are not 0..{size} (token `{token}` has id {id}); mergekit cannot merge it either"),
                    ))
                }
            }
        }
        let tokens_by_id: Vec<String> = by_id.into_iter().map(Option::unwrap_or_default).collect();
        let rows = match pad {
            Some(m) if size % m != 0 => (size / m + 1) * m,
            _ => size,
        };

        let permutations = vocabs
            .iter()
            .map(|t| {
                let own: HashMap<String, usize> = t.vocab().into_iter().collect();
                let model_rows = t.rows();
                // A token past the model's rows is treated as missing (mergekit fails on it).
                tokens_by_id.iter().map(|tok| own.get(tok).copied().filter(|&id| id < model_rows)).collect()
            })
            .collect();
        let original = vocabs.iter().map(|t| t.vocab().into_iter().collect()).collect();
        let mut rules = BTreeMap::new();
        for (token, embedding) in &tokens {
            let key = format!("tokenizer.tokens.{token}.source");
            let model = |m: &str| index_of(m).ok_or_else(|| MergeError::config(&key, format!("`{m}` is not a model of the recipe")));
            let source = match &embedding.source {
                None => RowSource::Unset,
                Some(EmbeddingSource::Model(m)) => RowSource::Model(model(m)?),
                Some(EmbeddingSource::Kind(k)) if k.kind == "zero" => RowSource::Zero,
                Some(EmbeddingSource::Kind(k)) => RowSource::ModelToken {
                    model: model(k.model.as_deref().unwrap_or_default())?,
                    token_id: k.token_id,
                    token: k.token.clone(),
                },
            };
            rules.insert(token.clone(), TokenRule { source, force: embedding.force });
        }

        let mut tokenizer_json = out.base.json.clone();
        let mut added = out.added.clone();
        added.sort_by_key(added_id);
        if let Some(map) = tokenizer_json.as_object_mut() {
            map.insert("added_tokens".into(), Value::Array(added));
        }
        let changed = loaded[files_from].as_ref().is_none_or(|t| t.json != tokenizer_json);
        let tokenizer_config = if changed { updated_tokenizer_config(sources[files_from], &tokenizer_json) } else { None };
        Ok(Some(VocabMerge {
            tokenizer_json,
            changed,
            tokenizer_config,
            tokens: tokens_by_id,
            rows,
            files_from,
            permutations,
            original,
            rules,
            labels,
        }))
    }

    /// Where the row of every token that some input lacks (or that is forced) comes from, for a
    /// tensor merged from `inputs` (model index, its rows) whose base model is `base`. Planning
    /// calls it too, so a token source that cannot be served fails before anything is written.
    pub(crate) fn default_rows(
        &self,
        tensor: &str,
        inputs: &[(usize, usize)],
        base: Option<usize>,
    ) -> Result<HashMap<usize, DefaultRow>, MergeError> {
        let fail = |message: String| MergeError::InvalidInputs { tensor: tensor.to_string(), message };
        let rows_of = |model: usize| inputs.iter().find(|(m, _)| *m == model).map(|(_, r)| *r);
        let at = |model: usize, row: usize, token: &str| -> Result<(usize, usize), MergeError> {
            let rows = rows_of(model).ok_or_else(|| {
                fail(format!("token `{token}` takes its row from `{}`, which is not merged into this tensor", self.labels[model]))
            })?;
            if row >= rows {
                return Err(fail(format!("token `{token}` needs row {row} of `{}`, which has {rows}", self.labels[model])));
            }
            Ok((model, row))
        };
        let mut defaults = HashMap::new();
        for (id, token) in self.tokens.iter().enumerate() {
            let rule = self.rules.get(token);
            let holders: Vec<(usize, usize)> =
                inputs.iter().filter_map(|&(m, _)| self.permutations[m][id].map(|row| (m, row))).collect();
            if !rule.is_some_and(|r| r.force) && holders.len() == inputs.len() {
                continue;
            }
            let source = match rule {
                Some(r) => r.source.clone(),
                None if holders.len() == 1 => RowSource::Model(holders[0].0),
                None if holders.is_empty() => {
                    tracing::warn!(token = %token, "no model has this token; its row is zeros");
                    RowSource::Zero
                }
                None => match base.filter(|b| holders.iter().any(|(m, _)| m == b)) {
                    Some(b) => RowSource::Model(b),
                    None => {
                        let rows = holders.iter().map(|&(m, row)| at(m, row, token)).collect::<Result<_, _>>()?;
                        defaults.insert(id, DefaultRow::Mean(rows));
                        continue;
                    }
                },
            };
            let default = match source {
                RowSource::Zero => DefaultRow::Zero,
                RowSource::Unset => {
                    return Err(fail(format!(
                        "token `{token}` is missing from some model (or forced) but its `tokenizer.tokens` entry has no `source`"
                    )))
                }
                RowSource::Model(m) => {
                    let row = self.permutations[m][id]
                        .ok_or_else(|| fail(format!("token `{token}` is not in `{}`", self.labels[m])))?;
                    let (m, row) = at(m, row, token)?;
                    DefaultRow::Row(m, row)
                }
                RowSource::ModelToken { model, token_id, token: source_token } => {
                    let row = match (token_id, &source_token) {
                        (Some(id), _) => id,
                        (None, Some(t)) => *self.original[model]
                            .get(t)
                            .ok_or_else(|| fail(format!("token `{t}` is not in `{}`", self.labels[model])))?,
                        (None, None) => return Err(fail(format!("token `{token}`: `model_token` needs `token` or `token_id`"))),
                    };
                    let (m, row) = at(model, row, token)?;
                    DefaultRow::Row(m, row)
                }
            };
            defaults.insert(id, default);
        }
        Ok(defaults)
    }

    /// Each input's rows in the output order (`inputs`: model index and its values, `row_len`
    /// values a row); `base` is the tensor's base model. With `compute`, a mean over models is
    /// rounded to it after every step, as torch adds rows in that dtype.
    pub(crate) fn permute(
        &self,
        tensor: &str,
        inputs: &[(usize, &[f32])],
        row_len: usize,
        base: Option<usize>,
        compute: Option<evomerge_checkpoint::Dtype>,
    ) -> Result<Vec<Vec<f32>>, MergeError> {
        let round = |v: f32| compute.map_or(v, |d| crate::methods::round_to(d, v));
        let row_len = row_len.max(1);
        let counts: Vec<(usize, usize)> = inputs.iter().map(|(m, v)| (*m, v.len() / row_len)).collect();
        let defaults = self.default_rows(tensor, &counts, base)?;
        let values_of = |model: usize| inputs.iter().find(|(m, _)| *m == model).map_or(&[][..], |(_, v)| *v);
        let row = |model: usize, row: usize| &values_of(model)[row * row_len..(row + 1) * row_len];
        let defaults: HashMap<usize, Vec<f32>> = defaults
            .into_iter()
            .map(|(id, default)| {
                let values = match default {
                    DefaultRow::Zero => vec![0f32; row_len],
                    DefaultRow::Row(m, r) => row(m, r).to_vec(),
                    DefaultRow::Mean(rows) => {
                        let mut mean = vec![0f32; row_len];
                        for &(m, r) in &rows {
                            mean.iter_mut().zip(row(m, r)).for_each(|(a, b)| *a = round(*a + b));
                        }
                        mean.iter_mut().for_each(|a| *a = round(*a / rows.len() as f32));
                        mean
                    }
                };
                (id, values)
            })
            .collect();

        let size = self.tokens.len();
        let mut out = Vec::with_capacity(inputs.len());
        for &(model, values) in inputs {
            let model_rows = values.len() / row_len;
            let mut rows = vec![0f32; self.rows * row_len];
            for (id, token) in self.tokens.iter().enumerate() {
                let force = self.rules.get(token).is_some_and(|r| r.force);
                let target = &mut rows[id * row_len..(id + 1) * row_len];
                match (self.permutations[model][id].filter(|_| !force), defaults.get(&id)) {
                    (Some(r), _) if r < model_rows => target.copy_from_slice(&values[r * row_len..(r + 1) * row_len]),
                    (Some(r), _) => {
                        return Err(MergeError::InvalidInputs {
                            tensor: tensor.to_string(),
                            message: format!("`{}` has token `{token}` at id {r} but only {model_rows} rows", self.labels[model]),
                        })
                    }
                    (None, Some(default)) => target.copy_from_slice(default),
                    (None, None) => tracing::error!(token = %token, model = %self.labels[model], "no embedding for this token; its row is zeros"),
                }
            }
            if self.rows > size && size > 0 {
                // Padding rows: the mean embedding of the real ones.
                let mut mean = vec![0f32; row_len];
                for row in rows[..size * row_len].chunks_exact(row_len) {
                    mean.iter_mut().zip(row).for_each(|(a, b)| *a += b);
                }
                mean.iter_mut().for_each(|a| *a /= size as f32);
                for row in rows[size * row_len..].chunks_exact_mut(row_len) {
                    row.copy_from_slice(&mean);
                }
            }
            out.push(rows);
        }
        Ok(out)
    }
}

/// The row a token that some input lacks gets (models by index, rows in that model).
#[derive(Debug, Clone)]
pub(crate) enum DefaultRow {
    Zero,
    Row(usize, usize),
    /// The mean over the models that have the token (mergekit's rule when neither one model nor
    /// the base has it).
    Mean(Vec<(usize, usize)>),
}

/// `tokenizer_config.json` of `source` with `added_tokens_decoder` listing `tokenizer`'s added
/// tokens, as transformers 4 saves it; `None` when the file has no such list (transformers 5).
fn updated_tokenizer_config(source: &dyn TensorSource, tokenizer: &Value) -> Option<Value> {
    let path = source.files_dir()?.join("tokenizer_config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let decoder = config.get_mut("added_tokens_decoder")?.as_object_mut()?;
    decoder.clear();
    for entry in tokenizer.get("added_tokens")?.as_array()? {
        let mut settings = entry.clone();
        if let Some(map) = settings.as_object_mut() {
            map.remove("id");
        }
        decoder.insert(added_id(entry).to_string(), settings);
    }
    Some(config)
}

/// mergekit's union: the base tokenizer, then every other model's tokens it lacks as plain added
/// tokens, then every model's added tokens (the first settings seen of each).
fn union(vocabs: &[ModelTokenizer], base: usize, base_tokenizer: &ModelTokenizer) -> OutputTokenizer {
    let order = std::iter::once(base).chain((0..vocabs.len()).filter(|&i| i != base));
    let mut plain: Vec<String> = Vec::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut added: Vec<Value> = Vec::new();
    for i in order {
        let t = &vocabs[i];
        let rows = t.rows();
        for (token, id) in t.vocab() {
            if id < rows && seen.insert(token.clone()) {
                plain.push(token);
            }
        }
        for entry in &t.added {
            if added_id(entry) < rows && !added.iter().any(|e| content(e) == content(entry)) {
                added.push(entry.clone());
            }
        }
    }
    let mut out = OutputTokenizer { base: base_tokenizer.clone(), added: base_tokenizer.added.clone() };
    let base_vocab: std::collections::HashSet<String> = base_tokenizer.vocab().into_iter().map(|(t, _)| t).collect();
    for token in plain {
        if !added.iter().any(|e| content(e) == token) && !base_vocab.contains(&token) {
            out.add_plain(&token);
        }
    }
    for entry in added {
        let mut entry = entry;
        if let Some(map) = entry.as_object_mut() {
            map.remove("id");
        }
        out.add(entry);
    }
    out
}
