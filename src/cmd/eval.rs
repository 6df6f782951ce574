//! `evomerge eval`: run a benchmark on a model with the paper's prompts, decoding settings and scorers.
//!
//! * `mgsm-ja` / `gsm8k-ja`: Japanese math (answer extraction `paper` or `strict`, `acc`, `acc_ja`).
//! * `ja-vg-vqa-500` / `ja-vlm-wild`: Japanese VQA with a LLaVA model (ROUGE-L, `rougeL_ja`).
//!
//! Each run writes `predictions.jsonl` and `summary.json` into `--out` and shows a progress bar on a
//! terminal. The model adapters (text Mistral, LLaVA) implementing the evaluators' `Generator` trait live
//! in `evomerge_evolve::generators`, where the search uses them too.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use evomerge_datasets::{load_math, load_vqa, Benchmark, DataSource, Loaded, OnBadRow};
use evomerge_eval::generator::Generator;
use evomerge_eval::ja::{CharFallbackTokenizer, JaTokenizer, Tokenize};
use evomerge_eval::langid::{JapaneseDetector, LanguageId};
use evomerge_eval::mgsm::{ExtractionMode, MGSM_JA_PROMPT};
use evomerge_eval::runner::{
    run_mgsm, run_vqa, JapaneseProbability, MathQuestion, MgsmRunConfig, PaperRouge, SkippedRow,
    VqaQuestion, VqaRunConfig, JA_VQA_PROMPT,
};
use evomerge_evolve::generators::{TextModel, VlmModel};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub benchmark: EvalCommand,
}

#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// MGSM Japanese test set (juletxara/mgsm, ja, 250 items): acc and acc_ja.
    MgsmJa(MathArgs),
    /// The GSM8K-JA search set of the paper (SakanaAI/gsm8k-ja-test_250-1319, 1069 items).
    Gsm8kJa(MathArgs),
    /// JA-VG-VQA-500 (first QA pair of each row): ROUGE-L and rougeL_ja.
    #[command(name = "ja-vg-vqa-500")]
    JaVgVqa500(VqaArgs),
    /// JA-VLM-Bench-In-the-Wild (50 questions): ROUGE-L and rougeL_ja.
    JaVlmWild(VqaArgs),
}

#[derive(clap::Args)]
pub struct CommonArgs {
    /// Model directory (or hub id) to evaluate.
    #[arg(long)]
    pub model: String,
    /// Local data file or directory instead of the hub dataset (e.g. datasets/mgsm_ja_sample.tsv).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Hub dataset revision (with no --data).
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Evaluate only the first N items.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Prompts per generation batch.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Output directory for predictions.jsonl and summary.json (default: eval-results/<benchmark>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// What to do with a dataset row that has a missing field or an undecodable image: `skip` it (it
    /// is listed in the summary) or `fail` the run.
    #[arg(long, default_value = "fail", value_parser = ["skip", "fail"])]
    pub on_bad_row: String,
    /// Prompt template file with `{input}` (default: the paper's prompt, built in).
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// Override the paper's generation budget (recorded in the summary; results are then not the paper's
    /// protocol).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Device: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: f32, f16 or bf16 (default: the checkpoint's; bf16 becomes f32 on CPU).
    #[arg(long)]
    pub dtype: Option<String>,
    /// fastText lid.176.ftz for the Japanese check (default: $EVOMERGE_LID176, then ~/.cache/evomerge/lid.176.ftz).
    #[arg(long)]
    pub lid: Option<PathBuf>,
    /// Fail when lid.176.ftz cannot be loaded, instead of falling back to the script-based Japanese
    /// detector (the fallback is named in the summary and is not the paper's detector).
    #[arg(long)]
    pub require_lid: bool,
    /// Skip the language check (no acc_ja / rougeL_ja).
    #[arg(long)]
    pub no_lid: bool,
}

#[derive(clap::Args)]
pub struct MathArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Answer extraction: `paper` (the reference's regex, quirks included) or `strict` (corrected).
    #[arg(long, default_value = "paper", value_parser = ["paper", "strict"])]
    pub mode: String,
}

#[derive(clap::Args)]
pub struct VqaArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// UniDic-lite dictionary directory (default: $EVOMERGE_UNIDIC_DIR, then ~/.cache/evomerge/unidic-lite-1.0.8).
    #[arg(long)]
    pub unidic: Option<PathBuf>,
    /// Without the dictionary, score ROUGE over characters (named char-fallback in the summary; not
    /// comparable with the paper).
    #[arg(long)]
    pub char_fallback: bool,
    /// Image handling: `single` (one 336 tile, as the paper evaluated) or `native` (the checkpoint's
    /// own mode, e.g. anyres for LLaVA-NeXT).
    #[arg(long, default_value = "single", value_parser = ["single", "native"])]
    pub image_mode: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.benchmark {
        EvalCommand::MgsmJa(a) => run_math(Benchmark::MgsmJa, a),
        EvalCommand::Gsm8kJa(a) => run_math(Benchmark::Gsm8kJaSearch, a),
        EvalCommand::JaVgVqa500(a) => run_vqa_benchmark(Benchmark::JaVgVqa500, a),
        EvalCommand::JaVlmWild(a) => run_vqa_benchmark(Benchmark::JaVlmWild, a),
    }
}

fn data_source(common: &CommonArgs) -> DataSource {
    match &common.data {
        Some(path) => DataSource::Local(path.clone()),
        None => DataSource::Hub {
            revision: common.revision.clone(),
        },
    }
}

fn out_dir(common: &CommonArgs, benchmark: Benchmark) -> PathBuf {
    common
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("eval-results").join(benchmark.name()))
}

fn read_template(path: Option<&Path>, default: &str) -> anyhow::Result<String> {
    match path {
        None => Ok(default.to_string()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the prompt template {}", p.display()))?;
            if !text.contains("{input}") {
                bail!(
                    "the prompt template {} has no {{input}} placeholder",
                    p.display()
                );
            }
            Ok(text)
        }
    }
}

fn skipped_rows<T>(loaded: &Loaded<T>) -> Vec<SkippedRow> {
    loaded
        .skipped
        .iter()
        .map(|b| SkippedRow {
            index: b.index,
            reason: b.reason.clone(),
        })
        .collect()
}

fn file_list<T>(loaded: &Loaded<T>) -> Vec<String> {
    loaded
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect()
}

/// The Japanese detector: fastText when available, else the script fallback (with a warning) unless
/// `--require-lid` or an explicit `--lid` path was given.
fn detector(common: &CommonArgs) -> anyhow::Result<Option<JapaneseDetector>> {
    if common.no_lid {
        return Ok(None);
    }
    let loaded = match &common.lid {
        Some(path) => LanguageId::load(path),
        None => LanguageId::from_env(),
    };
    match loaded {
        Ok(model) => Ok(Some(JapaneseDetector::FastText(model))),
        Err(err) if !common.require_lid && common.lid.is_none() => {
            eprintln!(
                "warning: {err}\nwarning: the Japanese check uses the script-based fallback detector, not the paper's fastText"
            );
            Ok(Some(JapaneseDetector::ScriptFallback))
        }
        Err(err) => Err(anyhow::Error::new(err)
            .context("loading lid.176.ftz for the Japanese check (or pass --no-lid)")),
    }
}

/// A progress bar on a terminal, nothing otherwise.
fn progress_bar(label: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(0);
    let style =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {elapsed_precise} eta {eta}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(label.to_string());
    Some(bar)
}

fn run_math(benchmark: Benchmark, args: MathArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let mode: ExtractionMode = args.mode.parse()?;
    let on_bad_row: OnBadRow = common.on_bad_row.parse()?;
    let loaded = load_math(benchmark, &data_source(common), on_bad_row)
        .with_context(|| format!("loading {}", benchmark.name()))?;
    let mut questions: Vec<MathQuestion> = loaded
        .items
        .iter()
        .map(|i| MathQuestion {
            index: i.index,
            question: i.question.clone(),
            answer_number: i.answer_number,
        })
        .collect();
    if let Some(n) = common.limit {
        questions.truncate(n);
    }
    if questions.is_empty() {
        bail!("{} has no items to evaluate", benchmark.name());
    }
    let detector = detector(common)?;
    let out = out_dir(common, benchmark);
    let mut config = MgsmRunConfig::paper(benchmark.name());
    config.template = read_template(common.template.as_deref(), MGSM_JA_PROMPT)?;
    config.mode = mode;
    config.data_files = file_list(&loaded);
    if let Some(b) = common.batch {
        config.batch_size = b;
    }
    if let Some(n) = common.max_new_tokens {
        config.settings.max_new_tokens = n;
    }
    let model = TextModel::load(
        &common.model,
        &super::device_arg(&common.device)?,
        super::dtype_arg(common.dtype.as_deref())?,
    )?;
    let mut generator = model.generator();
    let bar = progress_bar(benchmark.name());
    let output = run_mgsm(
        &mut generator,
        &questions,
        &skipped_rows(&loaded),
        detector.as_ref().map(|d| d as &dyn JapaneseProbability),
        &config,
        &mut |done, total| update_bar(&bar, done, total),
    )?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    output.write(&out)?;
    let summary = &output.summary;
    println!(
        "{}: {} items, mode {}",
        summary.benchmark, summary.items, summary.extraction_mode
    );
    for (name, value) in &summary.metrics {
        println!("  {name:<8} {:.2}", value * 100.0);
    }
    println!(
        "  generation budget {} new tokens; {} answers hit it; {} without a number",
        summary.generation.max_new_tokens, summary.hit_max_new_tokens, summary.no_number
    );
    if let Some(d) = &summary.language_detector {
        println!("  language detector: {d}");
    }
    if !summary.skipped_rows.is_empty() {
        println!(
            "  {} dataset rows skipped (listed in summary.json)",
            summary.skipped_rows.len()
        );
    }
    println!("  wrote {}", out.display());
    Ok(())
}

fn update_bar(bar: &Option<ProgressBar>, done: usize, total: usize) {
    if let Some(b) = bar {
        b.set_length(total as u64);
        b.set_position(done as u64);
    }
}

fn rouge_tokenizer(args: &VqaArgs) -> anyhow::Result<Box<dyn Tokenize>> {
    let loaded = match &args.unidic {
        Some(dir) => JaTokenizer::load(dir),
        None => JaTokenizer::from_env(),
    };
    match loaded {
        Ok(t) => Ok(Box::new(t)),
        Err(err) if args.char_fallback => {
            eprintln!(
                "warning: {err}\nwarning: ROUGE is computed over CHARACTERS (char-fallback); not comparable with the paper"
            );
            Ok(Box::new(CharFallbackTokenizer))
        }
        Err(err) => Err(anyhow::Error::new(err)
            .context("loading the MeCab dictionary for ROUGE (or pass --char-fallback)")),
    }
}

fn run_vqa_benchmark(benchmark: Benchmark, args: VqaArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let on_bad_row: OnBadRow = common.on_bad_row.parse()?;
    // Load the scorer before hours of generation: a missing dictionary fails now.
    let metric = PaperRouge::new(rouge_tokenizer(&args)?);
    let detector = detector(common)?;
    let loaded = load_vqa(benchmark, &data_source(common), on_bad_row)
        .with_context(|| format!("loading {}", benchmark.name()))?;
    let mut questions: Vec<VqaQuestion> = loaded
        .items
        .iter()
        .map(|i| VqaQuestion {
            index: i.index,
            question: i.question.clone(),
            answer: i.answer.clone(),
            image: i.image.clone(),
        })
        .collect();
    if let Some(n) = common.limit {
        questions.truncate(n);
    }
    if questions.is_empty() {
        bail!("{} has no items to evaluate", benchmark.name());
    }
    let out = out_dir(common, benchmark);
    let mut config = VqaRunConfig::paper(benchmark.name());
    config.template = read_template(common.template.as_deref(), JA_VQA_PROMPT)?;
    config.data_files = file_list(&loaded);
    if let Some(b) = common.batch {
        config.batch_size = b;
    }
    if let Some(n) = common.max_new_tokens {
        config.settings.max_new_tokens = n;
    }
    let mut model = VlmModel::load(
        &common.model,
        &super::device_arg(&common.device)?,
        super::dtype_arg(common.dtype.as_deref())?,
        evomerge_vision::cli::parse_mode(&args.image_mode)?,
    )?;
    let mut generator = model.generator();
    let bar = progress_bar(benchmark.name());
    let output = run_vqa(
        &mut generator as &mut dyn Generator,
        &questions,
        &skipped_rows(&loaded),
        &metric,
        detector.as_ref().map(|d| d as &dyn JapaneseProbability),
        &config,
        &mut |done, total| update_bar(&bar, done, total),
    )?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    output.write(&out)?;
    let summary = &output.summary;
    println!(
        "{}: {} items, tokenizer {}",
        summary.benchmark, summary.items, summary.tokenizer
    );
    for name in ["rougeL", "rougeL_mean", "rougeL_ja", "rougeL_ja_mean"] {
        if let Some(v) = summary.metrics.get(name) {
            println!("  {name:<15} {v:.2}");
        }
    }
    println!(
        "  generation budget {} new tokens ({} beams, repetition penalty {}); {} answers hit it",
        summary.generation.max_new_tokens,
        summary.generation.num_beams,
        summary.generation.repetition_penalty,
        summary.hit_max_new_tokens
    );
    if let Some(d) = &summary.language_detector {
        println!("  language detector: {d}");
    }
    if !summary.skipped_rows.is_empty() {
        println!(
            "  {} dataset rows skipped (listed in summary.json)",
            summary.skipped_rows.len()
        );
    }
    println!("  wrote {}", out.display());
    Ok(())
}
