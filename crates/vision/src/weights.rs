//! Where a LLaVA checkpoint keeps each part. Three layouts exist in the wild:
//!
//! | part | llava-hf (transformers < 4.52, and what 5.23's `save_pretrained` writes) | transformers ≥ 4.52 in memory / some re-uploads | original liuhaotian/LLaVA |
//! |---|---|---|---|
//! | CLIP tower | `vision_tower.[vision_model.]*` | `model.vision_tower.[vision_model.]*` | `model.vision_tower.vision_tower.vision_model.*` |
//! | projector | `multi_modal_projector.linear_{1,2}.*` | `model.multi_modal_projector.linear_{1,2}.*` | `model.mm_projector.{0,2,…}.*` |
//! | newline | `image_newline` | `model.image_newline` | `model.image_newline` |
//! | LLM | `language_model.model.*`, `language_model.lm_head.weight` | `model.language_model.*`, `lm_head.weight` | `model.*`, `lm_head.weight` |
//!
//! [`WeightLayout::detect`] tells them apart from the tensor names; [`Weights`] reads tensors to candle
//! with shape checks, from a checkpoint or from tensors already in memory.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use evomerge_checkpoint::Checkpoint;

use crate::error::{Result, VisionError};

/// The naming scheme of a LLaVA checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `vision_tower.*`, `multi_modal_projector.*`, `language_model.model.*`, `image_newline`.
    HfLegacy,
    /// `model.vision_tower.*`, `model.multi_modal_projector.*`, `model.language_model.*`, `lm_head.*`.
    HfModern,
    /// liuhaotian/LLaVA: `model.vision_tower.vision_tower.*`, `model.mm_projector.*`, LLM under `model.*`.
    Original,
}

impl WeightLayout {
    /// Recognises the layout from the tensor names.
    pub fn detect(ckpt: &Checkpoint) -> Result<WeightLayout> {
        let names = ckpt.tensor_names();
        let any = |prefix: &str| names.iter().any(|n| n.starts_with(prefix));
        if any("model.vision_tower.vision_tower.") || any("model.mm_projector.") {
            Ok(WeightLayout::Original)
        } else if any("model.multi_modal_projector.") || any("model.vision_tower.") {
            Ok(WeightLayout::HfModern)
        } else if any("multi_modal_projector.") || any("vision_tower.") {
            Ok(WeightLayout::HfLegacy)
        } else {
            Err(VisionError::UnsupportedModel(format!(
                "{} has no vision tower or projector tensors (looked for `vision_tower.*`, `model.vision_tower.*`, \
                 `multi_modal_projector.*`, `model.mm_projector.*`): is it a plain LLM rather than a LLaVA model?",
                ckpt.label()
            )))
        }
    }

    /// The prefix of the CLIP tower's tensors, including `vision_model.` when the weights have it.
    pub fn vision_prefix(self, weights: &Weights) -> String {
        let with_model = format!("{}vision_model.", self.vision_base());
        if weights.any_name_starts_with(&with_model) {
            with_model
        } else {
            self.vision_base().to_string()
        }
    }

    /// The prefix of the CLIP tower's tensors without the optional `vision_model.`.
    fn vision_base(self) -> &'static str {
        match self {
            WeightLayout::HfLegacy => "vision_tower.",
            WeightLayout::HfModern => "model.vision_tower.",
            WeightLayout::Original => "model.vision_tower.vision_tower.",
        }
    }

    /// The name of projector layer `index` (0-based among the linear layers) and `suffix` (`weight`/`bias`).
    pub fn projector_tensor(self, index: usize, suffix: &str) -> String {
        match self {
            WeightLayout::HfLegacy => {
                format!("multi_modal_projector.linear_{}.{suffix}", index + 1)
            }
            WeightLayout::HfModern => {
                format!("model.multi_modal_projector.linear_{}.{suffix}", index + 1)
            }
            // nn.Sequential(Linear, GELU, Linear, ...): the linear layers sit at even indices.
            WeightLayout::Original => format!("model.mm_projector.{}.{suffix}", index * 2),
        }
    }

    /// The name of the learned row separator of LLaVA-NeXT's feature grid.
    pub fn image_newline(self) -> &'static str {
        match self {
            WeightLayout::HfLegacy => "image_newline",
            WeightLayout::HfModern | WeightLayout::Original => "model.image_newline",
        }
    }

    /// The prefix that replaces `model.` in the LLM's tensor names (`model.layers.0...` becomes
    /// `<prefix>layers.0...`).
    pub fn llm_prefix(self) -> &'static str {
        match self {
            WeightLayout::HfLegacy => "language_model.model.",
            WeightLayout::HfModern => "model.language_model.",
            WeightLayout::Original => "model.",
        }
    }

    /// The name of the LM head.
    pub fn lm_head(self) -> &'static str {
        match self {
            WeightLayout::HfLegacy => "language_model.lm_head.weight",
            WeightLayout::HfModern | WeightLayout::Original => "lm_head.weight",
        }
    }

    /// Maps a LLaVA tensor name to the plain-LLM name it corresponds to (`model.layers.3.mlp...`,
    /// `lm_head.weight`), or `None` for tensors of the frozen part (tower, projector, newline).
    pub fn to_llm_name(self, name: &str) -> Option<String> {
        if name == self.lm_head() {
            return Some("lm_head.weight".to_string());
        }
        if self.is_frozen(name) {
            return None;
        }
        name.strip_prefix(self.llm_prefix())
            .map(|rest| format!("model.{rest}"))
    }

    /// Maps a plain-LLM tensor name (`model.*`, `lm_head.weight`) to this layout's name.
    pub fn from_llm_name(self, name: &str) -> Option<String> {
        if name == "lm_head.weight" {
            return Some(self.lm_head().to_string());
        }
        name.strip_prefix("model.")
            .map(|rest| format!("{}{rest}", self.llm_prefix()))
    }

    /// Whether a tensor belongs to the frozen part: the tower, the projector or the image newline.
    pub fn is_frozen(self, name: &str) -> bool {
        match self {
            WeightLayout::HfLegacy => {
                name.starts_with("vision_tower.")
                    || name.starts_with("multi_modal_projector.")
                    || name == "image_newline"
            }
            WeightLayout::HfModern => {
                name.starts_with("model.vision_tower.")
                    || name.starts_with("model.multi_modal_projector.")
                    || name == "model.image_newline"
            }
            WeightLayout::Original => {
                name.starts_with("model.vision_tower.")
                    || name.starts_with("model.mm_projector.")
                    || name == "model.image_newline"
            }
        }
    }
}

/// Where [`Weights`] finds its tensors.
enum Store<'a> {
    Checkpoint(&'a Checkpoint),
    /// Tensors already on the reader's device, in its dtype (synthetic weights for benchmarks).
    Memory(&'a HashMap<String, Tensor>),
}

/// Reads tensors from a checkpoint (or from tensors in memory) into candle, checking shapes.
pub struct Weights<'a> {
    store: Store<'a>,
    pub device: Device,
    pub dtype: DType,
}

impl<'a> Weights<'a> {
    /// Reads `ckpt`'s tensors onto `device`, converted to `dtype`.
    pub fn from_checkpoint(ckpt: &'a Checkpoint, device: Device, dtype: DType) -> Weights<'a> {
        Weights {
            store: Store::Checkpoint(ckpt),
            device,
            dtype,
        }
    }

    /// Serves `tensors` by name (converted to `dtype` and moved to `device` if they are not already).
    pub fn from_tensors(
        tensors: &'a HashMap<String, Tensor>,
        device: Device,
        dtype: DType,
    ) -> Weights<'a> {
        Weights {
            store: Store::Memory(tensors),
            device,
            dtype,
        }
    }

    /// The tensor `name` with the expected `shape`, converted to this reader's dtype and device.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get_any(name)?;
        if t.dims() != shape {
            return Err(VisionError::ShapeMismatch {
                name: name.to_string(),
                expected: shape.to_vec(),
                actual: t.dims().to_vec(),
            });
        }
        Ok(t)
    }

    /// The tensor `name` whatever its shape.
    pub fn get_any(&self, name: &str) -> Result<Tensor> {
        let missing = || VisionError::MissingTensor {
            name: name.to_string(),
            hint: format!(
                "in {}; the checkpoint may be incomplete or of another architecture",
                self.label()
            ),
        };
        let tensor = match self.store {
            Store::Checkpoint(ckpt) => {
                if !ckpt.contains(name) {
                    return Err(missing());
                }
                let view = ckpt.tensor(name)?;
                let stored = crate::llava::candle_dtype(view.dtype);
                Tensor::from_raw_buffer(view.data, stored, view.shape, &self.device)?
            }
            Store::Memory(tensors) => tensors
                .get(name)
                .ok_or_else(missing)?
                .to_device(&self.device)?,
        };
        if tensor.dtype() == self.dtype {
            Ok(tensor)
        } else {
            Ok(tensor.to_dtype(self.dtype)?)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        match self.store {
            Store::Checkpoint(ckpt) => ckpt.contains(name),
            Store::Memory(tensors) => tensors.contains_key(name),
        }
    }

    /// Whether any tensor's name starts with `prefix`.
    pub fn any_name_starts_with(&self, prefix: &str) -> bool {
        match self.store {
            Store::Checkpoint(ckpt) => ckpt.tensor_names().iter().any(|n| n.starts_with(prefix)),
            Store::Memory(tensors) => tensors.keys().any(|n| n.starts_with(prefix)),
        }
    }

    /// What the weights are, for messages.
    fn label(&self) -> String {
        match self.store {
            Store::Checkpoint(ckpt) => ckpt.label().to_string(),
            Store::Memory(tensors) => format!("{} tensors in memory", tensors.len()),
        }
    }
}
