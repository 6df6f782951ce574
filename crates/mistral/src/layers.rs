//! The decoder's building blocks: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU MLP and the
//! pre-norm decoder layer. Each follows transformers 5.23's Mistral/Llama arithmetic (see the comments where
//! the order of operations matters for parity).

use candle_core::{DType, Device, Tensor, D};

use crate::cache::KvSlot;
use crate::error::Result;

/// `x @ w.T` for `x` [.., in] and a `[out, in]` weight, as `nn.Linear` without bias.
pub(crate) fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let in_dim = dims[dims.len() - 1];
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let x2 = x.reshape((rows, in_dim))?;
    let y = x2.matmul(&w.t()?)?;
    let mut out_dims = dims[..dims.len() - 1].to_vec();
    out_dims.push(w.dim(0)?);
    Ok(y.reshape(out_dims)?)
}

/// Root-mean-square norm. The statistic is computed in f32 whatever the weights' dtype, and the weight is
/// applied after casting back, as transformers does.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub(crate) weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> RmsNorm {
        RmsNorm { weight, eps }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x32 = x.to_dtype(DType::F32)?;
        let mean_sq = x32.sqr()?.mean_keepdim(D::Minus1)?;
        let inv_rms = (mean_sq + self.eps)?.sqrt()?.recip()?;
        let normed = x32.broadcast_mul(&inv_rms)?.to_dtype(dtype)?;
        Ok(normed.broadcast_mul(&self.weight)?)
    }
}

/// Rotary position embedding with transformers' `rotate_half` convention (the two halves of each head are
/// rotated as pairs `(i, i + head_dim/2)`).
#[derive(Debug, Clone)]
pub struct Rotary {
    inv_freq: Vec<f32>,
}

impl Rotary {
    /// `inv_freq[k] = 1 / theta^(2k / head_dim)`, with each step rounded to f32 as transformers computes it.
    pub fn new(head_dim: usize, theta: f64) -> Rotary {
        let inv_freq = (0..head_dim / 2)
            .map(|k| {
                let exponent = (2 * k) as f32 / head_dim as f32;
                let power = theta.powf(exponent as f64) as f32;
                1.0f32 / power
            })
            .collect();
        Rotary { inv_freq }
    }

    /// `cos` and `sin` for positions `[b, s]`, each `[b, s, head_dim/2]` in `dtype`. The angle is the f32
    /// product `position * inv_freq`, as in transformers.
    pub fn cos_sin(
        &self,
        positions: &[Vec<u32>],
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let b = positions.len();
        let s = positions.first().map_or(0, Vec::len);
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(b * s * half);
        let mut sin = Vec::with_capacity(b * s * half);
        for row in positions {
            for &p in row {
                for &f in &self.inv_freq {
                    let angle = (p as f32 * f) as f64;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
        let cos = Tensor::from_vec(cos, (b, s, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (b, s, half), device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}

/// Grouped-query self-attention. Weights are `[out, in]` as in the checkpoint.
#[derive(Debug, Clone)]
pub struct Attention {
    pub(crate) q_proj: Tensor,
    pub(crate) k_proj: Tensor,
    pub(crate) v_proj: Tensor,
    pub(crate) o_proj: Tensor,
    pub(crate) num_heads: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
}

impl Attention {
    /// `x` [b, s, hidden]; `mask` additive f32 `[b, 1, s, past + s]` or `None` when every key is visible.
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        slot: &mut KvSlot,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = linear(x, &self.q_proj)?
            .reshape((b, s, nh, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let k = linear(x, &self.k_proj)?
            .reshape((b, s, nkv, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = linear(x, &self.v_proj)?
            .reshape((b, s, nkv, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        let (k, v) = slot.append(k, v)?;
        let t = k.dim(2)?;
        // Query heads that share a kv head are consecutive (transformers' repeat_kv), so grouping the queries
        // as [b, kv_heads, group * s, hd] lets every group use its kv head without copying it.
        let group = nh / nkv;
        let q = q.reshape((b, nkv, group * s, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.reshape((b, nh, s, t))?;
        let scores = scores.to_dtype(DType::F32)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        let out = probs.reshape((b, nkv, group * s, t))?.matmul(&v)?;
        let out = out
            .reshape((b, nh, s, hd))?
            .transpose(1, 2)?
            .reshape((b, s, nh * hd))?;
        linear(&out, &self.o_proj)
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub(crate) gate_proj: Tensor,
    pub(crate) up_proj: Tensor,
    pub(crate) down_proj: Tensor,
}

impl Mlp {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = candle_nn::ops::silu(&linear(x, &self.gate_proj)?)?;
        let up = linear(x, &self.up_proj)?;
        linear(&(gate * up)?, &self.down_proj)
    }
}

/// One pre-norm decoder layer. It is evaluated in two halves so that layer paths can scale the MLP branch
/// before it joins the residual stream (the released `evomistral` convention).
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    pub(crate) input_layernorm: RmsNorm,
    pub(crate) self_attn: Attention,
    pub(crate) post_attention_layernorm: RmsNorm,
    pub(crate) mlp: Mlp,
}

impl DecoderLayer {
    /// Returns `(h, m)`: `h = x + attn(norm1(x))` (the residual stream after attention) and
    /// `m = mlp(norm2(h))` (the MLP branch, not yet added). The layer's usual output is `h + m`.
    pub fn forward_split(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        slot: &mut KvSlot,
    ) -> Result<(Tensor, Tensor)> {
        let attn =
            self.self_attn
                .forward(&self.input_layernorm.forward(x)?, cos, sin, mask, slot)?;
        let h = (x + attn)?;
        let m = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&h)?)?;
        Ok((h, m))
    }
}
