//! The evaluators' `Generator` trait over real models: a text Mistral (MGSM) and a LLaVA VLM (VQA).
//! Both tokenize with the checkpoint's own tokenizer, take EOS/pad ids from its configs, and report
//! whether each answer ran into `max_new_tokens`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device};
use evomerge_eval::generator::{
    Completion, GenerationSettings, Generator, GeneratorError, ImageInput, Prompt,
};
use evomerge_mistral::generation::{
    self, Completion as ModelCompletion, FinishReason, GenerationConfig, PromptInput,
};
use evomerge_mistral::prompt::TextTokenizer;
use evomerge_mistral::{LoadOptions as TextLoadOptions, Mistral};
use evomerge_vision::{decode_image, AlphaMode, ImagePrompt, LlavaModel, LlmStep, ModeChoice};

pub fn parse_device(spec: &str) -> anyhow::Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0)
            .context("opening CUDA device 0 (is this build made with --features cuda?)"),
        other => match other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => Device::new_cuda(n).with_context(|| {
                format!("opening CUDA device {n} (is this build made with --features cuda?)")
            }),
            None => anyhow::bail!("unknown device {other:?}: use cpu, cuda or cuda:N"),
        },
    }
}

pub fn parse_dtype(spec: Option<&str>) -> anyhow::Result<Option<DType>> {
    match spec {
        None => Ok(None),
        Some("f32") => Ok(Some(DType::F32)),
        Some("f16") => Ok(Some(DType::F16)),
        Some("bf16") => Ok(Some(DType::BF16)),
        Some(other) => anyhow::bail!("unknown dtype {other:?}: use f32, f16 or bf16"),
    }
}

/// A model directory: a local path as is, otherwise a hub id resolved through the checkpoint crate's
/// cache-first lookup.
fn model_dir(spec: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let ckpt = evomerge_checkpoint::Checkpoint::open(spec)
        .with_context(|| format!("opening model {spec:?} (a directory or a hub id)"))?;
    Ok(ckpt.dir().to_path_buf())
}

/// Turns the evaluators' settings into the generation crate's, keeping the checkpoint's EOS/pad ids.
fn model_config(base: &GenerationConfig, settings: &GenerationSettings) -> GenerationConfig {
    let mut config = base.clone();
    config.max_new_tokens = settings.max_new_tokens;
    config.num_beams = settings.num_beams;
    config.repetition_penalty = settings.repetition_penalty;
    config.stop_strings = settings.stop.clone();
    config
}

fn to_completion(
    c: &ModelCompletion,
    tokenizer: &TextTokenizer,
) -> Result<Completion, GeneratorError> {
    let text = c
        .text(tokenizer)
        .map_err(|e| GeneratorError::Model(e.to_string()))?;
    Ok(Completion {
        text,
        new_tokens: c.tokens.len(),
        hit_max_new_tokens: c.finish == FinishReason::Length,
    })
}

/// A text-only Mistral-family model.
pub struct TextGenerator {
    model: Mistral,
    tokenizer: TextTokenizer,
    base: GenerationConfig,
    description: String,
}

impl TextGenerator {
    pub fn load(spec: &str, device: &str, dtype: Option<&str>) -> anyhow::Result<Self> {
        let dir = model_dir(spec)?;
        let opts = TextLoadOptions {
            device: parse_device(device)?,
            dtype: parse_dtype(dtype)?,
            ..Default::default()
        };
        let model = Mistral::from_dir(&dir, &opts)
            .with_context(|| format!("loading the model in {}", dir.display()))?;
        let tokenizer = TextTokenizer::from_model_dir(&dir)
            .with_context(|| format!("loading the tokenizer in {}", dir.display()))?;
        let base = GenerationConfig::from_model_dir(&dir)
            .with_context(|| format!("reading the generation config in {}", dir.display()))?;
        let description = format!("mistral {} ({:?}, {device})", dir.display(), model.dtype());
        Ok(Self {
            model,
            tokenizer,
            base,
            description,
        })
    }
}

impl Generator for TextGenerator {
    fn generate(
        &mut self,
        prompts: &[Prompt],
        settings: &GenerationSettings,
    ) -> Result<Vec<Completion>, GeneratorError> {
        let inputs = prompts
            .iter()
            .enumerate()
            .map(|(index, p)| {
                if p.image.is_some() {
                    return Err(GeneratorError::BadPrompt {
                        index,
                        message: "this is a text-only model; evaluate VQA with a LLaVA model"
                            .into(),
                    });
                }
                self.tokenizer
                    .encode(&p.text)
                    .map(PromptInput::Tokens)
                    .map_err(|e| GeneratorError::BadPrompt {
                        index,
                        message: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config = model_config(&self.base, settings);
        let out = generation::generate(
            &LlmStep(&self.model),
            &inputs,
            &config,
            Some(&self.tokenizer),
        )
        .map_err(|e| GeneratorError::Model(e.to_string()))?;
        out.iter()
            .map(|c| to_completion(c, &self.tokenizer))
            .collect()
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// A LLaVA / LLaVA-NeXT model answering questions about images.
pub struct VlmGenerator {
    model: LlavaModel,
    tokenizer: TextTokenizer,
    base: GenerationConfig,
    alpha: AlphaMode,
    description: String,
}

impl VlmGenerator {
    pub fn load(
        spec: &str,
        device: &str,
        dtype: Option<&str>,
        image_mode: &str,
    ) -> anyhow::Result<Self> {
        let dir = model_dir(spec)?;
        let mode = match image_mode {
            "single" => ModeChoice::Single,
            "native" => ModeChoice::Native,
            other => anyhow::bail!("unknown image mode {other:?}: use single or native"),
        };
        let opts = evomerge_vision::LoadOptions {
            device: parse_device(device)?,
            dtype: parse_dtype(dtype)?,
            mode,
            alpha: AlphaMode::default(),
        };
        let alpha = opts.alpha;
        let dir_str = dir.to_string_lossy().into_owned();
        let model = LlavaModel::load(&dir_str, &opts)
            .with_context(|| format!("loading the LLaVA model in {}", dir.display()))?;
        let tokenizer = TextTokenizer::from_model_dir(&dir)
            .with_context(|| format!("loading the tokenizer in {}", dir.display()))?;
        let base = GenerationConfig::from_model_dir(&dir)
            .with_context(|| format!("reading the generation config in {}", dir.display()))?;
        let description = format!(
            "llava {} ({image_mode} image mode, {device})",
            dir.display()
        );
        Ok(Self {
            model,
            tokenizer,
            base,
            alpha,
            description,
        })
    }
}

impl Generator for VlmGenerator {
    fn generate(
        &mut self,
        prompts: &[Prompt],
        settings: &GenerationSettings,
    ) -> Result<Vec<Completion>, GeneratorError> {
        let items = prompts
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let bad = |message: String| GeneratorError::BadPrompt { index, message };
                let image = match &p.image {
                    Some(ImageInput::Encoded(bytes)) => {
                        decode_image(bytes, &format!("image of prompt {index}"), self.alpha)
                    }
                    Some(ImageInput::Path(path)) => evomerge_vision::load_image(path, self.alpha),
                    None => return Err(bad("a VQA prompt needs an image".into())),
                }
                .map_err(|e| bad(e.to_string()))?;
                let prompt = ImagePrompt::from_text(self.tokenizer.inner(), &p.text)
                    .map_err(|e| bad(e.to_string()))?;
                Ok((prompt, image))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config = model_config(&self.base, settings);
        let out = self
            .model
            .generate(&items, &config, Some(&self.tokenizer), items.len().max(1))
            .map_err(|e| GeneratorError::Model(e.to_string()))?;
        out.iter()
            .map(|c| to_completion(c, &self.tokenizer))
            .collect()
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}
