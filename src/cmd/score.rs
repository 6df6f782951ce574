//! `evomerge score`: score predictions made elsewhere (vLLM, an API, another tool).
//!
//! * `rouge-ja` (helper `ja`): the paper's Japanese VQA ROUGE over `{"reference", "prediction"}` lines.
//! * `mgsm` (helper `evals`): MGSM answer extraction over `{"completion", "answer_number"}` lines.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use evomerge_eval::ja::{CharFallbackTokenizer, JaTokenizer, Tokenize};
use evomerge_eval::langid::{JapaneseDetector, LanguageId};
use evomerge_eval::rouge::{compute_score, NumpyRandomState, RougeJa, Summary, TypeSummary};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ScoreCommand,
}

#[derive(clap::Subcommand)]
pub enum ScoreCommand {
    /// Japanese ROUGE-1/2/L as the paper computes it (MeCab/UniDic-lite words, bootstrap median).
    RougeJa(RougeJaArgs),
    /// MGSM answer extraction and accuracy over completions.
    Mgsm(MgsmArgs),
}

#[derive(clap::Args)]
pub struct RougeJaArgs {
    /// JSON lines with "reference" and "prediction" strings.
    pub pairs: PathBuf,
    /// Where to write one JSON line of scores per input line (0–100 scale), in input order.
    #[arg(long)]
    pub out: PathBuf,
    /// UniDic-lite dictionary directory (default: $EVOMERGE_UNIDIC_DIR, then ~/.cache/evomerge/unidic-lite-1.0.8).
    #[arg(long)]
    pub unidic: Option<PathBuf>,
    /// Score characters instead of MeCab words when no dictionary is at hand. Not comparable with
    /// the paper; every output line and the summary say "char-fallback".
    #[arg(long)]
    pub char_fallback: bool,
    /// fastText lid.176.ftz for rougeL_ja (default: $EVOMERGE_LID176, then ~/.cache/evomerge/lid.176.ftz).
    #[arg(long)]
    pub lid: Option<PathBuf>,
    /// Use the script-based Japanese detector for rougeL_ja when the fastText model is missing.
    #[arg(long)]
    pub lid_fallback: bool,
    /// Skip the rougeL_ja pass.
    #[arg(long)]
    pub no_lid: bool,
    /// Seed of numpy's legacy RNG for the bootstrap (the paper: 42).
    #[arg(long, default_value_t = 42)]
    pub seed: u32,
}

#[derive(clap::Args)]
pub struct MgsmArgs {
    /// JSON lines with "completion" and "answer_number".
    pub completions: PathBuf,
    /// Where to write one JSON line per input with "pred" and "correct".
    #[arg(long)]
    pub out: PathBuf,
    /// Answer extraction: `paper` (the reference's regex, quirks included) or `strict`.
    #[arg(long, default_value = "paper")]
    pub mode: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        ScoreCommand::RougeJa(a) => run_rouge_ja(a),
        ScoreCommand::Mgsm(a) => run_mgsm(a),
    }
}

// ---- mgsm: implemented by helper `evals` ---------------------------------------------------------
fn run_mgsm(args: MgsmArgs) -> anyhow::Result<()> {
    let mode: evomerge_eval::mgsm::ExtractionMode = args.mode.parse()?;
    let file = std::fs::File::open(&args.completions)
        .with_context(|| format!("cannot open {}", args.completions.display()))?;
    let mut scored = Vec::new();
    let totals = evomerge_eval::mgsm::score_jsonl(BufReader::new(file), &mut scored, mode)
        .with_context(|| format!("scoring {}", args.completions.display()))?;
    write_atomically(&args.out, &scored)?;
    println!(
        "mgsm ({} extraction): acc {:.2}% ({}/{}), {} completions without a number",
        totals.mode,
        totals.acc * 100.0,
        totals.correct,
        totals.items,
        totals.no_number
    );
    println!("wrote {} lines to {}", totals.items, args.out.display());
    Ok(())
}

// ---- rouge-ja ---------------------------------------------------------------------------------------
#[derive(serde::Deserialize)]
struct PairLine {
    reference: String,
    prediction: String,
}

fn read_pairs(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut pairs = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line =
            line.with_context(|| format!("{}: cannot read line {}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let pair: PairLine = serde_json::from_str(&line).with_context(|| {
            format!(
                "{} line {}: expected a JSON object with string fields \"reference\" and \"prediction\"",
                path.display(),
                i + 1
            )
        })?;
        pairs.push((pair.reference, pair.prediction));
    }
    Ok(pairs)
}

fn tokenizer(args: &RougeJaArgs) -> anyhow::Result<Box<dyn Tokenize>> {
    let loaded = match &args.unidic {
        Some(dir) => JaTokenizer::load(dir),
        None => JaTokenizer::from_env(),
    };
    match loaded {
        Ok(t) => Ok(Box::new(t)),
        Err(err) if args.char_fallback => {
            eprintln!("warning: {err}\nwarning: scoring with the CHARACTER-LEVEL fallback tokenizer (char-fallback); not comparable with the paper");
            Ok(Box::new(CharFallbackTokenizer))
        }
        Err(err) => Err(anyhow::Error::new(err)
            .context("loading the MeCab dictionary (or pass --char-fallback)")),
    }
}

fn detector(args: &RougeJaArgs) -> anyhow::Result<Option<JapaneseDetector>> {
    if args.no_lid {
        return Ok(None);
    }
    let loaded = match &args.lid {
        Some(path) => LanguageId::load(path),
        None => LanguageId::from_env(),
    };
    match loaded {
        Ok(model) => Ok(Some(JapaneseDetector::FastText(model))),
        Err(err) if args.lid_fallback => {
            eprintln!("warning: {err}\nwarning: rougeL_ja uses the script-based Japanese detector (script-fallback)");
            Ok(Some(JapaneseDetector::ScriptFallback))
        }
        Err(err) if args.lid.is_some() => Err(err.into()),
        Err(err) => {
            eprintln!("note: {err}\nnote: rougeL_ja is skipped (pass --lid-fallback to use the script-based detector)");
            Ok(None)
        }
    }
}

fn run_rouge_ja(args: RougeJaArgs) -> anyhow::Result<()> {
    let pairs = read_pairs(&args.pairs)?;
    if pairs.is_empty() {
        bail!("{} has no pairs to score", args.pairs.display());
    }
    let rouge = RougeJa::new(tokenizer(&args)?);
    let detector = detector(&args)?;
    let p_ja = detector.as_ref().map(|d| move |t: &str| d.p_ja(t));
    let p_ja_ref: Option<&dyn Fn(&str) -> f32> = p_ja.as_ref().map(|f| f as &dyn Fn(&str) -> f32);
    let mut rng = NumpyRandomState::seed(args.seed);
    let report = compute_score(&rouge, &pairs, p_ja_ref, &mut rng);
    let tokenizer_name = rouge.tokenizer().name();

    let mut text = String::new();
    for (i, item) in report.items.iter().enumerate() {
        let mut line = serde_json::json!({
            "rouge1": item.rouge1.fmeasure * 100.0,
            "rouge2": item.rouge2.fmeasure * 100.0,
            "rougeL": item.rouge_l.fmeasure * 100.0,
            "tokenizer": tokenizer_name,
        });
        if let (Some(ja), Some(d)) = (&report.items_ja, &detector) {
            line["rougeL_ja"] = serde_json::json!(ja[i].rouge_l.fmeasure * 100.0);
            line["language_detector"] = serde_json::json!(d.name());
        }
        text.push_str(&line.to_string());
        text.push('\n');
    }
    write_atomically(&args.out, text.as_bytes())?;

    let describe = |name: &str, t: &TypeSummary| {
        println!(
            "{name:<10} mean {:>7.3}  bootstrap mid {:>7.3}  95% [{:.3}, {:.3}]",
            t.mean, t.mid, t.low, t.high
        )
    };
    let print_summary = |label: &str, s: &Summary| {
        println!(
            "{label} (n={}, tokenizer={tokenizer_name}, seed={}):",
            s.n, args.seed
        );
        describe("rouge1", &s.rouge1);
        describe("rouge2", &s.rouge2);
        describe("rougeL", &s.rouge_l);
    };
    print_summary("rouge-ja", &report.summary);
    if let (Some(s), Some(d)) = (&report.summary_ja, &detector) {
        print_summary(
            &format!(
                "rouge-ja _ja pass (non-Japanese predictions scored as empty; detector={})",
                d.name()
            ),
            s,
        );
    }
    println!(
        "wrote {} lines to {}",
        report.items.len(),
        args.out.display()
    );
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> anyhow::Result<()> {
        let mut file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        file.write_all(bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        file.sync_all().ok();
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    result
}
