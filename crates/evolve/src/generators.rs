//! The evaluators' [`Generator`] over real models: a text Mistral (MGSM) and a LLaVA VLM (VQA).
//!
//! The generators borrow their model rather than own it, because a search owns one live model,
//! writes each candidate's merged weights into it and then evaluates: [`TextGenerator`] and
//! [`VlmGenerator`] are built per candidate over `&Mistral` / `&LlavaModel`. [`TextModel`] and
//! [`VlmModel`] are owning bundles (model, tokenizer, generation config) loaded from a directory, as
//! `evomerge eval` uses them.
//!
//! Both tokenize with the checkpoint's own tokenizer, take EOS/pad ids from its configs, and report
//! whether each answer ran into `max_new_tokens`.
//!
//! A VLM's vision tower and projector stay frozen while the language model changes, so the projected
//! features of each image are computed once and kept in a [`FeatureCache`] keyed by the SHA-256 of
//! the encoded image bytes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, DeviceLocation, Tensor};
use evomerge_eval::generator::{
    Completion, GenerationSettings, Generator, GeneratorError, ImageInput, Prompt,
};
use evomerge_mistral::generation::{
    self, Completion as ModelCompletion, FinishReason, GenerationConfig, GenerationError,
    PromptInput,
};
use evomerge_mistral::prompt::{PromptError, TextTokenizer};
use evomerge_mistral::{Mistral, MistralError};
use evomerge_vision::{decode_image, ImagePrompt, LlavaModel, ModeChoice, VisionError};
use sha2::{Digest, Sha256};

/// A device or dtype name that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("unknown device {0:?}: use cpu, cuda or cuda:N")]
    UnknownDevice(String),
    #[error("cannot open CUDA device {ordinal} (is this build made with the `cuda` feature?)")]
    Cuda {
        ordinal: usize,
        #[source]
        source: candle_core::Error,
    },
    #[error("unknown dtype {0:?}: use f32, f16 or bf16")]
    UnknownDtype(String),
}

/// Parses a device name: `cpu`, `cuda` (device 0) or `cuda:N`, and opens the device.
pub fn parse_device(spec: &str) -> Result<Device, SpecError> {
    let ordinal = match spec {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| SpecError::UnknownDevice(other.to_string()))?,
    };
    Device::new_cuda(ordinal).map_err(|source| SpecError::Cuda { ordinal, source })
}

/// Parses a compute dtype (case-insensitive): `f32`/`float32`, `f16`/`float16`/`fp16`,
/// `bf16`/`bfloat16`. `None` stays `None` (the checkpoint's own dtype).
pub fn parse_dtype(spec: Option<&str>) -> Result<Option<DType>, SpecError> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    match spec.to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(Some(DType::F32)),
        "f16" | "float16" | "fp16" => Ok(Some(DType::F16)),
        "bf16" | "bfloat16" => Ok(Some(DType::BF16)),
        _ => Err(SpecError::UnknownDtype(spec.to_string())),
    }
}

/// The name [`parse_device`] reads for `device` (`cpu`, `cuda:N`, `metal:N`).
pub fn device_name(device: &Device) -> String {
    match device.location() {
        DeviceLocation::Cpu => "cpu".to_string(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Errors of [`TextModel::load`] and [`VlmModel::load`]; each names the directory at fault.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("opening model {spec:?} (a directory or a hub id)")]
    Open {
        spec: String,
        #[source]
        source: evomerge_checkpoint::CheckpointError,
    },
    #[error("loading the model in {}", dir.display())]
    Text {
        dir: PathBuf,
        #[source]
        source: MistralError,
    },
    #[error("loading the LLaVA model in {}", dir.display())]
    Vision {
        dir: PathBuf,
        #[source]
        source: VisionError,
    },
    #[error("loading the tokenizer in {}", dir.display())]
    Tokenizer {
        dir: PathBuf,
        #[source]
        source: PromptError,
    },
    #[error("reading the generation config in {}", dir.display())]
    GenerationConfig {
        dir: PathBuf,
        #[source]
        source: GenerationError,
    },
}

/// A model directory: a local path as is, otherwise a hub id resolved through the checkpoint crate's
/// cache-first lookup.
pub fn model_dir(spec: &str) -> Result<PathBuf, LoadError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let ckpt = evomerge_checkpoint::Checkpoint::open(spec).map_err(|source| LoadError::Open {
        spec: spec.to_string(),
        source,
    })?;
    Ok(ckpt.dir().to_path_buf())
}

/// The tokenizer and generation config every generator needs, from a model directory.
fn tokenizer_and_config(dir: &Path) -> Result<(TextTokenizer, GenerationConfig), LoadError> {
    let tokenizer = TextTokenizer::from_model_dir(dir).map_err(|source| LoadError::Tokenizer {
        dir: dir.to_path_buf(),
        source,
    })?;
    let base =
        GenerationConfig::from_model_dir(dir).map_err(|source| LoadError::GenerationConfig {
            dir: dir.to_path_buf(),
            source,
        })?;
    Ok((tokenizer, base))
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

/// A text-only Mistral-family model, borrowed: it answers with whatever weights the model holds when
/// [`Generator::generate`] is called.
pub struct TextGenerator<'m> {
    model: &'m Mistral,
    tokenizer: &'m TextTokenizer,
    base: &'m GenerationConfig,
    description: String,
}

impl<'m> TextGenerator<'m> {
    /// `base` supplies what the evaluators' settings do not (EOS and pad ids, length penalty);
    /// `description` is recorded in every summary.
    pub fn new(
        model: &'m Mistral,
        tokenizer: &'m TextTokenizer,
        base: &'m GenerationConfig,
        description: impl Into<String>,
    ) -> Self {
        Self {
            model,
            tokenizer,
            base,
            description: description.into(),
        }
    }
}

impl Generator for TextGenerator<'_> {
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
        let config = model_config(self.base, settings);
        let out =
            generation::generate(self.model, &inputs, &config, Some(self.tokenizer))
                .map_err(|e| GeneratorError::Model(e.to_string()))?;
        out.iter()
            .map(|c| to_completion(c, self.tokenizer))
            .collect()
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// A text model loaded from a directory, with its tokenizer and generation config.
pub struct TextModel {
    model: Mistral,
    tokenizer: TextTokenizer,
    base: GenerationConfig,
    description: String,
}

impl TextModel {
    /// Loads the model in `spec` (a directory or a hub id) onto `device`, in `dtype` (`None`: the
    /// checkpoint's, with bf16 becoming f32 on CPU).
    pub fn load(spec: &str, device: &Device, dtype: Option<DType>) -> Result<Self, LoadError> {
        let dir = model_dir(spec)?;
        let opts = evomerge_mistral::LoadOptions {
            device: device.clone(),
            dtype,
            ..Default::default()
        };
        let model = Mistral::from_dir(&dir, &opts).map_err(|source| LoadError::Text {
            dir: dir.clone(),
            source,
        })?;
        let (tokenizer, base) = tokenizer_and_config(&dir)?;
        let description = format!(
            "mistral {} ({:?}, {})",
            dir.display(),
            model.dtype(),
            device_name(device)
        );
        Ok(Self {
            model,
            tokenizer,
            base,
            description,
        })
    }

    /// A generator over this model.
    pub fn generator(&self) -> TextGenerator<'_> {
        TextGenerator::new(&self.model, &self.tokenizer, &self.base, &self.description)
    }

    pub fn model(&self) -> &Mistral {
        &self.model
    }

    /// The model, to write merged weights into.
    pub fn model_mut(&mut self) -> &mut Mistral {
        &mut self.model
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    pub fn generation_config(&self) -> &GenerationConfig {
        &self.base
    }

    /// Model directory, dtype and device, as recorded in summaries.
    pub fn description(&self) -> &str {
        &self.description
    }
}

/// Why an image's features could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// The image could not be read or decoded: the prompt's fault.
    #[error(transparent)]
    Image(VisionError),
    /// The vision tower or projector failed: the model's fault.
    #[error(transparent)]
    Encoder(VisionError),
}

/// Projected image features (what replaces `<image>` in the prompt embeddings), computed once per
/// distinct image and reused across candidates.
///
/// The key is the SHA-256 of the encoded image bytes (for an image given as a path, of the file's
/// bytes), so the same picture reached through different paths or rows is encoded once. A cache
/// belongs to one model: the features depend on its vision tower, projector, image mode and alpha
/// handling, which a merge search never changes (it writes only the language model). Features live on
/// the model's device (single-tile mode: `image_seq_length x hidden` values per image).
#[derive(Debug, Default)]
pub struct FeatureCache {
    entries: HashMap<[u8; 32], Tensor>,
    hits: usize,
    misses: usize,
}

impl FeatureCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The features of `image` for `model`: from the cache, or computed (decode, preprocess, tower,
    /// projector) and kept. `what` names the image in decode errors.
    pub fn features(
        &mut self,
        model: &LlavaModel,
        image: &ImageInput,
        what: &str,
    ) -> Result<Tensor, FeatureError> {
        let (bytes, what): (Cow<'_, [u8]>, Cow<'_, str>) = match image {
            ImageInput::Encoded(bytes) => (Cow::Borrowed(bytes), Cow::Borrowed(what)),
            ImageInput::Path(path) => {
                let bytes = std::fs::read(path).map_err(|source| {
                    FeatureError::Image(VisionError::Io {
                        path: path.clone(),
                        source,
                    })
                })?;
                (Cow::Owned(bytes), Cow::Owned(path.display().to_string()))
            }
        };
        let key: [u8; 32] = Sha256::digest(&bytes).into();
        if let Some(features) = self.entries.get(&key) {
            self.hits += 1;
            return Ok(features.clone());
        }
        let rgb =
            decode_image(&bytes, &what, model.processor().alpha).map_err(FeatureError::Image)?;
        let features = model.features_of(&rgb).map_err(FeatureError::Encoder)?;
        self.misses += 1;
        self.entries.insert(key, features.clone());
        Ok(features)
    }

    /// Distinct images held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Lookups answered from the cache.
    pub fn hits(&self) -> usize {
        self.hits
    }

    /// Lookups that ran the vision tower.
    pub fn misses(&self) -> usize {
        self.misses
    }

    /// Drops every entry (e.g. after changing the image mode); the counters stay.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// A LLaVA / LLaVA-NeXT model answering questions about images, borrowed like [`TextGenerator`]; image
/// features come from (and go into) `features`.
pub struct VlmGenerator<'m> {
    model: &'m LlavaModel,
    tokenizer: &'m TextTokenizer,
    base: &'m GenerationConfig,
    features: &'m mut FeatureCache,
    description: String,
}

impl<'m> VlmGenerator<'m> {
    pub fn new(
        model: &'m LlavaModel,
        tokenizer: &'m TextTokenizer,
        base: &'m GenerationConfig,
        features: &'m mut FeatureCache,
        description: impl Into<String>,
    ) -> Self {
        Self {
            model,
            tokenizer,
            base,
            features,
            description: description.into(),
        }
    }
}

impl Generator for VlmGenerator<'_> {
    fn generate(
        &mut self,
        prompts: &[Prompt],
        settings: &GenerationSettings,
    ) -> Result<Vec<Completion>, GeneratorError> {
        let mut items = Vec::with_capacity(prompts.len());
        for (index, p) in prompts.iter().enumerate() {
            let bad = |message: String| GeneratorError::BadPrompt { index, message };
            let image = p
                .image
                .as_ref()
                .ok_or_else(|| bad("a VQA prompt needs an image".into()))?;
            let features = self
                .features
                .features(self.model, image, &format!("image of prompt {index}"))
                .map_err(|e| match e {
                    FeatureError::Image(e) => bad(e.to_string()),
                    FeatureError::Encoder(e) => GeneratorError::Model(e.to_string()),
                })?;
            let prompt = ImagePrompt::from_text(self.tokenizer.inner(), &p.text)
                .map_err(|e| bad(e.to_string()))?;
            items.push((prompt, features));
        }
        let config = model_config(self.base, settings);
        let out = self
            .model
            .generate_with_features(&items, &config, Some(self.tokenizer), items.len().max(1))
            .map_err(|e| GeneratorError::Model(e.to_string()))?;
        out.iter()
            .map(|c| to_completion(c, self.tokenizer))
            .collect()
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// A LLaVA model loaded from a directory, with its tokenizer, generation config and image feature
/// cache.
pub struct VlmModel {
    model: LlavaModel,
    tokenizer: TextTokenizer,
    base: GenerationConfig,
    features: FeatureCache,
    description: String,
}

impl VlmModel {
    /// Loads the LLaVA model in `spec` (a directory or a hub id); `mode` chooses how images become
    /// tiles (the paper evaluated with [`ModeChoice::Single`]).
    pub fn load(
        spec: &str,
        device: &Device,
        dtype: Option<DType>,
        mode: ModeChoice,
    ) -> Result<Self, LoadError> {
        let dir = model_dir(spec)?;
        let mode_name = match mode {
            ModeChoice::Native => "native",
            ModeChoice::Single => "single",
            ModeChoice::AnyRes => "anyres",
        };
        let opts = evomerge_vision::LoadOptions {
            device: device.clone(),
            dtype,
            mode,
            ..Default::default()
        };
        let model = LlavaModel::load(&dir.to_string_lossy(), &opts).map_err(|source| {
            LoadError::Vision {
                dir: dir.clone(),
                source,
            }
        })?;
        let (tokenizer, base) = tokenizer_and_config(&dir)?;
        let description = format!(
            "llava {} ({mode_name} image mode, {})",
            dir.display(),
            device_name(device)
        );
        Ok(Self {
            model,
            tokenizer,
            base,
            features: FeatureCache::new(),
            description,
        })
    }

    /// A generator over this model and its feature cache.
    pub fn generator(&mut self) -> VlmGenerator<'_> {
        VlmGenerator::new(
            &self.model,
            &self.tokenizer,
            &self.base,
            &mut self.features,
            &self.description,
        )
    }

    pub fn model(&self) -> &LlavaModel {
        &self.model
    }

    /// The language model, to write merged weights into. Only the language model is handed out
    /// mutably, so the cached image features (tower and projector output) stay valid.
    pub fn llm_mut(&mut self) -> &mut Mistral {
        self.model.llm_mut()
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    pub fn generation_config(&self) -> &GenerationConfig {
        &self.base
    }

    pub fn feature_cache(&self) -> &FeatureCache {
        &self.features
    }

    /// Model directory, image mode and device, as recorded in summaries.
    pub fn description(&self) -> &str {
        &self.description
    }
}
