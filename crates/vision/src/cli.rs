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
        other => Err(VisionError::config("--image-mode", format!("`{other}` is not native, single or anyres"))),
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
pub fn logits_with_image(model: &str, ids: &[u32], image: &Path, opts: &LoadOptions) -> Result<Tensor> {
    let model = LlavaModel::load(model, opts)?;
    let id = model.image_token_id().ok_or_else(|| {
        VisionError::UnsupportedModel(
            "this model's vocabulary has no <image> token; give the prompt as text instead of ids".into(),
        )
    })?;
    let prompt = ImagePrompt::from_ids(ids, id)?;
    let image = model.read_image(image)?;
    let logits = model.logits(&prompt, &model.preprocess(&image))?;
    Ok(logits.to_device(&candle_core::Device::Cpu)?)
}
