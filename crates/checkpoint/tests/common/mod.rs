//! Helpers shared by the integration tests: tiny checkpoints written by our writer, and raw
//! safetensors files with hand-made (possibly broken) headers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use evomerge_checkpoint::{f32_to_bytes, write_checkpoint, Dtype, WriteOptions};
use serde_json::json;

pub fn tiny_config() -> serde_json::Value {
    json!({
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "hidden_size": 8,
        "num_hidden_layers": 2,
        "torch_dtype": "bfloat16"
    })
}

/// Deterministic, exactly representable values (multiples of 1/8 in [-2, 2]).
pub fn pattern(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 7 + seed * 13) % 33) as f32 - 16.0) * 0.125).collect()
}

/// (name, dtype, shape) of a tiny two-layer model with mixed dtypes.
pub fn tiny_layout() -> Vec<(String, Dtype, Vec<usize>)> {
    let mut layout = vec![("model.embed_tokens.weight".to_string(), Dtype::BF16, vec![16, 8])];
    for layer in 0..2 {
        layout.push((format!("model.layers.{layer}.self_attn.q_proj.weight"), Dtype::BF16, vec![8, 8]));
        layout.push((format!("model.layers.{layer}.mlp.up_proj.weight"), Dtype::F16, vec![12, 8]));
        layout.push((format!("model.layers.{layer}.input_layernorm.weight"), Dtype::F32, vec![8]));
    }
    layout.push(("model.norm.weight".to_string(), Dtype::F32, vec![8]));
    layout.push(("lm_head.weight".to_string(), Dtype::BF16, vec![16, 8]));
    layout
}

/// The tiny model's tensors with pattern values, as the writer's convenience function takes them.
pub fn tiny_tensors() -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    tiny_layout()
        .into_iter()
        .enumerate()
        .map(|(i, (name, dtype, shape))| {
            let values = pattern(shape.iter().product(), i);
            let bytes = f32_to_bytes(dtype, &values);
            (name, dtype, shape, bytes)
        })
        .collect()
}

pub fn write_tiny(dir: &Path, max_shard_bytes: u64) -> PathBuf {
    let opts = WriteOptions { max_shard_bytes, force: false };
    write_checkpoint(dir, &tiny_tensors(), &tiny_config(), None, opts).expect("writing the tiny model")
}

/// Writes `<dir>/model.safetensors` from a header given as JSON text (no padding added) and
/// `data` bytes, plus a config.json, and returns `dir`.
pub fn raw_model(dir: &Path, header: &str, data: &[u8]) -> PathBuf {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    raw_model_bytes(dir, &bytes)
}

/// Writes `<dir>/model.safetensors` with exactly `bytes`, plus a config.json.
pub fn raw_model_bytes(dir: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), tiny_config().to_string()).unwrap();
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    dir.to_path_buf()
}

/// Names of the entries of `dir` (sorted), for "nothing left behind" checks.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}
