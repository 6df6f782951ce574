//! A LLaVA model: the frozen image encoder composed with the mergeable Mistral/Llama backbone. The image's
//! feature sequence replaces the prompt's `<image>` token in the input embeddings, and the backbone runs
//! on those embeddings (transformers' `masked_scatter` of features into the placeholder positions).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use evomerge_checkpoint::{Checkpoint, Dtype};
use evomerge_mistral::generation::{
    generate, Completion, GenerationConfig, GenerationError, PromptInput,
    TokenDecoder,
};
use evomerge_mistral::{
    Config as TextConfig, Mistral, MistralError, TensorSource, WeightNames,
};
use image::RgbImage;

use crate::config::{ImageMode, ProcessorConfig};
use crate::encoder::ImageEncoder;
use crate::error::{Result, VisionError};
use crate::image_io::{load_image, AlphaMode};
use crate::llava_config::{Flavor, LlavaConfig};
use crate::preprocess::{preprocess, PixelValues};
use crate::prompt::ImagePrompt;
use crate::weights::{WeightLayout, Weights};

/// How images are turned into tiles.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ModeChoice {
    /// What the model was trained with: anyres for LLaVA-NeXT, one tile otherwise.
    #[default]
    Native,
    /// One tile, as the paper evaluated LLaVA-1.6 and EvoVLM-JP (transformers' `LlavaForConditionalGeneration`).
    Single,
    /// LLaVA-NeXT anyres with the model's pinpoints (needs an `image_newline`).
    AnyRes,
}

/// Options for [`LlavaModel::load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// Compute dtype; `None`: the checkpoint's, with bf16 becoming f32 on CPU.
    pub dtype: Option<DType>,
    pub mode: ModeChoice,
    pub alpha: AlphaMode,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            dtype: None,
            mode: ModeChoice::Native,
            alpha: AlphaMode::default(),
        }
    }
}

/// Adapts a checkpoint to the backbone's tensor source.
struct CheckpointSource<'a>(&'a Checkpoint);

impl TensorSource for CheckpointSource<'_> {
    fn tensor(
        &self,
        name: &str,
        device: &Device,
    ) -> std::result::Result<Option<Tensor>, MistralError> {
        if !self.0.contains(name) {
            return Ok(None);
        }
        let view = self
            .0
            .tensor(name)
            .map_err(|e| MistralError::BadInput(e.to_string()))?;
        Ok(Some(Tensor::from_raw_buffer(
            view.data,
            candle_dtype(view.dtype),
            view.shape,
            device,
        )?))
    }

    /// Every tensor is copied out of the file, so the language model takes weights in place from the
    /// first write.
    fn fresh_storage(&self) -> bool {
        true
    }
}

pub(crate) fn candle_dtype(d: Dtype) -> DType {
    match d {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
    }
}

/// A LLaVA / LLaVA-NeXT model ready to answer questions about images.
pub struct LlavaModel {
    config: LlavaConfig,
    layout: WeightLayout,
    encoder: ImageEncoder,
    llm: Mistral,
    mode: ImageMode,
    processor: ProcessorConfig,
}

impl LlavaModel {
    /// Opens a model directory or hub id and loads it.
    pub fn load(spec: &str, opts: &LoadOptions) -> Result<LlavaModel> {
        let ckpt = Checkpoint::open(spec)?;
        LlavaModel::from_checkpoint(&ckpt, opts)
    }

    /// Loads from an opened checkpoint.
    pub fn from_checkpoint(ckpt: &Checkpoint, opts: &LoadOptions) -> Result<LlavaModel> {
        let config = LlavaConfig::from_json(ckpt.config(), ckpt.dir())?;
        let layout = WeightLayout::detect(ckpt)?;
        let text = TextConfig::from_json(&config.text_config).map_err(|e| {
            VisionError::UnsupportedModel(format!("the language model's config: {e}"))
        })?;
        let names = WeightNames {
            prefix: layout.llm_prefix().to_string(),
            lm_head: layout.lm_head().to_string(),
        };
        let mopts = evomerge_mistral::LoadOptions {
            device: opts.device.clone(),
            dtype: opts.dtype,
            names,
            ..Default::default()
        };
        let llm = Mistral::load(&text, &CheckpointSource(ckpt), &mopts).map_err(|e| {
            VisionError::UnsupportedModel(format!("loading the language model: {e}"))
        })?;
        let weights = Weights::from_checkpoint(ckpt, opts.device.clone(), llm.dtype());
        let mode = match (&opts.mode, &config.native_mode) {
            (ModeChoice::Native, native) => native.clone(),
            (ModeChoice::Single, _) => ImageMode::Single,
            (ModeChoice::AnyRes, ImageMode::AnyRes { grid_pinpoints }) => {
                ImageMode::AnyRes { grid_pinpoints: grid_pinpoints.clone() }
            }
            (ModeChoice::AnyRes, ImageMode::Single) => {
                return Err(VisionError::UnsupportedModel(
                    "anyres mode needs a LLaVA-NeXT model (grid pinpoints and an image_newline); this one is single-tile"
                        .into(),
                ))
            }
        };
        let mut spec = config.encoder.clone();
        spec.has_newline = matches!(mode, ImageMode::AnyRes { .. });
        let encoder = ImageEncoder::load(&weights, layout, &spec)?;
        let mut processor = config.processor.clone();
        processor.alpha = opts.alpha;
        if mode == ImageMode::Single && config.flavor == Flavor::LlavaNext {
            // transformers' LlavaForConditionalGeneration path: the plain CLIP processor, no batch padding.
            processor.pad_to_square = false;
        }
        Ok(LlavaModel {
            config,
            layout,
            encoder,
            llm,
            mode,
            processor,
        })
    }

    pub fn config(&self) -> &LlavaConfig {
        &self.config
    }

    pub fn layout(&self) -> WeightLayout {
        self.layout
    }

    pub fn mode(&self) -> &ImageMode {
        &self.mode
    }

    pub fn processor(&self) -> &ProcessorConfig {
        &self.processor
    }

    pub fn encoder(&self) -> &ImageEncoder {
        &self.encoder
    }

    /// The language model (merge candidates write their weights into it in place with
    /// [`Mistral::write_f32`] through [`LlavaModel::llm_mut`]).
    pub fn llm(&self) -> &Mistral {
        &self.llm
    }

    pub fn llm_mut(&mut self) -> &mut Mistral {
        &mut self.llm
    }

    /// The `<image>` token id, if the model's vocabulary has one.
    pub fn image_token_id(&self) -> Option<u32> {
        self.config.image_token_id
    }

    /// Reads an image file with this model's alpha handling.
    pub fn read_image(&self, path: &Path) -> Result<RgbImage> {
        load_image(path, self.processor.alpha)
    }

    /// The processor's pixels for an image.
    pub fn preprocess(&self, image: &RgbImage) -> PixelValues {
        preprocess(image, &self.processor, &self.mode)
    }

    /// The image's feature sequence `[features, hidden]`.
    pub fn image_features(&self, pixels: &PixelValues) -> Result<Tensor> {
        self.encoder.encode(pixels, &self.mode)
    }

    /// Preprocessing, vision tower and projector in one: the projected features `[features, hidden]`
    /// that replace the image's `<image>` token. They depend only on the frozen half of the model and the
    /// image mode, never on the language model, so a caller that changes the language model (a merge
    /// search) can compute them once per image and pass them to
    /// [`LlavaModel::prompt_input_from_features`] / [`LlavaModel::generate_with_features`].
    pub fn features_of(&self, image: &RgbImage) -> Result<Tensor> {
        self.image_features(&self.preprocess(image))
    }

    /// The prompt's input embeddings `[len, hidden]` with `features` in place of the image, and the token
    /// ids the sequence stands for (the image as repeated `<image>` ids, as transformers' input_ids have it).
    pub fn prompt_embeds(
        &self,
        prompt: &ImagePrompt,
        features: &Tensor,
    ) -> Result<(Tensor, Vec<u32>)> {
        let device = self.llm.device();
        let (n, hidden) = features.dims2()?;
        if hidden != self.llm.config().hidden_size {
            return Err(VisionError::FeatureMismatch {
                features: n,
                reason: format!(
                    "width {hidden}, the language model's hidden size is {}",
                    self.llm.config().hidden_size
                ),
            });
        }
        let embed = |ids: &[u32]| -> Result<Option<Tensor>> {
            if ids.is_empty() {
                return Ok(None);
            }
            // Checked on the host, where the ids are: no readback from the device.
            let e = self.llm.embed_ids(ids).map_err(|e| VisionError::Tokenizer(e.to_string()))?;
            Ok(Some(e))
        };
        let mut parts = Vec::with_capacity(3);
        if let Some(b) = embed(&prompt.before)? {
            parts.push(b);
        }
        parts.push(features.to_dtype(self.llm.dtype())?.to_device(device)?);
        if let Some(a) = embed(&prompt.after)? {
            parts.push(a);
        }
        let embeds = Tensor::cat(&parts, 0)?;
        let mut context = prompt.before.clone();
        if let Some(id) = self.config.image_token_id {
            context.extend(std::iter::repeat_n(id, n));
        }
        context.extend_from_slice(&prompt.after);
        Ok((embeds, context))
    }

    /// Logits `[len, vocab]` (f32) of every position of `prompt` with the image's pixels spliced in.
    pub fn logits(&self, prompt: &ImagePrompt, pixels: &PixelValues) -> Result<Tensor> {
        let features = self.image_features(pixels)?;
        let (embeds, _) = self.prompt_embeds(prompt, &features)?;
        let len = embeds.dim(0)?;
        let mut cache = self.llm.new_cache(1);
        let positions = evomerge_mistral::sequential_positions(1, len, 0, self.llm.device())
            .map_err(|e| VisionError::Tokenizer(e.to_string()))?;
        let logits = self
            .llm
            .forward_embeds(&embeds.unsqueeze(0)?, &positions, None, &mut cache)
            .map_err(|e| VisionError::UnsupportedModel(format!("language model forward: {e}")))?;
        Ok(logits.squeeze(0)?)
    }

    /// A generation prompt for one (image, question) pair.
    pub fn prompt_input(&self, prompt: &ImagePrompt, image: &RgbImage) -> Result<PromptInput> {
        self.prompt_input_from_features(prompt, &self.features_of(image)?)
    }

    /// A generation prompt for one question about an image whose features were computed earlier with
    /// [`LlavaModel::features_of`]. The text around the image is embedded now, with the language model
    /// as it is at this moment.
    pub fn prompt_input_from_features(
        &self,
        prompt: &ImagePrompt,
        features: &Tensor,
    ) -> Result<PromptInput> {
        let (embeds, context_ids) = self.prompt_embeds(prompt, features)?;
        Ok(PromptInput::Embeds {
            embeds,
            context_ids,
        })
    }

    /// Answers many (prompt, image) pairs, `batch_size` at a time (left-padded batches, as the generation
    /// crate does them). Completions come back in input order.
    pub fn generate(
        &self,
        items: &[(ImagePrompt, RgbImage)],
        config: &GenerationConfig,
        decoder: Option<&dyn TokenDecoder>,
        batch_size: usize,
    ) -> std::result::Result<Vec<Completion>, GenerateError> {
        self.generate_batched(items, |(p, img)| self.prompt_input(p, img), config, decoder, batch_size)
    }

    /// [`LlavaModel::generate`] for (prompt, image features) pairs, the features from
    /// [`LlavaModel::features_of`]: the vision tower does not run. Same batching, same completions.
    pub fn generate_with_features(
        &self,
        items: &[(ImagePrompt, Tensor)],
        config: &GenerationConfig,
        decoder: Option<&dyn TokenDecoder>,
        batch_size: usize,
    ) -> std::result::Result<Vec<Completion>, GenerateError> {
        self.generate_batched(items, |(p, features)| self.prompt_input_from_features(p, features), config, decoder, batch_size)
    }

    /// The batching both `generate` calls share: `batch_size` items become prompt inputs, then
    /// one left-padded generation batch.
    fn generate_batched<T>(
        &self,
        items: &[T],
        prompt_input: impl Fn(&T) -> Result<PromptInput>,
        config: &GenerationConfig,
        decoder: Option<&dyn TokenDecoder>,
        batch_size: usize,
    ) -> std::result::Result<Vec<Completion>, GenerateError> {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(batch_size.max(1)) {
            let prompts = chunk.iter().map(&prompt_input).collect::<Result<Vec<_>>>()?;
            out.extend(generate(&self.llm, &prompts, config, decoder)?);
        }
        Ok(out)
    }
}

/// Errors of [`LlavaModel::generate`].
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Vision(#[from] VisionError),
    #[error(transparent)]
    Generation(#[from] GenerationError),
}

