//! The `evomistral` checkpoint format of SakanaAI's data-flow merges (EvoLLM-JP-v1-10B): a Mistral
//! checkpoint whose `model.layers.*` are a layer pool, plus
//! - `config.json`: `model_type: "evomistral"`, `num_hops`, `num_hidden_layers` = pool size;
//! - `model.input_layers` `[num_hops]` int32: the pool layer of each hop;
//! - `model.input_scales` `[num_hops]` float32: the scales.
//!
//! Paths load with [`ScaleConvention::ReleasedBranch`](crate::path::ScaleConvention) (see [`crate::path`]);
//! which entry of `input_scales` hop t uses is chosen by [`ScaleLookup`].

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::config::{Config, ModelType};
use crate::error::{MistralError, Result};
use crate::model::Mistral;
use crate::path::{LayerPath, ScaleConvention, ScaleLookup};
use crate::weights::{LoadOptions, TensorSource};

pub const INPUT_LAYERS: &str = "model.input_layers";
pub const INPUT_SCALES: &str = "model.input_scales";

/// Loads an `evomistral` model from a tensor source: the pool, then the path from `input_layers` and
/// `input_scales`.
pub fn load(
    config: &Config,
    source: &dyn TensorSource,
    opts: &LoadOptions,
    lookup: ScaleLookup,
) -> Result<Mistral> {
    if config.model_type != ModelType::EvoMistral {
        return Err(MistralError::Evomistral(format!(
            "config.json says model_type {:?}, expected \"evomistral\"",
            config.model_type
        )));
    }
    let num_hops = config
        .num_hops
        .ok_or(MistralError::MissingConfigField("num_hops"))?;
    let layers = read_ints(source, INPUT_LAYERS)?;
    let scales = read_floats(source, INPUT_SCALES)?;
    if layers.len() != num_hops || scales.len() != num_hops {
        return Err(MistralError::Evomistral(format!(
            "config.json says num_hops = {num_hops}, but {INPUT_LAYERS} has {} entries and {INPUT_SCALES} {}",
            layers.len(),
            scales.len()
        )));
    }
    let path = LayerPath::from_evomistral(&layers, &scales, lookup)?;
    let mut model = Mistral::load(config, source, opts)?;
    model.set_path(path)?;
    Ok(model)
}

/// Loads an `evomistral` directory (`config.json` + safetensors).
pub fn load_dir(dir: &Path, opts: &LoadOptions, lookup: ScaleLookup) -> Result<Mistral> {
    let ckpt = evomerge_checkpoint::Checkpoint::open_dir(dir)?;
    let config = Config::from_json(ckpt.config())?;
    load(&config, &ckpt, opts, lookup)
}

/// The tensors and `config.json` of `model` in `evomistral` format: the whole pool as `model.layers.*`,
/// the path as `input_layers` (int32) and `input_scales` (float32, one per hop, to be read
/// [`ScaleLookup::ByHop`]). Only [`ScaleConvention::ReleasedBranch`] paths have this form.
pub fn to_tensors(model: &Mistral) -> Result<(serde_json::Value, HashMap<String, Tensor>)> {
    let path = model.path();
    if path.convention() != ScaleConvention::ReleasedBranch {
        return Err(MistralError::Evomistral(
            "only paths with the released (branch) scale convention can be saved as evomistral"
                .into(),
        ));
    }
    let mut tensors = HashMap::new();
    for name in model.parameter_names() {
        tensors.insert(name.clone(), model.parameter(&name)?);
    }
    let layers: Vec<i32> = path.hops().iter().map(|h| h.layer as i32).collect();
    let scales: Vec<f32> = path.hops().iter().map(|h| h.scale as f32).collect();
    let n = layers.len();
    tensors.insert(
        INPUT_LAYERS.into(),
        Tensor::from_vec(layers, n, &Device::Cpu)?,
    );
    tensors.insert(
        INPUT_SCALES.into(),
        Tensor::from_vec(scales, n, &Device::Cpu)?,
    );
    let mut config = model.config().clone();
    config.model_type = ModelType::EvoMistral;
    config.num_hops = Some(n);
    config.num_hidden_layers = model.pool_len();
    let mut json = config.to_json();
    json["architectures"] = serde_json::json!(["EvoMistralForCausalLM"]);
    json["torch_dtype"] = serde_json::json!(dtype_name(model.dtype()));
    Ok((json, tensors))
}

/// Writes `model` as an `evomistral` checkpoint into `dir` (created if needed): `config.json` and
/// `model.safetensors`, each written to a temporary file and renamed into place.
pub fn save(model: &Mistral, dir: &Path) -> Result<()> {
    let (json, tensors) = to_tensors(model)?;
    std::fs::create_dir_all(dir).map_err(|source| MistralError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let tensors: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| v.to_device(&Device::Cpu).map(|v| (k, v)))
        .collect::<candle_core::Result<_>>()?;
    let st_tmp = dir.join(".model.safetensors.tmp");
    candle_core::safetensors::save(&tensors, &st_tmp)?;
    rename(&st_tmp, &dir.join("model.safetensors"))?;
    let cfg_tmp = dir.join(".config.json.tmp");
    let text = serde_json::to_string_pretty(&json).map_err(|source| MistralError::Json {
        path: cfg_tmp.clone(),
        source,
    })?;
    std::fs::write(&cfg_tmp, text).map_err(|source| MistralError::Io {
        path: cfg_tmp.clone(),
        source,
    })?;
    rename(&cfg_tmp, &dir.join("config.json"))
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|source| MistralError::Io {
        path: to.to_path_buf(),
        source,
    })
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    }
}

fn fetch(source: &dyn TensorSource, name: &str) -> Result<Tensor> {
    let t = source
        .raw_tensor(name)?
        .ok_or_else(|| MistralError::Evomistral(format!("tensor `{name}` is missing")))?;
    if t.rank() != 1 {
        return Err(MistralError::Evomistral(format!(
            "`{name}` must be 1-D, has shape {:?}",
            t.dims()
        )));
    }
    Ok(t)
}

fn read_ints(source: &dyn TensorSource, name: &str) -> Result<Vec<i64>> {
    let t = fetch(source, name)?;
    match t.dtype() {
        DType::I64 => Ok(t.to_vec1::<i64>()?),
        DType::I32 => Ok(t.to_vec1::<i32>()?.into_iter().map(i64::from).collect()),
        DType::I16 => Ok(t.to_vec1::<i16>()?.into_iter().map(i64::from).collect()),
        DType::U32 => Ok(t.to_vec1::<u32>()?.into_iter().map(i64::from).collect()),
        DType::U8 => Ok(t.to_vec1::<u8>()?.into_iter().map(i64::from).collect()),
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => {
            let v = t.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            v.iter()
                .map(|&x| {
                    if x.fract() == 0.0 {
                        Ok(x as i64)
                    } else {
                        Err(MistralError::Evomistral(format!(
                            "`{name}` holds {x}, which is not a layer index"
                        )))
                    }
                })
                .collect()
        }
        other => Err(MistralError::BadDtype {
            name: name.into(),
            dtype: format!("{other:?}"),
            reason: "layer indices must be integers".into(),
        }),
    }
}

fn read_floats(source: &dyn TensorSource, name: &str) -> Result<Vec<f64>> {
    let t = fetch(source, name)?;
    match t.dtype() {
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => {
            Ok(t.to_dtype(DType::F64)?.to_vec1::<f64>()?)
        }
        other => Err(MistralError::BadDtype {
            name: name.into(),
            dtype: format!("{other:?}"),
            reason: "scales must be floating point".into(),
        }),
    }
}
