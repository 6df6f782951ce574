//! The per-element form of a merge (`InMemoryMerger::elementwise`, what evolve's GPU merge runs): for the methods
//! and parameters that have one, applying it gives the CPU merge's values bit for bit (TIES's top-k plan resolved
//! from the data as the CPU merge resolves it); where planning would have to read more of the data (l1 rescale,
//! breadcrumbs' band) there is none.

use std::path::PathBuf;

use evomerge_merge::methods::{ElementKeep, ElementScale};
use evomerge_merge::{open_models, InMemoryMerger, MergeConfig, TensorJob, TensorSource};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/merge")
}

fn config(method: &str, params: &str, shared: &str) -> MergeConfig {
    let yaml = format!(
        "models:\n  - model: models/base\n  - model: models/ft1\n    parameters: {{weight: 0.6, {params}}}\n  \
         - model: models/ft2\n    parameters: {{weight: 0.5, {params}}}\nmerge_method: {method}\nbase_model: models/base\n\
         parameters: {{{shared}}}\ndtype: float32\n"
    );
    let mut config = MergeConfig::from_yaml(&yaml).unwrap();
    config.recipe_dir = Some(fixtures());
    config
}

/// Applies every tensor's per-element form (where it has one) and compares it with the CPU merge; returns how
/// many tensors had one.
fn check(config: &MergeConfig, seed: u64) -> usize {
    let models = open_models(config).unwrap();
    let sources: Vec<&dyn TensorSource> = models.iter().map(|m| m as &dyn TensorSource).collect();
    let merger = InMemoryMerger::from_sources(config, sources.clone(), seed).unwrap();
    let mut with_form = 0;
    for (index, tensor) in merger.plan().tensors.iter().enumerate() {
        let Some(plan) = merger.elementwise(index) else { continue };
        let plan = plan.unwrap();
        let TensorJob::Merge { base: Some(base), inputs, .. } = &tensor.job else { panic!("{}", tensor.name) };
        let read = |model: usize, name: &str| {
            let mut v = Vec::new();
            sources[model].read_f32(name, &mut v).unwrap();
            v
        };
        let base = read(base.model, &base.name);
        let inputs: Vec<Vec<f32>> = inputs.iter().map(|i| read(i.model, &i.name)).collect();
        let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        let mut out = vec![f32::NAN; base.len()];
        plan.apply(&base, &refs, &mut out);
        let want = merger.merge_one(index).unwrap().values;
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&out), bits(&want), "{}", tensor.name);
        with_form += 1;
    }
    with_form
}

#[test]
fn dare_ties_dare_linear_ties_and_task_arithmetic_have_a_per_element_form_equal_to_the_cpu_merge() {
    for (method, params, shared) in [
        ("dare_ties", "density: 0.5", ""),
        ("dare_ties", "density: 0.3", "normalize: true, lambda: 1.3"),
        ("dare_ties", "density: 0.6", "consensus_method: count, rescale: false"),
        ("dare_linear", "density: 0.4", ""),
        ("task_arithmetic", "density: 1.0", "lambda: 0.7"),
        ("ties", "density: 1.0", ""),
        ("ties", "density: 0.5", ""),
        ("ties", "density: 0.2", "consensus_method: count, normalize: false"),
    ] {
        let config = config(method, params, shared);
        for seed in [0, 7] {
            let n = check(&config, seed);
            assert!(n >= 30, "{method} {params} {shared}: only {n} tensors had a per-element form");
        }
    }
}

#[test]
fn the_per_element_form_carries_the_dare_key_and_rescale() {
    let dare = config("dare_ties", "density: 0.5", "");
    let models = open_models(&dare).unwrap();
    let sources: Vec<&dyn TensorSource> = models.iter().map(|m| m as &dyn TensorSource).collect();
    let merger = InMemoryMerger::from_sources(&dare, sources, 3).unwrap();
    let plan = (0..merger.plan().tensors.len()).find_map(|i| merger.elementwise(i)).unwrap().unwrap();
    assert_eq!(plan.inputs.len(), 2);
    for input in &plan.inputs {
        assert!(matches!(input.keep, ElementKeep::Random { density, .. } if density == 0.5), "{input:?}");
        assert_eq!(input.scale, ElementScale::Div(0.5));
    }
    let ElementKeep::Random { key: a, .. } = plan.inputs[0].keep else { unreachable!() };
    let ElementKeep::Random { key: b, .. } = plan.inputs[1].keep else { unreachable!() };
    assert_ne!(a, b, "each model gets its own mask");

    // TIES: a top-k plan (k of the tensor's entries), resolved from the data by whoever runs it.
    let ties = config("ties", "density: 0.25", "");
    let models = open_models(&ties).unwrap();
    let merger = InMemoryMerger::from_sources(&ties, models.iter().map(|m| m as &dyn TensorSource).collect(), 0).unwrap();
    let (index, plan) = (0..merger.plan().tensors.len()).find_map(|i| merger.elementwise(i).map(|p| (i, p))).unwrap();
    let numel = merger.plan().tensors[index].numel();
    for input in &plan.unwrap().inputs {
        assert_eq!(input.keep, ElementKeep::TopMagnitude { k: numel / 4 }, "{input:?}");
    }
}

#[test]
fn merges_whose_plan_reads_the_data_have_no_per_element_form() {
    for (method, params, shared) in [
        ("ties", "density: 0.5", "rescale: l1"),
        ("dare_ties", "density: 0.5", "rescale: l1"),
        ("breadcrumbs", "density: 0.5", ""),
    ] {
        assert_eq!(check(&config(method, params, shared), 0), 0, "{method} {params} {shared}");
    }
    let linear = MergeConfig::from_yaml(
        "models:\n  - model: models/ft1\n    parameters: {weight: 1.0}\n  - model: models/ft2\n    parameters: {weight: 1.0}\nmerge_method: linear\ndtype: float32\n",
    )
    .map(|mut c| {
        c.recipe_dir = Some(fixtures());
        c
    })
    .unwrap();
    assert_eq!(check(&linear, 0), 0);
}
