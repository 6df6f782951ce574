//! Reading a LLaVA checkpoint's configuration in any of its dialects into one validated [`LlavaConfig`].

use std::path::Path;

use serde_json::Value;

use crate::config::{
    parse_pinpoints, read_json, resolve_local, usize_or, Activation, FeatureSelect, ImageMode,
    ProcessorConfig, VisionConfig,
};
use crate::encoder::{EncoderSpec, ProjectorSpec};
use crate::error::{Result, VisionError};

/// Where the configuration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// llava-hf `model_type: llava` (LLaVA-1.5; also EvoVLM-JP-v1-7B).
    Llava,
    /// llava-hf `model_type: llava_next` (LLaVA-1.6).
    LlavaNext,
    /// The original liuhaotian/LLaVA repository's config (`llava_mistral`, `llava_llama`, ...).
    Original,
}

/// LLaVA-NeXT's default pinpoints, `(height, width)`.
pub const DEFAULT_PINPOINTS: [(u32, u32); 5] =
    [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)];

/// A LLaVA model's configuration: the frozen encoder, the image mode it was trained with, the processor,
/// the `<image>` token and the language model's own config.
#[derive(Debug, Clone, PartialEq)]
pub struct LlavaConfig {
    pub flavor: Flavor,
    pub encoder: EncoderSpec,
    /// The mode the model was trained with (anyres for LLaVA-NeXT, single tile otherwise).
    pub native_mode: ImageMode,
    pub processor: ProcessorConfig,
    /// The token id that marks the image in the prompt (`image_token_index`). Original checkpoints have
    /// none in their vocabulary: the prompt is split on the `<image>` text instead.
    pub image_token_id: Option<u32>,
    /// The language model's config object (for `evomerge_mistral::Config::from_json`).
    pub text_config: Value,
}

impl LlavaConfig {
    /// The language model's hidden size: the width the projector maps image features to.
    pub fn text_hidden_size(&self) -> Result<usize> {
        self.text_config
            .get("hidden_size")
            .and_then(Value::as_u64)
            .filter(|n| *n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| {
                VisionError::config(
                    "text_config.hidden_size",
                    "missing or not a positive integer",
                )
            })
    }

    /// Parses `config` (the model's `config.json`) and the processor files of `dir`.
    pub fn from_json(config: &Value, dir: &Path) -> Result<LlavaConfig> {
        let model_type = config
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let is_original =
            config.get("mm_vision_tower").is_some() || config.get("mm_projector_type").is_some();
        if is_original {
            return original(config, dir);
        }
        match model_type {
            "llava" => hf(config, dir, Flavor::Llava),
            "llava_next" => hf(config, dir, Flavor::LlavaNext),
            "" => Err(VisionError::config("model_type", "missing from config.json")),
            other => Err(VisionError::UnsupportedModel(format!(
                "model_type `{other}` is not a LLaVA model this crate runs (llava, llava_next, or an original \
                 LLaVA config with mm_vision_tower)"
            ))),
        }
    }
}

fn feature_layers(v: Option<&Value>, field: &str) -> Result<Vec<isize>> {
    match v {
        None | Some(Value::Null) => Ok(vec![-2]),
        Some(Value::Number(n)) => Ok(vec![n
            .as_i64()
            .ok_or_else(|| VisionError::config(field, "not an integer"))?
            as isize]),
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|x| {
                x.as_i64()
                    .map(|i| i as isize)
                    .ok_or_else(|| VisionError::config(field, "not an integer"))
            })
            .collect(),
        Some(other) => Err(VisionError::config(
            field,
            format!("expected an integer or a list, got {other}"),
        )),
    }
}

fn token_id(config: &Value) -> Result<Option<u32>> {
    match config
        .get("image_token_index")
        .or_else(|| config.get("image_token_id"))
    {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(id) if id <= u64::from(u32::MAX) => Ok(Some(id as u32)),
            _ => Err(VisionError::config(
                "image_token_index",
                format!("{v} is not a token id"),
            )),
        },
    }
}

fn hf(config: &Value, dir: &Path, flavor: Flavor) -> Result<LlavaConfig> {
    let vision = match config.get("vision_config") {
        Some(v) if v.is_object() => {
            let mt = v
                .get("model_type")
                .and_then(Value::as_str)
                .unwrap_or("clip_vision_model");
            if mt != "clip_vision_model" {
                return Err(VisionError::UnsupportedModel(format!(
                    "vision tower `{mt}` is not supported (only CLIP: clip_vision_model)"
                )));
            }
            VisionConfig::from_json(v)?
        }
        _ => VisionConfig::clip_vit_large_336(),
    };
    let select = match config
        .get("vision_feature_select_strategy")
        .and_then(Value::as_str)
        .unwrap_or("default")
    {
        "default" => FeatureSelect::Patches,
        "full" => FeatureSelect::Full,
        other => {
            return Err(VisionError::config(
                "vision_feature_select_strategy",
                format!("`{other}` (expected default or full)"),
            ))
        }
    };
    let act = Activation::parse(
        "projector_hidden_act",
        config
            .get("projector_hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu"),
    )?;
    let bias = config
        .get("multimodal_projector_bias")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let native_mode = match flavor {
        Flavor::LlavaNext => ImageMode::AnyRes {
            grid_pinpoints: match config.get("image_grid_pinpoints") {
                Some(p) if !p.is_null() => parse_pinpoints("image_grid_pinpoints", p)?,
                _ => DEFAULT_PINPOINTS.to_vec(),
            },
        },
        _ => ImageMode::Single,
    };
    let processor = ProcessorConfig::from_dir(dir)?
        .unwrap_or_else(|| ProcessorConfig::clip(vision.image_size as u32));
    check_processor(&processor, &native_mode);
    let mut text_config = config
        .get("text_config")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(obj) = text_config.as_object_mut() {
        obj.entry("model_type")
            .or_insert_with(|| Value::from("llama"));
        fill_text_defaults(obj);
    }
    Ok(LlavaConfig {
        flavor,
        encoder: EncoderSpec {
            vision,
            feature_layers: feature_layers(
                config.get("vision_feature_layer"),
                "vision_feature_layer",
            )?,
            select,
            projector: ProjectorSpec {
                layers: 2,
                act,
                bias,
            },
            has_newline: flavor == Flavor::LlavaNext,
        },
        native_mode,
        processor,
        image_token_id: token_id(config)?.or(Some(32000)),
        text_config,
    })
}

/// Fills the shape fields a llava-hf `text_config` leaves out with the defaults of transformers' config class for its
/// model type, as transformers does when it builds the config. llava-hf's llava-v1.6-mistral-7b-hf lists only the
/// fields that differ from `MistralConfig`: no hidden size, layer count or head counts.
fn fill_text_defaults(text: &mut serde_json::Map<String, Value>) {
    let defaults: &[(&str, u64)] = match text.get("model_type").and_then(Value::as_str) {
        Some("mistral") => &[
            ("vocab_size", 32000),
            ("hidden_size", 4096),
            ("intermediate_size", 14336),
            ("num_hidden_layers", 32),
            ("num_attention_heads", 32),
            ("num_key_value_heads", 8),
            ("max_position_embeddings", 4096 * 32),
        ],
        // LlamaConfig's num_key_value_heads defaults to the head count, as evomerge_mistral::Config does.
        Some("llama") => &[
            ("vocab_size", 32000),
            ("hidden_size", 4096),
            ("intermediate_size", 11008),
            ("num_hidden_layers", 32),
            ("num_attention_heads", 32),
            ("max_position_embeddings", 2048),
        ],
        _ => return,
    };
    for (field, value) in defaults {
        text.entry(*field).or_insert_with(|| Value::from(*value));
    }
}

fn check_processor(processor: &ProcessorConfig, mode: &ImageMode) {
    if let (ImageMode::AnyRes { grid_pinpoints }, Some(p)) = (mode, &processor.image_grid_pinpoints)
    {
        if p != grid_pinpoints {
            tracing::warn!(
                "the processor's image_grid_pinpoints differ from the model's; using the model's {grid_pinpoints:?}"
            );
        }
    }
}

/// Known towers by hub id, for original checkpoints whose config only names the tower.
fn known_tower(name: &str) -> Option<VisionConfig> {
    let lower = name.to_ascii_lowercase();
    if lower.contains("clip-vit-large-patch14-336") {
        Some(VisionConfig::clip_vit_large_336())
    } else if lower.contains("clip-vit-large-patch14") {
        Some(VisionConfig {
            image_size: 224,
            ..VisionConfig::clip_vit_large_336()
        })
    } else {
        None
    }
}

fn original(config: &Value, dir: &Path) -> Result<LlavaConfig> {
    let tower_name = config
        .get("mm_vision_tower")
        .and_then(Value::as_str)
        .unwrap_or("");
    let tower_dir = resolve_local(dir, tower_name);
    let vision = match &tower_dir {
        Some(d) if d.join("config.json").is_file() => VisionConfig::from_json(&read_json(&d.join("config.json"))?)?,
        _ => known_tower(tower_name).ok_or_else(|| {
            VisionError::UnsupportedModel(format!(
                "mm_vision_tower `{tower_name}` is neither a local folder with a CLIP config.json nor a known \
                 tower (openai/clip-vit-large-patch14[-336])"
            ))
        })?,
    };
    if let Some(hidden) = config.get("mm_hidden_size").and_then(Value::as_u64) {
        if hidden as usize != vision.hidden_size {
            return Err(VisionError::config(
                "mm_hidden_size",
                format!(
                    "{hidden} but the tower's hidden size is {}",
                    vision.hidden_size
                ),
            ));
        }
    }
    let select = match config
        .get("mm_vision_select_feature")
        .and_then(Value::as_str)
        .unwrap_or("patch")
    {
        "patch" => FeatureSelect::Patches,
        "cls_patch" => FeatureSelect::Full,
        other => {
            return Err(VisionError::config(
                "mm_vision_select_feature",
                format!("`{other}` (patch or cls_patch)"),
            ))
        }
    };
    let projector_type = config
        .get("mm_projector_type")
        .and_then(Value::as_str)
        .unwrap_or("linear");
    let layers = if projector_type == "linear" {
        1
    } else {
        projector_type
            .strip_prefix("mlp")
            .and_then(|r| r.strip_suffix("x_gelu"))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                VisionError::config(
                    "mm_projector_type",
                    format!("`{projector_type}` (linear or mlp<N>x_gelu)"),
                )
            })?
    };
    let aspect = config
        .get("image_aspect_ratio")
        .and_then(Value::as_str)
        .unwrap_or("square");
    let merge = config
        .get("mm_patch_merge_type")
        .and_then(Value::as_str)
        .unwrap_or("flat");
    let native_mode = match aspect {
        "anyres" => {
            if !merge.starts_with("spatial_unpad") {
                return Err(VisionError::UnsupportedModel(format!(
                    "anyres with mm_patch_merge_type `{merge}` is not supported (spatial_unpad is)"
                )));
            }
            // The original code lists pinpoints as (width, height); transformers reads the same list as
            // (height, width). They agree on LLaVA-1.6's symmetric list; we keep the original's meaning.
            let pins = match config.get("image_grid_pinpoints") {
                Some(p) if !p.is_null() => parse_pinpoints("image_grid_pinpoints", p)?,
                _ => DEFAULT_PINPOINTS.to_vec(),
            };
            ImageMode::AnyRes {
                grid_pinpoints: pins.into_iter().map(|(w, h)| (h, w)).collect(),
            }
        }
        "pad" | "square" | "" => ImageMode::Single,
        other => {
            return Err(VisionError::UnsupportedModel(format!(
                "image_aspect_ratio `{other}` is not supported"
            )))
        }
    };
    let mut processor = match ProcessorConfig::from_dir(dir)? {
        Some(p) => p,
        None => match tower_dir
            .as_deref()
            .map(ProcessorConfig::from_dir)
            .transpose()?
            .flatten()
        {
            Some(p) => p,
            None => ProcessorConfig::clip(vision.image_size as u32),
        },
    };
    processor.pad_to_square = aspect == "pad";
    let mut text_config = config.clone();
    if let Some(obj) = text_config.as_object_mut() {
        let mt = config
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let llm = if mt.contains("llama") {
            "llama"
        } else {
            "mistral"
        };
        obj.insert("model_type".into(), Value::from(llm));
    }
    let layer = config.get("mm_vision_select_layer").cloned();
    let image_token_id = token_id(config)?;
    let _ = usize_or(config, "mm_hidden_size", 0)?;
    Ok(LlavaConfig {
        flavor: Flavor::Original,
        encoder: EncoderSpec {
            vision,
            feature_layers: feature_layers(layer.as_ref(), "mm_vision_select_layer")?,
            select,
            projector: ProjectorSpec {
                layers,
                act: Activation::Gelu,
                bias: true,
            },
            has_newline: matches!(native_mode, ImageMode::AnyRes { .. }),
        },
        native_mode,
        processor,
        image_token_id,
        text_config,
    })
}
