//! `evomerge evolve` and `evomerge trials` end to end on the tiny merge fixtures: a search improves
//! on its initial genome, a search killed mid-trial resumes to exactly the records of an
//! uninterrupted one, `best/recipe.yml` rebuilds `best/` bit for bit, and bad recipes are refused
//! before any model loads, leaving nothing behind.

mod evolve_support;

use std::path::{Path, PathBuf};

use evolve_support::*;

/// The loglik recipe over the merge fixtures, written into `dir` with `edit` applied; the task file
/// is copied next to it `repeat` times over (more items make a trial slower).
fn recipe(dir: &Path, repeat: usize, edit: impl Fn(String) -> String) -> PathBuf {
    let text = format!("{}{}optimizer: {{max_trials: 24, seed: 3}}\n", tiny_genome(), tiny_task(dir, repeat));
    let path = dir.join("recipe.yml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

#[test]
fn loglik_search_improves_on_the_initial_genome_and_writes_its_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let path = recipe(tmp.path(), 1, |t| t);
    let out_dir = tmp.path().join("run");
    let out = evomerge(&["evolve", path.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The initial genome (every gene 0.5) scored the same way: a 1-trial search whose only
    // candidate is the mean is not what CMA-ES asks, so score it through `--evaluate-initial`.
    let init = evomerge(&["evolve", path.to_str().unwrap(), "--evaluate-initial"]);
    assert!(init.status.success(), "{}", stderr(&init));
    let initial: f64 = String::from_utf8(init.stdout).unwrap().trim().parse().unwrap();

    let trials = records(&out_dir);
    assert_eq!(trials.len(), 24);
    let best = trials.iter().filter_map(|t| t["fitness"].as_f64()).fold(f64::NEG_INFINITY, f64::max);
    assert!(best > initial + 0.01, "best {best} should beat the initial genome's {initial}");
    for t in &trials {
        assert_eq!(t["status"], "complete");
        let params = t["params"].as_object().unwrap();
        assert_eq!(params.len(), 4);
        assert!(params.contains_key("ft1.density") && params.contains_key("ft2.weight"));
    }
    for file in ["best/model.safetensors", "best/config.json", "best/tokenizer.json", "best/recipe.yml", "best/genome.json", "trials.csv", "plots/fitness.svg", "plots/recipe.svg"] {
        assert!(out_dir.join(file).is_file(), "{file} missing");
    }
    let genome: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("best/genome.json")).unwrap()).unwrap();
    assert_eq!(genome["fitness"].as_f64().unwrap(), best);

    // best/recipe.yml through `evomerge merge` rebuilds best/ bit for bit.
    let rebuilt = tmp.path().join("rebuilt");
    let seed = genome["merge_seed"].as_u64().unwrap().to_string();
    let recipe_yml = out_dir.join("best/recipe.yml");
    let merged = evomerge(&["merge", recipe_yml.to_str().unwrap(), "--out", rebuilt.to_str().unwrap(), "--seed", &seed]);
    assert!(merged.status.success(), "{}", stderr(&merged));
    for file in ["model.safetensors", "config.json"] {
        assert_eq!(
            std::fs::read(rebuilt.join(file)).unwrap(),
            std::fs::read(out_dir.join("best").join(file)).unwrap(),
            "{file} differs"
        );
    }

    // Running the finished search again evaluates nothing and changes nothing.
    let again = evomerge(&["evolve", path.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--quiet"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("(0 evaluated now)"), "{}", String::from_utf8_lossy(&again.stdout));
    assert_eq!(records(&out_dir), trials);
}

#[test]
fn a_search_killed_mid_trial_resumes_to_the_uninterrupted_records() {
    let tmp = tempfile::tempdir().unwrap();
    // 20 copies of the task: each trial takes long enough to be killed inside it.
    let path = recipe(tmp.path(), 20, |t| t.replace("max_trials: 24", "max_trials: 16"));
    let straight = tmp.path().join("straight");
    let out = evomerge(&["evolve", path.to_str().unwrap(), "--out", straight.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = records(&straight);
    assert_eq!(expected.len(), 16);

    let resumed = tmp.path().join("resumed");
    // Wait until a few trials are done and another one is running, then SIGKILL.
    let killed_mid_trial = kill_mid_trial(&path, &resumed, 16, |now, attempt| {
        now.iter().filter(|r| r["status"] == "complete").count() >= 3 + attempt
    });
    assert!(killed_mid_trial, "could not kill the search during a trial");

    let out = evomerge(&["evolve", path.to_str().unwrap(), "--out", resumed.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(records(&resumed), expected, "a resumed search must record what an uninterrupted one does");
    assert_eq!(
        std::fs::read(resumed.join("best/model.safetensors")).unwrap(),
        std::fs::read(straight.join("best/model.safetensors")).unwrap()
    );
}

/// A bad recipe: non-zero exit, the key named, and no output directory created.
fn refused(recipe_text_edit: impl Fn(String) -> String, key: &str) {
    let tmp = tempfile::tempdir().unwrap();
    assert_refused(&recipe(tmp.path(), 1, recipe_text_edit), key);
}

#[test]
fn bad_recipes_are_refused_before_any_model_loads() {
    refused(|t| t.replace("  dtype: float32", "  dtype: float32\n  layer_granularity: 3"), "genome.layer_granularity");
    refused(|t| t.replace("  parameters:", "  paramters: [density]\n  parameters:"), "paramters");
    refused(|t| t.replace("  parameters: [density, weight]", "  parameters: [density, weight]\n  bounds: {density: [0.0, 1.5]}"), "genome.bounds.density");
    refused(|t| t.replace("data: task.jsonl", "data: missing.jsonl"), "task.data");
    let other = fixtures().join("mistral/mistral_classic");
    refused(|t| t.replace("/ft2]", &format!("/ft2, {}]", other.display())), "genome.models[2]");
}

#[test]
fn an_output_directory_of_another_recipe_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = recipe(tmp.path(), 1, |t| t.replace("max_trials: 24", "max_trials: 2"));
    let out_dir = tmp.path().join("run");
    let out = evomerge(&["evolve", path.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = records(&out_dir);
    // Another seed is another search.
    let out = evomerge(&["evolve", path.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--seed", "9", "--quiet"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("another recipe"), "{}", stderr(&out));
    // More trials is the same search, continued.
    let out = evomerge(&["evolve", path.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--max-trials", "4", "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = records(&out_dir);
    assert_eq!(after.len(), 4);
    assert_eq!(after[..2], before[..]);
    // Where it runs is not part of the search: --device continues it; an unknown device is named and refused.
    let out = evomerge(&["evolve", path.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--max-trials", "5", "--device", "cpu", "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(records(&out_dir)[..4], after[..]);
    let out = evomerge(&["evolve", path.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--max-trials", "6", "--device", "tpu:0", "--quiet"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--device") && stderr(&out).contains("tpu:0"), "{}", stderr(&out));
    assert_eq!(records(&out_dir).len(), 5);
    // A non-empty directory that is not a search is not written into.
    let stranger = tmp.path().join("stranger");
    std::fs::create_dir(&stranger).unwrap();
    std::fs::write(stranger.join("notes.txt"), "mine").unwrap();
    let out = evomerge(&["evolve", path.to_str().unwrap(), "--out", stranger.to_str().unwrap(), "--quiet"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
}

/// A plain Mistral directory holding the tiny LLaVA fixture's language model with every value
/// shifted by a deterministic pattern of size `scale` (a stand-in "base" or "fine-tune").
fn plain_from_llava(dir: &Path, name: &str, scale: f32, salt: u32) -> PathBuf {
    use evomerge_checkpoint::{write_checkpoint, Checkpoint, Dtype, WriteOptions};
    let llava = Checkpoint::open_dir(&fixtures().join("vision/llava")).unwrap();
    let mut tensors = Vec::new();
    for n in llava.tensor_names() {
        let Some(plain) = n.strip_prefix("language_model.") else { continue };
        let v = llava.tensor(n).unwrap();
        let values: Vec<f32> = v
            .to_f32()
            .iter()
            .enumerate()
            .map(|(i, x)| x + scale * (((i as u32).wrapping_mul(2654435761).wrapping_add(salt) >> 16) as f32 / 65536.0 - 0.5))
            .collect();
        let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.push((plain.to_string(), Dtype::F32, v.shape.to_vec(), bytes));
    }
    let mut config = llava.config()["text_config"].clone();
    config["architectures"] = serde_json::json!(["MistralForCausalLM"]);
    let out = dir.join(name);
    write_checkpoint(&out, &tensors, &config, Some(llava.dir()), WriteOptions::default()).unwrap();
    out
}

#[test]
fn a_vlm_recipe_searches_the_llava_language_model_and_writes_a_llava_best() {
    let tmp = tempfile::tempdir().unwrap();
    let base = plain_from_llava(tmp.path(), "base", 0.05, 1);
    let ja = plain_from_llava(tmp.path(), "ja", 0.05, 2);
    let llava = fixtures().join("vision/llava");
    let images = fixtures().join("vision/images");
    let mut task = String::new();
    for (i, image) in ["rgb.jpg", "gray.png", "size_56x56.png", "test.png"].iter().enumerate() {
        let line = serde_json::json!({"prompt": format!("q{i}"), "reference": "a b", "image": images.join(image)});
        task.push_str(&format!("{line}\n"));
    }
    std::fs::write(tmp.path().join("task.jsonl"), task).unwrap();
    let recipe = tmp.path().join("recipe.yml");
    std::fs::write(
        &recipe,
        format!(
            "genome:\n  merge_method: ties\n  base_model: {}\n  models: [{}, {}]\n  parameters: [weight]\n  fixed: {{density: 0.7}}\n  dtype: float32\n\
             task:\n  kind: custom\n  data: task.jsonl\n  metric: loglik\noptimizer: {{max_trials: 6, seed: 1}}\n",
            base.display(),
            llava.display(),
            ja.display()
        ),
    )
    .unwrap();
    let out_dir = tmp.path().join("run");
    let out = evomerge(&["evolve", recipe.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials = records(&out_dir);
    assert_eq!(trials.len(), 6);
    assert!(trials.iter().all(|t| t["status"] == "complete" && t["fitness"].as_f64().is_some_and(f64::is_finite)));
    // Different weights give different fitness: the candidates really run on the merged model.
    let first = trials[0]["fitness"].as_f64().unwrap();
    assert!(trials.iter().any(|t| t["fitness"].as_f64().unwrap() != first));

    let best = out_dir.join("best");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(best.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "llava");
    for file in ["processor_config.json", "tokenizer.json"] {
        assert!(best.join(file).is_file(), "best/ lacks {file}");
    }
    let merged = evomerge_checkpoint::Checkpoint::open_dir(&best).unwrap();
    let source = evomerge_checkpoint::Checkpoint::open_dir(&llava).unwrap();
    for name in source.tensor_names().into_iter().filter(|n| !n.starts_with("language_model.")) {
        assert_eq!(merged.tensor(name).unwrap().data, source.tensor(name).unwrap().data, "{name} must be copied unchanged");
    }
    // The exported LLaVA answers about an image.
    let gen = evomerge(&[
        "generate",
        "--model",
        best.to_str().unwrap(),
        "--image",
        images.join("rgb.jpg").to_str().unwrap(),
        "--prompt",
        "<image>\nq0",
        "--max-new-tokens",
        "2",
    ]);
    assert!(gen.status.success(), "{}", stderr(&gen));
    // And its recipe rebuilds it bit for bit.
    let rebuilt = tmp.path().join("rebuilt");
    let out = evomerge(&["merge", best.join("recipe.yml").to_str().unwrap(), "--out", rebuilt.to_str().unwrap(), "--seed", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(rebuilt.join("model.safetensors")).unwrap(), std::fs::read(best.join("model.safetensors")).unwrap());
}

#[test]
fn final_eval_scores_best_and_sources_on_the_test_tasks() {
    let tmp = tempfile::tempdir().unwrap();
    let test = tmp.path().join("test.jsonl");
    std::fs::write(&test, std::fs::read_to_string(fixtures().join("evolve/task.jsonl")).unwrap()).unwrap();
    let path = recipe(tmp.path(), 1, |t| {
        t.replace("max_trials: 24", "max_trials: 3")
            + "final_eval:\n  - {kind: custom, data: test.jsonl, metric: exact, generation: {max_new_tokens: 3}}\n"
    });
    let out_dir = tmp.path().join("run");
    let out = evomerge(&["evolve", path.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap()).unwrap();
    let scores = summary["tasks"][0]["scores"].as_array().unwrap();
    let names: Vec<&str> = scores.iter().map(|s| s["model"].as_str().unwrap()).collect();
    assert_eq!(names, ["evolved", "ft1", "ft2"]);
    // The references are ft1's own greedy continuations: ft1 reproduces every one of them.
    assert_eq!(scores[1]["score"].as_f64().unwrap(), 1.0);
    assert!(std::fs::read_to_string(out_dir.join("report.md")).unwrap().contains("| ft1 | 1.0000 |"));
}
