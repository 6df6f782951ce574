//! Parity with mergekit 0.1.5: every recipe under tests/fixtures/merge/recipes is merged through
//! both the streaming file merger and the in-memory merger and compared tensor by tensor with
//! mergekit's output (tests/fixtures/merge/expected, made by tests/fixtures/merge/generate.py).

use std::collections::BTreeMap;
use std::path::PathBuf;

use evomerge_checkpoint::Checkpoint;
use evomerge_merge::{merge_to_dir, open_models, InMemoryMerger, MergeConfig, MergeOptions, TensorSource};

const TOLERANCE: f32 = 1e-6;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/merge")
}

struct Expected {
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    layers: usize,
    vocab: usize,
}

fn expected(recipe: &str) -> Expected {
    let bytes = std::fs::read(fixtures().join(format!("expected/{recipe}.safetensors"))).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32);
        let values = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        tensors.insert(name.to_string(), (view.shape().to_vec(), values));
    }
    Expected { tensors, layers: meta["num_hidden_layers"].parse().unwrap(), vocab: meta["vocab_size"].parse().unwrap() }
}

fn compare(recipe: &str, path: &str, got: &BTreeMap<String, (Vec<usize>, Vec<f32>)>, want: &Expected) {
    let got_names: Vec<&String> = got.keys().collect();
    let want_names: Vec<&String> = want.tensors.keys().collect();
    assert_eq!(got_names, want_names, "{recipe} ({path}): tensor names differ");
    for (name, (shape, values)) in got {
        let (want_shape, want_values) = &want.tensors[name];
        assert_eq!(shape, want_shape, "{recipe} ({path}): shape of {name}");
        let max_diff = values.iter().zip(want_values).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max_diff <= TOLERANCE, "{recipe} ({path}): {name} differs from mergekit by {max_diff}");
    }
}

/// Recipes name models relative to the fixture directory (where mergekit ran).
fn recipe_config(recipe: &str) -> MergeConfig {
    let mut config = MergeConfig::from_file(&fixtures().join(format!("recipes/{recipe}.yml"))).unwrap();
    config.recipe_dir = Some(fixtures());
    config
}

fn check_streaming(recipe: &str) {
    let want = expected(recipe);
    let config = recipe_config(recipe);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("merged");
    let options = MergeOptions { threads: Some(2), progress: false, ..Default::default() };
    let report = merge_to_dir(&config, &out, &options).unwrap();
    assert_eq!(report.tensors, want.tensors.len());
    let merged = Checkpoint::open_dir(&out).unwrap();
    let got: BTreeMap<_, _> = merged
        .tensor_names()
        .into_iter()
        .map(|n| {
            let view = merged.tensor(n).unwrap();
            (n.to_string(), (view.shape.to_vec(), view.to_f32()))
        })
        .collect();
    compare(recipe, "streaming", &got, &want);
    let cfg = merged.config();
    assert_eq!(cfg["num_hidden_layers"].as_u64(), Some(want.layers as u64), "{recipe}: num_hidden_layers");
    assert_eq!(cfg["vocab_size"].as_u64(), Some(want.vocab as u64), "{recipe}: vocab_size");
}

fn check_in_memory(recipe: &str) {
    let want = expected(recipe);
    let config = recipe_config(recipe);
    let models = open_models(&config).unwrap();
    let sources: Vec<&dyn TensorSource> = models.iter().map(|m| m as &dyn TensorSource).collect();
    let merger = InMemoryMerger::from_sources(&config, sources, 0).unwrap();
    let got: BTreeMap<_, _> =
        merger.merge_all().unwrap().into_iter().map(|t| (t.name, (t.shape, t.values))).collect();
    compare(recipe, "in-memory", &got, &want);
}

macro_rules! parity {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn streaming() {
                super::check_streaming(stringify!($name));
            }
            #[test]
            fn in_memory() {
                super::check_in_memory(stringify!($name));
            }
        }
    )*};
}

parity!(
    linear,
    linear_unnormalized,
    task_arithmetic,
    ties,
    ties_list,
    ties_count,
    slerp,
    slerp_models,
    passthrough,
    vocab_base,
    vocab_big,
    breadcrumbs,
    breadcrumbs_defaults,
    breadcrumbs_ties,
    breadcrumbs_ties_normalized,
    della,
    della_linear,
    della_dense,
    sce,
    sce_all,
    model_stock,
    model_stock_filter_wise,
    nearswap,
    nearswap_gradient,
    multislerp,
    multislerp_no_base,
    nuslerp,
    nuslerp_rows,
    nuslerp_columns,
    karcher,
    karcher_short,
);
