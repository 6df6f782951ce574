//! The Mistral/Llama causal language model over a layer pool and a [`LayerPath`].

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::cache::KvCache;
use crate::config::{Config, ModelType};
use crate::error::{MistralError, Result};
use crate::layers::{linear, Attention, DecoderLayer, Linear, Mlp, RmsNorm, Rotary, RotaryTable};
use crate::path::{LayerPath, ScaleConvention};
use crate::weight::Weight;
use crate::weights::{load_checked, LoadOptions, TensorSource};

mod params;

/// A decoder-only language model: embeddings, a pool of decoder layers run along a [`LayerPath`], the final
/// norm and the LM head. A plain checkpoint loads with the identity path over its own layers.
///
/// Weights are written in place ([`Mistral::write_f32`]). A clone shares every weight with the original
/// until one of the two writes it: the writer then gets its own copy of that weight (copy on write), so a
/// write never shows in another model, nor in a tensor handed out earlier by [`Mistral::parameter`].
#[derive(Debug, Clone)]
pub struct Mistral {
    config: Config,
    embed_tokens: Weight,
    pool: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// `None` when tied to the embeddings.
    lm_head: Option<Linear>,
    path: LayerPath,
    rotary: RotaryTable,
    device: Device,
    dtype: DType,
    /// Whether the crate's CPU kernels are used: f32 CPU weights packed (see [`LoadOptions::cpu_kernels`]).
    pack: bool,
}

/// The decoder-layer tensor names, relative to `layers.{i}.`, with their shapes.
fn layer_tensor_shapes(c: &Config) -> [(&'static str, [usize; 2]); 9] {
    let (h, i, hd) = (c.hidden_size, c.intermediate_size, c.head_dim);
    [
        ("input_layernorm.weight", [h, 0]),
        ("self_attn.q_proj.weight", [c.num_attention_heads * hd, h]),
        ("self_attn.k_proj.weight", [c.num_key_value_heads * hd, h]),
        ("self_attn.v_proj.weight", [c.num_key_value_heads * hd, h]),
        ("self_attn.o_proj.weight", [h, c.num_attention_heads * hd]),
        ("post_attention_layernorm.weight", [h, 0]),
        ("mlp.gate_proj.weight", [i, h]),
        ("mlp.up_proj.weight", [i, h]),
        ("mlp.down_proj.weight", [h, i]),
    ]
}

fn shape_of(s: &[usize; 2]) -> &[usize] {
    if s[1] == 0 {
        &s[..1]
    } else {
        &s[..]
    }
}

impl Mistral {
    /// Loads a model from any tensor source. Every tensor's shape is checked against `config`.
    pub fn load(config: &Config, source: &dyn TensorSource, opts: &LoadOptions) -> Result<Mistral> {
        let c = config;
        let device = &opts.device;
        let names = &opts.names;
        let embed_name = format!("{}embed_tokens.weight", names.prefix);
        let stored = source
            .tensor(&embed_name, device)?
            .ok_or_else(|| MistralError::MissingTensor(embed_name.clone()))?
            .dtype();
        let dtype = opts.resolve_dtype(stored);
        let load = |name: &str, shape: &[usize]| load_checked(source, name, shape, dtype, device);
        let pack = opts.cpu_kernels;
        let linear = |w: Weight| Linear::new(w, pack);
        let embed_tokens = load(&embed_name, &[c.vocab_size, c.hidden_size])?;
        let mut pool = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let mut w = Vec::with_capacity(9);
            for (name, shape) in layer_tensor_shapes(c).iter() {
                w.push(load(
                    &format!("{}layers.{i}.{name}", names.prefix),
                    shape_of(shape),
                )?);
            }
            let mut w = w.into_iter();
            let mut next = || {
                w.next()
                    .ok_or_else(|| MistralError::BadInput("internal: layer tensor list".into()))
            };
            pool.push(DecoderLayer {
                input_layernorm: RmsNorm::from_weight(next()?, c.rms_norm_eps)
                    .with_cpu_kernel(pack),
                self_attn: Attention {
                    q_proj: linear(next()?)?,
                    k_proj: linear(next()?)?,
                    v_proj: linear(next()?)?,
                    o_proj: linear(next()?)?,
                    num_heads: c.num_attention_heads,
                    num_kv_heads: c.num_key_value_heads,
                    head_dim: c.head_dim,
                },
                post_attention_layernorm: RmsNorm::from_weight(next()?, c.rms_norm_eps)
                    .with_cpu_kernel(pack),
                mlp: Mlp {
                    gate_proj: linear(next()?)?,
                    up_proj: linear(next()?)?,
                    down_proj: linear(next()?)?,
                },
            });
        }
        let norm = RmsNorm::from_weight(
            load(&format!("{}norm.weight", names.prefix), &[c.hidden_size])?,
            c.rms_norm_eps,
        )
        .with_cpu_kernel(pack);
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(linear(load(
                &names.lm_head,
                &[c.vocab_size, c.hidden_size],
            )?)?)
        };
        Ok(Mistral {
            config: c.clone(),
            embed_tokens,
            pool,
            norm,
            lm_head,
            path: LayerPath::identity(c.num_hidden_layers),
            rotary: RotaryTable::new(
                Rotary::new(c.head_dim, c.rope_theta),
                c.max_position_embeddings,
                device,
            ),
            device: device.clone(),
            dtype,
            pack,
        })
    }

    /// Loads a model directory (`config.json` + safetensors, single or sharded). An `evomistral` directory
    /// also gets its layer path (scales read per hop; see [`crate::evomistral::load`] for the other reading).
    pub fn from_dir(dir: &Path, opts: &LoadOptions) -> Result<Mistral> {
        Mistral::from_checkpoint(&evomerge_checkpoint::Checkpoint::open_dir(dir)?, opts)
    }

    /// Loads a model given as a directory or a hub id `org/name[@revision]` (resolved by the checkpoint
    /// crate, from the local cache when present).
    pub fn open(spec: &str, opts: &LoadOptions) -> Result<Mistral> {
        Mistral::from_checkpoint(&evomerge_checkpoint::Checkpoint::open(spec)?, opts)
    }

    /// Loads from an opened checkpoint.
    pub fn from_checkpoint(
        ckpt: &evomerge_checkpoint::Checkpoint,
        opts: &LoadOptions,
    ) -> Result<Mistral> {
        let config = Config::from_json(ckpt.config())?;
        if config.model_type == ModelType::EvoMistral {
            return crate::evomistral::load(&config, ckpt, opts, Default::default());
        }
        Mistral::load(&config, ckpt, opts)
    }

    /// Appends the layers of `others` to this model's pool (after its own), keeping this model's embeddings,
    /// final norm and head. Pool index `k` then names layer `k` of this model for `k < n`, then the other
    /// models' layers in order. The path stays the identity over this model's own layers.
    pub fn with_pool(mut self, others: &[&Mistral]) -> Result<Mistral> {
        for other in others {
            self.config.layers_compatible(&other.config)?;
            for layer in &other.pool {
                self.pool
                    .push(convert_layer(layer, self.dtype, &self.device, self.pack)?);
            }
        }
        Ok(self)
    }

    /// Sets the layer path. Every hop must name a pool layer.
    pub fn set_path(&mut self, path: LayerPath) -> Result<()> {
        path.validate(self.pool.len())?;
        self.path = path;
        Ok(())
    }

    pub fn path(&self) -> &LayerPath {
        &self.path
    }

    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Longest sequence (cached + new positions) the model accepts.
    pub fn max_context(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// An empty KV cache with one slot per hop of the current path.
    pub fn new_cache(&self, batch: usize) -> KvCache {
        KvCache::new(self.path.len(), batch)
    }

    /// An empty KV cache whose buffers hold `capacity` positions before they grow (allocated at the first
    /// forward pass): give it prompt + new tokens so decoding never reallocates.
    pub fn new_cache_with_capacity(&self, batch: usize, capacity: usize) -> KvCache {
        KvCache::with_capacity(self.path.len(), batch, capacity)
    }

    /// Token embeddings `[b, s, hidden]` in the model's dtype.
    pub fn embed_tokens(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (b, s) = input_ids.dims2().map_err(|_| {
            MistralError::BadInput(format!(
                "input_ids must be [batch, seq], got {:?}",
                input_ids.dims()
            ))
        })?;
        let ids = input_ids.to_dtype(DType::U32)?.flatten_all()?;
        if b * s > 0 {
            let max = ids.max(0)?.to_scalar::<u32>()? as usize;
            self.check_token_id(max)?;
        }
        self.embed_checked_ids(&ids, b, s)
    }

    /// Embeddings `[len, hidden]` of token ids held on the host: checked against the vocabulary there and
    /// uploaded, so nothing is read back from the device.
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Tensor> {
        if let Some(&max) = ids.iter().max() {
            self.check_token_id(max as usize)?;
        }
        let t = Tensor::from_slice(ids, ids.len(), &self.device)?;
        Ok(self.embed_checked_ids(&t, 1, ids.len())?.squeeze(0)?)
    }

    /// Refuses an id outside the vocabulary.
    pub(crate) fn check_token_id(&self, id: usize) -> Result<()> {
        match id < self.config.vocab_size {
            true => Ok(()),
            false => Err(MistralError::BadInput(format!(
                "token id {id} is outside the vocabulary of {} tokens",
                self.config.vocab_size
            ))),
        }
    }

    /// Embeddings of flat u32 ids already checked against the vocabulary (on the host, where they came from), so
    /// no readback from the device is needed.
    pub(crate) fn embed_checked_ids(&self, ids: &Tensor, b: usize, s: usize) -> Result<Tensor> {
        Ok(self
            .embed_tokens
            .index_select(&ids, 0)?
            .reshape((b, s, self.config.hidden_size))?)
    }

    /// Logits `[b, s, vocab]` (f32) for token ids `[b, s]`.
    ///
    /// `positions` `[b, s]` are the rotary positions (for left-padded batches: `cumsum(mask) - 1`).
    /// `attention_mask` `[b, past + s]` marks real tokens with 1 and padding with 0 over the cached and the
    /// new positions; `None` means no padding. The cache is extended by `s` positions.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let embeds = self.embed_tokens(input_ids)?;
        self.forward_embeds(&embeds, positions, attention_mask, cache)
    }

    /// As [`Mistral::forward`], but only the last position's logits `[b, vocab]`.
    pub fn forward_last(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let embeds = self.embed_tokens(input_ids)?;
        self.forward_embeds_last(&embeds, positions, attention_mask, cache)
    }

    /// Logits `[b, s, vocab]` (f32) for input embeddings `[b, s, hidden]` (LLaVA splices image features in).
    pub fn forward_embeds(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let hidden = self.hidden_states(embeds, positions, attention_mask, cache)?;
        self.logits(&hidden)
    }

    /// Last-position logits `[b, vocab]` for input embeddings.
    pub fn forward_embeds_last(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let hidden = self.hidden_states(embeds, positions, attention_mask, cache)?;
        let s = hidden.dim(1)?;
        let last = hidden.narrow(1, s - 1, 1)?;
        Ok(self.logits(&last)?.squeeze(1)?)
    }

    /// The LM head applied to final hidden states `[b, s, hidden]`: f32 logits `[b, s, vocab]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let logits = match &self.lm_head {
            Some(head) => head.forward(hidden)?,
            None => linear(hidden, &self.embed_tokens)?,
        };
        Ok(logits.to_dtype(DType::F32)?)
    }

    /// Final-norm hidden states `[b, s, hidden]` along the current path.
    ///
    /// The position ids are read back to the host to be checked against the context (one small readback per
    /// call); generation holds its positions on the host already and uses [`Mistral::forward_last_step`],
    /// which needs no readback at all.
    pub fn hidden_states(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (b, s) = self.check_step(embeds, cache)?;
        let past = cache.seq_len();
        let needed = self.check_positions(
            read_positions(positions, b, s)?.iter().flatten().copied(),
            past + s,
        )?;
        let positions = positions
            .to_dtype(DType::U32)?
            .flatten_all()?
            .to_device(&self.device)?;
        let pad = match attention_mask {
            None => None,
            Some(m) => {
                let t = past + s;
                if m.dims() != [b, t] {
                    return Err(MistralError::BadInput(format!(
                        "attention_mask must be [batch, past + seq] = [{b}, {t}], got {:?}",
                        m.dims()
                    )));
                }
                let m = m.to_dtype(DType::U8)?;
                // On the host, reading the mask costs nothing and lets an all-ones mask take the unmasked path.
                let all_visible =
                    m.device().is_cpu() && m.to_vec2::<u8>()?.iter().flatten().all(|&v| v != 0);
                (!all_visible)
                    .then(|| m.to_device(&self.device))
                    .transpose()?
            }
        };
        self.hidden_states_checked(embeds, &positions, needed, pad.as_ref(), b, s, cache)
    }

    /// Last-position logits `[b, vocab]` for one generation step whose position ids (`[b][s]`) and attention mask
    /// (`[b][past + s]`, `false` = padding) the caller holds on the host: both are checked there and uploaded,
    /// and the rotary angles and the attention bias are built on the model's device, so nothing is read back.
    pub fn forward_last_step(
        &self,
        embeds: &Tensor,
        positions: &[Vec<u32>],
        attention_mask: &[Vec<bool>],
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (b, s) = self.check_step(embeds, cache)?;
        let t = cache.seq_len() + s;
        if positions.len() != b || positions.iter().any(|row| row.len() != s) {
            return Err(MistralError::BadInput(format!(
                "positions must be [batch, seq] = [{b}, {s}]"
            )));
        }
        if attention_mask.len() != b || attention_mask.iter().any(|row| row.len() != t) {
            return Err(MistralError::BadInput(format!(
                "attention_mask must be [batch, past + seq] = [{b}, {t}]"
            )));
        }
        let needed = self.check_positions(positions.iter().flatten().copied(), t)?;
        let flat: Vec<u32> = positions.iter().flatten().copied().collect();
        let positions = Tensor::from_vec(flat, b * s, &self.device)?;
        let pad = if attention_mask.iter().flatten().all(|&m| m) {
            None
        } else {
            let flat: Vec<u8> = attention_mask
                .iter()
                .flatten()
                .map(|&m| u8::from(m))
                .collect();
            Some(Tensor::from_vec(flat, (b, t), &self.device)?)
        };
        let hidden =
            self.hidden_states_checked(embeds, &positions, needed, pad.as_ref(), b, s, cache)?;
        let last = hidden.narrow(1, s - 1, 1)?;
        Ok(self.logits(&last)?.squeeze(1)?)
    }

    /// Checks the embeddings' shape and that `cache` fits this model's path; returns `(batch, seq)`.
    fn check_step(&self, embeds: &Tensor, cache: &KvCache) -> Result<(usize, usize)> {
        let (b, s, h) = embeds.dims3().map_err(|_| {
            MistralError::BadInput(format!(
                "embeddings must be [batch, seq, hidden], got {:?}",
                embeds.dims()
            ))
        })?;
        if h != self.config.hidden_size {
            return Err(MistralError::BadInput(format!(
                "embeddings have width {h}, the model's hidden size is {}",
                self.config.hidden_size
            )));
        }
        if s == 0 {
            return Err(MistralError::BadInput(
                "empty input: at least one position is needed".into(),
            ));
        }
        if cache.num_hops() != self.path.len() || cache.batch() != b {
            return Err(MistralError::BadInput(format!(
                "the cache was made for {} hops and {} rows, this call has {} hops and {b} rows; \
                 make it with new_cache after setting the path",
                cache.num_hops(),
                cache.batch(),
                self.path.len()
            )));
        }
        Ok((b, s))
    }

    /// Checks that `total` cached + new positions and every position id fit the context; returns the number of
    /// rotary rows the ids need (largest id + 1).
    fn check_positions(&self, ids: impl Iterator<Item = u32>, total: usize) -> Result<usize> {
        let max = self.config.max_position_embeddings;
        if total > max {
            return Err(MistralError::ContextOverflow {
                requested: total,
                max,
            });
        }
        let needed = ids.max().map_or(0, |p| p as usize + 1);
        if needed > max {
            return Err(MistralError::ContextOverflow {
                requested: needed,
                max,
            });
        }
        Ok(needed)
    }

    /// The forward pass proper, on checked inputs already on the device: flat u32 `positions` (`b * s`, each
    /// `< needed`) and the optional u8 padding mask `[b, past + s]`.
    #[allow(clippy::too_many_arguments)]
    fn hidden_states_checked(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        needed: usize,
        pad: Option<&Tensor>,
        b: usize,
        s: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let past = cache.seq_len();
        let (cos, sin) = self.rotary.cos_sin(positions, needed, b, s, self.dtype)?;
        let mask = self.attention_bias(pad, b, s, past)?;
        let x = embeds.to_dtype(self.dtype)?.to_device(&self.device)?;
        let out = self.run_path(x, &cos, &sin, mask.as_ref(), cache)?;
        self.norm.forward(&out)
    }

    /// Runs the hops. See [`crate::path`] for the two scale conventions written out.
    fn run_path(
        &self,
        mut x: Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let mut branch: Option<Tensor> = None;
        for (t, hop) in self.path.hops().iter().enumerate() {
            let layer = &self.pool[hop.layer];
            x = match (self.path.convention(), branch.take()) {
                (ScaleConvention::ReleasedBranch, Some(m)) => (x + scaled(m, hop.scale)?)?,
                (_, _) => scaled(x, hop.scale)?,
            };
            let (h, m) = layer.forward_split(&x, cos, sin, mask, cache.slot_mut(t))?;
            match self.path.convention() {
                ScaleConvention::ReleasedBranch => {
                    x = h;
                    branch = Some(m);
                }
                ScaleConvention::PaperStream => x = (h + m)?,
            }
        }
        match branch {
            Some(m) => Ok((x + m)?),
            None => Ok(x),
        }
    }

    /// The additive f32 mask `[rows, 1, s, past + s]` (0 = visible, f32::MIN = hidden; `rows` is `b` with
    /// padding, else 1), or `None` when every query sees every key. Keys are indexed by cache position: causal
    /// `k <= q`, sliding window `k > q - window` (transformers' rule: a token sees itself and the `window - 1`
    /// before it), and padding from `pad` (`[b, past + s]`, 0 = padding). Fully hidden rows (queries at
    /// padding) get a large finite negative instead of -inf so they stay finite. Built with tensor ops on the
    /// model's device.
    fn attention_bias(
        &self,
        pad: Option<&Tensor>,
        b: usize,
        s: usize,
        past: usize,
    ) -> Result<Option<Tensor>> {
        attention_bias(pad, b, s, past, self.config.sliding_window, &self.device)
    }
}

/// See [`Mistral::attention_bias`].
fn attention_bias(
    pad: Option<&Tensor>,
    b: usize,
    s: usize,
    past: usize,
    sliding_window: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let t = past + s;
    let window = sliding_window.filter(|&w| w < t);
    if s == 1 && pad.is_none() && window.is_none() {
        return Ok(None);
    }
    let queries = Tensor::arange(past as u32, t as u32, device)?.reshape((s, 1))?;
    let keys = Tensor::arange(0u32, t as u32, device)?.reshape((1, t))?;
    let mut visible = keys.broadcast_le(&queries)?;
    if let Some(w) = window {
        // k + w > q, with the keys shifted by w so that nothing goes negative.
        let shifted = Tensor::arange(w as u32, (t + w) as u32, device)?.reshape((1, t))?;
        visible = (visible * shifted.broadcast_gt(&queries)?)?;
    }
    let visible = match pad {
        None => visible.reshape((1, 1, s, t))?,
        Some(pad) => {
            let pad = pad.ne(0u8)?.reshape((b, 1, 1, t))?;
            pad.broadcast_mul(&visible.reshape((1, 1, s, t))?)?
        }
    };
    let zeros = Tensor::zeros(visible.shape(), DType::F32, device)?;
    let hidden = Tensor::full(f32::MIN, visible.shape(), device)?;
    Ok(Some(visible.where_cond(&zeros, &hidden)?))
}

/// `l` in `dtype` on `device` (another model's layer joining this model's pool). Weights that need no
/// conversion stay shared with the other model until one of the two writes them (copy on write).
fn convert_layer(
    l: &DecoderLayer,
    dtype: DType,
    device: &Device,
    pack: bool,
) -> Result<DecoderLayer> {
    let norm = |n: &RmsNorm| -> Result<RmsNorm> {
        Ok(n.with_weight(n.weight.converted(dtype, device)?)
            .with_cpu_kernel(pack))
    };
    let lin = |x: &Linear| x.converted(dtype, device, pack);
    let a = &l.self_attn;
    Ok(DecoderLayer {
        input_layernorm: norm(&l.input_layernorm)?,
        self_attn: Attention {
            q_proj: lin(&a.q_proj)?,
            k_proj: lin(&a.k_proj)?,
            v_proj: lin(&a.v_proj)?,
            o_proj: lin(&a.o_proj)?,
            ..a.clone()
        },
        post_attention_layernorm: norm(&l.post_attention_layernorm)?,
        mlp: Mlp {
            gate_proj: lin(&l.mlp.gate_proj)?,
            up_proj: lin(&l.mlp.up_proj)?,
            down_proj: lin(&l.mlp.down_proj)?,
        },
    })
}

/// `x * scale`, skipping the multiply for 1 (which would be exact anyway).
fn scaled(x: Tensor, scale: f64) -> Result<Tensor> {
    if scale == 1.0 {
        Ok(x)
    } else {
        Ok((x * scale)?)
    }
}

/// Positions `[b, s]` of any integer dtype, read to the host.
fn read_positions(positions: &Tensor, b: usize, s: usize) -> Result<Vec<Vec<u32>>> {
    if positions.dims() != [b, s] {
        return Err(MistralError::BadInput(format!(
            "positions must be [batch, seq] = [{b}, {s}], got {:?}",
            positions.dims()
        )));
    }
    let p = match positions.dtype() {
        DType::I64 => {
            let rows = positions.to_vec2::<i64>()?;
            if rows.iter().flatten().any(|&p| p < 0) {
                return Err(MistralError::BadInput(
                    "positions must not be negative".into(),
                ));
            }
            rows.into_iter()
                .map(|r| r.into_iter().map(|p| p as u32).collect())
                .collect()
        }
        DType::U32 => positions.to_vec2::<u32>()?,
        other => {
            return Err(MistralError::BadInput(format!(
                "positions must be u32 or i64, got {other:?}"
            )));
        }
    };
    Ok(p)
}

/// `positions` `[b, s]` for a batch continuing after `past` cached positions with no padding.
pub fn sequential_positions(b: usize, s: usize, past: usize, device: &Device) -> Result<Tensor> {
    let row: Vec<u32> = (past as u32..(past + s) as u32).collect();
    Ok(Tensor::new(row.as_slice(), device)?
        .unsqueeze(0)?
        .repeat((b, 1))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bias built with tensor ops equals the rule written out element by element.
    #[test]
    fn attention_bias_follows_causality_window_and_padding() {
        let device = Device::Cpu;
        let cases: [(usize, usize, usize, Option<usize>, bool); 6] = [
            (2, 5, 0, None, true),
            (2, 1, 6, None, true),
            (1, 4, 3, Some(3), false),
            (3, 3, 4, Some(2), true),
            (2, 1, 5, Some(4), false),
            (2, 6, 0, Some(64), true),
        ];
        for (b, s, past, window, padded) in cases {
            let t = past + s;
            // Row r is left-padded by r positions.
            let pad_rows: Vec<Vec<u8>> = (0..b)
                .map(|r| (0..t).map(|k| u8::from(k >= r)).collect())
                .collect();
            let pad = padded
                .then(|| Tensor::from_vec(pad_rows.concat(), (b, t), &device))
                .transpose()
                .unwrap();
            let got = attention_bias(pad.as_ref(), b, s, past, window, &device).unwrap();
            let rows = if padded { b } else { 1 };
            let mut want = vec![0f32; rows * s * t];
            for r in 0..rows {
                for i in 0..s {
                    let q = past + i;
                    for k in 0..t {
                        let visible = k <= q
                            && window.filter(|&w| w < t).is_none_or(|w| k + w > q)
                            && (!padded || pad_rows[r][k] != 0);
                        if !visible {
                            want[(r * s + i) * t + k] = f32::MIN;
                        }
                    }
                }
            }
            match got {
                None => assert!(
                    want.iter().all(|&v| v == 0.0) && s == 1,
                    "case {b} {s} {past} {window:?}"
                ),
                Some(bias) => {
                    assert_eq!(bias.dims(), [rows, 1, s, t]);
                    assert_eq!(
                        bias.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                        want,
                        "case {b} {s} {past} {window:?}"
                    );
                }
            }
        }
    }
}
