//! Japanese VQA runs (JA-VG-VQA-500, JA-VLM-Bench-In-the-Wild): the paper's LLaVA prompt and beam-search
//! settings, ROUGE-L against the reference answers, and `rougeL_ja`.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::{
    check_run_config, generate_batched, image_prompt, ja_probability_of, JapaneseProbability,
    Progress, RunOutput, RunnerError, SkippedRow,
};
use crate::generator::{GenerationSettings, Generator};
use crate::ja::Tokenize;
use crate::rouge::{aggregate, NumpyRandomState, RougeJa, Summary};

/// The paper's VQA prompt (`JA_SHISA_VQA`); `{input}` is `<image>\n` + the question, as the reference's
/// LLaVA wrapper builds it.
pub const JA_VQA_PROMPT: &str = "[INST] <<SYS>>\nあなたは役立つ、偏見がなく、検閲されていないアシスタントです。与えられた画像を下に、質問に答えてください。\n<</SYS>>\n\n{input} [/INST]";

/// Beam search with 5 beams, repetition penalty 1.5, 512 new tokens (the paper's EvoVLM config).
pub fn vqa_generation_settings() -> GenerationSettings {
    GenerationSettings {
        max_new_tokens: 512,
        num_beams: 5,
        repetition_penalty: 1.5,
        stop: Vec::new(),
    }
}

/// Renders the VQA prompt. A template that already holds `<image>` gets the bare question; otherwise
/// `{input}` becomes `<image>\n{question}`, as in the reference.
pub fn render_vqa_prompt(template: &str, question: &str) -> String {
    if template.contains("<image>") {
        template.replace("{input}", question)
    } else {
        template.replace("{input}", &format!("<image>\n{question}"))
    }
}

/// One VQA question for [`run_vqa`].
#[derive(Debug, Clone, PartialEq)]
pub struct VqaQuestion {
    pub index: usize,
    pub question: String,
    pub answer: String,
    /// Encoded image bytes (decoded by the generator).
    pub image: Vec<u8>,
}

/// Per-item scores from a [`VqaMetric`] (0–100 scale).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VqaItemScores {
    #[serde(rename = "rougeL")]
    pub rouge_l: f64,
    #[serde(rename = "rougeL_ja")]
    pub rouge_l_ja: Option<f64>,
}

/// What a [`VqaMetric`] returns: per-item scores and the named aggregates (e.g. `rougeL` as the
/// bootstrap mid, `rougeL_mean`, `rougeL_ja`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct VqaScores {
    pub items: Vec<VqaItemScores>,
    pub metrics: BTreeMap<String, f64>,
}

/// The ROUGE scorer, kept behind a trait so runners can be tested without the dictionary.
pub trait VqaMetric {
    /// Scores `predictions` against `references`; when `predictions_ja` is given (the predictions after
    /// the language rule: a non-Japanese prediction to a Japanese reference counts as empty), the
    /// `_ja` scores too, drawing bootstrap samples in the reference's order.
    fn compute(
        &self,
        references: &[String],
        predictions: &[String],
        predictions_ja: Option<&[String]>,
    ) -> Result<VqaScores, RunnerError>;
    /// The word segmenter, recorded in the summary (e.g. "mecab unidic-lite 1.0.8" or a fallback's name).
    fn tokenizer_name(&self) -> String;
}

/// Settings of a VQA run.
#[derive(Debug, Clone)]
pub struct VqaRunConfig {
    pub benchmark: String,
    pub template: String,
    pub settings: GenerationSettings,
    pub batch_size: usize,
    pub data_files: Vec<String>,
}

impl VqaRunConfig {
    /// The paper's settings for `benchmark`.
    pub fn paper(benchmark: impl Into<String>) -> Self {
        Self {
            benchmark: benchmark.into(),
            template: JA_VQA_PROMPT.to_string(),
            settings: vqa_generation_settings(),
            batch_size: 4,
            data_files: Vec::new(),
        }
    }
}

/// One line of a VQA `predictions.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct VqaRecord {
    pub index: usize,
    pub question: String,
    pub answer: String,
    pub prediction: String,
    #[serde(flatten)]
    pub scores: VqaItemScores,
    /// True when the `_ja` rule replaced this prediction by "" (null without a detector).
    pub counted_empty_for_ja: Option<bool>,
    pub new_tokens: usize,
    pub hit_max_new_tokens: bool,
}

/// `summary.json` of a VQA run.
#[derive(Debug, Clone, Serialize)]
pub struct VqaSummary {
    pub benchmark: String,
    pub metrics: BTreeMap<String, f64>,
    pub items: usize,
    pub skipped_rows: Vec<SkippedRow>,
    pub generation: GenerationSettings,
    pub hit_max_new_tokens: usize,
    pub language_detector: Option<String>,
    pub tokenizer: String,
    pub generator: String,
    pub prompt_template: String,
    pub data_files: Vec<String>,
    pub elapsed_seconds: f64,
}

/// The output of [`run_vqa`].
pub type VqaOutput = RunOutput<VqaRecord, VqaSummary>;

/// The reference's `_ja` threshold: `>= 0.5` here (MGSM's `acc_ja` uses `> 0.5`).
const JA_THRESHOLD: f64 = 0.5;

/// Runs a VQA benchmark: prompts with images, generation, predictions stripped of surrounding
/// whitespace (the reference's `.strip()`), ROUGE via `metric`, and with a detector the `_ja` scores.
/// Writes nothing; see [`RunOutput::write`].
pub fn run_vqa(
    generator: &mut dyn Generator,
    questions: &[VqaQuestion],
    skipped_rows: &[SkippedRow],
    metric: &dyn VqaMetric,
    detector: Option<&dyn JapaneseProbability>,
    config: &VqaRunConfig,
    progress: Progress<'_>,
) -> Result<VqaOutput, RunnerError> {
    check_run_config(&config.settings, config.batch_size, &config.template)?;
    let started = Instant::now();
    let prompts: Vec<_> = questions
        .iter()
        .map(|q| image_prompt(render_vqa_prompt(&config.template, &q.question), &q.image))
        .collect();
    let completions = generate_batched(
        generator,
        &prompts,
        &config.settings,
        config.batch_size,
        progress,
    )?;

    let references: Vec<String> = questions.iter().map(|q| q.answer.clone()).collect();
    let predictions: Vec<String> = completions
        .iter()
        .map(|c| c.text.trim().to_string())
        .collect();
    let emptied: Option<Vec<bool>> = detector.map(|d| {
        references
            .iter()
            .zip(&predictions)
            .map(|(r, p)| {
                ja_probability_of(d, r) >= JA_THRESHOLD && ja_probability_of(d, p) < JA_THRESHOLD
            })
            .collect()
    });
    let predictions_ja: Option<Vec<String>> = emptied.as_ref().map(|flags| {
        predictions
            .iter()
            .zip(flags)
            .map(|(p, &empty)| if empty { String::new() } else { p.clone() })
            .collect()
    });
    let scores = metric.compute(&references, &predictions, predictions_ja.as_deref())?;
    if scores.items.len() != questions.len() {
        return Err(RunnerError::Metric(format!(
            "the metric returned {} item scores for {} items",
            scores.items.len(),
            questions.len()
        )));
    }

    let records: Vec<VqaRecord> = questions
        .iter()
        .zip(completions)
        .zip(predictions)
        .zip(scores.items)
        .enumerate()
        .map(|(i, (((q, c), prediction), item_scores))| VqaRecord {
            index: q.index,
            question: q.question.clone(),
            answer: q.answer.clone(),
            prediction,
            scores: item_scores,
            counted_empty_for_ja: emptied.as_ref().map(|f| f[i]),
            new_tokens: c.new_tokens,
            hit_max_new_tokens: c.hit_max_new_tokens,
        })
        .collect();
    let summary = VqaSummary {
        benchmark: config.benchmark.clone(),
        metrics: scores.metrics,
        items: records.len(),
        skipped_rows: skipped_rows.to_vec(),
        generation: config.settings.clone(),
        hit_max_new_tokens: records.iter().filter(|r| r.hit_max_new_tokens).count(),
        language_detector: detector.map(|d| d.name()),
        tokenizer: metric.tokenizer_name(),
        generator: generator.describe(),
        prompt_template: config.template.clone(),
        data_files: config.data_files.clone(),
        elapsed_seconds: started.elapsed().as_secs_f64(),
    };
    Ok(RunOutput { records, summary })
}

/// The paper's scorer: `rouge_ja` (ROUGE-1/2/L over the given tokenizer's words) with the bootstrap
/// aggregate drawn from numpy's legacy RNG seeded once (42 in the paper), rouge1 → rouge2 → rougeL, then
/// the `_ja` pass from the same stream. Metrics: `rougeL` (bootstrap mid, the paper's figure),
/// `rougeL_mean`, `rougeL_low`/`rougeL_high` (95 %), the same for rouge1/rouge2, and `*_ja`.
pub struct PaperRouge<T: Tokenize> {
    pub rouge: RougeJa<T>,
    pub seed: u32,
}

impl<T: Tokenize> PaperRouge<T> {
    pub fn new(tokenizer: T) -> Self {
        Self {
            rouge: RougeJa::new(tokenizer),
            seed: 42,
        }
    }
}

fn insert_summary(metrics: &mut BTreeMap<String, f64>, summary: &Summary, suffix: &str) {
    for (name, t) in [
        ("rouge1", &summary.rouge1),
        ("rouge2", &summary.rouge2),
        ("rougeL", &summary.rouge_l),
    ] {
        metrics.insert(format!("{name}{suffix}"), t.mid);
        metrics.insert(format!("{name}{suffix}_mean"), t.mean);
        metrics.insert(format!("{name}{suffix}_low"), t.low);
        metrics.insert(format!("{name}{suffix}_high"), t.high);
    }
}

impl<T: Tokenize> VqaMetric for PaperRouge<T> {
    fn compute(
        &self,
        references: &[String],
        predictions: &[String],
        predictions_ja: Option<&[String]>,
    ) -> Result<VqaScores, RunnerError> {
        if references.is_empty() {
            return Err(RunnerError::Metric("nothing to score: no items".into()));
        }
        let pairs: Vec<(&String, &String)> = references.iter().zip(predictions).collect();
        let items = self.rouge.score_pairs(&pairs);
        let mut rng = NumpyRandomState::seed(self.seed);
        let mut metrics = BTreeMap::new();
        insert_summary(&mut metrics, &aggregate(&items, &mut rng), "");
        let items_ja = match predictions_ja {
            Some(pj) => {
                let pairs_ja: Vec<(&String, &String)> = references.iter().zip(pj).collect();
                let items_ja = self.rouge.score_pairs(&pairs_ja);
                insert_summary(&mut metrics, &aggregate(&items_ja, &mut rng), "_ja");
                Some(items_ja)
            }
            None => None,
        };
        let per_item = items
            .iter()
            .enumerate()
            .map(|(i, s)| VqaItemScores {
                rouge_l: s.rouge_l.fmeasure * 100.0,
                rouge_l_ja: items_ja.as_ref().map(|j| j[i].rouge_l.fmeasure * 100.0),
            })
            .collect();
        Ok(VqaScores {
            items: per_item,
            metrics,
        })
    }

    fn tokenizer_name(&self) -> String {
        self.rouge.tokenizer().name().to_string()
    }
}
