//! Typed, validated configuration of a LLaVA model's frozen half: the CLIP tower, the feature selection,
//! the projector, the image mode and the image processor. Read from a llava-hf `config.json`
//! (`model_type` `llava` / `llava_next`) or from an original liuhaotian/LLaVA one (`mm_vision_tower`,
//! `mm_projector_type`, `image_aspect_ratio`, ...).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Result, VisionError};
use crate::image_io::AlphaMode;

/// OpenAI CLIP's normalisation constants (what every LLaVA processor uses).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// Activation functions the tower and projector may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)` (CLIP's).
    QuickGelu,
    /// The exact, erf-based GELU (`nn.GELU()`, transformers' `gelu`).
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
}

impl Activation {
    pub fn parse(field: &str, name: &str) -> Result<Activation> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            other => Err(VisionError::config(
                field,
                format!("activation `{other}` is not supported (quick_gelu, gelu, gelu_new, gelu_pytorch_tanh)"),
            )),
        }
    }
}

/// The CLIP vision transformer's hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl VisionConfig {
    /// OpenAI's CLIP ViT-L/14 at 336 px, the tower of every LLaVA-1.5/1.6 model (and llava-hf's default
    /// when a config has no `vision_config`).
    pub fn clip_vit_large_336() -> VisionConfig {
        VisionConfig {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            image_size: 336,
            patch_size: 14,
            num_channels: 3,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }

    /// Parses a `clip_vision_model` config object; absent fields take `CLIPVisionConfig`'s defaults (as
    /// transformers fills them when it wrote only the differences).
    pub fn from_json(v: &Value) -> Result<VisionConfig> {
        // A full CLIP config nests the tower under `vision_config`.
        let v = v
            .get("vision_config")
            .filter(|inner| inner.is_object())
            .unwrap_or(v);
        let cfg = VisionConfig {
            hidden_size: usize_or(v, "hidden_size", 768)?,
            intermediate_size: usize_or(v, "intermediate_size", 3072)?,
            num_hidden_layers: usize_or(v, "num_hidden_layers", 12)?,
            num_attention_heads: usize_or(v, "num_attention_heads", 12)?,
            image_size: usize_or(v, "image_size", 224)?,
            patch_size: usize_or(v, "patch_size", 32)?,
            num_channels: usize_or(v, "num_channels", 3)?,
            hidden_act: Activation::parse(
                "vision_config.hidden_act",
                v.get("hidden_act")
                    .and_then(Value::as_str)
                    .unwrap_or("quick_gelu"),
            )?,
            layer_norm_eps: v
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-5),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| {
            Err(VisionError::config(
                format!("vision_config.{field}"),
                reason,
            ))
        };
        if self.hidden_size == 0
            || self.num_attention_heads == 0
            || self.hidden_size % self.num_attention_heads != 0
        {
            return bad(
                "num_attention_heads",
                format!(
                    "{} heads do not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            );
        }
        if self.patch_size == 0 || self.image_size == 0 || self.image_size % self.patch_size != 0 {
            return bad(
                "patch_size",
                format!(
                    "{} does not divide image_size {}",
                    self.patch_size, self.image_size
                ),
            );
        }
        if self.num_channels != 3 {
            return bad(
                "num_channels",
                format!("{} (only RGB towers are supported)", self.num_channels),
            );
        }
        if self.num_hidden_layers == 0 {
            return bad("num_hidden_layers", "must be at least 1".into());
        }
        Ok(())
    }

    /// Patches per side of one tile.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Which tokens of the selected hidden states become image features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureSelect {
    /// Drop the CLS token (`default`, the original's `patch`).
    Patches,
    /// Keep it (`full`, the original's `cls_patch`).
    Full,
}

/// How an image becomes tiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageMode {
    /// One tile (LLaVA-1.5; also how the paper evaluated LLaVA-1.6 and EvoVLM-JP).
    Single,
    /// LLaVA-NeXT anyres: the global image plus the tiles of the best grid resolution; pinpoints are
    /// `(height, width)`.
    AnyRes { grid_pinpoints: Vec<(u32, u32)> },
}

/// Target of the processor's resize step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTarget {
    ShortestEdge(u32),
    Exact { height: u32, width: u32 },
}

/// The image processor's settings (`preprocessor_config.json`, or `processor_config.json`'s
/// `image_processor` section as transformers 5 writes it).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorConfig {
    pub do_resize: bool,
    pub size: ResizeTarget,
    pub do_center_crop: bool,
    /// `(height, width)`.
    pub crop_size: (u32, u32),
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// LLaVA-1.5's pad-to-square with the mean colour before resizing (`LlavaImageProcessor.do_pad`,
    /// the original's `image_aspect_ratio: pad`). LLaVA-NeXT's `do_pad` is batch padding and does not set it.
    pub pad_to_square: bool,
    /// The processor's anyres pinpoints `(height, width)`, if it has any.
    pub image_grid_pinpoints: Option<Vec<(u32, u32)>>,
    pub alpha: AlphaMode,
}

impl ProcessorConfig {
    /// The CLIP processor for a tower of `image_size` pixels (what original LLaVA checkpoints use).
    pub fn clip(image_size: u32) -> ProcessorConfig {
        ProcessorConfig {
            do_resize: true,
            size: ResizeTarget::ShortestEdge(image_size),
            do_center_crop: true,
            crop_size: (image_size, image_size),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            pad_to_square: false,
            image_grid_pinpoints: None,
            alpha: AlphaMode::default(),
        }
    }

    /// Reads the processor settings of a model directory: `preprocessor_config.json`, else the
    /// `image_processor` section of `processor_config.json`. `Ok(None)` when neither file exists.
    pub fn from_dir(dir: &Path) -> Result<Option<ProcessorConfig>> {
        let pre = dir.join("preprocessor_config.json");
        if pre.is_file() {
            return ProcessorConfig::from_json(&read_json(&pre)?).map(Some);
        }
        let proc = dir.join("processor_config.json");
        if proc.is_file() {
            let v = read_json(&proc)?;
            if let Some(ip) = v.get("image_processor") {
                return ProcessorConfig::from_json(ip).map(Some);
            }
        }
        Ok(None)
    }

    /// Parses an image processor config object (defaults are CLIPImageProcessor's).
    pub fn from_json(v: &Value) -> Result<ProcessorConfig> {
        let kind = v
            .get("image_processor_type")
            .and_then(Value::as_str)
            .unwrap_or("CLIPImageProcessor");
        let kind = kind.trim_end_matches("Fast").trim_end_matches("Pil");
        let size = match v.get("size") {
            None => ResizeTarget::ShortestEdge(224),
            Some(Value::Number(n)) => ResizeTarget::ShortestEdge(positive_u32("size", n.as_u64())?),
            Some(s) => {
                if let Some(e) = s.get("shortest_edge") {
                    ResizeTarget::ShortestEdge(positive_u32("size.shortest_edge", e.as_u64())?)
                } else {
                    ResizeTarget::Exact {
                        height: positive_u32(
                            "size.height",
                            s.get("height").and_then(Value::as_u64),
                        )?,
                        width: positive_u32("size.width", s.get("width").and_then(Value::as_u64))?,
                    }
                }
            }
        };
        let crop_size = match v.get("crop_size") {
            None => (224, 224),
            Some(Value::Number(n)) => {
                let c = positive_u32("crop_size", n.as_u64())?;
                (c, c)
            }
            Some(c) => (
                positive_u32("crop_size.height", c.get("height").and_then(Value::as_u64))?,
                positive_u32("crop_size.width", c.get("width").and_then(Value::as_u64))?,
            ),
        };
        let resample = v.get("resample").and_then(Value::as_u64).unwrap_or(3);
        if resample != 3 {
            return Err(VisionError::config(
                "resample",
                format!("{resample}: only bicubic (3), what every CLIP/LLaVA processor uses, is implemented"),
            ));
        }
        let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Array(a)) if a.len() == 3 => {
                    let mut out = [0f32; 3];
                    for (o, x) in out.iter_mut().zip(a) {
                        *o = x
                            .as_f64()
                            .ok_or_else(|| VisionError::config(key, "not a number"))?
                            as f32;
                    }
                    Ok(out)
                }
                Some(Value::Number(n)) => Ok([n.as_f64().unwrap_or(0.0) as f32; 3]),
                Some(other) => Err(VisionError::config(
                    key,
                    format!("expected 3 numbers, got {other}"),
                )),
            }
        };
        let image_std = triple("image_std", CLIP_STD)?;
        if image_std.iter().any(|s| *s == 0.0) {
            return Err(VisionError::config(
                "image_std",
                "a standard deviation of 0",
            ));
        }
        let pinpoints = v
            .get("image_grid_pinpoints")
            .map(|p| parse_pinpoints("image_grid_pinpoints", p))
            .transpose()?;
        let do_pad = bool_or(v, "do_pad", false);
        Ok(ProcessorConfig {
            do_resize: bool_or(v, "do_resize", true),
            size,
            do_center_crop: bool_or(v, "do_center_crop", true),
            crop_size,
            do_rescale: bool_or(v, "do_rescale", true),
            rescale_factor: v
                .get("rescale_factor")
                .and_then(Value::as_f64)
                .unwrap_or(1.0 / 255.0),
            do_normalize: bool_or(v, "do_normalize", true),
            image_mean: triple("image_mean", CLIP_MEAN)?,
            image_std,
            pad_to_square: do_pad && kind == "LlavaImageProcessor",
            image_grid_pinpoints: pinpoints,
            alpha: AlphaMode::default(),
        })
    }
}

/// Parses `image_grid_pinpoints`: a list of `[height, width]` pairs.
pub fn parse_pinpoints(field: &str, v: &Value) -> Result<Vec<(u32, u32)>> {
    let list = v
        .as_array()
        .ok_or_else(|| VisionError::config(field, "expected a list of [height, width] pairs"))?;
    let mut out = Vec::with_capacity(list.len());
    for pair in list {
        match pair
            .as_array()
            .map(|p| p.iter().map(Value::as_u64).collect::<Vec<_>>())
        {
            Some(p)
                if p.len() == 2
                    && p.iter()
                        .all(|x| matches!(x, Some(n) if *n > 0 && *n <= u32::MAX as u64)) =>
            {
                out.push((p[0].unwrap_or(0) as u32, p[1].unwrap_or(0) as u32))
            }
            _ => {
                return Err(VisionError::config(
                    field,
                    format!("{pair} is not a [height, width] pair"),
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(VisionError::config(field, "the list is empty"));
    }
    Ok(out)
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| VisionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| VisionError::Json {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn usize_or(v: &Value, key: &str, default: usize) -> Result<usize> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x.as_u64().map(|n| n as usize).ok_or_else(|| {
            VisionError::config(key, format!("expected a non-negative integer, got {x}"))
        }),
    }
}

fn positive_u32(field: &str, v: Option<u64>) -> Result<u32> {
    match v {
        Some(n) if n > 0 && n <= 1 << 16 => Ok(n as u32),
        _ => Err(VisionError::config(
            field,
            "expected a positive pixel count",
        )),
    }
}

fn bool_or(v: &Value, key: &str, default: bool) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(default)
}

/// Resolves a path named in a config relative to the model directory (absolute paths stay).
pub(crate) fn resolve_local(model_dir: &Path, name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    let candidate = if p.is_absolute() {
        p.to_path_buf()
    } else {
        model_dir.join(p)
    };
    candidate.is_dir().then_some(candidate)
}
