//! The decoder's building blocks: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU MLP and the
//! pre-norm decoder layer. Each follows transformers 5.23's Mistral/Llama arithmetic (see the comments where
//! the order of operations matters for parity).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};

use crate::cache::KvSlot;
use crate::cpu_attention::{self, AttentionDims};
use crate::cpu_matmul::{self, PackedMatrix};
use crate::cpu_ops;
use crate::error::{MistralError, Result};
use crate::weight::Weight;

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

/// A bias-free linear layer `x @ w.T` with a `[out, in]` weight. On a CPU with AVX2/FMA an f32 weight is
/// packed once (see [`crate::cpu_matmul`]) and multiplied by our kernel; everywhere else it is a plain tensor
/// and candle's matmul. Clones share the weight until one of them is written (copy on write).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: LinearWeight,
}

#[derive(Debug, Clone)]
enum LinearWeight {
    Plain(Weight),
    Packed(Arc<PackedMatrix>),
}

impl Linear {
    /// Wraps `weight` `[out, in]`, packing it when `pack` is set and the weight is f32 on a capable CPU.
    pub(crate) fn new(weight: Weight, pack: bool) -> Result<Linear> {
        let packable = pack
            && weight.device().is_cpu()
            && weight.dtype() == DType::F32
            && weight.rank() == 2
            && cpu_ops::avx2_fma();
        if !packable {
            return Ok(Linear {
                weight: LinearWeight::Plain(weight),
            });
        }
        let (n, k) = weight.dims2()?;
        let data = weight.flatten_all()?.to_vec1::<f32>()?;
        Ok(Linear {
            weight: LinearWeight::Packed(Arc::new(PackedMatrix::pack(&data, n, k))),
        })
    }

    /// `[out, in]`.
    pub fn dims(&self) -> (usize, usize) {
        match &self.weight {
            LinearWeight::Plain(w) => (w.dim(0).unwrap_or(0), w.dim(1).unwrap_or(0)),
            LinearWeight::Packed(p) => p.dims(),
        }
    }

    pub fn is_packed(&self) -> bool {
        matches!(self.weight, LinearWeight::Packed(_))
    }

    /// The weight as a `[out, in]` tensor (unpacked into a new tensor when packed). The tensor keeps its
    /// values when the layer is written later.
    pub fn weight(&self) -> Result<Tensor> {
        match &self.weight {
            LinearWeight::Plain(w) => Ok(w.share()),
            LinearWeight::Packed(p) => {
                let (n, k) = p.dims();
                Ok(Tensor::from_vec(p.unpack(), (n, k), &Device::Cpu)?)
            }
        }
    }

    /// Converts to `dtype` on `device`, packing or unpacking as [`Linear::new`] decides. Shares the weight
    /// (copy on write) when nothing changes.
    pub(crate) fn converted(&self, dtype: DType, device: &Device, pack: bool) -> Result<Linear> {
        match &self.weight {
            LinearWeight::Packed(_) if pack && dtype == DType::F32 && device.is_cpu() => {
                Ok(self.clone())
            }
            LinearWeight::Packed(p) => {
                let (n, k) = p.dims();
                let t = Tensor::from_vec(p.unpack(), (n, k), &Device::Cpu)?;
                Linear::new(Weight::owned(t).converted(dtype, device)?, pack)
            }
            LinearWeight::Plain(w) => Linear::new(w.converted(dtype, device)?, pack),
        }
    }

    /// Overwrites the weight with row-major `[out, in]` f32 `data`, in the existing storage (packed: the
    /// existing panels) unless another model shares it; the caller checks the length.
    pub(crate) fn write_f32(&mut self, data: &[f32]) -> Result<()> {
        match &mut self.weight {
            LinearWeight::Plain(w) => w.write_f32(data),
            LinearWeight::Packed(p) => {
                let (n, k) = p.dims();
                if data.len() != n * k {
                    return Err(MistralError::BadInput(format!(
                        "internal: {} values written into a [{n}, {k}] linear layer",
                        data.len()
                    )));
                }
                match Arc::get_mut(p) {
                    Some(m) => m.repack_from(data),
                    // Shared with a clone of the model or a pool built from it: leave theirs alone.
                    None => *p = Arc::new(PackedMatrix::pack(data, n, k)),
                }
                Ok(())
            }
        }
    }

    /// Overwrites the weight with `value` (`[out, in]`, any float dtype and device), in place as
    /// [`Linear::write_f32`].
    pub(crate) fn write(&mut self, value: &Tensor) -> Result<()> {
        match &mut self.weight {
            LinearWeight::Plain(w) => w.write(value),
            LinearWeight::Packed(_) => crate::weight::with_host_f32(value, |d| self.write_f32(d)),
        }
    }

    /// The host address of the weight's storage (packed: of its panels); `None` off the CPU.
    pub(crate) fn data_addr(&self) -> Option<usize> {
        match &self.weight {
            LinearWeight::Plain(w) => w.data_addr(),
            LinearWeight::Packed(p) => Some(p.data_addr()),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.weight {
            LinearWeight::Plain(w) => linear(x, w),
            LinearWeight::Packed(p) => packed_linear(x, p),
        }
    }
}

/// Several linear layers applied to the same input (q, k and v; gate and up): with packed weights one run of
/// the kernel, the input packed once; otherwise one layer after the other.
pub(crate) fn forward_many(x: &Tensor, layers: &[&Linear]) -> Result<Vec<Tensor>> {
    let packed: Option<Vec<&PackedMatrix>> = layers
        .iter()
        .map(|l| match &l.weight {
            LinearWeight::Packed(p) => Some(&**p),
            LinearWeight::Plain(_) => None,
        })
        .collect();
    match packed {
        Some(mats) if !mats.is_empty() => packed_linear_many(x, &mats),
        _ => layers.iter().map(|l| l.forward(x)).collect(),
    }
}

/// `x @ w.T` through the packed kernel; `x` is any `[.., in]` f32 CPU tensor.
fn packed_linear(x: &Tensor, w: &PackedMatrix) -> Result<Tensor> {
    Ok(packed_linear_many(x, &[w])?.remove(0))
}

/// `x @ w_i.T` for each `w_i`, in one run of the packed kernel.
fn packed_linear_many(x: &Tensor, ws: &[&PackedMatrix]) -> Result<Vec<Tensor>> {
    let k = ws[0].dims().1;
    let dims = x.dims();
    let in_dim = dims.last().copied().unwrap_or(0);
    if in_dim != k || x.dtype() != DType::F32 || !x.device().is_cpu() {
        return Err(MistralError::BadInput(format!(
            "a linear layer with {k} inputs got a {:?} tensor of shape {dims:?} on {:?}",
            x.dtype(),
            x.device().location()
        )));
    }
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let mut outs: Vec<Vec<f32>> = ws.iter().map(|w| vec![0f32; rows * w.dims().0]).collect();
    let mut out_slices: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
    with_cpu_f32(&x.contiguous()?, |data| {
        cpu_matmul::matmul_t_many(ws, data, rows, &mut out_slices, true)
    })?
    .ok_or_else(|| MistralError::BadInput("internal: packed linear input is not CPU f32".into()))?;
    outs.into_iter()
        .zip(ws)
        .map(|(out, w)| {
            let mut out_dims = dims[..dims.len() - 1].to_vec();
            out_dims.push(w.dims().0);
            Ok(Tensor::from_vec(out, out_dims, &Device::Cpu)?)
        })
        .collect()
}

/// Runs `f` on the elements of a contiguous f32 CPU tensor; `None` (without calling `f`) for any other.
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<Option<R>> {
    let (storage, layout) = t.storage_and_layout();
    Ok(cpu_slice(&storage, layout)?.map(f))
}

/// The whole attention core in one fused CPU pass ([`crate::cpu_attention`]) when q, k, v and the mask are
/// f32 on the CPU; `None` otherwise.
fn fused_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    dims: AttentionDims,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    let all = [Some(q), Some(k), Some(v), mask];
    if !all
        .iter()
        .flatten()
        .all(|t| t.dtype() == DType::F32 && t.device().is_cpu())
    {
        return Ok(None);
    }
    let q = q.contiguous()?;
    let mask = mask.map(Tensor::contiguous).transpose()?;
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (Some(qd), Some(kd), Some(vd)) = (
        cpu_slice(&qs, ql)?,
        cpu_kv_blocks(&ks, kl)?,
        cpu_kv_blocks(&vs, vl)?,
    ) else {
        return Ok(None);
    };
    if kd.1 != vd.1 {
        return Ok(None);
    }
    let (kd, block_stride, vd) = (kd.0, kd.1, vd.0);
    let out = match &mask {
        None => cpu_attention::attention(qd, kd, vd, block_stride, dims, scale as f32, None),
        Some(m) => {
            let (ms, ml) = m.storage_and_layout();
            let Some(md) = cpu_slice(&ms, ml)? else {
                return Ok(None);
            };
            let mask = Some((md, m.dim(0)?));
            cpu_attention::attention(qd, kd, vd, block_stride, dims, scale as f32, mask)
        }
    };
    let shape = (dims.batch, dims.heads, dims.q_len, dims.head_dim);
    Ok(Some(Tensor::from_vec(out, shape, q.device())?))
}

/// Keys or values `[b, kv_heads, t, hd]` of an f32 CPU tensor whose `[t, hd]` blocks are each contiguous and evenly
/// spaced (a view into the preallocated KV cache, or a contiguous tensor): the elements from the first block to the
/// end of the last, and the distance between blocks. `None` for any other layout (the caller falls back).
fn cpu_kv_blocks<'a>(
    storage: &'a candle_core::Storage,
    layout: &candle_core::Layout,
) -> Result<Option<(&'a [f32], usize)>> {
    let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)) = storage else {
        return Ok(None);
    };
    let (dims, stride) = (layout.dims(), layout.stride());
    let &[b, h, t, hd] = dims else {
        return Ok(None);
    };
    let block = stride[1];
    if stride[3] != 1 || stride[2] != hd || stride[0] != h * block || block < t * hd || b * h == 0 {
        return Ok(None);
    }
    let start = layout.start_offset();
    let end = start + (b * h - 1) * block + t * hd;
    Ok(data.get(start..end).map(|d| (d, block)))
}

/// The elements of a contiguous f32 CPU tensor's storage, or `None` for any other.
fn cpu_slice<'a>(
    storage: &'a candle_core::Storage,
    layout: &candle_core::Layout,
) -> Result<Option<&'a [f32]>> {
    let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)) = storage else {
        return Ok(None);
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Ok(None);
    };
    Ok(Some(&data[start..end]))
}

/// `softmax(scores * scale + mask)` over the last axis of `[b, heads, q, t]` scores, in f32, with candle's
/// operations (the path without the fused CPU kernels).
fn attention_probs(scores: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let scores = (scores * scale)?.to_dtype(DType::F32)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    Ok(candle_nn::ops::softmax_last_dim(&scores)?)
}

/// Root-mean-square norm. The statistic is computed in f32 whatever the weights' dtype, and the weight is
/// applied after casting back, as transformers does.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub(crate) weight: Weight,
    eps: f64,
    /// One fused pass for f32 on the CPU instead of candle's seven.
    fused: bool,
}

impl RmsNorm {
    /// `weight` may be held elsewhere too: the model copies it before writing into it.
    pub fn new(weight: Tensor, eps: f64) -> RmsNorm {
        RmsNorm::from_weight(Weight::shared(weight), eps)
    }

    pub(crate) fn from_weight(weight: Weight, eps: f64) -> RmsNorm {
        RmsNorm {
            weight,
            eps,
            fused: false,
        }
    }

    /// The same norm, computed by the crate's fused CPU kernel where the data is f32 on the CPU.
    pub(crate) fn with_cpu_kernel(self, on: bool) -> RmsNorm {
        RmsNorm { fused: on, ..self }
    }

    /// The same norm with another weight.
    pub(crate) fn with_weight(&self, weight: Weight) -> RmsNorm {
        RmsNorm {
            weight,
            ..self.clone()
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.fused {
            let x = x.contiguous()?;
            if x.dims().last() == Some(&self.weight.elem_count()) {
                let fused = with_cpu_f32(&x, |xd| {
                    with_cpu_f32(&self.weight, |w| cpu_ops::rms_norm(xd, w, self.eps as f32))
                })?
                .transpose()?
                .flatten();
                if let Some(out) = fused {
                    return Ok(Tensor::from_vec(out, x.dims(), x.device())?);
                }
            }
        }
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

    /// `cos` and `sin` rows for positions `0..len`, each `[len, head_dim/2]` f32 on `device`. The angle is the
    /// f32 product `position * inv_freq`, as in transformers.
    fn table(&self, len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in 0..len {
            for &f in &self.inv_freq {
                let angle = (p as f32 * f) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Ok((
            Tensor::from_vec(cos, (len, half), device)?,
            Tensor::from_vec(sin, (len, half), device)?,
        ))
    }
}

/// The rotary `cos`/`sin` tables, built once on the model's device and looked up there by position, so a step
/// uploads its position ids and nothing else (no per-step trigonometry on the host). The table grows by
/// doubling up to the model's context when a longer position is asked for; clones share it.
#[derive(Debug, Clone)]
pub struct RotaryTable {
    rotary: Rotary,
    max_len: usize,
    device: Device,
    table: std::sync::Arc<std::sync::RwLock<Option<(Tensor, Tensor)>>>,
}

impl RotaryTable {
    pub fn new(rotary: Rotary, max_len: usize, device: &Device) -> RotaryTable {
        RotaryTable {
            rotary,
            max_len,
            device: device.clone(),
            table: Default::default(),
        }
    }

    /// `cos` and `sin` for the flat u32 position ids `positions` (`b * s` of them, on the table's device, each
    /// `< needed`), each `[b, s, head_dim/2]` in `dtype`.
    pub fn cos_sin(
        &self,
        positions: &Tensor,
        needed: usize,
        b: usize,
        s: usize,
        dtype: DType,
    ) -> Result<(Tensor, Tensor)> {
        let (cos, sin) = self.covering(needed)?;
        let half = cos.dim(1)?;
        let cos = cos
            .index_select(positions, 0)?
            .reshape((b, s, half))?
            .to_dtype(dtype)?;
        let sin = sin
            .index_select(positions, 0)?
            .reshape((b, s, half))?
            .to_dtype(dtype)?;
        Ok((cos, sin))
    }

    /// A table with at least `needed` rows.
    fn covering(&self, needed: usize) -> Result<(Tensor, Tensor)> {
        if let Ok(guard) = self.table.read() {
            if let Some((cos, sin)) = guard
                .as_ref()
                .filter(|(c, _)| c.dim(0).is_ok_and(|n| n >= needed))
            {
                return Ok((cos.clone(), sin.clone()));
            }
        }
        let mut guard = self
            .table
            .write()
            .map_err(|_| candle_core::Error::Msg("rotary table lock poisoned".into()))?;
        let have = guard.as_ref().map_or(0, |(c, _)| c.dim(0).unwrap_or(0));
        if have >= needed {
            if let Some((cos, sin)) = guard.as_ref() {
                return Ok((cos.clone(), sin.clone()));
            }
        }
        let len = needed.max(2 * have).max(256).min(self.max_len.max(needed));
        let built = self.rotary.table(len, &self.device)?;
        *guard = Some(built.clone());
        Ok(built)
    }
}

/// Grouped-query self-attention. Weights are `[out, in]` as in the checkpoint.
#[derive(Debug, Clone)]
pub struct Attention {
    pub(crate) q_proj: Linear,
    pub(crate) k_proj: Linear,
    pub(crate) v_proj: Linear,
    pub(crate) o_proj: Linear,
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
        let [q, k, v]: [Tensor; 3] = forward_many(x, &[&self.q_proj, &self.k_proj, &self.v_proj])?
            .try_into()
            .map_err(|_| MistralError::BadInput("internal: three projections expected".into()))?;
        let q = q.reshape((b, s, nh, hd))?.transpose(1, 2)?.contiguous()?;
        let k = k.reshape((b, s, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((b, s, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        let (k, v) = slot.append(k, v)?;
        let t = k.dim(2)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let dims = AttentionDims {
            batch: b,
            heads: nh,
            kv_heads: nkv,
            q_len: s,
            kv_len: t,
            head_dim: hd,
        };
        let fused = match self.o_proj.is_packed() {
            true => fused_attention(&q, &k, &v, dims, scale, mask)?,
            false => None,
        };
        let out = match fused {
            Some(out) => out,
            None => {
                // Query heads that share a kv head are consecutive (transformers' repeat_kv), so grouping the
                // queries as [b, kv_heads, group * s, hd] lets every group use its kv head without copying it.
                let group = nh / nkv;
                let q = q.reshape((b, nkv, group * s, hd))?;
                let scores = q.matmul(&k.t()?)?.reshape((b, nh, s, t))?;
                let probs = attention_probs(&scores, scale, mask)?.to_dtype(v.dtype())?;
                probs.reshape((b, nkv, group * s, t))?.matmul(&v)?
            }
        };
        let out = out
            .reshape((b, nh, s, hd))?
            .transpose(1, 2)?
            .reshape((b, s, nh * hd))?;
        self.o_proj.forward(&out)
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub(crate) gate_proj: Linear,
    pub(crate) up_proj: Linear,
    pub(crate) down_proj: Linear,
}

impl Mlp {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [gate, up]: [Tensor; 2] = forward_many(x, &[&self.gate_proj, &self.up_proj])?
            .try_into()
            .map_err(|_| MistralError::BadInput("internal: two projections expected".into()))?;
        let (gate, up) = (gate.contiguous()?, up.contiguous()?);
        let fused = match self.down_proj.is_packed() {
            true => with_cpu_f32(&gate, |g| with_cpu_f32(&up, |u| cpu_ops::silu_mul(g, u)))?
                .transpose()?
                .flatten(),
            false => None,
        };
        let hidden = match fused {
            Some(h) => Tensor::from_vec(h, gate.dims(), gate.device())?,
            None => (candle_nn::ops::silu(&gate)? * up)?,
        };
        self.down_proj.forward(&hidden)
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
