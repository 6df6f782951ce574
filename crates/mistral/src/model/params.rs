//! Weights read and replaced in place, by checkpoint name: the phase-2 search writes each candidate's merged
//! weights into a live model without reloading it.

use candle_core::Tensor;

use super::Mistral;
use crate::error::{MistralError, Result};
use crate::layers::{DecoderLayer, Linear, RmsNorm};
use crate::weight::Weight;

impl Mistral {
    /// Names of all parameters, in checkpoint naming (`model.layers.{i}.…` over the whole pool).
    pub fn parameter_names(&self) -> Vec<String> {
        let mut names = vec!["model.embed_tokens.weight".to_string()];
        for i in 0..self.pool.len() {
            for (name, _) in super::layer_tensor_shapes(&self.config).iter() {
                names.push(format!("model.layers.{i}.{name}"));
            }
        }
        names.push("model.norm.weight".into());
        if self.lm_head.is_some() {
            names.push("lm_head.weight".into());
        }
        names
    }

    /// The shape of the parameter called `name` (checkpoint naming), without reading it; `None` for a name
    /// the model does not have.
    pub fn parameter_shape(&self, name: &str) -> Option<Vec<usize>> {
        match name {
            "model.embed_tokens.weight" => return Some(self.embed_tokens.dims().to_vec()),
            "model.norm.weight" => return Some(self.norm.weight.dims().to_vec()),
            "lm_head.weight" => {
                return Some(match &self.lm_head {
                    Some(head) => {
                        let (n, k) = head.dims();
                        vec![n, k]
                    }
                    None => self.embed_tokens.dims().to_vec(),
                })
            }
            _ => {}
        }
        let (i, rest) = split_layer_name(name)?;
        let layer = self.pool.get(i)?;
        if let Some(norm) = layer_norm(layer, rest) {
            return Some(norm.weight.dims().to_vec());
        }
        let (n, k) = layer_linear(layer, rest)?.dims();
        Some(vec![n, k])
    }

    /// The parameter called `name` (checkpoint naming; with tied embeddings `lm_head.weight` is the
    /// embedding matrix). Packed CPU weights are unpacked into a new tensor. The tensor keeps its values when
    /// the model is written later (the model copies that weight before its next write, so reading
    /// parameters in a write loop costs an allocation per write; use [`Mistral::parameter_shape`] for
    /// shapes).
    pub fn parameter(&self, name: &str) -> Result<Tensor> {
        let unknown = || MistralError::UnknownParameter(name.to_string());
        match name {
            "model.embed_tokens.weight" => return Ok(self.embed_tokens.share()),
            "model.norm.weight" => return Ok(self.norm.weight.share()),
            "lm_head.weight" => {
                return match &self.lm_head {
                    Some(head) => head.weight(),
                    None => Ok(self.embed_tokens.share()),
                }
            }
            _ => {}
        }
        let (i, rest) = split_layer_name(name).ok_or_else(unknown)?;
        let layer = self.pool.get(i).ok_or_else(unknown)?;
        if let Some(norm) = layer_norm(layer, rest) {
            return Ok(norm.weight.share());
        }
        layer_linear(layer, rest).ok_or_else(unknown)?.weight()
    }

    /// Overwrites the parameter `name` (checkpoint naming) with `data`, row-major f32 with as many values
    /// as the parameter's shape, rounded to the model's dtype to nearest even. The values go into the
    /// parameter's existing storage: on the CPU nothing is allocated (a packed f32 weight is re-packed into
    /// its existing panels); on a GPU the values are converted on the host and copied into the existing
    /// device buffer through one temporary device tensor. The phase-2 search writes every candidate into
    /// one live model this way.
    ///
    /// A weight that someone else may also hold is copied before the write instead (copy on write), so
    /// the write never shows outside this model: a clone of the model, a model whose pool was built from
    /// this one ([`Mistral::with_pool`]), a tensor returned by [`Mistral::parameter`], or a tensor of the
    /// source it was loaded from unless that source hands out storage of its own
    /// ([`crate::TensorSource::fresh_storage`]). Later writes to that weight go in place again.
    ///
    /// With tied embeddings `lm_head.weight` and `model.embed_tokens.weight` name the same matrix: writing
    /// either changes both the embedding lookup and the logits.
    pub fn write_f32(&mut self, name: &str, data: &[f32]) -> Result<()> {
        let shape = self
            .parameter_shape(name)
            .ok_or_else(|| MistralError::UnknownParameter(name.to_string()))?;
        if data.len() != shape.iter().product::<usize>() {
            return Err(MistralError::ShapeMismatch {
                name: name.to_string(),
                expected: shape,
                actual: vec![data.len()],
            });
        }
        match self.slot_mut(name)? {
            ParamSlot::Tensor(w) => w.write_f32(data),
            ParamSlot::Linear(l) => l.write_f32(data),
        }
    }

    /// Overwrites the parameter `name` with `value` (same shape, any float dtype, any device), converted to
    /// the model's dtype, in place as [`Mistral::write_f32`]. A contiguous f32 CPU `value` is read
    /// directly; any other is converted first (one temporary).
    pub fn set_tensor(&mut self, name: &str, value: &Tensor) -> Result<()> {
        let shape = self
            .parameter_shape(name)
            .ok_or_else(|| MistralError::UnknownParameter(name.to_string()))?;
        if value.dims() != shape.as_slice() {
            return Err(MistralError::ShapeMismatch {
                name: name.to_string(),
                expected: shape,
                actual: value.dims().to_vec(),
            });
        }
        crate::weights::check_float(name, value)?;
        match self.slot_mut(name)? {
            ParamSlot::Tensor(w) => w.write(value),
            ParamSlot::Linear(l) => l.write(value),
        }
    }

    /// [`Mistral::write_f32`] (kept for callers of the earlier name).
    pub fn set_tensor_f32(&mut self, name: &str, data: &[f32]) -> Result<()> {
        self.write_f32(name, data)
    }

    /// The host address of the storage holding the parameter `name` (`None` off the CPU): the same address
    /// before and after a write shows that the write went in place. For tests and diagnostics.
    #[doc(hidden)]
    pub fn parameter_data_addr(&self, name: &str) -> Result<Option<usize>> {
        let unknown = || MistralError::UnknownParameter(name.to_string());
        match name {
            "model.embed_tokens.weight" => return Ok(self.embed_tokens.data_addr()),
            "model.norm.weight" => return Ok(self.norm.weight.data_addr()),
            "lm_head.weight" => {
                return Ok(match &self.lm_head {
                    Some(head) => head.data_addr(),
                    None => self.embed_tokens.data_addr(),
                })
            }
            _ => {}
        }
        let (i, rest) = split_layer_name(name).ok_or_else(unknown)?;
        let layer = self.pool.get(i).ok_or_else(unknown)?;
        if let Some(norm) = layer_norm(layer, rest) {
            return Ok(norm.weight.data_addr());
        }
        Ok(layer_linear(layer, rest).ok_or_else(unknown)?.data_addr())
    }

    fn slot_mut(&mut self, name: &str) -> Result<ParamSlot<'_>> {
        let unknown = || MistralError::UnknownParameter(name.to_string());
        match name {
            "model.embed_tokens.weight" => return Ok(ParamSlot::Tensor(&mut self.embed_tokens)),
            "model.norm.weight" => return Ok(ParamSlot::Tensor(&mut self.norm.weight)),
            "lm_head.weight" => {
                return Ok(match self.lm_head.as_mut() {
                    Some(h) => ParamSlot::Linear(h),
                    None => ParamSlot::Tensor(&mut self.embed_tokens),
                })
            }
            _ => {}
        }
        let (i, rest) = split_layer_name(name).ok_or_else(unknown)?;
        let layer = self.pool.get_mut(i).ok_or_else(unknown)?;
        match rest {
            "input_layernorm.weight" => Ok(ParamSlot::Tensor(&mut layer.input_layernorm.weight)),
            "post_attention_layernorm.weight" => Ok(ParamSlot::Tensor(
                &mut layer.post_attention_layernorm.weight,
            )),
            _ => layer_linear_mut(layer, rest)
                .map(ParamSlot::Linear)
                .ok_or_else(unknown),
        }
    }
}

/// Where a parameter lives: a plain tensor (embeddings, norms) or a linear layer's weight.
enum ParamSlot<'a> {
    Tensor(&'a mut Weight),
    Linear(&'a mut Linear),
}

fn split_layer_name(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (i, rest) = rest.split_once('.')?;
    Some((i.parse().ok()?, rest))
}

fn layer_norm<'a>(l: &'a DecoderLayer, name: &str) -> Option<&'a RmsNorm> {
    match name {
        "input_layernorm.weight" => Some(&l.input_layernorm),
        "post_attention_layernorm.weight" => Some(&l.post_attention_layernorm),
        _ => None,
    }
}

fn layer_linear<'a>(l: &'a DecoderLayer, name: &str) -> Option<&'a Linear> {
    Some(match name {
        "self_attn.q_proj.weight" => &l.self_attn.q_proj,
        "self_attn.k_proj.weight" => &l.self_attn.k_proj,
        "self_attn.v_proj.weight" => &l.self_attn.v_proj,
        "self_attn.o_proj.weight" => &l.self_attn.o_proj,
        "mlp.gate_proj.weight" => &l.mlp.gate_proj,
        "mlp.up_proj.weight" => &l.mlp.up_proj,
        "mlp.down_proj.weight" => &l.mlp.down_proj,
        _ => return None,
    })
}

fn layer_linear_mut<'a>(l: &'a mut DecoderLayer, name: &str) -> Option<&'a mut Linear> {
    Some(match name {
        "self_attn.q_proj.weight" => &mut l.self_attn.q_proj,
        "self_attn.k_proj.weight" => &mut l.self_attn.k_proj,
        "self_attn.v_proj.weight" => &mut l.self_attn.v_proj,
        "self_attn.o_proj.weight" => &mut l.self_attn.o_proj,
        "mlp.gate_proj.weight" => &mut l.mlp.gate_proj,
        "mlp.up_proj.weight" => &mut l.mlp.up_proj,
        "mlp.down_proj.weight" => &mut l.mlp.down_proj,
        _ => return None,
    })
}
