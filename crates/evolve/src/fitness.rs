//! Fitness: the task's items, and scoring a live model on them. Generation metrics go through the
//! eval crate's `Generator` seam and its scorers (the paper's MGSM rule, Japanese ROUGE-L); the
//! `loglik` metric is teacher-forced and generates nothing.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, D};

use crate::generators::FeatureCache;
use evomerge_datasets::{Benchmark, DataSource, OnBadRow};
use evomerge_eval::generator::{GenerationSettings, Generator, ImageInput, Prompt};
use evomerge_eval::ja::JaTokenizer;
use evomerge_eval::langid::JapaneseDetector;
use evomerge_eval::mgsm::{self, ExtractionMode};
use evomerge_eval::rouge::RougeJa;
use evomerge_eval::runner::{render_vqa_prompt, JA_VQA_PROMPT};
use evomerge_mistral::sequential_positions;
use evomerge_vision::ImagePrompt;

use crate::error::{EvolveError, Result};
use crate::journal::TrialOutcome;
use crate::live::{Live, LiveModel};
use crate::recipe::{EvolveRecipe, Metric, TaskKind, TaskSpec};

/// One item of the search set, prompt already rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskItem {
    pub prompt: String,
    pub reference: String,
    /// For the accuracy metrics.
    pub answer_number: Option<f64>,
    pub image: Option<ImageInput>,
    /// A custom row's other string or number fields (e.g. a question type), for `stratify`.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The task of a recipe, loaded.
#[derive(Debug, Clone)]
pub struct Task {
    pub spec: TaskSpec,
    pub items: Vec<TaskItem>,
    pub settings: GenerationSettings,
    pub files: Vec<PathBuf>,
}

impl Task {
    /// Load the task's items (the first `limit`) and render their prompts.
    pub fn load(recipe: &EvolveRecipe) -> Result<Task> {
        let spec = recipe.task.clone();
        let data_err = |e: evomerge_datasets::DatasetError| EvolveError::Data(e.to_string());
        let source = match &spec.data {
            None => DataSource::hub(),
            Some(d) => match recipe.resolve_path(d) {
                Some(p) => DataSource::Local(p),
                None => DataSource::Hub { revision: "main".into() },
            },
        };
        let template = template_text(recipe)?;
        let mut files = Vec::new();
        let mut items = match spec.kind {
            TaskKind::MgsmJa | TaskKind::Gsm8kJa => {
                let bench = if spec.kind == TaskKind::MgsmJa { Benchmark::MgsmJa } else { Benchmark::Gsm8kJaSearch };
                let split = spec.split.as_deref().unwrap_or("test");
                let loaded = evomerge_datasets::load_math_split(bench, &source, split, OnBadRow::Fail).map_err(data_err)?;
                files = loaded.files;
                loaded
                    .items
                    .into_iter()
                    .map(|q| TaskItem {
                        prompt: mgsm::render_prompt(&template, &q.question),
                        reference: format_number(q.answer_number),
                        answer_number: Some(q.answer_number),
                        image: None,
                        labels: Default::default(),
                    })
                    .collect::<Vec<_>>()
            }
            TaskKind::JaVgVqa | TaskKind::JaVlmWild => {
                let bench = if spec.kind == TaskKind::JaVgVqa { Benchmark::JaVgVqa500 } else { Benchmark::JaVlmWild };
                let split = spec.split.as_deref().unwrap_or("test");
                let loaded = evomerge_datasets::load_vqa_split(bench, &source, split, OnBadRow::Fail).map_err(data_err)?;
                files = loaded.files;
                loaded
                    .items
                    .into_iter()
                    .map(|q| TaskItem {
                        prompt: render_vqa_prompt(&template, &q.question),
                        reference: q.answer,
                        answer_number: None,
                        image: Some(ImageInput::Encoded(q.image)),
                        labels: Default::default(),
                    })
                    .collect()
            }
            TaskKind::Custom => {
                let DataSource::Local(path) = &source else {
                    return Err(EvolveError::recipe("task.data", "a custom task reads a local JSON-lines file"));
                };
                files.push(path.clone());
                load_custom(path, &template, spec.metric)?
            }
        };
        if let Some(limit) = spec.limit {
            items.truncate(limit);
        }
        if items.is_empty() {
            return Err(EvolveError::Data(format!("the task has no items ({})", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "))));
        }
        let g = &spec.generation;
        let settings = GenerationSettings {
            max_new_tokens: g.max_new_tokens,
            num_beams: g.num_beams,
            repetition_penalty: g.repetition_penalty,
            stop: g.stop.clone(),
        };
        Ok(Task { spec, items, settings, files })
    }

    pub fn needs_images(&self) -> bool {
        self.items.iter().any(|i| i.image.is_some())
    }

    /// The same task on items `ids` only, in that order.
    pub fn select(&self, ids: &[usize]) -> Result<Task> {
        let items = ids
            .iter()
            .map(|&i| self.items.get(i).cloned().ok_or_else(|| EvolveError::Fitness(format!("item {i} of {} does not exist", self.items.len()))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Task { spec: self.spec.clone(), items, settings: self.settings.clone(), files: self.files.clone() })
    }
}

fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        v.to_string()
    }
}

/// The prompt template: the paper's named ones, a file, or `{input}` for custom tasks.
fn template_text(recipe: &EvolveRecipe) -> Result<String> {
    let kind = recipe.task.kind;
    Ok(match recipe.task.template.as_deref() {
        Some("mgsm-ja") => mgsm::MGSM_JA_PROMPT.to_string(),
        Some("ja-vqa") => JA_VQA_PROMPT.to_string(),
        Some(file) => {
            let path = recipe
                .resolve_path(file)
                .ok_or_else(|| EvolveError::recipe("task.template", format!("`{file}` does not exist")))?;
            std::fs::read_to_string(&path)
                .map_err(|e| EvolveError::recipe("task.template", format!("cannot read {}: {e}", path.display())))?
        }
        None if kind.is_math() => mgsm::MGSM_JA_PROMPT.to_string(),
        None if kind.is_vqa() => JA_VQA_PROMPT.to_string(),
        None => "{input}".to_string(),
    })
}

/// A custom task row; other fields (labels, metadata) are allowed and ignored.
#[derive(serde::Deserialize)]
struct CustomRow {
    prompt: String,
    reference: String,
    #[serde(default)]
    image: Option<String>,
    /// For the accuracy metrics; else `reference` must be a number.
    #[serde(default)]
    answer_number: Option<f64>,
    #[serde(flatten)]
    other: std::collections::BTreeMap<String, serde_json::Value>,
}

fn load_custom(path: &Path, template: &str, metric: Metric) -> Result<Vec<TaskItem>> {
    let text = std::fs::read_to_string(path).map_err(|e| EvolveError::Data(format!("{}: {e}", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: CustomRow = serde_json::from_str(line).map_err(|e| {
            EvolveError::Data(format!(
                "{} line {}: {e} (expected {{\"prompt\", \"reference\", \"image\"?, \"answer_number\"?}})",
                path.display(),
                i + 1
            ))
        })?;
        let image = match &row.image {
            Some(rel) => {
                let p = base.join(rel);
                if !p.is_file() {
                    return Err(EvolveError::Data(format!("{} line {}: image {} does not exist", path.display(), i + 1, p.display())));
                }
                Some(ImageInput::Path(p))
            }
            None => None,
        };
        // A prompt that already places its image keeps it there; otherwise the image goes first.
        let prompt = if image.is_some() && !row.prompt.contains(evomerge_vision::IMAGE_MARKER) {
            render_vqa_prompt(template, &row.prompt)
        } else {
            template.replace("{input}", &row.prompt)
        };
        let answer_number = match (metric, row.answer_number) {
            (_, Some(n)) => Some(n),
            (Metric::Accuracy | Metric::AccuracyJa, None) => Some(row.reference.trim().parse::<f64>().map_err(|_| {
                EvolveError::Data(format!(
                    "{} line {}: accuracy needs an `answer_number` or a numeric reference, got {:?}",
                    path.display(),
                    i + 1,
                    row.reference
                ))
            })?),
            _ => None,
        };
        let labels = row
            .other
            .into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                serde_json::Value::Number(n) => Some((k, n.to_string())),
                serde_json::Value::Bool(b) => Some((k, b.to_string())),
                _ => None,
            })
            .collect();
        items.push(TaskItem { prompt, reference: row.reference, answer_number, image, labels });
    }
    Ok(items)
}

/// Per-item scorers of the generation metrics, loaded once per run.
pub struct Scorer {
    metric: Metric,
    rouge: Option<RougeJa<JaTokenizer>>,
    detector: Option<JapaneseDetector>,
}

impl Scorer {
    pub fn new(metric: Metric) -> Result<Self> {
        let rouge = match metric {
            Metric::RougeLJa | Metric::RougeLJaStrict => Some(RougeJa::new(JaTokenizer::from_env().map_err(|e| {
                EvolveError::Fitness(format!(
                    "{} needs the UniDic-lite dictionary: {e} (scripts/fetch-assets.sh fetches it and prints EVOMERGE_UNIDIC_DIR)",
                    metric.name()
                ))
            })?)),
            _ => None,
        };
        let detector = matches!(metric, Metric::AccuracyJa | Metric::RougeLJaStrict).then(JapaneseDetector::from_env_or_fallback);
        Ok(Scorer { metric, rouge, detector })
    }

    /// Score one answer (higher is better; accuracy 0 or 1, ROUGE-L F in [0, 1]).
    pub fn score(&self, item: &TaskItem, answer: &str) -> f64 {
        let p_ja = |t: &str| self.detector.as_ref().map_or(0.0, |d| f64::from(d.p_ja(&t.replace('\n', ""))));
        match self.metric {
            Metric::Accuracy | Metric::AccuracyJa => {
                let correct = item.answer_number.is_some_and(|n| mgsm::score(answer, n, ExtractionMode::Paper).correct);
                let ja = self.metric == Metric::Accuracy || p_ja(answer) > mgsm::ACC_JA_THRESHOLD;
                f64::from(u8::from(correct && ja))
            }
            Metric::RougeLJa | Metric::RougeLJaStrict => {
                let Some(rouge) = &self.rouge else { return 0.0 };
                let prediction = if self.metric == Metric::RougeLJaStrict && p_ja(&item.reference) >= 0.5 && p_ja(answer) < 0.5 {
                    ""
                } else {
                    answer
                };
                rouge.score_pair(&item.reference, prediction).rouge_l.fmeasure
            }
            Metric::Exact => f64::from(u8::from(answer.trim() == item.reference.trim())),
            Metric::Loglik => f64::NAN,
        }
    }
}

/// Score the live model as it is now on `task` with the recipe's metric (`scorer`: for the
/// generation metrics).
pub fn score_live(live: &Live, metric: Metric, task: &Task, scorer: Option<&Scorer>, features: &mut FeatureCache) -> Result<TrialOutcome> {
    match (metric, scorer) {
        (Metric::Loglik, _) => Loglik::evaluate(live, task, features),
        (_, Some(scorer)) => generation_fitness(live.generator(features).as_mut(), task, scorer),
        (_, None) => Err(EvolveError::Fitness(format!("no scorer for {}", metric.name()))),
    }
}

/// Score a generator on the task: generate in batches, score each answer, average.
pub fn generation_fitness(generator: &mut dyn Generator, task: &Task, scorer: &Scorer) -> Result<TrialOutcome> {
    let batch = task.spec.generation.batch_size.max(1);
    let mut scores = Vec::with_capacity(task.items.len());
    let (mut tokens, mut truncated) = (0u64, 0u64);
    for chunk in task.items.chunks(batch) {
        let prompts: Vec<Prompt> = chunk
            .iter()
            .map(|i| Prompt { text: i.prompt.clone(), image: i.image.clone() })
            .collect();
        let completions = generator.generate(&prompts, &task.settings).map_err(|e| EvolveError::Fitness(e.to_string()))?;
        if completions.len() != chunk.len() {
            return Err(EvolveError::Fitness(format!("{} answers for {} prompts", completions.len(), chunk.len())));
        }
        for (item, c) in chunk.iter().zip(&completions) {
            scores.push(scorer.score(item, &c.text));
            tokens += c.new_tokens as u64;
            truncated += u64::from(c.hit_max_new_tokens);
        }
    }
    finish(scores, tokens, truncated)
}

fn finish(scores: Vec<f64>, generated_tokens: u64, truncated: u64) -> Result<TrialOutcome> {
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(EvolveError::Fitness(format!("item {i} scored {} (non-finite logits?)", scores[i])));
    }
    let fitness = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
    Ok(TrialOutcome { fitness, item_scores: scores, generated_tokens, truncated, merge_seconds: 0.0, item_ids: None })
}

/// Teacher-forced log-likelihood: for each item, the mean log-probability of the reference's tokens
/// given the prompt; the fitness is the mean over items. Text items are run in right-padded batches
/// (causal attention never looks at the padding that follows a sequence).
pub struct Loglik;

impl Loglik {
    /// Score `task` on `live`; image features come from (and go into) `features`.
    pub fn evaluate(live: &Live, task: &Task, features: &mut FeatureCache) -> Result<TrialOutcome> {
        let mut scores = Vec::with_capacity(task.items.len());
        let batch = task.spec.generation.batch_size.max(1);
        let text_items: Vec<(usize, &TaskItem)> = task.items.iter().enumerate().filter(|(_, i)| i.image.is_none()).collect();
        let mut by_index = vec![f64::NAN; task.items.len()];
        for chunk in text_items.chunks(batch) {
            let got = Self::text_batch(live, chunk.iter().map(|(_, i)| *i).collect::<Vec<_>>().as_slice())?;
            for ((index, _), s) in chunk.iter().zip(got) {
                by_index[*index] = s;
            }
        }
        for (index, item) in task.items.iter().enumerate() {
            if item.image.is_some() {
                by_index[index] = Self::image_item(live, item, features)?;
            }
        }
        scores.extend(by_index);
        let tokens = 0;
        finish(scores, tokens, 0)
    }

    fn reference_ids(live: &Live, item: &TaskItem) -> Result<Vec<u32>> {
        let ids = live.tokenizer.encode_plain(&item.reference).map_err(|e| EvolveError::Fitness(e.to_string()))?;
        if ids.is_empty() {
            return Err(EvolveError::Fitness(format!("reference {:?} has no tokens", item.reference)));
        }
        Ok(ids)
    }

    fn text_batch(live: &Live, items: &[&TaskItem]) -> Result<Vec<f64>> {
        let llm = live.llm();
        let err = |e: candle_core::Error| EvolveError::Fitness(format!("log-likelihood forward pass: {e}"));
        let mut seqs = Vec::with_capacity(items.len());
        for item in items {
            let prompt = live.tokenizer.encode(&item.prompt).map_err(|e| EvolveError::Fitness(e.to_string()))?;
            let reference = Self::reference_ids(live, item)?;
            seqs.push((prompt, reference));
        }
        let len = seqs.iter().map(|(p, r)| p.len() + r.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(items.len() * len);
        for (p, r) in &seqs {
            ids.extend_from_slice(p);
            ids.extend_from_slice(r);
            ids.resize(ids.len() + len - p.len() - r.len(), 0);
        }
        let b = seqs.len();
        let device = llm.device();
        let input = Tensor::from_vec(ids, (b, len), device).map_err(err)?;
        let embeds = llm.embed_tokens(&input).map_err(|e| EvolveError::Fitness(e.to_string()))?;
        let positions = sequential_positions(b, len, 0, device).map_err(|e| EvolveError::Fitness(e.to_string()))?;
        let mut cache = llm.new_cache(b);
        let hidden = llm.hidden_states(&embeds, &positions, None, &mut cache).map_err(|e| EvolveError::Fitness(e.to_string()))?;
        let mut out = Vec::with_capacity(b);
        for (row, (p, r)) in seqs.iter().enumerate() {
            let h = hidden.narrow(0, row, 1).map_err(err)?.narrow(1, p.len() - 1, r.len()).map_err(err)?;
            out.push(Self::mean_logprob(live, &h, r)?);
        }
        Ok(out)
    }

    /// Mean log-probability of `targets` from hidden states `[1, n, hidden]` that predict them.
    fn mean_logprob(live: &Live, hidden: &Tensor, targets: &[u32]) -> Result<f64> {
        let err = |e: candle_core::Error| EvolveError::Fitness(format!("log-likelihood: {e}"));
        let logits = live.llm().logits(hidden).map_err(|e| EvolveError::Fitness(e.to_string()))?;
        let logits = logits.squeeze(0).map_err(err)?.to_dtype(DType::F32).map_err(err)?;
        let logp = log_softmax_last(&logits).map_err(err)?;
        let rows: Vec<Vec<f32>> = logp.to_vec2().map_err(err)?;
        let total: f64 = rows.iter().zip(targets).map(|(row, &t)| f64::from(row.get(t as usize).copied().unwrap_or(f32::NAN))).sum();
        Ok(total / targets.len() as f64)
    }

    fn image_item(live: &Live, item: &TaskItem, features: &mut FeatureCache) -> Result<f64> {
        let LiveModel::Vlm(vlm) = &live.model else {
            return Err(EvolveError::Fitness("an item with an image needs a vision-language model (a LLaVA among the sources)".into()));
        };
        let image = item.image.as_ref().ok_or_else(|| EvolveError::Fitness("item has no image".into()))?;
        let vision_err = |e: evomerge_vision::VisionError| EvolveError::Fitness(e.to_string());
        let features = features.features(vlm, image, "task image").map_err(|e| EvolveError::Fitness(e.to_string()))?;
        let features = &features;
        let prompt = ImagePrompt::from_text_tokenizer(&live.tokenizer, &item.prompt).map_err(vision_err)?;
        let (prompt_embeds, _) = vlm.prompt_embeds(&prompt, features).map_err(vision_err)?;
        let reference = Self::reference_ids(live, item)?;
        let llm = vlm.llm();
        let err = |e: candle_core::Error| EvolveError::Fitness(format!("log-likelihood forward pass: {e}"));
        let ref_ids = Tensor::new(reference.as_slice(), llm.device()).map_err(err)?.unsqueeze(0).map_err(err)?;
        let ref_embeds = llm.embed_tokens(&ref_ids).map_err(|e| EvolveError::Fitness(e.to_string()))?.squeeze(0).map_err(err)?;
        let embeds = Tensor::cat(&[&prompt_embeds, &ref_embeds], 0).map_err(err)?.unsqueeze(0).map_err(err)?;
        let len = embeds.dim(1).map_err(err)?;
        let prompt_len = len - reference.len();
        let positions = sequential_positions(1, len, 0, llm.device()).map_err(|e| EvolveError::Fitness(e.to_string()))?;
        let mut cache = llm.new_cache(1);
        let hidden = llm.hidden_states(&embeds, &positions, None, &mut cache).map_err(|e| EvolveError::Fitness(e.to_string()))?;
        let h = hidden.narrow(1, prompt_len - 1, reference.len()).map_err(err)?;
        Self::mean_logprob(live, &h, &reference)
    }
}

/// log-softmax over the last dimension (max-shifted, in f32).
fn log_softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}
