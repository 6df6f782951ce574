//! The CLIP vision transformer (pre-LayerNorm ViT with a class token and learned position embeddings),
//! as transformers' `CLIPVisionModel` computes it. Only the hidden states LLaVA reads are computed: the
//! layers after the last selected one (and the unused `post_layernorm`) are never loaded or run.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{LayerNorm, Linear};

use crate::config::{Activation, VisionConfig};
use crate::error::{Result, VisionError};
use crate::weights::Weights;

pub(crate) fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    Ok(match act {
        Activation::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
        Activation::Gelu => x.gelu_erf()?,
        Activation::GeluTanh => x.gelu()?,
    })
}

pub(crate) fn linear(
    w: &Weights,
    name: &str,
    out_dim: usize,
    in_dim: usize,
    bias: bool,
) -> Result<Linear> {
    let weight = w.get(&format!("{name}.weight"), &[out_dim, in_dim])?;
    let bias = if bias {
        Some(w.get(&format!("{name}.bias"), &[out_dim])?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}

fn layer_norm(w: &Weights, name: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
    let weight = w.get(&format!("{name}.weight"), &[dim])?;
    let bias = w.get(&format!("{name}.bias"), &[dim])?;
    Ok(LayerNorm::new(weight, bias, eps))
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, n, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(self.q.forward(x)?)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? * self.scale)?;
        // Softmax in f32 whatever the compute dtype, as transformers does.
        let probs =
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(v.dtype())?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, n, d))?;
        Ok(self.out.forward(&ctx)?)
    }
}

struct EncoderLayer {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl EncoderLayer {
    fn load(w: &Weights, p: &str, cfg: &VisionConfig) -> Result<EncoderLayer> {
        let d = cfg.hidden_size;
        let head_dim = cfg.head_dim();
        Ok(EncoderLayer {
            ln1: layer_norm(w, &format!("{p}layer_norm1"), d, cfg.layer_norm_eps)?,
            attn: Attention {
                q: linear(w, &format!("{p}self_attn.q_proj"), d, d, true)?,
                k: linear(w, &format!("{p}self_attn.k_proj"), d, d, true)?,
                v: linear(w, &format!("{p}self_attn.v_proj"), d, d, true)?,
                out: linear(w, &format!("{p}self_attn.out_proj"), d, d, true)?,
                heads: cfg.num_attention_heads,
                head_dim,
                scale: (head_dim as f64).powf(-0.5),
            },
            ln2: layer_norm(w, &format!("{p}layer_norm2"), d, cfg.layer_norm_eps)?,
            fc1: linear(w, &format!("{p}mlp.fc1"), cfg.intermediate_size, d, true)?,
            fc2: linear(w, &format!("{p}mlp.fc2"), d, cfg.intermediate_size, true)?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = (x + self.attn.forward(&self.ln1.forward(x)?)?)?;
        let m = self.fc2.forward(&activate(
            &self.fc1.forward(&self.ln2.forward(&h)?)?,
            self.act,
        )?)?;
        Ok((h + m)?)
    }
}

/// The CLIP vision tower, loaded up to the deepest layer whose output is used.
pub struct ClipVisionTower {
    cfg: VisionConfig,
    /// `hidden x (3 * patch * patch)`: the patch convolution as a matrix (stride = kernel).
    patch_weight: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layernorm: LayerNorm,
    layers: Vec<EncoderLayer>,
    dtype: DType,
    device: Device,
}

impl ClipVisionTower {
    /// Loads the embeddings, the pre-LayerNorm and the first `layers_needed` encoder layers from tensors
    /// named `<prefix>embeddings.*`, `<prefix>pre_layrnorm.*`, `<prefix>encoder.layers.<i>.*`.
    pub fn load(
        w: &Weights,
        prefix: &str,
        cfg: &VisionConfig,
        layers_needed: usize,
    ) -> Result<ClipVisionTower> {
        cfg.validate()?;
        if layers_needed > cfg.num_hidden_layers {
            return Err(VisionError::config(
                "vision_feature_layer",
                format!(
                    "needs {layers_needed} layers, the tower has {}",
                    cfg.num_hidden_layers
                ),
            ));
        }
        let d = cfg.hidden_size;
        let p = cfg.patch_size;
        let positions = cfg.grid() * cfg.grid() + 1;
        let patch_weight = w
            .get(
                &format!("{prefix}embeddings.patch_embedding.weight"),
                &[d, cfg.num_channels, p, p],
            )?
            .reshape((d, cfg.num_channels * p * p))?;
        let class_embedding = w.get(&format!("{prefix}embeddings.class_embedding"), &[d])?;
        let position_embedding = w.get(
            &format!("{prefix}embeddings.position_embedding.weight"),
            &[positions, d],
        )?;
        let pre_layernorm = layer_norm(w, &format!("{prefix}pre_layrnorm"), d, cfg.layer_norm_eps)?;
        let layers = (0..layers_needed)
            .map(|i| EncoderLayer::load(w, &format!("{prefix}encoder.layers.{i}."), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(ClipVisionTower {
            cfg: cfg.clone(),
            patch_weight,
            class_embedding,
            position_embedding,
            pre_layernorm,
            layers,
            dtype: w.dtype,
            device: w.device.clone(),
        })
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The hidden states `0..=layers_loaded` for `pixels` of shape `tiles x 3 x S x S`: index 0 is the
    /// pre-LayerNormed embeddings, index i the output of encoder layer i (transformers' `hidden_states`).
    pub fn hidden_states(&self, pixels: &Tensor) -> Result<Vec<Tensor>> {
        let (b, c, h, w) = pixels.dims4()?;
        let (s, p) = (self.cfg.image_size, self.cfg.patch_size);
        if c != self.cfg.num_channels || h != s || w != s {
            return Err(VisionError::PixelShape {
                actual: pixels.dims().to_vec(),
                expected: format!("[tiles, {}, {s}, {s}]", self.cfg.num_channels),
            });
        }
        let g = s / p;
        let d = self.cfg.hidden_size;
        let pixels = pixels.to_device(&self.device)?.to_dtype(self.dtype)?;
        // Cut into patches ordered row by row, each flattened as (channel, y, x) like the conv kernel.
        let patches = pixels
            .reshape((b, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * g * g, c * p * p))?;
        let patch_embeds = patches
            .matmul(&self.patch_weight.t()?)?
            .reshape((b, g * g, d))?;
        let class = self
            .class_embedding
            .reshape((1, 1, d))?
            .broadcast_as((b, 1, d))?;
        let embeddings = Tensor::cat(&[&class, &patch_embeds], 1)?
            .broadcast_add(&self.position_embedding.unsqueeze(0)?)?;
        let mut hidden = self.pre_layernorm.forward(&embeddings)?;
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        states.push(hidden.clone());
        for layer in &self.layers {
            hidden = layer.forward(&hidden)?;
            states.push(hidden.clone());
        }
        Ok(states)
    }

    /// Number of encoder layers loaded.
    pub fn layers_loaded(&self) -> usize {
        self.layers.len()
    }
}

/// Resolves transformers-style hidden-state indices (negative counts from the end of the full tower's
/// `num_hidden_layers + 1` states) to non-negative ones.
pub fn resolve_layer_indices(indices: &[isize], num_hidden_layers: usize) -> Result<Vec<usize>> {
    let total = num_hidden_layers as isize + 1;
    indices
        .iter()
        .map(|&i| {
            let r = if i < 0 { total + i } else { i };
            if (0..total).contains(&r) {
                Ok(r as usize)
            } else {
                Err(VisionError::config(
                    "vision_feature_layer",
                    format!("{i} is out of range for a tower with {num_hidden_layers} layers"),
                ))
            }
        })
        .collect()
}

/// Concatenates the selected hidden states along the feature axis and drops the CLS token if asked.
pub(crate) fn select_features(
    states: &[Tensor],
    layers: &[usize],
    keep_cls: bool,
) -> Result<Tensor> {
    let picked = layers
        .iter()
        .map(|&i| states[i].clone())
        .collect::<Vec<_>>();
    let cat = if picked.len() == 1 {
        picked[0].clone()
    } else {
        Tensor::cat(&picked, D::Minus1)?
    };
    if keep_cls {
        Ok(cat)
    } else {
        let n = cat.dim(1)?;
        Ok(cat.narrow(1, 1, n - 1)?)
    }
}
