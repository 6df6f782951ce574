//! `evomerge generate`: complete one prompt (`--prompt`) or a JSON-lines file of prompts (`--prompts`) with a
//! Mistral-family model, greedy or with beam search, optionally through a prompt template.
//!
//! Single prompt: the completion is printed as is. Batch mode: one JSON object per input line, in input order:
//! `{"id", "prompt", "completion", "finish_reason", "new_tokens"}`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use evomerge_mistral::generation::{self, Completion, FinishReason, GenerationConfig, PromptInput};
use evomerge_mistral::prompt::{PromptTemplate, TextTokenizer};
use evomerge_mistral::{LoadOptions, Mistral};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct Args {
    /// Model directory or hub id `org/name[@revision]` (needs tokenizer.json next to the weights).
    #[arg(long)]
    pub model: String,
    /// The prompt text (with --template: what replaces `{input}`).
    #[arg(long, conflicts_with = "prompts", required_unless_present = "prompts")]
    pub prompt: Option<String>,
    /// JSON-lines file of prompts: each line a JSON string or an object with `prompt` (and optionally `id`).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Prompt template: a text file with `{input}`, or a built-in: `mgsm-ja`, `ja-vqa`.
    #[arg(long)]
    pub template: Option<String>,
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// 1 = greedy; more = beam search.
    #[arg(long, default_value_t = 1)]
    pub num_beams: usize,
    /// transformers semantics; 1.0 = off.
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Stop string (repeatable): the completion ends there and is cut before it, as vLLM does.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Prompts generated together (left-padded batch).
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Compute dtype: f32, f16 or bf16 (default: the checkpoint's; bf16 runs as f32 on CPU).
    #[arg(long)]
    pub dtype: Option<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Batch mode: write the JSON lines here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Image for a vision-language (LLaVA) model; the prompt must contain `<image>` exactly once. In batch
    /// mode a line's own `"image"` field (relative to the prompts file) takes precedence.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// How LLaVA models turn images into tiles: `native`, `single` (one tile, as the paper evaluated
    /// LLaVA-1.6 and EvoVLM-JP) or `anyres` (LLaVA-NeXT).
    #[arg(long, default_value = "native")]
    pub image_mode: String,
}

/// One prompt to complete.
struct Job {
    id: Value,
    text: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let template = args.template.as_deref().map(load_template).transpose()?;
    let render = |input: &str| template.as_ref().map_or_else(|| input.to_string(), |t| t.render(input));
    let jobs = match (&args.prompt, &args.prompts) {
        (Some(p), _) => vec![Job { id: Value::Null, text: render(p) }],
        (None, Some(path)) => read_jobs(path)?.into_iter().map(|j| Job { text: render(&j.text), ..j }).collect(),
        (None, None) => bail!("give --prompt TEXT or --prompts FILE.jsonl"),
    };

    let dir = evomerge_evolve::generators::model_dir(&args.model)?;
    let tokenizer = TextTokenizer::from_model_dir(&dir)
        .with_context(|| format!("loading the tokenizer of {}", dir.display()))?;
    let mut config = GenerationConfig::from_model_dir(&dir)
        .with_context(|| format!("reading the generation settings of {}", dir.display()))?;
    config.max_new_tokens = args.max_new_tokens;
    config.num_beams = args.num_beams;
    config.repetition_penalty = args.repetition_penalty;
    config.stop_strings = args.stop.clone();
    config.validate()?;
    // Prompts with images go to the vision-language path (evomerge-vision); see `run_with_images`.
    if let Some(images) =
        evomerge_vision::cli::images_for_prompts(args.prompts.as_deref(), args.image.as_deref(), jobs.len())?
    {
        return run_with_images(&args, &dir, &jobs, images, &config, &tokenizer);
    }
    let opts = LoadOptions {
        device: super::device_arg(&args.device)?,
        dtype: super::dtype_arg(args.dtype.as_deref())?,
        ..Default::default()
    };
    let model = Mistral::from_dir(&dir, &opts).with_context(|| format!("loading the model in {}", dir.display()))?;

    let prompts = jobs
        .iter()
        .enumerate()
        .map(|(i, job)| {
            tokenizer.encode(&job.text).map(PromptInput::Tokens).with_context(|| format!("tokenizing prompt {i}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let completions = generate_in_batches(&model, &tokenizer, &prompts, &config, args.batch_size)?;

    if args.prompt.is_some() {
        let text = completions[0].text(&tokenizer)?;
        println!("{text}");
        return Ok(());
    }
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    for (job, completion) in jobs.iter().zip(&completions) {
        let line = json!({
            "id": job.id,
            "prompt": job.text,
            "completion": completion.text(&tokenizer)?,
            "finish_reason": finish_name(&completion.finish),
            "new_tokens": completion.tokens.len(),
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

/// Generates in batches of similar-length prompts (less padding), returning completions in prompt order.
fn generate_in_batches(
    model: &Mistral,
    tokenizer: &TextTokenizer,
    prompts: &[PromptInput],
    config: &GenerationConfig,
    batch_size: usize,
) -> anyhow::Result<Vec<Completion>> {
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| prompts[i].len());
    let progress = progress_bar(prompts.len());
    let mut results: Vec<Option<Completion>> = vec![None; prompts.len()];
    for chunk in order.chunks(batch_size) {
        let batch: Vec<PromptInput> = chunk.iter().map(|&i| prompts[i].clone()).collect();
        let out = generation::generate(model, &batch, config, Some(tokenizer)).with_context(|| {
            format!("generating for prompt(s) {}", chunk.iter().map(usize::to_string).collect::<Vec<_>>().join(", "))
        })?;
        for (&i, c) in chunk.iter().zip(out) {
            results[i] = Some(c);
        }
        if let Some(bar) = &progress {
            bar.inc(chunk.len() as u64);
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    results.into_iter().enumerate().map(|(i, c)| c.with_context(|| format!("prompt {i} got no completion"))).collect()
}

fn progress_bar(len: usize) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    (len > 1 && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(len as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} prompts, {elapsed} ({eta} left)") {
            bar.set_style(style);
        }
        bar
    })
}

fn finish_name(finish: &FinishReason) -> &'static str {
    match finish {
        FinishReason::Eos => "eos",
        FinishReason::Length => "length",
        FinishReason::Stop(_) => "stop",
    }
}

fn load_template(spec: &str) -> anyhow::Result<PromptTemplate> {
    match spec {
        "mgsm-ja" | "mgsm_ja" => Ok(PromptTemplate::mgsm_ja()),
        "ja-vqa" | "ja_vqa" => Ok(PromptTemplate::ja_vqa()),
        path => PromptTemplate::from_file(Path::new(path))
            .with_context(|| format!("--template {path:?} is neither a file nor one of mgsm-ja, ja-vqa")),
    }
}

fn read_jobs(path: &Path) -> anyhow::Result<Vec<Job>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open prompts file {}", path.display()))?;
    let mut jobs = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let value: Value = serde_json::from_str(&line).with_context(|| format!("{}: not valid JSON", at()))?;
        let job = match value {
            Value::String(text) => Job { id: Value::from(jobs.len()), text },
            Value::Object(mut fields) => match fields.remove("prompt") {
                Some(Value::String(text)) => {
                    Job { id: fields.remove("id").unwrap_or_else(|| Value::from(jobs.len())), text }
                }
                _ => bail!("{}: the object needs a string field `prompt`", at()),
            },
            _ => bail!("{}: expected a JSON string or an object with `prompt`", at()),
        };
        jobs.push(job);
    }
    if jobs.is_empty() {
        bail!("{} holds no prompts", path.display());
    }
    Ok(jobs)
}

// ----- vision-language models (`--image`) -------------------------------------------------------------

/// Generation with a LLaVA model: each prompt's image replaces its `<image>`; output as for text prompts.
fn run_with_images(
    args: &Args,
    dir: &Path,
    jobs: &[Job],
    images: Vec<PathBuf>,
    config: &GenerationConfig,
    tokenizer: &TextTokenizer,
) -> anyhow::Result<()> {
    let opts = evomerge_vision::LoadOptions {
        device: super::device_arg(&args.device)?,
        dtype: super::dtype_arg(args.dtype.as_deref())?,
        mode: evomerge_vision::cli::parse_mode(&args.image_mode)?,
        ..Default::default()
    };
    let image_jobs: Vec<evomerge_vision::cli::ImageJob> = jobs
        .iter()
        .zip(images)
        .map(|(job, image)| evomerge_vision::cli::ImageJob { prompt: job.text.clone(), image })
        .collect();
    let progress = progress_bar(jobs.len());
    let mut tick = |n: usize| {
        if let Some(bar) = &progress {
            bar.inc(n as u64);
        }
    };
    let (completions, _) =
        evomerge_vision::cli::generate_with_images(dir, &image_jobs, config, args.batch_size, &opts, &mut tick)
            .with_context(|| format!("generating with the vision-language model in {}", dir.display()))?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if args.prompt.is_some() {
        println!("{}", completions[0].text(tokenizer)?);
        return Ok(());
    }
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    for ((job, completion), image) in jobs.iter().zip(&completions).zip(&image_jobs) {
        let line = json!({
            "id": job.id,
            "prompt": job.text,
            "image": image.image.display().to_string(),
            "completion": completion.text(tokenizer)?,
            "finish_reason": finish_name(&completion.finish),
            "new_tokens": completion.tokens.len(),
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}
