//! "Frozen really means frozen": merging a tiny VLM's language model with a tiny plain LLM (crates/merge)
//! writes a complete VLM whose vision tower, projector and image newline are bit-identical to the source
//! VLM, and which this crate loads and runs; also when the VLM is one of the `models` and the base is
//! a plain LLM (task vectors against the LLM, as EvoVLM-JP's recipe).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use evomerge_checkpoint::Checkpoint;
use evomerge_merge::{merge_to_dir, MergeConfig, MergeOptions};
use evomerge_vision::{ImagePrompt, LlavaModel, LoadOptions, WeightLayout};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vision")
}

/// A plain Mistral checkpoint with the VLM's LLM shapes but different values (`v * scale + shift`).
fn write_plain_llm(vlm: &Path, out: &Path, scale: f64, shift: f64) {
    std::fs::create_dir_all(out).unwrap();
    let tensors =
        candle_core::safetensors::load(vlm.join("model.safetensors"), &Device::Cpu).unwrap();
    let llm: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter_map(|(k, v)| {
            let name = WeightLayout::HfLegacy.to_llm_name(&k)?;
            // a different model: every value scaled and shifted
            Some((name, ((v * scale).unwrap() + shift).unwrap()))
        })
        .collect();
    candle_core::safetensors::save(&llm, out.join("model.safetensors")).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vlm.join("config.json")).unwrap()).unwrap();
    let mut text = config["text_config"].clone();
    text["architectures"] = serde_json::json!(["MistralForCausalLM"]);
    std::fs::write(
        out.join("config.json"),
        serde_json::to_string_pretty(&text).unwrap(),
    )
    .unwrap();
}

/// Where the VLM sits in the recipe.
#[derive(Clone, Copy)]
enum VlmRole {
    /// `base_model`, merged with one plain LLM.
    Base,
    /// One of the `models`, next to a plain LLM, with another plain LLM as `base_model` (the
    /// output is still the VLM).
    Model,
}

fn merge(vlm: &Path, dir: &Path, method: &str, role: VlmRole) -> PathBuf {
    let llm = dir.join("plain-llm");
    write_plain_llm(vlm, &llm, 0.8, 0.05);
    let recipe = match role {
        VlmRole::Base => format!(
            "merge_method: {method}\nbase_model: {vlm}\nmodels:\n  - model: {llm}\n    parameters:\n      weight: 0.7\n      density: 0.6\ndtype: float32\n",
            vlm = vlm.display(),
            llm = llm.display()
        ),
        VlmRole::Model => {
            let base = dir.join("plain-base");
            write_plain_llm(vlm, &base, 0.9, -0.02);
            format!(
                "merge_method: {method}\nbase_model: {base}\nmodels:\n  - model: {vlm}\n  - model: {llm}\nparameters:\n  weight: 0.5\n  density: 0.6\ndtype: float32\n",
                base = base.display(),
                vlm = vlm.display(),
                llm = llm.display()
            )
        }
    };
    let config = MergeConfig::from_yaml(&recipe).expect("recipe parses");
    let out = dir.join("merged-vlm");
    let options = MergeOptions {
        progress: false,
        threads: Some(1),
        ..MergeOptions::default()
    };
    merge_to_dir(&config, &out, &options).expect("merge succeeds");
    out
}

fn check_frozen(vlm_dir: &Path, method: &str, role: VlmRole) {
    let tmp = tempfile::tempdir().unwrap();
    let out = merge(vlm_dir, tmp.path(), method, role);
    let src = Checkpoint::open_dir(vlm_dir).unwrap();
    let merged = Checkpoint::open_dir(&out).unwrap();
    let layout = WeightLayout::detect(&src).unwrap();
    assert_eq!(
        WeightLayout::detect(&merged).unwrap(),
        layout,
        "the merged VLM keeps its layout"
    );

    let mut frozen = 0;
    let mut changed = 0;
    for name in src.tensor_names() {
        let a = src.tensor(name).unwrap();
        let b = merged
            .tensor(name)
            .unwrap_or_else(|e| panic!("merged VLM lacks `{name}`: {e}"));
        if layout.is_frozen(name) {
            assert_eq!(a.dtype, b.dtype, "{name}: dtype changed");
            assert_eq!(a.shape, b.shape, "{name}: shape changed");
            assert!(
                a.data == b.data,
                "{name}: frozen tensor is not bit-identical to the source VLM"
            );
            frozen += 1;
        } else if a.data != b.data {
            changed += 1;
        }
    }
    let vision_tensors = src
        .tensor_names()
        .iter()
        .filter(|n| layout.is_frozen(n))
        .count();
    assert_eq!(frozen, vision_tensors);
    assert!(
        frozen > 40,
        "expected the whole tower, projector (and newline): {frozen}"
    );
    assert!(changed > 0, "the language model was not merged at all");
    assert_eq!(
        merged.tensor_names().len(),
        src.tensor_names().len(),
        "tensor sets differ"
    );

    // A complete VLM directory: the VLM's config and processor/tokenizer files.
    let cfg_src: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vlm_dir.join("config.json")).unwrap())
            .unwrap();
    let cfg_out: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    for key in [
        "model_type",
        "vision_config",
        "image_token_index",
        "vision_feature_layer",
    ] {
        assert_eq!(
            cfg_src.get(key),
            cfg_out.get(key),
            "config key {key} changed"
        );
    }
    for f in [
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(
            out.join(f).is_file(),
            "{f} was not copied into the merged VLM"
        );
    }

    // And it runs.
    let model = LlavaModel::load(out.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let image = model
        .read_image(&fixtures().join("images/test.png"))
        .unwrap();
    let prompt = ImagePrompt::from_ids(
        &[1, 5, model.image_token_id().unwrap(), 7, 8],
        model.image_token_id().unwrap(),
    )
    .unwrap();
    let logits = model.logits(&prompt, &model.preprocess(&image)).unwrap();
    let values = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
}

#[test]
fn merging_llava_with_an_llm_keeps_the_vision_part_bit_identical() {
    check_frozen(&fixtures().join("llava"), "task_arithmetic", VlmRole::Base);
}

#[test]
fn merging_llava_next_with_dare_ties_keeps_the_vision_part_bit_identical() {
    check_frozen(&fixtures().join("llava_next"), "dare_ties", VlmRole::Base);
}

#[test]
fn llava_among_the_models_with_a_plain_base_merges_to_a_runnable_llava() {
    check_frozen(&fixtures().join("llava"), "ties", VlmRole::Model);
}

#[test]
fn llava_next_among_the_models_with_a_plain_base_merges_to_a_runnable_llava_next() {
    check_frozen(&fixtures().join("llava_next"), "dare_ties", VlmRole::Model);
}
