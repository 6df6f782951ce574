//! Where weights come from: anything that can hand out named tensors. The model checks every shape against
//! its config; checking the files themselves is the checkpoint crate's job.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::error::{MistralError, Result};
use crate::weight::Weight;

/// A store of named tensors (a checkpoint, a map built in memory, a merge result...).
pub trait TensorSource {
    /// The tensor called `name` on `device` in its stored dtype, or `None` when there is none.
    fn tensor(&self, name: &str, device: &Device) -> Result<Option<Tensor>>;

    /// A small non-float tensor (e.g. `evomistral`'s integer `model.input_layers`) on the CPU. Sources that
    /// only hand out floats override this.
    fn raw_tensor(&self, name: &str) -> Result<Option<Tensor>> {
        self.tensor(name, &Device::Cpu)
    }

    /// Whether every tensor [`TensorSource::tensor`] hands out has storage of its own, held by nothing else
    /// (e.g. read from a file). The model then writes new values ([`crate::Mistral::write_f32`]) into it
    /// from the first write. When `false` (the default) the model assumes the source may keep the tensors,
    /// as a map in memory does, and copies each weight the first time it is written, so the source never
    /// sees the model's writes.
    fn fresh_storage(&self) -> bool {
        false
    }
}

impl TensorSource for evomerge_checkpoint::Checkpoint {
    fn tensor(&self, name: &str, device: &Device) -> Result<Option<Tensor>> {
        if !self.contains(name) {
            return Ok(None);
        }
        let view = evomerge_checkpoint::Checkpoint::tensor(self, name)?;
        let dtype = match view.dtype {
            evomerge_checkpoint::Dtype::F32 => DType::F32,
            evomerge_checkpoint::Dtype::F16 => DType::F16,
            evomerge_checkpoint::Dtype::BF16 => DType::BF16,
        };
        Ok(Some(Tensor::from_raw_buffer(
            view.data, dtype, view.shape, device,
        )?))
    }

    /// Every tensor is copied out of the file.
    fn fresh_storage(&self) -> bool {
        true
    }

    /// The checkpoint reader hands out floats only, so integer tensors are read from the (already
    /// validated) safetensors files directly.
    fn raw_tensor(&self, name: &str) -> Result<Option<Tensor>> {
        if !self.contains(name) {
            return Ok(None);
        }
        for file in self.safetensors_files() {
            // SAFETY: read-only map of a file the checkpoint reader has already validated.
            let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(&file)? };
            if st.get(name).is_ok() {
                return Ok(Some(st.load(name, &Device::Cpu)?));
            }
        }
        Ok(None)
    }
}

impl TensorSource for HashMap<String, Tensor> {
    fn tensor(&self, name: &str, device: &Device) -> Result<Option<Tensor>> {
        match self.get(name) {
            Some(t) => Ok(Some(t.to_device(device)?)),
            None => Ok(None),
        }
    }
}

impl TensorSource for candle_core::safetensors::MmapedSafetensors {
    fn tensor(&self, name: &str, device: &Device) -> Result<Option<Tensor>> {
        match self.get(name) {
            Ok(_) => Ok(Some(self.load(name, device)?)),
            Err(_) => Ok(None),
        }
    }

    /// Every tensor is copied out of the mapped file.
    fn fresh_storage(&self) -> bool {
        true
    }
}

/// How the model's tensors are named in a checkpoint: `{prefix}embed_tokens.weight`,
/// `{prefix}layers.{i}.…`, `{prefix}norm.weight` and `lm_head`. LLaVA checkpoints nest the language model
/// (e.g. prefix `language_model.model.`, lm_head `language_model.lm_head.weight`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightNames {
    pub prefix: String,
    pub lm_head: String,
}

impl Default for WeightNames {
    fn default() -> Self {
        WeightNames {
            prefix: "model.".into(),
            lm_head: "lm_head.weight".into(),
        }
    }
}

/// Options for loading a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// Compute dtype. `None`: the checkpoint's, except that bf16 becomes f32 on CPU (bf16 matrix-vector
    /// products are 10–20× slower there than f16/f32).
    pub dtype: Option<DType>,
    pub names: WeightNames,
    /// Run f32 models on the CPU with the crate's own kernels (on CPUs with AVX2/FMA; a no-op elsewhere):
    /// linear-layer weights packed once, at load, and re-packed in place on every write, for our matmul, and the attention
    /// core and `silu(gate) * up` fused. Off: candle's operations throughout. Default: on.
    pub cpu_kernels: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            dtype: None,
            names: WeightNames::default(),
            cpu_kernels: true,
        }
    }
}

impl LoadOptions {
    pub(crate) fn resolve_dtype(&self, stored: DType) -> DType {
        match (self.dtype, stored, &self.device) {
            (Some(d), _, _) => d,
            (None, DType::BF16, Device::Cpu) => DType::F32,
            (None, d, _) => d,
        }
    }
}

/// Loads `name`, checks its shape and converts it to `dtype`.
pub(crate) fn load_checked(
    source: &dyn TensorSource,
    name: &str,
    shape: &[usize],
    dtype: DType,
    device: &Device,
) -> Result<Weight> {
    let t = source
        .tensor(name, device)?
        .ok_or_else(|| MistralError::MissingTensor(name.to_string()))?;
    check_float(name, &t)?;
    if t.dims() != shape {
        return Err(MistralError::ShapeMismatch {
            name: name.to_string(),
            expected: shape.to_vec(),
            actual: t.dims().to_vec(),
        });
    }
    // A conversion allocates, so the result is the model's alone whatever the source keeps.
    let converted = t.dtype() != dtype;
    let t = t.to_dtype(dtype)?;
    Ok(if converted || source.fresh_storage() {
        Weight::owned(t)
    } else {
        Weight::shared(t)
    })
}

pub(crate) fn check_float(name: &str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => Ok(()),
        other => Err(MistralError::BadDtype {
            name: name.to_string(),
            dtype: format!("{other:?}"),
            reason: "model weights must be floating point".into(),
        }),
    }
}
