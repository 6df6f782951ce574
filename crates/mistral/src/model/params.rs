//! Weights read and replaced in place, by checkpoint name: the phase-2 search writes each candidate's merged
//! weights into a live model without reloading it.

use candle_core::{Device, Tensor};

use super::Mistral;
use crate::error::{MistralError, Result};
use crate::layers::{DecoderLayer, Linear};

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

    /// The parameter called `name` (checkpoint naming; with tied embeddings `lm_head.weight` is the
    /// embedding matrix). Packed CPU weights are unpacked into a new tensor.
    pub fn parameter(&self, name: &str) -> Result<Tensor> {
        let unknown = || MistralError::UnknownParameter(name.to_string());
        match name {
            "model.embed_tokens.weight" => return Ok(self.embed_tokens.clone()),
            "model.norm.weight" => return Ok(self.norm.weight.clone()),
            "lm_head.weight" => {
                return match &self.lm_head {
                    Some(head) => head.weight(),
                    None => Ok(self.embed_tokens.clone()),
                }
            }
            _ => {}
        }
        let (i, rest) = split_layer_name(name).ok_or_else(unknown)?;
        let layer = self.pool.get(i).ok_or_else(unknown)?;
        if let Some(norm) = layer_norm(layer, rest) {
            return Ok(norm.clone());
        }
        layer_linear(layer, rest).ok_or_else(unknown)?.weight()
    }

    /// Replaces the parameter `name` with `value` (converted to the model's dtype and device) without
    /// reloading anything: the phase-2 search writes each candidate's merged weights into a live model.
    /// The shape must match. With tied embeddings, setting either `lm_head.weight` or
    /// `model.embed_tokens.weight` sets both.
    pub fn set_tensor(&mut self, name: &str, value: &Tensor) -> Result<()> {
        let (dtype, device, pack) = (self.dtype, self.device.clone(), self.pack);
        let mismatch = |expected: Vec<usize>| MistralError::ShapeMismatch {
            name: name.to_string(),
            expected,
            actual: value.dims().to_vec(),
        };
        match self.slot_mut(name)? {
            ParamSlot::Tensor(slot) => {
                if slot.dims() != value.dims() {
                    return Err(mismatch(slot.dims().to_vec()));
                }
                *slot = value.to_device(&device)?.to_dtype(dtype)?;
            }
            ParamSlot::Linear(slot) => {
                let (n, k) = slot.dims();
                if value.dims() != [n, k] {
                    return Err(mismatch(vec![n, k]));
                }
                *slot = Linear::new(value.to_device(&device)?.to_dtype(dtype)?, pack)?;
            }
        }
        Ok(())
    }

    /// [`Mistral::set_tensor`] from a flat row-major f32 slice.
    pub fn set_tensor_f32(&mut self, name: &str, data: &[f32]) -> Result<()> {
        let shape = match self.slot_mut(name)? {
            ParamSlot::Tensor(t) => t.dims().to_vec(),
            ParamSlot::Linear(l) => {
                let (n, k) = l.dims();
                vec![n, k]
            }
        };
        let numel: usize = shape.iter().product();
        if data.len() != numel {
            return Err(MistralError::ShapeMismatch {
                name: name.to_string(),
                expected: shape,
                actual: vec![data.len()],
            });
        }
        let t = Tensor::from_slice(data, shape, &Device::Cpu)?;
        self.set_tensor(name, &t)
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
    Tensor(&'a mut Tensor),
    Linear(&'a mut Linear),
}

fn split_layer_name(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (i, rest) = rest.split_once('.')?;
    Some((i.parse().ok()?, rest))
}

fn layer_norm<'a>(l: &'a DecoderLayer, name: &str) -> Option<&'a Tensor> {
    match name {
        "input_layernorm.weight" => Some(&l.input_layernorm.weight),
        "post_attention_layernorm.weight" => Some(&l.post_attention_layernorm.weight),
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
