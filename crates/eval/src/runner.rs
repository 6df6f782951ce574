//! Evaluation runners: prompts → [`Generator`] → scores, returned in memory as a [`RunOutput`]: one
//! record per evaluated item and a summary. Runners never touch the file system; a caller that wants
//! files (the CLI) passes the output to [`write_outputs`], which writes atomically (temporary file +
//! rename) into a directory:
//! * `predictions.jsonl`: one line per evaluated item (dataset index, question, reference, completion,
//!   extracted/derived scores, new tokens, whether the item hit `max_new_tokens`);
//! * `summary.json`: the scores, item counts, skipped dataset rows, the generation budget and how many
//!   answers hit it, the language detector and tokenizer used, the generator, the prompt template.
//!
//! A search scores many candidates this way with no files at all.
//!
//! Runners take plain question structs (not the datasets crate's types) and report progress through a
//! callback, so the caller decides how to display it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::generator::{
    Completion, GenerationSettings, Generator, GeneratorError, ImageInput, Prompt,
};
use crate::mgsm::{self, ExtractionMode};

mod vqa;

pub use vqa::{
    render_vqa_prompt, run_vqa, vqa_generation_settings, PaperRouge, VqaItemScores, VqaMetric,
    VqaOutput, VqaQuestion, VqaRecord, VqaRunConfig, VqaScores, VqaSummary, JA_VQA_PROMPT,
};

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Generator(#[from] GeneratorError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("scoring failed: {0}")]
    Metric(String),
    #[error("{0}")]
    Config(String),
}

/// Japanese-language probability, as the paper's fastText check uses it. Implemented by the eval
/// crate's language identifier (fastText `lid.176.ftz`, or the script-based fallback).
pub trait JapaneseProbability {
    /// Probability in [0, 1] that `text` is Japanese. Callers delete newlines first, as the reference does.
    fn ja_probability(&self, text: &str) -> f64;
    /// Which detector this is, recorded in every summary (e.g. "fasttext lid.176.ftz" or
    /// "script-fallback (not the paper's detector)").
    fn name(&self) -> String;
}

impl JapaneseProbability for crate::langid::JapaneseDetector {
    fn ja_probability(&self, text: &str) -> f64 {
        f64::from(self.p_ja(text))
    }
    fn name(&self) -> String {
        match self {
            crate::langid::JapaneseDetector::FastText(_) => "fasttext lid.176.ftz".to_string(),
            crate::langid::JapaneseDetector::ScriptFallback => {
                "script-fallback (kana/kanji share; not the paper's fastText detector)".to_string()
            }
        }
    }
}

/// The reference's `LanguageDetector.__call__`: newlines are deleted, not replaced by spaces.
pub fn ja_probability_of(detector: &dyn JapaneseProbability, text: &str) -> f64 {
    detector.ja_probability(&text.replace('\n', ""))
}

/// Progress callback: (items done, items total).
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// A dataset row left out of the evaluation (reported in the summary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedRow {
    pub index: usize,
    pub reason: String,
}

/// One math question for [`run_mgsm`].
#[derive(Debug, Clone, PartialEq)]
pub struct MathQuestion {
    /// Row index in the dataset.
    pub index: usize,
    pub question: String,
    pub answer_number: f64,
}

/// Settings of an MGSM-style run.
#[derive(Debug, Clone)]
pub struct MgsmRunConfig {
    /// Benchmark name recorded in the summary ("mgsm-ja", "gsm8k-ja-search").
    pub benchmark: String,
    /// Template with `{input}`; [`mgsm::MGSM_JA_PROMPT`] for the paper.
    pub template: String,
    pub settings: GenerationSettings,
    pub mode: ExtractionMode,
    /// Prompts per `Generator::generate` call.
    pub batch_size: usize,
    /// Data files the items came from (recorded).
    pub data_files: Vec<String>,
}

impl MgsmRunConfig {
    /// The paper's settings for `benchmark`.
    pub fn paper(benchmark: impl Into<String>) -> Self {
        Self {
            benchmark: benchmark.into(),
            template: mgsm::MGSM_JA_PROMPT.to_string(),
            settings: mgsm::generation_settings(),
            mode: ExtractionMode::Paper,
            batch_size: 8,
            data_files: Vec::new(),
        }
    }
}

/// What a run returns: one record per evaluated item, in question order, and the summary.
#[derive(Debug, Clone)]
pub struct RunOutput<R, S> {
    pub records: Vec<R>,
    pub summary: S,
}

impl<R: Serialize, S: Serialize> RunOutput<R, S> {
    /// Writes `predictions.jsonl` and `summary.json` into `dir`; see [`write_outputs`].
    pub fn write(&self, dir: &Path) -> Result<(), RunnerError> {
        write_outputs(dir, &self.records, &self.summary)
    }
}

/// The output of [`run_mgsm`].
pub type MgsmOutput = RunOutput<MgsmRecord, MgsmSummary>;

/// One line of an MGSM `predictions.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct MgsmRecord {
    pub index: usize,
    pub question: String,
    pub answer_number: f64,
    pub completion: String,
    pub pred: Option<f64>,
    pub correct: bool,
    /// fastText-style `__label__ja` probability of the completion (newlines deleted); null without a detector.
    pub ja_probability: Option<f64>,
    /// `correct` and `ja_probability > 0.5`; null without a detector.
    pub correct_ja: Option<bool>,
    pub new_tokens: usize,
    pub hit_max_new_tokens: bool,
}

/// `summary.json` of an MGSM-style run.
#[derive(Debug, Clone, Serialize)]
pub struct MgsmSummary {
    pub benchmark: String,
    pub metrics: BTreeMap<String, f64>,
    pub extraction_mode: ExtractionMode,
    pub items: usize,
    pub correct: usize,
    pub correct_ja: Option<usize>,
    /// Completions with no number at all.
    pub no_number: usize,
    pub skipped_rows: Vec<SkippedRow>,
    pub generation: GenerationSettings,
    pub hit_max_new_tokens: usize,
    pub language_detector: Option<String>,
    pub generator: String,
    pub prompt_template: String,
    pub data_files: Vec<String>,
    pub elapsed_seconds: f64,
}

/// Runs MGSM-JA (or the GSM8K-JA search set): renders prompts, generates in batches, extracts answers,
/// computes `acc` and, with a detector, `acc_ja`. Writes nothing; see [`RunOutput::write`].
pub fn run_mgsm(
    generator: &mut dyn Generator,
    questions: &[MathQuestion],
    skipped_rows: &[SkippedRow],
    detector: Option<&dyn JapaneseProbability>,
    config: &MgsmRunConfig,
    progress: Progress<'_>,
) -> Result<MgsmOutput, RunnerError> {
    check_run_config(&config.settings, config.batch_size, &config.template)?;
    let started = Instant::now();
    let prompts: Vec<Prompt> = questions
        .iter()
        .map(|q| Prompt::text(mgsm::render_prompt(&config.template, &q.question)))
        .collect();
    let completions = generate_batched(
        generator,
        &prompts,
        &config.settings,
        config.batch_size,
        progress,
    )?;

    let mut records = Vec::with_capacity(questions.len());
    for (q, c) in questions.iter().zip(completions) {
        let scored = mgsm::score(&c.text, q.answer_number, config.mode);
        let ja_probability = detector.map(|d| ja_probability_of(d, &c.text));
        let correct_ja = ja_probability.map(|p| scored.correct && p > mgsm::ACC_JA_THRESHOLD);
        records.push(MgsmRecord {
            index: q.index,
            question: q.question.clone(),
            answer_number: q.answer_number,
            completion: c.text,
            pred: scored.pred,
            correct: scored.correct,
            ja_probability,
            correct_ja,
            new_tokens: c.new_tokens,
            hit_max_new_tokens: c.hit_max_new_tokens,
        });
    }

    let n = records.len();
    let correct = records.iter().filter(|r| r.correct).count();
    let correct_ja = detector.map(|_| {
        records
            .iter()
            .filter(|r| r.correct_ja == Some(true))
            .count()
    });
    let mut metrics = BTreeMap::new();
    metrics.insert("acc".to_string(), ratio(correct, n));
    if let Some(cj) = correct_ja {
        metrics.insert("acc_ja".to_string(), ratio(cj, n));
    }
    let summary = MgsmSummary {
        benchmark: config.benchmark.clone(),
        metrics,
        extraction_mode: config.mode,
        items: n,
        correct,
        correct_ja,
        no_number: records.iter().filter(|r| r.pred.is_none()).count(),
        skipped_rows: skipped_rows.to_vec(),
        generation: config.settings.clone(),
        hit_max_new_tokens: records.iter().filter(|r| r.hit_max_new_tokens).count(),
        language_detector: detector.map(|d| d.name()),
        generator: generator.describe(),
        prompt_template: config.template.clone(),
        data_files: config.data_files.clone(),
        elapsed_seconds: started.elapsed().as_secs_f64(),
    };
    Ok(RunOutput { records, summary })
}

/// Checks what every runner needs before generating: valid settings, a batch of at least one, and a
/// template with an `{input}` placeholder. Public so that a caller can reject a bad configuration
/// before it loads a model.
pub fn check_run_config(
    settings: &GenerationSettings,
    batch_size: usize,
    template: &str,
) -> Result<(), RunnerError> {
    settings.validate()?;
    if batch_size == 0 {
        return Err(RunnerError::Config("batch size must be at least 1".into()));
    }
    if !template.contains("{input}") {
        return Err(RunnerError::Config(
            "the prompt template has no {input} placeholder".into(),
        ));
    }
    Ok(())
}

fn ratio(k: usize, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        k as f64 / n as f64
    }
}

/// Calls the generator batch by batch and checks it answered every prompt.
pub(crate) fn generate_batched(
    generator: &mut dyn Generator,
    prompts: &[Prompt],
    settings: &GenerationSettings,
    batch_size: usize,
    progress: Progress<'_>,
) -> Result<Vec<Completion>, RunnerError> {
    let mut out = Vec::with_capacity(prompts.len());
    progress(0, prompts.len());
    for chunk in prompts.chunks(batch_size) {
        let got = generator.generate(chunk, settings)?;
        if got.len() != chunk.len() {
            return Err(GeneratorError::CountMismatch {
                expected: chunk.len(),
                got: got.len(),
            }
            .into());
        }
        out.extend(got);
        progress(out.len(), prompts.len());
    }
    Ok(out)
}

/// Writes `predictions.jsonl` (one JSON line per record) and `summary.json` (pretty JSON) into `dir`
/// (created if needed), each atomically.
pub fn write_outputs<R: Serialize, S: Serialize>(
    dir: &Path,
    records: &[R],
    summary: &S,
) -> Result<(), RunnerError> {
    std::fs::create_dir_all(dir).map_err(|source| RunnerError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut lines = Vec::new();
    for r in records {
        serde_json::to_writer(&mut lines, r).map_err(|e| RunnerError::Write {
            path: dir.join("predictions.jsonl"),
            source: e.into(),
        })?;
        lines.push(b'\n');
    }
    write_atomic(&dir.join("predictions.jsonl"), &lines)?;
    let mut json = serde_json::to_vec_pretty(summary).map_err(|e| RunnerError::Write {
        path: dir.join("summary.json"),
        source: e.into(),
    })?;
    json.push(b'\n');
    write_atomic(&dir.join("summary.json"), &json)
}

/// Writes `bytes` to a temporary file next to `path`, then renames it over `path`: readers never see a
/// half-written file, and a failed run leaves the previous file intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunnerError> {
    let err = |source| RunnerError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// A prompt with an encoded image.
pub(crate) fn image_prompt(text: String, image: &[u8]) -> Prompt {
    Prompt::with_image(text, ImageInput::Encoded(image.to_vec()))
}
