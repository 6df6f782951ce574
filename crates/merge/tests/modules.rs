//! `modules:` recipes against mergekit 0.1.5 on a tiny LLaVA in the newer transformers layout
//! (fixtures from tests/fixtures/merge/generate_modules.py), streaming and in memory, and what is
//! refused.

use std::collections::BTreeMap;
use std::path::PathBuf;

use evomerge_checkpoint::Checkpoint;
use evomerge_merge::modules::ModuleMap;
use evomerge_merge::{merge_to_dir, open_models, InMemoryMerger, MergeConfig, MergeOptions, TensorSource};

type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/merge")
}

fn read(path: &std::path::Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            (name.to_string(), (view.shape().to_vec(), values))
        })
        .collect()
}

fn recipe(name: &str) -> MergeConfig {
    let mut config = MergeConfig::from_file(&fixtures().join(format!("recipes/{name}.yml"))).unwrap();
    config.recipe_dir = Some(fixtures());
    config
}

fn compare(recipe: &str, path: &str, got: &Tensors) {
    let want = read(&fixtures().join(format!("expected/{recipe}.safetensors")));
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{recipe} ({path}): tensor names");
    for (name, (shape, values)) in got {
        let (want_shape, want_values) = &want[name];
        assert_eq!(shape, want_shape, "{recipe} ({path}): shape of {name}");
        let diff = values.iter().zip(want_values).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff <= 1e-6, "{recipe} ({path}): {name} differs from mergekit by {diff}");
    }
}

fn check(recipe_name: &str) {
    let config = recipe(recipe_name);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("merged");
    merge_to_dir(&config, &out, &MergeOptions { threads: Some(2), progress: false, ..Default::default() }).unwrap();
    let merged = Checkpoint::open_dir(&out).unwrap();
    let got: Tensors = merged.tensor_names().into_iter().map(|n| (n.to_string(), (merged.tensor(n).unwrap().shape.to_vec(), merged.tensor(n).unwrap().to_f32()))).collect();
    compare(recipe_name, "streaming", &got);

    let models = open_models(&config).unwrap();
    let sources: Vec<&dyn TensorSource> = models.iter().map(|m| m as &dyn TensorSource).collect();
    let merger = InMemoryMerger::from_sources(&config, sources, 0).unwrap();
    let got: Tensors = merger.merge_all().unwrap().into_iter().map(|t| (t.name, (t.shape, t.values))).collect();
    compare(recipe_name, "in-memory", &got);
}

/// All three modules, each with its own sources: language layers from two slices (one with a
/// per-layer weight gradient), vision layers with module-level parameters, `default` with a
/// name-filtered weight.
#[test]
fn modules_llava() {
    check("modules_llava");
}

/// Two of the three modules with a base model (task arithmetic): the vision layers are left out,
/// as mergekit leaves them out.
#[test]
fn modules_llava_partial() {
    check("modules_llava_partial");
}

#[test]
fn modules_are_inferred_from_tensor_names() {
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let llava = ModuleMap::infer(&names(&[
        "model.language_model.layers.0.mlp.up_proj.weight",
        "model.language_model.layers.1.mlp.up_proj.weight",
        "model.vision_tower.encoder.layers.0.mlp.fc1.weight",
        "model.multi_modal_projector.linear_1.weight",
        "lm_head.weight",
    ]));
    assert_eq!(llava.names().into_iter().collect::<Vec<_>>(), ["default", "model.language_model.layers", "model.vision_tower.encoder.layers"]);
    assert_eq!(llava.loose["default"], ["model.multi_modal_projector.linear_1.weight", "lm_head.weight"]);
    let plain = ModuleMap::infer(&names(&["model.layers.0.mlp.up_proj.weight", "model.norm.weight"]));
    assert_eq!(plain.names().into_iter().collect::<Vec<_>>(), ["default"]);
    assert_eq!(plain.layers["default"].0, "model.layers");
}

#[test]
fn bad_modules_are_refused() {
    let head = "merge_method: linear\nmodules:\n";
    let load = |text: &str| {
        let mut config = MergeConfig::from_yaml(&format!("{head}{text}"))?;
        config.recipe_dir = Some(fixtures());
        let tmp = tempfile::tempdir().unwrap();
        merge_to_dir(&config, &tmp.path().join("out"), &MergeOptions { progress: false, ..Default::default() }).map(|_| ())
    };
    let e = load("  vision:\n    models:\n      - model: vlm/a\n").unwrap_err().to_string();
    assert!(e.contains("no such module") && e.contains("model.language_model.layers"), "{e}");
    let e = load("  default:\n    models: []\n").unwrap_err().to_string();
    assert!(e.contains("modules.default") && e.contains("non-empty"), "{e}");
    let e = load("  default:\n    slices:\n      - sources:\n          - model: vlm/a\n            layer_range: [0, 1]\n").unwrap_err().to_string();
    assert!(e.contains("no numbered layers"), "{e}");
    let e = load("  model.language_model.layers:\n    slices:\n      - sources:\n          - model: vlm/a\n            layer_range: [0, 4]\n").unwrap_err().to_string();
    assert!(e.contains("goes past the 3 layers"), "{e}");
    let e = MergeConfig::from_yaml("merge_method: linear\nmodels:\n  - model: a\nmodules:\n  default:\n    models:\n      - model: a\n").unwrap_err().to_string();
    assert!(e.contains("not several"), "{e}");
    // llava-hf checkpoints: mergekit drops their language model, so there is nothing to match.
    let llava_hf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vision/llava");
    let e = load(&format!("  default:\n    models:\n      - model: {}\n", llava_hf.display())).unwrap_err().to_string();
    assert!(e.contains("llava-hf") && e.contains("newer"), "{e}");
}
