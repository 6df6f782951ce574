//! `model+lora` references: what is refused and why (parity with mergekit's folded merges is in
//! tests/parity.rs, `lora_*`), and the fold through a caller's own in-memory source.

use std::path::{Path, PathBuf};

use evomerge_checkpoint::Checkpoint;
use evomerge_merge::{merge_to_dir, open_model, InMemoryMerger, LoraAdapter, MemorySource, MergeConfig, MergeOptions, ModelSource, TensorSource};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/merge")
}

/// A copy of a fixture adapter whose adapter_config.json has `key` set to `value`.
fn adapter_with(dir: &Path, adapter: &str, key: &str, value: serde_json::Value) -> PathBuf {
    let from = fixtures().join("adapters").join(adapter);
    let to = dir.join(format!("{adapter}-{key}"));
    std::fs::create_dir_all(&to).unwrap();
    std::fs::copy(from.join("adapter_model.safetensors"), to.join("adapter_model.safetensors")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(from.join("adapter_config.json")).unwrap()).unwrap();
    config[key] = value;
    std::fs::write(to.join("adapter_config.json"), config.to_string()).unwrap();
    to
}

fn recipe(model: &str) -> MergeConfig {
    let mut config = MergeConfig::from_yaml(&format!(
        "models:\n  - model: {model}\n    parameters: {{weight: 0.5}}\n  - model: models/ft1\n    parameters: {{weight: 0.5}}\nmerge_method: linear\n"
    ))
    .unwrap();
    config.recipe_dir = Some(fixtures());
    config
}

fn open_error(reference: &str) -> String {
    match open_model(&recipe(reference), reference) {
        Ok(_) => panic!("`{reference}` opened"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unsupported_lora_variants_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    for (key, value, wanted) in [
        ("use_dora", serde_json::json!(true), "DoRA"),
        ("fan_in_fan_out", serde_json::json!(true), "Conv1D"),
        ("rank_pattern", serde_json::json!({"q_proj": 4}), "per-module ranks"),
        ("bias", serde_json::json!("all"), "trained biases"),
        ("peft_type", serde_json::json!("IA3"), "only LoRA adapters"),
        ("r", serde_json::json!(3), "r = 3"),
        ("target_modules", serde_json::json!(["q_proj", "v_proj"]), "does not name"),
        ("modules_to_save", serde_json::json!([]), "modules_to_save does not name"),
    ] {
        let adapter = adapter_with(tmp.path(), "lora_qv", key, value);
        let e = open_error(&format!("models/base+{}", adapter.display()));
        assert!(e.contains(wanted), "{key}: {e}");
    }
}

#[test]
fn an_adapter_for_another_model_is_refused() {
    // lora_qv stores a 48-row lm_head; ft_big's has 56 rows.
    let e = open_error("models/ft_big+adapters/lora_qv");
    assert!(e.contains("lm_head.weight") && e.contains("another model"), "{e}");
}

#[test]
fn malformed_references_and_directories_are_refused() {
    let e = MergeConfig::from_yaml("models:\n  - model: a+b+c\nmerge_method: linear\n").unwrap_err().to_string();
    assert!(e.contains("model+lora"), "{e}");
    let e = MergeConfig::from_yaml("models:\n  - model: a+\nmerge_method: linear\n").unwrap_err().to_string();
    assert!(e.contains("non-empty"), "{e}");
    // A model directory is not an adapter directory.
    let e = open_error("models/base+models/ft1");
    assert!(e.contains("adapter_config.json"), "{e}");
}

/// A caller holding its models in memory folds an adapter with [`ModelSource`] and gets the same
/// merge as the file merger.
#[test]
fn in_memory_sources_fold_the_same_adapter() {
    let config = recipe("models/base+adapters/lora_rs");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("merged");
    merge_to_dir(&config, &out, &MergeOptions { progress: false, ..Default::default() }).unwrap();
    let streamed = Checkpoint::open_dir(&out).unwrap();

    let base = MemorySource::load(&Checkpoint::open_dir(&fixtures().join("models/base")).unwrap()).unwrap();
    let adapter = LoraAdapter::open(&fixtures().join("adapters/lora_rs"), "lora_rs").unwrap();
    let folded = ModelSource::new(base, Some(adapter)).unwrap();
    let ft1 = Checkpoint::open_dir(&fixtures().join("models/ft1")).unwrap();
    let sources: Vec<&dyn TensorSource> = vec![&folded, &ft1];
    let merged = InMemoryMerger::from_sources(&config, sources, 0).unwrap().merge_all().unwrap();
    let mut changed = 0;
    for tensor in merged {
        assert_eq!(tensor.values, streamed.tensor(&tensor.name).unwrap().to_f32(), "{}", tensor.name);
        changed += usize::from(folded.lora.as_ref().unwrap().changes(&tensor.name));
    }
    // embed_tokens, and o_proj and gate_proj of 4 layers.
    assert_eq!(changed, 9);
}
