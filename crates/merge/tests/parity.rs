//! Parity with mergekit 0.1.5: every recipe under tests/fixtures/merge/recipes is merged through
//! both the streaming file merger and the in-memory merger and compared tensor by tensor with
//! mergekit's output (tests/fixtures/merge/expected, made by tests/fixtures/merge/generate.py).

use std::collections::BTreeMap;
use std::path::PathBuf;

use evomerge_checkpoint::Checkpoint;
use evomerge_checkpoint::Dtype;
use evomerge_merge::methods::round_to;
use evomerge_merge::{
    merge_to_dir, open_models, ComputeDtype, InMemoryMerger, MergeConfig, MergeOptions, TensorSource,
};

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
        let values = match view.dtype() {
            safetensors::Dtype::F32 => {
                view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            safetensors::Dtype::BF16 => view
                .data()
                .chunks_exact(2)
                .map(|c| evomerge_checkpoint::bf16_bits_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            other => panic!("{recipe}: unexpected dtype {other:?}"),
        };
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
    tokenizer_section_base,
    tokenizer_section_big,
    union_ties,
    union_tokens,
    union_mean,
    union_stripped,
    base_tokens_pad,
    model_source_perm,
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
    ram,
    ram_defaults,
    ramplus_tl,
    ramplus_tl_defaults,
    lora_linear,
    lora_task_arithmetic,
);

/// Entries of `got` whose value differs from mergekit's (bit for bit, both rounded to bf16).
fn bf16_mismatches(got: &BTreeMap<String, (Vec<usize>, Vec<f32>)>, want: &Expected) -> usize {
    assert_eq!(got.keys().collect::<Vec<_>>(), want.tensors.keys().collect::<Vec<_>>());
    got.iter()
        .map(|(name, (shape, values))| {
            let (want_shape, want_values) = &want.tensors[name];
            assert_eq!(shape, want_shape, "shape of {name}");
            // mergekit writes what the method returns: where torch promotes to f32 (ramplus_tl's
            // f32 λ, arcee_fusion's f32 mask) that is f32, which evomerge writes in the recipe dtype.
            let bf16 = |v: f32| round_to(Dtype::BF16, v).to_bits();
            values.iter().zip(want_values).filter(|(a, b)| bf16(**a) != bf16(**b)).count()
        })
        .sum()
}

fn streamed(recipe: &str, compute_dtype: ComputeDtype) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("merged");
    let options = MergeOptions { threads: Some(2), progress: false, compute_dtype, ..Default::default() };
    merge_to_dir(&recipe_config(recipe), &out, &options).unwrap();
    let merged = Checkpoint::open_dir(&out).unwrap();
    merged
        .tensor_names()
        .into_iter()
        .map(|n| {
            let view = merged.tensor(n).unwrap();
            assert_eq!(view.dtype, Dtype::BF16, "{recipe}: {n} is not written in the recipe dtype");
            (n.to_string(), (view.shape.to_vec(), view.to_f32()))
        })
        .collect()
}

fn in_memory(recipe: &str, compute_dtype: ComputeDtype) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let config = recipe_config(recipe);
    let models = open_models(&config).unwrap();
    let sources: Vec<&dyn TensorSource> = models.iter().map(|m| m as &dyn TensorSource).collect();
    let merger = InMemoryMerger::from_sources(&config, sources, 0).unwrap().with_compute_dtype(compute_dtype);
    merger.merge_all().unwrap().into_iter().map(|t| (t.name, (t.shape, t.values))).collect()
}

/// `--compute-dtype recipe` gives mergekit's bf16 output bit for bit, streaming and in memory.
fn check_bf16(recipe: &str) {
    let want = expected(recipe);
    let streaming = bf16_mismatches(&streamed(recipe, ComputeDtype::Recipe), &want);
    let memory = bf16_mismatches(&in_memory(recipe, ComputeDtype::Recipe), &want);
    let f32_mode = bf16_mismatches(&streamed(recipe, ComputeDtype::F32), &want);
    let total: usize = want.tensors.values().map(|(_, v)| v.len()).sum();
    eprintln!("{recipe}: {streaming} / {memory} of {total} entries differ from mergekit (recipe dtype, streaming / in memory); {f32_mode} in f32");
    assert_eq!((streaming, memory), (0, 0), "{recipe}: entries differing from mergekit in bf16");
}

macro_rules! parity_bf16 {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            check_bf16(stringify!($name));
        }
    )*};
}

parity_bf16!(
    linear_bf16,
    task_arithmetic_bf16,
    ties_bf16,
    slerp_bf16,
    dare_ties_bf16,
    dare_linear_bf16,
    della_dense_bf16,
    della_linear_bf16,
    breadcrumbs_bf16,
    breadcrumbs_ties_bf16,
    breadcrumbs_ties_normalized_bf16,
    breadcrumbs_defaults_bf16,
    ties_rescale_bf16,
    passthrough_bf16,
    nearswap_bf16,
    ram_bf16,
    ramplus_tl_bf16,
    model_stock_bf16,
    sce_bf16,
    nuslerp_bf16,
    multislerp_bf16,
    karcher_bf16,
    arcee_fusion_bf16,
    union_mean_bf16,
);

/// The default f32 arithmetic is not mergekit's in bf16: TIES keeps other entries (this is why
/// the recipe mode exists, and checks the comparison above can see a difference).
#[test]
fn f32_compute_differs_from_mergekit_bf16_ties() {
    let want = expected("ties_bf16");
    assert!(bf16_mismatches(&streamed("ties_bf16", ComputeDtype::F32), &want) > 0);
}

/// Methods whose low-precision arithmetic is not reproduced refuse the mode rather than give
/// something else.
#[test]
fn recipe_dtype_refuses_other_methods() {
    // DELLA below density 1 draws a random mask mergekit's torch draws cannot be matched with.
    let mut config = recipe_config("della");
    config.dtype = Some("bfloat16".into());
    let tmp = tempfile::tempdir().unwrap();
    let options = MergeOptions { progress: false, compute_dtype: ComputeDtype::Recipe, ..Default::default() };
    let e = merge_to_dir(&config, &tmp.path().join("out"), &options).unwrap_err().to_string();
    assert!(e.contains("della") && e.contains("--compute-dtype recipe"), "{e}");
}

/// `arcee_fusion` picks, per entry, the base's or the model's value by comparing an importance
/// with a threshold; torch's f32 KL divergence differs from ours by ~1e-4 relative (cancellation),
/// so entries that close to the threshold may be picked differently. Everything else must match:
/// each entry is mergekit's value, or the other of (base, model) at a borderline entry, and such
/// flips stay rare.
fn check_arcee(recipe: &str, model: &str) {
    let want = expected(recipe);
    let read = |m: &str| Checkpoint::open_dir(&fixtures().join("models").join(m)).unwrap();
    let (base, other) = (read("base"), read(model));
    for (path, got) in [("streaming", streamed_f32(recipe)), ("in-memory", in_memory(recipe, ComputeDtype::F32))] {
        let (mut flips, mut total) = (0, 0);
        for (name, (_, values)) in &got {
            let (_, want_values) = &want.tensors[name];
            let b = base.tensor(name).unwrap().to_f32();
            let x = other.tensor(name).unwrap().to_f32();
            for (j, (&g, &w)) in values.iter().zip(want_values).enumerate() {
                total += 1;
                if (g - w).abs() <= TOLERANCE {
                    continue;
                }
                let picked = |v: f32| if (v - b[j]).abs() <= TOLERANCE { 'b' } else if (v - x[j]).abs() <= TOLERANCE { 'x' } else { '?' };
                assert!(
                    matches!((picked(g), picked(w)), ('b', 'x') | ('x', 'b')),
                    "{recipe} ({path}): {name}[{j}] = {g} is neither a match nor a flip of mergekit's {w}"
                );
                flips += 1;
            }
        }
        eprintln!("{recipe} ({path}): {flips} of {total} entries pick the other input than mergekit");
        assert!(flips * 1000 <= total, "{recipe} ({path}): {flips} of {total} entries differ from mergekit");
    }
}

fn streamed_f32(recipe: &str) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("merged");
    merge_to_dir(&recipe_config(recipe), &out, &MergeOptions { progress: false, ..Default::default() }).unwrap();
    let merged = Checkpoint::open_dir(&out).unwrap();
    merged.tensor_names().into_iter().map(|n| (n.to_string(), (merged.tensor(n).unwrap().shape.to_vec(), merged.tensor(n).unwrap().to_f32()))).collect()
}

#[test]
fn arcee_fusion() {
    check_arcee("arcee_fusion", "ft1");
}

#[test]
fn arcee_fusion_slices() {
    check_arcee("arcee_fusion_slices", "ft2");
}

/// `residual_weight` on a slice is accepted and changes nothing, as in mergekit 0.1.5 (which parses
/// it and never uses it: its output with `residual_weight: 0.25` on every slice of `passthrough`
/// equals the committed fixture bit for bit).
#[test]
fn residual_weight_is_accepted_and_ignored_as_in_mergekit() {
    for recipe in ["passthrough", "slerp"] {
        let text = std::fs::read_to_string(fixtures().join(format!("recipes/{recipe}.yml"))).unwrap();
        let with = text.replace("  - sources:", "  - residual_weight: 0.25\n    sources:");
        assert_ne!(with, text, "{recipe}: the recipe has slices");
        let mut config = MergeConfig::from_yaml(&with).unwrap();
        config.recipe_dir = Some(fixtures());
        assert!(config.slices.as_ref().unwrap().iter().all(|s| s.residual_weight == Some(0.25)));
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("merged");
        merge_to_dir(&config, &out, &MergeOptions { progress: false, ..Default::default() }).unwrap();
        let merged = Checkpoint::open_dir(&out).unwrap();
        let got: BTreeMap<_, _> =
            merged.tensor_names().into_iter().map(|n| (n.to_string(), (merged.tensor(n).unwrap().shape.to_vec(), merged.tensor(n).unwrap().to_f32()))).collect();
        assert_eq!(got, streamed_f32(recipe), "{recipe}: output differs from the recipe without residual_weight");
        compare(recipe, "residual_weight", &got, &expected(recipe));
    }
}
