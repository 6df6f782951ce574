//! DELLA (`della`, `della_linear`): within each row the keep probability rises linearly with the
//! magnitude rank from `density − epsilon` to `density + epsilon`; kept entries are rescaled by
//! exactly 1/p (the paper's rescale, our default); masks depend only on (seed, tensor, model), so
//! outputs are reproducible, differ across seeds and do not depend on the thread count. The
//! deterministic rest of the method is compared with mergekit in tests/parity.rs.

use std::path::PathBuf;

use evomerge_merge::methods::get;
use evomerge_merge::sparsify::mix64;
use evomerge_merge::{
    merge_tensor, merge_to_dir, InMemoryMerger, MemorySource, MergeConfig, MergeOptions, ModelTensor, ParamSet,
    ParamValue, TensorContext, TensorSource,
};

const ROWS: usize = 100;
const COLS: usize = 2_000;
const N: usize = ROWS * COLS;

/// Deterministic pseudo-random values in (-1, 1), never exactly 0 as deltas.
fn values(seed: u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let u = (mix64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64) >> 40) as f32 / (1u64 << 24) as f32;
            if u == 0.5 { 0.25 } else { 2.0 * u - 1.0 }
        })
        .collect()
}

fn pair(seed: u64) -> (Vec<f32>, Vec<f32>) {
    let base = values(seed, N);
    let model = base.iter().zip(values(seed + 1, N)).map(|(b, d)| b + 0.1 * d).collect();
    (base, model)
}

/// One non-base model with weight 1 under `della_linear` (no normalization): base + sparsified delta.
fn merge_single(method: &str, density: f64, epsilon: f64, seed: u64, base: &[f32], model: &[f32], shared: &ParamSet) -> Result<Vec<f32>, String> {
    let params = ParamSet::new().with_float("weight", 1.0).with_float("density", density).with_float("epsilon", epsilon);
    let inputs = [ModelTensor { model: 1, data: model, params: &params }];
    let shape = [ROWS, COLS];
    let ctx = TensorContext { name: "model.layers.0.mlp.up_proj.weight", layer: Some(0), seed, shape: &shape, compute: None };
    let mut out = vec![0f32; base.len()];
    merge_tensor(get(method).unwrap(), &ctx, shared, Some(base), &inputs, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Rank of each entry's |delta| within its row (ascending, ties by position).
fn ranks(base: &[f32], model: &[f32]) -> Vec<usize> {
    let mut rank = vec![0; N];
    for r in 0..ROWS {
        let mut order: Vec<usize> = (0..COLS).collect();
        let mag = |c: usize| (model[r * COLS + c] - base[r * COLS + c]).abs();
        order.sort_by(|&a, &b| mag(a).total_cmp(&mag(b)).then(a.cmp(&b)));
        for (k, c) in order.into_iter().enumerate() {
            rank[r * COLS + c] = k;
        }
    }
    rank
}

fn within_3_sigma(kept: usize, total: usize, p: f64) -> bool {
    let frac = kept as f64 / total as f64;
    (frac - p).abs() <= 3.0 * (p * (1.0 - p) / total as f64).sqrt()
}

#[test]
fn keep_probability_follows_the_magnitude_rank_and_kept_entries_are_divided_by_it() {
    let (base, model) = pair(1);
    let rank = ranks(&base, &model);
    for (density, epsilon) in [(0.5, 0.3), (0.3, 0.1), (0.8, 0.15)] {
        let out = merge_single("della_linear", density, epsilon, 7, &base, &model, &ParamSet::new()).unwrap();
        // Ten rank deciles: each keeps the mean probability of its ranks (3σ).
        let mut kept = [0usize; 10];
        let mut count = [0usize; 10];
        let mut expected = [0f64; 10];
        let mut total_kept = 0;
        for j in 0..N {
            let p = (density - epsilon) as f32 + (rank[j] as f32 / (COLS - 1) as f32) * 2.0 * epsilon as f32;
            let decile = rank[j] * 10 / COLS;
            count[decile] += 1;
            expected[decile] += p as f64;
            let delta = model[j] - base[j];
            if out[j] == base[j] {
                continue;
            }
            kept[decile] += 1;
            total_kept += 1;
            assert_eq!(out[j], base[j] + delta / p, "entry {j} (rank {}) is not rescaled by exactly 1/p", rank[j]);
        }
        assert!(within_3_sigma(total_kept, N, density), "kept {total_kept} of {N} at density {density}");
        for d in 0..10 {
            let p = expected[d] / count[d] as f64;
            assert!(within_3_sigma(kept[d], count[d], p), "decile {d}: kept {} of {} vs p {p}", kept[d], count[d]);
        }
        // Larger entries survive more often: the top decile keeps more than the bottom one.
        assert!(kept[9] > kept[0], "top decile {} vs bottom {}", kept[9], kept[0]);
    }
}

#[test]
fn l1_rescale_keeps_the_l1_norm_and_false_keeps_values() {
    let (base, model) = pair(3);
    let mut shared = ParamSet::new();
    shared.set("rescale", ParamValue::Text("l1".into()));
    let out = merge_single("della_linear", 0.4, 0.2, 3, &base, &model, &shared).unwrap();
    let l1_delta: f64 = model.iter().zip(&base).map(|(m, b)| (m - b).abs() as f64).sum();
    let l1_out: f64 = out.iter().zip(&base).map(|(o, b)| (o - b).abs() as f64).sum();
    assert!((l1_out / l1_delta - 1.0).abs() < 1e-4, "l1 norm kept: {l1_out} vs {l1_delta}");

    shared.set("rescale", ParamValue::Bool(false));
    let out = merge_single("della_linear", 0.4, 0.2, 3, &base, &model, &shared).unwrap();
    let kept = (0..N).filter(|&j| out[j] != base[j]).inspect(|&j| assert_eq!(out[j], base[j] + (model[j] - base[j]))).count();
    assert!(within_3_sigma(kept, N, 0.4), "kept {kept}");
}

#[test]
fn masks_depend_on_seed_only_not_on_threads() {
    let (base, model) = pair(5);
    let shared = ParamSet::new();
    let a = merge_single("della", 0.5, 0.2, 11, &base, &model, &shared).unwrap();
    let b = merge_single("della", 0.5, 0.2, 11, &base, &model, &shared).unwrap();
    let c = merge_single("della", 0.5, 0.2, 12, &base, &model, &shared).unwrap();
    assert_eq!(a, b, "same seed, same output");
    let differing = a.iter().zip(&c).filter(|(x, y)| x != y).count();
    assert!(differing > N / 4, "a different seed must give a different mask ({differing} entries differ)");
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let four = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
    let x = one.install(|| merge_single("della_linear", 0.3, 0.1, 5, &base, &model, &shared).unwrap());
    let y = four.install(|| merge_single("della_linear", 0.3, 0.1, 5, &base, &model, &shared).unwrap());
    assert_eq!(x, y);
}

#[test]
fn density_plus_or_minus_epsilon_must_stay_inside_0_1() {
    let (base, model) = pair(7);
    for (density, epsilon) in [(0.9, 0.1), (0.1, 0.2)] {
        let e = merge_single("della", density, epsilon, 1, &base, &model, &ParamSet::new()).unwrap_err();
        assert!(e.contains("epsilon") && e.contains("(0, 1)"), "{e}");
    }
    // Density 1 keeps everything whatever epsilon is (mergekit returns the delta unchanged).
    let out = merge_single("della_linear", 1.0, 0.5, 1, &base, &model, &ParamSet::new()).unwrap();
    assert!(out.iter().zip(&model).all(|(o, m)| (o - m).abs() <= 1e-6));
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/merge")
}

const DELLA_RECIPE: &str = "
models:
  - model: models/ft1
    parameters: {weight: 0.6, density: 0.5, epsilon: 0.3}
  - model: models/ft2
    parameters: {weight: [0.2, 0.8], density: 0.4}
merge_method: della
base_model: models/base
dtype: float32
";

fn file_merge(seed: u64, threads: usize) -> Vec<u8> {
    let mut config = MergeConfig::from_yaml(DELLA_RECIPE).unwrap();
    config.recipe_dir = Some(fixtures());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let options = MergeOptions { seed, threads: Some(threads), progress: false, ..Default::default() };
    merge_to_dir(&config, &out, &options).unwrap();
    std::fs::read(out.join("model.safetensors")).unwrap()
}

#[test]
fn file_merges_are_bit_identical_across_thread_counts_and_match_the_in_memory_merger() {
    let one = file_merge(42, 1);
    assert!(one == file_merge(42, 4), "1 vs 4 threads must give identical bytes");
    assert!(one != file_merge(43, 2), "another seed must give another model");

    let mut config = MergeConfig::from_yaml(DELLA_RECIPE).unwrap();
    config.recipe_dir = Some(fixtures());
    let models = evomerge_merge::open_models(&config).unwrap();
    let loaded: Vec<MemorySource> = models.iter().map(|m| MemorySource::load(m).unwrap()).collect();
    let sources: Vec<&dyn TensorSource> = loaded.iter().map(|m| m as &dyn TensorSource).collect();
    let merged = InMemoryMerger::from_sources(&config, sources, 42).unwrap().merge_all().unwrap();
    let st = safetensors::SafeTensors::deserialize(&one).unwrap();
    for t in merged {
        let view = st.tensor(&t.name).unwrap();
        let want: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(t.values, want, "{}", t.name);
    }
}
