//! Bad input gets a clear error naming what is wrong.

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use common::*;
use evomerge_mistral::{LayerPath, LoadOptions, Mistral, MistralError, ScaleConvention};

/// A copy of a fixture directory with `config.json` edited by `edit`.
fn with_config(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture(name);
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    dir
}

fn open(dir: &Path) -> Result<Mistral, MistralError> {
    Mistral::from_dir(dir, &LoadOptions::default())
}

#[test]
fn config_missing_required_field_is_named() {
    let dir = with_config("mistral_classic", |c| {
        c.as_object_mut().unwrap().remove("num_attention_heads");
    });
    let err = open(dir.path()).unwrap_err();
    assert!(
        matches!(err, MistralError::MissingConfigField("num_attention_heads")),
        "{err}"
    );
    assert!(
        err.to_string().contains("`num_attention_heads` is missing"),
        "{err}"
    );
}

#[test]
fn weights_disagreeing_with_config_name_tensor_and_shapes() {
    let dir = with_config("mistral_classic", |c| c["intermediate_size"] = 64.into());
    let err = open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("model.layers.0.mlp.gate_proj.weight"), "{err}");
    assert!(
        err.contains("[48, 32]") && err.contains("[64, 32]"),
        "{err}"
    );

    let dir = with_config("mistral_classic", |c| c["num_hidden_layers"] = 3.into());
    let err = open(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("model.layers.2.input_layernorm.weight") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn path_naming_missing_layer_is_refused() {
    let mut model = load("mistral_classic");
    let path = LayerPath::parse("0,1,5", ScaleConvention::ReleasedBranch).unwrap();
    let err = model.set_path(path).unwrap_err();
    assert!(
        matches!(
            err,
            MistralError::LayerOutOfRange {
                hop: 2,
                layer: 5,
                pool_len: 2
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("hop 2 names layer 5"), "{err}");
}

#[test]
fn prompt_longer_than_context_is_refused() {
    let model = load("mistral_classic"); // max_position_embeddings = 64
    let ids = Tensor::zeros((1, 65), candle_core::DType::U32, &Device::Cpu).unwrap();
    let pos = evomerge_mistral::sequential_positions(1, 65, 0, &Device::Cpu).unwrap();
    let mut cache = model.new_cache(1);
    let err = model.forward(&ids, &pos, None, &mut cache).unwrap_err();
    assert!(
        matches!(
            err,
            MistralError::ContextOverflow {
                requested: 65,
                max: 64
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("exceeds the model's context of 64"),
        "{err}"
    );

    // Also when the overflow comes from the cache growing during decoding.
    let pos = evomerge_mistral::sequential_positions(1, 64, 0, &Device::Cpu).unwrap();
    let ids = Tensor::zeros((1, 64), candle_core::DType::U32, &Device::Cpu).unwrap();
    model.forward_last(&ids, &pos, None, &mut cache).unwrap();
    let one = Tensor::zeros((1, 1), candle_core::DType::U32, &Device::Cpu).unwrap();
    let pos = evomerge_mistral::sequential_positions(1, 1, 64, &Device::Cpu).unwrap();
    assert!(matches!(
        model.forward_last(&one, &pos, None, &mut cache),
        Err(MistralError::ContextOverflow { .. })
    ));
}

#[test]
fn token_outside_vocabulary_and_bad_mask_are_refused() {
    let model = load("mistral_classic");
    let ids = Tensor::new(&[[1u32, 128]], &Device::Cpu).unwrap();
    let pos = evomerge_mistral::sequential_positions(1, 2, 0, &Device::Cpu).unwrap();
    let err = model
        .forward(&ids, &pos, None, &mut model.new_cache(1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("token id 128") && err.contains("128 tokens"),
        "{err}"
    );
    let ids = Tensor::new(&[[1u32, 2]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1]], &Device::Cpu).unwrap();
    let err = model
        .forward(&ids, &pos, Some(&mask), &mut model.new_cache(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("attention_mask must be"), "{err}");
}

#[test]
fn unsupported_model_type_is_named() {
    let dir = with_config("mistral_classic", |c| c["model_type"] = "gpt2".into());
    let err = open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("`gpt2`"), "{err}");
}
