//! What the `evomerge` command line calls for `--image`: the subcommands stay thin and everything
//! vision-specific lives here.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use evomerge_mistral::generation::{Completion, GenerationConfig};
use evomerge_mistral::prompt::TextTokenizer;

use crate::error::{Result, VisionError};
use crate::llava::{GenerateError, LlavaModel, LoadOptions, ModeChoice};
use crate::prompt::ImagePrompt;

/// Parses `--image-mode`: `native` (what the model was trained with), `single` (one 336 tile, as the
/// paper evaluated LLaVA-1.6 and EvoVLM-JP) or `anyres` (LLaVA-NeXT tiles).
pub fn parse_mode(spec: &str) -> Result<ModeChoice> {
    match spec.to_ascii_lowercase().as_str() {
        "native" | "auto" => Ok(ModeChoice::Native),
        "single" | "llava" => Ok(ModeChoice::Single),
        "anyres" | "llava_next" | "llava-next" => Ok(ModeChoice::AnyRes),
        other => Err(VisionError::config(
            "--image-mode",
            format!("`{other}` is not native, single or anyres"),
        )),
    }
}

/// One (prompt, image) pair to answer.
#[derive(Debug, Clone)]
pub struct ImageJob {
    /// The full prompt text, with `<image>` exactly once.
    pub prompt: String,
    pub image: PathBuf,
}

/// Answers every job with the LLaVA model in `model_dir`, `batch_size` prompts at a time (images are read
/// batch by batch, so memory does not grow with the number of jobs). `on_batch` is told how many jobs
/// each finished batch held (for progress bars). Completions come back in job order.
pub fn generate_with_images(
    model_dir: &Path,
    jobs: &[ImageJob],
    config: &GenerationConfig,
    batch_size: usize,
    opts: &LoadOptions,
    on_batch: &mut dyn FnMut(usize),
) -> std::result::Result<(Vec<Completion>, TextTokenizer), GenerateError> {
    let tokenizer = TextTokenizer::from_model_dir(model_dir)
        .map_err(|e| VisionError::Tokenizer(format!("{}: {e}", model_dir.display())))?;
    let model = LlavaModel::load(&model_dir.to_string_lossy(), opts)?;
    let mut out = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(batch_size.max(1)) {
        let items = chunk
            .iter()
            .map(|job| {
                let prompt = ImagePrompt::from_text_tokenizer(&tokenizer, &job.prompt)?;
                Ok((prompt, model.read_image(&job.image)?))
            })
            .collect::<Result<Vec<_>>>()?;
        out.extend(model.generate(&items, config, Some(&tokenizer), items.len())?);
        on_batch(chunk.len());
    }
    Ok((out, tokenizer))
}

/// Logits `[len, vocab]` (f32, on the CPU) for token ids holding the model's `<image>` id once, with the
/// image's features in its place; `len` counts the image's feature positions.
pub fn logits_with_image(
    model: &str,
    ids: &[u32],
    image: &Path,
    opts: &LoadOptions,
) -> Result<Tensor> {
    let model = LlavaModel::load(model, opts)?;
    let id = model.image_token_id().ok_or_else(|| {
        VisionError::UnsupportedModel(
            "this model's vocabulary has no <image> token; give the prompt as text instead of ids"
                .into(),
        )
    })?;
    let prompt = ImagePrompt::from_ids(ids, id)?;
    let image = model.read_image(image)?;
    let logits = model.logits(&prompt, &model.preprocess(&image))?;
    Ok(logits.to_device(&candle_core::Device::Cpu)?)
}

/// The `"image"` field of every non-blank line of a JSON-lines prompt file (`None` where a line has none),
/// in line order: blank lines are skipped, as the prompt reader does. Relative paths are taken relative to
/// the file's folder.
pub fn jsonl_images(path: &Path) -> Result<Vec<Option<PathBuf>>> {
    let text = std::fs::read_to_string(path).map_err(|source| VisionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|source| VisionError::Json {
                path: PathBuf::from(format!("{}:{}", path.display(), n + 1)),
                source,
            })?;
        out.push(match value.get("image") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(p)) => Some(base.join(p)),
            Some(other) => {
                return Err(VisionError::config(
                    format!("{}:{} image", path.display(), n + 1),
                    format!("expected a path string, got {other}"),
                ))
            }
        });
    }
    Ok(out)
}

/// The image of each of `count` prompts: a line's own `"image"` or else `default` (`--image`). `Ok(None)`
/// when no prompt has an image (a text-only run); an error when only some have one.
pub fn images_for_prompts(
    prompts_file: Option<&Path>,
    default: Option<&Path>,
    count: usize,
) -> Result<Option<Vec<PathBuf>>> {
    let per_line = match prompts_file {
        Some(p) => jsonl_images(p)?,
        None => vec![None; count],
    };
    if per_line.len() != count {
        return Err(VisionError::config(
            "--prompts",
            format!("{} lines with prompts but {count} prompts", per_line.len()),
        ));
    }
    if default.is_none() && per_line.iter().all(Option::is_none) {
        return Ok(None);
    }
    per_line
        .into_iter()
        .enumerate()
        .map(|(i, own)| {
            own.or_else(|| default.map(Path::to_path_buf))
                .ok_or_else(|| {
                    VisionError::config(
                    format!("prompt {i}"),
                    "has no image while others do; give every line an \"image\" or pass --image",
                )
                })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}
