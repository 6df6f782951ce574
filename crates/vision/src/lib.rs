//! The frozen half of a LLaVA model — CLIP vision tower, projector and image preprocessing (LLaVA-1.5
//! single tile and LLaVA-NeXT anyres) — composed with the mergeable Mistral backbone.
//!
//! Everything matches transformers 5.23 with its PIL image processors: pixels are bit-identical to
//! Pillow's bicubic resampling, and the tower, projector and feature packing follow
//! `LlavaForConditionalGeneration` / `LlavaNextForConditionalGeneration`. Checkpoints load in the
//! llava-hf layouts (old and ≥ 4.52) and in the original liuhaotian/LLaVA layout.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use evomerge_vision::{ImagePrompt, LlavaModel, LoadOptions};
//! let model = LlavaModel::load("llava-hf/llava-v1.6-mistral-7b-hf", &LoadOptions::default())?;
//! let tokenizer = tokenizers::Tokenizer::from_file("tokenizer.json")?;
//! let prompt = ImagePrompt::from_text(&tokenizer, "[INST] <image>\nWhat is shown? [/INST]")?;
//! let image = model.read_image(std::path::Path::new("photo.jpg"))?;
//! let logits = model.logits(&prompt, &model.preprocess(&image))?; // [len, vocab]
//! # let _ = logits; Ok(()) }
//! ```

pub mod cli;
pub mod clip;
pub mod config;
pub mod encoder;
pub mod error;
pub mod image_io;
pub mod llava;
pub mod llava_config;
pub mod preprocess;
pub mod prompt;
pub mod resample;
pub mod weights;

pub use config::{
    Activation, FeatureSelect, ImageMode, ProcessorConfig, ResizeTarget, VisionConfig,
};
pub use encoder::{EncoderSpec, ImageEncoder, Projector, ProjectorSpec};
pub use error::{Result, VisionError};
pub use image_io::{decode_image, load_image, AlphaMode};
pub use llava::{GenerateError, LlavaModel, LoadOptions, ModeChoice};
pub use llava_config::{Flavor, LlavaConfig};
pub use preprocess::{preprocess, PixelValues};
pub use prompt::{ImagePrompt, IMAGE_MARKER};
pub use weights::WeightLayout;
