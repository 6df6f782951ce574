//! The frozen image encoder: CLIP tower → feature selection → projector, and for LLaVA-NeXT the packing
//! of the tiles' features into one sequence (unpadded to the image's aspect ratio, with `image_newline`
//! closing every row), exactly as transformers' `LlavaNextModel.pack_image_features` does.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;

use crate::clip::{activate, linear, resolve_layer_indices, select_features, ClipVisionTower};
use crate::config::{Activation, FeatureSelect, ImageMode, VisionConfig};
use crate::error::{Result, VisionError};
use crate::preprocess::{select_best_resolution, PixelValues};
use crate::weights::{WeightLayout, Weights};

/// The projector's architecture: `layers` linear layers with `act` between them (`mlp2x_gelu` is 2 + GELU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectorSpec {
    pub layers: usize,
    pub act: Activation,
    pub bias: bool,
}

/// The multi-modal projector: vision features → the LLM's embedding space.
pub struct Projector {
    layers: Vec<Linear>,
    act: Activation,
}

impl Projector {
    pub fn load(
        w: &Weights,
        layout: WeightLayout,
        spec: ProjectorSpec,
        in_dim: usize,
    ) -> Result<Projector> {
        if spec.layers == 0 {
            return Err(VisionError::config(
                "projector",
                "needs at least one linear layer",
            ));
        }
        let first = layout.projector_tensor(0, "weight");
        let out_dim = match w.get_any(&first)?.dims() {
            [out, inp] if *inp == in_dim => *out,
            dims => {
                return Err(VisionError::ShapeMismatch {
                    name: first,
                    expected: vec![0, in_dim],
                    actual: dims.to_vec(),
                })
            }
        };
        let mut layers = Vec::with_capacity(spec.layers);
        for i in 0..spec.layers {
            let name = layout.projector_tensor(i, "weight");
            let base = name.trim_end_matches(".weight");
            let inp = if i == 0 { in_dim } else { out_dim };
            layers.push(linear(w, base, out_dim, inp, spec.bias)?);
        }
        Ok(Projector {
            layers,
            act: spec.act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            if i > 0 {
                h = activate(&h, self.act)?;
            }
            h = layer.forward(&h)?;
        }
        Ok(h)
    }
}

/// Everything about the frozen part that is not a weight.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderSpec {
    pub vision: VisionConfig,
    /// transformers-style hidden-state indices (−2 = the penultimate layer's output).
    pub feature_layers: Vec<isize>,
    pub select: FeatureSelect,
    pub projector: ProjectorSpec,
    /// Whether the checkpoint has an `image_newline` (LLaVA-NeXT).
    pub has_newline: bool,
}

/// The loaded frozen encoder.
pub struct ImageEncoder {
    spec: EncoderSpec,
    tower: ClipVisionTower,
    layers: Vec<usize>,
    projector: Projector,
    newline: Option<Tensor>,
}

impl ImageEncoder {
    pub fn load(w: &Weights, layout: WeightLayout, spec: &EncoderSpec) -> Result<ImageEncoder> {
        let layers = resolve_layer_indices(&spec.feature_layers, spec.vision.num_hidden_layers)?;
        let needed = layers.iter().copied().max().unwrap_or(0);
        let prefix = layout.vision_prefix(w);
        let tower = ClipVisionTower::load(w, &prefix, &spec.vision, needed)?;
        let projector = Projector::load(
            w,
            layout,
            spec.projector,
            spec.vision.hidden_size * layers.len(),
        )?;
        let newline = if spec.has_newline {
            Some(w.get_any(layout.image_newline())?)
        } else {
            None
        };
        Ok(ImageEncoder {
            spec: spec.clone(),
            tower,
            layers,
            projector,
            newline,
        })
    }

    /// An encoder with `spec`'s shapes and random weights, made directly on `device` in `dtype`, whose projector
    /// maps into a language model `text_hidden` wide. Weights are normal with standard deviation `std`
    /// (transformers initialises with 0.02), LayerNorms start at weight 1 and bias 0. Only the tower layers the
    /// feature selection reads are made. For timing a full-size tower and projector without their checkpoint
    /// (LLaVA-1.6's is 0.3 B parameters): the features mean nothing.
    pub fn random(
        spec: &EncoderSpec,
        text_hidden: usize,
        device: &Device,
        dtype: DType,
        std: f64,
    ) -> Result<ImageEncoder> {
        spec.vision.validate()?;
        if text_hidden == 0 {
            return Err(VisionError::config(
                "text_config.hidden_size",
                "must be positive",
            ));
        }
        let layers = resolve_layer_indices(&spec.feature_layers, spec.vision.num_hidden_layers)?;
        let needed = layers.iter().copied().max().unwrap_or(0);
        let v = &spec.vision;
        let (d, p, inner) = (v.hidden_size, v.patch_size, v.intermediate_size);
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            (
                "embeddings.patch_embedding.weight".into(),
                vec![d, v.num_channels, p, p],
            ),
            ("embeddings.class_embedding".into(), vec![d]),
            (
                "embeddings.position_embedding.weight".into(),
                vec![v.grid() * v.grid() + 1, d],
            ),
            ("pre_layrnorm.weight".into(), vec![d]),
            ("pre_layrnorm.bias".into(), vec![d]),
        ];
        for i in 0..needed {
            let l = format!("encoder.layers.{i}.");
            for norm in ["layer_norm1", "layer_norm2"] {
                shapes.push((format!("{l}{norm}.weight"), vec![d]));
                shapes.push((format!("{l}{norm}.bias"), vec![d]));
            }
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                shapes.push((format!("{l}self_attn.{proj}.weight"), vec![d, d]));
                shapes.push((format!("{l}self_attn.{proj}.bias"), vec![d]));
            }
            shapes.push((format!("{l}mlp.fc1.weight"), vec![inner, d]));
            shapes.push((format!("{l}mlp.fc1.bias"), vec![inner]));
            shapes.push((format!("{l}mlp.fc2.weight"), vec![d, inner]));
            shapes.push((format!("{l}mlp.fc2.bias"), vec![d]));
        }
        let layout = WeightLayout::HfLegacy;
        let mut shapes: Vec<(String, Vec<usize>)> = shapes
            .into_iter()
            .map(|(name, dims)| (format!("vision_tower.vision_model.{name}"), dims))
            .collect();
        for i in 0..spec.projector.layers {
            let in_dim = if i == 0 {
                d * layers.len()
            } else {
                text_hidden
            };
            shapes.push((
                layout.projector_tensor(i, "weight"),
                vec![text_hidden, in_dim],
            ));
            if spec.projector.bias {
                shapes.push((layout.projector_tensor(i, "bias"), vec![text_hidden]));
            }
        }
        if spec.has_newline {
            shapes.push((layout.image_newline().to_string(), vec![text_hidden]));
        }
        let mut tensors = HashMap::with_capacity(shapes.len());
        for (name, dims) in shapes {
            let tensor = if name.contains("norm") && name.ends_with(".weight") {
                Tensor::ones(dims, dtype, device)?
            } else if name.contains("norm") {
                Tensor::zeros(dims, dtype, device)?
            } else {
                // Drawn in f32 (every backend's random kernels have it), then cast.
                Tensor::randn(0f32, std as f32, dims, device)?.to_dtype(dtype)?
            };
            tensors.insert(name, tensor);
        }
        ImageEncoder::load(
            &Weights::from_tensors(&tensors, device.clone(), dtype),
            layout,
            spec,
        )
    }

    pub fn spec(&self) -> &EncoderSpec {
        &self.spec
    }

    pub fn tower(&self) -> &ClipVisionTower {
        &self.tower
    }

    /// Projected features of every tile: `tiles x tokens x text_hidden`.
    pub fn tile_features(&self, pixels: &PixelValues) -> Result<Tensor> {
        let t = pixels.to_tensor(self.tower.device())?;
        let states = self.tower.hidden_states(&t)?;
        let selected = select_features(
            &states,
            &self.layers,
            self.spec.select == FeatureSelect::Full,
        )?;
        self.projector.forward(&selected)
    }

    /// The image's feature sequence `features x text_hidden` that replaces the `<image>` token.
    pub fn encode(&self, pixels: &PixelValues, mode: &ImageMode) -> Result<Tensor> {
        let feats = self.tile_features(pixels)?;
        match mode {
            ImageMode::Single => {
                if pixels.tiles != 1 {
                    return Err(VisionError::FeatureMismatch {
                        features: pixels.tiles,
                        reason: "single-tile mode got several tiles".into(),
                    });
                }
                Ok(feats.squeeze(0)?)
            }
            ImageMode::AnyRes { grid_pinpoints } => {
                self.pack_anyres(&feats, pixels, grid_pinpoints)
            }
        }
    }

    fn pack_anyres(
        &self,
        feats: &Tensor,
        pixels: &PixelValues,
        pinpoints: &[(u32, u32)],
    ) -> Result<Tensor> {
        let newline = self.newline.as_ref().ok_or_else(|| {
            VisionError::UnsupportedModel(
                "anyres mode needs the model's `image_newline` tensor, which this checkpoint lacks; \
                 use single-tile mode"
                    .into(),
            )
        })?;
        if self.spec.select == FeatureSelect::Full {
            return Err(VisionError::UnsupportedModel(
                "anyres packing needs the CLS token dropped (vision_feature_select_strategy `default`)".into(),
            ));
        }
        let (tiles, tokens, dim) = feats.dims3()?;
        let side = self.spec.vision.image_size as u32;
        let (orig_h, orig_w) = (pixels.original_size.0 as u32, pixels.original_size.1 as u32);
        let (best_h, best_w) = select_best_resolution((orig_h, orig_w), pinpoints);
        let (rows, cols) = ((best_h / side) as usize, (best_w / side) as usize);
        let g = self.spec.vision.grid();
        if tiles != 1 + rows * cols || tokens != g * g {
            return Err(VisionError::FeatureMismatch {
                features: tiles,
                reason: format!(
                    "expected 1 + {rows}x{cols} tiles of {} tokens for a {orig_w}x{orig_h} image, got {tiles} of {tokens}",
                    g * g
                ),
            });
        }
        let base = feats.get(0)?;
        // (rows, cols, g, g, D) -> (rows, g, cols, g, D) -> one (rows*g) x (cols*g) grid of features.
        let grid = feats
            .narrow(0, 1, rows * cols)?
            .reshape((rows, cols, g, g, dim))?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()?
            .reshape((rows * g, cols * g, dim))?;
        let grid = unpad(&grid, (orig_h as usize, orig_w as usize))?;
        let (h, _, _) = grid.dims3()?;
        let nl = newline
            .to_dtype(grid.dtype())?
            .reshape((1, 1, dim))?
            .broadcast_as((h, 1, dim))?;
        let with_newlines = Tensor::cat(&[&grid, &nl], 1)?;
        let flat = with_newlines.reshape(((), dim))?;
        Ok(Tensor::cat(&[&base, &flat], 0)?)
    }
}

/// transformers' `unpad_image` on an `H x W x D` feature grid: removes the rows (or columns) that
/// correspond to the black padding added around an image of `original` `(height, width)`.
pub fn unpad(grid: &Tensor, original: (usize, usize)) -> Result<Tensor> {
    let (cur_h, cur_w, _) = grid.dims3()?;
    let (range_start, keep, axis) = unpad_range((cur_h, cur_w), original);
    Ok(grid.narrow(axis, range_start, keep)?)
}

/// `(start, length, axis)` of the grid part that holds the image.
pub fn unpad_range(
    (cur_h, cur_w): (usize, usize),
    (orig_h, orig_w): (usize, usize),
) -> (usize, usize, usize) {
    let original_aspect = orig_w as f64 / orig_h as f64;
    let current_aspect = cur_w as f64 / cur_h as f64;
    if original_aspect > current_aspect {
        let scale = cur_w as f64 / orig_w as f64;
        let new_h = int_round7(orig_h as f64 * scale);
        let pad = cur_h.saturating_sub(new_h) / 2;
        (pad, cur_h - 2 * pad, 0)
    } else {
        let scale = cur_h as f64 / orig_h as f64;
        let new_w = int_round7(orig_w as f64 * scale);
        let pad = cur_w.saturating_sub(new_w) / 2;
        (pad, cur_w - 2 * pad, 1)
    }
}

/// Python's `int(round(x, 7))` for non-negative `x`: round to 7 decimals, then truncate.
fn int_round7(x: f64) -> usize {
    let nearest = x.round();
    if (x - nearest).abs() < 5e-8 {
        nearest as usize
    } else {
        x.floor() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpad_wide_image_drops_rows() {
        // A 2:1 image on a square grid of 8: rows 2..6 hold it.
        assert_eq!(unpad_range((8, 8), (100, 200)), (2, 4, 0));
        // A tall image drops columns.
        assert_eq!(unpad_range((8, 8), (200, 100)), (2, 4, 1));
        // Same aspect: nothing to drop.
        assert_eq!(unpad_range((8, 16), (50, 100)), (0, 16, 1));
    }

    #[test]
    fn round7_truncates_like_python() {
        assert_eq!(int_round7(2.99999999), 3);
        assert_eq!(int_round7(2.9999), 2);
        assert_eq!(int_round7(4.0), 4);
    }
}
