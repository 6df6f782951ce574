//! Helpers shared by the model tests: fixture paths, reference tensors, comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use evomerge_mistral::{LoadOptions, Mistral};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/mistral")
        .join(name)
}

pub fn reference(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("reference.safetensors"), &Device::Cpu)
        .unwrap()
}

pub fn load(name: &str) -> Mistral {
    Mistral::from_dir(&fixture(name), &LoadOptions::default()).unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Full-sequence logits [1, s, vocab] of one sequence with a fresh cache.
pub fn logits_for(model: &Mistral, ids: &Tensor) -> Tensor {
    let (b, s) = ids.dims2().unwrap();
    let mut cache = model.new_cache(b);
    let pos = evomerge_mistral::sequential_positions(b, s, 0, model.device()).unwrap();
    model.forward(ids, &pos, None, &mut cache).unwrap()
}
