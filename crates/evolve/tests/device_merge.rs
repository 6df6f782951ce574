//! The candidate merge on the live model's device (`device_merge`), run here on the CPU through the same op an
//! accelerator runs: for every candidate, the model it writes equals the CPU merger's bit for bit, and tensors
//! without a per-element form go through the CPU merger.

use std::path::PathBuf;

use candle_core::{DType, Device};
use evomerge_evolve::device_merge::DeviceMerge;
use evomerge_merge::{open_models, InMemoryMerger, MergeConfig, TensorSource};
use evomerge_mistral::{LoadOptions, Mistral};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/merge")
}

fn config(method: &str, d1: f64, d2: f64, shared: &str) -> MergeConfig {
    let yaml = format!(
        "models:\n  - model: models/base\n  - model: models/ft1\n    parameters: {{weight: 0.7, density: {d1}}}\n  \
         - model: models/ft2\n    parameters: {{weight: 0.45, density: {d2}}}\nmerge_method: {method}\n\
         base_model: models/base\nparameters: {{{shared}}}\ndtype: float32\n"
    );
    let mut config = MergeConfig::from_yaml(&yaml).unwrap();
    config.recipe_dir = Some(fixtures());
    config
}

fn live(cpu_kernels: bool) -> Mistral {
    let opts = LoadOptions { cpu_kernels, dtype: Some(DType::F32), ..LoadOptions::default() };
    Mistral::from_dir(&fixtures().join("models/base"), &opts).unwrap()
}

fn assert_same_weights(a: &Mistral, b: &Mistral, what: &str) {
    for name in a.parameter_names() {
        let x = a.parameter(&name).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let y = b.parameter(&name).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert!(bits(&x) == bits(&y), "{what}: {name} differs");
    }
}

/// Merges the merger's current candidate into `cpu` (CPU merger) and `device` (device merge, then the CPU
/// merger for the rest); returns how many tensors the device merge did.
fn merge_both(merger: &InMemoryMerger<'_>, dm: &DeviceMerge, cpu: &mut Mistral, device: &mut Mistral) -> usize {
    let write = |m: &mut Mistral, name: &str, values: &[f32]| -> Result<(), evomerge_merge::MergeError> {
        m.write_f32(name, values).unwrap();
        Ok(())
    };
    merger.merge_into(false, |view| write(cpu, &view.tensor.name, view.values)).unwrap();
    let done = dm.merge_into(merger, DType::F32, |t, v| Ok(device.set_tensor(&t.name, v).unwrap())).unwrap();
    merger.merge_into_except(false, |i| done[i], |view| write(device, &view.tensor.name, view.values)).unwrap();
    done.iter().filter(|d| **d).count()
}

#[test]
fn the_device_merge_writes_the_cpu_mergers_weights_for_every_candidate() {
    let initial = config("dare_ties", 0.5, 0.5, "");
    let models = open_models(&initial).unwrap();
    let sources: Vec<&dyn TensorSource> = models.iter().map(|m| m as &dyn TensorSource).collect();
    let mut merger = InMemoryMerger::from_sources(&initial, sources, 11).unwrap();
    let dm = DeviceMerge::new(&merger, &Device::Cpu).unwrap();
    assert!(dm.len() >= 30, "{} tensors resident", dm.len());
    for cpu_kernels in [false, true] {
        let (mut cpu, mut device) = (live(cpu_kernels), live(cpu_kernels));
        for (method, d1, d2, shared) in [
            ("dare_ties", 0.5, 0.5, ""),
            ("dare_ties", 0.2, 0.9, "normalize: true, lambda: 1.2"),
            ("dare_ties", 0.7, 0.3, "consensus_method: count"),
            ("dare_linear", 0.6, 0.4, ""),
            ("dare_ties", 1.0, 0.0, ""),
            ("ties", 0.5, 0.5, ""),
            ("ties", 0.1, 0.8, "consensus_method: count"),
            ("ties", 0.3, 1.0, "normalize: false, lambda: 0.9"),
        ] {
            merger.set_config(&config(method, d1, d2, shared)).unwrap();
            let on_device = merge_both(&merger, &dm, &mut cpu, &mut device);
            assert_eq!(on_device, dm.len(), "{method} {d1} {d2} {shared}");
            assert_same_weights(&cpu, &device, &format!("{method} {d1} {d2} {shared} (kernels {cpu_kernels})"));
        }
        // A candidate whose plan reads the data (l1 rescale) has no per-element form: all of it on the CPU.
        merger.set_config(&config("dare_ties", 0.5, 0.5, "rescale: l1")).unwrap();
        assert_eq!(merge_both(&merger, &dm, &mut cpu, &mut device), 0);
        assert_same_weights(&cpu, &device, "l1 rescale");
    }
}

fn recipe(yaml: &str) -> MergeConfig {
    let mut config = MergeConfig::from_yaml(yaml).unwrap();
    config.recipe_dir = Some(fixtures());
    config
}

fn linear(w: [f64; 3], shared: &str) -> MergeConfig {
    recipe(&format!(
        "models:\n  - model: models/base\n    parameters: {{weight: {}}}\n  - model: models/ft1\n    parameters: {{weight: {}}}\n  \
         - model: models/ft2\n    parameters: {{weight: {}}}\nmerge_method: linear\nparameters: {{{shared}}}\ndtype: float32\n",
        w[0], w[1], w[2]
    ))
}

fn slerp(t: f64) -> MergeConfig {
    recipe(&format!(
        "models:\n  - model: models/base\n  - model: models/ft1\nmerge_method: slerp\nbase_model: models/base\n\
         parameters: {{t: {t}}}\ndtype: float32\n"
    ))
}

/// linear and slerp run on the device as fixed weighted sums of their rows (slerp's statistics computed once, at
/// upload): every candidate writes the CPU merger's weights bit for bit, on the CPU kernels and the generic path.
#[test]
fn weighted_sum_merges_on_the_device_write_the_cpu_mergers_weights() {
    let families: [(MergeConfig, Vec<MergeConfig>); 2] = [
        (
            linear([0.2, 0.5, 0.3], ""),
            vec![
                linear([0.2, 0.5, 0.3], ""),
                linear([1.0, -0.4, 0.7], ""),
                linear([0.1, 0.6, 0.25], "normalize: false"),
                linear([0.0, 0.0, 1.0], ""),
            ],
        ),
        (slerp(0.5), vec![slerp(0.5), slerp(0.0), slerp(0.13), slerp(1.0), slerp(-0.2)]),
    ];
    for (initial, candidates) in families {
        let models = open_models(&initial).unwrap();
        let sources: Vec<&dyn TensorSource> = models.iter().map(|m| m as &dyn TensorSource).collect();
        let mut merger = InMemoryMerger::from_sources(&initial, sources, 3).unwrap();
        let dm = DeviceMerge::new(&merger, &Device::Cpu).unwrap();
        let merged = merger.plan().tensors.iter().filter(|t| matches!(t.job, evomerge_merge::TensorJob::Merge { .. })).count();
        assert_eq!(dm.len(), merged, "{}: every merged tensor resident", initial.merge_method);
        for cpu_kernels in [false, true] {
            let (mut cpu, mut device) = (live(cpu_kernels), live(cpu_kernels));
            for (i, candidate) in candidates.iter().enumerate() {
                let what = format!("{} candidate #{i} (kernels {cpu_kernels})", initial.merge_method);
                merger.set_config(candidate).unwrap();
                assert_eq!(merge_both(&merger, &dm, &mut cpu, &mut device), dm.len(), "{what}");
                assert_same_weights(&cpu, &device, &what);
            }
        }
    }
}

#[test]
fn a_merge_without_a_per_element_form_keeps_nothing_resident() {
    let breadcrumbs = config("breadcrumbs_ties", 0.5, 0.5, "");
    let models = open_models(&breadcrumbs).unwrap();
    let sources: Vec<&dyn TensorSource> = models.iter().map(|m| m as &dyn TensorSource).collect();
    let merger = InMemoryMerger::from_sources(&breadcrumbs, sources, 0).unwrap();
    assert!(DeviceMerge::new(&merger, &Device::Cpu).unwrap().is_empty());
}

/// Which entries survive a threshold and tie cut (the CPU kernel's rule).
fn kept(magnitudes: &[f32], threshold: f32, tie_cut: usize) -> Vec<bool> {
    let keep = evomerge_merge::sparsify::Keep::Magnitude { threshold, tie_cut };
    magnitudes.iter().enumerate().map(|(i, &a)| keep.keeps(i, a)).collect()
}

/// TIES's threshold and tie cut found by counting passes on a device keep the very entries the CPU's selection
/// keeps, on heavily tied data (quantised magnitudes, many zeros), for small tensors (the CPU's radix select) and
/// large ones (its sampled bracket), for k across the range.
#[test]
fn top_magnitude_keeps_what_the_cpu_selection_keeps() {
    use evomerge_evolve::device_merge::top_magnitude;
    use evomerge_merge::methods::{ElementInput, ElementKeep, ElementScale, ElementwiseGta};
    for (n, levels) in [(1000usize, 7u64), (5000, 1000), (100_000, 50), (100_000, 1 << 20)] {
        let values: Vec<f32> = (0..n as u64)
            .map(|i| {
                let h = evomerge_merge::sparsify::mix64(i ^ (n as u64) << 32);
                let level = (h % levels) as f32;
                if h >> 63 == 1 { -level / 64.0 } else { level / 64.0 }
            })
            .collect();
        let base = vec![0f32; n];
        let magnitudes: Vec<f32> = values.iter().map(|v| v.abs()).collect();
        let on_device = candle_core::Tensor::from_vec(magnitudes.clone(), n, &Device::Cpu).unwrap();
        for k in [1, 2, n / 10, n / 3, n / 2, n - n / 5, n - 2, n - 1] {
            let (threshold, tie_cut) = top_magnitude(&on_device, k).unwrap().expect("finite");
            let plan = ElementwiseGta {
                inputs: vec![ElementInput { weight: 1.0, keep: ElementKeep::TopMagnitude { k }, scale: ElementScale::One }],
                consensus: None,
                normalize: false,
                lambda: None,
                plain_divisor: 1.0,
            };
            let ElementKeep::Magnitude { threshold: want, tie_cut: want_cut } =
                plan.resolve_magnitudes(&base, &[&values]).inputs[0].keep
            else {
                panic!("the CPU selection gave no threshold for k = {k} of {n}");
            };
            assert_eq!(threshold.to_bits(), want.to_bits(), "threshold, k = {k} of {n}");
            let mine = kept(&magnitudes, threshold, tie_cut);
            assert_eq!(mine.iter().filter(|&&survives| survives).count(), k, "kept count, k = {k} of {n}");
            assert!(mine == kept(&magnitudes, want, want_cut), "kept entries, k = {k} of {n}");
        }
    }
    // Non-finite magnitudes are left to the CPU.
    let with_inf = candle_core::Tensor::new(&[1f32, f32::INFINITY, 0.5], &Device::Cpu).unwrap();
    assert_eq!(top_magnitude(&with_inf, 1).unwrap(), None);
}
