//! `evomerge merge` end to end: a mergekit-parity recipe through the binary, and every bad input
//! the merge owns gets a clear message, a non-zero exit and leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use evomerge_checkpoint::{write_checkpoint, Checkpoint, Dtype, WriteOptions};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/merge")
}

/// Runs `evomerge merge ...` from the fixture directory (recipes name models relative to it).
fn merge(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evomerge"));
    cmd.arg("merge").args(args).current_dir(fixtures()).env("HF_HUB_OFFLINE", "1").env(
        "HF_HOME",
        std::env::temp_dir().join("evomerge-cli-merge-empty-hf-home"),
    );
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("running evomerge")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Entries of a directory (to check that nothing, not even a hidden temp dir, was left).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn assert_failed_cleanly(out: &Output, parent: &Path, expected_entries: &[&str], message_parts: &[&str]) {
    assert!(!out.status.success(), "merge should fail; stderr: {}", stderr(out));
    let err = stderr(out);
    for part in message_parts {
        assert!(err.contains(part), "stderr should mention `{part}`: {err}");
    }
    assert_eq!(entries(parent), expected_entries, "a failed merge must leave nothing behind");
}

fn write_recipe(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("recipe.yml");
    std::fs::write(&path, text.replace("FIX", &fixtures().display().to_string())).unwrap();
    path
}

/// A copy of fixture model `ft2` with `edit` applied to its tensor list.
fn altered_model(dir: &Path, edit: impl Fn(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) -> PathBuf {
    let src = Checkpoint::open_dir(&fixtures().join("models/ft2")).unwrap();
    let mut tensors: Vec<_> = src
        .tensor_names()
        .into_iter()
        .map(|n| {
            let v = src.tensor(n).unwrap();
            (n.to_string(), v.dtype, v.shape.to_vec(), v.data.to_vec())
        })
        .collect();
    edit(&mut tensors);
    let out = dir.join("altered");
    write_checkpoint(&out, &tensors, src.config(), Some(src.dir()), WriteOptions::default()).unwrap();
    out
}

#[test]
fn ties_recipe_matches_mergekit_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("merged");
    let out = merge(&["recipes/ties.yml", "--out", out_dir.to_str().unwrap(), "--threads", "2"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("merged 39 tensors"), "{}", stderr(&out));
    let merged = Checkpoint::open_dir(&out_dir).unwrap();
    assert!(out_dir.join("tokenizer.json").exists(), "tokenizer files come from the base model");
    let bytes = std::fs::read(fixtures().join("expected/ties.safetensors")).unwrap();
    let expected = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (name, view) in expected.tensors() {
        let want: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let got = merged.tensor(&name).unwrap().to_f32();
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff <= 1e-6, "{name}: {diff}");
    }
}

#[test]
fn existing_output_is_refused_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("merged");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::write(out_dir.join("keep.txt"), "precious").unwrap();
    let out = merge(&["recipes/linear.yml", "--out", out_dir.to_str().unwrap()], &[]);
    assert_failed_cleanly(&out, tmp.path(), &["merged"], &["already exists"]);
    assert_eq!(std::fs::read_to_string(out_dir.join("keep.txt")).unwrap(), "precious");

    let out = merge(&["recipes/linear.yml", "--out", out_dir.to_str().unwrap(), "--force"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!out_dir.join("keep.txt").exists());
    assert!(out_dir.join("model.safetensors").exists());
    assert_eq!(entries(tmp.path()), ["merged"]);
}

#[test]
fn unknown_method_lists_the_known_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(tmp.path(), "models:\n  - model: FIX/models/ft1\nmerge_method: frobnicate\n");
    let out = merge(&[recipe.to_str().unwrap(), "--out", tmp.path().join("m").to_str().unwrap()], &[]);
    assert_failed_cleanly(&out, tmp.path(), &["recipe.yml"], &["unknown merge_method `frobnicate`", "ties", "slerp"]);
}

#[test]
fn unknown_key_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        tmp.path(),
        "models:\n  - model: FIX/models/ft1\n    parameters:\n      weight: 1.0\n    paramters: {}\nmerge_method: linear\n",
    );
    let out = merge(&[recipe.to_str().unwrap(), "--out", tmp.path().join("m").to_str().unwrap()], &[]);
    assert_failed_cleanly(&out, tmp.path(), &["recipe.yml"], &["paramters"]);
}

#[test]
fn density_outside_unit_interval_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        tmp.path(),
        "models:\n  - model: FIX/models/ft1\n    parameters: {weight: 0.5, density: 0.5}\n  - model: FIX/models/ft2\n    parameters: {weight: 0.5, density: 1.5}\nmerge_method: ties\nbase_model: FIX/models/base\n",
    );
    let out = merge(&[recipe.to_str().unwrap(), "--out", tmp.path().join("m").to_str().unwrap()], &[]);
    assert_failed_cleanly(&out, tmp.path(), &["recipe.yml"], &["models[1].parameters.density", "1.5 is outside [0, 1]"]);
}

#[test]
fn missing_tensor_in_one_model_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let model = altered_model(tmp.path(), |t| t.retain(|(n, ..)| n != "model.layers.2.mlp.up_proj.weight"));
    let recipe = write_recipe(
        tmp.path(),
        &format!("models:\n  - model: FIX/models/ft1\n    parameters: {{weight: 0.5}}\n  - model: {}\n    parameters: {{weight: 0.5}}\nmerge_method: linear\n", model.display()),
    );
    let out = merge(&[recipe.to_str().unwrap(), "--out", tmp.path().join("m").to_str().unwrap()], &[]);
    assert_failed_cleanly(&out, tmp.path(), &["altered", "recipe.yml"], &["model.layers.2.mlp.up_proj.weight", "is missing from model"]);
}

#[test]
fn mismatched_shapes_name_the_tensor_and_both_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = altered_model(tmp.path(), |t| {
        for (name, _, shape, data) in t.iter_mut() {
            if name == "model.layers.1.self_attn.q_proj.weight" {
                // 16x16 -> 8x32 keeps the byte count but not the shape.
                *shape = vec![8, 32];
                let _ = data;
            }
        }
    });
    let recipe = write_recipe(
        tmp.path(),
        &format!("models:\n  - model: FIX/models/ft1\n    parameters: {{weight: 0.5}}\n  - model: {}\n    parameters: {{weight: 0.5}}\nmerge_method: linear\n", model.display()),
    );
    let out = merge(&[recipe.to_str().unwrap(), "--out", tmp.path().join("m").to_str().unwrap()], &[]);
    assert_failed_cleanly(
        &out,
        tmp.path(),
        &["altered", "recipe.yml"],
        &["model.layers.1.self_attn.q_proj.weight", "[16, 16]", "[8, 32]"],
    );
}

#[test]
fn write_error_mid_merge_leaves_no_output_or_temp_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("merged");
    let out = merge(
        &["recipes/ties.yml", "--out", out_dir.to_str().unwrap()],
        &[("EVOMERGE_FAULT_INJECT_WRITE_AFTER_BYTES", "20000")],
    );
    assert_failed_cleanly(&out, tmp.path(), &[], &["no space left on device"]);
}

/// A plain Mistral directory holding the tiny LLaVA fixture's language model, every value
/// shifted by `shift` (a different "model" with the same shapes).
fn plain_llm_from_llava(llava: &Checkpoint, out: &Path, shift: f32) -> PathBuf {
    let tensors: Vec<_> = llava
        .tensor_names()
        .into_iter()
        .filter_map(|n| {
            let canonical = n.strip_prefix("language_model.")?;
            let v = llava.tensor(n).unwrap();
            let values: Vec<f32> = v.to_f32().iter().enumerate().map(|(i, x)| x + shift * ((i % 5) as f32 - 2.0)).collect();
            Some((canonical.to_string(), Dtype::F32, v.shape.to_vec(), evomerge_checkpoint::f32_to_bytes(Dtype::F32, &values)))
        })
        .collect();
    let mut config = llava.config()["text_config"].clone();
    config["architectures"] = serde_json::json!(["MistralForCausalLM"]);
    write_checkpoint(out, &tensors, &config, None, WriteOptions::default()).unwrap()
}

#[test]
fn plain_base_with_a_llava_model_writes_a_llava_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let llava_dir = fixtures().join("../vision/llava").canonicalize().unwrap();
    let llava = Checkpoint::open_dir(&llava_dir).unwrap();
    let base = plain_llm_from_llava(&llava, &tmp.path().join("base"), 0.01);
    let ft = plain_llm_from_llava(&llava, &tmp.path().join("ft"), -0.02);
    let recipe = tmp.path().join("vlm.yml");
    std::fs::write(
        &recipe,
        format!(
            "merge_method: ties\nbase_model: {}\nmodels:\n  - model: {}\n  - model: {}\nparameters: {{weight: 0.5, density: 0.6}}\n",
            base.display(),
            llava_dir.display(),
            ft.display()
        ),
    )
    .unwrap();
    let out_dir = tmp.path().join("merged");
    let out = merge(&[recipe.to_str().unwrap(), "--out", out_dir.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("the output is a VLM"), "the CLI says which model the output is: {}", stderr(&out));
    let merged = Checkpoint::open_dir(&out_dir).unwrap();
    assert_eq!(merged.config()["model_type"], "llava");
    assert_eq!(merged.config()["architectures"], serde_json::json!(["LlavaForConditionalGeneration"]));
    assert_eq!(merged.tensor_names(), llava.tensor_names());
    for name in llava.tensor_names().into_iter().filter(|n| !n.starts_with("language_model.")) {
        assert!(merged.tensor(name).unwrap().data == llava.tensor(name).unwrap().data, "{name} copied bit for bit");
    }
    for file in ["processor_config.json", "tokenizer.json", "tokenizer_config.json"] {
        assert!(out_dir.join(file).is_file(), "{file} comes with the VLM");
    }
}

/// `--compute-dtype recipe` writes mergekit's bf16 TIES output byte for byte; the default does not.
#[test]
fn compute_dtype_recipe_reproduces_mergekit_bf16() {
    let tmp = tempfile::tempdir().unwrap();
    let want = std::fs::read(fixtures().join("expected/ties_bf16.safetensors")).unwrap();
    let want = safetensors::SafeTensors::deserialize(&want).unwrap();
    let differing = |dir: &Path| {
        let got = Checkpoint::open_dir(dir).unwrap();
        want.tensors()
            .iter()
            .map(|(name, view)| {
                let got = got.tensor(name).unwrap();
                assert_eq!(got.dtype, Dtype::BF16);
                got.data.iter().zip(view.data()).filter(|(a, b)| a != b).count()
            })
            .sum::<usize>()
    };
    for (mode, out_name) in [("recipe", "recipe"), ("f32", "f32")] {
        let out = tmp.path().join(out_name);
        let run = merge(&["recipes/ties_bf16.yml", "--out", out.to_str().unwrap(), "--compute-dtype", mode], &[]);
        assert!(run.status.success(), "{}", stderr(&run));
    }
    assert_eq!(differing(&tmp.path().join("recipe")), 0);
    assert!(differing(&tmp.path().join("f32")) > 0);
    let bad = merge(&["recipes/ties_bf16.yml", "--out", tmp.path().join("x").to_str().unwrap(), "--compute-dtype", "bf16"], &[]);
    assert!(!bad.status.success() && stderr(&bad).contains("`f32` or `recipe`"), "{}", stderr(&bad));
}

/// A mergekit-multi file runs in order: named documents into OUT/<name>, the last into OUT.
#[test]
fn multi_document_recipes_run_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        tmp.path(),
        "name: soup\nmodels:\n  - model: FIX/models/ft1\n    parameters: {weight: 0.5}\n  - model: FIX/models/ft2\n    parameters: {weight: 0.5}\nmerge_method: linear\ndtype: float32\n---\nmodels:\n  - model: soup\n    parameters: {weight: 1.0}\nmerge_method: task_arithmetic\nbase_model: FIX/models/base\ndtype: float32\n",
    );
    let out = tmp.path().join("out");
    let run = merge(&[recipe.to_str().unwrap(), "--out", out.to_str().unwrap()], &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(out.join("model.safetensors").is_file() && out.join("soup/model.safetensors").is_file());
    assert_eq!(entries(tmp.path()), ["out", "recipe.yml"]);
}
