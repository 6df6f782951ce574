//! Batched greedy generation over (image, question) pairs matches transformers' `generate`, one prompt at a
//! time, on the tiny fixtures (8 new tokens, no EOS).

use std::path::{Path, PathBuf};

use candle_core::Device;
use evomerge_mistral::generation::GenerationConfig;
use evomerge_vision::{ImagePrompt, LlavaModel, LoadOptions};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vision")
}

fn expected_ids(key: &str) -> Vec<u32> {
    let exp = candle_core::safetensors::load(fixtures().join("expected.safetensors"), &Device::Cpu)
        .unwrap();
    exp[key]
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as u32)
        .collect()
}

fn greedy8() -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: 8,
        ..GenerationConfig::default()
    }
}

#[test]
fn batched_llava_next_generation_matches_transformers() {
    let model = LlavaModel::load(
        fixtures().join("llava_next").to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let prompt =
        ImagePrompt::from_ids(&expected_ids("prompt_ids"), model.image_token_id().unwrap())
            .unwrap();
    let wide = model
        .read_image(&fixtures().join("images/test.png"))
        .unwrap();
    let tall = model
        .read_image(&fixtures().join("images/tall.png"))
        .unwrap();
    // The two images give prompts of different lengths (62 and 58 positions): the batch is left-padded.
    let items = vec![
        (prompt.clone(), wide.clone()),
        (prompt.clone(), tall.clone()),
        (prompt, wide),
    ];
    let out = model.generate(&items, &greedy8(), None, 2).unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].tokens, expected_ids("llava_next.generated"));
    assert_eq!(out[1].tokens, expected_ids("llava_next.tall.generated"));
    assert_eq!(out[2].tokens, expected_ids("llava_next.generated"));
}

#[test]
fn llava_generation_matches_transformers() {
    let model = LlavaModel::load(
        fixtures().join("llava").to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let prompt =
        ImagePrompt::from_ids(&expected_ids("prompt_ids"), model.image_token_id().unwrap())
            .unwrap();
    let image = model
        .read_image(&fixtures().join("images/test.png"))
        .unwrap();
    let out = model
        .generate(&[(prompt, image)], &greedy8(), None, 4)
        .unwrap();
    assert_eq!(out[0].tokens, expected_ids("llava.generated"));
}

#[test]
fn precomputed_features_give_the_same_completions() {
    let model = LlavaModel::load(
        fixtures().join("llava_next").to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let prompt =
        ImagePrompt::from_ids(&expected_ids("prompt_ids"), model.image_token_id().unwrap())
            .unwrap();
    let wide = model
        .read_image(&fixtures().join("images/test.png"))
        .unwrap();
    let tall = model
        .read_image(&fixtures().join("images/tall.png"))
        .unwrap();
    let wide_features = model.features_of(&wide).unwrap();
    let tall_features = model.features_of(&tall).unwrap();
    // Same left-padded batches as `batched_llava_next_generation_matches_transformers`, tower skipped.
    let items = vec![
        (prompt.clone(), wide_features.clone()),
        (prompt.clone(), tall_features),
        (prompt, wide_features),
    ];
    let out = model
        .generate_with_features(&items, &greedy8(), None, 2)
        .unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].tokens, expected_ids("llava_next.generated"));
    assert_eq!(out[1].tokens, expected_ids("llava_next.tall.generated"));
    assert_eq!(out[2].tokens, expected_ids("llava_next.generated"));
}
