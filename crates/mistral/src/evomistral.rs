//! The `evomistral` checkpoint format of SakanaAI's data-flow merges (EvoLLM-JP-v1-10B): a Mistral
//! checkpoint whose `model.layers.*` are a layer pool, plus
//! - `config.json`: `model_type: "evomistral"`, `num_hops`, `num_hidden_layers` = pool size;
//! - `model.input_layers` `[num_hops]` int32: the pool layer of each hop;
//! - `model.input_scales` `[num_hops]` float32: the scales.
//!
//! Paths load with [`ScaleConvention::ReleasedBranch`](crate::path::ScaleConvention) (see [`crate::path`]);
//! which entry of `input_scales` hop t uses is chosen by [`ScaleLookup`].

use std::path::Path;

use candle_core::{DType, Tensor};
use evomerge_checkpoint::{CheckpointWriter, Dtype, TensorPlan, WriteOptions};

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

/// What an `evomistral` checkpoint stores of a path: the pool layers it uses, in pool order (only those:
/// SakanaAI's 10B release keeps 44 of its 64), and each hop's index into that list.
pub fn compact_path(path: &LayerPath) -> (Vec<usize>, Vec<i32>) {
    let mut used: Vec<usize> = path.hops().iter().map(|h| h.layer).collect();
    used.sort_unstable();
    used.dedup();
    let input_layers = path
        .hops()
        .iter()
        .map(|h| used.binary_search(&h.layer).unwrap_or(0) as i32)
        .collect();
    (used, input_layers)
}

/// Writes `model` with its current path as an `evomistral` checkpoint into `dir` (replaced whole if it
/// exists) through the checkpoint crate's writer (sharded like any model): the pool layers the path uses,
/// renumbered `model.layers.0..k`, `input_layers` (int32) and `input_scales` (float32, one per hop, read
/// [`ScaleLookup::ByHop`]). Tokenizer and generation files are copied from `files_from`. Only
/// [`ScaleConvention::ReleasedBranch`] paths have this form.
pub fn save(model: &Mistral, dir: &Path, files_from: Option<&Path>) -> Result<std::path::PathBuf> {
    let path = model.path();
    if path.convention() != ScaleConvention::ReleasedBranch {
        return Err(MistralError::Evomistral(
            "only paths with the released (branch) scale convention can be saved as evomistral"
                .into(),
        ));
    }
    let dtype = match model.dtype() {
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        _ => Dtype::F32,
    };
    let (used, input_layers) = compact_path(path);
    let scales: Vec<f32> = path.hops().iter().map(|h| h.scale as f32).collect();
    // (stored name, the model's name) of every weight kept.
    let mut names: Vec<(String, String)> = Vec::new();
    for name in model.parameter_names() {
        match name
            .strip_prefix("model.layers.")
            .and_then(|r| r.split_once('.'))
        {
            Some((i, rest)) => {
                let i: usize = i
                    .parse()
                    .map_err(|_| MistralError::UnknownParameter(name.clone()))?;
                if let Ok(k) = used.binary_search(&i) {
                    names.push((format!("model.layers.{k}.{rest}"), name.clone()));
                }
            }
            None => names.push((name.clone(), name.clone())),
        }
    }
    let mut plan = Vec::with_capacity(names.len() + 2);
    for (stored, own) in &names {
        let shape = model
            .parameter_shape(own)
            .ok_or_else(|| MistralError::UnknownParameter(own.clone()))?;
        plan.push(TensorPlan::new(stored.clone(), dtype, shape));
    }
    plan.push(TensorPlan::int32(INPUT_LAYERS, vec![input_layers.len()]));
    plan.push(TensorPlan::new(
        INPUT_SCALES,
        Dtype::F32,
        vec![scales.len()],
    ));
    let options = WriteOptions {
        force: true,
        ..Default::default()
    };
    let writer = CheckpointWriter::create(dir, plan, options)?;
    for (stored, own) in &names {
        let values = model
            .parameter(own)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        writer.write_tensor_f32(stored, &values)?;
    }
    let bytes: Vec<u8> = input_layers.iter().flat_map(|l| l.to_le_bytes()).collect();
    writer.write_tensor(INPUT_LAYERS, &bytes)?;
    writer.write_tensor_f32(INPUT_SCALES, &scales)?;
    let mut config = model.config().clone();
    config.model_type = ModelType::EvoMistral;
    config.num_hops = Some(input_layers.len());
    config.num_hidden_layers = used.len();
    let mut json = config.to_json();
    json["architectures"] = serde_json::json!(["EvoMistralForCausalLM"]);
    json["torch_dtype"] = serde_json::json!(dtype_name(model.dtype()));
    Ok(writer.finish(&json, files_from)?)
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
