//! DARE (`dare_ties`, `dare_linear`): the kept fraction of each delta is within 3σ of `density`,
//! kept entries are rescaled by exactly 1/density, masks depend only on (seed, tensor, model), so
//! outputs are reproducible, differ across seeds, and do not depend on the thread count.

use std::path::PathBuf;

use evomerge_merge::methods::get;
use evomerge_merge::sparsify::mix64;
use evomerge_merge::{
    merge_tensor, merge_to_dir, InMemoryMerger, MemorySource, MergeConfig, MergeOptions, ModelTensor, ParamSet,
    TensorContext, TensorSource,
};

const N: usize = 200_000;

/// Deterministic pseudo-random values in (-1, 1), never exactly 0 as deltas.
fn values(seed: u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let u = (mix64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64) >> 40) as f32 / (1u64 << 24) as f32;
            if u == 0.5 { 0.25 } else { 2.0 * u - 1.0 }
        })
        .collect()
}

/// Runs one method on a single non-base model with weight 1 (no normalisation, so the output
/// is base + kept delta · scale) and returns the output.
fn merge_single(method: &str, density: f64, seed: u64, base: &[f32], model: &[f32], shared: &ParamSet) -> Vec<f32> {
    let params = ParamSet::new().with_float("weight", 1.0).with_float("density", density);
    let inputs = [ModelTensor { model: 1, data: model, params: &params }];
    let shape = [base.len()];
    let ctx = TensorContext { name: "model.layers.0.mlp.up_proj.weight", layer: Some(0), seed, shape: &shape, compute: None };
    let mut out = vec![0f32; base.len()];
    merge_tensor(get(method).unwrap(), &ctx, shared, Some(base), &inputs, &mut out).unwrap();
    out
}

fn check_kept_fraction_and_rescale(method: &str, density: f64) {
    let base = values(1, N);
    let model: Vec<f32> = base.iter().zip(values(2, N)).map(|(b, d)| b + 0.1 * d).collect();
    let out = merge_single(method, density, 7, &base, &model, &ParamSet::new());
    let d32 = density as f32;
    let mut kept = 0usize;
    for j in 0..N {
        let delta = model[j] - base[j];
        assert!(delta != 0.0);
        if out[j] == base[j] {
            continue; // dropped
        }
        kept += 1;
        // Kept entries: exactly base + delta / density (same f32 operations).
        assert_eq!(out[j], base[j] + delta / d32, "{method}: entry {j} is not rescaled by exactly 1/density");
    }
    let p = kept as f64 / N as f64;
    let sigma = (density * (1.0 - density) / N as f64).sqrt();
    assert!((p - density).abs() <= 3.0 * sigma, "{method}: kept fraction {p} vs density {density} (3σ = {})", 3.0 * sigma);
}

#[test]
fn dare_linear_keeps_density_fraction_rescaled_exactly() {
    for density in [0.1, 0.5, 0.9] {
        check_kept_fraction_and_rescale("dare_linear", density);
    }
}

#[test]
fn dare_ties_keeps_density_fraction_rescaled_exactly() {
    for density in [0.2, 0.7] {
        check_kept_fraction_and_rescale("dare_ties", density);
    }
}

#[test]
fn masks_depend_on_seed_tensor_and_model_only() {
    let base = values(3, N);
    let model: Vec<f32> = base.iter().zip(values(4, N)).map(|(b, d)| b + 0.1 * d).collect();
    let shared = ParamSet::new();
    let a = merge_single("dare_linear", 0.5, 11, &base, &model, &shared);
    let b = merge_single("dare_linear", 0.5, 11, &base, &model, &shared);
    let c = merge_single("dare_linear", 0.5, 12, &base, &model, &shared);
    assert_eq!(a, b, "same seed, same output");
    let differing = a.iter().zip(&c).filter(|(x, y)| x != y).count();
    assert!(differing > N / 4, "a different seed must give a different mask ({differing} entries differ)");

    // Thread count does not matter.
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let four = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
    let x = one.install(|| merge_single("dare_ties", 0.3, 5, &base, &model, &shared));
    let y = four.install(|| merge_single("dare_ties", 0.3, 5, &base, &model, &shared));
    assert_eq!(x, y);
}

#[test]
fn l1_rescale_option_matches_mergekit_definition() {
    let base = values(5, N);
    let model: Vec<f32> = base.iter().zip(values(6, N)).map(|(b, d)| b + 0.1 * d).collect();
    let mut shared = ParamSet::new();
    shared.set("rescale", evomerge_merge::ParamValue::Text("l1".into()));
    let out = merge_single("dare_linear", 0.4, 3, &base, &model, &shared);
    let l1_delta: f64 = model.iter().zip(&base).map(|(m, b)| (m - b).abs() as f64).sum();
    let l1_out: f64 = out.iter().zip(&base).map(|(o, b)| (o - b).abs() as f64).sum();
    assert!((l1_out / l1_delta - 1.0).abs() < 1e-4, "l1 norm kept: {l1_out} vs {l1_delta}");
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/merge")
}

const DARE_TIES_RECIPE: &str = "
models:
  - model: models/ft1
    parameters: {weight: 0.6, density: 0.5}
  - model: models/ft2
    parameters: {weight: [0.2, 0.8], density: 0.3}
merge_method: dare_ties
base_model: models/base
dtype: float32
";

fn file_merge(seed: u64, threads: usize) -> Vec<u8> {
    let mut config = MergeConfig::from_yaml(DARE_TIES_RECIPE).unwrap();
    config.recipe_dir = Some(fixtures());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let options = MergeOptions { seed, threads: Some(threads), progress: false, ..Default::default() };
    merge_to_dir(&config, &out, &options).unwrap();
    std::fs::read(out.join("model.safetensors")).unwrap()
}

#[test]
fn file_merges_are_bit_identical_across_thread_counts_and_differ_across_seeds() {
    let one = file_merge(42, 1);
    let four = file_merge(42, 4);
    assert!(one == four, "1 vs 4 threads must give identical bytes");
    assert!(one != file_merge(43, 2), "another seed must give another model");
}

#[test]
fn in_memory_merger_matches_file_merger_for_dare() {
    let mut config = MergeConfig::from_yaml(DARE_TIES_RECIPE).unwrap();
    config.recipe_dir = Some(fixtures());
    let models = evomerge_merge::open_models(&config).unwrap();
    let loaded: Vec<MemorySource> = models.iter().map(|m| MemorySource::load(m).unwrap()).collect();
    let sources: Vec<&dyn TensorSource> = loaded.iter().map(|m| m as &dyn TensorSource).collect();
    let merged = InMemoryMerger::from_sources(&config, sources, 42).unwrap().merge_all().unwrap();
    let bytes = file_merge(42, 2);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for t in merged {
        let view = st.tensor(&t.name).unwrap();
        let want: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(t.values, want, "{}", t.name);
    }
}
