//! Bad recipes and inputs fail with errors that name what is wrong, before anything is written;
//! a failure in the middle of a merge leaves neither the output nor a temporary directory.

use std::path::Path;

use evomerge_checkpoint::Dtype;
use evomerge_merge::{
    write_plan, InMemoryMerger, MemorySource, MergeConfig, MergeError, MergeOptions, MergePlan, TensorSource,
};
use serde_json::Value;

fn model(label: &str, q_shape: Vec<usize>, skip: Option<&str>) -> MemorySource {
    let mut m = MemorySource::new(label);
    let mut add = |name: &str, shape: Vec<usize>| {
        if skip != Some(name) {
            let n = shape.iter().product();
            m.insert(name, shape, (0..n).map(|i| (i as f32 * 0.37 + label.len() as f32).sin()).collect()).unwrap();
        }
    };
    add("model.embed_tokens.weight", vec![10, 4]);
    for l in 0..2 {
        add(&format!("model.layers.{l}.self_attn.q_proj.weight"), if l == 1 { q_shape.clone() } else { vec![4, 4] });
        add(&format!("model.layers.{l}.input_layernorm.weight"), vec![4]);
    }
    add("model.norm.weight", vec![4]);
    add("lm_head.weight", vec![10, 4]);
    m
}

const RECIPE: &str = "
models:
  - model: a
    parameters: {weight: 0.5}
  - model: b
    parameters: {weight: 0.5}
merge_method: linear
";

fn plan_error(a: &MemorySource, b: &MemorySource) -> MergeError {
    let config = MergeConfig::from_yaml(RECIPE).unwrap();
    match InMemoryMerger::new(&config, &[("a", a as &dyn TensorSource), ("b", b as &dyn TensorSource)], 0) {
        Ok(_) => panic!("planning should fail"),
        Err(e) => e,
    }
}

#[test]
fn missing_tensor_names_tensor_and_model() {
    let err = plan_error(&model("a", vec![4, 4], None), &model("b", vec![4, 4], Some("model.layers.1.input_layernorm.weight")));
    let msg = err.to_string();
    assert!(matches!(err, MergeError::MissingTensor { .. }), "{msg}");
    assert!(msg.contains("model.layers.1.input_layernorm.weight") && msg.contains("`b`"), "{msg}");
}

#[test]
fn mismatched_shapes_name_tensor_and_both_shapes() {
    let err = plan_error(&model("a", vec![4, 4], None), &model("b", vec![2, 8], None));
    let msg = err.to_string();
    assert!(msg.contains("model.layers.1.self_attn.q_proj.weight"), "{msg}");
    assert!(msg.contains("[4, 4]") && msg.contains("[2, 8]"), "{msg}");
}

#[test]
fn density_outside_unit_interval_names_the_key() {
    let err = MergeConfig::from_yaml(
        "models:\n  - model: a\n    parameters:\n      weight: 1\n      density: [0.5, -0.1]\nmerge_method: ties\nbase_model: b\n",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(err, "models[0].parameters.density[1]: -0.1 is outside [0, 1]");
    let err = MergeConfig::from_yaml(
        "models:\n  - model: a\n    parameters:\n      weight: 1\n      density:\n        - filter: mlp\n          value: 2\nmerge_method: dare_ties\nbase_model: b\n",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(err, "models[0].parameters.density[0].value: 2 is outside [0, 1]");
}

#[test]
fn unknown_method_lists_known_methods() {
    let err = MergeConfig::from_yaml("models:\n  - model: a\nmerge_method: ties_merging\n").unwrap_err().to_string();
    assert!(err.contains("unknown merge_method `ties_merging`"), "{err}");
    for m in ["linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "slerp", "passthrough"] {
        assert!(err.contains(m), "{err}");
    }
}

#[test]
fn unknown_keys_are_named() {
    let err = MergeConfig::from_yaml("models:\n  - model: a\nmerge_method: linear\nbase_modle: a\n").unwrap_err().to_string();
    assert!(err.contains("base_modle"), "{err}");
    let err = MergeConfig::from_yaml("models:\n  - model: a\n    parameters:\n      wieght: 1\nmerge_method: linear\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("models[0].parameters.wieght: unknown parameter for linear; known: weight, normalize"), "{err}");
}

#[test]
fn missing_required_parameter_is_named_at_plan_time() {
    let config = MergeConfig::from_yaml("models:\n  - model: a\n  - model: b\n    parameters: {weight: 1}\nmerge_method: linear\n").unwrap();
    let (a, b) = (model("a", vec![4, 4], None), model("b", vec![4, 4], None));
    let err = InMemoryMerger::new(&config, &[("a", &a as &dyn TensorSource), ("b", &b as &dyn TensorSource)], 0)
        .err()
        .expect("weight of `a` is missing")
        .to_string();
    assert!(err.contains("parameter `weight`") && err.contains("`a`"), "{err}");
}

/// A source whose reads of one tensor fail, as a disk error would.
struct FailingSource {
    inner: MemorySource,
    fail_on: &'static str,
}

impl TensorSource for FailingSource {
    fn label(&self) -> String {
        self.inner.label()
    }
    fn config(&self) -> Option<&Value> {
        self.inner.config()
    }
    fn tensor_names(&self) -> Vec<String> {
        self.inner.tensor_names()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.inner.shape(name)
    }
    fn dtype(&self, name: &str) -> Option<Dtype> {
        self.inner.dtype(name)
    }
    fn read_f32(&self, name: &str, out: &mut Vec<f32>) -> Result<(), MergeError> {
        if name == self.fail_on {
            return Err(MergeError::Io { context: format!("reading {name}"), source: std::io::Error::other("device error") });
        }
        self.inner.read_f32(name, out)
    }
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn failure_mid_merge_leaves_no_output_or_temp_dir() {
    let config = MergeConfig::from_yaml(RECIPE).unwrap();
    let a = model("a", vec![4, 4], None);
    let b = FailingSource { inner: model("b", vec![4, 4], None), fail_on: "model.layers.1.self_attn.q_proj.weight" };
    let sources: Vec<&dyn TensorSource> = vec![&a, &b];
    let plan = MergePlan::new(&config, &sources).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("merged");
    for threads in [1, 3] {
        let options = MergeOptions { threads: Some(threads), progress: false, ..Default::default() };
        let err = write_plan(&plan, &sources, &out, &options).unwrap_err().to_string();
        assert!(err.contains("device error"), "{err}");
        assert!(entries(tmp.path()).is_empty(), "left behind: {:?}", entries(tmp.path()));
    }
    // And the same plan succeeds with healthy sources.
    let b_ok = model("b", vec![4, 4], None);
    let healthy: Vec<&dyn TensorSource> = vec![&a, &b_ok];
    let options = MergeOptions { progress: false, ..Default::default() };
    write_plan(&plan, &healthy, &out, &options).unwrap();
    assert_eq!(entries(tmp.path()), ["merged"]);
}

/// Plan `recipe` over in-memory models named in it (`a`, `b`, `c`, `base`).
fn plan_recipe(recipe: &str) -> Result<(), MergeError> {
    let config = MergeConfig::from_yaml(recipe)?;
    let models: Vec<(&str, MemorySource)> =
        ["a", "b", "c", "base"].into_iter().map(|n| (n, model(n, vec![4, 4], None))).collect();
    let sources: Vec<(&str, &dyn TensorSource)> = models.iter().map(|(n, m)| (*n, m as &dyn TensorSource)).collect();
    let merger = InMemoryMerger::new(&config, &sources, 0)?;
    merger.merge_all().map(|_| ())
}

#[test]
fn new_methods_refuse_bad_parameters_by_their_path() {
    let cases = [
        // (recipe, words the error must contain)
        ("models: [{model: a, parameters: {weight: 1, density: 0.5, gamma: 1.5}}]\nmerge_method: breadcrumbs\nbase_model: base\n", vec!["models[0].parameters.gamma", "outside [0, 1]"]),
        ("models: [{model: a}, {model: b}]\nmerge_method: karcher\nparameters: {max_iter: 2.5}\n", vec!["parameters.max_iter", "whole number"]),
        ("models: [{model: a}, {model: b}]\nmerge_method: sce\nbase_model: base\nparameters: {select_topk: 2}\n", vec!["parameters.select_topk", "outside [0, 1]"]),
        ("models: [{model: a}, {model: b}]\nmerge_method: model_stock\nbase_model: base\nparameters: {filter_wise: maybe}\n", vec!["parameters.filter_wise", "true or false"]),
        ("models: [{model: a, parameters: {weight: 1}}]\nmerge_method: nearswap\nbase_model: base\nparameters: {t: 0.5}\n", vec!["models[0].parameters.weight", "unknown parameter for nearswap"]),
        ("models: [{model: a, parameters: {t: 0.5}}]\nmerge_method: nearswap\nbase_model: base\n", vec!["models[0].parameters.t", "top-level `parameters`"]),
    ];
    for (recipe, words) in cases {
        let msg = plan_recipe(recipe).unwrap_err().to_string();
        for w in words {
            assert!(msg.contains(w), "`{w}` missing from: {msg}");
        }
    }
}

#[test]
fn new_methods_check_their_model_counts_and_base() {
    let cases = [
        ("models: [{model: a}]\nmerge_method: model_stock\nbase_model: base\n", vec!["model_stock", "at least 3", "got 2"]),
        ("models: [{model: a, parameters: {weight: 1}}, {model: b, parameters: {weight: 1}}, {model: c, parameters: {weight: 1}}]\nmerge_method: nuslerp\n", vec!["nuslerp", "exactly 2", "besides the base", "got 3"]),
        ("models: [{model: a}, {model: b}]\nmerge_method: nearswap\nbase_model: base\nparameters: {t: 0.1}\n", vec!["nearswap", "exactly 2", "got 3"]),
        ("models: [{model: a}, {model: b}]\nmerge_method: sce\n", vec!["base_model", "sce needs a base_model"]),
        ("models: [{model: a, parameters: {weight: 1}}]\nmerge_method: multislerp\nbase_model: base\n", vec![]),
        ("models: [{model: a}, {model: b}, {model: c}]\nmerge_method: karcher\nbase_model: base\n", vec![]),
        ("models: [{model: a}]\nmerge_method: nearswap\nbase_model: base\n", vec!["parameter `t` is required by nearswap"]),
    ];
    for (recipe, words) in cases {
        match plan_recipe(recipe) {
            Ok(()) => assert!(words.is_empty(), "{recipe} should fail"),
            Err(e) => {
                let msg = e.to_string();
                assert!(!words.is_empty(), "{recipe} failed: {msg}");
                for w in words {
                    assert!(msg.contains(w), "`{w}` missing from: {msg}");
                }
            }
        }
    }
}

#[test]
fn unknown_keys_say_what_mergekit_would_have_done() {
    let err = MergeConfig::from_yaml("models:\n  - model: a\nmerge_method: linear\ndype: bfloat16\n").unwrap_err().to_string();
    assert!(err.contains("unknown field `dype`") && err.contains("silently ignore `dype`") && err.contains("spelling"), "{err}");
    let err = MergeConfig::from_yaml("models:\n  - model: a\nmerge_method: linear\nnormalize: false\n").unwrap_err().to_string();
    assert!(err.contains("silently ignore `normalize`") && err.contains("under `parameters:`"), "{err}");
}

#[test]
fn multi_document_recipes_are_recognised() {
    let text = "name: first\nmodels:\n  - model: a\nmerge_method: linear\n---\nname: second\nmodels:\n  - model: first\nmerge_method: linear\n---\nmodels:\n  - model: second\nmerge_method: linear\n";
    let err = MergeConfig::from_yaml(text).unwrap_err().to_string();
    assert!(!err.contains("unknown field"), "{err}");
    assert!(err.contains("3 recipes") && err.contains("`first`, `second`, (unnamed") && err.contains("mergekit-multi"), "{err}");
    let err = MergeConfig::from_yaml("name: only\nmodels:\n  - model: a\nmerge_method: linear\n").unwrap_err().to_string();
    assert!(err.contains("`name: only`") && err.contains("Remove the `name` key"), "{err}");
    // A leading document marker alone is still one recipe.
    MergeConfig::from_yaml("---\nmodels:\n  - model: a\n    parameters: {weight: 1}\nmerge_method: linear\n").unwrap();
}
